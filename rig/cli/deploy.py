"""Deployment subcommands: ``rig export``, ``rig live``, ``rig replay``.

Parsers only; every handler imports torch / onnxruntime / OpenCV / device libraries when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rig.core.errors import PartialFailure, RigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_export_parser(sub)
    add_live_parser(sub)
    add_replay_parser(sub)


def add_export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from inference.export import DEFAULT_SIZE_PX, OPSET

    p = sub.add_parser("export", help="export a model to ONNX (depth graph + MC-dropout trunk/decoder)",
                       description="Export a model to ONNX for onnxruntime / TensorRT: FILE.onnx (one pass, "
                       "padding to the stride inside), FILE.trunk.onnx + FILE.decoder.onnx (MC-dropout, "
                       "decoder samples batched). Prints the parity against torch (max |Δ| in metres).")
    p.add_argument("--model", required=True, help="model file, run folder, shipped name, or an architecture "
                   "name (d3net, d3net-lite) for untrained weights; a camind model file gets one graph "
                   "with k_cam_px and gamma_px as inputs")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--fp16", action="store_true", help="fp16 weights and compute (inputs/outputs stay float32)")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch/height/width (any size >= 32 px)")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE_PX[1], help="input height (default 432)")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE_PX[0], help="input width (default 645)")
    p.add_argument("--no-mc", action="store_true", help="skip the MC-dropout trunk/decoder graphs")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against torch")
    p.add_argument("--int8", action="store_true", help="also write FILE.int8.onnx: the depth graph statically "
                   "quantised (onnxruntime, calibrated on training images of the DFD data when present)")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from rich.console import Console

    from inference.export import export_model, load_net

    console = Console()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if _export_camind(args, console):
        return 0
    net, meta, source = load_net(args.model)
    report = export_model(net, Path(args.out), height=args.height, width=args.width, dynamic=args.dynamic,
                          fp16=args.fp16, mc=not args.no_mc, opset=args.opset, source=source, model_meta=meta,
                          check=not args.no_check)
    for kind, path in report.files.items():
        console.print(f"wrote {path} ({kind}, {path.stat().st_size / 1e6:.1f} MB)")
    for name, v in report.parity.items():
        unit = " m" if name.startswith(("depth", "moments")) else " (features)"
        console.print(f"parity {name}: max |Δ| = {v:.2e}{unit} (onnxruntime CPU vs torch)")
    if report.mc_check:
        c = report.mc_check
        console.print(f"MC-dropout ({int(c['samples'])} samples): max |Δmean| = {c['max_abs_mean_diff_m']:.2e} m, "
                      f"mean σ onnx {c['mean_std_onnx_m']:.2e} m vs torch {c['mean_std_torch_m']:.2e} m "
                      f"(ratio {c['std_ratio']:.2f}; masks differ by design)")
    if args.int8:
        from inference.quantize import calibration_inputs, int8_path, quantize_int8

        if args.fp16:
            raise RigError("--int8: quantises the fp32 graph; leave out --fp16")
        xs, note = calibration_inputs((args.width, args.height), meta)
        q = quantize_int8(report.files["depth"], int8_path(report.files["depth"]), xs)
        console.print(f"wrote {q} (int8, {q.stat().st_size / 1e6:.1f} MB; calibrated on {note})")
    console.print(f"export took {report.seconds:.1f} s")
    return 0


def _export_camind(args: argparse.Namespace, console: Any) -> bool:
    """Export a camind model file (k_cam and γ as graph inputs) and print its parity; False if not camind."""
    from inference.camind_use import camind_model_path

    path = camind_model_path(args.model)
    if path is None:
        return False
    if args.int8:
        raise RigError("--int8: not available for camera-independent (camind) models")
    from inference.camind import load_camind
    from inference.camind_onnx import export_camind

    model, meta = load_camind(path)
    report = export_camind(model, Path(args.out), height=args.height, width=args.width, source=str(path),
                           model_meta=meta, fp16=args.fp16, check=not args.no_check, opset=args.opset)
    out = report.files["depth"]
    console.print(f"wrote {out} (camind: inputs rgb, k_cam_px, gamma_px; any size; "
                  f"{out.stat().st_size / 1e6:.1f} MB)")
    for name, v in report.parity.items():
        console.print(f"parity {name}: max |Δ| = {v:.2e} m (onnxruntime CPU vs torch)")
    console.print(f"export took {report.seconds:.1f} s")
    return True


def cmd_live(args: argparse.Namespace) -> int:
    from rig.cli.base import resolve_uncertainty
    from rig.core.config import load_rig_config
    from rig.live import LiveOptions, run_live

    mode, args.mc_samples = resolve_uncertainty(args)
    cfg = load_rig_config(args.config or "simulated", overrides={"simulated.latency_scale": args.latency_scale}
                          if args.latency_scale is not None else None)
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip()) if args.providers else None
    opts = LiveOptions(source=args.source, model=args.model, backend=args.backend, mc_samples=args.mc_samples,
                       uncertainty=mode, max_frames=args.max_frames, save=Path(args.save) if args.save else None, show=args.show,
                       serve=args.serve, host=args.host, port=args.port, threads=args.threads, providers=providers,
                       trt_cache=Path(args.trt_cache) if args.trt_cache else None, preview=not args.no_preview,
                       scene_frames=args.scene_frames, loop_source=args.loop, queue_size=args.queue,
                       depth_range_m=tuple(args.depth_range), std_max_m=args.std_max, panel=not args.no_panel,
                       ply=args.ply)
    if args.serve is False and args.host != "127.0.0.1":
        raise RigError("--host: only used with --serve")
    out = run_live(cfg, opts)
    stopped_by = str(out.get("stopped_by", ""))
    if stopped_by.startswith(("interrupted", "terminated")):
        how = "terminated (SIGTERM)" if stopped_by.startswith("terminated") else "interrupted"
        print(f"rig: {how} — {out.get('frames_output', 0)} frame(s) saved in {out.get('session')}", file=sys.stderr)
        return 143 if stopped_by.startswith("terminated") else 130
    skipped = out.get("skipped") or []
    if skipped:
        raise PartialFailure(f"{len(skipped)} image(s) of {args.source} skipped as truncated or corrupt "
                             "(listed above); the others were processed")
    return 0


def add_live_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from rig.cli.base import add_uncertainty_args, port_number, positive_int, threads_count
    from rig.live import DEFAULT_SCENE_FRAMES

    p = sub.add_parser("live", help="live depth + uncertainty from the DSLR (or a simulated/recorded source)",
                       description="Capture -> resize to the output size -> depth (+ MC-dropout uncertainty) -> "
                       "shown, served and saved; the run is recorded as a session (replay it with rig replay). "
                       "Ctrl-C stops cleanly.")
    p.add_argument("--config", help="rig config file or preset (default simulated: a SIMULATED DSLR; for a "
                   "real camera use e.g. nikon_d200_xtion or your rig's YAML)")
    p.add_argument("--source", default="dslr", help="dslr (the config's camera), simulated, replay:SESSION or "
                   "folder:DIR (default dslr)")
    p.add_argument("--model", help="ONNX file, model file, run folder, shipped name or architecture "
                   "(default: the shipped model, else an untrained d3net-lite)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="onnxruntime (torch models are exported and cached) or torch eager (default auto)")
    add_uncertainty_args(p)
    p.add_argument("--max-frames", type=int, help="stop after this many captured frames")
    p.add_argument("--save", help="session folder for this run (default out/live/<UTC time>); depth maps with "
                   "camera_intrinsic.json (Open3D)")
    p.add_argument("--ply", action="store_true", help="also save a coloured point cloud (m) per frame: "
                   "live/ply/<frame>.ply")
    p.add_argument("--show", action="store_true", help="show an OpenCV window (when a display exists)")
    p.add_argument("--serve", action="store_true", help="serve the live view to a browser (MJPEG)")
    p.add_argument("--host", default="127.0.0.1", help="viewer address (default 127.0.0.1; any other needs the "
                   "printed token)")
    p.add_argument("--port", type=port_number, default=8765, help="viewer port (default 8765; 0 = any free port)")
    p.add_argument("--threads", type=threads_count, default=0, help="inference threads (0 = library default)")
    p.add_argument("--providers", help="onnxruntime providers in order, e.g. tensorrt,cuda,cpu (the default)")
    p.add_argument("--trt-cache", help="TensorRT engine cache folder (default ~/.cache/deep-dfd-rig/tensorrt)")
    p.add_argument("--no-preview", action="store_true", help="DSLR: full captures even when live view exists")
    p.add_argument("--scene-frames", type=int, default=DEFAULT_SCENE_FRAMES,
                   help="simulated source: frames per scene before moving to the next")
    p.add_argument("--loop", action="store_true", help="folder/replay sources: start again at the end")
    p.add_argument("--queue", type=positive_int, default=2, help="frames held between stages (oldest dropped)")
    p.add_argument("--depth-range", type=float, nargs=2, default=(0.5, 10.0), metavar=("LO", "HI"),
                   help="colour scale of the depth view in m (default 0.5 10)")
    p.add_argument("--std-max", type=float, default=0.5, help="top of the uncertainty colour scale in m")
    p.add_argument("--latency-scale", type=float, help="simulated devices' latency factor (0 = instant)")
    p.add_argument("--no-panel", action="store_true", help="no live statistics panel")
    p.set_defaults(func=cmd_live)
    return p


def cmd_replay(args: argparse.Namespace) -> int:
    from rig.replay import ReplayOptions, run_replay

    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip()) if args.providers else None
    opts = ReplayOptions(through=args.through, speed=args.speed, model=args.model,
                         out=Path(args.out) if args.out else None, mc_samples=args.mc_samples,
                         max_frames=args.max_frames, backend=args.backend, threads=args.threads,
                         providers=providers, config=args.config)
    out = run_replay(args.recording, opts)
    skipped = out.get("skipped") or []
    if skipped:
        raise PartialFailure(f"{len(skipped)} frame(s) of {args.recording} skipped as damaged (listed above); "
                             "the others were replayed")
    return 0


def add_replay_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from rig.cli.base import MC_SAMPLES_MAX, mc_samples_count, threads_count
    from rig.replay import THROUGH

    p = sub.add_parser("replay", help="feed a session or .db3/.oni recording through registration and/or inference",
                       description="Replay a capture session, a live run, a RealSense .db3 or an OpenNI .oni "
                       "through the same stages as live: --through register (registration), infer (the "
                       "live loop's inference) or all (both, scored against the registered depth). The "
                       "output folder is itself a session. Same inputs -> identical outputs.")
    p.add_argument("recording", metavar="SESSION", help="session folder, live run, .db3/.bag or .oni file")
    p.add_argument("--through", choices=THROUGH, default="infer", help="stages to run (default infer)")
    p.add_argument("--speed", type=float, default=0.0, help="X times the recorded rate (default 0: as fast "
                   "as possible)")
    p.add_argument("--model", help="ONNX file, model file, shipped name or architecture (default: shipped model)")
    p.add_argument("--out", help="output session folder (default next to the recording: NAME-replay-THROUGH)")
    p.add_argument("--mc-samples", type=mc_samples_count, default=0,
                   help=f"MC-dropout samples (0 = one pass, else 2 to {MC_SAMPLES_MAX})")
    p.add_argument("--max-frames", type=int, help="replay at most this many frames")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="onnxruntime (torch models are exported and cached) or torch eager (default auto)")
    p.add_argument("--threads", type=threads_count, default=0, help="inference threads (0 = library default)")
    p.add_argument("--providers", help="onnxruntime providers in order (default tensorrt,cuda,cpu)")
    p.add_argument("--config", help="rig config (for .db3/.oni; sessions use their own snapshot)")
    p.set_defaults(func=cmd_replay)
    return p
