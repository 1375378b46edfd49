"""Inference subcommands: ``rig train``, ``rig eval``, ``rig predict``, ``rig report``.

Handlers import torch and the stage modules lazily so ``rig --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rig.core.errors import PartialFailure, RigError

if TYPE_CHECKING:
    from inference.camind_use import CamindRunner


def cmd_train(args: argparse.Namespace) -> int:
    """``rig train``: load the config with the command-line overrides and run the training loop."""
    from inference.train import REPO_ROOT, load_train_config, run_training

    overrides: dict[str, Any] = {}
    if args.data:
        overrides["data.root"] = args.data
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.threads is not None:
        overrides["train.threads"] = args.threads
    cfg = load_train_config(args.config, overrides)
    out = Path(args.out) if args.out else REPO_ROOT / "runs" / cfg.name
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(quiet=args.quiet)
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console, transient=True,
                  disable=args.quiet) as prog:
        task = prog.add_task("train", total=1, epoch="-", loss="-")

        def on_batch(epoch: int, batch: int, batches: int, loss: float) -> None:
            prog.update(task, total=batches, completed=batch, epoch=epoch + 1, loss=f"{loss:.3f}")

        summary = run_training(cfg, out, resume=args.resume, log=console.print, on_batch=on_batch)
    if int(os.environ.get("RANK", "0")) == 0:
        b = summary["best"]
        if "rel" in b:
            print(f"done: {summary['epoch']} epochs in {out}; best val (epoch {b['epoch']}): rel {b['rel']:.3f} "
                  f"rms {b['rms']:.3f} m δ1 {b['delta1'] * 100:.1f}%  -> {out / 'best.pt'}")
        else:
            print(f"done: {summary['epoch']} epochs in {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli.base import MC_SAMPLES_MAX, add_uncertainty_args, mc_samples_count, threads_count

    p = sub.add_parser("train", help="train D3-Net / d3net-lite on a dataset (DDP via torchrun)",
                       description="Train a depth network from a training config (configs/train/*.yaml or a "
                       "preset name). Multi-process: torchrun --nproc_per_node N -m rig.cli train ...")
    p.add_argument("--config", required=True, help="training config file or preset name (e.g. dfd_n2_8)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--data", help="override data.root (dataset folder)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--threads", type=threads_count, help="override train.threads (torch CPU threads, 0 = default)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (rel, log10, rms, rmslog, δ)",
                       description="Evaluate depth predictions against ground truth; writes metrics (JSON), "
                       "the per-depth-bin RMS plot with train/test depth histograms and a qualitative grid.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name (dfd-n2.8, dfd-n8)")
    p.add_argument("--data", required=True, help="dataset folder (rig.core.dataset layout)")
    p.add_argument("--split", default="test", help="split to evaluate (default test; 'val' falls back to the "
                   "validation ids recorded in the model when the dataset has no val split)")
    p.add_argument("--input", choices=("N2_8", "N8"), help="input images (default: what the model was trained on)")
    p.add_argument("--input-dir", help="take input images from this folder (<id>.png, e.g. `rig synth` output)")
    add_flip_arg(p)
    p.add_argument("--json", dest="json_out", help="write the metrics to this JSON file")
    p.add_argument("--out", help="folder for metrics.json, the depth-bin plot and the qualitative grid")
    p.add_argument("--min-depth", type=float, help="evaluate ground truth >= this depth (m)")
    p.add_argument("--max-depth", type=float, help="evaluate ground truth <= this depth (m)")
    p.add_argument("--crop", action="store_true", help="evaluate inside the Eigen et al. NYUv2 crop only")
    p.add_argument("--mc-samples", type=mc_samples_count, default=0,
                   help=f"MC-dropout samples (0 = one deterministic pass, else 2 to {MC_SAMPLES_MAX})")
    p.add_argument("--bin-width", type=float, default=0.5, help="depth-bin width for the per-bin RMS (m)")
    p.add_argument("--grid", type=int, default=4, help="images in the qualitative grid (0 = none)")
    p.add_argument("--limit", type=int, help="evaluate at most this many images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=threads_count, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict depth (16-bit mm PNG) for an image or a folder",
                       description="Predict depth for each image; writes <basename>.png (16-bit depth in mm), "
                       "with --mc-samples also <basename>_std.png (MC-dropout std in mm). A camera-independent "
                       "(camind) model uses the --config camera's k_cam and γ.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name (dfd-n2.8, dfd-n8)")
    p.add_argument("--input", required=True, help="image file or folder of images")
    p.add_argument("--out", required=True, help="output folder")
    add_uncertainty_args(p)
    add_flip_arg(p)
    p.add_argument("--colorize", action="store_true", help="also write colourised depth (and uncertainty) PNGs "
                   "on a fixed range with a colour bar in metres")
    p.add_argument("--range", type=float, nargs=2, metavar=("MIN", "MAX"), dest="depth_range",
                   help="--colorize depth range in m (default: the --config depth sensor's min_m max_m)")
    p.add_argument("--ply", action="store_true", help="also write <basename>.ply, a coloured point cloud in m "
                   "from the --config DSLR intrinsics")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks")
    p.add_argument("--resize", choices=("auto", "none"), default="auto",
                   help="auto: area-downsample images much wider than the model's training images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=threads_count, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--config", help="rig config file or preset (default simulated): DSLR intrinsics for "
                   "camera_intrinsic.json and --ply, depth range for --colorize; camind models use its "
                   "blur.k_cam_px (else thin-lens k_cam) and blur.gamma_px")
    p.add_argument("--k-cam-px", type=float, help="camind models: k_cam in the config's output px (overrides "
                   "the config)")
    p.add_argument("--gamma-px", type=float, help="camind models: in-focus blur γ in the config's output px "
                   "(overrides the config)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="HTML report of an evaluation (open report.html in a browser)",
                       description="Build an HTML page (tables, plots, image grids as files next to it) "
                       "from the folder `rig eval --out DIR` wrote.")
    p.add_argument("eval_dir", help="folder written by `rig eval --out`")
    p.add_argument("--out", help="report folder (default: EVAL_DIR, i.e. EVAL_DIR/report.html)")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=cmd_report)


def print_metrics(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from inference.metrics import METRIC_NAMES

    t = Table(title=f"{Path(result['model']).name} ({result['arch']}, input {result['input']}) on "
              f"{result['split']}: {result['n_images']} images")
    for k in METRIC_NAMES:
        t.add_column(k, justify="right")
    m = result["metrics"]
    t.add_row(*[f"{m[k] * 100:.1f}%" if k.startswith("delta") else f"{m[k]:.3f}" for k in METRIC_NAMES])
    Console().print(t)
    u = result.get("uncertainty")
    if u:
        print(f"uncertainty ({result['settings'].get('uncertainty')}): Spearman(σ, |error|) "
              f"{u['spearman_std_err']:.2f} per image; AUSE ratio {u['ause_ratio']:.2f} per image, "
              f"{u['pooled_ause_ratio']:.2f} pooled (1 = random order, 0 = oracle)")


def add_flip_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-flip-tta", action="store_true",
                   help="one pass only: do not average with the mirror image even when the model file asks "
                   "for it (the shipped dfd models do; `rig live` always runs one pass)")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from inference.evaluate import evaluate, write_json
    from inference.predict import _device

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("min_depth", "max_depth"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise RigError(f"--{name.replace('_', '-')}: must be > 0 m")
    if args.min_depth is not None and args.max_depth is not None and args.min_depth >= args.max_depth:
        raise RigError("--min-depth must be below --max-depth")
    if args.input_dir and not Path(args.input_dir).is_dir():
        raise RigError(f"--input-dir {args.input_dir}: no such folder")
    if args.bin_width <= 0:
        raise RigError("--bin-width: must be > 0 m")
    out_dir = Path(args.out) if args.out else None
    result = evaluate(args.model, Path(args.data), args.split, args.input, args.min_depth, args.max_depth,
                      args.crop, args.mc_samples, args.bin_width, args.grid, args.limit, _device(args.device),
                      out_dir, input_dir=Path(args.input_dir) if args.input_dir else None,
                      flip_tta=False if args.no_flip_tta else None)
    if result["settings"].get("crop_note"):
        print(f"--crop not applied again: {result['settings']['crop_note']}")
    print_metrics(result)
    if args.json_out:
        write_json(Path(args.json_out), result)
        print(f"wrote {args.json_out}")
    if out_dir is not None:
        print(f"figures and metrics.json in {out_dir} (`rig report {out_dir}` makes a web page)")
    return 0


def open_camind_for_args(args: argparse.Namespace,
                         print_fn: Callable[[str], Any] = print) -> "CamindRunner | None":
    """The CamindRunner when ``--model`` is a camera-independent model (constants from ``--config``,
    default simulated, or ``--k-cam-px`` / ``--gamma-px``), its source line printed; else None
    (RigError when the camind-only flags are given with another model)."""
    from inference.camind_use import camind_model_path, check_overrides, open_camind, refuse_mc_samples

    k, g = getattr(args, "k_cam_px", None), getattr(args, "gamma_px", None)
    check_overrides(k, g)
    path = camind_model_path(args.model)
    if path is None:
        if k is not None or g is not None:
            raise RigError("--k-cam-px/--gamma-px: only for camera-independent (camind) models; "
                           f"{args.model} is not one")
        return None
    refuse_mc_samples(args.mc_samples)
    from rig.core.config import load_rig_config

    runner = open_camind(path, load_rig_config(getattr(args, "config", None) or "simulated"), k, g)
    print_fn(f"camera-independent model {path.name}: {runner.describe()}")
    for note in runner.notes:
        print_fn(note)
    return runner


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from inference.predict import _device, list_inputs, predict_files
    from rig.cli.base import resolve_uncertainty

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RigError(f"--out {out}: exists and is not a folder (predict writes one PNG per input into a folder)")
    mode, args.mc_samples = resolve_uncertainty(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    depth_range = parse_depth_range(getattr(args, "depth_range", None))
    from rich.console import Console

    from rig.core.config import load_rig_config

    console = Console()
    cfg = load_rig_config(args.config or "simulated")
    camind = open_camind_for_args(args, print_fn=lambda s: console.print(s, markup=False, highlight=False,
                                                                            soft_wrap=True))
    inputs = list_inputs(Path(args.input))
    if camind is not None and args.device not in ("auto", "cpu"):
        console.print(f"note: camera-independent models run on the CPU (--device {args.device} not used)")
    device = "cpu" if camind is not None else _device(args.device)
    skipped: list[str] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append(path.name)
        console.print(f"skipped {reason}", markup=False, highlight=False, soft_wrap=True)

    records = predict_files(args.model, inputs, out, mc_samples=args.mc_samples,
                            colorize_out=args.colorize, seed=args.seed, device=device, resize=args.resize,
                            camind=camind, cfg=cfg, depth_range_m=depth_range, ply=args.ply,
                            warn=lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True),
                            uncertainty=mode, on_skip=skip if Path(args.input).is_dir() else None,
                            flip_tta=False if args.no_flip_tta else None)
    for r in records:
        extra = f", mean σ {r['mean_std_m'] * 1000:.0f} mm" if r["mean_std_m"] is not None else ""
        if camind is not None and r["size_px"][0] != camind.ref_width_px:
            extra += f", k_cam {r['k_cam_px']:.4g} px / γ {r['gamma_px']:.4g} px at {r['size_px'][0]} px wide"
        console.print(f"{Path(r['input']).name}: median depth {r['median_depth_m']:.2f} m{extra} -> "
                      f"{Path(r['outputs'][0]).name}")
    console.print(f"wrote {len(records)} depth map(s) to {args.out}"
                  + (f", skipped {len(skipped)} unreadable input(s)" if skipped else ""), soft_wrap=True)
    if skipped:
        raise PartialFailure(f"{len(skipped)} of {len(inputs)} input(s) skipped as truncated or corrupt "
                             f"({', '.join(skipped[:5])}{'…' if len(skipped) > 5 else ''}); the others were predicted")
    return 0


def parse_depth_range(values: list[float] | None) -> tuple[float, float] | None:
    """``--range MIN MAX`` (metres) -> (min, max); RigError unless 0 <= MIN < MAX, both finite."""
    import math

    if values is None:
        return None
    lo, hi = (float(v) for v in values)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 <= lo < hi:
        raise RigError(f"--range: expected 0 <= MIN < MAX in m, got {lo:g} {hi:g}")
    return lo, hi


def cmd_report(args: argparse.Namespace) -> int:
    from inference.report import build_report

    path = build_report(Path(args.eval_dir), Path(args.out) if args.out else None, args.title)
    print(f"wrote {path} (open it in a browser)")
    return 0
