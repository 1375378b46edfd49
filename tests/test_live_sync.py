"""Batched syncs of the live recorder: a journal line is only written once its files are durable, so
a crash (here: SIGKILL in the middle of a run) leaves every journaled frame intact; the loop with
batching records every frame as before; the stored depth PNG is lossless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import inference.live_sync as live_sync
from conftest import REPO
from inference.live import (Frame, LiveLoop, LiveRecorder, Result, depth_mm_u16, encode_png, read_jsonl,
                            read_live_frames)
from rig.core.imageio import read_depth_m, read_rgb


def _frame(i: int) -> Frame:
    return Frame(index=i, rgb=np.full((54, 80, 3), i, np.uint8), name=f"f{i}", t_monotonic_s=float(i),
                 t_wall="", capture_s=0.0, resize_s=0.0)


def test_batched_lines_are_written_only_after_their_files_are_synced(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_append = live_sync.fsync_path, live_sync.append_lines
    monkeypatch.setattr(live_sync, "fsync_path", lambda p: (events.append(("fsync", str(p))), real_fsync(p)))
    monkeypatch.setattr(live_sync, "append_lines",
                        lambda p, es: (events.extend(("line", str(e.get("file") or e["depth"])) for e in es),
                                       real_append(p, es)))
    rec = LiveRecorder(tmp_path, {"source": "test"}, batch_sync=True)
    for i in range(4):
        f = _frame(i)
        rec.record_frame(f)
        rec.record_result(Result(frame=f, depth_m=np.full((54, 80), 1.5, np.float32), std_m=None, infer_s=0.0),
                          f.rgb, 0.0)
    assert read_jsonl(tmp_path / "live" / "frames.jsonl") == []  # written, not yet durable: no lines
    assert rec.journal.sync_pending() == 8
    synced = {Path(p).relative_to(tmp_path / "live").as_posix() for kind, p in events if kind == "fsync"
              if Path(p).is_file()}
    first_line = next(i for i, (kind, _) in enumerate(events) if kind == "line")
    assert all(kind == "fsync" for kind, _ in events[:first_line])  # every fsync comes before any line
    for entry in read_jsonl(tmp_path / "live" / "frames.jsonl") + read_jsonl(tmp_path / "live" / "results.jsonl"):
        for key in ("file", "depth", "view"):
            if key in entry:
                assert entry[key] in synced
    assert rec.journal.batches == 1 and [e["index"] for e in read_live_frames(tmp_path)] == [0, 1, 2, 3]


def test_unbatched_recorder_is_durable_on_return(tmp_path):
    rec = LiveRecorder(tmp_path, {"source": "test"})
    rec.record_frame(_frame(0))
    assert [e["index"] for e in read_live_frames(tmp_path)] == [0]


def test_loop_with_batched_syncs_records_every_frame(tmp_path):
    def infer(rgb: np.ndarray) -> tuple[np.ndarray, None]:
        return np.full(rgb.shape[:2], 2.345, np.float32), None

    rec = LiveRecorder(tmp_path, {"source": "test"})
    frames = [np.full((54, 80, 3), i, np.uint8) for i in range(20)]
    s = LiveLoop(iter(frames), infer, size=(80, 54), recorder=rec, drop=False).run(handle_sigint=False)
    assert s.frames_recorded == s.frames_output == 20 and s.error is None
    assert rec.journal.batch and rec.journal.pending() == 0
    recorded = read_live_frames(tmp_path)
    assert [e["index"] for e in recorded] == list(range(20))
    assert all(read_rgb(e["path"])[0, 0, 0] == e["index"] for e in recorded)
    results = read_jsonl(tmp_path / "live" / "results.jsonl")
    assert [r["index"] for r in results] == list(range(20))
    assert np.all(read_depth_m(tmp_path / "live" / results[5]["depth"]) == np.float32(2.345))


def test_stored_depth_png_is_lossless():
    import cv2

    d = depth_mm_u16(np.random.default_rng(0).uniform(0.3, 30.0, (54, 80)).astype(np.float32))
    assert np.array_equal(cv2.imdecode(np.frombuffer(encode_png(d, stored=True), np.uint8), cv2.IMREAD_UNCHANGED), d)


CRASHING_RUN = """
import sys, time, numpy as np
from inference.live import LiveLoop, LiveRecorder
def infer(rgb):
    time.sleep(0.02)
    return np.full(rgb.shape[:2], 1.0 + rgb[0, 0, 0] / 100.0, np.float32), None
frames = (np.full((54, 80, 3), i % 256, np.uint8) for i in range(100000))
LiveLoop(frames, infer, size=(80, 54), recorder=LiveRecorder(sys.argv[1], {"source": "crash"}),
         drop=False).run(handle_sigint=False)
"""


def test_a_killed_run_leaves_every_journaled_frame_intact(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, str(tmp_path)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(read_jsonl(tmp_path / "live" / "results.jsonl")) < 10:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    frames = read_live_frames(tmp_path)
    results = read_jsonl(tmp_path / "live" / "results.jsonl")
    assert len(results) >= 10 and len(frames) >= len(results)
    for e in frames:
        assert read_rgb(e["path"])[0, 0, 0] == e["index"] % 256
    for r in results:
        assert np.allclose(read_depth_m(tmp_path / "live" / r["depth"]), 1.0 + (r["index"] % 256) / 100.0,
                           atol=5e-4)
        assert read_rgb(tmp_path / "live" / r["view"]).shape[0] > 0
