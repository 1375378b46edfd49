"""The simulated rig: scene geometry, the virtual DSLR and depth sensor, faults, calibration boards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from acquisition import sim_geometry
from acquisition.protocols import (DepthSensor, DeviceBusy, DeviceDisconnected, DeviceTimeout, Dslr,
                                   SettingRejected)
from acquisition.simulated import (LATENCY_S, Box, Plane, Scene, SimulatedDepthSensor, SimulatedDslr, SimulatedRig,
                                   Texture, View, board_object_points, make_scene, render_view)
from rig.core.config import load_rig_config
from rig.core.records import Intrinsics
from rig.core.session import verify_image_file

TEX = Texture("checker", 0.1, (0.1, 0.1, 0.1), (0.9, 0.9, 0.9), 1)


def small_cfg(width: int = 322, **over):
    """The simulated preset at ``width`` px (default a quarter; 25 µm pixels, the focal length keeps
    the 37° field of view), no latency. Overrides: dotted keys with '.' spelled as in the YAML."""
    h = width * 432 // 644
    base = {"dslr.sensor_px": [width, h], "dslr.pixel_um": 25.0,
            "dslr.focal_mm": 35.0 * (width * 25.0) / (1290 * 18.3), "output.size_px": [width // 2, h // 2],
            "depth_sensor.size_px": [160, 120] if width <= 322 else [320, 240], "simulated.latency_scale": 0.0}
    base.update(over)
    return load_rig_config("simulated", overrides=base)


def flat_scene(z_m: float, far_m: float = 8.0) -> Scene:
    return Scene(index=0, kind="indoor", objects=[Plane((0, 0, z_m), (1, 0, 0), (0, 1, 0), math.inf, math.inf, TEX)],
                 pitch_deg=0.0, near_m=0.5, far_m=far_m, seed=0)


def with_scene(rig: SimulatedRig, scene: Scene) -> SimulatedRig:
    rig._scene, rig.scene_index = scene, scene.index
    rig._cache.clear()
    return rig


# ------------------------------------------------------------------------------------------ geometry
def test_ray_cast_plane_and_box_depth_is_exact():
    k = Intrinsics.from_hfov(64, 48, 40.0)
    scene = Scene(index=0, kind="indoor", seed=0, pitch_deg=0.0, near_m=0.5, far_m=8.0, objects=[
        Plane((0, 0, 5.0), (1, 0, 0), (0, 1, 0), math.inf, math.inf, TEX),
        Box((0.0, 0.0, 2.5), (0.3, 0.3, 0.5), 0.0, TEX)])  # front face at z = 2.0
    r = render_view(scene, View(k, np.zeros(3), np.eye(3)))
    assert r.depth_m[24, 32] == pytest.approx(2.0, abs=1e-4)
    assert r.depth_m[0, 0] == pytest.approx(5.0, abs=1e-4)
    assert r.obj[24, 32] == 1 and r.obj[0, 0] == 0
    # the box covers exactly the pixels whose rays pass within ±0.3 m at z = 2 m
    x = (np.arange(64) - k.cx) / k.fx * 2.0
    expect = np.abs(x) <= 0.3
    assert np.array_equal(r.obj[24] == 1, expect)


def test_rotated_box_hit_matches_analytic_slab():
    scene = Scene(index=0, kind="indoor", seed=0, pitch_deg=0.0, near_m=0.5, far_m=8.0,
                  objects=[Box((0.0, 0.0, 3.0), (0.5, 0.5, 0.5), math.radians(45.0), TEX)])
    k = Intrinsics.from_hfov(9, 9, 10.0)
    r = render_view(scene, View(k, np.zeros(3), np.eye(3)))
    # the 45° yawed cube shows its vertical edge to the camera at z = 3 - 0.5·√2
    assert r.depth_m[4, 4] == pytest.approx(3.0 - 0.5 * math.sqrt(2.0), abs=1e-4)


def test_scenes_are_deterministic_and_in_range():
    cfg = small_cfg()
    a, b = make_scene(cfg, 3), make_scene(cfg, 3)
    assert a.describe() == b.describe() and [o.name for o in a.objects] == [o.name for o in b.objects]
    assert make_scene(cfg, 4).objects != a.objects
    kinds = {make_scene(cfg, i).kind for i in range(12)}
    assert kinds == {"indoor", "outdoor"}  # mixed
    rig = SimulatedRig(cfg)
    for i in range(4):
        rig.set_scene(i)
        d = rig.ground_truth_depth_dslr(output_size=True)
        assert d.shape == (108, 161) and d.dtype == np.float32
        assert d.min() >= 0.5 and d.max() <= 8.0
        assert np.ptp(d) > 0.5  # not a flat wall: several depths in view
        if rig.scene.kind == "indoor":
            assert np.median(d) < 6.0


def test_outdoor_sky_at_far_and_no_sensor_return():
    cfg = small_cfg(**{"simulated.scenes": "outdoor"})
    rig = SimulatedRig(cfg)
    found = False
    for i in range(6):
        rig.set_scene(i)
        g = rig.sensor_geometry()
        if g["sky"].any():
            found = True
            raw = rig.depth_frame_raw(np.random.default_rng(0))
            assert (raw[g["sky"]] == 0).all()
    assert found, "no outdoor scene shows sky"


def test_depth_sensor_and_dslr_see_the_same_geometry():
    """Back-project the sensor's true depth, move it with depth_to_dslr, project into the DSLR: the
    DSLR's ground truth agrees where the point is visible to both."""
    cfg = small_cfg(**{"simulated.noise": False})
    rig = SimulatedRig(cfg)
    rig.set_scene(2)
    z = rig.sensor_geometry()["z"]
    kd = sim_geometry.depth_intrinsics(cfg)
    v, u = np.mgrid[0:z.shape[0], 0:z.shape[1]]
    pts = np.stack([(u - kd.cx) / kd.fx * z, (v - kd.cy) / kd.fy * z, z], -1).reshape(-1, 3)
    e = sim_geometry.depth_to_dslr(cfg).matrix()
    p = pts @ e[:3, :3].T + e[:3, 3]
    ko = sim_geometry.dslr_intrinsics(cfg, output_size=True)
    uo, vo = np.rint(ko.fx * p[:, 0] / p[:, 2] + ko.cx).astype(int), np.rint(ko.fy * p[:, 1] / p[:, 2] + ko.cy).astype(int)
    inside = (uo >= 0) & (uo < ko.width) & (vo >= 0) & (vo < ko.height) & (z.ravel() < 7.9)
    truth = rig.ground_truth_depth_dslr(output_size=True)
    diff = truth[vo[inside], uo[inside]] - p[inside, 2]
    assert inside.sum() > 1000
    # most points agree to within pixel rounding on slanted surfaces; occluded ones differ
    assert np.median(np.abs(diff)) < 0.01
    assert np.mean(np.abs(diff) < 0.05) > 0.85


def test_kinect_noise_grows_with_z_squared_and_is_quantised():
    cfg = small_cfg()
    stds = {}
    for z in (1.0, 4.0):
        rig = with_scene(SimulatedRig(cfg), flat_scene(z))
        rng = np.random.default_rng(1)
        frames = np.stack([rig.depth_frame_raw(rng) for _ in range(12)]).astype(np.float64) / 1000.0
        valid = (frames > 0).all(axis=0)
        centre = valid[40:80, 50:110]
        stds[z] = np.median(frames[:, 40:80, 50:110].std(axis=0)[centre])
        if z == 4.0:  # depth values come in disparity steps: Δz = z²·Δd/(b·f) ≈ 4.6 cm at 4 m here
            step = z * z * (1 / 8) / (0.075 * sim_geometry.depth_intrinsics(cfg).fx)
            values = np.unique(frames[:, 40:80, 50:110][:, centre])
            gaps = np.diff(values)
            assert np.median(gaps) == pytest.approx(step, rel=0.25)
    ratio = stds[4.0] / stds[1.0]
    assert 8.0 < ratio < 32.0, ratio  # ∝ z² -> 16


def test_projector_shadow_and_range_limits():
    cfg = small_cfg(**{"simulated.noise": False, "depth_sensor.max_m": 4.0})
    box = Box((0.0, 0.0, 1.5), (0.1, 0.1, 0.1), 0.0, TEX)
    wall = Plane((0, 0, 3.0), (1, 0, 0), (0, 1, 0), math.inf, math.inf, TEX)
    scene = Scene(index=0, kind="indoor", objects=[wall, box], pitch_deg=0.0, near_m=0.5, far_m=8.0, seed=0)
    rig = with_scene(SimulatedRig(cfg), scene)
    g = rig.sensor_geometry()
    raw = rig.depth_frame_raw(np.random.default_rng(0))
    on_wall = (np.abs(g["z"] - 3.0) < 0.01)
    assert g["shadow"].sum() > 10  # the box's shadow on the wall, seen from the projector 75 mm away
    assert (raw[g["shadow"]] == 0).all()
    assert (raw[on_wall & ~g["shadow"]] > 0).mean() > 0.99
    # nothing beyond max_m
    far = with_scene(SimulatedRig(cfg), flat_scene(5.0))
    assert (far.depth_frame_raw(np.random.default_rng(0)) == 0).all()
    flat_shadow = with_scene(SimulatedRig(cfg), flat_scene(2.0)).sensor_geometry()["shadow"]
    assert not flat_shadow.any()


# ----------------------------------------------------------------------------------------------- DSLR
def test_devices_implement_the_protocols():
    cfg = small_cfg()
    rig = SimulatedRig(cfg)
    assert isinstance(SimulatedDslr(cfg, rig), Dslr)
    assert isinstance(SimulatedDepthSensor(cfg, rig), DepthSensor)


def test_dslr_settings_are_validated_against_offered_choices():
    cam = SimulatedDslr(small_cfg())
    cam.open()
    s = cam.settings()
    assert "f/1.8" in s["aperture"].choices and "f/22" in s["aperture"].choices and "f/7.1" in s["aperture"].choices
    assert s["shutter"].choices[0] == "1/4000" and s["shutter"].choices[-1] == "30"
    assert "100" in s["iso"].choices and "6400" in s["iso"].choices
    assert cam.set_aperture(2.8) == 2.8
    assert cam.set_aperture(8.0) == 8.0
    with pytest.raises(SettingRejected):
        cam.set_aperture(3.0)  # not a 1/3 stop
    assert cam.set_shutter(1 / 250) == pytest.approx(1 / 250)
    assert cam.set_shutter(0.0327) == pytest.approx(1 / 30)  # nearest offered
    with pytest.raises(SettingRejected):
        cam.set_shutter(100.0)
    assert cam.set_iso(320) == 320
    with pytest.raises(SettingRejected):
        cam.set_iso(25600)
    with pytest.raises(SettingRejected):
        cam.set_image_format("raw")
    assert cam.set_capture_target("sdram") == "Internal RAM"
    cam.close()
    with pytest.raises(DeviceDisconnected):
        cam.settings()


def test_capture_writes_jpeg_with_exif(tmp_path: Path):
    from acquisition.exif import read_exif

    cfg = small_cfg()
    cam = SimulatedDslr(cfg)
    cam.open()
    cam.set_aperture(2.8)
    cam.set_shutter(1 / 250)
    cam.set_iso(320)
    shot = cam.capture(tmp_path / "a.jpg")
    assert verify_image_file(shot.path)[:2] == (216, 322)  # sensor resolution
    exif = read_exif(shot.path)
    assert exif["FNumber"] == pytest.approx(2.8)
    assert exif["ExposureTime"] == pytest.approx(1 / 250)
    assert exif["ISOSpeedRatings"] == 320
    assert exif["FocalLength"] == pytest.approx(cfg.dslr.focal_mm, rel=1e-4)
    assert len(exif["DateTimeOriginal"]) == 19
    assert shot.exif["FNumber"] == exif["FNumber"]


def test_matched_exposure_keeps_brightness_and_f8_is_sharper(tmp_path: Path):
    import cv2

    from rig.core.imageio import read_rgb

    cfg = small_cfg(644, **{"simulated.noise": False})
    cam = SimulatedDslr(cfg)
    cam.rig.set_scene(1)
    cam.open()
    cam.set_iso(320)
    imgs = {}
    for n, t in ((2.8, 1 / 250), (8.0, 1 / 30), (8.0, 1 / 250)):
        cam.set_aperture(n)
        cam.set_shutter(t)
        imgs[(n, t)] = read_rgb(cam.capture(tmp_path / f"{n}_{t:.4f}.jpg").path).astype(np.float64)
    wide, matched, dark = imgs[(2.8, 1 / 250)], imgs[(8.0, 1 / 30)], imgs[(8.0, 1 / 250)]
    assert matched.mean() == pytest.approx(wide.mean(), rel=0.06)
    assert dark.mean() < 0.6 * wide.mean()  # 3 stops less light

    def sharpness(img: np.ndarray) -> float:
        return float(cv2.Laplacian(img.mean(axis=2), cv2.CV_64F).var())

    assert sharpness(matched) > 1.2 * sharpness(wide)  # f/8 has less defocus blur


# -------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind,exc", [("busy", DeviceBusy), ("timeout", DeviceTimeout),
                                      ("disconnect", DeviceDisconnected)])
def test_dslr_fault_kinds(tmp_path: Path, kind: str, exc: type):
    cam = SimulatedDslr(small_cfg(**{"faults.rate": 1.0, "faults.kinds": [kind]}))
    cam.open()
    with pytest.raises(exc):
        cam.capture(tmp_path / "x.jpg")
    if kind == "disconnect":  # stays disconnected until reopened
        with pytest.raises(DeviceDisconnected):
            cam.set_aperture(2.8)
        cam.open()
        assert cam.set_aperture(2.8) == 2.8


def test_truncated_transfer_is_caught_by_the_decode_check(tmp_path: Path):
    cam = SimulatedDslr(small_cfg(**{"faults.rate": 1.0, "faults.kinds": ["truncated"]}))
    cam.open()
    shot = cam.capture(tmp_path / "x.jpg")
    assert shot.path.stat().st_size > 0
    with pytest.raises(ValueError, match="truncated"):
        verify_image_file(shot.path)


def test_depth_sensor_faults_and_reproducible_seeded_faults():
    cfg = small_cfg(**{"faults.rate": 0.5})
    seqs = []
    for _ in range(2):
        rig = SimulatedRig(cfg)
        seqs.append([rig.faults.draw(("busy", "timeout", "disconnect", "truncated")) for _ in range(40)])
    assert seqs[0] == seqs[1] and any(seqs[0]) and not all(seqs[0])
    sensor = SimulatedDepthSensor(small_cfg(**{"faults.rate": 1.0, "faults.kinds": ["disconnect"],
                                               "depth_sensor.burst_frames": 1}))
    sensor.start()
    with pytest.raises(DeviceDisconnected):
        sensor.read_depth()
    with pytest.raises(DeviceDisconnected):  # until restarted
        sensor.read_ir()


def test_device_clock_accounts_latency():
    cfg = small_cfg(**{"simulated.latency_scale": 0.2})
    rig = SimulatedRig(cfg)
    cam, sensor = SimulatedDslr(cfg, rig), SimulatedDepthSensor(cfg, rig)
    cam.open()
    cam.set_aperture(2.8)
    sensor.start()
    sensor.read_depth()
    nominal = 0.2 * (LATENCY_S["open"] + LATENCY_S["set"] + LATENCY_S["start"] + LATENCY_S["frame"])
    assert rig.clock.device_s >= nominal * 0.99
    assert set(rig.clock.ops) == {"dslr.open", "dslr.set", "depth.start", "depth.frame"}


def test_sensor_frames_ir_and_intrinsics():
    cfg = small_cfg()
    rig = SimulatedRig(cfg)
    sensor = SimulatedDepthSensor(cfg, rig)
    rig.set_scene(0)
    sensor.start()
    d, ir = sensor.read_depth(), sensor.read_ir()
    assert d.dtype == np.uint16 and d.shape == (120, 160)
    assert ir is not None and ir.dtype == np.uint8 and ir.shape == (120, 160) and ir.std() > 5
    assert sensor.intrinsics() == sim_geometry.depth_intrinsics(cfg)
    assert sensor.depth_scale_m() == 0.001
    assert 0.3 < (d > 0).mean() < 1.0  # holes and dropouts, but mostly measured


# --------------------------------------------------------------------------------------------- boards
def _pose(rx: float, ry: float, t: list[float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = sim_geometry.rotation_xyz_deg(rx, ry, 0.0)
    m[:3, 3] = t
    return m


@pytest.mark.parametrize("kind,size,square", [("chessboard", (7, 5), 0.05), ("acircles", (4, 5), 0.06)])
def test_board_views_are_detected_where_the_pose_puts_them(kind: str, size: tuple[int, int], square: float):
    import cv2

    cfg = small_cfg(644)
    rig = SimulatedRig(cfg)
    rig.set_scene(2)
    pose = _pose(8.0, -12.0, [-0.15, -0.1, 1.5])
    grey, ir = rig.render_board_views(kind, size, square, pose)
    assert grey.shape == (432, 644) and ir.shape == (240, 320)
    obj = board_object_points(kind, size, square)
    to_ir = np.linalg.inv(sim_geometry.depth_to_dslr(cfg).matrix())
    for img, k, m in ((grey, sim_geometry.dslr_intrinsics(cfg), pose),
                      (ir, sim_geometry.depth_intrinsics(cfg), to_ir @ pose)):
        if kind == "chessboard":
            ok, corners = cv2.findChessboardCorners(img, size)
            assert ok
            corners = cv2.cornerSubPix(img, corners, (5, 5), (-1, -1),
                                       (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01))
        else:
            ok, corners = cv2.findCirclesGrid(img, size, flags=cv2.CALIB_CB_ASYMMETRIC_GRID)
            assert ok
        rvec, _ = cv2.Rodrigues(m[:3, :3])
        proj, _ = cv2.projectPoints(obj, rvec, m[:3, 3], k.matrix(), None)
        err = np.linalg.norm(proj.reshape(-1, 2) - corners.reshape(-1, 2), axis=1)
        assert np.median(err) < 0.5 and err.max() < 1.5
