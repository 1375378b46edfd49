"""``rig optics fit-blur``: fit the DSLR's real blur (paper 1 §4) from f/2.8 + f/8 + depth triplets.

Paper 1 trains on synthetic defocus with "a blur variation that fits the real blur variation of the
DSLR, obtained experimentally". Here the thin-lens model's free parameters — focus distance d_f, PSF
type and Gaussian ρ (σ = ρ·ε) — are searched so that :func:`rig.core.defocus.render_defocus` applied to the
real f/8 image + depth reproduces the real f/2.8 image.

Details that matter:

* The f/8 shot is not sharp: its blur is ε₈ = ε₂.₈ · 2.8/8. Both are Gaussians of the same depth, so
  the f/2.8 image is the f/8 image blurred by σ_diff = √(σ₂.₈² − σ₈²) = σ₂.₈·√(1 − (2.8/8)²) per depth
  (exact for Gaussians away from occlusions). Since ε ∝ 1/N this is the same lens with
  N_diff = (1/N₁² − 1/N₂²)^(−1/2) (2.99 for 2.8 / 8). For the disk PSF the same N_diff matches the
  second moments (disk∘disk is not a disk: an approximation). The in-focus blur γ common to both
  shots cancels too.
* The two shots differ in exposure and may be shifted by a few pixels (the aperture ring is turned
  between them): the f/8 image is aligned to the f/2.8 one by a global translation (phase correlation
  refined by ECC; pairs shifted by more than ``MAX_SHIFT_PX`` are left out), and every comparison
  first matches intensities with a per-image gain/offset least-squares fit.
* Only gradient-rich pixels carry blur information: the error is the mean squared luminance
  difference over the pixels whose local gradient energy in the f/8 image is in the top
  ``GRADIENT_KEEP`` fraction, away from the border and from clipped highlights.
* Search: a coarse grid over focus (0.5–10 m, log-spaced), ρ and PSF with a fast per-pixel
  blur-stack approximation (no occlusion handling), then golden-section refinement of the best
  candidates of each PSF with the real layered renderer; final errors are always from
  ``render_defocus``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rig.core.errors import RigError
from rig.core.optics import Lens

FOCUS_RANGE_M = (0.5, 10.0)
FOCUS_GRID_N = 28
RHO_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)
RHO_RANGE = (0.05, 1.5)
MAX_SHIFT_PX = 4.0
GRADIENT_KEEP = 0.4
BORDER_PX = 16
CLIP_LEVEL = 0.97
DEPTH_EDGE_PX = 4
DEPTH_EDGE_RATIO = 1.1
DEPTH_BINS_M = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, float("inf"))
NYU_LENS = Lens(focal_mm=15.0, f_number=2.8, pixel_um=5.6, focus_m=2.0, downsample=1.0)  # paper 1 §3.2


# ------------------------------------------------------------------------------------ records
@dataclass
class BlurPair:
    """One triplet prepared for fitting: luminance in [0, 1] (H, W) float32, depth (H, W) m.

    aif: the f/8 shot aligned to ``defocused``; mask: pixels used in the error (bool);
    shift_px: (dx, dy) translation found between the shots.
    """

    name: str
    defocused: np.ndarray
    aif: np.ndarray
    depth_m: np.ndarray
    mask: np.ndarray
    shift_px: tuple[float, float] = (0.0, 0.0)


@dataclass
class ModelError:
    """A blur model and its error on the pairs (RMSE in 8-bit grey levels, after gain/offset)."""

    name: str
    psf: str
    focus_m: float | None
    rho: float | None
    rmse_8bit: float
    per_image_rmse_8bit: list[float] = field(default_factory=list)
    per_bin_rmse_8bit: dict[str, float] = field(default_factory=dict)
    lens: dict[str, float] | None = None


# --------------------------------------------------------------------------------- preparation
def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 luminance in [0, 1] (Rec. 601, as OpenCV's grey)."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / np.float32(255.0)


def estimate_shift_px(reference: np.ndarray, moving: np.ndarray) -> tuple[float, float]:
    """Translation (dx, dy) of ``moving`` relative to ``reference`` (both (H, W) float32).

    Phase correlation (Hann window) for the integer part, refined by ECC (translation model) when it
    converges. ``moving(x) ≈ reference(x − (dx, dy))``.
    """
    import cv2

    h, w = reference.shape
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(reference.astype(np.float32), moving.astype(np.float32), win)
    warp = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        _, warp = cv2.findTransformECC(reference.astype(np.float32), moving.astype(np.float32), warp,
                                       cv2.MOTION_TRANSLATION, criteria, None, 5)
    except cv2.error:
        pass
    return float(warp[0, 2]), float(warp[1, 2])


def shift_image(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Resample ``image`` so that a translation ``shift_px`` (as found by estimate_shift_px) is undone."""
    import cv2

    dx, dy = shift_px
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def error_mask(aif: np.ndarray, defocused: np.ndarray, depth_m: np.ndarray, margin_px: int = BORDER_PX,
               keep: float = GRADIENT_KEEP) -> np.ndarray:
    """Pixels where blur is observable: top ``keep`` fraction of smoothed gradient energy of the f/8
    image, ``margin_px`` from the border, away (5 px) from clipped highlights and unknown depth, and
    away (``DEPTH_EDGE_PX``) from depth discontinuities."""
    import cv2

    gx = cv2.Sobel(aif, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(aif, cv2.CV_32F, 0, 1, ksize=3)
    energy = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), 3.0)
    h, w = aif.shape
    inner = np.zeros((h, w), bool)
    m = int(min(margin_px, h // 4, w // 4))
    inner[m:h - m, m:w - m] = True
    bad = ((aif >= CLIP_LEVEL) | (defocused >= CLIP_LEVEL) | ~(depth_m > 0)).astype(np.uint8)
    bad = cv2.dilate(bad, np.ones((11, 11), np.uint8)) > 0
    # depth edges: the blur there depends on the occlusion model and on the depth map's registration
    # (a few px for the Xtion), not on the lens — leave out pixels near a > DEPTH_EDGE_RATIO jump
    d = np.where(depth_m > 0, depth_m, np.float32(np.nanmax(depth_m) if depth_m.size else 1.0)).astype(np.float32)
    k = np.ones((2 * DEPTH_EDGE_PX + 1, 2 * DEPTH_EDGE_PX + 1), np.uint8)
    bad |= cv2.dilate(d, k) > cv2.erode(d, k) * np.float32(DEPTH_EDGE_RATIO)
    ok = inner & ~bad
    if ok.sum() < 16:
        return ok
    thr = np.quantile(energy[ok], 1.0 - keep)
    return ok & (energy >= thr)


def _unit_luminance(image: np.ndarray) -> np.ndarray:
    """RGB or grey, uint8 or float in [0, 1] -> (H, W) float32 in [0, 1]."""
    if image.ndim == 3:
        return luminance(image if image.dtype == np.uint8 else np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return image.astype(np.float32)


def prepare_pair(name: str, defocused_rgb: np.ndarray, aif_rgb: np.ndarray, depth_m: np.ndarray,
                 align: bool = True) -> BlurPair:
    """Luminance, alignment of the f/8 shot onto the f/2.8 one, and the error mask.

    Images: (H, W, 3) RGB uint8, or (H, W) grey uint8 / float in [0, 1]; depth_m (H, W) metres.
    """
    r, a = _unit_luminance(defocused_rgb), _unit_luminance(aif_rgb)
    shift = estimate_shift_px(r, a) if align else (0.0, 0.0)
    if align and max(abs(shift[0]), abs(shift[1])) > 1e-3:
        a = shift_image(a, shift)
    margin = BORDER_PX + int(math.ceil(max(abs(shift[0]), abs(shift[1]))))
    mask = error_mask(a, r, depth_m, margin)
    return BlurPair(name, r, a, depth_m.astype(np.float32), mask, shift)


# ------------------------------------------------------------------------------------- errors
def matched_sq_error(synth: np.ndarray, real: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Squared residuals on ``mask`` after the least-squares gain/offset fit real ≈ g·synth + o."""
    s = synth[mask].astype(np.float64)
    r = real[mask].astype(np.float64)
    a = np.stack([s, np.ones_like(s)], axis=1)
    (g, o), *_ = np.linalg.lstsq(a, r, rcond=None)
    return (g * s + o - r) ** 2


def difference_f_number(n_defocused: float, n_all_in_focus: float) -> float:
    """N_diff with 1/N_diff² = 1/N₁² − 1/N₂²: the blur still missing from the f/N₂ shot (ε ∝ 1/N)."""
    if n_all_in_focus <= n_defocused:
        raise ValueError("the all-in-focus f-number must be larger than the defocused one")
    return 1.0 / math.sqrt(1.0 / n_defocused ** 2 - 1.0 / n_all_in_focus ** 2)


def _bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} m" if math.isfinite(hi) else f">{lo:g} m"


def evaluate(pairs: Sequence[BlurPair], render: Callable[[BlurPair], np.ndarray] | None
             ) -> tuple[float, list[float], dict[str, float]]:
    """(mean MSE, per-image RMSE in 8-bit levels, per-depth-bin RMSE) of ``render`` (None = no blur)."""
    per_image: list[float] = []
    bins_sum = np.zeros(len(DEPTH_BINS_M) - 1)
    bins_n = np.zeros(len(DEPTH_BINS_M) - 1)
    mses = []
    for p in pairs:
        synth = p.aif if render is None else render(p)
        sq = matched_sq_error(synth, p.defocused, p.mask)
        mses.append(float(sq.mean()))
        per_image.append(255.0 * math.sqrt(float(sq.mean())))
        b = np.digitize(p.depth_m[p.mask], DEPTH_BINS_M[1:-1])
        bins_sum += np.bincount(b, weights=sq, minlength=bins_sum.size)
        bins_n += np.bincount(b, minlength=bins_n.size)
    per_bin = {_bin_label(DEPTH_BINS_M[i], DEPTH_BINS_M[i + 1]): 255.0 * math.sqrt(bins_sum[i] / bins_n[i])
               for i in range(bins_n.size) if bins_n[i] > 0}
    return float(np.mean(mses)), per_image, per_bin


def renderer(lens_diff: Lens, psf: str, rho: float, max_step_px: float) -> Callable[[BlurPair], np.ndarray]:
    """The real layered renderer applied to a pair's aligned f/8 luminance."""
    from rig.core.defocus import render_defocus

    def run(p: BlurPair) -> np.ndarray:
        return render_defocus(p.aif, p.depth_m, lens_diff, psf=psf, rho=rho, max_step_px=max_step_px)
    return run


# ------------------------------------------------------------------------- coarse: blur stacks
class BlurStack:
    """The masked pixels of one pair's f/8 image blurred at a ladder of blur sizes.

    Per-pixel linear interpolation between rungs approximates a depth-varying blur without
    occlusion handling — only used to rank the coarse grid.
    """

    def __init__(self, pair: BlurPair, psf: str, sizes: np.ndarray) -> None:
        import cv2

        from rig.core.defocus import disk_kernel, gaussian_kernel_1d

        self.sizes = sizes
        rungs = []
        for s in sizes:
            if psf == "gaussian":
                k = gaussian_kernel_1d(float(s)).astype(np.float32)
                img = pair.aif if k.size == 1 else cv2.sepFilter2D(pair.aif, cv2.CV_32F, k, k,
                                                                     borderType=cv2.BORDER_REFLECT_101)
            else:
                k2 = disk_kernel(float(s)).astype(np.float32)
                img = pair.aif if k2.size == 1 else cv2.filter2D(pair.aif, cv2.CV_32F, k2,
                                                                 borderType=cv2.BORDER_REFLECT_101)
            rungs.append(img[pair.mask])
        self.values = np.stack(rungs)  # (n_sizes, P)
        self.cols = np.arange(self.values.shape[1])

    def sample(self, size_px: np.ndarray) -> np.ndarray:
        s = np.clip(size_px, self.sizes[0], self.sizes[-1])
        i = np.clip(np.searchsorted(self.sizes, s, side="right") - 1, 0, self.sizes.size - 2)
        t = (s - self.sizes[i]) / (self.sizes[i + 1] - self.sizes[i])
        return (1 - t) * self.values[i, self.cols] + t * self.values[i + 1, self.cols]


GAUSS_SIGMAS = np.concatenate([np.arange(0.0, 2.0, 0.2), np.geomspace(2.0, 24.0, 14)])
DISK_DIAMETERS = np.concatenate([np.arange(0.0, 4.0, 0.5), np.geomspace(4.0, 48.0, 12)])


def coarse_grid(pairs: Sequence[BlurPair], lens_diff: Lens, focus_grid: np.ndarray,
                rho_grid: Sequence[float], psfs: Sequence[str]) -> list[dict[str, Any]]:
    """Approximate mean MSE of every (psf, focus, ρ) on the grid (ρ = None for the disk)."""
    from rig.core.optics import blur_diameter_px

    out: list[dict[str, Any]] = []
    for psf in psfs:
        stacks = [BlurStack(p, psf, GAUSS_SIGMAS if psf == "gaussian" else DISK_DIAMETERS) for p in pairs]
        depths = [p.depth_m[p.mask] for p in pairs]
        reals = [p.defocused[p.mask].astype(np.float64) for p in pairs]
        for f in focus_grid:
            lens = lens_diff.with_focus(float(f))
            eps = [blur_diameter_px(d, lens) for d in depths]
            for rho in (rho_grid if psf == "gaussian" else (None,)):
                mse = 0.0
                for st, e, r in zip(stacks, eps, reals):
                    s = st.sample(e * rho if rho is not None else e)
                    a = np.stack([s, np.ones_like(s)], axis=1)
                    (g, o), *_ = np.linalg.lstsq(a, r, rcond=None)
                    mse += float(np.mean((g * s + o - r) ** 2))
                out.append({"psf": psf, "focus_m": float(f), "rho": rho, "mse": mse / len(pairs)})
    return out


CURVE_BINS_M = (0.5, 0.9, 1.1, 1.3, 1.5, 1.75, 2.0, 2.3, 2.6, 3.0, 3.5, 4.0, 6.0)
CURVE_SIGMAS = np.concatenate([np.arange(0.0, 3.0, 0.1), np.arange(3.0, 8.01, 0.5)])


def measured_blur_curve(pairs: Sequence[BlurPair], bins_m: Sequence[float] = CURVE_BINS_M,
                        min_px: int = 2000) -> list[dict[str, float]]:
    """The blur the f/8 shot lacks, measured per depth bin (paper 1's "obtained experimentally").

    For each bin, the single Gaussian σ_diff (px, from a 0.1 px ladder) that best turns the f/8
    pixels of that bin into the f/2.8 ones (gain/offset matched per image). Bins with fewer than
    ``min_px`` pixels are left out. Independent of the thin-lens model: a check on it.
    """
    stacks = [BlurStack(p, "gaussian", CURVE_SIGMAS) for p in pairs]
    out = []
    for lo, hi in zip(bins_m[:-1], bins_m[1:]):
        sse = np.zeros(CURVE_SIGMAS.size)
        n = 0
        for st, p in zip(stacks, pairs):
            d = p.depth_m[p.mask]
            sel = (d >= lo) & (d < hi)
            if sel.sum() < 50:
                continue
            r = p.defocused[p.mask][sel].astype(np.float64)
            for i in range(CURVE_SIGMAS.size):
                v = st.values[i][sel].astype(np.float64)
                a = np.stack([v, np.ones_like(v)], axis=1)
                (g, o), *_ = np.linalg.lstsq(a, r, rcond=None)
                sse[i] += float(np.sum((g * v + o - r) ** 2))
            n += int(sel.sum())
        if n < min_px:
            continue
        i = int(np.argmin(sse))
        out.append({"lo_m": float(lo), "hi_m": float(hi), "depth_m": float(np.sqrt(lo * hi)), "pixels": n,
                    "sigma_diff_px": float(CURVE_SIGMAS[i]), "rmse_8bit": 255.0 * math.sqrt(sse[i] / n),
                    "rmse_no_blur_8bit": 255.0 * math.sqrt(sse[0] / n)})
    return out


# ------------------------------------------------------------------------ refine: real renderer
def golden_min(fn: Callable[[float], float], lo: float, hi: float, iters: int) -> tuple[float, float]:
    """Golden-section minimum of a unimodal ``fn`` on [lo, hi] with ``iters`` evaluations (+2)."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fn(d)
    return (c, fc) if fc <= fd else (d, fd)


PREFERRED_PSF = "gaussian"  # paper 1's PSF; another one must win clearly to replace it
SIGN_TEST_ALPHA = 0.05


def sign_test_p(wins: int, n: int) -> float:
    """Two-sided sign test: probability of a split at least as uneven as ``wins`` of ``n`` by chance."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n)


def choose_best(fits: Sequence[ModelError]) -> tuple[ModelError, str]:
    """The fitted model to adopt, and why.

    The lowest RMSE wins, except that the Gaussian (paper 1's PSF, which also carries ρ) is kept
    unless the other PSF is better on significantly more images (paired two-sided sign test at
    ``SIGN_TEST_ALPHA``): small blurs make the PSF shapes hard to tell apart, and a coin-flip
    difference should not change the PSF every stage uses.
    """
    ranked = sorted(fits, key=lambda m: m.rmse_8bit)
    best = ranked[0]
    pref = next((m for m in ranked if m.psf == PREFERRED_PSF), None)
    if pref is None or best is pref:
        others = [m for m in ranked if m is not best]
        if not others:
            return best, f"psf: only {best.psf} was fitted"
        o = others[0]
        wins = sum(a < b for a, b in zip(best.per_image_rmse_8bit, o.per_image_rmse_8bit))
        return best, (f"psf: {best.psf} (RMSE {best.rmse_8bit:.3f} vs {o.psf} {o.rmse_8bit:.3f}; better on "
                      f"{wins}/{len(best.per_image_rmse_8bit)} images)")
    a, b = best.per_image_rmse_8bit, pref.per_image_rmse_8bit
    wins = sum(x < y for x, y in zip(a, b))
    n = sum(x != y for x, y in zip(a, b))
    p = sign_test_p(wins, n)
    if p < SIGN_TEST_ALPHA:
        return best, (f"psf: {best.psf} (RMSE {best.rmse_8bit:.3f} vs {PREFERRED_PSF} {pref.rmse_8bit:.3f}; "
                      f"better on {wins}/{n} images, sign test p={p:.3g})")
    return pref, (f"psf: {PREFERRED_PSF} kept — {best.psf} is not distinguishable (RMSE {best.rmse_8bit:.3f} vs "
                  f"{pref.rmse_8bit:.3f}, better on only {wins}/{n} images, sign test p={p:.2f} ≥ {SIGN_TEST_ALPHA})")


@dataclass
class FitResult:
    """The search outcome: best model, baselines, and how it was obtained."""

    best: ModelError
    models: list[ModelError]
    curve: list[dict[str, float]]
    coarse_best: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    settings: dict[str, Any]
    seconds: float


def fit_blur(pairs: Sequence[BlurPair], lens_defocused: Lens, n_all_in_focus: float,
             psfs: Sequence[str] = ("gaussian", "disk"), max_step_px: float = 0.5,
             focus_range_m: tuple[float, float] = FOCUS_RANGE_M, focus_grid_n: int = FOCUS_GRID_N,
             rho_grid: Sequence[float] = RHO_GRID, refine_iters: int = 7,
             baselines: dict[str, tuple[Lens, str, float]] | None = None,
             log: Callable[[str], None] | None = None) -> FitResult:
    """Fit focus distance, ρ and PSF so render_defocus(f/8, depth) matches the f/2.8 shots.

    lens_defocused: the rig's f/2.8 lens (focus is searched); n_all_in_focus: the f/8 shot's N (its
    own blur is accounted for by rendering with the difference f-number). ``baselines``: extra named
    models (lens at its f/N₁, psf, ρ) evaluated the same way, e.g. the paper's NYU settings.
    """
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    if not pairs:
        raise RigError("no image triplet to fit the blur on")
    n_diff = difference_f_number(lens_defocused.f_number, n_all_in_focus)
    lens_diff = lens_defocused.with_f_number(n_diff)
    lo_f, hi_f = max(focus_range_m[0], lens_defocused.focal_mm * 1e-3 * 1.5), focus_range_m[1]
    focus_grid = np.geomspace(lo_f, hi_f, focus_grid_n)
    say(f"coarse grid: {focus_grid_n} focus x {len(rho_grid)} ρ (gaussian) + {focus_grid_n} (disk) "
        f"on {len(pairs)} image(s)")
    grid = coarse_grid(pairs, lens_diff, focus_grid, rho_grid, psfs)

    cache: dict[tuple[str, float, float | None], float] = {}

    def real_mse(psf: str, focus_m: float, rho: float | None) -> float:
        key = (psf, round(focus_m, 5), None if rho is None else round(rho, 5))
        if key not in cache:
            render = renderer(lens_diff.with_focus(focus_m), psf, rho if rho is not None else 1.0, max_step_px)
            cache[key] = evaluate(pairs, render)[0]
        return cache[key]

    log_step = math.log(focus_grid[1] / focus_grid[0]) if focus_grid.size > 1 else 0.2
    coarse_best: list[dict[str, Any]] = []
    refined: list[tuple[float, str, float, float | None]] = []
    for psf in psfs:
        cands = sorted((g for g in grid if g["psf"] == psf), key=lambda g: g["mse"])
        if not cands:
            continue
        c = cands[0]
        coarse_best.append(c)
        say(f"{psf}: coarse best focus {c['focus_m']:.3f} m" + (f", ρ {c['rho']:.3f}" if c["rho"] else "")
            + f" (approx. RMSE {255 * math.sqrt(c['mse']):.3f})")
        f_best, rho_best = c["focus_m"], c["rho"]
        # focus (log space), then ρ, then focus again in a narrower bracket
        span = 1.5 * log_step
        for rnd in range(2 if psf == "gaussian" else 1):
            lf, _ = golden_min(lambda x: real_mse(psf, math.exp(x), rho_best),
                               math.log(max(lo_f, f_best * math.exp(-span))),
                               math.log(min(hi_f, f_best * math.exp(span))), refine_iters)
            f_best = math.exp(lf)
            if psf == "gaussian":
                rho_best, _ = golden_min(lambda r: real_mse(psf, f_best, r), max(RHO_RANGE[0], rho_best * 0.6),
                                         min(RHO_RANGE[1], rho_best * 1.6), refine_iters)
            span = 0.5 * log_step
        mse = real_mse(psf, f_best, rho_best)
        refined.append((mse, psf, f_best, rho_best))
        say(f"{psf}: refined focus {f_best:.3f} m" + (f", ρ {rho_best:.3f}" if rho_best else "")
            + f" (RMSE {255 * math.sqrt(mse):.3f}, {len(cache)} renders of {len(pairs)} images so far)")

    def model(name: str, lens: Lens, psf: str, rho: float | None) -> ModelError:
        render = renderer(lens, psf, rho if rho is not None else 1.0, max_step_px)
        mse, per_img, per_bin = evaluate(pairs, render)
        return ModelError(name, psf, lens.focus_m, rho, 255.0 * math.sqrt(mse), per_img, per_bin,
                          {"focal_mm": lens.focal_mm, "f_number_rendered": round(lens.f_number, 4),
                           "pixel_um": lens.pixel_um, "downsample": round(lens.downsample, 4)})

    models: list[ModelError] = []
    for mse, psf, f, rho in sorted(refined):
        models.append(model(f"fit {psf}", lens_diff.with_focus(f), psf, rho))
    mse0, per_img0, per_bin0 = evaluate(pairs, None)
    models.append(ModelError("no blur", "none", None, None, 255.0 * math.sqrt(mse0), per_img0, per_bin0))
    for name, (lens, psf, rho) in (baselines or {}).items():
        nd = difference_f_number(lens.f_number, n_all_in_focus)
        models.append(model(name, lens.with_f_number(nd), psf, rho))
    best, psf_decision = choose_best([m for m in models if m.name.startswith("fit")])
    say(psf_decision)
    curve = measured_blur_curve(pairs)
    for row in curve:  # what each model predicts there (Gaussian σ_diff; a disk's σ is ε/4)
        for m in models:
            if m.lens is None:
                continue
            lens_m = Lens(m.lens["focal_mm"], m.lens["f_number_rendered"], m.lens["pixel_um"],
                          float(m.focus_m or 0.0), m.lens["downsample"])
            from rig.core.optics import blur_diameter_px

            eps = float(blur_diameter_px(row["depth_m"], lens_m))
            row[f"model:{m.name}"] = eps * (m.rho if m.psf == "gaussian" else 0.25)
    settings = {"psf_decision": psf_decision, "n_defocused": lens_defocused.f_number, "n_all_in_focus": n_all_in_focus,
                "n_difference": round(n_diff, 5), "max_step_px": max_step_px,
                "focus_grid_m": [round(float(f), 4) for f in focus_grid], "rho_grid": list(rho_grid),
                "gradient_keep": GRADIENT_KEEP, "border_px": BORDER_PX, "max_shift_px": MAX_SHIFT_PX,
                "renders_per_image": len(cache) + len(models) - 1}
    pinfo = [{"name": p.name, "shift_px": [round(p.shift_px[0], 3), round(p.shift_px[1], 3)],
              "mask_px": int(p.mask.sum())} for p in pairs]
    return FitResult(best, models, curve, coarse_best, pinfo, settings, time.perf_counter() - t0)


# ------------------------------------------------------------------------------ config writing
def write_fit_to_config(path: Path, focus_m: float, psf: str, rho: float | None) -> list[str]:
    """Edit dslr.focus_m, blur.psf (and blur.rho for a Gaussian) in the YAML text, keeping comments;
    validated with load_rig_config before it replaces the file. Returns the changed keys."""
    from rig.core.config import update_config_file

    values = {"dslr.focus_m": f"{focus_m:.3f}", "blur.psf": psf}
    if rho is not None:
        values["blur.rho"] = f"{rho:.3f}"
    cfg = update_config_file(path, values)
    if abs(cfg.dslr.focus_m - round(focus_m, 3)) > 1e-9 or cfg.blur.psf != psf:
        raise RigError(f"{path}: the edited config does not read back the fitted values; left unchanged")
    return list(values)


# ----------------------------------------------------------------------------------------- CLI
def select_evenly(items: Sequence[Any], limit: int) -> list[Any]:
    """``limit`` items spread evenly over ``items`` (all when limit ≥ len)."""
    if limit >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in idx]


def load_pairs(data: Path, limit: int, tolerance_s: float = 0.5,
               log: Callable[[str], None] | None = None) -> tuple[list[BlurPair], list[str]]:
    """Read ``limit`` triplets of a DFD split (timestamp pairing) as aligned BlurPairs; returns
    (pairs, notes on pairs left out)."""
    from rig.core.datasets import find_dfd_triplets
    from rig.core.imageio import read_depth_m, read_rgb

    triplets, unmatched = find_dfd_triplets(Path(data), tolerance_s)
    notes = [f"unmatched: {u}" for u in unmatched]
    if not triplets:
        raise RigError(f"{data}: no f/2.8 + f/8 + depth triplet could be paired")
    pairs: list[BlurPair] = []
    for sid, n2, n8, depth in select_evenly(triplets, limit):
        p = prepare_pair(sid, read_rgb(n2), read_rgb(n8), read_depth_m(depth))
        if max(abs(p.shift_px[0]), abs(p.shift_px[1])) > MAX_SHIFT_PX:
            notes.append(f"left out {sid}: the f/8 shot is shifted by ({p.shift_px[0]:.1f}, {p.shift_px[1]:.1f}) px")
            continue
        if p.mask.sum() < 1000:
            notes.append(f"left out {sid}: too few textured pixels")
            continue
        pairs.append(p)
        if log:
            log(f"  {sid}: shift ({p.shift_px[0]:+.2f}, {p.shift_px[1]:+.2f}) px, {int(p.mask.sum())} px used")
    return pairs, notes


def result_dict(res: FitResult, data: Path, config: Path) -> dict[str, Any]:
    return {"data": str(data), "config": str(config), "seconds": round(res.seconds, 2),
            "best": asdict(res.best), "models": [asdict(m) for m in res.models], "measured_curve": res.curve,
            "coarse_best": res.coarse_best, "pairs": res.pairs, "settings": res.settings}


def print_result(res: FitResult, console: Any, title: str) -> None:
    """Three rich tables: the models, their error per depth bin, the measured blur curve."""
    from rich.table import Table

    none_rmse = next(m.rmse_8bit for m in res.models if m.psf == "none")
    t = Table(title=title)
    for col, just in (("model", "left"), ("PSF", "left"), ("focus m", "right"), ("ρ", "right"),
                      ("f/N drawn", "right"), ("RMSE", "right"), ("÷ no blur", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for m in res.models:
        t.add_row(("[bold]" if m is res.best else "") + m.name, m.psf,
                  "—" if m.focus_m is None else f"{m.focus_m:.3f}", "—" if m.rho is None else f"{m.rho:.3f}",
                  "—" if m.lens is None else f"{m.lens['f_number_rendered']:.3f}",
                  f"{m.rmse_8bit:.3f}", f"{m.rmse_8bit / none_rmse:.3f}")
    console.print(t)
    console.print(f"RMSE: f/2.8 luminance, 8-bit levels, gradient-rich pixels, after a per-image gain/offset "
                  f"match. Each model blurs the aligned f/8 shot by the blur it lacks (f/N drawn = "
                  f"N_diff, 1/N_diff² = 1/2.8² − 1/N_aif²). 'config' = the config file before fitting; "
                  f"'NYU paper' = f=15 mm, 5.6 µm, focus 2 m, ρ 0.3 applied at 645x432.")
    bins = list(res.models[0].per_bin_rmse_8bit)
    tb = Table(title="RMSE per depth bin (8-bit levels)")
    tb.add_column("model")
    for b in bins:
        tb.add_column(b, justify="right")
    for m in res.models:
        tb.add_row(m.name, *[f"{m.per_bin_rmse_8bit.get(b, float('nan')):.2f}" for b in bins])
    console.print(tb)
    if res.curve:
        names = [k for k in res.curve[0] if k.startswith("model:")]
        tc = Table(title="Blur the f/8 shot lacks, σ_diff (px): measured per depth bin vs models")
        for col in ("depth m", "pixels", "measured", *[n[6:] for n in names]):
            tc.add_column(col, justify="right")
        for row in res.curve:
            tc.add_row(f"{row['lo_m']:g}-{row['hi_m']:g}", f"{row['pixels']}", f"{row['sigma_diff_px']:.1f}",
                       *[f"{row[n]:.2f}" for n in names])
        console.print(tc)


def cmd_fit_blur(args: argparse.Namespace) -> int:
    """`rig optics fit-blur --data DIR --config CFG [--limit N] [--write] [--json FILE]`."""
    import cv2
    from rich.console import Console

    from rig.core.config import load_rig_config

    if args.limit < 1:
        raise RigError(f"--limit: must be >= 1, got {args.limit}")
    cfg = load_rig_config(args.config)
    console = Console()
    say = console.print
    data = Path(args.data).expanduser()
    say(f"reading up to {args.limit} triplet(s) from {data}")
    cv2.setNumThreads(max(1, min(2, cv2.getNumberOfCPUs())))
    pairs, notes = load_pairs(data, args.limit, log=say)
    for n in notes:
        say(f"  {n}")
    if not pairs:
        raise RigError(f"{data}: every triplet was left out (see above); nothing to fit")
    h, w = pairs[0].aif.shape
    if (w, h) != tuple(cfg.output.size_px):
        raise RigError(f"{data}: images are {w}x{h} but {cfg.path} says output.size_px "
                       f"{cfg.output.size_px[0]}x{cfg.output.size_px[1]}")
    psf_rho = cfg.blur.rho
    baselines = {
        "config": (cfg.lens("defocused"), cfg.blur.psf, psf_rho),
        "NYU paper": (NYU_LENS, "gaussian", 0.3),
    }
    res = fit_blur(pairs, cfg.lens("defocused"), cfg.dslr.f_number_all_in_focus,
                   max_step_px=cfg.blur.max_layer_step_px, baselines=baselines, log=say)
    print_result(res, console, f"fit-blur on {len(pairs)} triplet(s) of {data} ({res.seconds:.0f} s)")
    b = res.best
    say(f"best: psf={b.psf} focus_m={b.focus_m:.3f}" + (f" rho={b.rho:.3f}" if b.rho is not None else "")
        + f" RMSE {b.rmse_8bit:.3f} (no blur {next(m.rmse_8bit for m in res.models if m.psf == 'none'):.3f})")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result_dict(res, data, Path(cfg.path or args.config)), indent=2, default=float))
        say(f"wrote {out}")
    if args.write:
        if cfg.path is None:
            raise RigError("--write: the config has no file to write to")
        changed = write_fit_to_config(Path(cfg.path), float(b.focus_m), b.psf,
                                      b.rho if b.psf == "gaussian" else None)
        say(f"wrote {', '.join(changed)} into {cfg.path}")
    return 0
