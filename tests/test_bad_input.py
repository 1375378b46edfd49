"""Issue 13, every bad input: one line on stderr and the documented exit code, no debris.

Exit codes (README): 2 bad input or config, 3 device, 4 disk full, 5 a batch command finished with
some items failed (each listed), 130 Ctrl-C, 1 anything unexpected.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from rig.cli import main
from rig.cli.base import MC_SAMPLES_MAX
from rig.core.session import Session
from test_acquisition_cli import tiny_config


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """rig.cli.main in-process; argparse's own errors (SystemExit) count as their exit code."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    log = os.environ.get("RIG_BAD_INPUT_LOG")  # the closing note's sweep table: one JSON line per input
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": list(argv), "exit": rc, "stderr": err.strip()}) + "\n")
    return rc, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def lite_model(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    import inference.model as M

    torch.manual_seed(0)
    return M.export_fp16(M.build_model("d3net-lite", depth_scale_m=2.0).eval(),
                         tmp_path_factory.mktemp("m") / "lite.pt", {"input": "N2_8", "image_size_px": [96, 64]})


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photo") / "photo.jpg"
    cv2.imwrite(str(p), (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    return p


@pytest.fixture(scope="module")
def small_session(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    s = root / "s"
    assert main(["capture", "--config", str(tiny_config(root)), "--session", str(s), "--scenes", "2",
                 "--no-progress"]) == 0
    return s


# ------------------------------------------------------------------------------ non-finite numbers
NON_FINITE = [
    ["optics", "blur", "--config", "simulated", "--depth", "nan"],
    ["optics", "blur", "--config", "simulated", "--depth", "inf"],
    ["optics", "blur", "--config", "simulated", "--depth=-inf"],
    ["optics", "blur", "--config", "simulated", "--depth", "1", "--focus", "nan", "--json"],
    ["live", "--config", "simulated", "--source", "simulated", "--std-max", "nan"],
    ["live", "--config", "simulated", "--source", "simulated", "--depth-range", "0.5", "inf"],
    ["capture", "--config", "simulated", "--session", "{tmp}/x", "--fault-rate", "nan"],
    ["register", "{tmp}", "--align-threshold", "inf"],
    ["build-dataset", "{tmp}", "--out", "{tmp}/ds", "--test-fraction", "nan"],
    ["import-dfd", "{tmp}", "--out", "{tmp}/ds", "--tolerance-s", "NaN"],
    ["eval", "--model", "dfd-n2.8", "--data", "{tmp}", "--min-depth", "nan"],
    ["predict", "--model", "dfd-n2.8", "--input", "{tmp}", "--out", "{tmp}/o", "--k-cam-px", "inf"],
]


@pytest.mark.parametrize("argv", NON_FINITE, ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_non_finite_numbers_are_refused_on_every_command_line(argv, tmp_path, capsys):
    rc, out, err = run_main(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2 and out == ""
    assert "expected a finite number" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created


# --------------------------------------------------------------------- formerly exit 1, now exit 2
def test_formerly_generic_errors_are_one_line_exit_2(tmp_path, photo, small_session, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    existing = tmp_path / "existing.txt"
    existing.write_text("mine")
    binary = tmp_path / "calib.bin"
    binary.write_bytes(bytes(range(256)) * 20)
    cases = [
        (["predict", "--model", str(empty), "--input", str(photo), "--out", str(tmp_path / "o1")], "empty file"),
        (["predict", "--model", "dfd-n2.8", "--input", str(photo), "--out", str(existing)], "not a folder"),
        (["predict", "--model", "dfd-n2.8", "--input", str(photo), "--out", str(tmp_path / "o2"),
          "--threads", "-3"], "positive number of threads"),
        (["live", "--config", "simulated", "--source", "simulated", "--port", "70000", "--serve",
          "--save", str(tmp_path / "lv1")], "TCP port in [0, 65535]"),
        (["live", "--config", "simulated", "--source", "simulated", "--queue", "0",
          "--save", str(tmp_path / "lv2")], "integer >= 1"),
        (["register", str(small_session), "--calibration", str(binary)], "not an OpenCV FileStorage file"),
    ]
    for argv, needle in cases:
        rc, _, err = run_main(capsys, *argv)
        assert rc == 2, (argv, err)
        assert needle in one_line(err), err
    assert existing.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.bin", "empty.pt", "existing.txt"]  # no debris


def test_mc_samples_has_a_documented_upper_limit(tmp_path, photo, capsys):
    for cmd in (["predict", "--model", "dfd-n2.8", "--input", str(photo), "--out", str(tmp_path / "o")],
                ["eval", "--model", "dfd-n2.8", "--data", str(tmp_path)],
                ["live", "--source", "simulated"], ["replay", str(tmp_path)]):
        rc, _, err = run_main(capsys, *cmd, "--mc-samples", "100000000")
        assert rc == 2 and f"2 to {MC_SAMPLES_MAX} samples" in one_line(err)
    rc, out, _ = run_main(capsys, "predict", "--help")
    assert f"at most {MC_SAMPLES_MAX}" in out.replace("\n", " ").replace("  ", " ")
    assert f"--mc-samples N` accepts 0 or 2 to {MC_SAMPLES_MAX}" in (REPO / "README.md").read_text()


def test_duplicate_yaml_keys_are_refused_naming_the_key_and_both_lines(tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("name: a\ndslr:\n  focus_m: 2.0\n  iso: 100\n  focus_m: 3.0\n")
    rc, _, err = run_main(capsys, "optics", "blur", "--config", str(cfg), "--depth", "1")
    line = one_line(err)
    assert rc == 2 and "duplicate key 'focus_m' at lines 3 and 5" in line and "dup.yaml" in line
    train = tmp_path / "train.yaml"
    train.write_text("name: t\nname: u\n")
    rc, _, err = run_main(capsys, "train", "--config", str(train), "--out", str(tmp_path / "run"))
    assert rc == 2 and "duplicate key 'name' at lines 1 and 2" in one_line(err)


# ------------------------------------------------------------------------------------- misleading
def test_model_file_messages_say_what_is_wrong(tmp_path, photo, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(5000))
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_bytes(os.urandom(3000))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(b"PK\x03\x04" + os.urandom(2000))  # looks like a zip checkpoint, is not one
    rc, _, err = run_main(capsys, "predict", "--model", str(garbage), "--input", str(photo), "--out", str(tmp_path / "o"))
    assert rc == 2 and "not a PyTorch model file" in one_line(err)
    rc, _, err = run_main(capsys, "predict", "--model", str(fake_onnx), "--input", str(photo), "--out", str(tmp_path / "o"))
    line = one_line(err)
    assert rc == 2 and "an ONNX file" in line and "weights only" not in line.lower()
    rc, _, err = run_main(capsys, "predict", "--model", str(trunc), "--input", str(photo), "--out", str(tmp_path / "o"))
    line = one_line(err)
    assert rc == 2 and line.endswith(")") and "not a readable model file" in line  # never cut mid-word


def test_garbage_oni_is_exit_2_and_leaves_nothing(tmp_path, capsys):
    fake = tmp_path / "fake.oni"
    fake.write_bytes(os.urandom(3000))
    for through in ("register", "infer"):
        rc, _, err = run_main(capsys, "replay", str(fake), "--through", through)
        assert rc == 2, err
        one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.oni"]


def test_import_dfd_of_8_bit_depth_does_not_blame_the_tolerance(tmp_path, capsys):
    src = tmp_path / "release" / "train"
    for sub in ("N2_8", "N8", "depth"):
        (src / sub).mkdir(parents=True)
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for t in ("16:38:31.600000", "16:39:15.600000"):
        cv2.imwrite(str(src / "N2_8" / f"2018-04-26T{t}.JPG"), img)
        cv2.imwrite(str(src / "N8" / f"2018-04-26T{t}.JPG"), img)
        cv2.imwrite(str(src / "depth" / f"2018-04-26T{t}.png"), np.full((48, 64), 100, np.uint8))  # 8-bit
    rc, _, err = run_main(capsys, "import-dfd", str(src), "--out", str(tmp_path / "ds"))
    line = one_line(err)
    assert rc == 5 and "16-bit" in line and "tolerance" not in line
    assert not (tmp_path / "ds" / "manifest.yaml").exists()


# ------------------------------------------------------------------------------------------ debris
def test_live_on_a_busy_port_leaves_no_session(tmp_path, capsys):
    pytest.importorskip("torch")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        rc, _, err = run_main(capsys, "live", "--config", "simulated", "--source", "simulated", "--serve",
                              "--port", str(busy.getsockname()[1]), "--model", "d3net-lite", "--backend", "torch",
                              "--save", str(tmp_path / "a" / "b" / "run"), "--no-panel", "--max-frames", "1")
    finally:
        busy.close()
    assert rc == 2 and "Address already in use" in one_line(err)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- resume and config
def test_resume_with_the_same_command_line_compares_the_effective_config(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    s = tmp_path / "s"
    argv = ["capture", "--config", str(cfg), "--session", str(s), "--scenes", "1", "--fault-rate", "0.2",
            "--no-progress"]
    assert run_main(capsys, *argv)[0] == 0
    rc, _, err = run_main(capsys, *argv[:6], "2", *argv[7:], "--resume")  # same line, 2 scenes, --resume
    assert rc == 0, err
    assert len(Session.open(s).completed()) == 2
    other = tiny_config(tmp_path, dslr={"iso": 400})  # a real change of the file is still refused
    rc, _, err = run_main(capsys, "capture", "--config", str(other), "--session", str(s), "--scenes", "3",
                          "--fault-rate", "0.2", "--resume", "--no-progress")
    assert rc == 2 and "differs from the session's snapshot" in one_line(err)


# ------------------------------------------------------------------------------------- disk full
def _tmpfs(path: Path, size: str) -> Path:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    return path


def _fill(mnt: Path) -> None:
    """Fill a filesystem to the last byte."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for block in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_disk_full_in_register_and_predict_is_exit_4(tmp_path, small_session, lite_model, photo):
    mnt = _tmpfs(tmp_path / "mnt", "3m")
    try:
        s = mnt / "s"
        shutil.copytree(small_session, s)
        (mnt / "out").mkdir()
        _fill(mnt)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for argv in (["register", str(s), "--quiet"],
                     ["predict", "--model", str(lite_model), "--input", str(photo), "--out", str(mnt / "out")]):
            r = subprocess.run([sys.executable, "-m", "rig.cli", *argv], capture_output=True, text=True, env=env,
                               cwd=REPO, timeout=300)
            assert r.returncode == 4, r.stderr
            line = one_line(r.stderr)
            assert "disk full" in line and "free space, then run the same command again" in line
        assert Session.open(s).verify()[1] == []  # the captures are intact
        assert not any(p.name.startswith((".tmp-", ".photo")) for p in (mnt / "out").iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# -------------------------------------------------------------------------------- the batch rule
def test_readme_documents_the_batch_rule():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| exit code | meaning |"):]
    assert "| 5 |" in table.split("\n\n")[0] and "failed" in table.split("\n\n")[0]
    assert "| 4 | disk full" in table


def test_non_finite_factors_in_a_list_are_refused(tmp_path, capsys):
    rc, _, err = run_main(capsys, "camind-experiment", "--k-cam-errors", "0.9,inf", "--out", str(tmp_path / "t.md"))
    assert rc == 2 and "--k-cam-errors" in one_line(err) and "finite" in err


def test_sigterm_ends_any_command_with_143_and_one_line(monkeypatch, capsys):
    """`kill PID` during a command: the Ctrl-C clean-up paths run (Terminated is a KeyboardInterrupt),
    one line on stderr, exit 143, and the process's SIGTERM handling is restored afterwards."""
    import os
    import signal
    import time

    import rig.cli as cli

    def slow_command(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler long before this ends
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr("rig.cli.study.cmd_study_table", slow_command)  # the parser is built inside main()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    t0 = time.monotonic()
    assert cli.main(["depth-study", "table", "anywhere"]) == 143
    assert time.monotonic() - t0 < 4
    assert capsys.readouterr().err.strip() == "rig: terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
