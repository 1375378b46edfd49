"""What field users expect from a depth rig: point clouds (PLY, Open3D intrinsics), RAW input
(a real DNG written by PiDNG from a simulated Bayer mosaic, read back by rawpy/LibRaw), colour
PNGs with a fixed range and a colour bar, EXIF optics warnings, and the notebook API in README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from rig.core.errors import RigError
from rig.core.records import Intrinsics


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (N, 3) and colours (N, 3) through a real PLY reader (plyfile)."""
    plyfile = pytest.importorskip("plyfile")
    v = plyfile.PlyData.read(str(path))["vertex"]
    pts = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    names = v.data.dtype.names
    cols = np.stack([v["red"], v["green"], v["blue"]], axis=1) if "red" in names else None
    return pts, cols


def assert_reprojects(pts: np.ndarray, depth_m: np.ndarray, k: Intrinsics) -> None:
    """Every point projects through ``k`` onto a pixel whose depth is the point's z."""
    u = pts[:, 0] * k.fx / pts[:, 2] + k.cx
    v = pts[:, 1] * k.fy / pts[:, 2] + k.cy
    ui, vi = np.rint(u).astype(int), np.rint(v).astype(int)
    assert np.abs(u - ui).max() < 1e-3 and np.abs(v - vi).max() < 1e-3
    assert ui.min() >= 0 and vi.min() >= 0 and ui.max() < depth_m.shape[1] and vi.max() < depth_m.shape[0]
    np.testing.assert_allclose(depth_m[vi, ui], pts[:, 2], rtol=1e-5)
    assert len(pts) == int(((depth_m > 0) & np.isfinite(depth_m)).sum())


def k_from_o3d_json(path: Path) -> Intrinsics:
    d = json.loads(Path(path).read_text())
    m = np.asarray(d["intrinsic_matrix"], dtype=np.float64).reshape(3, 3, order="F")  # column-major
    assert m[2, 2] == 1.0 and m[0, 1] == 0.0 and m[1, 0] == 0.0
    return Intrinsics(width=d["width"], height=d["height"], fx=m[0, 0], fy=m[1, 1], cx=m[0, 2], cy=m[1, 2])


# --- point clouds -----------------------------------------------------------------------------------


def test_point_cloud_loads_with_plyfile_and_reprojects_onto_the_depth_map(tmp_path: Path) -> None:
    from rig.core.pointcloud import write_o3d_intrinsics, write_point_cloud

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 6.0, (40, 60)).astype(np.float32)
    depth[5:9, 10:20] = 0.0  # unknown pixels are left out
    depth[0, 0] = np.nan
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    k = Intrinsics(width=60, height=40, fx=70.0, fy=72.0, cx=29.5, cy=19.0)
    write_point_cloud(tmp_path / "c.ply", depth, rgb, k)
    write_o3d_intrinsics(tmp_path / "camera_intrinsic.json", k)
    pts, cols = read_ply(tmp_path / "c.ply")
    k2 = k_from_o3d_json(tmp_path / "camera_intrinsic.json")
    assert (k2.fx, k2.fy, k2.cx, k2.cy, k2.width, k2.height) == (70.0, 72.0, 29.5, 19.0, 60, 40)
    assert_reprojects(pts, np.nan_to_num(depth), k2)
    ok = (depth > 0) & np.isfinite(depth)
    np.testing.assert_array_equal(cols, rgb[ok])
    with pytest.raises(RigError, match="expected a \\(H, W\\) depth map"):
        write_point_cloud(tmp_path / "bad.ply", np.zeros((2, 2, 2)), None, k)


# --- RAW input --------------------------------------------------------------------------------------


def write_dng(path: Path, rgb01: np.ndarray, f_number: float | None = None, focal_mm: float | None = None) -> Path:
    """A real DNG (PiDNG) of ``rgb01`` (H, W, 3 in [0, 1]) sampled through an RGGB Bayer mosaic, 12 bit."""
    pytest.importorskip("pidng")
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation,
                            PreviewColorSpace)

    h, w = rgb01.shape[:2]
    white = (1 << 12) - 1
    mosaic = np.empty((h, w), np.uint16)
    for (dy, dx), ch in (((0, 0), 0), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2)):
        mosaic[dy::2, dx::2] = np.rint(rgb01[dy::2, dx::2, ch] * white)
    t = DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, Orientation.Horizontal),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 12), (Tag.CFARepeatPatternDim, [2, 2]),
                       (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, white),
                       (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
                       (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
                       (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.BaselineExposure, [[0, 100]]),
                       (Tag.Make, "Nikon"), (Tag.Model, "D200"), (Tag.DNGVersion, DNGVersion.V1_4),
                       (Tag.DNGBackwardVersion, DNGVersion.V1_2), (Tag.PreviewColorSpace, PreviewColorSpace.sRGB)):
        t.set(tag, value)
    if f_number is not None:
        t.set(Tag.FNumber, [[int(round(f_number * 10)), 10]])
    if focal_mm is not None:
        t.set(Tag.FocalLength, [[int(round(focal_mm * 10)), 10]])
    conv = RAW2DNG()
    conv.options(t, path="", compress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    conv.convert(mosaic, filename=str(path.with_suffix("")))
    return path


def two_colour_scene(h: int = 64, w: int = 96) -> np.ndarray:
    img = np.zeros((h, w, 3))
    img[:, : w // 2] = (0.8, 0.2, 0.1)  # red left
    img[:, w // 2:] = (0.1, 0.3, 0.9)  # blue right
    return img


def test_a_real_dng_from_a_bayer_mosaic_is_read_through_rawpy(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    from rig.core.imageio import read_rgb

    dng = write_dng(tmp_path / "shot.dng", two_colour_scene())
    rgb = read_rgb(dng)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8
    left, right = rgb[8:-8, 8:40].reshape(-1, 3).mean(0), rgb[8:-8, 56:-8].reshape(-1, 3).mean(0)
    assert left[0] > left[2] + 50 and right[2] > right[0] + 50  # demosaiced colours, not a grey mosaic
    (tmp_path / "bad.nef").write_bytes(b"\x00" * 512)
    with pytest.raises(RigError, match="not a decodable RAW image"):
        read_rgb(tmp_path / "bad.nef")


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from inference import model as M

    torch.manual_seed(0)
    model = M.build_model("d3net-lite", depth_scale_m=2.0)
    with torch.no_grad():
        model.head.conv.weight.normal_(0, 0.05)
    return M.export_fp16(model.eval(), tmp_path_factory.mktemp("m") / "lite.pt",
                         {"input": "N2_8", "image_size_px": [96, 64]})


def _rig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_predict_raw_input_ply_intrinsics_colour_bar_and_exif_warning(tmp_path: Path, lite_file: Path) -> None:
    pytest.importorskip("rawpy")
    from rig.core.imageio import read_depth_m

    inp = tmp_path / "in"
    write_dng(inp / "f8.dng", two_colour_scene(), f_number=8.0, focal_mm=35.0)  # f/8 shot, f/2.8 model
    write_dng(inp / "ok.dng", two_colour_scene(), f_number=2.8, focal_mm=35.0)
    out = tmp_path / ("a_long_output_folder_name_" * 3) / "out"  # > 80 columns: piped lines are not wrapped
    r = _rig("predict", "--model", str(lite_file), "--input", str(inp), "--out", str(out), "--ply", "--colorize",
             "--range", "0.5", "4", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert f"wrote 2 depth map(s) to {out}\n" in r.stdout and len(str(out)) > 80
    warn = [line for line in r.stdout.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "f8.dng" in warn[0] and "f/8" in warn[0] and "f/2.8" in warn[0], r.stdout
    depth = read_depth_m(out / "ok.png")
    k = k_from_o3d_json(out / "camera_intrinsic.json")
    assert (k.width, k.height) == (96, 64)
    # the simulated DSLR (the D200's field of view): fx = 35 mm / 23.6 mm sensor width * image width
    assert k.fx == pytest.approx(35.0 / (1290 * 18.3e-3) * 96, rel=1e-6)
    pts, cols = read_ply(out / "ok.ply")
    # the PLY holds float metres, the PNG millimetres: reproject, then compare to 0.5 mm
    u = np.rint(pts[:, 0] * k.fx / pts[:, 2] + k.cx).astype(int)
    v = np.rint(pts[:, 1] * k.fy / pts[:, 2] + k.cy).astype(int)
    assert np.abs(depth[v, u] - pts[:, 2]).max() <= 0.0006 and len(pts) == depth.size
    assert cols[:, 0].reshape(64, 96)[:, :40].mean() > cols[:, 2].reshape(64, 96)[:, :40].mean()
    color = cv2.cvtColor(cv2.imread(str(out / "ok_color.png")), cv2.COLOR_BGR2RGB)
    assert color.shape[0] == 64 and color.shape[1] > 96  # the colour bar sits right of the depth
    bad = _rig("predict", "--model", str(lite_file), "--input", str(inp), "--out", str(out), "--range", "4", "1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--range" in bad.stderr


def test_colour_png_uses_a_fixed_range_with_a_bar_in_metres() -> None:
    import matplotlib

    from inference.predict import colorize_with_bar

    near = np.full((60, 80), 1.0)
    far = near.copy()
    far[:, 40:] = 5.0  # another picture: a 1 m pixel keeps its colour (no per-image stretch)
    a, b = colorize_with_bar(near, 0.5, 6.0), colorize_with_bar(far, 0.5, 6.0)
    assert a.shape == b.shape and a.shape[1] > 80
    np.testing.assert_array_equal(a[:, :40], b[:, :40])
    expect = (np.asarray(matplotlib.colormaps["viridis"]((1.0 - 0.5) / 5.5)[:3]) * 255).astype(int)
    assert np.abs(a[30, 10].astype(int) - expect).max() <= 1
    bar = a[:, 80:]
    assert (bar.std(axis=2) > 10).any()  # coloured strip
    assert (bar == 0).all(axis=2).any()  # black tick labels


# --- notebook API -----------------------------------------------------------------------------------


def test_readme_notebook_snippet_runs() -> None:
    pytest.importorskip("torch")
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    snippet = next(b for b in blocks if "from inference import DepthModel" in b)
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    shape, mean_d, mean_s = r.stdout.split(")")[0] + ")", *r.stdout.split(")")[1].split()
    assert shape == "(864, 1290" + ")" and 0.1 < float(mean_d) < 20 and float(mean_s) > 0


def test_depth_model_resizes_and_accepts_paths_and_floats(tmp_path: Path, lite_file: Path) -> None:
    from inference import DepthModel
    from inference.predict import predict_image, resize_for_model
    from rig.core.imageio import write_image

    m = DepthModel.load(lite_file)
    rgb = np.random.default_rng(1).integers(0, 255, (128, 192, 3), dtype=np.uint8)
    d, s = m.predict(rgb)
    assert d.shape == (128, 192) and d.dtype == np.float32 and s is None
    small, _ = m.predict(rgb, full_size=False)
    ref = predict_image(m.net, resize_for_model(rgb, (96, 64)))
    np.testing.assert_allclose(small, ref.depth_m, atol=1e-4)
    write_image(tmp_path / "x.png", rgb)
    np.testing.assert_allclose(m.predict(tmp_path / "x.png")[0], d, atol=1e-4)
    np.testing.assert_allclose(m.predict(rgb / 255.0)[0], d, atol=1e-4)
    d8, s8 = m.predict(rgb, mc_samples=3)
    assert s8 is not None and s8.shape == d8.shape == (128, 192)
    with pytest.raises(RigError, match="expected an RGB image"):
        m.predict(np.zeros((4, 4)))


def test_raw_files_feed_live_folders_and_compare_pairs(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    from inference.compare import list_shot_files, read_shot
    from inference.live import read_frame_file
    from rig.core.imageio import write_image

    dng = write_dng(tmp_path / "N2_8" / "DSC_0001.dng", two_colour_scene(), f_number=2.8, focal_mm=35.0)
    write_dng(tmp_path / "N8" / "DSC_0002.dng", two_colour_scene(), f_number=8.0)
    write_image(tmp_path / "N8" / "DSC_0002.jpg", np.zeros((64, 96, 3), np.uint8))  # RAW+JPEG: the JPEG is used
    assert [p.name for p in list_shot_files(tmp_path)] == ["DSC_0001.dng", "DSC_0002.jpg"]
    shot = read_shot(dng)
    assert shot.f_number == pytest.approx(2.8) and shot.focal_mm == pytest.approx(35.0)
    frame = read_frame_file(dng, dng.name)  # `rig live --source folder:` reads each file this way
    assert frame.rgb.shape == (64, 96, 3) and frame.rgb[:, :40, 0].mean() > frame.rgb[:, :40, 2].mean()
    assert frame.original == dng.read_bytes() and frame.original_suffix == ".dng"
