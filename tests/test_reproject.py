"""Depth → DSLR reprojection: z-buffer, footprint splatting, accuracy vs ground truth and rs.align."""

from __future__ import annotations

import numpy as np
import pytest

from rig.bench.register import Plane, analytic_scene, crack_pixels, depth_errors, raycast_depth, sim_rig_geometry
from registration.reproject import reproject_depth, reproject_depth_reference, sensor_window
from rig.core.config import load_rig_config
from rig.core.records import Extrinsics, Intrinsics


def _extr(rot_y_deg: float = 0.0, t=(0.0, 0.0, 0.0)) -> Extrinsics:
    a = np.deg2rad(rot_y_deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    m[:3, 3] = t
    return Extrinsics.from_matrix(m)


SRC = Intrinsics(80, 60, 70.0, 70.0, 39.5, 29.5)
DST = Intrinsics(128, 96, 140.0, 140.0, 63.2, 47.6)  # ~1.7x finer, like the 640x480 → 645x432 case


def test_matches_the_plain_loop_version_with_distortion():
    src = Intrinsics(40, 30, 35.0, 35.0, 19.5, 14.5, (0.05, -0.02, 0.001, 0.0005, 0.0))
    dst = Intrinsics(64, 48, 70.0, 70.0, 31.7, 23.4, (-0.03, 0.01, 0.0, 0.0, 0.0))
    e = _extr(2.0, (0.06, -0.02, 0.01))
    d = raycast_depth(analytic_scene(3), Intrinsics(40, 30, 35.0, 35.0, 19.5, 14.5), e.matrix()).astype(np.float32)
    d[5:8, 10:20] = 0  # a hole
    fast = reproject_depth(d, src, dst, e, grow_px=0.1, close_cracks_px=0)
    ref = reproject_depth_reference(d, src, dst, e, grow_px=0.1)
    assert np.array_equal(fast > 0, ref > 0)
    # footprints from the local Jacobian vs exact corners: a box edge can land on the other side of a
    # pixel centre, so a few pixels take the neighbouring point
    assert np.mean(np.abs(fast - ref) < 1e-3) > 0.97


@pytest.mark.parametrize("dst", [
    Intrinsics(64, 48, 70.0, 70.0, 31.7, 23.4),  # no distortion anywhere: the separable-ray path
    Intrinsics(64, 48, 70.0, 70.0, 31.7, 23.4, (-0.03, 0.01, 0.0, 0.0, 0.0)),  # only the target distorts
    Intrinsics(40, 90, 28.0, 105.0, 19.6, 44.3),  # 0.8x wide, 3x tall footprints: boxes over 2 px
])
def test_matches_the_plain_loop_version_for_each_path(dst):
    src = Intrinsics(40, 30, 35.0, 35.0, 19.5, 14.5)
    e = _extr(2.0, (0.06, -0.02, 0.01))
    d = raycast_depth(analytic_scene(3), src, e.matrix()).astype(np.float32)
    d[5:8, 10:20] = 0  # a hole
    fast = reproject_depth(d, src, dst, e, grow_px=0.1, close_cracks_px=0)
    ref = reproject_depth_reference(d, src, dst, e, grow_px=0.1)
    assert np.mean((fast > 0) == (ref > 0)) > 0.995
    assert np.mean(np.abs(fast - ref) < 1e-3) > 0.97


def test_sensor_holes_write_nothing_even_with_gap_closing():
    """Invalid points (holes, behind the target) sit at the origin with ±grow_px boxes: neither
    they nor a gap closed towards them may paint pixel (0, 0) or the image's first row/column."""
    scene = [Plane((0.0, 0.0, 1.0), 2.0)]
    e = _extr(0.0, (0.0, 0.0, 0.0))
    depth = raycast_depth(scene, SRC, e.matrix()).astype(np.float32)
    depth[:, : SRC.width // 2] = 0  # the left half of the sensor sees nothing
    depth[::2, SRC.width // 2::3] = 0  # and holes among the rest
    for grow in (1e-9, 0.05):
        out = reproject_depth(depth, SRC, DST, e, grow_px=grow, close_cracks_px=1.0)
        assert not out[:, : DST.width // 2 - 2].any()
        assert np.allclose(out[out > 0], 2.0)


def test_nearest_surface_wins_and_disocclusions_stay_unknown():
    scene = [Plane((0.0, 0.0, 1.0), 3.0), Plane((0.0, 0.0, 1.0), 1.0, (-0.1, 0.1, -0.1, 0.1))]
    e = _extr(0.0, (-0.1, 0.0, 0.0))  # the target sits 10 cm to the right of the sensor (x_dst = x_src − 0.1)
    depth = raycast_depth(scene, SRC, e.matrix()).astype(np.float32)
    out = reproject_depth(depth, SRC, DST, e)
    truth = raycast_depth(scene, DST)
    front = np.isclose(truth, 1.0)
    assert np.mean(np.isclose(out[front], 1.0, atol=1e-4)) > 0.97  # all but the plate's edge pixels
    # the wall strip right of the plate that the sensor cannot see: unknown, not the plate, not the wall
    u = np.arange(DST.width)
    shadow_cols = (u > DST.cx + DST.fx * 0.1 / 1.0 + 2) & (u < DST.cx + DST.fx * (0.1 / 1.0 + 0.1 / 3.0 * 2) - 4)
    rows = slice(int(DST.cy - 8), int(DST.cy + 8))
    assert shadow_cols.any()
    assert np.all(out[rows][:, shadow_cols] == 0)
    assert np.all((out[~front] == 0) | np.isclose(out[~front], 3.0, atol=1e-3))


def test_output_is_depth_in_the_target_frame_not_the_sensors():
    scene = [Plane((0.0, 0.0, 1.0), 2.0)]
    e = _extr(0.0, (0.0, 0.0, 0.25))  # X_dst = X_src + 0.25 z: the sensor sits 25 cm in front of the target
    depth = raycast_depth(scene, SRC, e.matrix()).astype(np.float32)  # 1.75 m from the sensor
    out = reproject_depth(depth, SRC, DST, e)
    assert np.isclose(depth[depth > 0], 1.75, atol=1e-5).all()
    assert np.allclose(out[out > 0], 2.0, atol=1e-5)


def test_no_cracks_on_a_slanted_plane_when_the_target_is_finer():
    scene = [Plane((0.0, -0.8, 0.6), 1.2)]  # a steep floor-like plane filling the view
    e = _extr(1.0, (-0.06, -0.04, 0.01))
    depth_mm = np.rint(raycast_depth(scene, SRC, e.matrix(), max_m=50) * 1000).astype(np.uint16)
    out = reproject_depth(depth_mm, SRC, DST, e)
    truth = raycast_depth(scene, DST, max_m=50)
    inner = np.zeros_like(out, bool)
    inner[4:-4, 4:-4] = True  # the sensor sees beyond the target everywhere but at the very border
    assert crack_pixels(np.where(inner, out, 1.0)) == 0
    assert np.mean(out[inner] > 0) > 0.995
    err = np.abs(out - truth)[inner & (out > 0)]
    # each footprint carries one depth: the error is bounded by the depth change across one sensor pixel
    step = np.median(np.abs(np.diff(depth_mm.astype(np.float64) / 1000.0, axis=0)))
    assert np.median(err) < 0.6 * step
    assert np.percentile(err, 99) < 1.5 * step


def test_uint16_millimetres_equal_float_metres():
    e = _extr(1.5, (0.05, 0.0, 0.0))
    d = raycast_depth(analytic_scene(1), SRC, e.matrix())
    mm = np.rint(d * 1000).astype(np.uint16)
    a = reproject_depth(mm, SRC, DST, e, depth_scale_m=0.001)
    b = reproject_depth(mm.astype(np.float32) / 1000.0, SRC, DST, e)
    assert np.array_equal(a > 0, b > 0)
    assert np.allclose(a, b, atol=1e-5)  # x*0.001 vs x/1000 in float32


def test_culling_window_keeps_every_point_that_lands_in_the_target():
    cfg = load_rig_config("simulated")
    dslr, sensor, extr = sim_rig_geometry(cfg)
    r0, r1, c0, c1 = sensor_window(sensor, dslr, extr, 0.45)
    assert 0 < r1 - r0 < sensor.height and 0 < c1 - c0 < sensor.width  # the wide sensor is culled
    d = np.full((sensor.height, sensor.width), 0.5, np.float32)  # everything at the nearest depth
    full = reproject_depth(d, sensor, dslr, extr, min_depth_m=1e-3)
    d2 = d.copy()
    d2[r0:r1, c0:c1] = 0
    assert not reproject_depth(d2, sensor, dslr, extr).any()  # nothing outside the window lands
    assert full.all()


def test_more_accurate_than_rs_align_on_the_simulated_geometry():
    sw = pytest.importorskip("rs_software")
    pytest.importorskip("pyrealsense2")
    cfg = load_rig_config("simulated")
    dslr, sensor, extr = sim_rig_geometry(cfg)
    scene = analytic_scene(0)
    depth_mm = np.rint(raycast_depth(scene, sensor, extr.matrix(), max_m=8) * 1000).astype(np.uint16)
    truth = raycast_depth(scene, dslr, max_m=8).astype(np.float32)
    ours = reproject_depth(depth_mm, sensor, dslr, extr)
    colour = np.zeros((dslr.height, dslr.width, 3), np.uint8)
    rs_m = sw.align_depth_to_color(depth_mm, colour, sensor, dslr, extr).astype(np.float32) / 1000.0
    e_ours, e_rs = depth_errors(ours, truth), depth_errors(rs_m, truth)
    assert e_ours["coverage"] > e_rs["coverage"] - 0.01
    assert e_ours["mae_mm"] < e_rs["mae_mm"]
    both = (ours > 0) & (rs_m > 0)
    assert depth_errors(ours, truth, both)["mae_mm"] < depth_errors(rs_m, truth, both)["mae_mm"]
    # where the surface is smooth both agree up to rs.align's sensor-z (not DSLR-z) output
    med = np.median(np.abs(ours - rs_m)[both])
    assert med < 0.03
