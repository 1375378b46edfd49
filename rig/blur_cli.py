"""`rig calibrate blur`: k_cam and γ from an in-focus and a defocused circle-grid image (paper 2 §3.3).

Wiring: ``add_commands(sub)`` adds ``camind-experiment``; ``add_blur_parser(sub,
name)`` adds it under any name (e.g. ``blur`` inside the ``rig calibrate`` group). See
:mod:`registration.blur_calibration` for the method and the k_cam convention.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rig.errors import RigError


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
    """`rig camind-experiment` (`rig calibrate blur` is added to the calibrate group by registration.cli)."""
    add_experiment_parser(sub, "camind-experiment")


def write_blur_keys(config_path: Path, k_cam_px: float, gamma_px: float) -> None:
    """Set blur.k_cam_px / blur.gamma_px in a rig YAML, keeping its comments (validated first)."""
    from rig.config import update_config_file

    update_config_file(config_path, {"blur.k_cam_px": f"{k_cam_px:.5f}", "blur.gamma_px": f"{gamma_px:.5f}"})


def run_calibrate_blur(args: argparse.Namespace) -> int:
    import cv2

    from registration.blur_calibration import calibrate_blur, nominal_intrinsics, write_blur_report
    from registration.calibration import geometry_from_calibration, load_calibration, parse_pattern
    from rig.config import load_rig_config

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
    print(f"k_cam_px {cal.k_cam_px:.5f}")
    print(f"gamma_px {cal.gamma_px:.5f}")
    if args.report:
        print(f"report: {write_blur_report(cal, args.report)}")
    if args.write:
        if cfg.path is None:
            raise RigError("--write: the config has no file to write to")
        write_blur_keys(Path(cfg.path), cal.k_cam_px, cal.gamma_px)
        print(f"wrote blur.k_cam_px and blur.gamma_px to {cfg.path}")
    return 0


# ------------------------------------------------------------------ cross-camera experiment (issue 7)
# The camera family of the experiment: 35 mm lens, 25 µm pixels on an 800x600 sensor, 200x150 output
# (100 µm output pixels), focused at 2 m; cameras differ by f-number, so k_cam = 6.23/N output px.
EXP_SENSOR, EXP_OUTPUT, EXP_FOCUS_M = (800, 600), (200, 150), 2.0


def _exp_config(f_number: float, focus_m: float = EXP_FOCUS_M):
    from rig.config import load_rig_config

    return load_rig_config("simulated", overrides={
        "dslr.sensor_px": list(EXP_SENSOR), "output.size_px": list(EXP_OUTPUT), "dslr.focal_mm": 35.0,
        "dslr.pixel_um": 25.0, "dslr.f_number_defocused": 1.0, "dslr.f_number_all_in_focus": float(f_number),
        "dslr.focus_m": float(focus_m), "blur.max_layer_step_px": 0.1})


def simulated_scenes(n: int, first: int = 0):
    """n procedural scenes of the simulated rig at the experiment's output size: (rgb linear, depth m)."""
    import cv2

    from acquisition.simulated import SimulatedRig

    rig = SimulatedRig(_exp_config(2.8))
    out = []
    for i in range(first, first + n):
        rig.set_scene(i)
        lin, depth = rig.aif_linear()
        out.append((cv2.resize(lin, EXP_OUTPUT, interpolation=cv2.INTER_AREA),
                    cv2.resize(depth, EXP_OUTPUT, interpolation=cv2.INTER_NEAREST)))
    return out


def simulated_camera_set(scenes, f_number: float, k_cam_est_px: float | None = None):
    """Defocused sRGB views of ``scenes`` through the experiment camera at f/N (rig.defocus)."""
    import numpy as np

    from inference.camind import CameraSet
    from rig import optics
    from rig.defocus import render_defocus

    cfg = _exp_config(f_number)
    lens = cfg.lens("all_in_focus")
    rgbs = [np.power(np.clip(render_defocus(lin, d, lens, psf=cfg.blur.psf, rho=cfg.blur.rho,
                                            max_step_px=cfg.blur.max_layer_step_px, threads=1), 0, 1), 1 / 2.2)
            for lin, d in scenes]
    return CameraSet(f"f/{f_number:g}", np.stack(rgbs).astype(np.float32), np.stack([d for _, d in scenes]),
                     optics.k_cam_px(lens), 0.0, k_cam_est_px)


def calibrate_simulated_camera(f_number: float, spacing_m: float = 0.028) -> tuple[float, float]:
    """(k_cam_px, γ_px) of the experiment camera at f/N by `rig calibrate blur`'s method on simulated
    boards at half the focus distance."""
    import numpy as np

    from acquisition import sim_geometry
    from acquisition.simulated import SimulatedRig
    from registration.blur_calibration import calibrate_blur

    s1 = EXP_FOCUS_M
    s2 = s1 / 2
    pose = np.eye(4)
    pose[:3, :3] = sim_geometry.rotation_xyz_deg(3.0, -5.0, 1.0)
    pose[:3, 3] = [-3.5 * spacing_m, -5.0 * spacing_m, s2]
    imgs = []
    for focus in (s2, s1):
        rig = SimulatedRig(_exp_config(f_number, focus))
        rig.set_scene(1)
        imgs.append(rig.render_board_views("acircles", (4, 11), spacing_m, pose, defocus=True)[0])
    cfg = _exp_config(f_number)
    cal = calibrate_blur(imgs[0], imgs[1], (4, 11), spacing_m, sim_geometry.dslr_intrinsics(cfg), s1,
                         cfg.blur.rho, cfg.output.size_px[0])
    return cal.k_cam_px, cal.gamma_px


def camind_experiment(train_f: tuple[float, ...] = (2.0, 4.0), test_f: tuple[float, ...] = (2.8, 5.6),
                      n_train: int = 12, n_test: int = 4, steps: int = 300, calibrate: bool = True,
                      log=print) -> list[dict]:
    """Issue 7's cross-camera experiment on the simulated rig (see inference.camind)."""
    import torch

    from inference.camind import run_cross_camera_experiment

    torch.set_num_threads(1)
    tr_scenes = simulated_scenes(n_train, 0)
    te_scenes = simulated_scenes(n_test, 1000)
    train = [simulated_camera_set(tr_scenes, n) for n in train_f]
    test = []
    for n in test_f:
        est = None
        if calibrate:
            try:
                est = calibrate_simulated_camera(n)[0]
            except RigError as e:  # reported, the row is left out
                log(f"test camera f/{n:g}: blur calibration failed: {e}")
        test.append(simulated_camera_set(te_scenes, n, est))
        log(f"test camera f/{n:g}: true k_cam {test[-1].k_cam_px:.3f} px, estimated {est}")
    return run_cross_camera_experiment(train, test, EXP_FOCUS_M, steps=steps, log=log)


def run_camind_experiment(args: argparse.Namespace) -> int:
    from inference.camind import format_table

    rows = camind_experiment(steps=args.steps, n_train=args.train_scenes, n_test=args.test_scenes,
                             calibrate=not args.no_calibrate)
    table = format_table(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


def add_experiment_parser(sub: argparse._SubParsersAction, name: str = "camind-experiment") -> argparse.ArgumentParser:
    h = "cross-camera depth-from-defocus experiment on the simulated rig (paper 2 Table 3 shape)"
    p = sub.add_parser(name, help=h, description=h)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--train-scenes", type=int, default=12)
    p.add_argument("--test-scenes", type=int, default=4)
    p.add_argument("--no-calibrate", action="store_true", help="skip the estimated-k_cam row")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.set_defaults(func=run_camind_experiment)
    return p
