"""The live loop: bounded drop-oldest queues, every captured frame recorded, clean stops (source end,
max frames, errors, SIGINT), the session it records, and the sources — simulated rig, folder, the
gphoto2 virtual camera, the real outdoor pairs.

Test doubles (documented): ``slow_infer`` — an inference function that sleeps a fixed time and returns
a constant depth — stands in for a slow network where the test is about the queues' drop policy,
so that the timing (inference much slower than capture) is certain on a busy machine; and
``LiveViewCamera``, a camera with live view: libgphoto2's virtual camera answers capture_preview with
"Unsupported operation", so the live-view branch of the DSLR source has no real offline path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from vcamera import no_camera_env, vcamera  # noqa: F401

from conftest import REPO, shared_subdir
from inference.live import (LiveLoop, LiveRecorder, StageQueue, colorize_fixed, read_jsonl,
                            read_live_frames, resize_to)
from rig.core.config import load_rig_config
from rig.core.errors import DeviceError, RigError
from rig.core.imageio import read_depth_m, read_rgb
from rig.core.session import Session

TINY = {"dslr.sensor_px": [160, 108], "dslr.pixel_um": 30.0, "dslr.focal_mm": 9.0, "output.size_px": [80, 54],
        "depth_sensor.size_px": [80, 60], "depth_sensor.burst_frames": 3, "simulated.latency_scale": 0.0,
        "session.min_free_mb": 0.0}


def tiny_cfg():
    """The simulated preset shrunk to 160x108 -> 80x54 output, no device latency."""
    return load_rig_config("simulated", overrides=TINY)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from inference.export import export_model
    from inference.model import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("live-model") / "lite.onnx"
    export_model(build_model("d3net-lite").eval(), out, height=54, width=80, dynamic=True, check=False)
    return out


def slow_infer(rgb: np.ndarray) -> tuple[np.ndarray, None]:
    time.sleep(0.04)
    return np.full(rgb.shape[:2], 2.0, np.float32), None


def frames(n: int, size=(80, 54)) -> list[np.ndarray]:
    return [np.full((size[1], size[0], 3), i, np.uint8) for i in range(n)]


# --- queues ---------------------------------------------------------------------------------------

def test_drop_oldest_queue_keeps_the_newest_and_counts_drops():
    q = StageQueue(2, drop=True)
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1 and q.put(4) == 2
    assert q.dropped == 2 and len(q) == 2
    q.close()
    assert [q.get(), q.get(), q.get()] == [3, 4, None]


def test_blocking_queue_waits_for_room():
    q = StageQueue(1, drop=False)
    q.put("a")
    done = threading.Event()
    threading.Thread(target=lambda: (q.put("b"), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # full: the producer waits
    assert q.get() == "a"
    assert done.wait(2.0) and q.get() == "b" and q.dropped == 0


# --- the loop ---------------------------------------------------------------------------------------

def test_live_policy_drops_frames_but_records_every_captured_one(tmp_path):
    rec = LiveRecorder(tmp_path, {"source": "test"})
    loop = LiveLoop(iter(frames(30)), slow_infer, size=(80, 54), recorder=rec, drop=True, queue_size=2)
    s = loop.run(handle_sigint=False)
    assert s.frames_captured == s.frames_recorded == 30
    assert s.dropped > 0 and s.frames_inferred < 30 and s.frames_output == s.frames_inferred
    assert s.stopped_by == "end of source" and s.error is None
    results = read_jsonl(tmp_path / "live" / "results.jsonl")
    assert results[-1]["index"] == 29  # the newest frame is always shown last
    assert [r["index"] for r in results] == sorted(r["index"] for r in results)
    recorded = read_live_frames(tmp_path)
    assert [e["index"] for e in recorded] == list(range(30))
    assert read_rgb(recorded[7]["path"])[0, 0, 0] == 7  # lossless: the very frame captured


def test_blocking_policy_processes_every_frame_in_order(tmp_path):
    rec = LiveRecorder(tmp_path, {"source": "test"})
    loop = LiveLoop(iter(frames(12)), slow_infer, size=(80, 54), recorder=rec, drop=False, max_frames=10)
    s = loop.run(handle_sigint=False)
    assert (s.frames_captured, s.frames_inferred, s.frames_output, s.dropped) == (10, 10, 10, 0)
    assert s.stopped_by == "max frames"
    results = read_jsonl(tmp_path / "live" / "results.jsonl")
    assert [r["index"] for r in results] == list(range(10))
    d = read_depth_m(tmp_path / "live" / results[3]["depth"])
    assert d.shape == (54, 80) and np.allclose(d, 2.0)


def test_a_failing_source_stops_cleanly_with_what_was_captured_saved(tmp_path):
    def source():
        yield from frames(3)
        raise DeviceError("camera unplugged (test)")

    rec = LiveRecorder(tmp_path, {"source": "test"})
    loop = LiveLoop(source(), slow_infer, size=(80, 54), recorder=rec, drop=False)
    with pytest.raises(DeviceError, match="camera unplugged"):
        loop.run(handle_sigint=False)
    assert len(read_live_frames(tmp_path)) == 3
    assert len(read_jsonl(tmp_path / "live" / "results.jsonl")) == 3
    import yaml

    info = yaml.safe_load((tmp_path / "live" / "live.yaml").read_text())
    assert info["summary"]["error"] == "camera unplugged (test)"


def test_a_failing_inference_is_one_line(tmp_path):
    def bad(rgb):
        raise ValueError("bad input\nsecond line")

    loop = LiveLoop(iter(frames(2)), bad, size=(80, 54), drop=False)
    with pytest.raises(RigError, match=r"^live loop stopped: ValueError: bad input$"):
        loop.run(handle_sigint=False)


def test_resize_keeps_the_aspect_by_centre_cropping():
    dslr = np.zeros((2592, 3872, 3), np.uint8)
    assert resize_to(dslr, (645, 432)).shape == (432, 645, 3)  # 1.494 vs 1.493: no crop
    vga = np.zeros((480, 640, 3), np.uint8)
    vga[:, :, 0] = np.arange(480)[:, None] // 2
    out = resize_to(vga, (645, 432))
    assert out.shape == (432, 645, 3)
    assert out[0, 0, 0] >= 12  # top rows cropped away (4:3 -> 3:2 keeps rows 25..453)


def test_fixed_colour_scale_does_not_depend_on_the_frame():
    a = colorize_fixed(np.array([[1.0, 5.0]]), 0.5, 10.0)
    b = colorize_fixed(np.array([[1.0, 9.0]]), 0.5, 10.0)
    assert np.array_equal(a[0, 0], b[0, 0]) and not np.array_equal(a[0, 1], b[0, 1])
    assert colorize_fixed(np.array([[0.0]]), 0.5, 10.0).sum() == 0


def test_colour_lookup_table_matches_opencv_colour_map_and_blacks_out_unknowns():
    import cv2

    lo, hi = 0.5, 8.0
    values = np.linspace(0.01, 9.0, 645 * 4, dtype=np.float32).reshape(4, 645)
    level = np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    expected = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    assert np.array_equal(colorize_fixed(values, lo, hi, "viridis"), expected)
    odd = colorize_fixed(np.array([[np.nan, -1.0, 0.0, -np.inf, np.inf]], np.float32), lo, hi)
    assert odd[0, :4].sum() == 0 and np.array_equal(odd[0, 4], expected[-1, -1])


# --- rig live -----------------------------------------------------------------------------------------

def test_simulated_source_end_to_end_records_a_replayable_session(tmp_path, onnx_model):
    from rig.live import LiveOptions, run_live

    lines: list[str] = []
    save = tmp_path / "run"
    out = run_live(tiny_cfg(), LiveOptions(source="simulated", model=str(onnx_model), mc_samples=3, max_frames=3,
                                           save=save, panel=False, show=True, threads=1),
                   print_fn=lines.append)
    assert out["frames_captured"] == 3 and out["frames_output"] >= 1 and out["error"] is None
    session = Session.open(save)  # a regular session folder (config snapshot, journal)
    assert session.config.output.size_px == (80, 54)
    frames_ = read_live_frames(save)
    assert len(frames_) == 3 and all(Path(e["path"]).is_file() for e in frames_)
    assert all((save / "live" / e["original"]).read_bytes()[:2] == b"\xff\xd8" for e in frames_)
    res = read_jsonl(save / "live" / "results.jsonl")
    d = read_depth_m(save / "live" / res[0]["depth"])
    s = read_depth_m(save / "live" / res[0]["std"])
    assert d.shape == s.shape == (54, 80) and (d > 0).all()
    assert "onnxruntime CPU" in out["engine"]
    if not os.environ.get("DISPLAY"):
        assert any(line.startswith("--show: no display") for line in lines)


def test_folder_source_and_bad_sources(tmp_path, onnx_model):
    from rig.core.imageio import write_image
    from rig.live import LiveOptions, parse_source, run_live

    src = tmp_path / "imgs"
    for i in range(3):
        write_image(src / f"f{i}.png", np.full((108, 160, 3), 40 * i, np.uint8))
    out = run_live(tiny_cfg(), LiveOptions(source=f"folder:{src}", model=str(onnx_model), save=tmp_path / "r",
                                           panel=False, drop=False), print_fn=lambda s: None)
    assert out["frames_output"] == 3 and out["stopped_by"] == "end of source"
    assert [e["source"] for e in read_live_frames(tmp_path / "r")] == ["f0.png", "f1.png", "f2.png"]
    with pytest.raises(RigError, match="expected dslr, simulated, replay:SESSION or folder:DIR"):
        parse_source("webcam")
    with pytest.raises(RigError, match="no such folder"):
        run_live(tiny_cfg(), LiveOptions(source=f"folder:{tmp_path / 'nope'}", model=str(onnx_model)))
    with pytest.raises(RigError, match="not a capture session"):
        run_live(tiny_cfg(), LiveOptions(source=f"replay:{src}", model=str(onnx_model)))


def test_replay_source_plays_a_recorded_live_run(tmp_path, onnx_model):
    from rig.live import LiveOptions, run_live

    first = tmp_path / "first"
    run_live(tiny_cfg(), LiveOptions(source="simulated", model=str(onnx_model), max_frames=2, save=first,
                                     panel=False, drop=False), print_fn=lambda s: None)
    out = run_live(tiny_cfg(), LiveOptions(source=f"replay:{first}", model=str(onnx_model), save=tmp_path / "again",
                                           panel=False, drop=False), print_fn=lambda s: None)
    assert out["frames_output"] == 2
    a = read_jsonl(first / "live" / "results.jsonl")
    b = read_jsonl(tmp_path / "again" / "live" / "results.jsonl")
    for ra, rb in zip(a, b):  # lossless inputs + deterministic graph: the same depth maps
        assert (first / "live" / ra["depth"]).read_bytes() == (tmp_path / "again" / "live" / rb["depth"]).read_bytes()


@pytest.mark.parametrize("sig, code, how", [(signal.SIGINT, 130, "interrupted"),
                                            (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_sigint_stops_rig_live_with_everything_saved(tmp_path, onnx_model, sig, code, how):
    """Ctrl-C, or SIGTERM as from `kill`/`systemctl stop`: the queued frames are still inferred and
    saved, the recording is finished, and the exit code says which signal stopped it."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(tiny_cfg().to_yaml())
    save = tmp_path / "sig"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "live", "--config", str(cfg_file), "--source", "simulated",
                             "--model", str(onnx_model), "--save", str(save), "--no-panel", "--threads", "1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a suite run as a script's background job hands its
                            # children SIGINT ignored, which rig live respects
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        results = save / "live" / "results.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if results.is_file() and len(read_jsonl(results)) >= 2:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err  # the README's codes: 130 Ctrl-C, 143 SIGTERM
    assert ("stopped by " + ("interrupted (Ctrl-C)" if sig == signal.SIGINT else "terminated (SIGTERM)")) in out
    assert err.strip().splitlines()[-1].startswith(f"rig: {how}") and "Traceback" not in err
    import yaml

    info = yaml.safe_load((save / "live" / "live.yaml").read_text())
    summary = info["summary"]
    recorded = read_live_frames(save)
    assert summary["frames_captured"] == summary["frames_recorded"] == len(recorded)
    assert all(Path(e["path"]).is_file() for e in recorded)
    res = read_jsonl(save / "live" / "results.jsonl")
    assert len(res) == summary["frames_output"] >= 2
    assert all((save / "live" / r["depth"]).is_file() for r in res)


def test_display_needs_a_display(monkeypatch):
    from rig.live import display_available

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, why = display_available()
    assert not ok and "no display" in why


@pytest.mark.device
def test_gphoto2_virtual_camera_as_the_live_dslr(tmp_path, vcamera, onnx_model):  # noqa: F811
    """libgphoto2's virtual camera has no live view (capture_preview: Unsupported operation), so the
    source falls back to full captures; each recorded original is the camera's JPEG byte for byte."""
    from rig.live import LiveOptions, run_live

    cfg = load_rig_config("nikon_d200_xtion")
    lines: list[str] = []
    out = run_live(cfg, LiveOptions(source="dslr", model=str(onnx_model), max_frames=2, save=tmp_path / "cam",
                                    panel=False, drop=False), print_fn=lines.append)
    assert out["frames_output"] == 2
    assert "source: full captures (no live view)" in lines
    recorded = read_live_frames(tmp_path / "cam")
    assert recorded[0]["original"].endswith(".jpg")
    assert (tmp_path / "cam" / "live" / recorded[0]["original"]).read_bytes() == vcamera.source.read_bytes()
    assert read_rgb(recorded[0]["path"]).shape == (432, 645, 3)  # 64x48 camera JPEG -> the output size


class LiveViewCamera:
    """Test double: a Dslr with live view (capture_preview -> JPEG bytes) and no other settings."""

    model = "live-view test camera"

    def __init__(self) -> None:
        self.previews = 0
        self.captures = 0
        self.closed = False

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def settings(self) -> dict:
        return {}

    def capture(self, dest: Path):
        self.captures += 1
        raise AssertionError("a camera with live view is streamed, not captured")

    def capture_preview(self) -> bytes:
        from inference.live import encode_jpeg

        self.previews += 1
        return encode_jpeg(np.full((48, 64, 3), 10 * self.previews, np.uint8), 90)


def test_dslr_source_streams_live_view_when_the_camera_has_it(tmp_path, onnx_model):
    from rig.live import DslrSource

    cam = LiveViewCamera()
    notes: list[str] = []
    source = DslrSource(cam, tiny_cfg(), preview=True, notes=notes)
    assert "live view (capture_preview)" in notes
    rec = LiveRecorder(tmp_path, {"source": "test"})
    loop = LiveLoop(source, slow_infer, size=(80, 54), recorder=rec, drop=False, max_frames=3)
    s = loop.run(handle_sigint=False)
    assert s.frames_output == 3 and cam.captures == 0 and cam.closed
    recorded = read_live_frames(tmp_path)
    assert recorded[0]["meta"] == {"preview": True} and recorded[0]["source"].endswith("(preview)")
    assert (tmp_path / "live" / recorded[0]["original"]).read_bytes()[:2] == b"\xff\xd8"
    no_preview: list[str] = []
    DslrSource(LiveViewCamera(), tiny_cfg(), preview=False, notes=no_preview).close()
    assert "full captures (no live view)" in no_preview


@pytest.mark.device
def test_no_camera_fails_before_anything_is_recorded(tmp_path, capsys, onnx_model):
    from rig.cli import main

    pytest.importorskip("gphoto2")
    with no_camera_env(tmp_path):
        rc = main(["live", "--config", "nikon_d200_xtion", "--model", str(onnx_model), "--save",
                   str(tmp_path / "never"), "--no-panel"])
    err = capsys.readouterr().err
    assert rc == 3 and "no camera detected" in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_outdoor_pairs_through_the_live_loop(tmp_path, onnx_model):
    from rig.live import LiveOptions, run_live

    folder = shared_subdir("dfd_outdoor") / "N2_8"
    out = run_live(load_rig_config("nikon_d200_xtion"),
                   LiveOptions(source=f"folder:{folder}", model=str(onnx_model), save=tmp_path / "out",
                               panel=False, drop=False, mc_samples=4, threads=1), print_fn=lambda s: None)
    assert out["frames_output"] == 3
    recorded = read_live_frames(tmp_path / "out")
    assert [e["source"] for e in recorded] == ["DSC_0001.JPG", "DSC_0005.JPG", "DSC_0008.JPG"]
    assert read_rgb(recorded[0]["path"]).shape == (432, 645, 3)  # 3872x2592 area-downsampled x1/6
    for r in read_jsonl(tmp_path / "out" / "live" / "results.jsonl"):
        d = read_depth_m(tmp_path / "out" / "live" / r["depth"])
        assert d.shape == (432, 645) and np.isfinite(d).all() and (d > 0).all()


def test_demo_step_runs_a_short_live_loop(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from rig.demo import DemoContext
    from rig.demo import live_step as demo_step

    monkeypatch.setenv("RIG_ONNX_CACHE", str(tmp_path / "not-used"))
    ctx = DemoContext(out_dir=tmp_path, config=tiny_cfg(), scenes=1, quick=True)
    lines = demo_step(ctx)
    assert any("FPS" in line for line in lines) and ctx.artifacts["live_session"] == tmp_path / "live"
    assert len(read_live_frames(tmp_path / "live")) == 3
    assert "identical to the live run's" in lines[-1]
    assert (tmp_path / "onnx").is_dir() and not (tmp_path / "not-used").exists()  # self-contained
    assert json.loads(json.dumps(lines))  # printable
    demo_step(ctx)  # a second demo replaces its own previous live run


def test_simulated_source_says_so_first_and_saves_point_clouds(tmp_path, onnx_model):
    from rig.core.imageio import write_image
    from rig.live import LiveOptions, run_live
    from test_field_outputs import k_from_o3d_json, read_ply

    lines: list[str] = []
    save = tmp_path / "run"
    out = run_live(tiny_cfg(), LiveOptions(source="dslr", model=str(onnx_model), max_frames=1, save=save,
                                           panel=False, threads=1, ply=True), print_fn=lines.append)
    assert out["frames_output"] == 1
    assert lines[0].startswith("live: SIMULATED source") and "--config" in lines[0]
    assert any(line.startswith("live: simulated dslr ->") for line in lines)
    assert any("FPS n/a (1 frame output)" in line for line in lines) and not any("0.00 FPS" in x for x in lines)
    res = read_jsonl(save / "live" / "results.jsonl")
    depth = read_depth_m(save / "live" / res[0]["depth"])
    k = k_from_o3d_json(save / "live" / "depth" / "camera_intrinsic.json")
    pts, cols = read_ply(save / "live" / res[0]["ply"])
    # the PLY holds float metres, the PNG whole millimetres
    u = np.rint(pts[:, 0] * k.fx / pts[:, 2] + k.cx).astype(int)
    v = np.rint(pts[:, 1] * k.fy / pts[:, 2] + k.cy).astype(int)
    assert len(pts) == depth.size and np.abs(depth[v, u] - pts[:, 2]).max() <= 0.0006
    # a folder source is a real source: no simulated warning
    lines.clear()
    src = tmp_path / "imgs"
    write_image(src / "a.png", np.full((54, 80, 3), 90, np.uint8))
    run_live(tiny_cfg(), LiveOptions(source=f"folder:{src}", model=str(onnx_model), save=tmp_path / "r2",
                                     panel=False, threads=1), print_fn=lines.append)
    assert not any("SIMULATED" in line for line in lines)
