"""RealSense driver on librealsense's offline paths: software_device (live + recording) and .db3 playback."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 (librealsense) not installed")

from acquisition.protocols import DepthSensor, DeviceTimeout, SettingRejected, read_depth_burst  # noqa: E402
from acquisition.realsense_driver import (  # noqa: E402
    RealSenseSensor, detect, extrinsics_from_rs, intrinsics_from_rs)
from rig.core.config import load_rig_config  # noqa: E402
from rig.core.errors import DeviceError  # noqa: E402
from rig.core.records import Extrinsics, Intrinsics  # noqa: E402
import rs_software as sw  # noqa: E402  (tests/ is on sys.path: pytest prepend import mode)

pytestmark = pytest.mark.device

DEPTH_INTR = Intrinsics(64, 48, 50.0, 51.0, 31.5, 23.5, (0.08, -0.03, 0.001, -0.002, 0.01))
COLOR_INTR = Intrinsics(80, 60, 70.0, 69.0, 39.0, 30.0)


def _rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _depth_to_color() -> Extrinsics:
    m = np.eye(4)
    m[:3, :3] = _rotation_z(3.0)
    m[:3, 3] = [0.015, -0.002, 0.001]
    return Extrinsics.from_matrix(m)


def _frames(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    depth = [rng.integers(0, 8000, (48, 64)).astype(np.uint16) for _ in range(n)]
    ir = [rng.integers(0, 256, (48, 64)).astype(np.uint8) for _ in range(n)]
    color = [rng.integers(0, 256, (60, 80, 3)).astype(np.uint8) for _ in range(n)]
    return depth, ir, color


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list, list, list]:
    depth, ir, color = _frames(5)
    path = sw.record_db3(tmp_path_factory.mktemp("rs") / "scene.db3", depth, color, ir, depth_intr=DEPTH_INTR,
                         color_intr=COLOR_INTR, depth_scale_m=0.00025, extrinsics=_depth_to_color(),
                         serial="SW-42")
    return path, depth, ir, color


def test_playback_round_trips_frames_geometry_and_scale(recording: tuple) -> None:
    path, depth, ir, color = recording
    with RealSenseSensor(playback=path, ir=True, color=True) as cam:
        assert isinstance(cam, DepthSensor)
        assert (cam.model, cam.serial) == ("Software RealSense", "SW-42")
        assert cam.depth_scale_m() == pytest.approx(0.00025, rel=1e-6)
        got = cam.intrinsics()
        assert (got.width, got.height) == (64, 48)
        np.testing.assert_allclose([got.fx, got.fy, got.cx, got.cy], [50.0, 51.0, 31.5, 23.5], rtol=1e-6)
        np.testing.assert_allclose(got.dist, DEPTH_INTR.dist, rtol=1e-6)
        np.testing.assert_allclose(cam.color_intrinsics().matrix(), COLOR_INTR.matrix(), rtol=1e-6)
        np.testing.assert_allclose(cam.depth_to_color().matrix(), _depth_to_color().matrix(), atol=1e-6)
        for i in range(5):
            np.testing.assert_array_equal(cam.read_depth(), depth[i])
            np.testing.assert_array_equal(cam.read_ir(), ir[i])
            np.testing.assert_array_equal(cam.read_color(), color[i])
            assert cam.last_frame["depth"].frame_number == i
            assert cam.last_frame["depth"].timestamp_ms == pytest.approx(1000.0 * i / 30, abs=1e-3)
        with pytest.raises(DeviceError) as err:
            cam.read_depth()
        assert "end of recording" in _one_line(err)


def test_playback_gives_every_frame_to_a_slow_reader(tmp_path) -> None:
    depth = [np.full((48, 64), i + 1, np.uint16) for i in range(30)]
    color = [np.full((60, 80, 3), i, np.uint8) for i in range(30)]
    path = sw.record_db3(tmp_path / "long.db3", depth, color, depth_intr=DEPTH_INTR, color_intr=COLOR_INTR)
    with RealSenseSensor(playback=path, queue_frames=2) as cam:  # colour recorded but not read
        values = []
        for _ in range(30):
            values.append(int(cam.read_depth()[0, 0]))
            time.sleep(0.003)
    assert values == list(range(1, 31))


def test_live_software_device_burst_and_db3_recording(tmp_path) -> None:
    rig = sw.make_software_device(DEPTH_INTR, COLOR_INTR, depth_scale_m=0.001, extrinsics=_depth_to_color(),
                                  serial="LIVE-1")
    depth, ir, _ = _frames(5, seed=3)
    depth[1][:8] = 0  # holes: the fused frame ignores them
    out = tmp_path / "burst.db3"
    cam = RealSenseSensor(64, 48, 30, ir=True, device=rig.device, record_to=out)
    cam.start()
    try:
        assert cam.serial == "LIVE-1"
        assert cam.depth_scale_m() == pytest.approx(0.001, rel=1e-6)
        for i in range(5):
            rig.inject(i, depth=depth[i], ir=ir[i])
        frames, fused = read_depth_burst(cam, 5)
        assert cam.read_ir() is not None
    finally:
        cam.stop()
    for got, want in zip(frames, depth):
        np.testing.assert_array_equal(got, want)
    stack = np.stack(depth).astype(float)
    stack[stack == 0] = np.nan
    np.testing.assert_array_equal(fused, np.rint(np.nanmedian(stack, axis=0)).astype(np.uint16))
    with RealSenseSensor(playback=out, ir=True) as replay:
        assert replay.serial == "LIVE-1"
        assert replay.depth_scale_m() == pytest.approx(0.001, rel=1e-6)
        for i in range(5):
            np.testing.assert_array_equal(replay.read_depth(), depth[i])
            np.testing.assert_array_equal(replay.read_ir(), ir[i])


def test_live_stream_without_frames_times_out_in_one_line() -> None:
    rig = sw.make_software_device(DEPTH_INTR)
    cam = RealSenseSensor(64, 48, 30, device=rig.device, timeout_s=0.2)
    with pytest.raises(DeviceError, match="not started"):
        cam.read_depth()
    with cam:
        assert cam.read_ir() is None and cam.read_color() is None  # not enabled
        with pytest.raises(DeviceTimeout) as err:
            cam.read_depth()
        assert "no depth frame within 0.2 s" in _one_line(err)


def test_live_rejects_a_mode_the_device_does_not_offer() -> None:
    rig = sw.make_software_device(DEPTH_INTR)
    with pytest.raises(SettingRejected) as err:
        RealSenseSensor(640, 480, 30, device=rig.device).start()
    assert "64x48@30" in _one_line(err) and err.value.exit_code == 2


def test_record_path_must_be_db3(tmp_path) -> None:
    rig = sw.make_software_device(DEPTH_INTR)
    with pytest.raises(SettingRejected) as err:
        RealSenseSensor(64, 48, 30, device=rig.device, record_to=tmp_path / "x.bag").start()
    assert ".db3" in _one_line(err)
    with pytest.raises(RuntimeError, match="db3"):  # librealsense itself refuses .bag since 2.58
        rs.recorder(str(tmp_path / "y.bag"), rig.device)


@pytest.mark.parametrize("name, content, expect", [
    ("missing.db3", None, "not found"),
    ("garbage.db3", b"not a database", "unreadable"),
    ("truncated.db3", "truncate", "unreadable"),
    ("scene.txt", b"", "expected .db3 or .bag"),
])
def test_bad_playback_file_is_one_line_device_error(tmp_path, recording, name, content, expect) -> None:
    path = tmp_path / name
    if content == "truncate":
        path.write_bytes(recording[0].read_bytes()[:3000])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DeviceError) as err:
        RealSenseSensor(playback=path).start()
    assert expect in _one_line(err) and err.value.exit_code == 3


def test_detect_lists_devices_of_a_context_and_says_why_when_none(recording) -> None:
    ctx = rs.context()
    loaded = ctx.load_device(str(recording[0]))  # the context only holds a weak reference to it
    found, reason = detect(ctx)
    del loaded
    assert found == ["Software RealSense (serial SW-42)"] and reason == ""
    found, reason = detect()
    if not found:  # the usual case without a camera plugged in
        assert "no RealSense device" in reason and "\n" not in reason


def test_no_device_is_a_quick_one_line_error() -> None:
    if detect()[0]:
        pytest.skip("a RealSense camera is connected")
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as err:
        RealSenseSensor().start()
    assert "no RealSense device" in _one_line(err)
    assert time.monotonic() - t0 < 5.0  # never a pipeline start waiting for a device


def test_missing_pyrealsense2_is_reported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import now fails as if not installed
    found, reason = detect()
    assert found == [] and "pip install pyrealsense2" in reason
    with pytest.raises(DeviceError, match="pip install pyrealsense2"):
        RealSenseSensor().start()


@pytest.mark.parametrize("model", ["none", "brown_conrady", "modified_brown_conrady", "inverse_brown_conrady",
                                   "kannala_brandt4"])
def test_intrinsics_match_librealsense_projection_in_opencv_form(model) -> None:
    import cv2

    base = Intrinsics(640, 480, 600.0, 605.0, 321.3, 238.7, (0.1, -0.2, 0.001, 0.002, 0.05))
    ri = sw.rs_intrinsics(base, model)
    got = intrinsics_from_rs(ri)
    if model == "brown_conrady":
        np.testing.assert_allclose(got.dist, base.dist, rtol=1e-6)  # same order, copied
    pts = np.random.default_rng(1).uniform([-0.5, -0.38, 1.0], [0.5, 0.38, 1.0], (100, 3))
    ocv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), got.matrix(), np.asarray(got.dist))
    lib = np.array([rs.rs2_project_point_to_pixel(ri, [float(v) for v in p]) for p in pts])
    assert np.abs(ocv[:, 0] - lib).max() < 0.02


@pytest.mark.parametrize("dist", [(0.1, -0.2, 0.001, 0.002, 0.05), (0.0,) * 5])
def test_inexpressible_distortion_model_is_refused(dist) -> None:
    ri = sw.rs_intrinsics(Intrinsics(640, 480, 600.0, 605.0, 321.3, 238.7, dist), "ftheta")
    with pytest.raises(DeviceError, match="cannot be expressed"):
        intrinsics_from_rs(ri)


def test_extrinsics_follow_librealsense_point_transform() -> None:
    ext = _depth_to_color()
    rext = sw.rs_extrinsics(ext)
    back = extrinsics_from_rs(rext)
    np.testing.assert_allclose(back.matrix(), ext.matrix(), atol=1e-7)
    p = [0.3, -0.2, 1.5]
    want = rs.rs2_transform_point_to_point(rext, p)
    np.testing.assert_allclose(back.matrix() @ np.array(p + [1.0]), want + [1.0], atol=1e-6)


def test_align_works_on_played_back_framesets(tmp_path) -> None:
    intr = Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    depth = np.full((48, 64), 2000, np.uint16)
    depth[10:20, 10:20] = 1000
    color = np.zeros((48, 64, 3), np.uint8)
    m = np.eye(4)
    m[0, 3] = 0.04  # colour camera 4 cm along -x of the depth camera: points move +2 px at 1 m
    ext = Extrinsics.from_matrix(m)
    live = sw.align_depth_to_color(depth, color, intr, intr, ext)
    path = sw.record_db3(tmp_path / "align.db3", [depth] * 5, [color] * 5, depth_intr=intr, color_intr=intr,
                         extrinsics=ext, paced=True)
    aligned = [np.asanyarray(rs.align(rs.stream.color).process(fs).get_depth_frame().get_data()).copy()
               for fs in sw.playback_framesets(path) if fs.get_depth_frame() and fs.get_color_frame()]
    assert aligned, "no depth + colour frameset played back"
    for a in aligned:
        np.testing.assert_array_equal(a, live)
    cols = np.where(live[15] == 1000)[0]
    assert (cols.min(), cols.max()) == (12, 21)  # the 1 m square, shifted by fx·t/z = 2 px
    assert set(np.unique(live)) <= {0, 1000, 2000}


def test_from_config_takes_size_and_fps() -> None:
    cfg = load_rig_config("nikon_d200_xtion").depth_sensor
    cam = RealSenseSensor.from_config(cfg, ir=True)
    assert (cam.width, cam.height, cam.fps, cam.want["infrared"]) == (640, 480, 30, True)
