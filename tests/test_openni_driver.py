"""OpenNI2 driver against the real runtime (Debian libopenni2-0) and its Dummy device driver.

The Dummy driver (libDummyDevice, URI 'Dummy') streams 320x240 DEPTH_1_MM depth — row 0 at 2000 mm and
a bouncing disc at 1000 + 3(x - y) mm on zeros — and RGB; it offers no IR, FOV, mirroring, cropping or
registration. Once 'Dummy' has been opened it stays in the process's device list, so "no device"
checks run in a fresh interpreter, and so do recordings (:mod:`oni_dummy` says why). Tests that record
or play back carry a timeout: a deadlock inside OpenNI2 fails the test instead of stalling the suite.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openni", reason="openni Python package not installed")

from acquisition import oni_file  # noqa: E402
from acquisition.openni_driver import (  # noqa: E402
    OpenNISensor, detect, find_openni2_library, intrinsics_from_fov, load_openni2, require_openni2_library)
from acquisition.protocols import DepthSensor, DeviceTimeout, SettingRejected, read_depth_burst  # noqa: E402
from oni_dummy import record_dummy  # noqa: E402
from rig.core.config import load_rig_config  # noqa: E402
from rig.core.errors import DeviceError  # noqa: E402

pytestmark = pytest.mark.device
REPO = Path(__file__).resolve().parent.parent

if find_openni2_library() is None:
    pytest.skip("OpenNI2 runtime (libopenni2-0) not installed", allow_module_level=True)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def dummy():
    cam = OpenNISensor(320, 240, 30, uri="Dummy", ir=True)
    cam.start()
    yield cam
    cam.stop()


def test_runtime_loads_from_the_debian_so0_without_dev_symlink() -> None:
    openni2 = load_openni2()
    lib = find_openni2_library()
    assert lib is not None and lib.name in ("libOpenNI2.so", "libOpenNI2.so.0")
    assert openni2.is_initialized() and openni2.get_version().major == 2


def test_missing_runtime_says_how_to_install(tmp_path) -> None:
    with pytest.raises(DeviceError) as err:
        require_openni2_library([tmp_path])
    assert "apt-get install libopenni2-0" in _one_line(err) and err.value.exit_code == 3


def test_without_device_detect_gives_the_reason_and_open_any_fails_in_one_line() -> None:
    code = ("from acquisition.openni_driver import OpenNISensor, detect\n"
            "from rig.core.errors import DeviceError\n"
            "found, reason = detect()\nprint(found)\nprint(reason)\n"
            "try:\n    OpenNISensor().start()\nexcept DeviceError as e:\n    print('ERR', e)\n")
    lines = _fresh_python(code).splitlines()
    if lines[0] != "[]":
        pytest.skip(f"an OpenNI2 device is connected: {lines[0]}")
    assert lines[1].startswith("no OpenNI2 device found") and "DummyDevice" in lines[1]
    assert len(lines) == 3 and lines[2].startswith("ERR no OpenNI2 device found")


def test_dummy_streams_millimetre_depth(dummy) -> None:
    assert isinstance(dummy, DepthSensor)
    assert "Dummy" in dummy.model and dummy.depth_scale_m() == 0.001
    indices, discs = [], []
    for _ in range(3):
        depth = dummy.read_depth()
        assert depth.shape == (240, 320) and depth.dtype == np.uint16
        assert (depth[0] == 2000).all()
        disc = depth[1:] > 0
        assert 0 < disc.sum() < 400 and (np.abs(depth[1:][disc].astype(int) - 1000) <= 3 * 20).all()
        indices.append(dummy.last_frame_index)
        discs.append(np.argwhere(disc).mean(axis=0))
    assert indices == sorted(set(indices))  # new frames only
    assert not np.allclose(discs[0], discs[-1])  # the disc moves


def test_dummy_is_listed_by_detect_once_opened(dummy) -> None:
    found, reason = detect()
    assert any("(Dummy)" in d for d in found) and reason == ""


def test_dummy_has_no_ir_and_no_fov_so_intrinsics_come_from_config(dummy) -> None:
    assert dummy.read_ir() is None
    intr = dummy.intrinsics()
    assert dummy.fov_source == "config"
    fx = 160.0 / math.tan(math.radians(58.0) / 2)
    assert (intr.width, intr.height) == (320, 240)
    assert intr.fx == pytest.approx(fx) and intr.fy == pytest.approx(fx)
    assert (intr.cx, intr.cy) == (160.0, 120.0)


def test_burst_through_the_driver(dummy) -> None:
    frames, fused = read_depth_burst(dummy, 3)
    assert len(frames) == 3 and not np.array_equal(frames[0], frames[2])
    assert (fused[0] == 2000).all() and fused.dtype == np.uint16


@pytest.mark.parametrize("kwargs, expect", [
    (dict(width=640, height=480), "640x480@30 not offered; offered: 320x240@30"),
    (dict(registration=True), "registration not supported"),
    (dict(mirror=True), "mirroring not supported"),
])
def test_unsupported_settings_are_rejected(kwargs, expect) -> None:
    args = dict(width=320, height=240, fps=30, uri="Dummy")
    args.update(kwargs)
    with pytest.raises(SettingRejected) as err:
        OpenNISensor(**args).start()
    assert expect in _one_line(err) and err.value.exit_code == 2


def test_unknown_uri_is_one_line_error() -> None:
    with pytest.raises(DeviceError) as err:
        OpenNISensor(uri="NoSuchDevice").start()
    assert "'NoSuchDevice' cannot be opened" in _one_line(err)


@pytest.mark.timeout(60)
def test_record_oni_and_open_it_for_playback(tmp_path) -> None:
    path = tmp_path / "dummy.oni"
    record_dummy(path, frames=5)
    assert path.stat().st_size > 0
    with OpenNISensor(playback=path, timeout_s=0.3) as replay:
        assert "oni File" in replay.model
        assert replay.playback_frames is not None and replay.playback_frames >= 5
        assert (replay.width, replay.height, replay.fps) == (320, 240, 30)
        assert replay.depth_scale_m() == 0.001
        assert replay.intrinsics().width == 320


def _play_all(path: Path, color: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Every depth (and colour) frame of a recording, read in step as the manual player delivers them."""
    depth: list[np.ndarray] = []
    rgb: list[np.ndarray] = []
    with OpenNISensor(playback=path, color=color, timeout_s=2.0) as replay:
        n_depth, n_rgb = replay.playback_frames or 0, replay.playback_color_frames or 0
        info = {"depth_frames": n_depth, "color_frames": n_rgb, "color_k": replay.color_intrinsics()}
        while len(depth) < n_depth or len(rgb) < n_rgb:
            if len(depth) < n_depth:
                depth.append(replay.read_depth())
            if len(rgb) < n_rgb:
                rgb.append(replay.read_color())
        with pytest.raises(DeviceError, match="end of recording"):
            replay.read_depth()
    return depth, rgb, info


def _contains(frames: list[np.ndarray], frame: np.ndarray) -> bool:
    return any(np.array_equal(f, frame) for f in frames)


@pytest.mark.timeout(60)
def test_dummy_recording_plays_back_every_recorded_frame(tmp_path) -> None:
    path = tmp_path / "dummy.oni"
    live, _ = record_dummy(path, frames=4)
    played, _, info = _play_all(path)
    assert len(played) == info["depth_frames"] >= len(live)  # the recorder keeps every frame it got
    assert all(_contains(played, f) for f in live)  # pixel-equal (the disc moves: frames differ)
    assert len({f.tobytes() for f in played}) == len(played)


@pytest.mark.timeout(60)
def test_dummy_depth_and_colour_recording_plays_back(tmp_path) -> None:
    path = tmp_path / "rgbd.oni"
    live_depth, live_rgb = record_dummy(path, frames=3, color=True)
    assert len(live_rgb) == 3 and live_rgb[0].shape == (240, 320, 3) and live_rgb[0].dtype == np.uint8
    depth, rgb, info = _play_all(path, color=True)
    assert len(rgb) == info["color_frames"] >= 3 and info["color_k"].width == 320
    assert all(_contains(depth, d) for d in live_depth) and all(_contains(rgb, c) for c in live_rgb)


@pytest.mark.timeout(60)
def test_recordings_get_a_cropping_property_with_consistent_offsets(tmp_path) -> None:
    path = tmp_path / "rgbd.oni"
    record_dummy(path, frames=1, color=True)
    data = path.read_bytes()
    records = oni_file.read_records(data)
    starts = {r.offset: r for r in records}
    crops = [r for r in records if r.type == oni_file.GENERAL_PROPERTY
             and oni_file.property_name(data, r) == oni_file.CROPPING_NAME]
    assert sorted(r.node_id for r in crops) == [1, 2]
    assert {oni_file.property_data(data, r) for r in crops} == {oni_file.XN_CROPPING.pack(0, 0, 0, 320, 240)}
    for r in records:  # every file offset still points at the start of a record of the right kind
        assert r.undo_offset == 0 or r.undo_offset in starts
        if r.type == oni_file.SEEK_TABLE:
            for i in range(1, r.payload_bytes // oni_file.SEEK_ENTRY.size):
                _, _, at = oni_file.SEEK_ENTRY.unpack_from(data, r.end - r.payload_bytes + i * oni_file.SEEK_ENTRY.size)
                assert starts[at].type == 0x0A and starts[at].node_id == r.node_id  # NEW_DATA of that stream
    assert oni_file.add_cropping(path) == 0 and path.read_bytes() == data  # already there: untouched


@pytest.mark.timeout(60)
def test_an_old_recording_without_cropping_is_made_playable(tmp_path) -> None:
    """What OpenNI2 itself writes for the Dummy device has no cropping property (its player would
    play no frame): playback reads a fixed private copy and leaves the user's file untouched;
    add_cropping fixes the file itself."""
    path = tmp_path / "old.oni"
    (live,), _ = record_dummy(path, frames=1, finalise=False)
    data = path.read_bytes()
    assert not [r for r in oni_file.read_records(data) if r.type == oni_file.GENERAL_PROPERTY
                and oni_file.property_name(data, r) == oni_file.CROPPING_NAME]
    with OpenNISensor(playback=path, timeout_s=2.0) as replay:
        assert replay.playback_fixed_streams == 1
        copy = replay._playback_copy
        assert copy is not None and copy != path and _contains([replay.read_depth()], live)
    assert path.read_bytes() == data and not copy.exists()  # the user's file as it was; the copy is gone
    assert oni_file.add_cropping(path) == 1
    played, _, _ = _play_all(path)
    assert _contains(played, live)


@pytest.mark.timeout(120)
def test_sensors_used_from_short_lived_threads_do_not_crash_the_process(tmp_path) -> None:
    """Regression: libOpenNI2 probes every thread that ever called it when an unseen one calls; a
    dead caller whose stack glibc has unmapped (more than its 40 MiB cache of dead threads) segfaulted
    the process. Every call now runs on the driver's one OpenNI2 thread."""
    path = tmp_path / "rgbd.oni"
    record_dummy(path, frames=2, color=True)
    code = ("import threading, time\n"
            "from acquisition.openni_driver import OpenNISensor\n"
            "def play():\n"
            f"    with OpenNISensor(playback={str(path)!r}, color=True, timeout_s=2.0) as s:\n"
            "        s.read_depth(); s.read_color()\n"
            "for _ in range(4):\n"
            "    t = threading.Thread(target=play); t.start(); t.join()\n"
            "    churn = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(12)]\n"
            "    [c.start() for c in churn]; [c.join() for c in churn]\n"
            "print('done')\n")
    assert _fresh_python(code) == "done"


@pytest.mark.parametrize("content, expect", [
    (b"not an oni file at all, no header", "no NI10 header"),
    (b"NI10" + bytes(20) + b"NIR\0" + bytes(4), "no END record"),
    (b"NI10" + bytes(20) + b"XXXX" + bytes(40), "damaged record at byte 24"),
])
def test_add_cropping_refuses_damaged_files_in_one_line(tmp_path, content, expect) -> None:
    path = tmp_path / "bad.oni"
    path.write_bytes(content)
    with pytest.raises(oni_file.OniFormatError, match=expect):
        oni_file.add_cropping(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize("name, content, expect", [
    ("missing.oni", None, "OpenNI recording not found"),
    ("garbage.oni", b"not an oni file", "cannot open OpenNI recording"),
    ("scene.db3", b"", "expected .oni"),
])
def test_bad_oni_file_is_one_line_exit_2(tmp_path, name, content, expect) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DeviceError) as err:
        OpenNISensor(playback=path).start()
    assert expect in _one_line(err) and err.value.exit_code == 2  # a bad file is bad input


def test_record_path_must_be_oni(tmp_path) -> None:
    with pytest.raises(SettingRejected, match=r"must end in \.oni"):
        OpenNISensor(320, 240, 30, uri="Dummy", record_to=tmp_path / "x.db3").start()


def test_intrinsics_from_fov_match_openni_projection() -> None:
    w, h, hfov, vfov = 640, 480, math.radians(58.0), math.radians(45.0)
    intr = intrinsics_from_fov(w, h, hfov, vfov)
    # OpenNI2 depth->world: X = (u/W - 1/2) Z 2tan(hfov/2), Y = (1/2 - v/H) Z 2tan(vfov/2)
    for u, v, z in [(0, 0, 1.0), (639, 479, 2.5), (123, 321, 0.8)]:
        x_oni = (u / w - 0.5) * z * 2 * math.tan(hfov / 2)
        y_oni = (0.5 - v / h) * z * 2 * math.tan(vfov / 2)
        assert (u - intr.cx) / intr.fx * z == pytest.approx(x_oni)
        assert (v - intr.cy) / intr.fy * z == pytest.approx(-y_oni)  # OpenNI's y points up


def test_from_config_uses_the_rig_settings() -> None:
    cfg = load_rig_config("nikon_d200_xtion").depth_sensor
    cam = OpenNISensor.from_config(cfg, uri="Dummy")
    assert (cam.width, cam.height, cam.fps, cam.mirror, cam.registration, cam.hfov_deg) == (
        640, 480, 30, False, False, 58.0)


def test_missing_openni_package_is_reported(monkeypatch) -> None:
    for mod in ("openni", "openni.openni2", "openni._openni2", "openni.utils"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(DeviceError, match="pip install openni"):
        load_openni2()


def test_process_exits_cleanly_after_dummy_and_librealsense() -> None:
    """Regression: OpenNI2's shutdown of parked Dummy streams segfaulted the interpreter at exit
    once librealsense was loaded too (the whole suite exited 139 after every test passed)."""
    pytest.importorskip("pyrealsense2")
    code = ("from acquisition.openni_driver import OpenNISensor\n"
            "s = OpenNISensor(320, 240, 30, uri='Dummy'); s.start(); s.read_depth(); s.stop()\n"
            "import pyrealsense2 as rs\n"
            "rs.context().query_devices()\n"
            "print('done')\n")
    assert _fresh_python(code) == "done"
