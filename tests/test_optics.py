import math

import numpy as np
import pytest

from rig.core import optics
from rig.core.config import load_rig_config


@pytest.fixture
def nyu_lens():
    return optics.Lens(focal_mm=15.0, f_number=2.8, pixel_um=5.6, focus_m=2.0)


def test_formula_matches_paper1_verbatim(nyu_lens):
    d = np.array([0.5, 1.0, 1.9, 2.0, 3.0, 8.0, 50.0])
    assert np.allclose(optics.blur_diameter_px(d, nyu_lens), optics.blur_diameter_from_formula_px(d, nyu_lens))


def test_hand_computed_value(nyu_lens):
    # f=15 mm, N=2.8, d_f=2 m, d=4 m: ε = f²/(N(d_f-f)) · |d-d_f|/d = 0.015²/(2.8·1.985)·0.5 m
    eps_m = 0.015**2 / (2.8 * 1.985) * 0.5
    assert optics.blur_diameter_px(4.0, nyu_lens) == pytest.approx(eps_m / 5.6e-6, rel=1e-12)


def test_zero_at_focus_and_monotone_each_side(nyu_lens):
    assert optics.blur_diameter_px(2.0, nyu_lens) == pytest.approx(0.0, abs=1e-12)
    near = optics.blur_diameter_px(np.linspace(0.3, 2.0, 50), nyu_lens)
    far = optics.blur_diameter_px(np.linspace(2.0, 100, 50), nyu_lens)
    assert np.all(np.diff(near) < 0) and np.all(np.diff(far) > 0)
    assert far[-1] < optics.max_blur_px(nyu_lens)


def test_downsampling_divides_blur(nyu_lens):
    from dataclasses import replace

    ds = replace(nyu_lens, downsample=6.0)
    assert optics.blur_diameter_px(5.0, ds) == pytest.approx(optics.blur_diameter_px(5.0, nyu_lens) / 6.0)


def test_inverse_on_each_side(nyu_lens):
    for d in (0.7, 1.5):
        e = optics.blur_diameter_px(d, nyu_lens)
        assert optics.depth_from_blur_m(e, nyu_lens, "near") == pytest.approx(d)
    for d in (2.5, 9.0):
        e = optics.blur_diameter_px(d, nyu_lens)
        assert optics.depth_from_blur_m(e, nyu_lens, "far") == pytest.approx(d)
    assert np.isnan(optics.depth_from_blur_m(optics.max_blur_px(nyu_lens) * 1.1, nyu_lens, "far"))


def test_dead_zone_brackets_focus(nyu_lens):
    near, far = optics.dead_zone_m(nyu_lens, threshold_px=1.0)
    assert near < 2.0 < far
    assert optics.blur_diameter_px(near, nyu_lens) == pytest.approx(1.0)
    assert optics.blur_diameter_px(far, nyu_lens) == pytest.approx(1.0)
    # a tiny aperture: far side never reaches 1 px -> hyperfocal, infinite far limit
    near2, far2 = optics.dead_zone_m(nyu_lens.with_f_number(32.0), threshold_px=1.0)
    assert math.isinf(far2) and near2 < near


def test_kcam_paper2_form(nyu_lens):
    # paper 2: σ·k_r = |s1 - s2|/s2 · f²/(N(s1 - f)) · 1/p
    s1, s2 = 2.0, 5.0
    rhs = abs(s1 - s2) / s2 * 0.015**2 / (2.8 * (s1 - 0.015)) / 5.6e-6
    assert optics.k_cam_px(nyu_lens) * abs(s1 - s2) / s2 == pytest.approx(rhs)
    sigma = optics.gaussian_sigma_px(optics.blur_diameter_px(s2, nyu_lens), rho=0.3)
    assert sigma * (1 / 0.3) == pytest.approx(rhs)


def test_sigma_defocus():
    assert optics.sigma_defocus_px(5.0, 3.0) == pytest.approx(4.0)
    assert optics.sigma_defocus_px(1.0, 3.0) == 0.0  # below the in-focus blur: in focus
    assert np.allclose(optics.sigma_defocus_px(np.array([3.0, 5.0]), 0.0), [3.0, 5.0])


def test_exposure_matching_keeps_exposure():
    t = optics.matched_shutter_s(1 / 1000, 2.8, 8.0)
    assert t == pytest.approx((8 / 2.8) ** 2 / 1000)
    assert optics.exposure_stops(1 / 1000, 2.8, 320) == pytest.approx(optics.exposure_stops(t, 8.0, 320))
    iso = optics.matched_iso(320, 2.8, 8.0)
    assert optics.exposure_stops(1 / 1000, 2.8, 320) == pytest.approx(optics.exposure_stops(1 / 1000, 8.0, iso))
    with pytest.raises(ValueError):
        optics.matched_shutter_s(0, 2.8, 8)


def test_focus_inside_focal_length_rejected():
    with pytest.raises(ValueError):
        optics.k_cam_px(optics.Lens(focal_mm=35, f_number=2.8, pixel_um=6, focus_m=0.02))


def test_presets_give_paper1_scale():
    cfg = load_rig_config("nikon_d200_xtion")
    assert cfg.downsample == pytest.approx(3872 / 645)
    lens = cfg.lens()
    assert lens.f_number == 2.8 and cfg.lens("all_in_focus").f_number == 8.0
    # the all-in-focus shot has (8/2.8)x less blur at every depth
    d = np.array([1.0, 4.0])
    ratio = optics.blur_diameter_px(d, lens) / optics.blur_diameter_px(d, cfg.lens("all_in_focus"))
    assert np.allclose(ratio, 8.0 / 2.8)


def test_measured_k_cam_from_the_config_drives_the_blur():
    """blur.k_cam_px (from `rig calibrate blur`) replaces the thin-lens k_cam in every lens of the
    config: exactly at the calibrated aperture and focus, scaled by the thin-lens ratio elsewhere."""
    from rig.core.config import load_rig_config
    from rig.core.defocus import render_defocus

    plain = load_rig_config("simulated")
    nominal = optics.k_cam_px(plain.lens("defocused"))
    cal = load_rig_config("simulated", overrides={"blur.k_cam_px": 1.2 * nominal})
    assert optics.k_cam_px(cal.lens("defocused")) == pytest.approx(1.2 * nominal)
    assert optics.k_cam_px(cal.lens("all_in_focus")) == pytest.approx(1.2 * optics.k_cam_px(plain.lens("all_in_focus")))
    assert optics.k_cam_px(cal.lens("defocused", focus_m=4.0)) == pytest.approx(
        1.2 * optics.k_cam_px(plain.lens("defocused", focus_m=4.0)))
    assert optics.blur_diameter_px(5.0, cal.lens()) == pytest.approx(1.2 * optics.blur_diameter_px(5.0, plain.lens()))
    rng = np.random.default_rng(0)
    img = rng.random((40, 48, 3)).astype(np.float32)
    depth = np.full((40, 48), 6.0, np.float32)
    a = render_defocus(img, depth, plain.lens(), rho=0.3)
    b = render_defocus(img, depth, cal.lens(), rho=0.3)
    assert np.std(b) < np.std(a)  # more blur, less texture
