"""Resampling to the output size, undistortion, and the f/2.8 ↔ f/8 alignment check."""

from __future__ import annotations

import numpy as np
import pytest

from registration.resample import (Shift, estimate_shift, output_intrinsics, prepare_pair, resample_to,
                                   shift_image, undistort)
from rig.core.records import Intrinsics

from conftest import shared_subdir


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture with structure at several scales."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for s in (3, 9, 27):
        img += cv2.resize(rng.random((h // s + 2, w // s + 2)).astype(np.float32), (w, h),
                          interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.dstack([img, np.roll(img, 5, axis=1), img[::-1]]).astype(np.uint8)


def test_area_resampling_keeps_the_pixel_centre_convention():
    sensor = Intrinsics(1290, 864, 1912.6, 1912.6, 644.5, 431.5)
    img = np.zeros((864, 1290), np.float32)
    # a bright 2x2 block centred on sensor point (600.5, 300.5)
    img[300:302, 600:602] = 1.0
    out = resample_to(img, (645, 432))
    assert out.shape == (432, 645)
    ys, xs = np.nonzero(out)
    cy, cx = np.average(ys, weights=out[ys, xs]), np.average(xs, weights=out[ys, xs])
    k = sensor.scaled(645, 432)
    assert cx == pytest.approx((600.5 + 0.5) * k.width / sensor.width - 0.5, abs=1e-6)
    assert cy == pytest.approx((300.5 + 0.5) * k.height / sensor.height - 0.5, abs=1e-6)
    assert out.sum() * 4 == pytest.approx(img.sum())  # INTER_AREA conserves the mean
    k_out = output_intrinsics(sensor, (645, 432))
    assert (k_out.fx, k_out.cx) == (pytest.approx(956.3), pytest.approx(322.0)) and not any(k_out.dist)


def test_undistortion_moves_points_to_their_pinhole_positions():
    import cv2

    k = Intrinsics(320, 240, 300.0, 300.0, 159.5, 119.5, (-0.25, 0.08, 0.0, 0.0, 0.0))
    ideal = np.array([[40.0, 30.0], [280.0, 200.0], [160.0, 60.0]])
    xn = (ideal - [k.cx, k.cy]) / [k.fx, k.fy]
    proj, _ = cv2.projectPoints(np.c_[xn, np.ones(3)], np.zeros(3), np.zeros(3), k.matrix(), np.asarray(k.dist))
    img = np.zeros((240, 320), np.float32)
    for (u, v) in proj.reshape(-1, 2):
        cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), 3 * 16, 1.0, -1, lineType=cv2.LINE_AA, shift=4)
    out = undistort(img, k)
    for (u, v) in ideal:
        win = out[int(v) - 8:int(v) + 9, int(u) - 8:int(u) + 9]
        ys, xs = np.mgrid[int(v) - 8:int(v) + 9, int(u) - 8:int(u) + 9]
        assert np.average(xs, weights=win) == pytest.approx(u, abs=0.25)
        assert np.average(ys, weights=win) == pytest.approx(v, abs=0.25)


@pytest.mark.parametrize("dx,dy", [(1.3, -0.7), (0.25, 0.1), (-3.4, 2.25)])
def test_shift_is_found_between_a_sharp_and_a_blurred_copy(dx, dy):
    import cv2

    sharp = _texture(240, 320)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    moved = shift_image(blurred, -dx, -dy)  # content moved by (+dx, +dy)
    s = estimate_shift(sharp, moved)
    assert (s.dx_px, s.dy_px) == (pytest.approx(dx, abs=0.12), pytest.approx(dy, abs=0.12))
    assert s.response > 0.3
    back = shift_image(moved, s.dx_px, s.dy_px)  # undoing it re-aligns the pair
    rest = estimate_shift(sharp, back)
    assert rest.magnitude_px < 0.12


def test_prepare_pair_flags_or_corrects_a_shift_above_the_threshold():
    import cv2

    aif = cv2.resize(_texture(240, 320, seed=5), (640, 480), interpolation=cv2.INTER_CUBIC)
    dfc = shift_image(cv2.GaussianBlur(aif, (0, 0), 3.0), -3.0, 1.6)  # (+1.5, −0.8) px at half size
    sensor = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
    flagged = prepare_pair(dfc, aif, sensor, (320, 240), align="flag")
    assert flagged.flagged and not flagged.corrected
    assert (flagged.shift.dx_px, flagged.shift.dy_px) == (pytest.approx(1.5, abs=0.12), pytest.approx(-0.8, abs=0.12))
    fixed = prepare_pair(dfc, aif, sensor, (320, 240), align="correct")
    assert fixed.corrected and estimate_shift(fixed.all_in_focus, fixed.defocused).magnitude_px < 0.15
    off = prepare_pair(dfc, aif, sensor, (320, 240), align="off")
    assert off.shift is None and np.array_equal(off.defocused, flagged.defocused)
    calm = prepare_pair(cv2.GaussianBlur(aif, (0, 0), 3.0), aif, sensor, (320, 240), align="correct")
    assert not calm.flagged and not calm.corrected and calm.shift.magnitude_px < 0.5
    assert fixed.intrinsics == output_intrinsics(sensor, (320, 240))


OUTDOOR_PAIRS = [("DSC_0001", "DSC_0002"), ("DSC_0005", "DSC_0006"), ("DSC_0008", "DSC_0007")]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("n2_8,n8", OUTDOOR_PAIRS)
def test_real_outdoor_pair_full_resolution(n2_8, n8):
    from rig.core.imageio import read_rgb

    root = shared_subdir("dfd_outdoor")
    a, b = root / "N2_8" / f"{n2_8}.JPG", root / "N8" / f"{n8}.JPG"
    if not (a.is_file() and b.is_file()):
        pytest.skip(f"{a.name} / {b.name} not in {root}")
    dfc, aif = read_rgb(a), read_rgb(b)
    assert dfc.shape == aif.shape == (2592, 3872, 3)
    pair = prepare_pair(dfc, aif, None, (645, 432), align="flag")
    assert pair.defocused.shape == (432, 645, 3)
    s = pair.shift
    assert isinstance(s, Shift) and s.response > 0.3 and s.magnitude_px < 20
    assert pair.flagged == (s.magnitude_px > 0.5)
    # robust to the blur difference: a known extra shift of the f/2.8 shot is measured on top
    moved = shift_image(pair.defocused, -1.5, 0.8)
    s2 = estimate_shift(pair.all_in_focus, moved)
    assert s2.dx_px - s.dx_px == pytest.approx(1.5, abs=0.1)
    assert s2.dy_px - s.dy_px == pytest.approx(-0.8, abs=0.1)
    # correcting leaves (almost) nothing
    fixed = prepare_pair(dfc, aif, None, (645, 432), align="correct", threshold_px=0.0)
    assert estimate_shift(fixed.all_in_focus, fixed.defocused).magnitude_px < 0.15
