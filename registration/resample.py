"""DSLR images from sensor resolution to the output size, undistortion, and the f/2.8 ↔ f/8 check.

Pixel convention: OpenCV centres (see :mod:`rig.core.records`); ``cv2.resize`` with INTER_AREA keeps
it (pixel x of the output covers sensor pixels [x·s, (x+1)·s)), so output intrinsics are
``Intrinsics.scaled``. Undistortion happens at the output size (distortion coefficients are in
normalised coordinates, independent of the scale), with the same maps for both apertures; the
result is an ideal pinhole with the same K and no distortion.

Alignment: the two shots should coincide (tripod, remote trigger), but a knocked tripod or mirror
slap can shift them. :func:`estimate_shift` measures the translation of the defocused shot
against the all-in-focus one on gradient magnitudes (phase correlation, refined by ECC) — the
PSFs are symmetric, so the blur difference changes gradient amplitudes, not positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from rig.core.records import Intrinsics

ALIGN_MODES = ("correct", "flag", "off")


def resample_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average ``image`` (H, W[, C]) to ``size`` = (width, height) (cv2.INTER_AREA)."""
    import cv2

    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image.copy()
    interp = cv2.INTER_AREA if image.shape[1] >= w and image.shape[0] >= h else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def has_distortion(k: Intrinsics) -> bool:
    return any(abs(c) > 0.0 for c in k.dist)


@lru_cache(maxsize=4)
def _undistort_maps(k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    kmat = k.matrix()
    return cv2.initUndistortRectifyMap(kmat, np.asarray(k.dist, dtype=np.float64), None, kmat,
                                       (k.width, k.height), cv2.CV_32FC1)


def undistort(image: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Remove lens distortion from ``image`` (size = k's) keeping K; bilinear, border replicated."""
    import cv2

    if not has_distortion(k):
        return image.copy()
    if image.shape[:2] != (k.height, k.width):
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} does not match intrinsics {k.width}x{k.height}")
    m1, m2 = _undistort_maps(k)
    return cv2.remap(image, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def output_intrinsics(sensor: Intrinsics, size: tuple[int, int]) -> Intrinsics:
    """Intrinsics of the resampled (and, when distorted, undistorted) output image."""
    k = sensor.scaled(*size)
    return Intrinsics(width=k.width, height=k.height, fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy,
                      dist=(0.0,) * 5)


def to_output(image: np.ndarray, sensor: Intrinsics | None, size: tuple[int, int]) -> np.ndarray:
    """Resample a DSLR image to ``size`` and undistort it when ``sensor`` has distortion."""
    out = resample_to(image, size)
    if sensor is not None and has_distortion(sensor):
        out = undistort(out, sensor.scaled(*size))
    return out


# ------------------------------------------------------------------------------------------------
# the f/2.8 ↔ f/8 alignment check


@dataclass(frozen=True)
class Shift:
    """Translation of the moving image against the reference: moving(x + (dx, dy)) ≈ reference(x)."""

    dx_px: float
    dy_px: float
    response: float  # phase-correlation peak (0..1); low = unreliable
    method: str

    @property
    def magnitude_px(self) -> float:
        return float(np.hypot(self.dx_px, self.dy_px))


def _gradient_magnitude(image: np.ndarray, sigma_px: float) -> np.ndarray:
    import cv2

    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    g = g.astype(np.float32)
    if sigma_px > 0:
        g = cv2.GaussianBlur(g, (0, 0), sigma_px)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    mag -= float(mag.mean())
    std = float(mag.std())
    return mag / std if std > 0 else mag


def estimate_shift(reference: np.ndarray, moving: np.ndarray, sigma_px: float = 2.0,
                   refine: bool = True) -> Shift:
    """Sub-pixel translation of ``moving`` against ``reference`` (same size, RGB or grey).

    Phase correlation of the smoothed gradient magnitudes (Hanning window), then ECC
    (MOTION_TRANSLATION) on the same gradient images starting from it when ``refine``.
    """
    import cv2

    if reference.shape[:2] != moving.shape[:2]:
        raise ValueError(f"image sizes differ: {reference.shape[:2]} vs {moving.shape[:2]}")
    a = _gradient_magnitude(reference, sigma_px)
    b = _gradient_magnitude(moving, sigma_px)
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a, b, win)
    method = "phase"
    if refine:
        warp = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        try:
            _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_TRANSLATION,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6), None, 5)
            if abs(float(warp[0, 2]) - dx) < 2.0 and abs(float(warp[1, 2]) - dy) < 2.0:
                dx, dy, method = float(warp[0, 2]), float(warp[1, 2]), "phase+ecc"
        except cv2.error:
            pass  # ECC did not converge: keep the phase-correlation estimate
    return Shift(dx_px=float(dx), dy_px=float(dy), response=float(response), method=method)


def shift_image(image: np.ndarray, dx_px: float, dy_px: float) -> np.ndarray:
    """out(x) = image(x + (dx, dy)) — undoes a measured :class:`Shift` of ``image`` (bicubic)."""
    import cv2

    m = np.array([[1, 0, dx_px], [0, 1, dy_px]], dtype=np.float64)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class PairResult:
    """Both apertures at output size in one frame, with what the alignment check found."""

    defocused: np.ndarray
    all_in_focus: np.ndarray
    intrinsics: Intrinsics
    shift: Shift | None
    flagged: bool = False
    corrected: bool = False
    notes: list[str] = field(default_factory=list)

    def alignment_dict(self) -> dict[str, object]:
        if self.shift is None:
            return {"checked": False}
        return {"checked": True, "dx_px": round(self.shift.dx_px, 4), "dy_px": round(self.shift.dy_px, 4),
                "magnitude_px": round(self.shift.magnitude_px, 4), "response": round(self.shift.response, 4),
                "method": self.shift.method, "flagged": self.flagged, "corrected": self.corrected}


def prepare_pair(defocused: np.ndarray, all_in_focus: np.ndarray, sensor: Intrinsics | None,
                 size: tuple[int, int], align: str = "flag", threshold_px: float = 0.5) -> PairResult:
    """Resample (and undistort) both shots identically, then check their alignment.

    sensor: DSLR intrinsics at the images' resolution (None: no undistortion, output intrinsics
    unknown → a centred guess is not made; callers pass what they have). align: 'correct' shifts
    the defocused shot onto the all-in-focus one when the shift exceeds ``threshold_px`` (output
    pixels), 'flag' only records it, 'off' skips the check. The all-in-focus shot defines the frame.
    """
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}")
    if defocused.shape != all_in_focus.shape:
        raise ValueError(f"the two shots differ in size: {defocused.shape} vs {all_in_focus.shape}")
    if sensor is not None and (sensor.width, sensor.height) != (defocused.shape[1], defocused.shape[0]):
        sensor = sensor.scaled(defocused.shape[1], defocused.shape[0])
    dfc = to_output(defocused, sensor, size)
    aif = to_output(all_in_focus, sensor, size)
    k_out = output_intrinsics(sensor, size) if sensor is not None else Intrinsics(
        width=size[0], height=size[1], fx=0.0, fy=0.0, cx=(size[0] - 1) / 2.0, cy=(size[1] - 1) / 2.0)
    res = PairResult(defocused=dfc, all_in_focus=aif, intrinsics=k_out, shift=None)
    if align == "off":
        return res
    shift = estimate_shift(aif, dfc)
    res.shift = shift
    if shift.magnitude_px > threshold_px:
        res.flagged = True
        res.notes.append(f"f/2.8 and f/8 shots differ by ({shift.dx_px:+.2f}, {shift.dy_px:+.2f}) px "
                         f"(> {threshold_px:g} px at output size)")
        if align == "correct":
            res.defocused = shift_image(dfc, shift.dx_px, shift.dy_px)
            res.corrected = True
    return res
