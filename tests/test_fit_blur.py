"""rig.fit_blur (`rig optics fit-blur`): recovering a known blur from a synthetic triplet, the
f/8-blur correction, alignment, and writing the fitted values into a config without losing comments."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from rig.core.config import CONFIG_DIR, load_rig_config
from rig.core.defocus import gaussian_kernel_1d, render_defocus
from rig.core.errors import ConfigError
from rig.fit_blur import (BlurPair, difference_f_number, error_mask, estimate_shift_px, fit_blur, prepare_pair,
                          shift_image, write_fit_to_config)
from tests.conftest import shared_subdir


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    """A sharp grey scene in [0.1, 0.9]: random rectangles plus fine noise texture."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w), 0.5, np.float32)
    for _ in range(40):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        img[y:y + rng.integers(3, 20), x:x + rng.integers(3, 20)] = rng.uniform(0.1, 0.9)
    img += cv2.GaussianBlur(rng.normal(0, 0.08, (h, w)).astype(np.float32), (0, 0), 0.7)
    return np.clip(img, 0.05, 0.95)


def _ramp_depth(h: int, w: int, near_m: float, far_m: float) -> np.ndarray:
    """Depth varying smoothly in inverse depth across the columns (no occlusion edges)."""
    inv = np.linspace(1.0 / near_m, 1.0 / far_m, w, dtype=np.float32)
    return np.broadcast_to(1.0 / inv, (h, w)).astype(np.float32).copy()


def _synthetic_pairs(psf: str, focus_m: float, rho: float, n: int = 2, h: int = 96, w: int = 160) -> list[BlurPair]:
    cfg = load_rig_config("nikon_d200_xtion")
    pairs = []
    for i in range(n):
        sharp = _texture(i, h, w)
        depth = _ramp_depth(h, w, 0.9, 5.0)
        f8 = render_defocus(sharp, depth, cfg.lens("all_in_focus", focus_m), psf=psf, rho=rho)
        f28 = render_defocus(sharp, depth, cfg.lens("defocused", focus_m), psf=psf, rho=rho)
        f28 = 0.8 * f28 + 0.07  # a different exposure
        pairs.append(BlurPair(f"s{i}", f28, f8, depth, error_mask(f8, f28, depth, margin_px=12)))
    return pairs


def test_difference_f_number_composes_gaussians():
    n = difference_f_number(2.8, 8.0)
    assert n == pytest.approx(2.8 / math.sqrt(1 - (2.8 / 8.0) ** 2))
    assert n == pytest.approx(2.989, abs=1e-3)
    # blurring by σ₈ then by σ_diff equals blurring by σ₂.₈ (the premise of the correction)
    s28 = 2.4
    s8, sdiff = s28 * 2.8 / 8.0, s28 * 2.8 / n
    k = np.convolve(gaussian_kernel_1d(s8), gaussian_kernel_1d(sdiff))
    var = float(np.sum(k * (np.arange(k.size) - k.size // 2) ** 2))
    assert var == pytest.approx(s28 ** 2, rel=0.02)
    with pytest.raises(ValueError):
        difference_f_number(8.0, 2.8)


def test_fit_recovers_known_gaussian_blur():
    truth_focus, truth_rho = 1.7, 0.35
    pairs = _synthetic_pairs("gaussian", truth_focus, truth_rho)
    cfg = load_rig_config("nikon_d200_xtion")
    res = fit_blur(pairs, cfg.lens("defocused"), 8.0, psfs=("gaussian",), focus_grid_n=14,
                   rho_grid=(0.2, 0.3, 0.4, 0.6), refine_iters=10)
    b = res.best
    assert b.psf == "gaussian"
    assert b.focus_m == pytest.approx(truth_focus, rel=0.04)
    assert b.rho == pytest.approx(truth_rho, abs=0.03)
    none = next(m for m in res.models if m.psf == "none")
    assert b.rmse_8bit < 0.25 * none.rmse_8bit
    # the measured σ_diff per depth bin follows the truth's thin-lens curve
    for row in res.curve:
        assert row["sigma_diff_px"] == pytest.approx(row["model:fit gaussian"], abs=0.25)


def test_fit_tells_disk_from_gaussian():
    pairs = _synthetic_pairs("disk", 2.2, 0.3, n=6, h=72, w=120)
    cfg = load_rig_config("nikon_d200_xtion")
    res = fit_blur(pairs, cfg.lens("defocused"), 8.0, focus_grid_n=10, rho_grid=(0.2, 0.3, 0.45),
                   refine_iters=5)
    assert res.best.psf == "disk", res.settings["psf_decision"]
    assert res.best.focus_m == pytest.approx(2.2, rel=0.06)


def test_choose_best_keeps_gaussian_on_a_coin_flip():
    from rig.fit_blur import ModelError, choose_best, sign_test_p

    assert sign_test_p(6, 6) == pytest.approx(2 / 64) and sign_test_p(13, 23) > 0.5
    g = ModelError("fit gaussian", "gaussian", 1.7, 0.26, 5.64, [5.0, 6.0, 5.5, 6.2])
    d = ModelError("fit disk", "disk", 1.7, None, 5.62, [4.9, 6.1, 5.4, 6.3])  # lower mean, 2/4 images
    best, why = choose_best([d, g])
    assert best is g and "not distinguishable" in why
    d_clear = ModelError("fit disk", "disk", 1.7, None, 5.0, [4.0, 5.0, 4.5, 5.2, 4.1, 4.4])
    g6 = ModelError("fit gaussian", "gaussian", 1.7, 0.26, 5.6, [5.0, 6.0, 5.5, 6.2, 5.0, 5.3])
    assert choose_best([g6, d_clear])[0] is d_clear


def test_shift_is_found_and_undone():
    import cv2

    ref = cv2.GaussianBlur(_texture(3, 120, 160), (0, 0), 1.5)  # smooth: bilinear resampling is ~exact
    moved = shift_image(ref, (-2.5, 1.25))  # content moved by (+2.5, −1.25)
    dx, dy = estimate_shift_px(ref, moved)
    assert (dx, dy) == pytest.approx((2.5, -1.25), abs=0.15)
    back = shift_image(moved, (dx, dy))
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(back - ref)[inner].mean() < 0.2 * np.abs(moved - ref)[inner].mean()
    p = prepare_pair("x", (ref * 255).astype(np.uint8), (moved * 255).astype(np.uint8),
                     np.full(ref.shape, 2.0, np.float32))
    assert p.shift_px == pytest.approx((2.5, -1.25), abs=0.2) and p.mask.any()


NIKON_WITH_COMMENTS = """\
# header comment stays
name: nikon_test
dslr:
  driver: gphoto2
  sensor_px: [3872, 2592]
  pixel_um: 6.1
  focal_mm: 35.0
  f_number_defocused: 2.8
  f_number_all_in_focus: 8.0
  focus_m: 2.0   # measured with a tape
output:
  size_px: [645, 432]
blur:
  psf: gaussian
  # rho comment
  rho: 0.3
depth_sensor:
  driver: openni
"""


def test_write_fit_keeps_comments_and_validates(tmp_path: Path):
    p = tmp_path / "rig.yaml"
    p.write_text(NIKON_WITH_COMMENTS)
    changed = write_fit_to_config(p, 1.6789, "gaussian", 0.27)
    assert changed == ["dslr.focus_m", "blur.psf", "blur.rho"]
    text = p.read_text()
    assert "  focus_m: 1.679   # measured with a tape\n" in text and "  rho: 0.270\n" in text
    old_lines, new_lines = NIKON_WITH_COMMENTS.splitlines(), text.splitlines()
    assert len(old_lines) == len(new_lines)
    assert [a for a, b in zip(old_lines, new_lines) if a != b] == ["  focus_m: 2.0   # measured with a tape",
                                                                   "  rho: 0.3"]
    cfg = load_rig_config(p)
    assert (cfg.dslr.focus_m, cfg.blur.psf, cfg.blur.rho) == (1.679, "gaussian", 0.27)
    # a disk fit leaves ρ alone; a missing key is inserted under its section
    p.write_text(NIKON_WITH_COMMENTS.replace("  psf: gaussian\n", ""))
    write_fit_to_config(p, 1.5, "disk", None)
    cfg = load_rig_config(p)
    assert (cfg.dslr.focus_m, cfg.blur.psf, cfg.blur.rho) == (1.5, "disk", 0.3)
    # an invalid value is refused and the file is left as it was
    before = p.read_text()
    with pytest.raises(ConfigError):
        write_fit_to_config(p, 0.02, "gaussian", 0.3)  # focus inside the focal length
    assert p.read_text() == before
    assert not list(tmp_path.glob(".*.fit.yaml"))


def test_write_fit_on_the_real_preset_changes_only_its_lines(tmp_path: Path):
    p = tmp_path / "nikon.yaml"
    shutil.copy(CONFIG_DIR / "rig" / "nikon_d200_xtion.yaml", p)
    before = p.read_text().splitlines()
    write_fit_to_config(p, 3.25, "gaussian", 0.41)
    after = p.read_text().splitlines()
    diff = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(diff) <= 3
    assert all(b.strip().split(":")[0] in ("focus_m", "psf", "rho") for _, b in diff)
    cfg = load_rig_config(p)
    assert (cfg.dslr.focus_m, cfg.blur.rho) == (3.25, 0.41)


@pytest.mark.slow
@pytest.mark.realdata
def test_fit_blur_cli_on_real_data(tmp_path: Path, capsys):
    from rig.fit_blur import cmd_fit_blur

    data = shared_subdir("dfd_indoor/train")
    cfg_path = tmp_path / "nikon.yaml"
    shutil.copy(CONFIG_DIR / "rig" / "nikon_d200_xtion.yaml", cfg_path)
    out = tmp_path / "fit.json"
    args = argparse.Namespace(data=str(data), config=str(cfg_path), limit=2, write=True, json_out=str(out))
    assert cmd_fit_blur(args) == 0
    res = json.loads(out.read_text())
    names = [m["name"] for m in res["models"]]
    assert {"no blur", "NYU paper", "config"} <= set(names)
    none = next(m for m in res["models"] if m["name"] == "no blur")
    assert res["best"]["rmse_8bit"] < none["rmse_8bit"]  # real f/2.8 shots are blurrier than f/8 ones
    assert 0.5 <= res["best"]["focus_m"] <= 10.0
    cfg = load_rig_config(cfg_path)
    assert cfg.dslr.focus_m == pytest.approx(res["best"]["focus_m"], abs=1e-3)
    assert "best:" in capsys.readouterr().out
