"""`rig replay`: capture sessions, live runs and RealSense .db3 / OpenNI .oni recordings through the same
registration and inference as live; identical outputs for identical inputs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from inference.live import read_jsonl, read_live_frames
from rig.cli import main
from rig.core.config import load_rig_config
from rig.core.errors import RigError
from rig.core.imageio import read_depth_m
from rig.replay import METRICS_FILE, ReplayOptions, _paced, crop_intrinsics, pair_by_time, run_replay

TINY = {"dslr.sensor_px": [160, 108], "dslr.pixel_um": 30.0, "dslr.focal_mm": 9.0, "output.size_px": [80, 54],
        "depth_sensor.size_px": [80, 60], "depth_sensor.burst_frames": 3, "simulated.latency_scale": 0.0,
        "session.min_free_mb": 0.0}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from inference.export import export_model
    from inference.model import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("replay-model") / "lite.onnx"
    export_model(build_model("d3net-lite").eval(), out, height=54, width=80, dynamic=True, check=False)
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """Two scenes captured by the simulated rig (the real capture procedure, shrunk)."""
    from acquisition.capture import PairCapture, run_scenes
    from acquisition.devices import open_rig
    from rig.core.session import Session

    cfg = load_rig_config("simulated", overrides=TINY)
    path = tmp_path_factory.mktemp("replay") / "session"
    s = Session.create(path, cfg)
    dev = open_rig(cfg)
    cap = PairCapture(s, dev.dslr, dev.sensor, scene_hook=dev.scene_hook())
    cap.prepare()
    try:
        run_scenes(cap, [0, 1])
    finally:
        cap.close()
    assert len(s.completed()) == 2
    return path


def files_of(root: Path, sub: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / sub).rglob("*.png"))}


def test_all_registers_infers_and_scores_every_capture(session, onnx_model, tmp_path):
    from registration.register import is_registered

    out = tmp_path / "all"
    summary = run_replay(session, ReplayOptions(through="all", model=str(onnx_model), out=out, threads=1),
                         print_fn=lambda s: None)
    assert summary["frames_output"] == 2 and summary["kind"] == "session"
    assert all(is_registered(out / "registered" / cid) for cid in ("c00000", "c00001"))
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["frame"] for m in metrics] == ["c00000", "c00001"] and all(m["pixels"] > 100 for m in metrics)
    assert summary["mean_abs_rel"] == pytest.approx(np.mean([m["abs_rel"] for m in metrics]))
    assert [e["source"] for e in read_live_frames(out)] == ["c00000", "c00001"]


def test_register_stage_is_rig_register(session, onnx_model, tmp_path):
    """Replay's registration writes what `rig register` writes for the same captures."""
    from registration.register import register_session

    copy = tmp_path / "copy"
    shutil.copytree(session, copy)
    register_session(copy)
    out = tmp_path / "reg"
    summary = run_replay(session, ReplayOptions(through="register", out=out), print_fn=lambda s: None)
    assert summary["registered"] == 2
    for cid in ("c00000", "c00001"):
        for name in ("depth.png", "valid.png", "defocused.png", "all_in_focus.png"):
            assert (out / "registered" / cid / name).read_bytes() == (copy / "registered" / cid / name).read_bytes()
    assert not (session / "registered").exists()  # the recording itself is never modified


def test_two_replays_give_identical_outputs(session, onnx_model, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_replay(session, ReplayOptions(through="infer", model=str(onnx_model), out=out, mc_samples=5, threads=1),
                   print_fn=lambda s: None)
        outs.append(files_of(out, "live"))
    assert outs[0].keys() == outs[1].keys() and len(outs[0]) == 2 * 3  # input, depth, std per capture
    assert outs[0] == outs[1]


def test_a_live_run_replays_through_inference_only(session, onnx_model, tmp_path):
    first = tmp_path / "first"
    run_replay(session, ReplayOptions(through="infer", model=str(onnx_model), out=first), print_fn=lambda s: None)
    again = tmp_path / "again"
    rc = main(["replay", str(first), "--model", str(onnx_model), "--out", str(again)])
    assert rc == 0
    assert files_of(first, "live/depth") == {k: v for k, v in files_of(again, "live/depth").items()}
    assert main(["replay", str(first), "--through", "register", "--out", str(tmp_path / "x")]) == 2


def test_bad_recordings_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    assert main(["replay", str(junk)]) == 2
    assert main(["replay", str(tmp_path / "missing")]) == 2
    assert main(["replay", str(tmp_path), "--speed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "not a session folder" in err[0] and "no such session" in err[1]
    assert "--speed" in err[2]


def test_speed_paces_frames_by_their_recorded_times():
    items = [(10.0, "a"), (10.3, "b"), (10.6, "c")]
    t0 = time.monotonic()
    assert list(_paced(iter(items), 2.0)) == ["a", "b", "c"]
    assert time.monotonic() - t0 >= 0.29  # 0.6 s recorded at 2x
    t0 = time.monotonic()
    list(_paced(iter(items), 0.0))
    assert time.monotonic() - t0 < 0.25


def test_crop_intrinsics_follow_the_live_resize():
    from rig.core.records import Intrinsics

    k = Intrinsics(width=640, height=480, fx=500.0, fy=500.0, cx=319.5, cy=239.5)
    out = crop_intrinsics(k, (645, 432))
    # 4:3 -> 3:2 as resize_to crops it: 429 rows from row 25, then x 645/640, y 432/429
    assert (out.width, out.height) == (645, 432)
    assert out.fx == pytest.approx(500.0 * 645 / 640) and out.fy == pytest.approx(500.0 * 432 / 429)
    assert out.cy == pytest.approx((239.5 - 25 + 0.5) * 432 / 429 - 0.5)
    assert out.cx == pytest.approx((319.5 + 0.5) * 645 / 640 - 0.5)


def _record(tmp_path: Path, color: bool) -> tuple[Path, list[float]]:
    pytest.importorskip("pyrealsense2")
    from rs_software import record_db3
    from rig.core.records import Extrinsics, Intrinsics

    dk = Intrinsics.from_hfov(128, 96, 70.0)
    ck = Intrinsics.from_hfov(160, 120, 65.0)
    ext = Extrinsics.from_matrix(np.array([[1, 0, 0, 0.015], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    depths_m = [1.5, 1.6, 1.7]
    depth = [np.full((96, 128), int(d * 1000), np.uint16) for d in depths_m]
    rgb = [np.full((120, 160, 3), 60 * i + 30, np.uint8) for i in range(3)]
    path = record_db3(tmp_path / ("rgbd.db3" if color else "depth.db3"), depth, rgb if color else None,
                      depth_intr=dk, color_intr=ck if color else None, extrinsics=ext)
    return path, depths_m


@pytest.mark.device
def test_realsense_db3_through_registration_and_inference(tmp_path, onnx_model):
    """A fronto-parallel wall at 1.5/1.6/1.7 m recorded by librealsense's software device: the colour
    camera (translated 15 mm sideways) sees it at the same z, so the registered depth is that z."""
    path, depths_m = _record(tmp_path, color=True)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(load_rig_config("simulated", overrides=TINY).to_yaml())
    out = tmp_path / "rs"
    summary = run_replay(path, ReplayOptions(through="all", model=str(onnx_model), out=out, config=str(cfg_file)),
                         print_fn=lambda s: None)
    assert summary["kind"] == "realsense" and summary["frames_output"] == 3
    for i, z in enumerate(depths_m):
        d = read_depth_m(out / "registered" / f"rs{i:05d}" / "depth.png")
        assert d.shape == (54, 80)  # the config's output size (colour frame centre-cropped to 3:2)
        assert np.median(d[d > 0]) == pytest.approx(z, abs=0.002)
    assert len(read_jsonl(out / "metrics.jsonl")) == 3


@pytest.mark.device
def test_realsense_depth_only_recording_is_a_clear_error(tmp_path, onnx_model):
    path, _ = _record(tmp_path, color=False)
    with pytest.raises(RigError, match="no colour stream to infer on"):
        run_replay(path, ReplayOptions(through="infer", model=str(onnx_model), out=tmp_path / "a"))
    with pytest.raises(RigError, match="nothing to register the depth to"):
        run_replay(path, ReplayOptions(through="register", out=tmp_path / "b"))


def _record_oni(tmp_path: Path, color: bool, frames: int = 3) -> Path:
    """A recording of OpenNI2's Dummy device: 320x240, row 0 at 2000 mm, a disc at 1000 mm ± 60 on zeros
    (made in a fresh interpreter: see tests/oni_dummy.py)."""
    pytest.importorskip("openni")
    from acquisition.openni_driver import find_openni2_library
    from oni_dummy import record_dummy

    if find_openni2_library() is None:
        pytest.skip("OpenNI2 library not installed")
    oni = tmp_path / ("rgbd.oni" if color else "depth.oni")
    record_dummy(oni, frames=frames, color=color)
    return oni


def _tiny_config(tmp_path: Path, **overrides: object) -> str:
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(load_rig_config("simulated", overrides={**TINY, **overrides}).to_yaml())
    return str(cfg_file)


def test_pair_by_time_matches_frames_within_the_tolerance():
    depth = iter([(0, "d0"), (33, "d1"), (66, "d2"), (100, "d3")])
    color = iter([(5, "c0"), (70, "c2"), (98, "c3"), (140, "c4")])  # c1 lost
    assert list(pair_by_time(depth, color, 16)) == [(0, "d0", "c0"), (66, "d2", "c2"), (100, "d3", "c3")]
    assert list(pair_by_time(iter([]), iter([(0, "c")]), 16)) == []


@pytest.mark.device
@pytest.mark.timeout(120)
def test_openni_colour_recording_of_the_dummy_device_through_all(tmp_path, onnx_model, capsys):
    """`rig replay rec.oni --through all` end to end: the colour camera stands in for the DSLR; the
    depths (the disc at 1000 mm ± 60, row 0 at 2000 mm) survive pairing, resampling to the output size
    (4:3 like the sensor: no crop) and filling."""
    from registration.register import read_registered
    from rig.core.records import VALID_MEASURED

    from acquisition.openni_driver import OpenNISensor

    oni = _record_oni(tmp_path, color=True)
    with OpenNISensor(playback=oni, color=True) as played:
        pairs = min(played.playback_frames or 0, played.playback_color_frames or 0)  # timestamps every 33 ms
    out = tmp_path / "all"
    rc = main(["replay", str(oni), "--through", "all", "--model", str(onnx_model), "--out", str(out),
               "--config", _tiny_config(tmp_path, **{"output.size_px": [80, 60]}), "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in (out / "registered").iterdir())
    assert len(names) == pairs >= 3 and names[0] == "oni00000"
    for name in names:
        frame, meta = read_registered(out / "registered" / name)
        assert frame.depth_m.shape == (60, 80) and frame.defocused_rgb.shape == (60, 80, 3)
        measured = frame.depth_m[frame.valid == VALID_MEASURED]
        near_disc, near_row0 = np.abs(measured - 1.0) <= 0.061, np.abs(measured - 2.0) <= 0.001
        assert near_disc.any() and (near_disc | near_row0).all()  # row 0 is 1/4 of an output row: may vanish
        assert measured.size < 0.2 * 60 * 80 and (frame.valid > 0).all()  # the rest filled
        assert "colour camera" in meta["geometry_source"]
    metrics = read_jsonl(out / METRICS_FILE)
    assert [m["frame"] for m in metrics] == names and all(m["pixels"] > 0 for m in metrics)
    assert [e["source"] for e in read_live_frames(out)] == names


@pytest.mark.device
@pytest.mark.timeout(120)
def test_openni_depth_only_recording_registers_into_the_dslr(tmp_path, capsys):
    """A depth-only .oni: --through register reprojects every frame into the config's DSLR; infer and
    all have no image to run on, a one-line exit-2 error before any output folder exists."""
    from acquisition.openni_driver import OpenNISensor
    from registration.register import read_registered

    oni = _record_oni(tmp_path, color=False)
    with OpenNISensor(playback=oni, color=True) as played:
        assert played.color_intrinsics() is None
        frames = played.playback_frames
    summary = run_replay(oni, ReplayOptions(through="register", out=tmp_path / "reg", config=_tiny_config(tmp_path)),
                         print_fn=lambda s: None)
    assert summary["kind"] == "openni" and summary["registered"] == frames >= 3
    frame, meta = read_registered(tmp_path / "reg" / "registered" / "oni00000")
    assert meta["geometry_source"] == "simulated rig geometry" and frame.depth_m.shape == (54, 80)
    for through in ("infer", "all"):
        assert main(["replay", str(oni), "--through", through, "--out", str(tmp_path / through)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds depth only" in err[0] and not (tmp_path / through).exists()
