"""`rig synth` end to end on tiny folders, the procedural scene, the benchmark and the demo step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from rig.core import defocus
from rig.cli import main
from rig.core.config import load_rig_config
from rig.core.imageio import read_rgb, write_depth_mm, write_image
from rig.synth import MANIFEST, colourise_depth, procedural_scene

W, H = 64, 48


def _make_folder(root: Path, n: int = 3) -> tuple[Path, Path]:
    rgb_dir, depth_dir = root / "rgb", root / "depth"
    for i in range(n):
        rgb, depth = procedural_scene(W, H, seed=i, near_m=0.5, far_m=6.0)
        write_image(rgb_dir / f"scene{i}.png", rgb)
        write_depth_mm(depth_dir / f"scene{i}.png", depth)
    return rgb_dir, depth_dir


def _synth(rgb_dir: Path, depth_dir: Path, out: Path, *extra: str) -> int:
    return main(["synth", "--rgb-dir", str(rgb_dir), "--depth-dir", str(depth_dir), "--config", "simulated",
                 "--out", str(out), *extra])


def test_procedural_scene_is_deterministic_and_in_range():
    rgb, depth = procedural_scene(80, 60, seed=3, near_m=0.5, far_m=8.0)
    rgb2, depth2 = procedural_scene(80, 60, seed=3, near_m=0.5, far_m=8.0)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8 and depth.shape == (60, 80)
    assert np.array_equal(rgb, rgb2) and np.array_equal(depth, depth2)
    assert 0.5 <= depth.min() < 0.7 and depth.max() == pytest.approx(8.0)
    assert len(np.unique(np.round(depth, 2))) > 10  # planes and ramps
    assert not np.array_equal(procedural_scene(80, 60, seed=4)[0], rgb)
    col = colourise_depth(depth)
    assert col.shape == (60, 80, 3) and col.dtype == np.uint8


def test_synth_folder_end_to_end_and_resume(tmp_path, capsys):
    rgb_dir, depth_dir = _make_folder(tmp_path)
    out = tmp_path / "out"
    assert _synth(rgb_dir, depth_dir, out, "--workers", "2", "--focus", "2") == 0
    assert "3 rendered, 0 already done" in capsys.readouterr().out
    cfg = load_rig_config("simulated")
    lens = cfg.lens("defocused", focus_m=2.0)
    for i in range(3):
        got = read_rgb(out / f"scene{i}.png")
        rgb, depth = procedural_scene(W, H, seed=i, near_m=0.5, far_m=6.0)
        depth_mm = np.rint(depth * 1000) / 1000  # what the 16-bit PNG holds
        assert np.array_equal(got, defocus.render_defocus(rgb, depth_mm, lens))
        assert np.abs(got.astype(int) - rgb).mean() > 3  # defocused, not a copy
    man = yaml.safe_load((out / MANIFEST).read_text())
    assert man["status"] == "complete" and man["count"] == 3 and man["focus_m"] == 2.0
    assert man["psf"] == "gaussian" and man["rho"] == 0.3 and man["max_step_px"] == 0.5
    assert man["k_cam_px"] == pytest.approx(6.08, abs=0.01) and man["downsample"] == 2.0
    for key in ("focal_mm", "f_number", "pixel_um", "source"):
        assert key in man
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temp files

    # resume: everything is skipped; a truncated output is rendered again, alone
    assert _synth(rgb_dir, depth_dir, out, "--workers", "1", "--focus", "2") == 0
    assert "0 rendered, 3 already done" in capsys.readouterr().out
    (out / "scene1.png").write_bytes(b"\x89PNG broken")
    before = (out / "scene0.png").stat().st_mtime_ns
    assert _synth(rgb_dir, depth_dir, out, "--workers", "1", "--focus", "2") == 0
    assert "1 rendered, 2 already done" in capsys.readouterr().out
    assert cv2.imread(str(out / "scene1.png")) is not None
    assert (out / "scene0.png").stat().st_mtime_ns == before

    # other camera settings into the same folder are refused
    assert _synth(rgb_dir, depth_dir, out, "--focus", "4") == 2
    assert "focus_m" in capsys.readouterr().err


def test_synth_bad_depth_fails_one_line_and_keeps_the_rest(tmp_path, capsys):
    rgb_dir, depth_dir = _make_folder(tmp_path)
    cv2.imwrite(str(depth_dir / "scene1.png"), np.zeros((H, W), np.uint8))  # 8-bit: not a depth map
    out = tmp_path / "out"
    assert _synth(rgb_dir, depth_dir, out, "--workers", "1") == 5  # the batch rule: some items failed
    err = capsys.readouterr().err
    assert "1 of 3 images failed" in err and "scene1.png" in err and "Traceback" not in err
    assert (out / "scene0.png").is_file() and (out / "scene2.png").is_file()
    assert not (out / "scene1.png").exists()
    assert yaml.safe_load((out / MANIFEST).read_text())["status"] == "incomplete"


def test_synth_where_every_image_fails_leaves_nothing_behind(tmp_path, capsys):
    rgb_dir, depth_dir = _make_folder(tmp_path)
    for f in depth_dir.iterdir():
        cv2.imwrite(str(f), np.zeros((H, W), np.uint8))  # 8-bit: not depth maps
    out = tmp_path / "out"
    assert _synth(rgb_dir, depth_dir, out, "--workers", "1") == 5
    assert "3 of 3 images failed" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv_tail,needle", [
    (["--rgb-dir", "{tmp}/nope", "--depth-dir", "{tmp}/nope2"], "no such folder"),
    (["--rgb-dir", "{tmp}/rgb", "--depth-dir", "{tmp}/empty"], "no RGB/depth pairs"),
    (["--rgb-dir", "{tmp}/rgb"], "needs --depth-dir"),
    (["--nyu", "{tmp}/missing.mat"], "no such file"),
    (["--rgb-dir", "{tmp}/rgb", "--depth-dir", "{tmp}/depth", "--focus", "0.01"], "--focus"),
])
def test_synth_bad_input_exits_2_with_one_line(tmp_path, argv_tail, needle):
    _make_folder(tmp_path, n=1)
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv_tail]
    r = subprocess.run([sys.executable, "-m", "rig.cli", "synth", "--config", "simulated", "--out",
                        str(tmp_path / "out"), *argv], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written before the input is checked


def test_synth_nyu_mat(tmp_path, capsys):
    """A tiny NYUv2-layout .mat (HDF5, MATLAB's transposed arrays) through rig.core.datasets.load_nyu."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    n = 2
    images = (rng.random((n, 3, 640, 480)) * 255).astype(np.uint8)  # (N, 3, W, H) as h5py sees it
    depths = np.empty((n, 640, 480), np.float32)
    depths[:] = np.linspace(0.7, 5.0, 640, dtype=np.float32)[None, :, None]
    mat = tmp_path / "nyu.mat"
    with h5py.File(mat, "w") as f:
        f["images"] = images
        f["depths"] = depths
    out = tmp_path / "nyu_out"
    assert main(["synth", "--nyu", str(mat), "--config", "nyuv2_synthetic", "--out", str(out), "--workers", "1",
                 "--limit", "1"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["0001.png"]
    assert read_rgb(out / "0001.png").shape == (427, 561, 3)  # paper 1's crop
    man = yaml.safe_load((out / MANIFEST).read_text())
    assert man["source"].startswith("nyu") and man["focal_mm"] == 15.0 and man["count"] == 1


def test_bench_synth_quick(tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "synth", "--quick", "--json", str(js)]) == 0
    fig = json.loads(js.read_text())["synth"]
    assert fig["input"] == "160x108" and fig["layers"] > 10 and fig["speedup"] > 0
    for psf in ("gaussian", "disk"):
        for impl in ("straightforward", "direct_shared_prep"):
            assert fig[psf][impl]["max_abs_diff"] < 1e-5


def test_demo_synth_step(tmp_path):
    from rig.demo import DemoContext
    from rig.demo import synth_step

    ctx = DemoContext(out_dir=tmp_path, config=load_rig_config("simulated"), scenes=1, quick=True)
    lines = synth_step(ctx)
    names = {p.name for p in (tmp_path / "synth").iterdir()}
    assert {"aif.png", "depth.png", "depth_mm.png", "defocus_focus2m.png", "defocus_focus8m.png"} <= names
    assert any("focus 2 m" in ln for ln in lines) and any("focus 8 m" in ln for ln in lines)
    a2, a8 = (read_rgb(tmp_path / "synth" / f"defocus_focus{f}m.png") for f in (2, 8))
    assert np.abs(a2.astype(int) - a8).mean() > 2  # the focus changed what is sharp
