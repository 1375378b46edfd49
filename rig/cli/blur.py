"""`rig calibrate blur`: k_cam and γ from an in-focus and a defocused circle-grid image (paper 2 §3.3).

Wiring: ``add_commands(sub)`` adds ``camind-experiment``; ``add_blur_parser(sub,
name)`` adds it under any name (e.g. ``blur`` inside the ``rig calibrate`` group). See
:mod:`registration.blur_calibration` for the method and the k_cam convention.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rig.core.errors import RigError

if TYPE_CHECKING:
    from rig.core.config import RigConfig


def add_blur_parser(sub: argparse._SubParsersAction, name: str = "calibrate-blur") -> argparse.ArgumentParser:
    h = "defocus-blur calibration: k_cam and in-focus blur γ from two circle-grid images"
    p = sub.add_parser(name, help=h, description=h)
    p.add_argument("--config", default="simulated", help="rig config (preset name or YAML path)")
    p.add_argument("--in-focus", required=True, help="grid image taken focused on the board")
    p.add_argument("--defocused", required=True, help="grid image taken focused at the rig's focus distance")
    p.add_argument("--pattern", default="4x11", help="asymmetric circle grid COLSxROWS (default 4x11)")
    p.add_argument("--spacing-mm", type=float, required=True, help="circle spacing (OpenCV's square size), mm")
    p.add_argument("--geometry", default=None, help="`rig calibrate geometry` YAML (DSLR intrinsics); "
                   "default: ideal pinhole from the config")
    p.add_argument("--focus-m", type=float, default=None, help="focus distance s1 of the defocused image "
                   "(default: the config's dslr.focus_m)")
    p.add_argument("--gamma-encoding", type=float, default=2.2, help="image gamma to undo (1 = linear)")
    p.add_argument("--report", default=None, help="write a PNG report (per-circle box plot)")
    p.add_argument("--write", action="store_true", help="store blur.k_cam_px and blur.gamma_px in the config file")
    p.set_defaults(func=run_calibrate_blur)
    return p


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`rig camind-experiment` (`rig calibrate blur` is added to the calibrate group by rig.cli.registration)."""
    add_experiment_parser(sub, "camind-experiment")


def write_blur_keys(config_path: Path, k_cam_px: float, gamma_px: float) -> None:
    """Set blur.k_cam_px / blur.gamma_px in a rig YAML, keeping its comments (validated first)."""
    from rig.core.config import update_config_file

    update_config_file(config_path, {"blur.k_cam_px": f"{k_cam_px:.5f}", "blur.gamma_px": f"{gamma_px:.5f}"})


def run_calibrate_blur(args: argparse.Namespace) -> int:
    import cv2

    from registration.blur_calibration import calibrate_blur, nominal_intrinsics, write_blur_report
    from registration.calibration import geometry_from_calibration, load_calibration, parse_pattern
    from rig.core.config import load_rig_config

    cfg = load_rig_config(args.config)
    pattern = parse_pattern(args.pattern)
    if not (args.spacing_mm and args.spacing_mm > 0):
        raise RigError(f"--spacing-mm: must be > 0, got {args.spacing_mm}")
    images = []
    for flag, path in (("--in-focus", args.in_focus), ("--defocused", args.defocused)):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise RigError(f"{flag} {path}: missing or not a decodable image")
        images.append(img)
    if args.geometry:
        k = geometry_from_calibration(load_calibration(args.geometry))[0]
    else:
        k = nominal_intrinsics(cfg.dslr.focal_mm, cfg.dslr.pixel_um, cfg.dslr.sensor_px)
    focus_m = float(args.focus_m) if args.focus_m else cfg.dslr.focus_m
    cal = calibrate_blur(images[0], images[1], pattern, args.spacing_mm * 1e-3, k, focus_m, cfg.blur.rho,
                         cfg.output.size_px[0], gamma=args.gamma_encoding)
    print(cal.summary())
    if cal.blur_too_large:
        print(f"warning: the defocused circles' blur is {cal.blur_to_spacing:.3f} of their spacing (> 0.08): it "
              "spills into the neighbouring cells and k_cam is under-read; hold the board nearer the focus "
              "distance or use a grid with a larger spacing")
    print(f"k_cam_px {cal.k_cam_px:.5f}")
    print(f"gamma_px {cal.gamma_px:.5f}")
    if args.report:
        print(f"report: {write_blur_report(cal, args.report)}")
    if args.write:
        _write_blur(cfg, cal.k_cam_px, cal.gamma_px, "blur.k_cam_px and blur.gamma_px")
    return 0


def add_kcam_parser(sub: argparse._SubParsersAction, name: str = "k-cam") -> argparse.ArgumentParser:
    h = "fit a camera's k_cam for a camera-independent (camind) model from real defocused shots with depth"
    p = sub.add_parser(name, help=h, description=h + ": the k_cam (a factor of the config's, √2 grid then "
                       "±¼ octave) under which the model's depth best matches the measured depth (mean |log "
                       "error|). Needs a dataset of the camera's defocused images (N2_8) with registered depth, "
                       "e.g. from `rig build-dataset` or `rig import-dfd`; no circle grid, no retraining.")
    p.add_argument("--model", default="dfd-camind", help="camind model (shipped name or file; default %(default)s)")
    p.add_argument("--config", required=True, help="the camera's rig config (preset name or YAML path)")
    p.add_argument("--data", required=True, help="dataset folder holding N2_8 images and depth")
    p.add_argument("--split", default="train", help="split to fit on (default %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="at most this many samples (0 = all)")
    p.add_argument("--write", action="store_true", help="store the fitted blur.k_cam_px in the config file")
    p.set_defaults(func=run_calibrate_kcam)
    return p


def run_calibrate_kcam(args: argparse.Namespace) -> int:
    from inference.camind_study import fit_k_cam
    from inference.camind_use import camind_model_path, open_camind
    from inference.recipe import load_images
    from rig.core import dataset as rds
    from rig.core.config import load_rig_config

    cfg = load_rig_config(args.config)
    path = camind_model_path(args.model)
    if path is None:
        raise RigError(f"--model {args.model}: not a camera-independent (camind) model file")
    root = Path(args.data)
    if not (root / args.split).is_dir():
        raise RigError(f"--data {root}: no split {args.split!r} (make a dataset with `rig import-dfd` or "
                       "`rig build-dataset`)")
    if args.limit < 0:
        raise RigError(f"--limit: must be >= 0, got {args.limit}")
    ids = rds.list_samples(root, args.split)
    ids = ids[: args.limit] if args.limit else ids
    if not ids:
        raise RigError(f"--data {root}: split {args.split!r} has no samples")
    runner = open_camind(path, cfg)
    imgs = load_images(root, args.split, ids, "N2_8")
    width = imgs.rgb[0].shape[1]
    if width != runner.ref_size_px[0]:
        raise RigError(f"--data: images are {width} px wide but {cfg.name} outputs {runner.ref_size_px[0]} px "
                       "(output.size_px); use a dataset at the config's output size")
    fit = fit_k_cam(runner.model, imgs.rgb, imgs.depth_m, imgs.valid, runner.k_cam_px, runner.gamma_px, width)
    print(f"start: k_cam {runner.k_cam_px:.4f} px ({runner.k_source}), γ {runner.gamma_px:.4f} px; "
          f"{fit.images} images of {root}/{args.split}")
    for f, loss in fit.loss_by_factor.items():
        print(f"  k_cam × {f:.3f} = {runner.k_cam_px * f:7.4f} px: mean |log error| {loss:.4f}")
    print(f"k_cam_px {fit.k_cam_px:.5f} (× {fit.factor:.3f})")
    if fit.at_edge:
        print("warning: the best k_cam is at the end of the searched range (× 0.25 … × 2); the model may not "
              "suit this camera (focus distance, image size) — check `rig predict` on a few shots")
    if args.write:
        _write_blur(cfg, fit.k_cam_px, runner.gamma_px, "blur.k_cam_px")
    return 0


def _write_blur(cfg: RigConfig, k_cam_px: float, gamma_px: float, what: str) -> None:
    """--write: store the fitted blur constants in the config file the run read."""
    if cfg.path is None:
        raise RigError("--write: the config has no file to write to")
    write_blur_keys(Path(cfg.path), k_cam_px, gamma_px)
    print(f"wrote {what} to {cfg.path}")


# ------------------------------------------------------------------ cross-camera experiment (issue 7)
def run_camind_experiment(args: argparse.Namespace) -> int:
    import time

    from inference.camind import format_table
    from rig import camind_exp

    camind_exp.check_steps(args.steps)
    t0 = time.perf_counter()
    rows, what = camind_exp.run(args.steps, n_sim_train=args.train_scenes, n_sim_test=args.test_scenes,
                                use_real=not args.no_real, calibrate=not args.no_calibrate, workers=args.workers,
                                save_dir=args.save_dir, crop=args.crop, batch=args.batch, base=args.base,
                                seed=args.seed, k_cam_errors=_parse_factors(args.k_cam_errors),
                                log=lambda m: print(m, flush=True))
    table = format_table(rows)
    print(table)
    if args.out:
        head = (f"Cross-camera DFD ({args.steps} steps, batch {args.batch}, {args.crop}² crops, base {args.base}, "
                f"seed {args.seed}; "
                f"{what}; {time.perf_counter() - t0:.0f} s)\n\n")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(head + table + "\n")
        print(f"table: {args.out}")
    return 0


def _parse_factors(text: str | None) -> tuple[float, ...]:
    """'0.9,1.1' -> (0.9, 1.1); RigError (one line) on anything but positive numbers."""
    if not text:
        return ()
    try:
        vals = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise RigError(f"--k-cam-errors: expected comma-separated factors like 0.9,1.1, got {text!r}") from None
    if not all(0 < v < float("inf") for v in vals):
        raise RigError(f"--k-cam-errors: factors must be finite numbers > 0, got {text!r}")
    return vals


def add_experiment_parser(sub: argparse._SubParsersAction, name: str = "camind-experiment") -> argparse.ArgumentParser:
    h = "cross-camera depth-from-defocus experiment (paper 2 Table 3 shape) on simulated + real f/8 scenes"
    p = sub.add_parser(name, help=h, description=h)
    p.add_argument("--steps", type=int, default=4000, help="Adam steps per variant (default 4000)")
    p.add_argument("--train-scenes", type=int, default=24, help="simulated training scenes (default 24)")
    p.add_argument("--test-scenes", type=int, default=8, help="simulated test scenes (default 8)")
    p.add_argument("--no-real", action="store_true", help="leave out the real DFD f/8 scenes")
    p.add_argument("--no-calibrate", action="store_true", help="skip the estimated-k_cam rows")
    p.add_argument("--workers", type=int, default=2, help="train the two variants in parallel processes")
    p.add_argument("--crop", type=int, default=96, help="square training crop, px (multiple of 4)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--base", type=int, default=16, help="U-Net base width")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order (default 0)")
    p.add_argument("--k-cam-errors", default=None, metavar="F,F", help="extra rows: the k_cam-trained model "
                   "given the true k_cam times each factor (e.g. 0.9,1.1: a 10 %% calibration error)")
    p.add_argument("--save-dir", default=None, help="resumable checkpoints + camind_gt.pt / camind_nok.pt here")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.set_defaults(func=run_camind_experiment)
    return p
