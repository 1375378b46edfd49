"""Defocus-blur calibration (registration.blur_calibration, `rig calibrate blur`) on simulated-rig boards.

The simulated rig renders the circle grid through rig.core.defocus with the config's lens, so the true
k_cam is rig.core.optics.k_cam_px of the config; configs vary f-number, focal length and pixel pitch.
"""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np
import pytest
import yaml

from acquisition import sim_geometry
from acquisition.simulated import SimulatedRig
from registration.blur_calibration import calibrate_blur, circle_sigma_px, robust_median, write_blur_report
from rig.core import optics
from rig.core.config import load_rig_config
from rig.core.errors import RigError

SPACING_M = 0.02
W, H = 400, 300
# (f-number of the rendered aperture, focal mm, pixel µm): true k_cam spans 1.1 .. 3.2 output px
LENSES = [(2.8, 35.0, 25.0), (5.6, 35.0, 25.0), (4.0, 50.0, 30.0), (3.2, 28.0, 20.0), (8.0, 35.0, 25.0)]


def _overrides(f_number: float, focal_mm: float, pixel_um: float, focus_m: float) -> dict:
    return {"dslr.sensor_px": [W, H], "output.size_px": [W // 2, H // 2], "dslr.f_number_all_in_focus": f_number,
            "dslr.f_number_defocused": 1.0, "dslr.focus_m": focus_m, "dslr.focal_mm": focal_mm,
            "dslr.pixel_um": pixel_um, "blur.max_layer_step_px": 0.1}


def render_pair(f_number: float, focal_mm: float, pixel_um: float, scene: int = 1):
    """(in-focus grey, defocused grey, config of the defocused capture, s1) with the 4x11 grid at s1/2."""
    fx = focal_mm / (pixel_um * 1e-3)
    s2 = fx * 12 * SPACING_M / (0.8 * H)  # the board fills ~80 % of the height
    s1 = 2.0 * s2
    pose = np.eye(4)
    pose[:3, :3] = sim_geometry.rotation_xyz_deg(4.0, -6.0, 2.0)
    pose[:3, 3] = [-3.5 * SPACING_M, -5.0 * SPACING_M, s2]
    imgs = []
    for focus in (s2, s1):
        cfg = load_rig_config("simulated", overrides=_overrides(f_number, focal_mm, pixel_um, focus))
        rig = SimulatedRig(cfg)
        rig.set_scene(scene)
        imgs.append(rig.render_board_views("acircles", (4, 11), SPACING_M, pose, defocus=True)[0])
    return imgs[0], imgs[1], cfg, s1


@pytest.fixture(scope="module")
def pairs():
    return [render_pair(*lens) for lens in LENSES]


def test_moment_sigma_exact_on_synthetic_disk():
    """A disk blurred by a known Gaussian (linear image): σ recovered for small and large blur."""
    from scipy.ndimage import gaussian_filter

    n, r = 81, 12.0
    yy, xx = np.mgrid[0:n, 0:n] - 40.3
    ss = 8  # supersampled disk
    yy2, xx2 = (np.mgrid[0:n * ss, 0:n * ss] + 0.5) / ss - 40.3 - 0.5
    disk = (np.hypot(xx2, yy2) <= r).reshape(n, ss, n, ss).mean(axis=(1, 3))
    for sigma in (0.5, 1.0, 2.5, 4.0):
        img = 0.9 - 0.8 * gaussian_filter(disk, sigma, mode="constant", truncate=6.0)
        m = circle_sigma_px(img, (40.0, 40.0), 26.0, black_ratio=0.1 / 0.9)
        # + the pixel box; a sharp edge sampled on the grid aliases ~0.04 px² of second moment
        assert m.sigma_px == pytest.approx(math.sqrt(sigma ** 2 + 1 / 12), rel=0.02, abs=0.04)
        assert m.centre == pytest.approx((40.3, 40.3), abs=0.02)


def test_moment_sigma_unbiased_on_noisy_8bit_image():
    """Noise + sRGB 8-bit quantisation (a real capture): the white level must not shift σ. The
    whole-cell integral with a median white level read σ = 0.5 px as 0 and 1 px as ~0.3 px."""
    from registration.blur_calibration import linearize
    from scipy.ndimage import gaussian_filter

    n, r, ss = 81, 10.0, 8
    yy2, xx2 = (np.mgrid[0:n * ss, 0:n * ss] + 0.5) / ss - 40.3 - 0.5
    disk = (np.hypot(xx2, yy2) <= r).reshape(n, ss, n, ss).mean(axis=(1, 3))
    rng = np.random.default_rng(3)
    for sigma in (0.5, 1.0, 2.0, 3.0):
        est = []
        for _ in range(5):
            lin = 0.35 - 0.34 * gaussian_filter(disk, sigma, mode="constant", truncate=6.0)
            lin = lin + 0.004 * rng.standard_normal(lin.shape)
            grey = np.clip(np.rint(np.clip(lin, 0, 1) ** (1 / 2.2) * 255), 0, 255).astype(np.uint8)
            est.append(circle_sigma_px(linearize(grey), (40.0, 40.0), 28.0, black_ratio=0.01 / 0.35).sigma_px)
        assert np.median(est) == pytest.approx(math.sqrt(sigma ** 2 + 1 / 12), rel=0.06), (sigma, est)


def test_robust_median_rejects_outliers():
    v = np.array([2.0, 2.1, 1.9, 2.05, 1.95, 9.0, np.nan])
    med, inl = robust_median(v)
    assert med == pytest.approx(2.0)
    assert inl.tolist() == [True] * 5 + [False, False]


def test_k_cam_estimated_against_truth(pairs, tmp_path):
    true, est = [], []
    for sharp, blurred, cfg, s1 in pairs:
        k = sim_geometry.dslr_intrinsics(cfg)
        cal = calibrate_blur(sharp, blurred, (4, 11), SPACING_M, k, s1, cfg.blur.rho, cfg.output.size_px[0])
        t = optics.k_cam_px(cfg.lens("all_in_focus"))
        true.append(t)
        est.append(cal.k_cam_px)
        assert cal.n_inliers >= 30
        assert 0.0 <= cal.gamma_px < 0.5
        assert np.nanmedian(cal.distance_m) == pytest.approx(s1 / 2, rel=0.02)
    true, est = np.array(true), np.array(est)
    r2 = np.corrcoef(true, est)[0, 1] ** 2
    rel = np.abs(est / true - 1.0)
    print("\nk_cam true / estimated (output px):", ", ".join(f"{t:.3f}/{e:.3f} ({(e / t - 1) * 100:+.1f} %)"
                                                             for t, e in zip(true, est)),
          f"R² {r2:.5f}, median |rel| {np.median(rel) * 100:.1f} %")
    assert r2 >= 0.99, (true, est)
    assert np.median(rel) <= 0.05, (true, est)
    assert rel.max() <= 0.10, (true, est)
    png = write_blur_report(cal, tmp_path / "blur.png", true_k_cam_px=true[-1])
    assert png.stat().st_size > 1000


def _parser() -> argparse.ArgumentParser:
    from rig.cli import build_parser

    return build_parser()


def test_cli_prints_and_writes(pairs, tmp_path, capsys):
    sharp, blurred, cfg, s1 = pairs[0]
    cv2.imwrite(str(tmp_path / "sharp.png"), sharp)
    cv2.imwrite(str(tmp_path / "blurred.png"), blurred)
    cfg_path = tmp_path / "rig.yaml"
    cfg_path.write_text(yaml.safe_dump(dict(cfg.raw), sort_keys=False))
    args = _parser().parse_args(["calibrate", "blur", "--config", str(cfg_path), "--in-focus", str(tmp_path / "sharp.png"),
                                 "--defocused", str(tmp_path / "blurred.png"), "--pattern", "4x11",
                                 "--spacing-mm", "20", "--focus-m", str(s1), "--report", str(tmp_path / "r.png"),
                                 "--write"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "k_cam_px" in out and "gamma_px" in out
    written = load_rig_config(cfg_path)
    true = optics.k_cam_px(cfg.lens("all_in_focus"))
    assert written.blur.k_cam_px == pytest.approx(true, rel=0.05)
    assert written.blur.gamma_px >= 0.0
    assert (tmp_path / "r.png").is_file()


def test_cli_bad_input_is_one_line_error(pairs, tmp_path):
    sharp = pairs[0][0]
    cv2.imwrite(str(tmp_path / "sharp.png"), sharp)
    blank = np.full_like(sharp, 200)
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    base = ["calibrate", "blur", "--in-focus", str(tmp_path / "sharp.png"), "--spacing-mm", "20"]
    args = _parser().parse_args(base + ["--defocused", str(tmp_path / "missing.png")])
    with pytest.raises(RigError, match="missing or not a decodable image"):
        args.func(args)
    args = _parser().parse_args(base + ["--defocused", str(tmp_path / "blank.png")])
    with pytest.raises(RigError, match="circle grid 4x11 not found"):
        args.func(args)
