"""Deployment benchmark (part of ``rig bench infer``): everything measured side by side in one run.

* **torch vs onnxruntime** — one deterministic pass at 645x432 (``--quick``: 96x64), torch eager
  (``torch.inference_mode``) vs the exported depth graph on onnxruntime's CPU provider, at T threads
  and (when T > 1) at 1 thread. Both sides do the same work: a uint8 RGB image in (scaled to a
  float tensor), a depth array out (copied to numpy), as ``DepthEngine.predict`` does.
  Goal: onnxruntime >= 1.5x faster.
* **MC-dropout** — 50 samples (trunk once, decoder samples batched in chunks) vs one pass, both on
  onnxruntime. Goal: <= 8x.
* **live loop** — frames of a recorded live run replayed through the threaded live loop (blocking
  queues: every frame inferred, recorded and saved) vs the model alone on the same frames, with the
  inference on T threads and on T-1 (a core left to the other stages). Goal: the loop's FPS >= 90 %
  of the model's.

Threads: torch uses ``torch.set_num_threads(T)`` and onnxruntime ``intra_op_num_threads = T`` (one
inter-op thread) with the same T — ``args.threads`` or, when 0/absent, every core
(``os.cpu_count()``). Each figure is the median of ``args.repeats`` runs after a warm-up. The model
is ``args.model`` when given, else the shipped model, else an untrained d3net-lite (speed does not
depend on the weights' values). Compared measurements are interleaved (A, B, A, B…) and each ratio
is the median of the per-repeat ratios, so a shared machine's changing load hits both sides alike;
the 1-minute load average at start and end is reported with the figures.
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
LIVE_FRAMES = 32  # steady state: pipeline fill and drain are a small share of the run
QUICK_LIVE_FRAMES = 6
GOALS = {"ort_speedup_over_torch": 1.5, "mc50_over_one_pass": 8.0, "live_over_model_fps": 0.90}


def _paired_s(base: Callable[[], Any], other: Callable[[], Any], repeats: int,
              warmup: int = 1) -> tuple[float, float, float]:
    """Interleaved timing (base, other, base, other…) so that both see the same machine load (the
    machine may be shared): (median base s, median other s, median of the per-repeat other/base)."""
    for _ in range(warmup):
        base()
        other()
    tb, to, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        other()
        t2 = time.perf_counter()
        tb.append(t1 - t0)
        to.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(tb), statistics.median(to), statistics.median(ratios)


def _frames(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    from inference.export import _random_rgb

    w, h = size
    return [np.ascontiguousarray((_random_rgb(h, w, seed + i)[0].transpose(1, 2, 0) * 255).astype(np.uint8))
            for i in range(n)]


def _record_live_run(root: Path, frames: list[np.ndarray]) -> Path:
    """A recorded live run (session + live/ layout) holding ``frames``, to replay."""
    from inference.live import Frame, LiveRecorder
    from rig.core.config import load_rig_config
    from rig.core.session import Session

    session = Session.create(root, load_rig_config("simulated"))
    rec = LiveRecorder(session.path, {"source": "bench"})
    for i, rgb in enumerate(frames):
        rec.record_frame(Frame(index=i, rgb=rgb, name=f"bench {i}", t_monotonic_s=i / 10.0, t_wall="",
                               capture_s=0.0, resize_s=0.0))
    return session.path


def bench_settings(args: argparse.Namespace) -> tuple[bool, int, int, str, tuple[int, int]]:
    """(quick, repeats, threads, model reference, (width, height) px) of a deployment benchmark run:
    threads default to every core, the model to the shipped default."""
    from inference.export import default_model

    quick = bool(getattr(args, "quick", False))
    repeats = max(1, int(getattr(args, "repeats", 5)))
    threads = int(getattr(args, "threads", 0) or 0) or (os.cpu_count() or 1)
    model_ref = str(getattr(args, "model", None) or default_model())
    return quick, repeats, threads, model_ref, (QUICK_WH if quick else FULL_WH)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure; print a rich table; return the figures."""
    import torch

    from inference.engine import DepthEngine, EngineConfig, to_input
    from inference.export import export_model, load_net
    from inference.live import LiveLoop, LiveRecorder, read_frame_file, read_live_frames

    quick, repeats, threads, model_ref, (w, h) = bench_settings(args)
    torch.set_num_threads(threads)
    net, meta, source = load_net(str(model_ref))
    figures: dict[str, Any] = {"model": str(model_ref), "arch": getattr(net, "arch", ""), "image_px": [w, h],
                               "load_average_1min_start": round(os.getloadavg()[0], 2),
                               "threads": threads, "threads_note": "torch.set_num_threads = onnxruntime "
                               "intra_op_num_threads (inter_op 1)", "repeats": repeats, "goals": GOALS}
    with tempfile.TemporaryDirectory(prefix="rig-bench-deploy-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_model(net, onnx_path, height=h, width=w, dynamic=False, source=source, model_meta=meta, check=False)
        img = _frames(1, (w, h), seed=7)[0]

        def torch_pass() -> None:  # the same work as DepthEngine.predict: uint8 image in, depth array out
            with torch.inference_mode():
                net(torch.from_numpy(to_input(img)))[0, 0].numpy().copy()

        # one pass: torch eager vs onnxruntime with the same thread count (also 1 thread when T > 1)
        per_threads: dict[str, Any] = {}
        for t_count in sorted({1, threads}):
            torch.set_num_threads(t_count)
            eng = DepthEngine(onnx_path, EngineConfig(providers=("cpu",), threads=t_count, warmup=2))
            t_ort, t_torch, speedup = _paired_s(lambda: eng.predict(img), torch_pass, repeats)
            per_threads[str(t_count)] = {"torch_eager_s": t_torch, "ort_cpu_s": t_ort, "speedup": speedup,
                                         "meets_goal": speedup >= GOALS["ort_speedup_over_torch"]}
        torch.set_num_threads(threads)
        figures["torch_vs_ort"] = dict(per_threads[str(threads)], by_threads=per_threads)

        engine = DepthEngine(onnx_path, EngineConfig(providers=("cpu",), threads=threads, warmup=2), mc=True)
        chunk = engine.mc_chunk(h, w, MC_SAMPLES)
        t_one, t_mc, ratio = _paired_s(lambda: engine.predict(img), lambda: engine.predict_mc(img, MC_SAMPLES),
                                       repeats)
        figures["mc_dropout"] = {"samples": MC_SAMPLES, "chunk": chunk, "decoder_workers": len(engine.decoders),
                                 "one_pass_s": t_one, "mc_s": t_mc, "ratio": ratio,
                                 "meets_goal": ratio <= GOALS["mc50_over_one_pass"]}
        engine.close()

        # live loop on a replayed recording vs the model alone on the same frames (same engine settings),
        # with inference on T threads and on T-1 (one core left to the capture/record/save stages)
        n = QUICK_LIVE_FRAMES if quick else LIVE_FRAMES
        frames = _frames(n, (w, h), seed=100)
        session = _record_live_run(Path(tmp) / "recorded", frames)
        by_threads: dict[str, Any] = {}
        for t_count in sorted({threads, max(1, threads - 1)}, reverse=True):
            live_engine = DepthEngine(onnx_path, EngineConfig(providers=("cpu",), threads=t_count, warmup=2,
                                                              spin=False))
            model_fps, loop_fps, ratios, dropped = [], [], [], []
            for r in range(repeats):  # interleaved: model alone, then the loop, per repeat
                t0 = time.perf_counter()
                for f in frames:
                    live_engine.predict(f)
                model_fps.append(n / (time.perf_counter() - t0))
                out = Path(tmp) / f"replay-{t_count}-{r}"
                out.mkdir()
                replay = (read_frame_file(e["path"], str(e["index"])) for e in read_live_frames(session))
                loop = LiveLoop(replay, lambda rgb: (live_engine.predict(rgb), None), size=(w, h),
                                recorder=LiveRecorder(out, {"source": "bench replay"}), drop=False)
                t0 = time.perf_counter()
                s = loop.run(handle_sigint=False)
                loop_fps.append(s.frames_output / (time.perf_counter() - t0))
                ratios.append(loop_fps[-1] / model_fps[-1])
                dropped.append(s.dropped)
            ratio = statistics.median(ratios)
            by_threads[str(t_count)] = {"model_fps": statistics.median(model_fps),
                                        "loop_fps": statistics.median(loop_fps), "ratio": ratio,
                                        "dropped": max(dropped),
                                        "meets_goal": ratio >= GOALS["live_over_model_fps"]}
        figures["live_loop"] = dict(by_threads[str(threads)], frames=n, spin=False, by_threads=by_threads,
                                    loop_includes="PNG decode of the recorded frame, inference, colourised view, "
                                    "depth PNG + view JPEG + input PNG written (fsync each), journals")
    figures["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    w, h = f["image_px"]
    t = Table(title=f"deployment: {f['arch']} ({f['model']}), {w}x{h}, {f['threads']} thread(s) "
              f"(torch = onnxruntime intra-op), median of {f['repeats']} interleaved runs",
              caption=f"1-min load average {f['load_average_1min_start']} -> {f['load_average_1min_end']} "
                      f"on {os.cpu_count()} cores")
    for col in ("measurement", "baseline", "measured", "ratio", "goal"):
        t.add_column(col, justify="right")
    tv, mc, lv = f["torch_vs_ort"], f["mc_dropout"], f["live_loop"]

    def ok(flag: bool) -> str:
        return "[green]met[/green]" if flag else "[red]missed[/red]"

    for n, row in tv["by_threads"].items():
        t.add_row(f"onnxruntime CPU vs torch eager, {n} thread(s)", f"torch {row['torch_eager_s'] * 1e3:.0f} ms",
                  f"ort {row['ort_cpu_s'] * 1e3:.0f} ms", f"{row['speedup']:.2f}x faster",
                  f">= 1.5x {ok(row['meets_goal'])}")
    t.add_row(f"MC-dropout {mc['samples']} (chunks of {mc['chunk']}, {mc['decoder_workers']} decoder "
              "worker(s)) vs 1 pass", f"{mc['one_pass_s'] * 1e3:.0f} ms",
              f"{mc['mc_s'] * 1e3:.0f} ms", f"{mc['ratio']:.1f}x", f"<= 8x {ok(mc['meets_goal'])}")
    for n, row in lv["by_threads"].items():
        t.add_row(f"live loop on replay ({lv['frames']} frames) vs model only, inference {n} thread(s)",
                  f"{row['model_fps']:.2f} FPS", f"{row['loop_fps']:.2f} FPS", f"{row['ratio']:.0%}",
                  f">= 90 % {ok(row['meets_goal'])}")
    Console().print(t)
