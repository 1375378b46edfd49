"""Deployment benchmark (part of ``rig bench infer``): everything measured side by side in one run.

* **torch vs onnxruntime** — one deterministic pass at 645x432 (``--quick``: 96x64), torch eager
  (``torch.inference_mode``) vs the exported depth graph on onnxruntime's CPU provider. Goal:
  onnxruntime >= 1.5x faster.
* **MC-dropout** — 50 samples (trunk once, decoder samples batched in chunks) vs one pass, both on
  onnxruntime. Goal: <= 8x.
* **live loop** — frames of a recorded live run replayed through the threaded live loop (blocking
  queues: every frame inferred, recorded and saved) vs the model alone on the same frames. Goal: the
  loop's FPS >= 90 % of the model's.

Threads: torch uses ``torch.set_num_threads(T)`` and onnxruntime ``intra_op_num_threads = T`` (one
inter-op thread) with the same T — ``args.threads`` or, when 0/absent, every core
(``os.cpu_count()``). Each figure is the median of ``args.repeats`` runs after a warm-up. The model
is ``args.model`` when given, else the shipped model, else an untrained d3net-lite (speed does not
depend on the weights' values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

MC_SAMPLES = 50
FULL_WH = (645, 432)
QUICK_WH = (96, 64)
LIVE_FRAMES = 16
QUICK_LIVE_FRAMES = 6
GOALS = {"ort_speedup_over_torch": 1.5, "mc50_over_one_pass": 8.0, "live_over_model_fps": 0.90}


def _median_s(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _frames(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    from inference.export import _random_rgb

    w, h = size
    return [np.ascontiguousarray((_random_rgb(h, w, seed + i)[0].transpose(1, 2, 0) * 255).astype(np.uint8))
            for i in range(n)]


def _record_live_run(root: Path, frames: list[np.ndarray]) -> Path:
    """A recorded live run (session + live/ layout) holding ``frames``, to replay."""
    from inference.live import Frame, LiveRecorder
    from rig.config import load_rig_config
    from rig.session import Session

    session = Session.create(root, load_rig_config("simulated"))
    rec = LiveRecorder(session.path, {"source": "bench"})
    for i, rgb in enumerate(frames):
        rec.record_frame(Frame(index=i, rgb=rgb, name=f"bench {i}", t_monotonic_s=i / 10.0, t_wall="",
                               capture_s=0.0, resize_s=0.0))
    return session.path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure; print a rich table; return the figures."""
    import torch

    from inference.engine import DepthEngine, EngineConfig, to_input
    from inference.export import export_model, load_net
    from inference.live import LiveLoop, LiveRecorder
    from rig.live import default_model, replay_frames

    quick = bool(getattr(args, "quick", False))
    repeats = max(1, int(getattr(args, "repeats", 5)))
    threads = int(getattr(args, "threads", 0) or 0) or (os.cpu_count() or 1)
    model_ref = getattr(args, "model", None) or default_model()
    w, h = QUICK_WH if quick else FULL_WH
    torch.set_num_threads(threads)
    net, meta, source = load_net(str(model_ref))
    figures: dict[str, Any] = {"model": str(model_ref), "arch": getattr(net, "arch", ""), "image_px": [w, h],
                               "threads": threads, "threads_note": "torch.set_num_threads = onnxruntime "
                               "intra_op_num_threads (inter_op 1)", "repeats": repeats, "goals": GOALS}
    with tempfile.TemporaryDirectory(prefix="rig-bench-deploy-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_model(net, onnx_path, height=h, width=w, dynamic=False, source=source, model_meta=meta, check=False)
        img = _frames(1, (w, h), seed=7)[0]
        x = torch.from_numpy(to_input(img))

        def torch_pass() -> None:
            with torch.inference_mode():
                net(x)

        engine = DepthEngine(onnx_path, EngineConfig(providers=("cpu",), threads=threads, warmup=2), mc=True)
        t_torch = _median_s(torch_pass, repeats)
        t_ort = _median_s(lambda: engine.predict(img), repeats)
        chunk = engine.mc_chunk(h, w, MC_SAMPLES)
        t_mc = _median_s(lambda: engine.predict_mc(img, MC_SAMPLES), repeats, warmup=1)
        figures["torch_vs_ort"] = {"torch_eager_s": t_torch, "ort_cpu_s": t_ort, "speedup": t_torch / t_ort,
                                   "meets_goal": t_torch / t_ort >= GOALS["ort_speedup_over_torch"]}
        figures["mc_dropout"] = {"samples": MC_SAMPLES, "chunk": chunk, "one_pass_s": t_ort, "mc_s": t_mc,
                                 "ratio": t_mc / t_ort, "meets_goal": t_mc / t_ort <= GOALS["mc50_over_one_pass"]}

        # live loop on a replayed recording vs the model alone on the same frames (same engine settings)
        n = QUICK_LIVE_FRAMES if quick else LIVE_FRAMES
        frames = _frames(n, (w, h), seed=100)
        session = _record_live_run(Path(tmp) / "recorded", frames)
        live_engine = DepthEngine(onnx_path, EngineConfig(providers=("cpu",), threads=threads, warmup=2,
                                                          spin=False))
        model_fps, loop_fps, dropped = [], [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            for f in frames:
                live_engine.predict(f)
            model_fps.append(n / (time.perf_counter() - t0))
            out = Path(tmp) / f"replay{r}"
            out.mkdir()
            loop = LiveLoop(replay_frames(session), lambda rgb: (live_engine.predict(rgb), None), size=(w, h),
                            recorder=LiveRecorder(out, {"source": "bench replay"}), drop=False)
            t0 = time.perf_counter()
            s = loop.run(handle_sigint=False)
            loop_fps.append(s.frames_output / (time.perf_counter() - t0))
            dropped.append(s.dropped)
        m_fps, l_fps = statistics.median(model_fps), statistics.median(loop_fps)
        figures["live_loop"] = {"frames": n, "model_fps": m_fps, "loop_fps": l_fps, "ratio": l_fps / m_fps,
                                "dropped": max(dropped), "spin": False,
                                "meets_goal": l_fps / m_fps >= GOALS["live_over_model_fps"],
                                "loop_includes": "PNG decode of the recorded frame, resize check, inference, "
                                "colourised view, depth PNG + view JPEG + input PNG written (fsync), journals"}
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    w, h = f["image_px"]
    t = Table(title=f"deployment: {f['arch']} ({f['model']}), {w}x{h}, {f['threads']} thread(s) "
              f"(torch = onnxruntime intra-op), median of {f['repeats']}")
    for col in ("measurement", "baseline", "measured", "ratio", "goal"):
        t.add_column(col, justify="right")
    tv, mc, lv = f["torch_vs_ort"], f["mc_dropout"], f["live_loop"]

    def ok(flag: bool) -> str:
        return "[green]met[/green]" if flag else "[red]missed[/red]"

    t.add_row("onnxruntime CPU vs torch eager", f"torch {tv['torch_eager_s'] * 1e3:.0f} ms",
              f"ort {tv['ort_cpu_s'] * 1e3:.0f} ms", f"{tv['speedup']:.2f}x faster",
              f">= 1.5x {ok(tv['meets_goal'])}")
    t.add_row(f"MC-dropout {mc['samples']} (chunks of {mc['chunk']}) vs 1 pass", f"{mc['one_pass_s'] * 1e3:.0f} ms",
              f"{mc['mc_s'] * 1e3:.0f} ms", f"{mc['ratio']:.1f}x", f"<= 8x {ok(mc['meets_goal'])}")
    t.add_row(f"live loop on replay ({lv['frames']} frames) vs model only", f"{lv['model_fps']:.2f} FPS",
              f"{lv['loop_fps']:.2f} FPS", f"{lv['ratio']:.0%}", f">= 90 % {ok(lv['meets_goal'])}")
    Console().print(t)
