"""Defocus-blur calibration (paper 2 §3.3): the camera constant k_cam and the in-focus blur γ.

Procedure: an asymmetric circle grid (e.g. 4x11) is imaged twice at about half the focus distance:
once *in focus* (focused on the board: its residual blur is γ, lens + sensor + demosaicing) and once
*defocused* with the lens focused at s1 (the rig's focus distance). For each circle:

1. detection: ``cv2.findCirclesGrid`` (CALIB_CB_ASYMMETRIC_GRID, :func:`registration.calibration.detect_board`);
2. distance s2: ``cv2.solvePnP`` with the DSLR's geometric intrinsics; s2 = the circle centre's z (m);
3. blur: the grey image is linearised (inverse gamma) and the circle's dark-fraction profile
   u = (white − I)/(white − black) is integrated over the circle's cell (radius half the distance to
   its nearest neighbour). This is Eq. 9's "integral of the edge spread" in 2-D form: the blurred
   circle is the disk convolved with the PSF, whose mass is conserved and whose second moments add, so
   for a Gaussian PSF of σ and a circle imaged as an ellipse of area A:
   Cov(u) = Cov(ellipse) + σ²·I with det Cov(ellipse) = (A / 4π)²  ->  σ² is the small root of
   det(Cov(u) − σ²I) = (A/4π)². Exact for any σ (no small-blur approximation of the radial edge profile),
   for tilted boards (ellipses) too. White = the cell's rim; black = white × the board's black/white
   albedo ratio measured on the in-focus image (so the blurred centre need not reach black);
4. λ from the defocused image, γ = median over the in-focus image; σ_defocus = √(λ² − γ²) (Eq. 7);
5. k per circle: paper 2's k (σ convention) k_σ = σ_defocus·s2/|s1 − s2|; robust median after
   rejecting circles further than 3·1.4826·MAD from the median.

Conventions (rig.core.optics): ε = k_cam·|d − d_f|/d is the blur-circle *diameter* and σ = ρ·ε, so paper 2's
k_σ = ρ·k_cam. We report ``k_cam_px = k_σ/ρ`` (what ``blur.k_cam_px`` and :func:`rig.core.optics.k_cam_px`
mean) and ``k_sigma_px``, both in OUTPUT pixels (image px / (image width / output width)); γ likewise
in output pixels (a σ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rig.core.errors import RigError
from rig.core.records import Intrinsics

MAD_K = 3.0  # outliers: |k − median| > MAD_K · 1.4826 · MAD
BLUR_TO_SPACING_MAX = 0.08  # above this λ / circle distance the blur spills into neighbouring cells


# ------------------------------------------------------------------------------------- per circle
def linearize(grey: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """uint8/uint16 grey (H, W) -> linear intensity float64 in [0, 1] (inverse power-law gamma)."""
    g = np.asarray(grey)
    if g.ndim != 2:
        raise ValueError(f"expected a grey (H, W) image, got shape {g.shape}")
    scale = 255.0 if g.dtype == np.uint8 else (65535.0 if g.dtype == np.uint16 else 1.0)
    return np.power(np.clip(g.astype(np.float64) / scale, 0.0, 1.0), gamma)


def nearest_neighbour_px(centres: np.ndarray) -> np.ndarray:
    """(N,) distance (px) from each of the (N, 2) centres to its nearest other centre."""
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


@dataclass(frozen=True)
class CircleMoments:
    """One circle's blur measurement: sigma_px (Gaussian σ, image px; NaN when it failed), the refined
    centre (x, y) px, the white level and the centre/white ratio (both linear)."""

    sigma_px: float
    centre: tuple[float, float]
    white: float
    centre_ratio: float


def _window(lin: np.ndarray, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = lin.shape
    x0, x1 = max(0, int(math.floor(cx - r))), min(w, int(math.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(math.floor(cy - r))), min(h, int(math.ceil(cy + r)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return lin[y0:y1, x0:x1], xx.astype(np.float64), yy.astype(np.float64)


def _robust_mean(values: np.ndarray) -> float:
    """Mean after dropping values further than 3·1.4826·MAD from the median (a neighbour's edge in
    the rim). A mean, not the median: quantised 8-bit levels make the median jump by a whole level,
    and the moment method is very sensitive to the white level (see :func:`circle_sigma_px`)."""
    v = np.asarray(values, np.float64)
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    keep = np.abs(v - med) <= 3.0 * mad if mad > 0 else np.ones(v.shape, bool)
    return float(v[keep].mean())


def _moments_sigma(u: np.ndarray, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float) -> float:
    """σ² (px²) of a dark-fraction map u about (cx, cy): the small root of det(Cov(u) − σ²I) = (m0/4π)²,
    m0 = Σu (module doc); NaN when undefined."""
    m0 = float(u.sum())
    if m0 <= 0:
        return float("nan")
    dx, dy = xx - cx, yy - cy
    cxx, cyy, cxy = (u * dx * dx).sum() / m0, (u * dy * dy).sum() / m0, (u * dx * dy).sum() / m0
    tr, det = cxx + cyy, cxx * cyy - cxy * cxy
    c = m0 / (4.0 * math.pi)
    disc = tr * tr - 4.0 * (det - c * c)
    if disc < 0:
        return float("nan")
    return 0.5 * (tr - math.sqrt(disc))


def circle_sigma_px(lin: np.ndarray, centre: tuple[float, float], cell_px: float,
                    black_ratio: float | None = None, iterations: int = 2) -> CircleMoments:
    """Gaussian σ (image px) of one blurred dark circle on white by the moment method (module doc).

    lin: (H, W) linear image; centre: detected (x, y); cell_px: radius of the circle's cell (half the
    nearest-neighbour distance); black_ratio: black/white albedo ratio (None: the cell's centre value,
    right only for sharp circles, i.e. the in-focus image).

    The second moments weight a white-level error e by r⁴ over the integration disk, so σ² is first
    measured over the whole cell, then again over a disk just large enough for the blurred circle
    (radius R + 4σ + 2 px, R = √(m0/π), when that fits in the cell) with the white level from a
    3 px ring just outside it. This removes the ~0.7–0.9 px (quadrature) under-estimate the
    whole-cell integral showed at σ ≤ 3 px.
    """
    cx, cy = float(centre[0]), float(centre[1])
    r_cell = float(cell_px)
    r_int = r_cell
    s2, white, ratio_c = float("nan"), float("nan"), float("nan")
    for it in range(max(1, iterations) + 1):
        img, xx, yy = _window(lin, cx, cy, r_cell)
        rr = np.hypot(xx - cx, yy - cy)
        cell = rr <= r_int
        rim = ((rr >= 0.85 * r_cell) if r_int >= r_cell else (rr >= r_int) & (rr <= r_int + 3.0)) & (rr <= r_cell)
        core = rr <= max(1.0, 0.15 * r_cell)
        if rim.sum() < 8 or core.sum() < 1:
            return CircleMoments(float("nan"), (cx, cy), float("nan"), float("nan"))
        white = _robust_mean(img[rim])
        ratio_c = float(np.mean(img[core])) / white if white > 0 else float("nan")
        black = white * (ratio_c if black_ratio is None else black_ratio)
        if not white - black > 1e-6:
            return CircleMoments(float("nan"), (cx, cy), white, ratio_c)
        u = np.where(cell, (white - img) / (white - black), 0.0)
        m0 = u.sum()
        if m0 <= 0:
            return CircleMoments(float("nan"), (cx, cy), white, ratio_c)
        cx, cy = float((u * xx).sum() / m0), float((u * yy).sum() / m0)
        s2 = _moments_sigma(u, xx, yy, cx, cy)
        if it >= max(1, iterations) - 1 and np.isfinite(s2):
            radius = math.sqrt(m0 / math.pi)
            tight = radius + 4.0 * math.sqrt(max(s2, 0.0)) + 2.0
            r_int = tight if tight < 0.85 * r_cell else r_cell  # large blur: the whole cell, as before
    if not np.isfinite(s2):
        return CircleMoments(float("nan"), (cx, cy), white, ratio_c)
    return CircleMoments(math.sqrt(max(s2, 0.0)), (cx, cy), white, ratio_c)


# ---------------------------------------------------------------------------------- per board
@dataclass(frozen=True)
class BoardBlur:
    """A board image's circles: centres (N, 2) px, sigma_px (N,), distance_m (N,) z in the camera
    frame (NaN without intrinsics), black_ratio (the board's black/white albedo ratio seen)."""

    centres: np.ndarray
    sigma_px: np.ndarray
    distance_m: np.ndarray
    black_ratio: float
    image_size: tuple[int, int]


def _asym_object_points(cols: int, rows: int, spacing_m: float) -> np.ndarray:
    return np.array([[(2 * i + j % 2) * spacing_m, j * spacing_m, 0.0] for j in range(rows) for i in range(cols)],
                    np.float64)


def circle_distances_m(centres: np.ndarray, pattern: tuple[int, int], spacing_m: float,
                       k: Intrinsics) -> np.ndarray:
    """(N,) z (m) of each circle centre in the camera frame, from ``cv2.solvePnP`` (iterative)."""
    import cv2

    obj = _asym_object_points(pattern[0], pattern[1], spacing_m)
    ok, rvec, tvec = cv2.solvePnP(obj, centres.reshape(-1, 1, 2).astype(np.float64), k.matrix(),
                                  np.asarray(k.dist, np.float64), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise RigError("solvePnP failed on the circle grid (check --pattern / --spacing-mm / intrinsics)")
    r, _ = cv2.Rodrigues(rvec)
    cam = obj @ r.T + tvec.reshape(1, 3)
    if np.any(cam[:, 2] <= 0):
        raise RigError("solvePnP put the board behind the camera (check --pattern / --spacing-mm)")
    return cam[:, 2]


def measure_board(grey: np.ndarray, pattern: tuple[int, int], spacing_m: float, k: Intrinsics | None,
                  black_ratio: float | None = None, gamma: float = 2.2, source: str = "image") -> BoardBlur:
    """Detect the asymmetric circle grid in ``grey`` (H, W) uint8 and measure every circle's σ."""
    from registration.calibration import BoardSpec, detect_board

    det = detect_board(grey, BoardSpec("circles", int(pattern[0]), int(pattern[1]), float(spacing_m)), source)
    if det is None:
        raise RigError(f"{source}: asymmetric circle grid {pattern[0]}x{pattern[1]} not found")
    centres = det.image_points.astype(np.float64)
    lin = linearize(grey, gamma)
    cells = 0.5 * nearest_neighbour_px(centres)
    if black_ratio is None:  # sharp circles: their cores are black
        first = [circle_sigma_px(lin, c, r) for c, r in zip(centres, cells)]
        ratios = np.array([m.centre_ratio for m in first])
        black_ratio = float(np.nanmedian(ratios))
    meas = [circle_sigma_px(lin, c, r, black_ratio=black_ratio) for c, r in zip(centres, cells)]
    sig = np.array([m.sigma_px for m in meas])
    h, w = grey.shape
    dist = (circle_distances_m(centres, pattern, spacing_m, k.scaled(w, h) if (k.width, k.height) != (w, h) else k)
            if k is not None else np.full(len(centres), np.nan))
    return BoardBlur(centres, sig, dist, float(black_ratio), (w, h))


# ---------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class BlurCalibration:
    """Result. k_cam_px: diameter convention (rig.core.optics, ``blur.k_cam_px``), output px; k_sigma_px =
    rho·k_cam_px (paper 2's k_cam, σ convention); gamma_px: in-focus σ, output px. Per circle (N,):
    k_cam_per_circle_px, lambda_px / sigma_defocus_px (image px), distance_m, inlier mask."""

    k_cam_px: float
    k_sigma_px: float
    gamma_px: float
    rho: float
    focus_m: float
    output_per_image_px: float
    k_cam_per_circle_px: np.ndarray
    lambda_px: np.ndarray
    sigma_defocus_px: np.ndarray
    distance_m: np.ndarray
    inlier: np.ndarray
    gamma_image_px: float
    blur_to_spacing: float = 0.0  # median λ / nearest-neighbour circle distance (defocused image)

    @property
    def blur_too_large(self) -> bool:
        """True when the defocused circles' blur reaches into the neighbouring cells (λ above
        BLUR_TO_SPACING_MAX of the circle distance): k_cam is then under-read — on simulated boards
        by 5 % at 0.082, 7 % at 0.088, 10–20 % at 0.09–0.115, while ≤ 1.5 % below 0.08."""
        return self.blur_to_spacing > BLUR_TO_SPACING_MAX

    @property
    def n_inliers(self) -> int:
        return int(self.inlier.sum())

    def summary(self) -> str:
        return (f"k_cam_px={self.k_cam_px:.4f} (k_sigma_px=rho*k_cam={self.k_sigma_px:.4f}, rho={self.rho:g}) "
                f"gamma_px={self.gamma_px:.4f} [output px]; circles {self.n_inliers}/{self.inlier.size} inliers, "
                f"board at {np.nanmedian(self.distance_m):.3f} m, focus {self.focus_m:g} m")


def robust_median(values: np.ndarray, mad_k: float = MAD_K) -> tuple[float, np.ndarray]:
    """Median of the finite values after dropping those beyond mad_k·1.4826·MAD; (median, inlier mask)."""
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan"), ok
    med = np.median(v[ok])
    mad = 1.4826 * np.median(np.abs(v[ok] - med))
    inl = ok & (np.abs(v - med) <= mad_k * max(mad, 1e-12 * abs(med) + 1e-12))
    return float(np.median(v[inl])), inl


def calibrate_blur(in_focus: np.ndarray, defocused: np.ndarray, pattern: tuple[int, int], spacing_m: float,
                   intrinsics: Intrinsics, focus_m: float, rho: float, output_width_px: int,
                   gamma: float = 2.2) -> BlurCalibration:
    """k_cam and γ from an in-focus and a defocused grey (H, W) uint8 image of the circle grid.

    intrinsics: the DSLR's (any resolution: scaled to the images); focus_m: s1, the focus distance of
    the defocused capture; rho: σ = ρ·ε; output_width_px: the rig's output width (σ and k are reported
    in output px).
    """
    if in_focus.shape != defocused.shape:
        raise RigError(f"in-focus image {in_focus.shape[::-1]} and defocused image {defocused.shape[::-1]} differ in size")
    sharp = measure_board(in_focus, pattern, spacing_m, None, gamma=gamma, source="in-focus image")
    blurred = measure_board(defocused, pattern, spacing_m, intrinsics, black_ratio=sharp.black_ratio, gamma=gamma,
                            source="defocused image")
    gamma_img = float(np.nanmedian(sharp.sigma_px))
    lam = blurred.sigma_px
    sig_def = np.sqrt(np.maximum(lam * lam - gamma_img * gamma_img, 0.0))
    s2 = blurred.distance_m
    ratio = np.abs(focus_m - s2) / s2
    if np.nanmedian(ratio) < 0.05:
        raise RigError(f"board at {np.nanmedian(s2):.3f} m is too close to the focus distance {focus_m:g} m "
                       "(hold it at about half the focus distance)")
    scale = defocused.shape[1] / float(output_width_px)  # image px per output px
    k_sigma_img = sig_def / ratio
    k_cam_circle = k_sigma_img / scale / rho
    k_cam, inl = robust_median(k_cam_circle)
    if not np.isfinite(k_cam) or inl.sum() < 3:
        raise RigError("blur calibration failed: fewer than 3 circles gave a blur measurement")
    return BlurCalibration(k_cam_px=k_cam, k_sigma_px=rho * k_cam, gamma_px=gamma_img / scale, rho=rho,
                           focus_m=float(focus_m), output_per_image_px=1.0 / scale, k_cam_per_circle_px=k_cam_circle,
                           lambda_px=lam, sigma_defocus_px=sig_def, distance_m=s2, inlier=inl,
                           gamma_image_px=gamma_img,
                           blur_to_spacing=float(np.nanmedian(lam / nearest_neighbour_px(blurred.centres))))


def write_blur_report(cal: BlurCalibration, path: str | Path, true_k_cam_px: float | None = None) -> Path:
    """PNG: per-circle k_cam box plot (outliers marked) and σ_defocus vs. |s1 − s2|/s2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    k = cal.k_cam_per_circle_px
    fin = np.isfinite(k)
    a1.boxplot([k[cal.inlier]], widths=0.5, tick_labels=["inliers"])
    jitter = 1.0 + 0.08 * (np.random.default_rng(0).random(k.size) - 0.5)
    a1.scatter(jitter[cal.inlier], k[cal.inlier], s=10, alpha=0.6, label="circle")
    out = fin & ~cal.inlier
    if out.any():
        a1.scatter(jitter[out], k[out], s=18, marker="x", color="red", label=f"outlier ({out.sum()})")
    a1.axhline(cal.k_cam_px, color="k", lw=1, label=f"median {cal.k_cam_px:.3f}")
    if true_k_cam_px is not None:
        a1.axhline(true_k_cam_px, color="g", ls="--", lw=1, label=f"true {true_k_cam_px:.3f}")
    a1.set_ylabel("k_cam (output px, diameter convention)")
    a1.set_title(f"per-circle k_cam ({cal.n_inliers}/{k.size} inliers)")
    a1.legend(fontsize=8)
    ratio = np.abs(cal.focus_m - cal.distance_m) / cal.distance_m
    a2.scatter(ratio, cal.sigma_defocus_px * cal.output_per_image_px, s=10)
    xs = np.linspace(np.nanmin(ratio), np.nanmax(ratio), 10)
    a2.plot(xs, cal.k_sigma_px * xs, "k-", lw=1, label="ρ·k_cam·|s1−s2|/s2")
    a2.set_xlabel("|s1 − s2| / s2")
    a2.set_ylabel("σ_defocus (output px)")
    a2.set_title(f"γ = {cal.gamma_px:.3f} px, focus {cal.focus_m:g} m")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def nominal_intrinsics(focal_mm: float, pixel_um: float, sensor_px: tuple[int, int]) -> Intrinsics:
    """Ideal centred pinhole at sensor resolution (fx = f / pixel pitch), used without --geometry."""
    w, h = int(sensor_px[0]), int(sensor_px[1])
    f = focal_mm / (pixel_um * 1e-3)
    return Intrinsics(width=w, height=h, fx=f, fy=f, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0)
