"""Geometric calibration: DSLR + depth sensor (IR camera) intrinsics and their stereo extrinsics.

Boards: ``chessboard`` (pattern = inner corners, e.g. 9x6), ``circles`` (asymmetric circle grid,
pattern = circles per row x rows, spacing = ``square``), ``charuco`` (pattern = squares, e.g. 5x7,
with ArUco markers of ``marker`` size; partial views are fine).

Procedure: detect with sub-pixel refinement (large images are searched downscaled and refined at
full resolution); calibrate each camera alone (``cv2.calibrateCameraExtended``), drop outlier
views — per-view RMS above max(median + 3·1.4826·MAD, 1.5·median, 0.1 px) — and re-solve
once; then solve
the stereo extrinsics on the views both cameras saw, refining the intrinsics jointly
(``cv2.stereoCalibrateExtended``, CALIB_USE_INTRINSIC_GUESS), again dropping outlier view pairs.
Everything is saved as OpenCV FileStorage YAML (:func:`save_calibration`).

Conventions: R, T map camera 1 to camera 2, X₂ = R·X₁ + T, T in metres. For ``rig calibrate
geometry`` camera 1 is the depth sensor's IR camera and camera 2 the DSLR, so R, T is the
``depth_to_dslr`` :class:`~rig.core.records.Extrinsics`. Intrinsics follow OpenCV (pixel centres at
integers) at the calibration images' resolution.
"""

from __future__ import annotations

import glob as _glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rig.core.errors import RigError
from rig.core.records import Extrinsics, Intrinsics

BOARD_KINDS = ("chessboard", "circles", "charuco")
MIN_VIEWS = 3


def _cv2():
    import cv2

    return cv2


# ------------------------------------------------------------------------------------------------
# boards and detection


@dataclass(frozen=True)
class BoardSpec:
    """A calibration target. cols x rows: inner corners (chessboard), circles (circles) or
    squares (charuco); square_m: square size / circle spacing in metres."""

    kind: str
    cols: int
    rows: int
    square_m: float
    marker_m: float | None = None  # charuco: marker side (default 0.75·square)
    dictionary: str = "DICT_5X5_100"  # charuco: ArUco dictionary name

    def __post_init__(self) -> None:
        if self.kind not in BOARD_KINDS:
            raise RigError(f"--board: expected one of {', '.join(BOARD_KINDS)}, got {self.kind!r}")
        if self.cols < 2 or self.rows < 2:
            raise RigError(f"--pattern: expected at least 2x2, got {self.cols}x{self.rows}")
        if not self.square_m > 0:
            raise RigError(f"--square-mm: must be > 0, got {self.square_m * 1000:g}")

    @property
    def pattern(self) -> tuple[int, int]:
        return (self.cols, self.rows)

    def describe(self) -> str:
        extra = f", markers {self.marker_length_m * 1000:g} mm {self.dictionary}" if self.kind == "charuco" else ""
        return f"{self.kind} {self.cols}x{self.rows}, {self.square_m * 1000:g} mm{extra}"

    @property
    def marker_length_m(self) -> float:
        return self.marker_m if self.marker_m else 0.75 * self.square_m

    def object_points(self) -> np.ndarray:
        """(N, 3) float32 board points in metres, z = 0, in detection-id order."""
        if self.kind == "chessboard":
            g = np.mgrid[0:self.cols, 0:self.rows].T.reshape(-1, 2)  # x fastest, as OpenCV returns corners
            return np.hstack([g * self.square_m, np.zeros((len(g), 1))]).astype(np.float32)
        if self.kind == "circles":
            pts = [((2 * j + i % 2) * self.square_m, i * self.square_m, 0.0)
                   for i in range(self.rows) for j in range(self.cols)]
            return np.asarray(pts, dtype=np.float32)
        return np.asarray(self.charuco_board().getChessboardCorners(), dtype=np.float32).reshape(-1, 3)

    def charuco_board(self):  # -> cv2.aruco.CharucoBoard
        cv2 = _cv2()
        dic = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_m, self.marker_length_m, dic)


def parse_pattern(text: str) -> tuple[int, int]:
    """'9x6' -> (9, 6); RigError otherwise."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        cols, rows = (int(p) for p in parts)
    except ValueError:
        raise RigError(f"--pattern: expected COLSxROWS such as 9x6, got {text!r}") from None
    return cols, rows


@dataclass
class Detection:
    """Board points found in one image: pixel coordinates (N, 2) float32 and their board ids (N,)."""

    source: str
    image_size: tuple[int, int]  # (width, height)
    image_points: np.ndarray
    ids: np.ndarray


def _corner_spacing_px(pts: np.ndarray, cols: int) -> float:
    d = np.linalg.norm(np.diff(pts.reshape(-1, cols, 2), axis=1), axis=-1)
    return float(np.median(d)) if d.size else 10.0


def detect_board(image: np.ndarray, board: BoardSpec, source: str = "", max_side_px: int = 1600) -> Detection | None:
    """Find the board in a grey or RGB image (uint8); None when it is not (fully) seen.

    Chessboards: ``findChessboardCorners`` (adaptive threshold + normalisation) on a copy scaled
    to at most ``max_side_px``, then ``cornerSubPix`` at full resolution with a window of ~0.4x the
    corner spacing. Circles: ``findCirclesGrid`` (asymmetric) with blob sizes scaled to the image.
    ChArUco: ``CharucoDetector`` (its own sub-pixel corners); at least 6 corners are required.
    """
    cv2 = _cv2()
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if grey.dtype != np.uint8:
        grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h, w = grey.shape
    s = min(1.0, max_side_px / max(h, w))
    small = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1.0 else grey
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
    if board.kind == "chessboard":
        ok, corners = cv2.findChessboardCorners(small, board.pattern,
                                                cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not ok:
            return None
        pts = corners.reshape(-1, 2).astype(np.float64)
        pts = (pts + 0.5) / s - 0.5  # back to full-resolution pixel centres
        win = int(np.clip(round(0.4 * _corner_spacing_px(pts, board.cols)), 2, 11))
        refined = cv2.cornerSubPix(grey, pts.reshape(-1, 1, 2).astype(np.float32), (win, win), (-1, -1), crit)
        return Detection(source, (w, h), refined.reshape(-1, 2), np.arange(len(pts), dtype=np.int32))
    if board.kind == "circles":
        # A textured background adds small blobs that can make findCirclesGrid give up; try the
        # permissive detector first, then ones that ignore ever larger specks.
        for min_area in (10.0, 25.0, 60.0):
            params = cv2.SimpleBlobDetector_Params()
            params.minArea = min_area
            params.maxArea = float(h * w) / (board.cols * board.rows)
            params.minDistBetweenBlobs = 2.0
            det = cv2.SimpleBlobDetector_create(params)
            for img in (grey, 255 - grey):  # dark circles on white, or the inverse
                ok, centres = cv2.findCirclesGrid(img, board.pattern, flags=cv2.CALIB_CB_ASYMMETRIC_GRID,
                                                  blobDetector=det)
                if ok:
                    return Detection(source, (w, h), centres.reshape(-1, 2).astype(np.float32),
                                     np.arange(board.cols * board.rows, dtype=np.int32))
        return None
    detector = cv2.aruco.CharucoDetector(board.charuco_board())
    ch_corners, ch_ids, _, _ = detector.detectBoard(grey)
    if ch_ids is None or len(ch_ids) < 6:
        return None
    # the detector interpolates the corners from the markers and refines them itself; a second
    # cornerSubPix with a chessboard-sized window would be pulled by the nearby marker edges
    return Detection(source, (w, h), ch_corners.reshape(-1, 2).astype(np.float32),
                     ch_ids.reshape(-1).astype(np.int32))


def read_grey(path: str | Path) -> np.ndarray:
    cv2 = _cv2()
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise RigError(f"{path}: missing or not a decodable image")
    return img


def expand_glob(pattern: str, what: str) -> list[str]:
    """Sorted files matching a glob (or one file); RigError when none."""
    files = sorted(_glob.glob(str(Path(pattern).expanduser())))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise RigError(f"{what}: no files match {pattern!r}")
    return files


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class CameraCalibration:
    """One camera: intrinsics at the calibration images' size, RMS and per-view RMS (px)."""

    name: str
    intrinsics: Intrinsics
    rms_px: float
    per_view_px: list[float]
    views: list[str]
    dropped: list[str] = field(default_factory=list)
    dropped_px: list[float] = field(default_factory=list)
    threshold_px: float = float("nan")


@dataclass
class StereoCalibration:
    """Two cameras and the transform X₂ = R·X₁ + T (T in metres)."""

    camera1: CameraCalibration
    camera2: CameraCalibration
    rotation: np.ndarray  # (3, 3)
    translation_m: np.ndarray  # (3,)
    rms_px: float
    per_view_px: np.ndarray  # (N, 2): RMS in camera 1 and camera 2 per view pair
    views: list[str]
    dropped: list[str] = field(default_factory=list)
    dropped_px: list[float] = field(default_factory=list)
    threshold_px: float = float("nan")
    board: str = ""
    kind: str = "stereo"
    essential: np.ndarray | None = None
    fundamental: np.ndarray | None = None

    @property
    def extrinsics(self) -> Extrinsics:
        """Camera 1 → camera 2 as a record (for geometry: depth sensor → DSLR)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = np.asarray(self.translation_m).reshape(3)
        return Extrinsics.from_matrix(m)


def _intrinsics(k: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> Intrinsics:
    return Intrinsics(width=int(size[0]), height=int(size[1]), fx=float(k[0, 0]), fy=float(k[1, 1]),
                      cx=float(k[0, 2]), cy=float(k[1, 2]), dist=tuple(float(x) for x in np.ravel(dist)))


MIN_OUTLIER_PX = 0.1  # views are never dropped for residuals at the corner detector's noise level


def outlier_threshold(errors: Sequence[float]) -> float:
    """max(median + 3·1.4826·MAD, 1.5·median, 0.1 px) of per-view RMS errors."""
    e = np.asarray(errors, dtype=np.float64)
    med = float(np.median(e))
    mad = float(np.median(np.abs(e - med))) * 1.4826
    return max(med + 3.0 * mad, 1.5 * med, MIN_OUTLIER_PX)


def _criteria():
    cv2 = _cv2()
    return (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-9)


def _obj_img(dets: Sequence[Detection], board: BoardSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    obj_all = board.object_points()
    return ([obj_all[d.ids].reshape(-1, 1, 3) for d in dets],
            [d.image_points.reshape(-1, 1, 2).astype(np.float32) for d in dets])


def calibrate_camera(dets: Sequence[Detection], board: BoardSpec, name: str = "camera", flags: int = 0,
                     drop_outliers: bool = True, max_rounds: int = 1) -> CameraCalibration:
    """Intrinsics from board views, dropping outlier views and re-solving (see module docstring)."""
    cv2 = _cv2()
    dets = list(dets)
    if len(dets) < MIN_VIEWS:
        raise RigError(f"{name}: the board was found in {len(dets)} image(s); at least {MIN_VIEWS} are needed")
    size = dets[0].image_size
    if any(d.image_size != size for d in dets):
        raise RigError(f"{name}: calibration images differ in size")
    dropped: list[str] = []
    dropped_px: list[float] = []
    thr = float("nan")
    rounds = 0
    while True:
        obj, img = _obj_img(dets, board)
        rms, k, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(
            obj, img, size, None, None, flags=flags, criteria=_criteria())
        per_view = per_view.reshape(-1)
        if not drop_outliers or rounds >= max_rounds or len(dets) <= MIN_VIEWS + 1:
            break
        thr = outlier_threshold(per_view)
        bad = [i for i, e in enumerate(per_view) if e > thr]
        if not bad or len(dets) - len(bad) < MIN_VIEWS + 1:
            break
        dropped += [dets[i].source for i in bad]
        dropped_px += [float(per_view[i]) for i in bad]
        dets = [d for i, d in enumerate(dets) if i not in set(bad)]
        rounds += 1
    return CameraCalibration(name=name, intrinsics=_intrinsics(k, dist, size), rms_px=float(rms),
                             per_view_px=[float(x) for x in per_view], views=[d.source for d in dets],
                             dropped=dropped, dropped_px=dropped_px, threshold_px=thr)


def _common(d1: Detection, d2: Detection) -> tuple[Detection, Detection]:
    """Restrict two detections of one board pose to the ids both have (ChArUco partial views)."""
    common, i1, i2 = np.intersect1d(d1.ids, d2.ids, return_indices=True)
    return (Detection(d1.source, d1.image_size, d1.image_points[i1], common),
            Detection(d2.source, d2.image_size, d2.image_points[i2], common))


def calibrate_stereo(pairs: Sequence[tuple[Detection | None, Detection | None]], board: BoardSpec,
                     names: tuple[str, str] = ("camera1", "camera2"), flags: int = 0,
                     fix_intrinsics: bool = False, drop_outliers: bool = True,
                     max_rounds: int = 1) -> StereoCalibration:
    """Calibrate both cameras, then their extrinsics from the views both saw.

    pairs: per board pose, the detection in camera 1 and in camera 2 (None where not found).
    Each camera is calibrated on all its own views; the stereo solve refines both intrinsics
    jointly (unless ``fix_intrinsics``) on the common views, dropping outlier pairs.
    """
    cv2 = _cv2()
    cam1 = calibrate_camera([a for a, _ in pairs if a is not None], board, names[0], flags, drop_outliers)
    cam2 = calibrate_camera([b for _, b in pairs if b is not None], board, names[1], flags, drop_outliers)
    both = [_common(a, b) for a, b in pairs if a is not None and b is not None]
    both = [(a, b) for a, b in both if len(a.ids) >= 6]
    if len(both) < MIN_VIEWS:
        raise RigError(f"the board was seen by both cameras in {len(both)} view(s); at least {MIN_VIEWS} are needed")
    k1, d1 = cam1.intrinsics.matrix(), np.asarray(cam1.intrinsics.dist)
    k2, d2 = cam2.intrinsics.matrix(), np.asarray(cam2.intrinsics.dist)
    sflags = flags | (cv2.CALIB_FIX_INTRINSIC if fix_intrinsics else cv2.CALIB_USE_INTRINSIC_GUESS)
    dropped: list[str] = []
    dropped_px: list[float] = []
    thr = float("nan")
    rounds = 0
    while True:
        obj, img1 = _obj_img([a for a, _ in both], board)
        _, img2 = _obj_img([b for _, b in both], board)
        rms, k1o, d1o, k2o, d2o, r, t, e, f, per_view = _stereo_call(
            obj, img1, img2, k1, d1, k2, d2, (cam1.intrinsics.width, cam1.intrinsics.height), sflags)
        per_view = np.asarray(per_view, dtype=np.float64).reshape(-1, 2)
        if not drop_outliers or rounds >= max_rounds or len(both) <= MIN_VIEWS + 1:
            break
        pair_err = np.sqrt((per_view ** 2).mean(axis=1))
        thr = outlier_threshold(pair_err)
        bad = [i for i, v in enumerate(pair_err) if v > thr]
        if not bad or len(both) - len(bad) < MIN_VIEWS + 1:
            break
        dropped += [f"{both[i][0].source} | {both[i][1].source}" for i in bad]
        dropped_px += [float(pair_err[i]) for i in bad]
        both = [p for i, p in enumerate(both) if i not in set(bad)]
        rounds += 1
    size1 = (cam1.intrinsics.width, cam1.intrinsics.height)
    size2 = (cam2.intrinsics.width, cam2.intrinsics.height)
    cam1.intrinsics = _intrinsics(k1o, d1o, size1)
    cam2.intrinsics = _intrinsics(k2o, d2o, size2)
    return StereoCalibration(camera1=cam1, camera2=cam2, rotation=np.asarray(r, dtype=np.float64),
                             translation_m=np.asarray(t, dtype=np.float64).reshape(3), rms_px=float(rms),
                             per_view_px=per_view, views=[f"{a.source} | {b.source}" for a, b in both],
                             dropped=dropped, dropped_px=dropped_px, threshold_px=thr, board=board.describe(),
                             essential=np.asarray(e), fundamental=np.asarray(f))


def _stereo_call(obj, img1, img2, k1, d1, k2, d2, size1, flags):  # noqa: ANN001 — cv2 arrays
    """cv2.stereoCalibrateExtended -> (rms, K1, d1, K2, d2, R, T, E, F, per-view errors (N, 2))."""
    cv2 = _cv2()
    out = cv2.stereoCalibrateExtended(obj, img1, img2, k1.copy(), d1.copy(), k2.copy(), d2.copy(), size1,
                                      None, None, flags=flags, criteria=_criteria())
    rms, k1o, d1o, k2o, d2o, r, t, e, f, _rvecs, _tvecs, per_view = out
    return rms, k1o, d1o, k2o, d2o, r, t, e, f, per_view


def detect_pairs(files1: Sequence[str], files2: Sequence[str], board: BoardSpec,
                 progress: bool = False) -> list[tuple[Detection | None, Detection | None]]:
    """Detect the board in two equally long, index-paired image lists."""
    if len(files1) != len(files2):
        raise RigError(f"the two image lists differ in length ({len(files1)} vs {len(files2)}); "
                       "images are paired by sorted order")
    out: list[tuple[Detection | None, Detection | None]] = []
    items = list(zip(files1, files2))
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("detecting the board", total=len(items))
    try:
        for f1, f2 in items:
            out.append((detect_board(read_grey(f1), board, Path(f1).name),
                        detect_board(read_grey(f2), board, Path(f2).name)))
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return out


# ------------------------------------------------------------------------------------------------
# FileStorage YAML


def _write_strings(fs, name: str, items: Sequence[str]) -> None:
    cv2 = _cv2()
    fs.startWriteStruct(name, cv2.FileNode_SEQ)
    for s in items:
        fs.write("", str(s))
    fs.endWriteStruct()


def _read_strings(node) -> list[str]:
    if node.empty():
        return []
    return [node.at(i).string() for i in range(node.size())]


def _col(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1) if len(values) else np.zeros((0, 1))


def save_calibration(calib: StereoCalibration, path: str | Path) -> Path:
    """Write an OpenCV FileStorage YAML (K, dist, sizes, R, T in m, per-view errors, RMS)."""
    cv2 = _cv2()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix or '.yaml'}")
    fs = cv2.FileStorage(str(tmp), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("kind", calib.kind)
        fs.write("board", calib.board)
        fs.write("units", "T in metres; R, T map camera1 to camera2: X2 = R*X1 + T; pixel centres at integers")
        for i, cam in ((1, calib.camera1), (2, calib.camera2)):
            p = f"camera{i}_"
            fs.write(p + "name", cam.name)
            fs.write(p + "image_size", np.array([[cam.intrinsics.width, cam.intrinsics.height]], dtype=np.int32))
            fs.write(p + "K", cam.intrinsics.matrix())
            fs.write(p + "dist", np.asarray(cam.intrinsics.dist, dtype=np.float64).reshape(1, -1))
            fs.write(p + "rms_px", float(cam.rms_px))
            fs.write(p + "per_view_errors_px", _col(cam.per_view_px))
            _write_strings(fs, p + "views", cam.views)
            _write_strings(fs, p + "dropped_views", cam.dropped)
            fs.write(p + "dropped_errors_px", _col(cam.dropped_px))
        fs.write("R", np.asarray(calib.rotation, dtype=np.float64))
        fs.write("T", np.asarray(calib.translation_m, dtype=np.float64).reshape(3, 1))
        if calib.essential is not None:
            fs.write("E", np.asarray(calib.essential, dtype=np.float64))
        if calib.fundamental is not None:
            fs.write("F", np.asarray(calib.fundamental, dtype=np.float64))
        fs.write("rms_px", float(calib.rms_px))
        fs.write("per_view_errors_px", np.asarray(calib.per_view_px, dtype=np.float64).reshape(-1, 2))
        fs.write("outlier_threshold_px", float(calib.threshold_px) if np.isfinite(calib.threshold_px) else -1.0)
        _write_strings(fs, "views", calib.views)
        _write_strings(fs, "dropped_views", calib.dropped)
        fs.write("dropped_errors_px", _col(calib.dropped_px))
    finally:
        fs.release()
    tmp.replace(path)
    return path


def load_calibration(path: str | Path) -> StereoCalibration:
    """Read :func:`save_calibration`'s file; RigError (one line) when it is not one."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise RigError(f"{path}: calibration file not found")
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError, UnicodeDecodeError):  # a binary file makes OpenCV raise SystemError
        raise RigError(f"{path}: not an OpenCV FileStorage file (YAML/XML written by `rig calibrate`)") from None
    try:
        if not fs.isOpened() or fs.getNode("R").empty() or fs.getNode("camera1_K").empty():
            raise RigError(f"{path}: not a calibration file written by `rig calibrate` (no R / camera1_K)")

        def cam(i: int) -> CameraCalibration:
            p = f"camera{i}_"
            size = fs.getNode(p + "image_size").mat().reshape(-1)
            k = fs.getNode(p + "K").mat()
            dist = fs.getNode(p + "dist").mat()
            pv = fs.getNode(p + "per_view_errors_px").mat()
            dpx = fs.getNode(p + "dropped_errors_px").mat()
            return CameraCalibration(
                name=fs.getNode(p + "name").string(), intrinsics=_intrinsics(k, dist, (int(size[0]), int(size[1]))),
                rms_px=fs.getNode(p + "rms_px").real(),
                per_view_px=[] if pv is None else [float(x) for x in pv.reshape(-1)],
                views=_read_strings(fs.getNode(p + "views")), dropped=_read_strings(fs.getNode(p + "dropped_views")),
                dropped_px=[] if dpx is None else [float(x) for x in dpx.reshape(-1)])

        pv = fs.getNode("per_view_errors_px").mat()
        dpx = fs.getNode("dropped_errors_px").mat()
        e = fs.getNode("E").mat() if not fs.getNode("E").empty() else None
        f = fs.getNode("F").mat() if not fs.getNode("F").empty() else None
        thr = fs.getNode("outlier_threshold_px").real()
        return StereoCalibration(
            camera1=cam(1), camera2=cam(2), rotation=fs.getNode("R").mat(),
            translation_m=fs.getNode("T").mat().reshape(3), rms_px=fs.getNode("rms_px").real(),
            per_view_px=np.zeros((0, 2)) if pv is None else pv.reshape(-1, 2),
            views=_read_strings(fs.getNode("views")), dropped=_read_strings(fs.getNode("dropped_views")),
            dropped_px=[] if dpx is None else [float(x) for x in dpx.reshape(-1)],
            threshold_px=thr if thr >= 0 else float("nan"), board=fs.getNode("board").string(),
            kind=fs.getNode("kind").string() or "stereo", essential=e, fundamental=f)
    finally:
        fs.release()


def geometry_from_calibration(calib: StereoCalibration) -> tuple[Intrinsics, Intrinsics, Extrinsics]:
    """(DSLR intrinsics, depth-sensor intrinsics, depth → DSLR) from a ``rig calibrate geometry`` file."""
    names = (calib.camera1.name, calib.camera2.name)
    if names == ("ir", "dslr"):
        return calib.camera2.intrinsics, calib.camera1.intrinsics, calib.extrinsics
    if names == ("dslr", "ir"):
        m = np.linalg.inv(calib.extrinsics.matrix())
        return calib.camera1.intrinsics, calib.camera2.intrinsics, Extrinsics.from_matrix(m)
    raise RigError(f"calibration cameras are {names[0]!r} and {names[1]!r}; expected 'ir' and 'dslr' "
                   "(write it with `rig calibrate geometry`)")


# ------------------------------------------------------------------------------------------------
# the one-page report


def write_report(calib: StereoCalibration, path: str | Path) -> Path:
    """A one-page report: per-view RMS bar charts (kept / dropped views) and the numbers.

    ``.png``/``.pdf``/``.svg``: a matplotlib figure; ``.html``: the figure embedded + a table.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(4, 1, figsize=(8.27, 11.0), dpi=110,
                             gridspec_kw={"height_ratios": [0.75, 1, 1, 1]})
    axes[0].axis("off")
    axes[0].text(0.0, 1.0, _summary_text(calib), va="top", ha="left", family="monospace", fontsize=7.4)
    series = [(calib.camera1.name, calib.camera1.views, calib.camera1.per_view_px, calib.camera1.dropped,
               calib.camera1.dropped_px, calib.camera1.threshold_px, calib.camera1.rms_px),
              (calib.camera2.name, calib.camera2.views, calib.camera2.per_view_px, calib.camera2.dropped,
               calib.camera2.dropped_px, calib.camera2.threshold_px, calib.camera2.rms_px),
              ("stereo (pair RMS)", calib.views,
               list(np.sqrt((np.asarray(calib.per_view_px) ** 2).mean(axis=1))) if len(calib.per_view_px) else [],
               calib.dropped, calib.dropped_px, calib.threshold_px, calib.rms_px)]
    for ax, (name, views, errs, dropped, derrs, thr, rms) in zip(axes[1:], series):
        labels = [Path(v.split(" | ")[0]).stem for v in views] + [Path(v.split(" | ")[0]).stem for v in dropped]
        vals = list(errs) + list(derrs)
        colours = ["tab:blue"] * len(errs) + ["tab:red"] * len(derrs)
        ax.bar(range(len(vals)), vals, color=colours)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.axhline(rms, color="k", lw=0.8, ls="--", label=f"RMS {rms:.3f} px")
        if np.isfinite(thr):
            ax.axhline(thr, color="tab:red", lw=0.8, ls=":", label=f"outlier threshold {thr:.3f} px")
        ax.set_ylabel("RMS (px)")
        ax.set_title(f"{name}: per-view reprojection error (red: dropped, values before dropping)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path.suffix.lower() == ".html":
        import base64
        import html
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        img = base64.b64encode(buf.getvalue()).decode()
        body = (f"<html><head><meta charset='utf-8'><title>calibration report</title></head><body>"
                f"<h1>Calibration report</h1><pre>{html.escape(_summary_text(calib))}</pre>"
                f"<img src='data:image/png;base64,{img}' style='max-width:100%'></body></html>")
        path.write_text(body, encoding="utf-8")
        return path
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt_k(k: Intrinsics) -> str:
    d = ", ".join(f"{x:+.4g}" for x in k.dist)
    return (f"{k.width}x{k.height}  fx={k.fx:.2f} fy={k.fy:.2f} cx={k.cx:.2f} cy={k.cy:.2f}\n"
            f"      dist=[{d}]")


def _summary_text(calib: StereoCalibration) -> str:
    import cv2

    rvec, _ = cv2.Rodrigues(np.asarray(calib.rotation, dtype=np.float64))
    ang = float(np.degrees(np.linalg.norm(rvec)))
    t = np.asarray(calib.translation_m).reshape(3) * 1000.0
    lines = [f"{calib.kind} calibration — board: {calib.board}",
             f"camera 1 '{calib.camera1.name}': {_fmt_k(calib.camera1.intrinsics)}",
             f"      RMS {calib.camera1.rms_px:.4f} px alone (before the joint refinement) on "
             f"{len(calib.camera1.views)} views, "
             f"{len(calib.camera1.dropped)} dropped",
             f"camera 2 '{calib.camera2.name}': {_fmt_k(calib.camera2.intrinsics)}",
             f"      RMS {calib.camera2.rms_px:.4f} px alone (before the joint refinement) on "
             f"{len(calib.camera2.views)} views, "
             f"{len(calib.camera2.dropped)} dropped",
             f"X2 = R X1 + T:  rotation {ang:.4f} deg, axis {np.round(rvec.ravel() / max(np.linalg.norm(rvec), 1e-12), 4)}",
             f"      T = [{t[0]:+.2f}, {t[1]:+.2f}, {t[2]:+.2f}] mm  (|T| = {np.linalg.norm(t):.2f} mm)",
             f"stereo RMS {calib.rms_px:.4f} px on {len(calib.views)} view pairs, {len(calib.dropped)} dropped"
             + (f" (threshold {calib.threshold_px:.3f} px)" if np.isfinite(calib.threshold_px) else "")]
    for v, e in zip(calib.dropped, calib.dropped_px):
        lines.append(f"      dropped: {v} ({e:.3f} px)")
    return "\n".join(lines)
