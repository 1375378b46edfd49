"""Paired capture on the simulated rig: files, records, exposure matching, retries, clean stops."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from acquisition.capture import PairCapture, run_scenes
from acquisition.devices import list_devices, open_depth_sensor, open_dslr, open_rig
from acquisition.protocols import SettingRejected, fuse_depth_burst
from rig.core.config import load_rig_config
from rig.core.errors import DeviceError
from rig.core.imageio import read_depth_m, read_rgb
from rig.core.records import capture_from_dict
from rig.core.session import Session, StorageFull, verify_image_file

TINY = {"dslr.sensor_px": [160, 108], "dslr.pixel_um": 30.0, "dslr.focal_mm": 9.0, "output.size_px": [80, 54],
        "depth_sensor.size_px": [80, 60], "depth_sensor.burst_frames": 3, "simulated.latency_scale": 0.0,
        "session.min_free_mb": 0.0}


def tiny_cfg(**over):
    """The simulated preset shrunk to 160x108 (same field of view), no latency."""
    return load_rig_config("simulated", overrides={**TINY, **over})


def make(tmp_path: Path, sleeps: list[float] | None = None, **over) -> tuple[Session, PairCapture]:
    cfg = tiny_cfg(**over)
    session = Session.create(tmp_path / "session", cfg, planned_scenes=4)
    dev = open_rig(cfg)
    cap = PairCapture(session, dev.dslr, dev.sensor, scene_hook=dev.scene_hook(), backoff_s=0.25,
                      sleep=(sleeps.append if sleeps is not None else (lambda s: None)))
    return session, cap


def no_temp_folders(session: Session) -> bool:
    return not [p for p in (session.path / "raw").iterdir() if p.name.startswith(".tmp-")]


def test_a_capture_has_every_file_and_a_complete_record(tmp_path: Path):
    session, cap = make(tmp_path)
    res = cap.capture_scene(0)
    cap.close()
    assert res.status == "ok" and res.attempts == 1 and res.device_s is not None
    d = session.raw_dir("c00000")
    names = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert names == ["all_in_focus.jpg", "capture.yaml", "defocused.jpg", "depth_000.png", "depth_001.png",
                     "depth_002.png", "depth_fused.png", "ir.png", "truth/depth_dslr.png"]
    c = session.completed()[0]
    assert c == res.capture
    assert (c.defocused.f_number, c.all_in_focus.f_number) == (2.8, 8.0)
    # matched exposure by shutter: 1/250 s at f/2.8 -> (8/2.8)² · 1/250 = 1/30.6 s -> the offered 1/30
    assert c.defocused.shutter_s == pytest.approx(0.004) and c.all_in_focus.shutter_s == pytest.approx(1 / 30)
    assert c.defocused.iso == c.all_in_focus.iso == 320
    assert c.defocused.exif["FNumber"] == 2.8 and c.all_in_focus.exif["ExposureTime"] == pytest.approx(1 / 30)
    assert c.extra["exposure_match"]["choice"] == "1/30" and abs(c.extra["exposure_match"]["residual_stops"]) < 0.1
    assert c.scene_id == "sim-indoor-s0-00000" or c.scene_id.startswith("sim-")
    assert c.config_snapshot_id == session.snapshot_id
    assert c.dslr_intrinsics is not None and (c.dslr_intrinsics.width, c.dslr_intrinsics.height) == (160, 108)
    assert c.depth_to_dslr is not None and c.depth is not None and c.depth.depth_scale_m == 0.001
    assert c.depth.t_wall and c.defocused.t_wall and c.t_wall.endswith("+00:00")
    assert c.defocused.t_monotonic_s < c.all_in_focus.t_monotonic_s
    frames = [read_depth_m(d / f) for f in c.depth.files]
    fused = read_depth_m(d / c.depth.fused_file)
    expect = fuse_depth_burst([np.rint(f * 1000).astype(np.uint16) for f in frames]).astype(np.float32) / 1000
    assert np.array_equal(fused, expect)
    truth = read_depth_m(d / "truth" / "depth_dslr.png")
    assert truth.shape == (54, 80) and truth.min() >= 0.5
    assert read_rgb(d / "defocused.jpg").shape == (108, 160, 3)
    # journal: one ok line naming the files, written after them
    (line,) = session.journal()
    assert line["status"] == "ok" and line["attempt"] == 1 and "truth/depth_dslr.png" in line["files"]
    assert no_temp_folders(session)


def test_exposure_matched_by_iso(tmp_path: Path):
    session, cap = make(tmp_path, **{"dslr.exposure_match": "iso"})
    res = cap.capture_scene(1)
    c = res.capture
    assert c.all_in_focus.shutter_s == pytest.approx(0.004)
    assert c.all_in_focus.iso == 2500  # 320 · (8/2.8)² = 2612 -> nearest offered 2500


def test_retries_are_journaled_and_a_failed_capture_leaves_nothing(tmp_path: Path):
    sleeps: list[float] = []
    session, cap = make(tmp_path, sleeps, **{"faults.rate": 1.0, "faults.kinds": ["busy"], "session.retries": 2})
    res = cap.capture_scene(0)
    assert res.status == "failed" and res.attempts == 3 and "DeviceBusy" in res.error
    assert [e["status"] for e in session.journal()] == ["retrying", "retrying", "failed"]
    assert [e["attempt"] for e in session.journal()] == [1, 2, 3]
    assert sleeps == [0.25, 0.5]  # exponential backoff
    assert not session.raw_dir("c00000").exists() and no_temp_folders(session)
    assert session.completed() == [] and session.pending_scene_indices(1) == [0]


@pytest.mark.parametrize("kind", ["truncated", "disconnect", "timeout"])
def test_transient_faults_are_retried_until_ok(tmp_path: Path, kind: str):
    session, cap = make(tmp_path, **{"faults.rate": 0.5, "faults.kinds": [kind], "session.retries": 8,
                                     "simulated.seed": 3})
    run = run_scenes(cap, [0, 1, 2])
    cap.close()
    assert run.stop_error is None and [r.status for r in run.results] == ["ok"] * 3
    statuses = [e["status"] for e in session.journal()]
    assert statuses.count("ok") == 3 and statuses.count("retrying") >= 1
    errors = [e["error"] for e in session.journal() if e["status"] == "retrying"]
    expected = {"truncated": "TransferError", "disconnect": "DeviceDisconnected", "timeout": "DeviceTimeout"}[kind]
    assert all(expected in e for e in errors)
    for c in session.completed():  # every saved image decodes
        for f in ["defocused.jpg", "all_in_focus.jpg", *c.depth.files, c.depth.fused_file, "ir.png"]:
            verify_image_file(session.raw_dir(c.capture_id) / f)
    assert no_temp_folders(session)


def test_setting_not_offered_stops_without_retry(tmp_path: Path):
    session, cap = make(tmp_path, **{"dslr.f_number_defocused": 3.0})
    run = run_scenes(cap, [0, 1])
    assert isinstance(run.stop_error, SettingRejected) and run.results == []
    assert [e["status"] for e in session.journal()] == ["failed"]
    assert no_temp_folders(session)


def test_interrupt_mid_capture_keeps_earlier_captures(tmp_path: Path, monkeypatch):
    session, cap = make(tmp_path)
    assert cap.capture_scene(0).status == "ok"
    calls = {"n": 0}
    real = cap.dslr.capture

    def capture_then_interrupt(dest):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(dest)

    monkeypatch.setattr(cap.dslr, "capture", capture_then_interrupt)
    run = run_scenes(cap, [1, 2])
    assert run.interrupted and run.results == []
    assert [e["status"] for e in session.journal()] == ["ok", "interrupted"]
    assert [c.capture_id for c in session.completed()] == ["c00000"]
    assert no_temp_folders(session) and not session.raw_dir("c00001").exists()
    assert session.next_scene_index() == 1


def test_disk_full_while_writing_stops_cleanly(tmp_path: Path, monkeypatch):
    import acquisition.capture as capture_mod

    session, cap = make(tmp_path)
    assert cap.capture_scene(0).status == "ok"

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(capture_mod, "write_image", full)
    run = run_scenes(cap, [1, 2])
    assert isinstance(run.stop_error, StorageFull) and "1 capture(s) intact" in str(run.stop_error)
    assert session.journal()[-1]["status"] == "interrupted"
    assert [c.capture_id for c in session.completed()] == ["c00000"] and no_temp_folders(session)


def test_free_space_threshold_stops_before_capturing(tmp_path: Path):
    session, cap = make(tmp_path, **{"session.min_free_mb": 1e7})  # 10 TB
    run = run_scenes(cap, [0])
    assert isinstance(run.stop_error, StorageFull) and "MB free" in str(run.stop_error)
    assert not any(p for p in (session.path / "raw").iterdir())


def test_devices_open_by_driver_name(tmp_path: Path):
    cfg = tiny_cfg()
    from acquisition.simulated import SimulatedDepthSensor, SimulatedDslr

    assert isinstance(open_dslr(cfg), SimulatedDslr)
    assert isinstance(open_depth_sensor(cfg), SimulatedDepthSensor)
    assert open_depth_sensor(tiny_cfg(**{"depth_sensor.driver": "none"})) is None
    dev = open_rig(cfg)
    assert dev.dslr.rig is dev.sensor.rig is dev.simulated_rig  # one world
    assert dev.scene_hook()(3).scene_id == dev.simulated_rig.scene.scene_id
    # real drivers are built from their config section without touching hardware (opened later)
    for driver, module, cls in (("openni", "acquisition.openni_driver", "OpenNISensor"),
                                ("realsense", "acquisition.realsense_driver", "RealSenseSensor")):
        mod = pytest.importorskip(module)
        sensor = open_depth_sensor(load_rig_config("nikon_d200_xtion", overrides={"depth_sensor.driver": driver}))
        assert isinstance(sensor, getattr(mod, cls))
    kinds = {(k, n.split(":")[0]) for k, n, _ in list_devices()}
    assert {("dslr", "gphoto2"), ("depth", "realsense"), ("depth", "openni"), ("dslr", "simulated"),
            ("depth", "simulated")} <= kinds
    assert all(isinstance(s, str) and s for _, _, s in list_devices())


def test_missing_driver_module_is_a_one_line_device_error(monkeypatch):
    import acquisition.devices as devices

    monkeypatch.setitem(devices.DRIVERS["depth"], "openni", ("acquisition.no_such_driver", "X"))
    monkeypatch.setattr(devices, "DETECT_MODULES", (("depth", "openni", "acquisition.no_such_driver"),))
    with pytest.raises(DeviceError, match="driver not installed"):
        open_depth_sensor(tiny_cfg(**{"depth_sensor.driver": "openni"}))
    assert devices.list_devices(include_simulated=False) == [("depth", "openni", "driver not installed")]


def test_capture_without_depth_sensor(tmp_path: Path):
    session, cap = make(tmp_path, **{"depth_sensor.driver": "none"})
    res = cap.capture_scene(0)
    assert res.status == "ok" and res.capture.depth is None and res.capture.depth_to_dslr is None
    assert capture_from_dict(__import__("yaml").safe_load(
        (session.raw_dir("c00000") / "capture.yaml").read_text())).depth is None


def test_demo_capture_step(tmp_path: Path):
    from rig.demo import capture_step
    from rig.demo import DemoContext

    ctx = DemoContext(out_dir=tmp_path, config=tiny_cfg(), scenes=2, quick=True)
    lines = capture_step(ctx)
    assert ctx.artifacts["session"] == tmp_path / "session"
    assert len(Session.open(tmp_path / "session").completed()) == 2
    assert lines and "2/2 scenes captured" in lines[0]
    capture_step(ctx)  # a rerun replaces the previous demo session
    assert len(Session.open(tmp_path / "session").journal()) == 2
