"""Thin-lens defocus physics shared by every stage (paper 1 §3.2, paper 2 Eq. 2-3, 7).

Conventions: distances in metres unless a name says otherwise (``focal_mm``, ``pixel_um``);
blur sizes in *output* pixels, i.e. sensor pixels times ``downsample`` (3872 -> 645 px is 6.0).
All functions broadcast over NumPy arrays.

Paper 1: ε = D·s·|1/f − 1/d − 1/s| with aperture D = f/N and sensor distance s (1/f = 1/s + 1/d_f).
Substituting s gives ε = f²/(N(d_f − f)) · |d − d_f|/d, which is paper 2's
σ·k_r = |s1 − s2|/s2 · f²/(N(s1 − f)) · 1/p  (s1 = focus, s2 = depth): the camera terms are
k_cam = f²/(N(s1 − f)·p) in pixels, and ε_px = k_cam · |d − d_f|/d.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

PAPER1_RHO = 0.3  # σ = ρ·ε in paper 1's code (Gaussian PSF from the blur-circle diameter)

Side = Literal["near", "far"]


@dataclass(frozen=True)
class Lens:
    """Everything the thin-lens blur needs.

    focal_mm: focal length; f_number: N; pixel_um: sensor pixel pitch; downsample: sensor pixels per
    output pixel (>= 1); focus_m: focus distance d_f (object side); k_cam_scale: measured / thin-lens
    k_cam (``blur.k_cam_px`` from ``rig calibrate blur`` divided by the thin-lens value; 1 = the
    thin-lens model). A factor rather than a value, so it stays right when the focus distance or
    f-number changes (it absorbs errors in focal length, pixel pitch and ρ).
    """

    focal_mm: float
    f_number: float
    pixel_um: float
    focus_m: float
    downsample: float = 1.0
    k_cam_scale: float = 1.0

    @property
    def aperture_mm(self) -> float:
        """Aperture diameter D = f/N in mm."""
        return self.focal_mm / self.f_number

    @property
    def output_pixel_um(self) -> float:
        """Pitch of one output pixel in µm."""
        return self.pixel_um * self.downsample

    def with_focus(self, focus_m: float) -> "Lens":
        return replace(self, focus_m=float(focus_m))

    def with_f_number(self, f_number: float) -> "Lens":
        return replace(self, f_number=float(f_number))


def sensor_distance_m(focal_mm: float, focus_m: ArrayLike) -> NDArray[np.float64]:
    """Lens-to-sensor distance s (m) that focuses at ``focus_m``: 1/s = 1/f − 1/d_f."""
    f_m = focal_mm * 1e-3
    d_f = np.asarray(focus_m, dtype=np.float64)
    if np.any(d_f <= f_m):
        raise ValueError(f"focus distance must exceed the focal length ({f_m} m)")
    return 1.0 / (1.0 / f_m - 1.0 / d_f)


def k_cam_px(lens: Lens) -> float:
    """Paper 2's camera constant k_cam = f²/(N(d_f − f)·p) in output pixels (times the lens's
    measured ``k_cam_scale``).

    The blur-circle diameter is ε_px = k_cam · |d − d_f| / d (see module docstring).
    """
    f_m = lens.focal_mm * 1e-3
    p_m = lens.output_pixel_um * 1e-6
    if lens.focus_m <= f_m:
        raise ValueError(f"focus distance {lens.focus_m} m must exceed the focal length {f_m} m")
    return float(lens.k_cam_scale * f_m * f_m / (lens.f_number * (lens.focus_m - f_m) * p_m))


def blur_diameter_px(depth_m: ArrayLike, lens: Lens) -> NDArray[np.float64]:
    """Blur-circle diameter ε (output px) of points at ``depth_m`` (any shape, > 0)."""
    d = np.asarray(depth_m, dtype=np.float64)
    if np.any(d <= 0):
        raise ValueError("depth must be > 0 m")
    return k_cam_px(lens) * np.abs(d - lens.focus_m) / d


def blur_diameter_from_formula_px(depth_m: ArrayLike, lens: Lens) -> NDArray[np.float64]:
    """Paper 1's formula verbatim, ε = D·s·|1/f − 1/d − 1/s| / pitch; equals :func:`blur_diameter_px`."""
    d = np.asarray(depth_m, dtype=np.float64)
    f_m = lens.focal_mm * 1e-3
    s = sensor_distance_m(lens.focal_mm, lens.focus_m)
    eps_m = (f_m / lens.f_number) * s * np.abs(1.0 / f_m - 1.0 / d - 1.0 / s)
    return eps_m / (lens.output_pixel_um * 1e-6)


def signed_blur_px(depth_m: ArrayLike, lens: Lens) -> NDArray[np.float64]:
    """Signed diameter: negative in front of the focal plane, positive behind it."""
    d = np.asarray(depth_m, dtype=np.float64)
    return k_cam_px(lens) * (d - lens.focus_m) / d


def gaussian_sigma_px(diameter_px: ArrayLike, rho: float = PAPER1_RHO) -> NDArray[np.float64]:
    """Gaussian PSF σ (px) for a blur-circle diameter: σ = ρ·ε."""
    return rho * np.asarray(diameter_px, dtype=np.float64)


def depth_from_blur_m(diameter_px: ArrayLike, lens: Lens, side: Side = "far") -> NDArray[np.float64]:
    """Invert ε(d) on one side of the focal plane (the defocus ambiguity).

    far:  d = d_f / (1 − ε/k)  (NaN where ε ≥ k, i.e. beyond infinity)
    near: d = d_f / (1 + ε/k)
    """
    e = np.asarray(diameter_px, dtype=np.float64)
    ratio = e / k_cam_px(lens)
    if side == "near":
        return lens.focus_m / (1.0 + ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = lens.focus_m / (1.0 - ratio)
    return np.where(ratio < 1.0, out, np.nan)


def max_blur_px(lens: Lens) -> float:
    """Blur diameter of a point at infinity (the far-side asymptote), = k_cam."""
    return k_cam_px(lens)


def dead_zone_m(lens: Lens, threshold_px: float = 1.0) -> tuple[float, float]:
    """Depth interval around the focal plane whose blur stays below ``threshold_px`` (depth of field).

    Inside it defocus carries no depth information. Returns (near_m, far_m); far_m is inf when the
    far asymptote k_cam is below the threshold (hyperfocal case).
    """
    near = float(depth_from_blur_m(threshold_px, lens, side="near"))
    far = float(depth_from_blur_m(threshold_px, lens, side="far"))
    return near, (far if np.isfinite(far) else float("inf"))


def sigma_defocus_px(lambda_px: ArrayLike, gamma_px: float) -> NDArray[np.float64]:
    """Paper 2: the defocus part of a measured blur λ after removing the in-focus blur γ.

    σ_defocus = sqrt(max(λ² − γ², 0)) (clamped: a measured blur below γ means in focus).
    """
    lam = np.asarray(lambda_px, dtype=np.float64)
    return np.sqrt(np.maximum(lam * lam - gamma_px * gamma_px, 0.0))


def matched_shutter_s(shutter_s: float, f_number_from: float, f_number_to: float) -> float:
    """Shutter time giving the same exposure at ``f_number_to``: t·(N₂/N₁)²."""
    if shutter_s <= 0 or f_number_from <= 0 or f_number_to <= 0:
        raise ValueError("shutter and f-numbers must be > 0")
    return shutter_s * (f_number_to / f_number_from) ** 2


def matched_iso(iso: float, f_number_from: float, f_number_to: float) -> float:
    """ISO giving the same exposure at ``f_number_to`` with an unchanged shutter: ISO·(N₂/N₁)²."""
    if iso <= 0 or f_number_from <= 0 or f_number_to <= 0:
        raise ValueError("ISO and f-numbers must be > 0")
    return iso * (f_number_to / f_number_from) ** 2


def exposure_stops(shutter_s: float, f_number: float, iso: float) -> float:
    """Exposure in stops relative to 1 s, f/1, ISO 100 (higher = brighter image)."""
    return float(np.log2(shutter_s) - 2.0 * np.log2(f_number) + np.log2(iso / 100.0))
