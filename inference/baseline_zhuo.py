"""Classical single-image defocus baseline after Zhuo & Sim 2011 ("Defocus map estimation from a
single image", Pattern Recognition 44(9)) — paper 1's comparison method.

Pipeline (all at the image's own resolution unless said otherwise):

1. edges: Canny on the grey image;
2. blur at edges: the image I is re-blurred with a Gaussian σ0 (≈ 1 px); at an edge blurred by a
   Gaussian σ the gradient-magnitude ratio R = |∇I| / |∇(I ⊛ g_σ0)| = sqrt(σ² + σ0²) / σ, so
   σ = σ0 / sqrt(R² − 1). The measurement itself (Gaussian pre-smoothing ``grad_sigma_px``, central
   differences, sampling of a step) reports a sharp edge as σ_op ≈ 0.9 px, calibrated numerically
   (:func:`operator_sigma_px`); it is removed in quadrature with the lens' in-focus blur γ
   (``cfg.blur.gamma_px``): σ_defocus = sqrt(σ̂² − σ_op² − γ²) (paper 2's σ_defocus = √(λ² − γ²));
3. a joint (cross) bilateral filter over the edge pixels, guided by the image, suppresses outliers
   (noise, shadows, edges too close to each other);
4. propagation to a full map with the matting Laplacian (Levin et al. 2008), as in the paper:
   (L + λD)·σ = λD·σ̂ with D the edge indicator, solved sparsely (SciPy SuperLU) on an
   area-downsampled copy (``work_px`` on the long side; ~2-4 s for 645x432 on one core), upsampled
   back bilinearly;
5. σ → blur-circle diameter ε = σ/ρ (``cfg.blur.rho``; a disk PSF's edge profile has the peak
   gradient of a Gaussian with σ ≈ 0.31ε, so ρ = 0.3 serves both PSFs) → depth with the rig's thin
   lens (:func:`rig.core.optics.depth_from_blur_m`) on the chosen side of the focal plane.

What it can and cannot do (tests/test_baseline_zhuo.py shows each): blur grows on both sides of the
focal plane, so a single defocus map cannot tell in front from behind (``side`` picks one); inside
the depth of field (blur below ~1 px) there is no signal; textureless regions only get a value
propagated from edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rig.core import optics
from rig.core.errors import RigError
from rig.core.optics import Lens

SIDES = ("far", "near")
DEFAULT_CONFIG = "nikon_d200_xtion"  # paper 1's real rig


@dataclass(frozen=True)
class ZhuoParams:
    """Settings of the estimator (pixel units are output pixels).

    sigma0_px: re-blur σ0; grad_sigma_px: scale of the Gaussian-derivative gradient;
    canny_low / canny_high: hysteresis thresholds on the Sobel gradient magnitude of the 8-bit grey
    image (OpenCV units); min_contrast: edges whose gradient magnitude (grey in [0, 1] per px) is
    below it are dropped; max_sigma_px: clip of the edge blur (R ≤ 1 gives this value);
    bilateral_sigma_s_px / bilateral_sigma_r: the joint bilateral filter (spatial σ, range σ on grey
    in [0, 1]); lam: data weight λ of the propagation; eps: matting-Laplacian regulariser;
    work_px: long side of the propagation grid (0 = full resolution).
    """

    sigma0_px: float = 1.0
    grad_sigma_px: float = 0.5
    canny_low: float = 40.0
    canny_high: float = 100.0
    min_contrast: float = 0.02
    max_sigma_px: float = 6.0
    bilateral_sigma_s_px: float = 4.0
    bilateral_sigma_r: float = 0.1
    lam: float = 0.01
    eps: float = 1e-4
    work_px: int = 320


@dataclass
class ZhuoResult:
    """Outputs, all (H, W) float32 at the input size (NaN-free).

    edges: bool edge mask used; sigma_sparse_px: filtered edge blur σ (0 off edges);
    sigma_px: propagated defocus σ; blur_px: blur-circle diameter ε = σ/ρ; depth_m: thin-lens depth
    on ``side`` of the focal plane (far side: ε clipped just below the far asymptote k_cam).
    """

    edges: np.ndarray
    sigma_sparse_px: np.ndarray
    sigma_px: np.ndarray
    blur_px: np.ndarray
    depth_m: np.ndarray
    side: str
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- helpers
def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB or (H, W) grey -> float32 grey in [0, 1]."""
    import cv2

    a = np.asarray(rgb)
    if a.ndim == 3:
        if a.shape[2] != 3:
            raise ValueError(f"expected RGB (H, W, 3), got shape {a.shape}")
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY) if a.dtype == np.uint8 else \
            a.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    elif a.ndim != 2:
        raise ValueError(f"expected an image (H, W[, 3]), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.asarray(a, dtype=np.float32)


def _gauss_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    import cv2

    if sigma_px <= 0:
        return img
    r = max(1, int(math.ceil(4.0 * sigma_px)))
    return cv2.GaussianBlur(img, (2 * r + 1, 2 * r + 1), sigma_px, borderType=cv2.BORDER_REFLECT_101)


def gradient_magnitude(grey: np.ndarray, grad_sigma_px: float) -> np.ndarray:
    """|∇(g_s ⊛ I)| with central differences after a Gaussian of σ = ``grad_sigma_px`` (float32)."""
    import cv2

    g = _gauss_blur(grey, grad_sigma_px)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT_101)
    return np.sqrt(gx * gx + gy * gy)


@lru_cache(maxsize=32)
def operator_sigma_px(params: ZhuoParams) -> float:
    """Blur the measurement itself reports on a perfectly sharp edge (px): the Gaussian
    pre-smoothing, the central difference (derivative of a 2-px box) and the sampling of a step
    between two pixels. Calibrated numerically on an ideal block pattern: σ̂² ≈ σ² + this², so it is
    removed in quadrature (≈ 0.92 px for the defaults)."""
    rng = np.random.default_rng(12345)
    blocks = rng.uniform(0.2, 0.8, (8, 8)).astype(np.float32)
    img = np.kron(blocks, np.ones((12, 12), np.float32))
    edges = detect_edges(img, params)
    raw = edge_sigma(img, edges, params)
    vals = raw[edges & (raw > 0)]
    return float(np.median(vals)) if vals.size else 0.0


def detect_edges(grey: np.ndarray, params: ZhuoParams) -> np.ndarray:
    """Canny edges (bool (H, W)) of a grey image in [0, 1]."""
    import cv2

    u8 = np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)
    return cv2.Canny(u8, params.canny_low, params.canny_high, L2gradient=True) > 0


def edge_sigma(grey: np.ndarray, edges: np.ndarray, params: ZhuoParams) -> np.ndarray:
    """Raw blur σ̂ (px, including the operator blur) at edge pixels from the gradient ratio; 0 elsewhere.

    σ̂ = σ0' / sqrt(R² − 1), where the re-blur is applied on top of the gradient's own smoothing.
    Edges with R ≤ 1 (noise) get ``max_sigma_px``; weak edges (below ``min_contrast``) are dropped.
    """
    g1 = gradient_magnitude(grey, params.grad_sigma_px)
    g2 = gradient_magnitude(_gauss_blur(grey, params.sigma0_px), params.grad_sigma_px)
    out = np.zeros(grey.shape, np.float32)
    m = edges & (g1 > params.min_contrast)
    r = g1[m] / np.maximum(g2[m], 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = params.sigma0_px / np.sqrt(np.maximum(r * r - 1.0, 0.0))
    s = np.where(np.isfinite(s), s, params.max_sigma_px)
    out[m] = np.minimum(s, params.max_sigma_px)
    return out


def joint_bilateral_sparse(values: np.ndarray, mask: np.ndarray, guide: np.ndarray,
                           sigma_s_px: float, sigma_r: float) -> np.ndarray:
    """Joint bilateral filter of a sparse map: each masked pixel becomes the weighted mean of the
    masked pixels within 2σ_s, weights exp(−d²/2σ_s²)·exp(−ΔI²/2σ_r²) on the guide (grey [0, 1]).
    Returns (H, W) float32 (0 off the mask)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros(values.shape, np.float32)
    if ys.size == 0 or sigma_s_px <= 0:
        out[mask] = values[mask]
        return out
    h, w = mask.shape
    r = max(1, int(math.ceil(2.0 * sigma_s_px)))
    vals_full = np.where(mask, values, 0.0).astype(np.float32)
    mask_f = mask.astype(np.float32)
    pad = lambda a: np.pad(a, r, mode="constant")  # noqa: E731
    vp, mp, gp = pad(vals_full), pad(mask_f), pad(guide.astype(np.float32))
    g0 = guide[ys, xs].astype(np.float32)
    num = np.zeros(ys.size, np.float64)
    den = np.zeros(ys.size, np.float64)
    inv_s, inv_r = 1.0 / (2.0 * sigma_s_px ** 2), 1.0 / (2.0 * sigma_r ** 2)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            d2 = dy * dy + dx * dx
            if d2 > r * r:
                continue
            yy, xx = ys + r + dy, xs + r + dx
            m = mp[yy, xx]
            if not m.any():
                continue
            dg = gp[yy, xx] - g0
            wgt = m * np.exp(-d2 * inv_s - dg * dg * inv_r)
            num += wgt * vp[yy, xx]
            den += wgt
    out[ys, xs] = (num / np.maximum(den, 1e-12)).astype(np.float32)
    return out


def matting_laplacian(image: np.ndarray, eps: float = 1e-4, radius: int = 1):
    """Matting Laplacian of Levin et al. (2008) for a (h, w, C) float image; scipy CSR (h·w)².

    L_ij = Σ_k∈windows(i,j) [δ_ij − (1 + (I_i − μ_k)ᵀ (Σ_k + ε/|w| I)⁻¹ (I_j − μ_k)) / |w|]
    over the (2r+1)² windows fully inside the image.
    """
    import scipy.sparse as sp
    from numpy.lib.stride_tricks import sliding_window_view

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    n = h * w
    k = 2 * radius + 1
    nw = k * k
    if h < k or w < k:
        return sp.csr_matrix((n, n))
    idx = np.arange(n).reshape(h, w)
    win_idx = sliding_window_view(idx, (k, k)).reshape(-1, nw)  # (M, nw)
    patches = img.reshape(n, c)[win_idx]  # (M, nw, C)
    mu = patches.mean(axis=1, keepdims=True)
    x = patches - mu
    cov = np.einsum("mic,mid->mcd", x, x) / nw + (eps / nw) * np.eye(c)[None]
    inv = np.linalg.inv(cov)
    y = np.einsum("mic,mcd->mid", x, inv)
    vals = (1.0 + np.einsum("mid,mjd->mij", y, x)) / nw  # (M, nw, nw)
    rows = np.repeat(win_idx, nw, axis=1).ravel()
    cols = np.tile(win_idx, (1, nw)).ravel()
    a = sp.coo_matrix((vals.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(deg) - a).tocsr()


def propagate(sparse: np.ndarray, mask: np.ndarray, rgb: np.ndarray, params: ZhuoParams) -> np.ndarray:
    """Full map from sparse edge values: (L + λD)x = λD·s on a grid of ``work_px`` long side.

    The sparse values are averaged into the coarse cells (D = fraction of edge pixels, capped at 1);
    the result is upsampled bilinearly to (H, W). float32.
    """
    import cv2
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    h, w = mask.shape
    if not mask.any():
        raise RigError("no edges found: the image has no texture to estimate defocus from "
                       "(lower --canny-low/--canny-high?)")
    scale = 1.0 if params.work_px <= 0 else min(1.0, params.work_px / max(h, w))
    hs, ws = max(3, int(round(h * scale))), max(3, int(round(w * scale)))
    img = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    small = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA) if (hs, ws) != (h, w) else img
    ys, xs = np.nonzero(mask)
    cy = np.minimum((ys * hs) // h, hs - 1)
    cx = np.minimum((xs * ws) // w, ws - 1)
    cell = cy * ws + cx
    n = hs * ws
    cnt = np.bincount(cell, minlength=n).astype(np.float64)
    tot = np.bincount(cell, weights=sparse[ys, xs].astype(np.float64), minlength=n)
    s = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    px_per_cell = (h / hs) * (w / ws)
    conf = np.minimum(cnt / max(px_per_cell / 4.0, 1.0), 1.0)  # a cell 1/4 covered by edges counts fully
    lap = matting_laplacian(small, params.eps)
    a = (lap + params.lam * sp.diags(conf)).tocsc()
    b = params.lam * conf * s
    try:  # symmetric positive (semi)definite: a symmetric fill-reducing ordering is ~3x faster than COLAMD
        x = spla.splu(a, permc_spec="MMD_AT_PLUS_A").solve(b)
    except RuntimeError as e:  # exactly singular factor
        raise RigError(f"defocus propagation failed ({e}); try a larger --lam") from None
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise RigError("defocus propagation failed (singular system); try a larger --lam")
    x = np.clip(x, 0.0, params.max_sigma_px).reshape(hs, ws).astype(np.float32)
    if (hs, ws) != (h, w):
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    return x


# ------------------------------------------------------------------------------------------- main
def sigma_to_depth_m(sigma_px: np.ndarray, lens: Lens, rho: float, side: str = "far",
                     margin: float = 0.98) -> tuple[np.ndarray, np.ndarray]:
    """(blur diameter ε = σ/ρ, depth on ``side``), both float32 (H, W).

    On the far side ε is clipped below ``margin``·k_cam (the blur of a point at infinity)."""
    if side not in SIDES:
        raise RigError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    if not rho > 0:
        raise RigError(f"rho must be > 0, got {rho}")
    k = optics.k_cam_px(lens)
    eps_px = np.maximum(np.asarray(sigma_px, dtype=np.float64) / rho, 0.0)
    if side == "far":
        eps_px = np.minimum(eps_px, margin * k)
    depth = optics.depth_from_blur_m(eps_px, lens, side=side)  # type: ignore[arg-type]
    return eps_px.astype(np.float32), depth.astype(np.float32)


def estimate_defocus(rgb: np.ndarray, lens: Lens, rho: float = optics.PAPER1_RHO, gamma_px: float = 0.0,
                     side: str = "far", params: ZhuoParams | None = None) -> ZhuoResult:
    """Defocus map and thin-lens depth from one RGB image (H, W, 3) uint8.

    gamma_px: the lens' in-focus Gaussian blur σ (px), removed in quadrature together with the
    operator blur (:func:`operator_sigma_px`).
    """
    p = params or ZhuoParams()
    if side not in SIDES:
        raise RigError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise RigError(f"expected an RGB image (H, W, 3), got shape {a.shape}")
    grey = to_grey(a)
    edges = detect_edges(grey, p)
    raw = edge_sigma(grey, edges, p)
    used = edges & (raw > 0)
    floor = math.hypot(operator_sigma_px(p), gamma_px)
    sig = np.zeros_like(raw)
    sig[used] = np.sqrt(np.maximum(raw[used] ** 2 - floor ** 2, 0.0))
    filt = joint_bilateral_sparse(sig, used, grey, p.bilateral_sigma_s_px, p.bilateral_sigma_r)
    full = propagate(filt, used, a, p)
    blur, depth = sigma_to_depth_m(full, lens, rho, side)
    info = {"n_edges": int(used.sum()), "edge_fraction": float(used.mean()), "floor_sigma_px": floor,
            "k_cam_px": optics.k_cam_px(lens), "rho": rho, "focus_m": lens.focus_m}
    return ZhuoResult(edges=used, sigma_sparse_px=filt, sigma_px=full, blur_px=blur, depth_m=depth,
                      side=side, info=info)


def lens_for_image(cfg: Any, width_px: int, focus_m: float | None = None) -> Lens:
    """The defocused-aperture thin lens of ``cfg`` at an image ``width_px`` wide (blur scales with it)."""
    lens = cfg.lens("defocused", focus_m=focus_m)
    return Lens(focal_mm=lens.focal_mm, f_number=lens.f_number, pixel_um=lens.pixel_um, focus_m=lens.focus_m,
                downsample=cfg.dslr.sensor_px[0] / float(width_px))


def fit_to_output(rgb: np.ndarray, cfg: Any) -> np.ndarray:
    """Area-downsample an image much wider than the config's output size (a full DSLR frame) to it."""
    import cv2

    h, w = rgb.shape[:2]
    tw = int(cfg.output.size_px[0])
    if w <= tw * 1.25:
        return rgb
    th = int(round(h * tw / w))
    return cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)


def estimate_for_config(rgb: np.ndarray, cfg: Any, side: str = "far", params: ZhuoParams | None = None,
                        rho: float | None = None, gamma_px: float | None = None,
                        focus_m: float | None = None) -> ZhuoResult:
    """:func:`estimate_defocus` with the lens, ρ and γ of a rig config (image at its own width)."""
    lens = lens_for_image(cfg, rgb.shape[1], focus_m)
    return estimate_defocus(rgb, lens, rho=cfg.blur.rho if rho is None else rho,
                            gamma_px=cfg.blur.gamma_px if gamma_px is None else gamma_px,
                            side=side, params=params)


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class EvalSample:
    """One evaluated image: rgb (H, W, 3) uint8, depth_m (H, W) float32 (0 = unknown), valid bool."""

    sample_id: str
    rgb: np.ndarray
    depth_m: np.ndarray
    valid: np.ndarray


def iter_eval_samples(data_dir: Path | str, split: str, input_kind: str = "N2_8",
                      limit: int | None = None, meta: dict[str, Any] | None = None) -> tuple[str, str, list[str], Any]:
    """(root label, split label, ids, iterator of :class:`EvalSample`) for a dataset split.

    ``data_dir`` is a rig.core.dataset folder (manifest.yaml) or paper 1's DFD release in either layout
    (rig.core.datasets: files paired by nearest name timestamp), e.g. ../shared/data/dfd_indoor.
    ``meta``: a model's metadata, so that split 'val' means the validation ids recorded in it (as in
    ``rig eval``).
    """
    from rig.core import dataset as rds

    if input_kind not in ("N2_8", "N8"):
        raise RigError(f"input must be N2_8 or N8, got {input_kind!r}")
    root = Path(data_dir)
    if (root / rds.MANIFEST).is_file():
        from inference.evaluate import resolve_eval_set

        es = resolve_eval_set(root, split, meta or {})
        ids = es.ids[:limit] if limit else es.ids

        def gen_ds():
            for sid in ids:
                smp = rds.read_sample(es.root, es.split_dir, sid, kinds=(input_kind, "depth", "valid"))
                rgb = smp.defocused_rgb if input_kind == "N2_8" else smp.all_in_focus_rgb
                if rgb is None:
                    raise RigError(f"{rds.sample_path(es.root, es.split_dir, input_kind, sid)}: missing input image")
                yield EvalSample(sid, rgb, smp.depth_m, (smp.valid > 0) & (smp.depth_m > 0))

        return str(es.root), es.label, ids, gen_ds()
    from rig.core.datasets import find_dfd_triplets
    from rig.core.imageio import read_depth_m, read_rgb

    if not root.is_dir():
        raise RigError(f"{root}: no such folder (expected a dataset folder or the DFD release)")
    triplets, _ = find_dfd_triplets(root, split=split)
    triplets = triplets[:limit] if limit else triplets
    if not triplets:
        raise RigError(f"{root}: split {split!r} has no complete (N2_8, N8, depth) triplet")

    def gen_rel():
        import cv2

        for sid, n2, n8, dp in triplets:
            rgb = read_rgb(n2 if input_kind == "N2_8" else n8)
            depth = read_depth_m(dp)
            if rgb.shape[:2] != depth.shape:
                rgb = cv2.resize(rgb, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_AREA)
            yield EvalSample(sid, rgb, depth, depth > 0)

    return str(root), split, [t[0] for t in triplets], gen_rel()


def other_side_oracle(res: ZhuoResult, lens: Lens, gt_m: np.ndarray) -> np.ndarray:
    """Depth when each pixel takes the side of the focal plane its ground truth lies on (float32)."""
    near = optics.depth_from_blur_m(res.blur_px, lens, side="near")
    far = optics.depth_from_blur_m(res.blur_px, lens, side="far")
    return np.where(gt_m > lens.focus_m, far, near).astype(np.float32)


def evaluate_baseline(data_dir: Path | str, split: str, cfg: Any, input_kind: str = "N2_8", side: str = "far",
                      params: ZhuoParams | None = None, limit: int | None = None,
                      min_depth_m: float | None = None, max_depth_m: float | None = None,
                      progress: bool = False, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of the baseline on a dataset split, the way ``rig eval`` reports a network.

    ``data_dir``: a rig.core.dataset folder or the DFD release (see :func:`iter_eval_samples`).
    Returns {'method', 'data', 'split', 'input', 'side', 'config', 'n_images', 'metrics' (mean over
    images, :mod:`inference.metrics`), 'pooled', 'oracle_side' (mean metrics when each pixel takes the
    side of the focal plane its ground truth is on: what the front/behind ambiguity costs),
    'sensor_range' (mean metrics with the depth clipped to the rig's depth-sensor range
    [depth_sensor.min_m, max_m], a prior an indoor rig has: far-side blow-ups of near scenes end at
    max_m), 'per_image', 'settings'}. ``meta``: see :func:`iter_eval_samples`.
    """
    from inference.metrics import depth_metrics, mean_metrics, pooled_metrics

    root, label, ids, samples = iter_eval_samples(data_dir, split, input_kind, limit, meta)
    per_image, oracle, clipped, preds, gts, valids = [], [], [], [], [], []
    lo_m, hi_m = cfg.depth_sensor.min_m, cfg.depth_sensor.max_m
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as prog:
        task = prog.add_task(f"baseline on {len(ids)} images", total=len(ids))
        for smp in samples:
            res = estimate_for_config(smp.rgb, cfg, side, params)
            m = depth_metrics(res.depth_m, smp.depth_m, smp.valid, min_depth_m, max_depth_m)
            per_image.append({"id": smp.sample_id, **m, "edge_fraction": res.info["edge_fraction"],
                              "median_blur_px": float(np.median(res.blur_px))})
            best = other_side_oracle(res, lens_for_image(cfg, smp.rgb.shape[1]), smp.depth_m)
            oracle.append(depth_metrics(best, smp.depth_m, smp.valid, min_depth_m, max_depth_m))
            clipped.append(depth_metrics(np.clip(res.depth_m, lo_m, hi_m), smp.depth_m, smp.valid, min_depth_m,
                                         max_depth_m))
            preds.append(res.depth_m)
            gts.append(smp.depth_m)
            valids.append(smp.valid)
            prog.update(task, advance=1)
    mean = mean_metrics(per_image)
    return {"method": "zhuo-sim-2011", "data": root, "split": label, "input": input_kind, "side": side,
            "config": cfg.name, "n_images": mean.pop("n_images"), "metrics": mean,
            "pooled": pooled_metrics(preds, gts, valids, min_depth_m, max_depth_m),
            "oracle_side": {k: v for k, v in mean_metrics(oracle).items() if k != "n_images"},
            "sensor_range": {k: v for k, v in mean_metrics(clipped).items() if k != "n_images"},
            "per_image": per_image,
            "settings": {"params": dict((params or ZhuoParams()).__dict__), "rho": cfg.blur.rho,
                         "gamma_px": cfg.blur.gamma_px, "focus_m": cfg.dslr.focus_m,
                         "sensor_range_m": [lo_m, hi_m],
                         "min_depth_m": min_depth_m, "max_depth_m": max_depth_m, "aggregate": "mean over images"}}
