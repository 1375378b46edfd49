"""Issue 13, integrity: what is saved is verifiably what was captured.

SHA-256 of every file in the journal (computed before the publishing rename), `rig sessions verify`,
register / build-dataset leaving damaged captures out and going on, `file:` paths that lead outside
the session refused, and predict / live --source folder: / replay refusing truncated or corrupt
images. Damage is done the way it happens in the field: bytes zeroed in place, a file cut short.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from rig.cli import main
from rig.core.session import Session, sha256_file, verify_image_file
from test_acquisition_cli import tiny_config

ZERO_BYTES = 1024


def zero_middle(path: Path, n: int = ZERO_BYTES) -> None:
    """Zero ``n`` bytes in the middle of a file, in place (its size and end marker unchanged)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + n] = bytes(n)
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def err_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [ln for ln in err.strip().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def session_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    s = root / "s"
    assert main(["capture", "--config", str(tiny_config(root)), "--session", str(s), "--scenes", "4",
                 "--no-progress"]) == 0
    return s


@pytest.fixture
def session(session_template: Path, tmp_path: Path) -> Path:
    s = tmp_path / "s"
    shutil.copytree(session_template, s)
    return s


# ------------------------------------------------------------------------------------ journal hashes
def test_journal_holds_a_sha256_of_every_file_of_each_capture(session: Path):
    ok = [e for e in Session.open(session).journal() if e["status"] == "ok"]
    assert len(ok) == 4
    for e in ok:
        assert sorted(e["sha256"]) == sorted(e["files"]) and "capture.yaml" in e["sha256"]
        for rel, digest in e["sha256"].items():
            assert sha256_file(session / "raw" / e["capture_id"] / rel) == digest


def test_recovered_capture_gets_its_hashes(session: Path):
    """A capture adopted on resume (killed between rename and journal line) is hashed then."""
    lines = (session / "captures.jsonl").read_text().splitlines()
    (session / "captures.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # drop c00003's line
    notes = Session.open(session).recover()
    assert any("adopted complete capture c00003" in n for n in notes)
    entry = Session.open(session).latest()["c00003"]
    assert entry["sha256"]["defocused.jpg"] == sha256_file(session / "raw" / "c00003" / "defocused.jpg")


# ---------------------------------------------------------------------------------- sessions verify
def test_sessions_verify_intact_exits_0(session: Path, capsys):
    assert main(["sessions", "verify", str(session)]) == 0
    assert "all 4 capture(s) intact" in capsys.readouterr().out


def test_sessions_verify_lists_each_damaged_or_missing_file_and_exits_5(session: Path, capsys):
    zero_middle(session / "raw" / "c00001" / "defocused.jpg")  # 4 KB-style damage: still "decodes"
    truncate_half(session / "raw" / "c00002" / "all_in_focus.jpg")
    (session / "raw" / "c00003" / "depth_fused.png").unlink()
    assert main(["sessions", "verify", str(session)]) == 5
    out, err = capsys.readouterr()
    assert "damaged c00001: defocused.jpg: checksum mismatch" in out
    assert "damaged c00002: all_in_focus.jpg: checksum mismatch" in out
    assert "damaged c00003: depth_fused.png: missing" in out
    line = err_lines(err)
    assert len(line) == 1 and "3 of 4 capture(s) damaged" in line[0]


def test_decode_check_catches_damage_without_a_checksum(session: Path):
    """Sessions written before checksums: the full decode still finds a zeroed JPEG (libjpeg warns)."""
    f = session / "raw" / "c00001" / "defocused.jpg"
    zero_middle(f, 4096)
    with pytest.raises(ValueError, match="corrupt JPEG data|not decodable"):
        verify_image_file(f)


# ------------------------------------------------------------------------- register / build-dataset
def test_register_and_build_dataset_leave_damaged_captures_out_and_go_on(session: Path, tmp_path: Path, capsys):
    assert main(["register", str(session), "--quiet"]) == 0
    zero_middle(session / "raw" / "c00001" / "defocused.jpg")  # damaged after registration
    (session / "raw" / "c00002" / "ir.png").unlink()
    capsys.readouterr()
    assert main(["register", str(session), "--quiet"]) == 5
    out, err = capsys.readouterr()
    assert "c00001: damaged: defocused.jpg: checksum mismatch" in out and "c00002: damaged: ir.png: missing" in out
    assert len(err_lines(err)) == 1 and "2 of 4 capture(s) not registered" in err
    failed = yaml.safe_load((session / "registered" / "failed.yaml").read_text())["failed"]
    assert sorted(failed) == ["c00001", "c00002"] and "checksum mismatch" in failed["c00001"]

    ds = tmp_path / "ds"
    assert main(["build-dataset", str(session), "--out", str(ds), "--quiet", "--test-fraction", "0"]) == 5
    out, err = capsys.readouterr()
    assert "left out s-c00001" in out and "left out s-c00002" in out
    assert len(err_lines(err)) == 1 and "2 damaged capture(s) left out" in err
    manifest = yaml.safe_load((ds / "manifest.yaml").read_text())
    assert sorted(manifest["samples"]) == ["s-c00000", "s-c00003"]
    assert sorted(manifest["excluded"]) == ["s-c00001", "s-c00002"]
    assert sorted(p.stem for p in (ds / "train" / "N2_8").iterdir()) == ["s-c00000", "s-c00003"]


def test_register_refuses_file_paths_outside_the_session(session: Path, tmp_path: Path, capsys):
    secret = tmp_path / "secret.jpg"
    shutil.copy(session / "raw" / "c00000" / "defocused.jpg", secret)
    meta_path = session / "raw" / "c00001" / "capture.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["defocused"]["file"] = str(secret)  # absolute
    meta_path.write_text(yaml.safe_dump(meta))
    meta_path = session / "raw" / "c00002" / "capture.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["all_in_focus"]["file"] = "../../../secret.jpg"  # climbs out
    meta_path.write_text(yaml.safe_dump(meta))
    # the journal's checksums are re-computed for the edited records, so only the path check can refuse them
    lines = []
    for line in (session / "captures.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["capture_id"] in ("c00001", "c00002") and e["status"] == "ok":
            e["sha256"]["capture.yaml"] = sha256_file(session / "raw" / e["capture_id"] / "capture.yaml")
        lines.append(json.dumps(e))
    (session / "captures.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["register", str(session), "--quiet"]) == 5
    out = capsys.readouterr().out
    assert "c00001" in out and "c00002" in out and out.count("outside") >= 2
    assert not (session / "registered" / "c00001").exists() and not (session / "registered" / "c00002").exists()
    assert (session / "registered" / "c00000" / "frame.yaml").is_file()


def test_f2_8_and_f8_of_different_sizes_fail_that_capture_only(session: Path, capsys):
    f = session / "raw" / "c00001" / "all_in_focus.jpg"
    img = cv2.imread(str(f))
    cv2.imwrite(str(f), cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2)))
    # the journal's checksum would catch the rewrite first: drop it so the size check is what fails
    lines = [json.loads(x) for x in (session / "captures.jsonl").read_text().splitlines()]
    for e in lines:
        if e["capture_id"] == "c00001" and e["status"] == "ok":
            e["sha256"].pop("all_in_focus.jpg")
    (session / "captures.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert main(["register", str(session), "--quiet"]) == 5
    out, err = capsys.readouterr()
    assert "c00001" in out and "both apertures must be shot at the same size" in out
    assert len(err_lines(err)) == 1 and "1 of 4" in err
    assert all((session / "registered" / c / "frame.yaml").is_file() for c in ("c00000", "c00002", "c00003"))


# ------------------------------------------------------------------------ predict / live / replay
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        cv2.imwrite(str(d / name), (rng.random((64, 96, 3)) * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
    truncate_half(d / "b.jpg")
    zero_middle(d / "c.jpg", 2048)
    return d


@pytest.fixture(scope="module")
def lite_model(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    import inference.model as M

    torch.manual_seed(0)
    return M.export_fp16(M.build_model("d3net-lite", depth_scale_m=2.0).eval(),
                         tmp_path_factory.mktemp("m") / "lite.pt", {"input": "N2_8", "image_size_px": [96, 64]})


@pytest.mark.parametrize("name,needle", [("b.jpg", "truncated JPEG"), ("c.jpg", "corrupt JPEG data")])
def test_predict_refuses_a_truncated_or_corrupt_single_image(images, lite_model, tmp_path, capsys, name, needle):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(lite_model), "--input", str(images / name), "--out", str(out)]) == 2
    line = err_lines(capsys.readouterr().err)
    assert len(line) == 1 and needle in line[0] and name in line[0]
    assert not out.exists()


def test_predict_folder_skips_bad_images_and_reports_them(images, lite_model, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(lite_model), "--input", str(images), "--out", str(out)]) == 5
    o, err = capsys.readouterr()
    assert "skipped" in o and "b.jpg: truncated JPEG" in o and "c.jpg: corrupt JPEG data" in o
    assert "wrote 2 depth map(s)" in o and "skipped 2 unreadable input(s)" in o
    assert len(err_lines(err)) == 1 and "2 of 4 input(s) skipped" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "camera_intrinsic.json", "d.png"]


def test_live_folder_source_skips_bad_images(images, tmp_path, capsys):
    pytest.importorskip("torch")
    save = tmp_path / "live"
    rc = main(["live", "--config", "simulated", "--source", f"folder:{images}", "--model", "d3net-lite",
               "--backend", "torch", "--save", str(save), "--no-panel", "--threads", "1"])
    o, err = capsys.readouterr()
    assert rc == 5, err
    assert "b.jpg: truncated JPEG" in o and "c.jpg: corrupt JPEG data" in o
    assert "2 frame(s) captured" in o
    assert len(err_lines(err)) == 1 and "2 image(s)" in err


def test_replay_skips_damaged_captures(session: Path, tmp_path: Path, capsys):
    pytest.importorskip("torch")
    truncate_half(session / "raw" / "c00002" / "defocused.jpg")
    out = tmp_path / "rep"
    rc = main(["replay", str(session), "--through", "infer", "--model", "d3net-lite", "--backend", "torch",
               "--out", str(out), "--threads", "1"])
    o, err = capsys.readouterr()
    assert rc == 5, err
    assert "skipped c00002: damaged (defocused.jpg: checksum mismatch" in o
    assert "replayed 3 frame(s)" in o
    assert len(err_lines(err)) == 1
