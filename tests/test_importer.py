"""registration.importer (`rig import-dfd`): paper 1's release in both layouts -> the dataset layout."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml

from rig.cli.registration import cmd_import_dfd
from rig.core.dataset import list_samples, read_manifest, read_sample
from rig.core.errors import RigError
from rig.core.imageio import read_depth_m, write_depth_mm, write_image
from tests.conftest import shared_subdir

W, H = 645, 432
RGB_T = ["16:38:31.689710", "16:39:15.694566", "16:39:47.099665", "16:40:20.614968"]
DEPTH_T = ["16:38:31.655986", "16:39:15.627710", "16:39:47.032529", "16:40:20.448551"]


def _args(src: Path, out: Path, **kw) -> argparse.Namespace:
    return argparse.Namespace(src=str(src), out=str(out), tolerance_s=kw.get("tolerance_s", 0.5),
                              split=kw.get("split"))


def _scene(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    aif = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    defocused = (aif // 2 + 20).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    depth_m = (0.8 + 0.004 * xx + 0.002 * yy + 0.1 * i).astype(np.float32)
    return defocused, aif, depth_m


def _write_triplets(n2_dir: Path, n8_dir: Path, depth_dir: Path, rgb_t: list[str], depth_t: list[str]) -> dict:
    """Scenes as the release stores them: JPEGs named by the RGB time, 16-bit PNGs by the depth time."""
    truth = {}
    for i, t in enumerate(rgb_t):
        d, a, _ = _scene(i)
        write_image(n2_dir / f"2018-04-26T{t}.JPG", d)
        write_image(n8_dir / f"2018-04-26T{t}.JPG", a)
    for t in depth_t:  # the depth map of the scene shot in the same second
        depth = _scene(next(i for i, r in enumerate(RGB_T) if r[:8] == t[:8]))[2]
        write_depth_mm(depth_dir / f"2018-04-26T{t}.png", depth)
        truth[t[:8]] = depth
    return truth


def test_import_split_folder_layout_with_unmatched_files(tmp_path: Path, capsys):
    src = tmp_path / "release" / "train"
    # scene 2 has no depth map; a stray depth map 40 s after the last shot has no RGB
    truth = _write_triplets(src / "N2_8", src / "N8", src / "depth", RGB_T, DEPTH_T[:2] + DEPTH_T[3:])
    write_depth_mm(src / "depth" / "2018-04-26T16:41:00.000000.png", np.ones((H, W), np.float32))
    out = tmp_path / "dfd"
    assert cmd_import_dfd(_args(src, out)) == 0
    printed = capsys.readouterr().out
    assert "unmatched: N2_8/2018-04-26T16:39:47.099665.JPG" in printed
    assert "unmatched: depth/2018-04-26T16:41:00.000000.png" in printed

    ids = list_samples(out, "train")
    assert ids == [f"2018-04-26T{t}" for t in (RGB_T[0], RGB_T[1], RGB_T[3])]
    for sid in ids:
        s = read_sample(out, "train", sid)
        i = RGB_T.index(sid.split("T")[1])
        d, a, _ = _scene(i)
        assert s.defocused_rgb.shape == (H, W, 3) and s.all_in_focus_rgb.shape == (H, W, 3)
        # JPEG round trip: close to what was written, and N2_8/N8 not swapped
        assert np.abs(s.defocused_rgb.astype(int) - d).mean() < np.abs(s.defocused_rgb.astype(int) - a).mean()
        np.testing.assert_allclose(s.depth_m, truth[sid.split("T")[1][:8]], atol=5e-4)
        assert set(np.unique(s.valid)) == {255}

    m = read_manifest(out)
    assert m["apertures"] == {"defocused": 2.8, "all_in_focus": 8.0}
    assert m["output_size_px"] == [645, 432] and m["splits"]["train"]["count"] == 3
    assert m["k_cam_px"]["defocused"] == pytest.approx(m["k_cam_px"]["all_in_focus"] * 8.0 / 2.8)
    assert m["depth"]["hole_filled"] is True
    prov = m["provenance"]["train"]
    assert prov["tolerance_s"] == 0.5 and len(prov["unmatched"]) == 2 and prov["max_gap_s"] <= 0.5
    assert all(p["gap_s"] <= 0.5 for p in prov["pairs"])

    # resumable: a second run skips everything, a deleted sample is written again
    (out / "train" / "depth" / f"{ids[1]}.png").unlink()
    assert cmd_import_dfd(_args(src, out)) == 0
    assert "1 imported, 2 already there" in capsys.readouterr().out.replace("\n", " ")
    assert list_samples(out, "train") == ids


def test_import_release_layout_and_split_option(tmp_path: Path):
    root = tmp_path / "dfd_indoor"
    for split, n in (("train", 3), ("test", 2)):
        n2, n8 = root / "dfd_dataset_indoor_N2_8", root / "dfd_dataset_indoor_N8"
        _write_triplets(n2 / "rgb" / split, n8 / "rgb" / split, n8 / "depth" / split, RGB_T[:n], DEPTH_T[:n])
    out = tmp_path / "dfd"
    assert cmd_import_dfd(_args(root, out, split="test")) == 0
    assert len(list_samples(out, "test")) == 2 and list_samples(out, "train") == []
    assert cmd_import_dfd(_args(root, out)) == 0  # no --split: every split of the release
    assert len(list_samples(out, "train")) == 3 and len(list_samples(out, "test")) == 2
    m = read_manifest(out)
    assert {k: v["count"] for k, v in m["splits"].items()} == {"train": 3, "test": 2}
    assert m["provenance"]["test"]["folders"]["depth"].endswith("dfd_dataset_indoor_N8/depth/test")
    # a split folder renamed on output
    out2 = tmp_path / "dfd2"
    assert cmd_import_dfd(_args(root / "dfd_dataset_indoor_N2_8" / "rgb" / "train", out2)) == 0
    assert len(list_samples(out2, "train")) == 3


def test_import_errors_are_one_line(tmp_path: Path):
    with pytest.raises(RigError, match="no such folder"):
        cmd_import_dfd(_args(tmp_path / "missing", tmp_path / "o"))
    src = tmp_path / "train"
    _write_triplets(src / "N2_8", src / "N8", src / "depth", RGB_T[:2], [])
    write_depth_mm(src / "depth" / "2018-04-26T18:00:00.000000.png", np.ones((H, W), np.float32))
    with pytest.raises(RigError, match="nothing imported") as e:
        cmd_import_dfd(_args(src, tmp_path / "o"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o" / "manifest.yaml").exists()
    with pytest.raises(RigError, match="--split"):
        cmd_import_dfd(_args(src, tmp_path / "o", split="bogus"))
    odd = tmp_path / "mydata"
    _write_triplets(odd / "N2_8", odd / "N8", odd / "depth", RGB_T[:1], DEPTH_T[:1])
    with pytest.raises(RigError, match="pass --split"):
        cmd_import_dfd(_args(odd, tmp_path / "o"))
    assert cmd_import_dfd(_args(odd, tmp_path / "o", split="val")) == 0


def test_import_cli_registered(tmp_path: Path):
    """`rig import-dfd` goes through the CLI (registered by registration/cli.py)."""
    from rig.cli import build_parser, main

    try:
        build_parser().parse_args(["import-dfd", "x", "--out", "y"])
    except SystemExit:
        pytest.skip("rig import-dfd is not registered in this build (registration/cli.py)")
    assert main(["import-dfd", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_import_real_train_split(tmp_path: Path):
    train = shared_subdir("dfd_indoor/train")
    out = tmp_path / "dfd"
    assert cmd_import_dfd(_args(train, out)) == 0
    ids = list_samples(out, "train")
    assert len(ids) == 81
    m = yaml.safe_load((out / "manifest.yaml").read_text())
    assert m["provenance"]["train"]["unmatched"] == [] and m["provenance"]["train"]["max_gap_s"] < 0.35
    pair = m["provenance"]["train"]["pairs"][40]
    src_depth = read_depth_m(train / "depth" / pair["depth"])
    np.testing.assert_array_equal(read_sample(out, "train", pair["id"]).depth_m, src_depth)
