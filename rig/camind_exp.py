"""Issue 7's cross-camera experiment (paper 2 Table 3's shape) on the rig's own generator.

Scenes: procedural scenes of the simulated rig and the real DFD indoor f/8 images with their
registered depth (``../shared/data/dfd_indoor/train``; split by capture time, so neighbouring shots of
one room stay on one side). Every scene is defocused by :func:`rig.core.defocus.render_defocus` through a
family of cameras that differ only by f-number: a 50 mm lens, 25 µm pixels on an 800x600 sensor,
200x150 output (100 µm output pixels), focused at 1 m, so k_cam = 26.3/N output px (diameter
convention; σ = ρ·k_cam·|d − 1 m|/d). Depths are mostly beyond the focus (real scenes: 95 % beyond
1 m), which keeps blur a monotonic depth cue.

Training cameras f/2 and f/4 (k_cam 13.2 and 6.6 px); test cameras f/2.8 (9.4 px, between them) and
f/5.6 (4.7 px, outside the training range). The estimated k_cam of each test camera comes from ``rig
calibrate blur``'s method on simulated captures of the 4x11 circle grid (:func:`calibrate_camera`),
held at 0.7 m rather than paper 2's s1/2: with this fast 50 mm lens the blur at 0.5 m (σ up to 10
sensor px) spreads into the neighbouring circles' cells and is under-read by 10–20 %.

This is a wiring module (it imports acquisition for the simulated rig); the model, training and
metrics are in :mod:`inference.camind`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rig.core.errors import RigError

SENSOR_PX, OUTPUT_PX, FOCUS_M = (800, 600), (200, 150), 1.0
FOCAL_MM, PIXEL_UM = 50.0, 25.0
TRAIN_F, TEST_F = (2.0, 4.0), (2.8, 5.6)
BOARD_SPACING_M, BOARD_DISTANCE_M = 0.020, 0.7  # turned 90°, the grid fits the 0.28x0.21 m view at 0.7 m
DEPTH_RANGE_M = (0.5, 10.0)


def exp_config(f_number: float, focus_m: float = FOCUS_M):
    """The experiment camera at f/N (the simulated preset with this lens; the 'all in focus' aperture
    is the one rendered)."""
    from rig.core.config import load_rig_config

    return load_rig_config("simulated", overrides={
        "dslr.sensor_px": list(SENSOR_PX), "output.size_px": list(OUTPUT_PX), "dslr.focal_mm": FOCAL_MM,
        "dslr.pixel_um": PIXEL_UM, "dslr.f_number_defocused": 1.0, "dslr.f_number_all_in_focus": float(f_number),
        "dslr.focus_m": float(focus_m), "blur.max_layer_step_px": 0.25})


def true_k_cam_px(f_number: float) -> float:
    from rig.core import optics

    return float(optics.k_cam_px(exp_config(f_number).lens("all_in_focus")))


# ------------------------------------------------------------------------------------------ scenes
Scene = tuple[np.ndarray, np.ndarray]  # (linear RGB (H, W, 3) float32 [0, 1], depth (H, W) float32 m)


def simulated_scenes(n: int, first: int = 0) -> list[Scene]:
    """n procedural scenes of the simulated rig at the output size (all-in-focus, linear)."""
    import cv2

    from acquisition.simulated import SimulatedRig

    rig = SimulatedRig(exp_config(2.8))
    out = []
    for i in range(first, first + n):
        rig.set_scene(i)
        lin, depth = rig.aif_linear()
        out.append((cv2.resize(lin, OUTPUT_PX, interpolation=cv2.INTER_AREA).astype(np.float32),
                    np.clip(cv2.resize(depth, OUTPUT_PX, interpolation=cv2.INTER_NEAREST), *DEPTH_RANGE_M)
                    .astype(np.float32)))
    return out


def real_dfd_root() -> Path | None:
    """``dfd_indoor/train`` under :func:`rig.core.datasets.shared_data_root`; None when absent."""
    from rig.core.datasets import shared_data_root

    root = shared_data_root() / "dfd_indoor" / "train"
    return root if (root / "N8").is_dir() and (root / "depth").is_dir() else None


def real_scenes(root: Path, test_fraction: float = 0.25) -> tuple[list[Scene], list[Scene]]:
    """(train, test) scenes from the real f/8 images + depth: centre-cropped to 4:3, area-resized to
    the output size, sRGB linearised; split by capture time (the last ``test_fraction`` are test)."""
    import cv2

    from rig.core.datasets import find_dfd_triplets

    triplets, _ = find_dfd_triplets(root)  # (id = capture time, f/2.8, f/8, depth), sorted by id
    scenes = []
    for _, _, n8, depth_png in triplets:
        rgb = cv2.cvtColor(cv2.imread(str(n8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(depth_png), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        h, w = depth.shape
        cw = min(w, int(round(h * 4 / 3)))
        x0 = (w - cw) // 2
        rgb, depth = rgb[:, x0:x0 + cw], depth[:, x0:x0 + cw]
        lin = np.power(cv2.resize(rgb, OUTPUT_PX, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0, 2.2)
        d = cv2.resize(depth, OUTPUT_PX, interpolation=cv2.INTER_NEAREST)
        scenes.append((lin.astype(np.float32), np.clip(d, *DEPTH_RANGE_M).astype(np.float32)))
    n_test = max(1, int(round(len(scenes) * test_fraction)))
    return scenes[:-n_test], scenes[-n_test:]


def camera_set(scenes: Sequence[Scene], f_number: float, k_cam_est_px: float | None = None, name: str | None = None):
    """Defocused sRGB views of ``scenes`` through the experiment camera at f/N (rig.core.defocus)."""
    from inference.camind import CameraSet
    from rig.core.defocus import render_defocus

    cfg = exp_config(f_number)
    lens = cfg.lens("all_in_focus")
    rgbs = [np.power(np.clip(render_defocus(lin, d, lens, psf=cfg.blur.psf, rho=cfg.blur.rho,
                                            max_step_px=cfg.blur.max_layer_step_px, threads=1), 0, 1), 1 / 2.2)
            for lin, d in scenes]
    return CameraSet(name or f"f/{f_number:g}", np.stack(rgbs).astype(np.float32),
                     np.stack([d for _, d in scenes]), true_k_cam_px(f_number), 0.0, k_cam_est_px)


# ------------------------------------------------------------------------------------- calibration
def board_captures(f_number: float, distance_m: float = BOARD_DISTANCE_M, spacing_m: float = BOARD_SPACING_M
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(in-focus, defocused) grey sensor images of the 4x11 asymmetric circle grid at ``distance_m``,
    turned 90° about the optical axis so it fits the view; the defocused one focused at FOCUS_M."""
    from acquisition import sim_geometry
    from acquisition.simulated import SimulatedRig

    pose = np.eye(4)
    pose[:3, :3] = sim_geometry.rotation_xyz_deg(3.0, -4.0, 91.0)
    centre = pose[:3, :3] @ np.array([3.5 * spacing_m, 5.0 * spacing_m, 0.0])
    pose[:3, 3] = np.array([0.0, 0.0, distance_m]) - centre
    imgs = []
    for focus in (distance_m, FOCUS_M):
        rig = SimulatedRig(exp_config(f_number, focus))
        rig.set_scene(1)
        imgs.append(rig.render_board_views("acircles", (4, 11), spacing_m, pose, defocus=True)[0])
    return imgs[0], imgs[1]


def calibrate_camera(f_number: float) -> tuple[float, float]:
    """(k_cam_px, γ_px) of the experiment camera at f/N by `rig calibrate blur`'s method."""
    from acquisition import sim_geometry
    from registration.blur_calibration import calibrate_blur

    sharp, blurred = board_captures(f_number)
    cfg = exp_config(f_number)
    cal = calibrate_blur(sharp, blurred, (4, 11), BOARD_SPACING_M, sim_geometry.dslr_intrinsics(cfg), FOCUS_M,
                         cfg.blur.rho, cfg.output.size_px[0])
    return cal.k_cam_px, cal.gamma_px


# ------------------------------------------------------------------------------------------- run
def build_sets(n_sim_train: int, n_sim_test: int, use_real: bool = True, calibrate: bool = True,
               log: Callable[[str], None] = print):
    """(train camera sets, test camera sets, description of the data)."""
    tr, te = simulated_scenes(n_sim_train, 0), simulated_scenes(n_sim_test, 1000)
    what = f"{n_sim_train} simulated train / {n_sim_test} simulated test scenes"
    root = real_dfd_root() if use_real else None
    if root is not None:
        rtr, rte = real_scenes(root)
        tr, te = tr + rtr, te + rte
        what += f" + {len(rtr)} real f/8 train / {len(rte)} real f/8 test scenes ({root})"
    elif use_real:
        what += " (real DFD data not found: simulated scenes only)"
    train = [camera_set(tr, n) for n in TRAIN_F]
    test = []
    for n in TEST_F:
        est = None
        if calibrate:
            try:
                est = calibrate_camera(n)[0]
            except RigError as e:  # reported; the estimated row is left out
                log(f"test camera f/{n:g}: blur calibration failed: {e}")
        test.append(camera_set(te, n, est))
        log(f"test camera f/{n:g}: true k_cam {test[-1].k_cam_px:.3f} px, estimated "
            f"{'-' if est is None else f'{est:.3f} px ({(est / test[-1].k_cam_px - 1) * 100:+.1f} %)'}")
    # a camera seen in training, on the test scenes: the in-distribution reference
    test.append(camera_set(te, TRAIN_F[1], name=f"f/{TRAIN_F[1]:g} (seen)"))
    return train, test, what


def run(steps: int, n_sim_train: int = 24, n_sim_test: int = 8, use_real: bool = True, calibrate: bool = True,
        workers: int = 2, save_dir: str | None = None, crop: int = 96, batch: int = 8, base: int = 16,
        seed: int = 0, k_cam_errors: Sequence[float] = (), log: Callable[[str], None] = print
        ) -> tuple[list[dict], str]:
    """Train both variants and evaluate; returns (rows, data description)."""
    from inference.camind import run_cross_camera_experiment
    from rig.core import optics

    train, test, what = build_sets(n_sim_train, n_sim_test, use_real, calibrate, log)
    log(f"data: {what}; train k_cam {', '.join(f'{c.k_cam_px:.2f}' for c in train)} px")
    rows = run_cross_camera_experiment(train, test, FOCUS_M, steps=steps, crop_hw=(crop, crop), batch=batch,
                                       base=base, rho=optics.PAPER1_RHO, workers=workers, save_dir=save_dir,
                                       seed=seed, k_cam_errors=k_cam_errors, log=log)
    return rows, what


def check_steps(steps: int) -> int:
    if steps < 1 or not math.isfinite(steps):
        raise RigError(f"--steps: must be >= 1, got {steps}")
    return steps
