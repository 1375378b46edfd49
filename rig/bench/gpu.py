"""GPU benchmark, run in one call on a GPU machine (``scripts/gpu_bench.sh``): D3-Net, d3net-lite
and dfdnet at 645x432 in torch CUDA (fp32, fp16 autocast), onnxruntime CUDA EP and TensorRT EP fp16.

Per architecture and backend: one-pass latency (median of ``repeats`` runs after warm-up, ms) and
FPS (1000 / median latency, batch 1), and the cost of uncertainty relative to one pass on the same
backend: MC-dropout with ``mc_samples`` samples (``mc_over_one_pass``) and the sampling-free moments
pass (``moments_over_one_pass``). Every backend's entry records what really ran (onnxruntime's
provider is read back) or why it was skipped or failed, and the JSON is rewritten after each entry,
so a run cut short still leaves its figures. Goal reported against: D3-Net >= 200 FPS with
TensorRT fp16 on a data-centre GPU (``summary.goal_met``).

``--tiny`` runs the same code on the CPU (small image, torch CPU and onnxruntime CPU, few runs, no
install): what the test suite exercises. Untrained weights (speed does not depend on their values).

    python -m rig.bench.gpu --json out/gpu_bench.json           # GPU machine (after the installs)
    python -m rig.bench.gpu --tiny --json /tmp/gpu_tiny.json    # anywhere
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

FULL_WH = (645, 432)
TINY_WH = (64, 48)
ARCHS = ("d3net", "d3net-lite", "dfdnet")
GOAL_D3NET_FP16_FPS = 200.0
GOAL_KEY = "d3net/ort_tensorrt_fp16"


@dataclass(frozen=True)
class BackendSpec:
    """One way of running a network: torch on a device, or onnxruntime with providers."""

    name: str
    kind: str  # 'torch' or 'ort'
    device: str = "cpu"  # torch device
    providers: tuple[str, ...] = ("cpu",)  # onnxruntime providers, most preferred first
    fp16: bool = False


FULL_BACKENDS = (BackendSpec("torch_cuda_fp32", "torch", "cuda"),
                 BackendSpec("torch_cuda_fp16", "torch", "cuda", fp16=True),
                 BackendSpec("ort_cuda_fp32", "ort", providers=("cuda",)),
                 BackendSpec("ort_tensorrt_fp16", "ort", providers=("tensorrt", "cuda"), fp16=True))
TINY_BACKENDS = (BackendSpec("torch_cpu_fp32", "torch", "cpu"),
                 BackendSpec("ort_cpu_fp32", "ort", providers=("cpu",)))


def median_latency_ms(fn: Callable[[], Any], repeats: int, warmup: int = 2,
                      sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` (ms) over ``repeats`` runs after ``warmup`` runs; ``sync`` waits
    for the device after each run (CUDA work is asynchronous)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _figures(one_ms: float, mc_ms: float, moments_ms: float, samples: int) -> dict[str, float]:
    return {"latency_ms_median": one_ms, "fps": 1000.0 / one_ms, "mc_samples": samples,
            "mc_latency_ms_median": mc_ms, "mc_over_one_pass": mc_ms / one_ms,
            "moments_latency_ms_median": moments_ms, "moments_over_one_pass": moments_ms / one_ms}


def bench_torch(net: Any, spec: BackendSpec, size_wh: tuple[int, int], repeats: int, samples: int) -> dict[str, Any]:
    """torch eager (``inference_mode``; fp16 as CUDA autocast): one pass, MC-dropout, moments."""
    import contextlib

    import torch

    from inference.mc_dropout import mc_predict
    from inference.moments import moments_predict

    if spec.device == "cuda" and not torch.cuda.is_available():
        return {"skipped": f"torch {torch.__version__} sees no CUDA device"}
    w, h = size_wh
    net = net.to(spec.device).eval()
    x = torch.rand(1, 3, h, w, device=spec.device)
    sync = torch.cuda.synchronize if spec.device == "cuda" else (lambda: None)

    def ctx() -> Any:
        return torch.autocast("cuda", dtype=torch.float16) if spec.fp16 else contextlib.nullcontext()

    def one() -> Any:
        with torch.inference_mode(), ctx():
            return net(x)

    def mc() -> Any:
        with ctx():
            return mc_predict(net, x, samples=samples)

    def mom() -> Any:
        with torch.inference_mode(), ctx():
            return moments_predict(net, x)

    out = _figures(median_latency_ms(one, repeats, sync=sync), median_latency_ms(mc, repeats, 1, sync),
                   median_latency_ms(mom, repeats, sync=sync), samples)
    return {"backend": f"torch {torch.__version__} {spec.device}", "fp16": spec.fp16, **out}


def bench_ort(onnx_path: Path, spec: BackendSpec, size_wh: tuple[int, int], repeats: int, samples: int,
              trt_cache: Path) -> dict[str, Any]:
    """onnxruntime through :class:`inference.engine.DepthEngine` (I/O binding, fp16 rules, TensorRT
    engine cache): one pass, MC-dropout (trunk + batched decoder), moments graph."""
    import onnxruntime as ort

    from inference.engine import PROVIDER_NAMES, DepthEngine, EngineConfig

    wanted = PROVIDER_NAMES[spec.providers[0]]
    if wanted != PROVIDER_NAMES["cpu"] and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA / cuDNN from the nvidia-* wheels torch brought, when present
    if wanted not in ort.get_available_providers():
        return {"skipped": f"onnxruntime {ort.__version__} offers no {wanted} "
                           f"(available: {', '.join(ort.get_available_providers())})"}
    cfg = EngineConfig(providers=spec.providers, fp16=spec.fp16, trt_cache_dir=trt_cache, warmup=1)
    t0 = time.perf_counter()
    engine = DepthEngine(onnx_path, cfg, warm_size=size_wh, mc=True, moments=True)
    setup_s = time.perf_counter() - t0
    try:
        if engine.provider != wanted:
            return {"skipped": f"asked for {wanted}, onnxruntime ran {engine.provider}"}
        w, h = size_wh
        img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        out = _figures(median_latency_ms(lambda: engine.predict(img), repeats),
                       median_latency_ms(lambda: engine.predict_mc(img, samples), repeats, 1),
                       median_latency_ms(lambda: engine.predict_moments(img), repeats), samples)
    finally:
        engine.close()
    return {"backend": f"onnxruntime {ort.__version__} {engine.provider}", "fp16": engine.fp16,
            "setup_s": setup_s, **out}


def environment() -> dict[str, Any]:
    """Versions and the device the figures come from."""
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        env["torch"] = None
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["ort_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """FPS per arch/backend, and D3-Net TensorRT fp16 against the 200 FPS goal."""
    fps = {f"{a}/{b}": r["fps"] for a, per in results.items() for b, r in per.items() if "fps" in r}
    got = fps.get(GOAL_KEY)
    return {"fps": fps, "goal": f"{GOAL_KEY} >= {GOAL_D3NET_FP16_FPS:g} FPS", "d3net_tensorrt_fp16_fps": got,
            "goal_met": None if got is None else bool(got >= GOAL_D3NET_FP16_FPS)}


def run_gpu_bench(json_path: Path, *, tiny: bool = False, archs: tuple[str, ...] = ARCHS, repeats: int = 0,
                  mc_samples: int = 0, work_dir: Path | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every arch on every backend (tiny: CPU ones at 64x48); write and return the report."""
    import torch

    from inference.export import export_model, load_net

    size = TINY_WH if tiny else FULL_WH
    backends = TINY_BACKENDS if tiny else FULL_BACKENDS
    repeats = repeats or (3 if tiny else 20)
    samples = mc_samples or (4 if tiny else 50)
    work = Path(work_dir or tempfile.mkdtemp(prefix="rig-gpu-bench-"))
    report: dict[str, Any] = {"mode": "tiny" if tiny else "full", "size_px": list(size), "repeats": repeats,
                              "environment": environment(), "results": {}}
    for arch in archs:
        per: dict[str, Any] = report["results"].setdefault(arch, {})
        onnx_path = work / f"{arch}-{size[0]}x{size[1]}.onnx"
        try:
            net, meta, source = load_net(arch)
            export_model(net, onnx_path, height=size[1], width=size[0], source=source, model_meta=meta, check=False)
        except Exception as e:  # noqa: BLE001 — the report says what failed and the run goes on
            per["export_error"] = f"{type(e).__name__}: {e}"
            continue
        for spec in backends:
            try:
                if spec.kind == "torch":
                    torch.manual_seed(0)
                    per[spec.name] = bench_torch(load_net(arch)[0], spec, size, repeats, samples)
                else:
                    per[spec.name] = bench_ort(onnx_path, spec, size, repeats, samples, work / "trt-cache")
            except Exception as e:  # noqa: BLE001
                per[spec.name] = {"error": f"{type(e).__name__}: {e}",
                                  "trace": traceback.format_exc(limit=3)[-1500:]}
            r = per[spec.name]
            log(f"{arch:10s} {spec.name:18s} " + (f"{r['fps']:8.1f} FPS  {r['latency_ms_median']:7.2f} ms  "
                f"MC-{samples} {r['mc_over_one_pass']:5.1f}x  moments {r['moments_over_one_pass']:4.2f}x"
                if "fps" in r else str(r.get("skipped") or r.get("error"))))
            report["summary"] = summarise(report["results"])
            _write_json(json_path, report)
    report["summary"] = summarise(report["results"])
    _write_json(json_path, report)
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from rig.core.imageio import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), json.dumps(data, indent=2, default=str).encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rig.bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="where to write the report")
    p.add_argument("--tiny", action="store_true", help="CPU only, 64x48, few runs (what the tests run)")
    p.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated (default {','.join(ARCHS)})")
    p.add_argument("--repeats", type=int, default=0, help="timed runs per figure (default 20; tiny 3)")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples (default 50; tiny 4)")
    p.add_argument("--work-dir", help="exported graphs and the TensorRT cache (default a temp folder)")
    a = p.parse_args(argv)
    report = run_gpu_bench(Path(a.json), tiny=a.tiny, archs=tuple(s for s in a.archs.split(",") if s),
                           repeats=a.repeats, mc_samples=a.mc_samples,
                           work_dir=Path(a.work_dir) if a.work_dir else None)
    s = report["summary"]
    print(f"goal {s['goal']}: {s['d3net_tensorrt_fp16_fps']} -> {s['goal_met']}; wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
