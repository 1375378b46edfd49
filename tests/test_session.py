"""The session store: layout, journal (torn lines, repair), recovery, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from rig.core.config import load_rig_config
from rig.core.errors import ConfigError, RigError
from rig.core.imageio import write_image
from rig.core.records import Capture, DslrShot, capture_to_dict
from rig.core.session import (JOURNAL_FILE, SESSION_FILE, Session, StorageFull, capture_id_for, jpeg_size,
                         parse_journal, verify_image_file)


@pytest.fixture()
def cfg():
    return load_rig_config("simulated")


@pytest.fixture()
def session(tmp_path: Path, cfg) -> Session:
    return Session.create(tmp_path / "s", cfg, planned_scenes=5)


def entry(cid: str, status: str = "ok", attempt: int = 1, scene_index: int | None = None) -> dict:
    idx = int(cid[1:]) if scene_index is None else scene_index
    return {"capture_id": cid, "scene_id": f"scene{idx}", "scene_index": idx, "attempt": attempt,
            "status": status, "error": None if status == "ok" else "DeviceBusy: busy"}


def write_capture(session: Session, cid: str, *, jpeg_ok: bool = True) -> Path:
    """A minimal complete raw/<id>/ folder (two small JPEGs + capture.yaml)."""
    d = session.raw_dir(cid)
    d.mkdir(parents=True)
    img = (np.arange(32 * 48 * 3) % 251).astype(np.uint8).reshape(32, 48, 3)
    for name in ("defocused.jpg", "all_in_focus.jpg"):
        write_image(d / name, img)
    if not jpeg_ok:
        data = (d / "all_in_focus.jpg").read_bytes()
        (d / "all_in_focus.jpg").write_bytes(data[: len(data) // 2])
    shot = DslrShot(file="defocused.jpg", f_number=2.8, shutter_s=0.004, iso=320)
    cap = Capture(capture_id=cid, scene_id=f"scene{cid}", defocused=shot,
                  all_in_focus=DslrShot(file="all_in_focus.jpg", f_number=8.0, shutter_s=1 / 30, iso=320),
                  depth=None, config_snapshot_id=session.snapshot_id, extra={"scene_index": int(cid[1:])})
    (d / "capture.yaml").write_text(yaml.safe_dump(capture_to_dict(cap)))
    return d


def test_create_layout_and_open_round_trip(session: Session, cfg):
    p = session.path
    assert (p / SESSION_FILE).is_file() and (p / JOURNAL_FILE).is_file() and (p / "raw").is_dir()
    meta = yaml.safe_load((p / SESSION_FILE).read_text())
    assert meta["snapshot_id"] == cfg.snapshot_id() and meta["planned_scenes"] == 5
    assert meta["software"].startswith("deep-dfd-rig") and meta["created"].endswith("+00:00")
    again = Session.open(p)
    assert again.config.snapshot_id() == cfg.snapshot_id()
    assert again.config == cfg.__class__(**{**again.config.__dict__}) and again.config.dslr == cfg.dslr
    assert again.journal() == [] and again.completed() == [] and again.next_scene_index() == 0
    assert session.raw_dir("c00001") == p / "raw" / "c00001"
    assert session.registered_dir("c00001") == p / "registered" / "c00001"
    with pytest.raises(RigError):
        session.raw_dir("../escape")


def test_create_refuses_existing_sessions_and_non_empty_folders(tmp_path: Path, cfg, session: Session):
    with pytest.raises(RigError, match="--resume"):
        Session.create(session.path, cfg)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("keep me")
    with pytest.raises(RigError, match="not empty"):
        Session.create(other, cfg)
    assert (other / "x.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(RigError, match="not a folder"):
        Session.create(f, cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    Session.create(empty, cfg)  # an existing empty folder is fine


@pytest.mark.parametrize("mutate,match", [
    (lambda p: (p / SESSION_FILE).unlink(), "not a capture session"),
    (lambda p: (p / SESSION_FILE).write_text("format: [unclosed"), "invalid YAML"),
    (lambda p: (p / SESSION_FILE).write_text("- a list"), "expected a mapping"),
    (lambda p: _edit_meta(p, format="other/9"), "format"),
    (lambda p: _edit_meta(p, config=None), "config"),
    (lambda p: _edit_meta(p, snapshot_id=None), "snapshot_id"),
    (lambda p: _edit_meta(p, planned_scenes=0), "planned_scenes"),
    (lambda p: _edit_config(p, "dslr", "focal_mm", -1.0), "dslr.focal_mm"),
    (lambda p: _edit_config(p, "dslr", "lens_cap", True), "unknown key"),
    (lambda p: (p / JOURNAL_FILE).unlink(), "captures.jsonl"),
    (lambda p: (p / JOURNAL_FILE).write_text('{"capture_id": "c00000"\n{}\n'), "line 1: not valid JSON"),
    (lambda p: (p / JOURNAL_FILE).write_text(json.dumps(entry("c00000", status="great")) + "\n"), "status"),
    (lambda p: (p / JOURNAL_FILE).write_text(json.dumps({**entry("c00000"), "attempt": 0}) + "\n"), "attempt"),
])
def test_open_rejects_malformed_folders_with_one_line(session: Session, mutate, match):
    mutate(session.path)
    with pytest.raises(ConfigError, match=match) as e:
        Session.open(session.path)
    assert "\n" not in str(e.value)


def _edit_meta(p: Path, **kv) -> None:
    meta = yaml.safe_load((p / SESSION_FILE).read_text())
    meta.update(kv)
    (p / SESSION_FILE).write_text(yaml.safe_dump(meta))


def _edit_config(p: Path, section: str, key: str, value) -> None:
    meta = yaml.safe_load((p / SESSION_FILE).read_text())
    meta["config"][section][key] = value
    (p / SESSION_FILE).write_text(yaml.safe_dump(meta))


def test_open_missing_and_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such session"):
        Session.open(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        Session.open(tmp_path / "f")


def test_journal_append_and_torn_last_line_is_tolerated_then_repaired(session: Session):
    session.append_journal(entry("c00000"))
    session.append_journal(entry("c00001", "retrying"))
    jp = session.journal_path
    good = jp.read_bytes()
    with open(jp, "ab") as f:  # kill -9 in the middle of the next write
        f.write(json.dumps(entry("c00001", attempt=2)).encode()[:37])
    entries, torn = parse_journal(jp)
    assert torn and [e["capture_id"] for e in entries] == ["c00000", "c00001"]
    assert Session.open(session.path).journal() == entries  # readers tolerate it
    session.append_journal(entry("c00001", attempt=2))  # the writer cuts it off first
    assert jp.read_bytes().startswith(good)
    entries, torn = parse_journal(jp)
    assert not torn and [(e["capture_id"], e["attempt"]) for e in entries] == [("c00000", 1), ("c00001", 1),
                                                                                 ("c00001", 2)]
    assert all(line for line in jp.read_text().split("\n")[:-1])


def test_complete_line_without_newline_is_kept(session: Session):
    with open(session.journal_path, "ab") as f:
        f.write(json.dumps(entry("c00000")).encode())
    session.append_journal(entry("c00001"))
    assert [e["capture_id"] for e in session.journal()] == ["c00000", "c00001"]


def test_bad_line_in_the_middle_is_an_error(session: Session):
    session.append_journal(entry("c00000"))
    with open(session.journal_path, "ab") as f:
        f.write(b"garbage\n")
    session.append_journal(entry("c00001"))
    with pytest.raises(ConfigError, match="line 2"):
        session.journal()
    before = session.journal_path.read_bytes()
    with pytest.raises(ConfigError, match="status"):  # validated before anything is written
        session.append_journal({"capture_id": "c00002", "status": "nope", "attempt": 1})
    assert session.journal_path.read_bytes() == before


def test_completed_latest_status_and_scene_indices(session: Session):
    write_capture(session, "c00000")
    write_capture(session, "c00002")
    session.append_journal(entry("c00000"))
    session.append_journal(entry("c00001", "retrying"))
    session.append_journal(entry("c00001", "failed", attempt=2))
    session.append_journal(entry("c00002", "retrying"))
    session.append_journal(entry("c00002", attempt=2))
    done = session.completed()
    assert [c.capture_id for c in done] == ["c00000", "c00002"]
    assert done[0].all_in_focus.f_number == 8.0
    assert session.next_scene_index() == 1
    assert session.pending_scene_indices(5) == [1, 3, 4]
    s = session.summary()
    assert (s["captures_ok"], s["captures_failed"], s["captures_retried"], s["attempts"]) == (2, 1, 1, 5)
    assert capture_id_for(7) == "c00007"


def test_completed_reports_malformed_capture_yaml(session: Session):
    d = write_capture(session, "c00000")
    session.append_journal(entry("c00000"))
    (d / "capture.yaml").write_text("capture_id: c00000\n")
    with pytest.raises(ConfigError, match="malformed capture record"):
        session.completed()
    (d / "capture.yaml").unlink()
    with pytest.raises(ConfigError, match="missing"):
        session.completed()


def test_recover_adopts_complete_orphans_and_removes_unfinished_attempts(session: Session):
    write_capture(session, "c00000")
    session.append_journal(entry("c00000"))
    write_capture(session, "c00001")  # renamed into place, killed before its journal line
    bad = write_capture(session, "c00002", jpeg_ok=False)  # cannot happen via capture; must still be kept
    tmp = session.attempt_dir("c00003", 1)
    (tmp / "defocused.jpg").write_bytes(b"\xff\xd8partial")
    notes = session.recover()
    assert any("adopted complete capture c00001" in n for n in notes)
    assert any("c00002 aside" in n for n in notes)
    assert any("removed unfinished attempt" in n for n in notes)
    assert not tmp.exists() and not bad.exists()
    assert (session.path / "raw" / ".orphan-c00002-0" / "capture.yaml").is_file()  # nothing deleted
    latest = session.latest()
    assert latest["c00001"]["status"] == "ok" and latest["c00001"]["recovered"] is True
    assert [c.capture_id for c in session.completed()] == ["c00000", "c00001"]
    assert session.recover() == []  # idempotent


def test_commit_never_overwrites(session: Session):
    existing = write_capture(session, "c00000")
    tmp = session.attempt_dir("c00000", 2)
    (tmp / "marker").write_text("new")
    session.commit_capture(tmp, "c00000")
    assert (existing / "marker").read_text() == "new"
    assert (session.path / "raw" / ".orphan-c00000-0" / "capture.yaml").is_file()


def test_free_space_check_and_lock(session: Session):
    session.ensure_free_space(0.0)
    with pytest.raises(StorageFull, match="min_free_mb") as e:
        session.ensure_free_space(1e12)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    with session.lock():
        with pytest.raises(RigError, match="in use"):
            with Session.open(session.path).lock():
                pass
    with session.lock():  # released
        pass


def test_verify_image_file_detects_truncation(tmp_path: Path):
    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "a.jpg", img)
    write_image(tmp_path / "d.png", (np.arange(40 * 60).reshape(40, 60) * 7).astype(np.uint16))
    assert verify_image_file(tmp_path / "a.jpg") == (40, 60, 3)
    assert verify_image_file(tmp_path / "d.png") == (40, 60)
    assert jpeg_size((tmp_path / "a.jpg").read_bytes()) == (40, 60)
    for name in ("a.jpg", "d.png"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / ("cut_" + name)).write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(ValueError, match="truncated"):
            verify_image_file(tmp_path / ("cut_" + name))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        verify_image_file(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="cannot read"):
        verify_image_file(tmp_path / "missing.png")


def test_session_core_imports_no_stage():
    import subprocess
    import sys

    code = ("import sys, rig.core.session; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('acquisition', 'registration', 'inference')]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert r.returncode == 0, r.stdout + r.stderr
