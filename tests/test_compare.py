"""``rig compare``: EXIF pairing of outdoor DSLR shots and the side-by-side HTML report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import compare
from rig.core.config import load_rig_config
from rig.core.errors import RigError

torch.set_num_threads(1)

W, H = 144, 96  # output size of the test rig; shots are written at twice that


def write_shot(path: Path, rgb: np.ndarray, when: str | None, subsec: str | None, f_number: tuple[int, int] | None,
               exposure: tuple[int, int] = (1, 100)) -> Path:
    """A JPEG with camera-style EXIF (rationals), written by Pillow."""
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    ex = Image.Exif()
    ex[0x0110] = "TEST D200"
    if when is not None or f_number is not None:
        ifd = ex.get_ifd(0x8769)
        if when is not None:
            ifd[0x9003] = when
        if subsec is not None:
            ifd[0x9291] = subsec
        if f_number is not None:
            ifd[0x829D] = IFDRational(*f_number)
        ifd[0x829A] = IFDRational(*exposure)
        ifd[0x920A] = IFDRational(35, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, exif=ex, quality=92)
    return path


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """Three scenes named and timed like the published outdoor set (DSC_0008 goes with DSC_0007), plus a
    shot without EXIF."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    base = dt.datetime(2018, 4, 27, 17, 37, 0)
    shots = [("N2_8/DSC_0001.JPG", 0.41, (14, 5)), ("N8/DSC_0002.JPG", 16.49, (8, 1)),
             ("N2_8/DSC_0005.JPG", 49.82, (14, 5)), ("N8/DSC_0006.JPG", 62.16, (8, 1)),
             ("N2_8/DSC_0008.JPG", 81.16, (14, 5)), ("N8/DSC_0007.JPG", 71.0, (8, 1))]
    for name, t, fn in shots:
        when = base + dt.timedelta(seconds=t)
        rgb = np.kron(rng.integers(20, 235, (H // 8, W // 8, 3)), np.ones((16, 16, 1))).astype(np.uint8)
        write_shot(root / name, rgb, when.strftime("%Y:%m:%d %H:%M:%S"), f"{when.microsecond // 10000:02d}", fn)
    write_shot(root / "N8" / "DSC_0099.JPG", np.zeros((2 * H, 2 * W, 3), np.uint8), None, None, None)
    return root


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_rig_config("simulated", {"dslr.sensor_px": [2 * W, 2 * H], "output.size_px": [W, H]})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """Untrained d3net-lite files standing in for the shipped dfd-n2.8 / dfd-n8 models."""
    from inference.model import build_model, export_fp16

    root = tmp_path_factory.mktemp("models")
    out = []
    for name, scale in (("n2_8", 2.0), ("n8", 3.0)):
        torch.manual_seed(0)
        out.append(str(export_fp16(build_model("d3net-lite", depth_scale_m=scale), root / f"{name}.pt",
                                   {"arch": "d3net-lite", "model_kwargs": {}})))
    return out[0], out[1]


def test_exif_time_includes_subseconds():
    assert compare.exif_time("2018:04:27 17:37:00", "41") == dt.datetime(2018, 4, 27, 17, 37, 0, 410000)
    assert compare.exif_time("2018:04:27 17:38:11", "00") == dt.datetime(2018, 4, 27, 17, 38, 11)
    assert compare.exif_time("2018:04:27 17:38:11", None) == dt.datetime(2018, 4, 27, 17, 38, 11)
    assert compare.exif_time("garbage", "1") is None and compare.exif_time(None, None) is None


def test_read_shot_gets_time_and_aperture(pairs_dir):
    s = compare.read_shot(pairs_dir / "N2_8" / "DSC_0005.JPG")
    assert s.f_number == pytest.approx(2.8) and s.exposure_s == pytest.approx(0.01)
    assert s.time == dt.datetime(2018, 4, 27, 17, 37, 49, 820000)
    empty = compare.read_shot(pairs_dir / "N8" / "DSC_0099.JPG")
    assert empty.time is None and empty.f_number is None


def test_pairs_follow_exif_time_not_file_order(pairs_dir):
    shots = [compare.read_shot(p) for p in compare.list_shot_files(pairs_dir)]
    pairs, unpaired = compare.pair_shots(shots, 2.8, 8.0, tolerance_s=60)
    assert [(p.defocused.path.name, p.all_in_focus.path.name) for p in pairs] == [
        ("DSC_0001.JPG", "DSC_0002.JPG"), ("DSC_0005.JPG", "DSC_0006.JPG"), ("DSC_0008.JPG", "DSC_0007.JPG")]
    assert [round(p.gap_s, 2) for p in pairs] == [16.08, 12.34, 10.16]
    assert unpaired == ["DSC_0099.JPG: no EXIF DateTimeOriginal and FNumber"]
    # a tight tolerance leaves the shots unpaired, each with a reason
    pairs, unpaired = compare.pair_shots(shots, 2.8, 8.0, tolerance_s=11)
    assert [p.name for p in pairs] == ["DSC_0008_DSC_0007"]
    assert sum("no f/8 shot within 11 s" in u for u in unpaired) == 2


def test_downsample_to_refuses_rotated_or_small_images():
    assert compare.downsample_to(np.zeros((192, 288, 3), np.uint8), (W, H)).shape == (H, W, 3)
    with pytest.raises(RigError, match="aspect"):
        compare.downsample_to(np.zeros((288, 192, 3), np.uint8), (W, H))
    with pytest.raises(RigError, match="smaller"):
        compare.downsample_to(np.zeros((50, 75, 3), np.uint8), (W, H))


def test_compare_writes_a_side_by_side_page(tmp_path, pairs_dir, tiny_cfg, models):
    from rig.core.imageio import read_depth_m, read_rgb

    lines: list[str] = []
    r = compare.compare_pairs(pairs_dir, tmp_path / "out", models[0], models[1], tiny_cfg,
                              baseline_params=None, printer=lines.append)
    assert len(r["scenes"]) == 3 and len(lines) == 3
    page = (tmp_path / "out" / "index.html").read_text()
    for sc in r["scenes"]:
        for key in ("in_n2_8", "in_n8", "depth_n2_8", "depth_n8", "zhuo_blur"):
            f = tmp_path / "out" / sc["files"][key]
            assert f.is_file() and f'src="{sc["files"][key]}"' in page
            assert read_rgb(f).shape == (H, W, 3)
        d = read_depth_m(tmp_path / "out" / "depth" / f"{sc['name']}_n8.png")
        assert d.shape == (H, W) and np.all(d > 0)
        assert sc["stats"]["median_n8_m"] == pytest.approx(3.0, rel=0.2)  # the untrained net's constant
    assert "DSC_0008.JPG" in page and "DSC_0007.JPG" in page and "DSC_0099.JPG" in page  # unpaired listed


def test_cli_compare_and_its_errors(tmp_path, pairs_dir, tiny_cfg, models, capsys):
    from rig.cli import main

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(tiny_cfg.to_yaml())
    rc = main(["compare", "--pairs", str(pairs_dir), "--out", str(tmp_path / "o"), "--model-n2-8", models[0],
               "--model-n8", models[1], "--config", str(cfg_path), "--no-baseline", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "o" / "index.html").is_file()
    assert "(not run)" in (tmp_path / "o" / "index.html").read_text()
    assert "not paired: DSC_0099.JPG" in capsys.readouterr().out
    # no shipped model by that name / an empty folder: one line, exit 2
    assert main(["compare", "--pairs", str(pairs_dir), "--out", str(tmp_path / "o2"), "--model-n2-8",
                 str(tmp_path / "missing.pt"), "--model-n8", models[1], "--config", str(cfg_path)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["compare", "--pairs", str(tmp_path / "empty"), "--out", str(tmp_path / "o3"),
                 "--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "missing.pt" in err[0] and "no images" in err[1]


@pytest.mark.realdata
def test_real_outdoor_pairs_are_paired_by_exif():
    from tests.conftest import shared_subdir

    root = shared_subdir("dfd_outdoor")
    shots = [compare.read_shot(p) for p in compare.list_shot_files(root)]
    pairs, unpaired = compare.pair_shots(shots, 2.8, 8.0)
    assert [(p.defocused.path.name, p.all_in_focus.path.name) for p in pairs] == [
        ("DSC_0001.JPG", "DSC_0002.JPG"), ("DSC_0005.JPG", "DSC_0006.JPG"), ("DSC_0008.JPG", "DSC_0007.JPG")]
    assert unpaired == []


@pytest.mark.slow
@pytest.mark.realdata
def test_compare_on_the_real_outdoor_pairs(tmp_path, models):
    """Full-resolution D200 pairs -> 645x432, both models (shipped ones when present) and the baseline."""
    from inference.model import shipped_models
    from rig.core.imageio import read_rgb
    from tests.conftest import shared_subdir

    root = shared_subdir("dfd_outdoor")
    have = set(shipped_models(include_camind=False))
    m_a = "dfd-n2.8" if "dfd-n2.8" in have else models[0]
    m_b = "dfd-n8" if "dfd-n8" in have else models[1]
    r = compare.compare_pairs(root, tmp_path, m_a, m_b, load_rig_config("nikon_d200_xtion"), printer=lambda *_: None)
    assert [s["name"] for s in r["scenes"]] == ["DSC_0001_DSC_0002", "DSC_0005_DSC_0006", "DSC_0008_DSC_0007"]
    for sc in r["scenes"]:
        assert read_rgb(tmp_path / sc["files"]["in_n2_8"]).shape == (432, 645, 3)
        assert 0 < sc["stats"]["median_blur_px"] < 7.3  # below the D200 rig's k_cam
