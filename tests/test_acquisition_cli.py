"""`rig devices`, `rig capture`, `rig sessions show` (in-process through rig.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rig.cli import main
from rig.core.session import Session

TINY_YAML = {
    "name": "tiny_sim",
    "dslr": {"driver": "simulated", "model": "tiny virtual DSLR", "sensor_px": [160, 108], "pixel_um": 30.0,
             "focal_mm": 9.0, "f_number_defocused": 2.8, "f_number_all_in_focus": 8.0, "iso": 320,
             "shutter_s": 0.004, "focus_m": 2.0},
    "output": {"size_px": [80, 54]},
    "depth_sensor": {"driver": "simulated", "model": "tiny virtual sensor", "size_px": [80, 60], "burst_frames": 3},
    "simulated": {"seed": 1, "latency_scale": 0.0},
    "session": {"min_free_mb": 0, "retries": 1},
}


def tiny_config(tmp_path: Path, **sections) -> Path:
    data = json.loads(json.dumps(TINY_YAML))
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    p = tmp_path / f"tiny_{len(list(tmp_path.glob('tiny_*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def one_error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_devices_table_and_json(capsys):
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert "gphoto2" in " ".join(names) and any(n.startswith("simulated") for n in names)
    assert all(r["status"] for r in rows)
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "device(s) attached" in out


def test_capture_show_resume(tmp_path: Path, capsys):
    cfg = tiny_config(tmp_path)
    s = tmp_path / "s"
    assert main(["capture", "--config", str(cfg), "--session", str(s), "--scenes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "c00000 ok" in out and "2 ok, 0 failed" in out
    assert main(["sessions", "show", str(s), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["captures_ok"] == 2 and summary["planned_scenes"] == 2 and summary["raw_files"] == 2 * 9
    assert [c["status"] for c in summary["captures"]] == ["ok", "ok"]
    assert main(["sessions", "show", str(s), "--captures"]) == 0
    out = capsys.readouterr().out
    assert "tiny_sim" in out and "c00001" in out

    # an existing session is never captured into without --resume
    assert main(["capture", "--config", str(cfg), "--session", str(s), "--scenes", "3"]) == 2
    assert "--resume" in one_error_line(capsys.readouterr().err)
    assert main(["capture", "--session", str(s), "--resume", "--scenes", "3", "--no-progress"]) == 0
    assert "3 ok" in capsys.readouterr().out
    assert main(["capture", "--session", str(s), "--resume", "--scenes", "3"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(Session.open(s).completed()) == 3


def test_failures_exit_non_zero_with_one_line_and_resume_retries_them(tmp_path: Path, capsys):
    cfg = tiny_config(tmp_path)
    s = tmp_path / "s"
    rc = main(["capture", "--config", str(cfg), "--session", str(s), "--scenes", "2", "--fault-rate", "1",
               "--no-progress"])
    assert rc == 5  # the batch rule: some items failed
    line = one_error_line(capsys.readouterr().err)
    assert "2 of 2 capture(s) failed after 2 attempts" in line and "--resume" in line
    assert [e["status"] for e in Session.open(s).journal()] == ["retrying", "failed"] * 2
    # --fault-rate on resume overrides the snapshot's rate for this run
    assert main(["capture", "--session", str(s), "--resume", "--fault-rate", "0", "--no-progress"]) == 0
    assert len(Session.open(s).completed()) == 2


def test_bad_flags_are_one_line_errors(tmp_path: Path, capsys):
    cfg = tiny_config(tmp_path)
    for argv, needle in (
        (["--fault-rate", "1.5"], "--fault-rate"),
        (["--fault-rate", "-0.1"], "--fault-rate"),
        (["--scenes", "0"], "--scenes"),
        (["--latency-scale", "11"], "--latency-scale"),
    ):
        rc = main(["capture", "--config", str(cfg), "--session", str(tmp_path / "x"), *argv])
        assert rc == 2 and needle in one_error_line(capsys.readouterr().err)
        assert not (tmp_path / "x").exists()  # nothing created for bad input
    assert main(["capture", "--session", str(tmp_path / "y")]) == 2
    assert "--config is required" in one_error_line(capsys.readouterr().err)


def test_ctrl_c_stops_cleanly_with_everything_saved(tmp_path: Path, capsys, monkeypatch):
    from acquisition.capture import PairCapture

    real = PairCapture.capture_scene

    def interrupt_at_second(self, i):
        if i == 1:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(PairCapture, "capture_scene", interrupt_at_second)
    s = tmp_path / "s"
    rc = main(["capture", "--config", str(tiny_config(tmp_path)), "--session", str(s), "--scenes", "3",
               "--no-progress"])
    assert rc == 130
    assert "interrupted — 1 capture(s) saved" in capsys.readouterr().err
    monkeypatch.setattr(PairCapture, "capture_scene", real)
    assert main(["capture", "--session", str(s), "--resume", "--no-progress"]) == 0
    assert len(Session.open(s).completed()) == 3


def test_progress_display_runs(tmp_path: Path, capsys, monkeypatch):
    """The rich progress path (used on a terminal) completes and prints the status table."""
    import rich.console

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    assert main(["capture", "--config", str(tiny_config(tmp_path)), "--session", str(tmp_path / "s"),
                 "--scenes", "2"]) == 0
    out = capsys.readouterr().out
    assert "this run" in out and "c00001" in out


@pytest.mark.slow
def test_bench_capture_quick(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "capture", "--quick", "--repeats", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["capture"]
    assert res["overlapped_device_s_median"] > 1.0  # the preset's real latencies
    assert 0 <= res["overhead_pct_median"] < 100 and res["sequential_overhead_s_median"] > 0


def test_real_rig_without_hardware_is_one_line_and_leaves_no_session(tmp_path: Path):
    """The paper's rig (gphoto2 + OpenNI) with nothing plugged in: exit 3, one line, nothing left
    behind, so the same command works once the camera is connected."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("VCAMERADIR", "IOLIBS", "CAMLIBS", "RIG_DEBUG")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, "-m", "rig.cli", "capture", "--config", "nikon_d200_xtion", "--session",
                        str(tmp_path / "s"), "--scenes", "1", "--no-progress"], capture_output=True, text=True,
                       env=env, timeout=120)
    if r.returncode == 0:
        pytest.skip("a real camera and depth sensor are attached")
    assert r.returncode == 3, r.stderr
    one_error_line(r.stderr)
    assert not (tmp_path / "s").exists()
