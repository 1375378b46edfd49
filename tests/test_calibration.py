"""Geometric calibration: boards, outlier views, stereo extrinsics, FileStorage files, the CLI."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from rig.bench.register import sim_rig_geometry
from registration.calibration import (BoardSpec, Detection, calibrate_camera, calibrate_stereo, detect_board,
                                      detect_pairs, geometry_from_calibration, load_calibration, save_calibration,
                                      write_report)
from rig.cli import main
from rig.core.config import load_rig_config
from rig.core.records import Intrinsics

from conftest import shared_subdir

# ------------------------------------------------------------------------------------------------
# a small board renderer (a test double for a camera looking at a printed board): the board's
# texture is warped by the exact homography at 4x supersampling and area-averaged (anti-aliased)

PPS = 160  # texture pixels per square


def _texture(board: BoardSpec) -> tuple[np.ndarray, float, float]:
    """(texture uint8, texture px per metre, texture coordinate of the board origin)."""
    import cv2

    if board.kind == "charuco":
        sq = PPS
        img = board.charuco_board().generateImage((board.cols * sq + 2 * sq, board.rows * sq + 2 * sq), marginSize=sq)
        ppm = sq / board.square_m
        return img, ppm, sq - 0.5  # ChArUco corners start one square in from the board's corner
    if board.kind == "circles":
        ppm = PPS / board.square_m
        obj = board.object_points()[:, :2]
        size = ((obj.max(axis=0) + 2 * board.square_m) * ppm).astype(int)
        img = np.full((size[1], size[0]), 235, np.uint8)
        for x, y in obj:
            c = (int(round(((x + board.square_m) * ppm - 0.5) * 16)), int(round(((y + board.square_m) * ppm - 0.5) * 16)))
            cv2.circle(img, c, int(0.35 * board.square_m * ppm * 16), 20, -1, lineType=cv2.LINE_AA, shift=4)
        return img, ppm, board.square_m * ppm - 0.5
    nx, ny = board.cols + 1, board.rows + 1
    yy, xx = np.mgrid[0:(ny + 2) * PPS, 0:(nx + 2) * PPS]
    sx, sy = xx // PPS - 1, yy // PPS - 1
    inside = (sx >= 0) & (sx < nx) & (sy >= 0) & (sy < ny)
    img = np.full(xx.shape, 235, np.uint8)
    img[inside & ((sx + sy) % 2 == 0)] = 20
    return img, PPS / board.square_m, 2 * PPS - 0.5  # first inner corner: 2 squares in


def render_board(board: BoardSpec, k: Intrinsics, pose: np.ndarray, rng: np.random.Generator, ss: int = 4) -> np.ndarray:
    """Grey image of the board at pose (4x4, X_cam = R·X_board + t) seen by an ideal pinhole ``k``."""
    import cv2

    tex, ppm, origin = _texture(board)
    ks = k.scaled(k.width * ss, k.height * ss)
    s = np.array([[ppm, 0, origin], [0, ppm, origin], [0, 0, 1]])  # board metres -> texture pixel
    h_img = ks.matrix() @ np.column_stack([pose[:3, 0], pose[:3, 1], pose[:3, 3]]) @ np.linalg.inv(s)
    big = cv2.warpPerspective(tex, h_img, (ks.width, ks.height), flags=cv2.INTER_LINEAR, borderValue=128)
    img = cv2.resize(big, (k.width, k.height), interpolation=cv2.INTER_AREA).astype(np.float32)
    img += rng.normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def board_poses(board: BoardSpec, n: int, seed: int, dist=(0.7, 1.4)) -> list[np.ndarray]:
    """Board poses in the DSLR frame: centred in view at 0.7-1.4 m, tilted up to ±30°."""
    from acquisition.sim_geometry import rotation_xyz_deg

    rng = np.random.default_rng(seed)
    centre_b = board.object_points().mean(axis=0)
    poses = []
    for _ in range(n):
        d = rng.uniform(*dist)
        r = rotation_xyz_deg(rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-15, 15))
        c = np.array([rng.uniform(-0.08, 0.08) * d, rng.uniform(-0.05, 0.05) * d, d])
        p = np.eye(4)
        p[:3, :3] = r
        p[:3, 3] = c - r @ centre_b
        poses.append(p)
    return poses


def _rot_err_deg(r: np.ndarray, r_true: np.ndarray) -> float:
    import cv2

    return float(np.degrees(np.linalg.norm(cv2.Rodrigues(r @ np.asarray(r_true).T)[0])))


@pytest.fixture(scope="module")
def sim_views():
    """Board views of the simulated rig's two cameras (DSLR at output size, IR 640x480)."""
    cfg = load_rig_config("simulated")
    dslr, ir, extr = sim_rig_geometry(cfg)
    board = BoardSpec("chessboard", 9, 6, 0.04)
    rng = np.random.default_rng(7)
    to_ir = np.linalg.inv(extr.matrix())
    pairs = []
    for i, pose in enumerate(board_poses(board, 12, seed=3)):
        pairs.append((detect_board(render_board(board, ir, to_ir @ pose, rng), board, f"ir{i:02d}"),
                      detect_board(render_board(board, dslr, pose, rng), board, f"dslr{i:02d}")))
    return board, pairs, dslr, ir, extr


# ------------------------------------------------------------------------------------------------


def test_simulated_rig_extrinsics_are_recovered(sim_views, tmp_path):
    import cv2

    board, pairs, dslr, ir, extr = sim_views
    assert sum(a is not None for a, _ in pairs) >= 10 and sum(b is not None for _, b in pairs) >= 10
    calib = calibrate_stereo(pairs, board, ("ir", "dslr"), flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    assert calib.rms_px < 0.2
    assert _rot_err_deg(calib.rotation, np.asarray(extr.rotation)) < 0.1
    assert np.linalg.norm(calib.translation_m - np.asarray(extr.translation_m)) < 1e-3
    assert calib.camera2.intrinsics.fx == pytest.approx(dslr.fx, rel=0.005)
    assert calib.camera1.intrinsics.fx == pytest.approx(ir.fx, rel=0.005)
    # the file round-trips, and the geometry comes back as depth -> DSLR
    path = save_calibration(calib, tmp_path / "geometry.yaml")
    back = load_calibration(path)
    assert np.allclose(back.rotation, calib.rotation) and np.allclose(back.translation_m, calib.translation_m)
    assert back.camera2.intrinsics == calib.camera2.intrinsics and back.rms_px == pytest.approx(calib.rms_px)
    assert back.camera1.per_view_px == pytest.approx(calib.camera1.per_view_px)
    assert back.views == calib.views and back.board == calib.board
    k_dslr, k_depth, e = geometry_from_calibration(back)
    assert (k_dslr.width, k_depth.width) == (dslr.width, ir.width)
    assert np.allclose(e.matrix(), calib.extrinsics.matrix())
    report = write_report(back, tmp_path / "report.png")
    assert report.stat().st_size > 10_000
    html = write_report(back, tmp_path / "report.html").read_text()
    assert "stereo RMS" in html and "<img src='data:image/png;base64," in html


def test_an_outlier_view_is_dropped_and_the_solution_survives(sim_views):
    import cv2

    board, pairs, dslr, ir, extr = sim_views
    bad_pairs = list(pairs)
    a, b = next((a, b) for a, b in bad_pairs if a is not None and b is not None)
    rng = np.random.default_rng(0)
    corrupt = Detection("dslr-bad", b.image_size, b.image_points + rng.normal(0, 2.5, b.image_points.shape).astype(np.float32),
                        b.ids)
    bad_pairs[bad_pairs.index((a, b))] = (a, corrupt)
    calib = calibrate_stereo(bad_pairs, board, ("ir", "dslr"), flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    assert "dslr-bad" in calib.camera2.dropped
    assert any("dslr-bad" in v for v in calib.dropped)
    assert _rot_err_deg(calib.rotation, np.asarray(extr.rotation)) < 0.1
    kept = calibrate_stereo(bad_pairs, board, ("ir", "dslr"), drop_outliers=False,
                            flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    assert kept.rms_px > 2 * calib.rms_px and not kept.dropped


@pytest.mark.parametrize("kind,pattern", [("charuco", (7, 5)), ("circles", (4, 11))])
def test_charuco_and_circle_boards_calibrate(kind, pattern):
    import cv2

    k = Intrinsics(640, 480, 560.0, 560.0, 319.5, 239.5)
    board = BoardSpec(kind, pattern[0], pattern[1], 0.03 if kind == "charuco" else 0.02)
    rng = np.random.default_rng(1)
    dets = [detect_board(render_board(board, k, p, rng), board, f"v{i}")
            for i, p in enumerate(board_poses(board, 8, seed=11, dist=(0.45, 0.7)))]
    dets = [d for d in dets if d is not None]
    assert len(dets) >= 6
    calib = calibrate_camera(dets, board, kind, flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    assert calib.rms_px < 0.3
    assert calib.intrinsics.fx == pytest.approx(560.0, rel=0.01)
    assert calib.intrinsics.cx == pytest.approx(319.5, abs=3.0)


@pytest.mark.realdata
def test_opencv_stereo_images_beat_the_stereo_calib_sample(tmp_path):
    """RMS at least as good as OpenCV's samples/cpp/stereo_calib.cpp procedure on the same images."""
    import cv2

    root = shared_subdir("opencv_stereo_chessboard")
    left = sorted(glob.glob(str(root / "left*.jpg")))
    right = sorted(glob.glob(str(root / "right*.jpg")))
    assert len(left) == len(right) == 13
    # the sample: findChessboardCorners + cornerSubPix(11x11), initCameraMatrix2D, stereoCalibrate with its flags
    board = BoardSpec("chessboard", 9, 6, 0.025)
    obj, ip1, ip2 = [], [], []
    for lf, rf in zip(left, right):
        found = []
        for f in (lf, rf):
            g = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
            ok, c = cv2.findChessboardCorners(g, (9, 6), cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
            if not ok:
                break
            found.append(cv2.cornerSubPix(g, c, (11, 11), (-1, -1),
                                          (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 30, 0.01)))
        if len(found) == 2:
            obj.append(board.object_points().reshape(-1, 1, 3))
            ip1.append(found[0])
            ip2.append(found[1])
    size = (640, 480)
    k1 = cv2.initCameraMatrix2D(obj, ip1, size, 0)
    k2 = cv2.initCameraMatrix2D(obj, ip2, size, 0)
    flags = (cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_USE_INTRINSIC_GUESS
             | cv2.CALIB_SAME_FOCAL_LENGTH | cv2.CALIB_RATIONAL_MODEL | cv2.CALIB_FIX_K3 | cv2.CALIB_FIX_K4
             | cv2.CALIB_FIX_K5)
    baseline = cv2.stereoCalibrate(obj, ip1, ip2, k1, np.zeros(8), k2, np.zeros(8), size, flags=flags,
                                   criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-5))[0]
    pairs = detect_pairs(left, right, board)
    all_views = calibrate_stereo(pairs, board, ("left", "right"), drop_outliers=False)
    ours = calibrate_stereo(pairs, board, ("left", "right"))
    assert len(all_views.views) == len(obj)  # the same views as the sample
    assert all_views.rms_px <= baseline  # same views, no dropping
    assert ours.rms_px <= all_views.rms_px and ours.rms_px < 0.5
    assert 0.07 < np.linalg.norm(ours.translation_m) < 0.1  # a ~8 cm baseline with 25 mm squares
    # the CLI does the same and writes the file + report
    out = tmp_path / "stereo.yaml"
    rc = main(["calibrate", "stereo", "--left", str(root / "left*.jpg"), "--right", str(root / "right*.jpg"),
               "--board", "9x6", "--square-mm", "25", "--out", str(out), "--report", str(tmp_path / "r.png")])
    assert rc == 0 and load_calibration(out).rms_px == pytest.approx(ours.rms_px, rel=1e-6)


@pytest.mark.slow
def test_simulated_rig_board_renderer_extrinsics():
    """The same recovery from the simulated rig's own renderer (scene ray tracer, both cameras)."""
    import cv2

    sim = pytest.importorskip("acquisition.simulated")
    cfg = load_rig_config("simulated")
    rig = sim.SimulatedRig(cfg)
    rig.set_scene(0)
    _, ir, extr = sim_rig_geometry(cfg)
    board = BoardSpec("chessboard", 9, 6, 0.04)
    pairs = []
    for i, pose in enumerate(board_poses(board, 9, seed=5, dist=(0.9, 1.4))):
        g, irimg = rig.render_board_views("chessboard", (9, 6), 0.04, pose, supersample=2, defocus=False, seed=i)
        pairs.append((detect_board(irimg, board, f"ir{i}"), detect_board(g, board, f"dslr{i}")))
    calib = calibrate_stereo(pairs, board, ("ir", "dslr"), flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    assert _rot_err_deg(calib.rotation, np.asarray(extr.rotation)) < 0.1
    assert np.linalg.norm(calib.translation_m - np.asarray(extr.translation_m)) < 1e-3


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["calibrate", "stereo", "--left", str(tmp_path / "nope*.jpg"), "--right", str(tmp_path / "x*.jpg"),
               "--board", "9x6", "--square-mm", "25", "--out", str(tmp_path / "o.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no files match" in err
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"l{i}.png"), np.full((60, 80), 128, np.uint8))
        cv2.imwrite(str(tmp_path / f"r{i}.png"), np.full((60, 80), 128, np.uint8))
    rc = main(["calibrate", "stereo", "--left", str(tmp_path / "l*.png"), "--right", str(tmp_path / "r*.png"),
               "--board", "9x6", "--square-mm", "25", "--out", str(tmp_path / "o.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not found" in err
    rc = main(["calibrate", "geometry", "--dslr", str(tmp_path / "l*.png"), "--ir", str(tmp_path / "r*.png"),
               "--pattern", "nine", "--square-mm", "25", "--out", str(tmp_path / "o.yaml")])
    assert rc == 2 and "--pattern" in capsys.readouterr().err
    assert not Path(tmp_path / "o.yaml").exists()
