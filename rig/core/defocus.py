"""Layered synthetic defocus (paper 1 Eq. 1-2, after Hasinoff & Kutulakos 2007).

An all-in-focus image ``A`` and its depth are cut into fronto-parallel layers whose blur-circle
diameters differ by ``max_step_px`` (uniform steps of the *signed* thin-lens blur, which is uniform
in inverse depth: the blur-vs-depth curve on both sides of the focal plane, not a metric step).
Layer ``k`` (0 = nearest) has occlusion mask ``M_k`` and PSF ``h_k`` (Gaussian σ = ρ·ε or a disk of
diameter ε). Front-to-back "over" compositing (Eq. 1-2)::

    I = Σ_k (h_k ⊛ X_k·A_k) · Π_{j<k} (1 − h_j ⊛ X_j)

where ``X_k ⊇ M_k`` is the layer *extended behind nearer occluders* and ``A_k`` its colour
inpainted there, so a far layer cut by a near object keeps full coverage under the object's blurred
edge and neither darkens there nor lets the near colour into its own blur; near layers blur over
far ones, never the reverse. A pixel of a nearer layer j joins ``X_k`` when it lies within
``r_k + 1 + r_j`` px (Chebyshev; r = PSF radii) of the visible layer k — the band where j's blurred
edge lets light through, plus the reach of k's own blur — and takes the mean colour of the visible
layer-k pixels around it (normalised box filter). The sum is finally divided by the accumulated
coverage ``1 − Π_k (1 − h_k ⊛ X_k)`` (1 almost everywhere), so a flat image stays exactly flat.

Speed (:func:`render_defocus`): each layer is prepared and blurred only inside boxes around its
pieces (support grown by the PSF radius + 1: exact, the stack is zero outside ``X_k``), with the
separable Gaussian (``cv2.sepFilter2D``) on planar float32 stacks [premultiplied colour, coverage];
layers are prepared and blurred on OpenCV's thread count and composited in order.
:func:`render_defocus_direct` is the straightforward reference (whole-frame masks, extension and
``cv2.filter2D`` with the 2-D kernel per layer) with the same output to float32 rounding;
:func:`render_defocus_torch` is the same algorithm with the blur and compositing in PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from rig.core import optics
from rig.core.optics import Lens

PsfKind = Literal["gaussian", "disk"]
PSF_KINDS: tuple[str, ...] = ("gaussian", "disk")
GAUSS_TRUNCATE = 3.0  # Gaussian kernels reach ceil(3σ) pixels
_COVERAGE_EPS = 1e-6


# --------------------------------------------------------------------------------------------- PSFs
def _integrated_gaussian(sigma_px: float) -> np.ndarray:
    from scipy.special import erf

    r = max(1, int(math.ceil(GAUSS_TRUNCATE * max(sigma_px, 0.34))))
    x = np.arange(-r, r + 1, dtype=np.float64)
    s = max(sigma_px, 1e-9) * math.sqrt(2.0)
    k = 0.5 * (erf((x + 0.5) / s) - erf((x - 0.5) / s))
    return k / k.sum()


def _variance(k: np.ndarray) -> float:
    x = np.arange(k.size, dtype=np.float64) - k.size // 2
    return float(np.sum(k * x * x))


@lru_cache(maxsize=4096)
def gaussian_kernel_1d(sigma_px: float) -> np.ndarray:
    """1-D Gaussian blur kernel whose variance is exactly σ² px² (float64, sums to 1, radius
    ≥ ceil(3σ)); σ ≤ 0 -> [1].

    The images it blurs are already pixel-integrated (rendered with anti-aliasing, or captured), so
    the kernel must add σ², not σ² + 1/12 as a Gaussian integrated over a pixel would: it is a
    pixel-integrated Gaussian of the σ' < σ that gives variance σ² (bisection). Blur then composes
    exactly (σ1 then σ2 = √(σ1² + σ2²)) and an in-focus image keeps no extra blur, so a blur measured
    on rendered images (``rig calibrate blur``) is the σ the optics asked for. Callers must not
    modify the returned (cached) array.
    """
    if sigma_px <= 1e-6:
        return np.ones(1)
    target = float(sigma_px) ** 2
    lo, hi = 0.0, float(sigma_px) + 1.0  # small σ: σ' > σ; large σ: σ' < σ
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _variance(_integrated_gaussian(mid)) < target:
            lo = mid
        else:
            hi = mid
    k = _integrated_gaussian(hi)
    r = max(1, int(math.ceil(GAUSS_TRUNCATE * sigma_px)))
    if k.size < 2 * r + 1:
        k = np.pad(k, ((2 * r + 1 - k.size) // 2,))
    k.setflags(write=False)
    return k


def disk_kernel(diameter_px: float, supersample: int = 9) -> np.ndarray:
    """Anti-aliased uniform disk of the given diameter (float64 (2r+1, 2r+1), sums to 1); ε ≤ 1 -> [[1]]."""
    radius = 0.5 * float(diameter_px)
    if radius <= 0.5:
        return np.ones((1, 1))
    r = int(math.ceil(radius + 0.5)) - 1
    n = 2 * r + 1
    sub = (np.arange(n * supersample) + 0.5) / supersample - (r + 0.5)
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (xx * xx + yy * yy <= radius * radius).astype(np.float64)
    k = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return k / k.sum()


@dataclass(frozen=True)
class Psf:
    """A layer's PSF: separable (``k1d``, the same along x and y) or only a full 2-D kernel ``k2d``.

    Kernels are float32, sum to 1, and are read-only (they are cached).
    """

    kind: str
    diameter_px: float
    k1d: np.ndarray | None
    k2d: np.ndarray

    @property
    def radius_px(self) -> int:
        return self.k2d.shape[0] // 2

    @property
    def is_identity(self) -> bool:
        return self.k2d.shape == (1, 1)


@lru_cache(maxsize=512)
def make_psf(diameter_px: float, psf: str = "gaussian", rho: float = optics.PAPER1_RHO) -> Psf:
    """PSF for a blur-circle diameter ε (output px): Gaussian σ = ρ·ε or a disk of diameter ε."""
    if psf == "gaussian":
        k = gaussian_kernel_1d(float(optics.gaussian_sigma_px(diameter_px, rho)))
        k1, k2 = k.astype(np.float32), np.outer(k, k).astype(np.float32)
    elif psf == "disk":
        k1, k2 = None, disk_kernel(diameter_px).astype(np.float32)
    else:
        raise ValueError(f"psf must be one of {PSF_KINDS}, got {psf!r}")
    for a in (k1, k2):
        if a is not None:
            a.flags.writeable = False
    return Psf(psf, float(diameter_px), k1, k2)


# ----------------------------------------------------------------------------------------- layers
def fill_depth(depth_m: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Replace unknown depth (≤ 0, NaN, inf, or ``valid`` False) by the nearest known value.

    depth_m: (H, W) metres. Returns float32 (H, W). Raises ValueError when nothing is known.
    """
    import cv2

    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    known = np.isfinite(d) & (d > 0)
    if valid is not None:
        if valid.shape != d.shape:
            raise ValueError(f"valid mask shape {valid.shape} != depth shape {d.shape}")
        known &= valid.astype(bool)
    if known.all():
        return d
    if not known.any():
        raise ValueError("depth has no valid pixel (all ≤ 0, NaN or masked)")
    _, labels = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(labels.max()) + 1, np.float32)
    lut[labels[known]] = d[known]
    return lut[labels]


@dataclass(frozen=True)
class DepthLayers:
    """Depth cut into layers of equal blur step (layer 0 = nearest).

    index: (H, W) int32 layer of each pixel; signed_blur_px: (K,) signed blur diameter of each layer
    (negative in front of the focal plane, 0 = in focus, positive behind); edges_m: (K+1,) depth
    boundaries (increasing; the last may be inf); counts: (K,) pixels per layer (some may be 0).
    """

    index: np.ndarray
    signed_blur_px: np.ndarray
    edges_m: np.ndarray
    counts: np.ndarray
    step_px: float

    @property
    def diameter_px(self) -> np.ndarray:
        """Blur-circle diameter ε (px) of each layer."""
        return np.abs(self.signed_blur_px)

    def __len__(self) -> int:
        return int(self.signed_blur_px.shape[0])

    def mask(self, k: int) -> np.ndarray:
        """Occlusion mask M_k (H, W) bool."""
        return self.index == k


def depth_layers(depth_m: np.ndarray, lens: Lens, max_step_px: float = 0.5,
                 valid: np.ndarray | None = None) -> DepthLayers:
    """Cut depth (H, W, m) into layers whose blur diameters step by ``max_step_px``.

    The signed blur s(d) = k_cam·(1 − d_f/d) is monotonic in depth, so layers are the bins of a grid
    of spacing ``max_step_px`` in s centred on the focal plane (s = 0 is a layer centre): every
    pixel's true blur is within ``max_step_px / 2`` of its layer's, adjacent layers differ by exactly
    ``max_step_px``, and the depth boundaries follow the blur curve on each side of the focal plane.
    Unknown depth is first filled from the nearest known pixel (:func:`fill_depth`).
    """
    if not max_step_px > 0:
        raise ValueError(f"max_step_px must be > 0, got {max_step_px}")
    d = fill_depth(depth_m, valid)
    k_cam = optics.k_cam_px(lens)
    # signed blur s = k_cam·(1 − d_f/d) in layer steps (float32: the layer of a pixel exactly on a
    # boundary may differ from float64's, by one step, harmlessly)
    steps = np.float32(k_cam / max_step_px) * (np.float32(1.0) - np.float32(lens.focus_m) / d)
    j = np.rint(steps).astype(np.int32)
    j_lo, j_hi = int(j.min()), int(j.max())
    index = j - np.int32(j_lo)
    centres = np.arange(j_lo, j_hi + 1, dtype=np.float64) * max_step_px
    bounds_s = np.arange(j_lo - 0.5, j_hi + 1.0, 1.0) * max_step_px
    ratio = bounds_s / k_cam
    with np.errstate(divide="ignore"):
        edges = np.where(ratio < 1.0, lens.focus_m / np.maximum(1.0 - ratio, 0.0), np.inf)
    counts = np.bincount(index.ravel(), minlength=centres.size)
    return DepthLayers(index=index, signed_blur_px=centres, edges_m=edges, counts=counts,
                       step_px=float(max_step_px))


# --------------------------------------------------------------------------- per-layer preparation
@dataclass(frozen=True)
class LayerPart:
    """A piece of one layer: ``stack`` (C+1, h, w) float32 = [X_k·A_k (C planes), X_k] inside ``box``.

    box = (y0, y1, x0, x1): the piece's support grown by the PSF radius + 1, clipped to the image.
    The stack is zero outside X_k, so blurring the box alone equals blurring the whole frame there
    (the +1 makes reflect-101 borders at an inner edge of the box reflect zeros only). The boxes of
    one layer's parts are disjoint, and stay disjoint after blurring.
    """

    box: tuple[int, int, int, int]
    stack: np.ndarray


@dataclass(frozen=True)
class LayerJob:
    """One occupied layer ``k`` (0 = nearest) with its PSF and its disjoint parts."""

    k: int
    psf: Psf
    parts: tuple[LayerPart, ...]


@dataclass(frozen=True)
class LayerPlan:
    """What every layer needs, computed once: occupied layers (nearest first), their PSFs, the PSF
    radius of every grid layer ``radius_px`` (K,) and the largest reach of each layer's extension
    ``extend_px[k] = r_k + 1 + max_{j<k} r_j`` (0 for the nearest layer)."""

    layers: DepthLayers
    occupied: tuple[int, ...]
    psfs: dict[int, Psf]
    radius_px: np.ndarray
    extend_px: dict[int, int]
    slices: list  # bounding (row, col) slices of each layer (scipy.ndimage.find_objects)


def layer_plan(layers: DepthLayers, psf: str = "gaussian", rho: float = optics.PAPER1_RHO) -> LayerPlan:
    from scipy import ndimage

    occupied = tuple(int(k) for k in np.flatnonzero(layers.counts))
    psfs = {k: make_psf(float(layers.diameter_px[k]), psf, rho) for k in occupied}
    # PSF radius of every grid layer, empty ones too (V-shaped in k: bounds in layer_job rely on it)
    radius = np.array([make_psf(float(e), psf, rho).radius_px for e in layers.diameter_px], np.int32)
    extend: dict[int, int] = {}
    reach = -1  # largest PSF radius of the nearer occupied layers (-1: none)
    for k in occupied:
        r = psfs[k].radius_px
        extend[k] = r + 1 + reach if reach >= 0 else 0
        reach = max(reach, r)
    slices = ndimage.find_objects(layers.index + 1, max_label=len(layers))
    return LayerPlan(layers, occupied, psfs, radius, extend, slices)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the True pixels of a non-empty (H, W) bool mask."""
    import cv2

    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    return y, y + bh, x, x + bw


def _grow(box: tuple[int, int, int, int], r: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    return max(0, y0 - r), min(shape[0], y1 + r), max(0, x0 - r), min(shape[1], x1 + r)


def _as_planar(rgb: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float image -> (C, H, W) float32 (uint scaled to [0, 1])."""
    a = np.asarray(rgb)
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype == np.uint8:
        scale = np.float32(1.0 / 255.0)
    elif a.dtype == np.uint16:
        scale = np.float32(1.0 / 65535.0)
    elif np.issubdtype(a.dtype, np.floating):
        scale = None
    else:
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {a.dtype}")
    planar = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)
    if scale is not None:
        planar *= scale
    return planar


def _from_planar(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """(C, H, W) float32 -> the shape and dtype of ``like`` (uint rounded and clipped)."""
    import cv2

    like = np.asarray(like)
    c = out.shape[0]
    if like.dtype == np.uint8 and c <= 4:
        hwc = out[0] if c == 1 else cv2.merge(list(out))
        res = cv2.convertScaleAbs(np.maximum(hwc, 0.0), alpha=255.0)  # saturating, rounded
        return res if like.ndim == 3 or res.ndim == 2 else res[..., 0]
    hwc = out[0] if like.ndim == 2 else np.ascontiguousarray(out.transpose(1, 2, 0))
    if like.dtype == np.uint8:
        return np.clip(np.rint(hwc * np.float32(255.0)), 0, 255).astype(np.uint8)
    if like.dtype == np.uint16:
        return np.clip(np.rint(hwc * np.float32(65535.0)), 0, 65535).astype(np.uint16)
    return hwc.astype(like.dtype, copy=False)


def _runs(occupied: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1-D bool array, merging runs closer than ``min_gap``."""
    idx = np.flatnonzero(occupied)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > min_gap)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    stops = np.concatenate((idx[breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), stops.tolist()))


def _split(mask: np.ndarray, min_gap: int) -> list[tuple[int, int, int, int]]:
    """XY-cut: boxes (y0, y1, x0, x1) covering ``mask``, more than ``min_gap`` px apart."""
    boxes = []
    for y0, y1 in _runs(mask.any(axis=1), min_gap):
        for x0, x1 in _runs(mask[y0:y1].any(axis=0), min_gap):
            boxes.append((y0, y1, x0, x1))
    return boxes


def _extension(idx: np.ndarray, k: int, plan: LayerPlan) -> np.ndarray:
    """Pixels of nearer layers that join layer k's extension, in a window of the layer index.

    A pixel q of a nearer layer j joins when its Chebyshev distance to a visible pixel of layer k
    is at most r_k + 1 + r_j (PSF radii): the band where the blurred edge of layer j lets light
    through to layer k, plus the reach of layer k's own blur. idx: (h, w) int32 window that holds
    every visible pixel of k within that distance. Returns (h, w) bool.
    """
    import cv2

    nearer = idx < k
    if not nearer.any():
        return nearer
    dist = cv2.distanceTransform((idx != k).view(np.uint8), cv2.DIST_C, 3)  # exact L∞, 0 on layer k
    limit = plan.radius_px[idx] + np.float32(plan.psfs[k].radius_px + 1)
    return nearer & (dist <= limit)


def _extended_stack(col: np.ndarray, own: np.ndarray, ext: np.ndarray, fill_px: int) -> np.ndarray:
    """The layer's stack [X·A (C planes), X] (C+1, h, w) float32 with X = own ∪ ext.

    Extension pixels take the mean colour of the visible layer pixels in the (2·fill_px+1)² window
    around them (normalised box filter: smooth inpainting from the layer's own colours only, so
    nearer colours never leak into it). col: (C, h, w) colours; own, ext: (h, w) bool.
    """
    import cv2

    c = col.shape[0]
    ownf = own.astype(np.float32)
    stack = np.empty((c + 1,) + own.shape, np.float32)
    for i in range(c):
        cv2.multiply(col[i], ownf, dst=stack[i])
    stack[c] = ownf
    if ext.any():
        ksize = (2 * fill_px + 1, 2 * fill_px + 1)
        # one interleaved box filter over [colour·own, own] (OpenCV filters <= 4 channels together)
        sums = cv2.split(cv2.boxFilter(cv2.merge(list(stack)), -1, ksize, normalize=False,
                                       borderType=cv2.BORDER_CONSTANT))
        where = np.flatnonzero(ext)
        inv_w = np.float32(1.0) / sums[c].ravel()[where]  # > 0: every extension pixel sees own pixels
        for i in range(c):
            stack[i].ravel()[where] = sums[i].ravel()[where] * inv_w
        stack[c].ravel()[where] = 1.0
    return stack


def layer_job(image: np.ndarray, plan: LayerPlan, k: int) -> LayerJob:
    """Layer ``k`` extended behind nearer occluders, cut into disjoint boxed parts.

    image: (C, H, W) float32 planar. Parts are the XY-cut pieces of the visible layer further than
    2·(extend + r + 1) px apart, each worked on in a window holding the piece and the nearer pixels
    that can join it, so a layer present at both ends of the image is not processed over the whole
    frame. Same stacks as :func:`layer_job_full_frame`, placed in boxes.
    """
    c, h, w = image.shape
    index = plan.layers.index
    p = plan.psfs[k]
    r, extend = p.radius_px, plan.extend_px[k]
    sl = plan.slices[k]
    oy, ox = sl[0].start, sl[1].start
    parts = []
    for py0, py1, px0, px1 in _split(index[sl] == k, 2 * (extend + r + 1) + 1):
        part = (py0 + oy, py1 + oy, px0 + ox, px1 + ox)
        y0, y1, x0, x1 = part
        ext = None
        if extend > 0:
            gy0, gy1, gx0, gx1 = _grow(part, extend, (h, w))
            near = index[gy0:gy1, gx0:gx1]
            jmin = int(near.min())
            if jmin < k:
                # the nearer layers around reach at most this far (radius is V-shaped in k)
                reach = r + 1 + int(max(plan.radius_px[jmin], plan.radius_px[k - 1]))
                wy0, wy1, wx0, wx1 = _grow(part, min(reach, extend), (h, w))
                ext_w = _extension(index[wy0:wy1, wx0:wx1], k, plan)
                if ext_w.any():
                    ey0, ey1, ex0, ex1 = _bbox(ext_w)
                    y0, y1 = min(y0, ey0 + wy0), max(y1, ey1 + wy0)
                    x0, x1 = min(x0, ex0 + wx0), max(x1, ex1 + wx0)
                    ext = ext_w[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
        own = index[y0:y1, x0:x1] == k
        if ext is None:
            ext = np.zeros_like(own)
        stack = _extended_stack(image[:, y0:y1, x0:x1], own, ext, extend)
        sy0, sy1, sx0, sx1 = _bbox(stack[c] > 0)
        box = _grow((sy0 + y0, sy1 + y0, sx0 + x0, sx1 + x0), r + 1, (h, w))
        by0, by1, bx0, bx1 = box
        boxed = np.zeros((c + 1, by1 - by0, bx1 - bx0), np.float32)
        qy, qx = sy0 + y0 - by0, sx0 + x0 - bx0
        boxed[:, qy:qy + (sy1 - sy0), qx:qx + (sx1 - sx0)] = stack[:, sy0:sy1, sx0:sx1]
        parts.append(LayerPart(box=box, stack=boxed))
    return LayerJob(k=k, psf=p, parts=tuple(parts))


def layer_job_full_frame(image: np.ndarray, plan: LayerPlan, k: int) -> LayerJob:
    """The straightforward version of :func:`layer_job`: whole-frame masks and extension."""
    h, w = image.shape[1:]
    index = plan.layers.index
    ext = _extension(index, k, plan) if plan.extend_px[k] > 0 else np.zeros((h, w), bool)
    stack = _extended_stack(image, index == k, ext, plan.extend_px[k])
    return LayerJob(k=k, psf=plan.psfs[k], parts=(LayerPart((0, h, 0, w), stack),))


def layer_jobs(image: np.ndarray, layers: DepthLayers, psf: str = "gaussian",
               rho: float = optics.PAPER1_RHO) -> Iterator[LayerJob]:
    """Occupied layers, nearest first, each extended behind nearer occluders (boxed parts)."""
    plan = layer_plan(layers, psf, rho)
    for k in plan.occupied:
        yield layer_job(image, plan, k)


# ------------------------------------------------------------------------------------ compositing
def _blur_separable(stack: np.ndarray, p: Psf) -> np.ndarray:
    """Blur each plane of a (C, h, w) float32 stack: separable sepFilter2D or 2-D filter2D."""
    import cv2

    out = np.empty_like(stack)
    for i in range(stack.shape[0]):
        if p.k1d is not None:
            cv2.sepFilter2D(stack[i], cv2.CV_32F, p.k1d, p.k1d, dst=out[i], borderType=cv2.BORDER_REFLECT_101)
        else:
            cv2.filter2D(stack[i], cv2.CV_32F, p.k2d, dst=out[i], borderType=cv2.BORDER_REFLECT_101)
    return out


def _blur_direct(stack: np.ndarray, p: Psf) -> np.ndarray:
    """The straightforward blur: the 2-D kernel on each plane (cv2.filter2D)."""
    import cv2

    out = np.empty_like(stack)
    for i in range(stack.shape[0]):
        cv2.filter2D(stack[i], cv2.CV_32F, p.k2d, dst=out[i], borderType=cv2.BORDER_REFLECT_101)
    return out


def _composite(image: np.ndarray, blurred_jobs: Iterable[tuple[LayerJob, list[np.ndarray]]]) -> np.ndarray:
    """Front-to-back over-compositing of the blurred layers, normalised by the total coverage.

    blurred_jobs: (job, blurred stack of each part), nearest layer first.
    acc = Σ_k T_k·(h_k ⊛ [X_k·A_k, X_k]) with T_k = Π_{j<k} (1 − h_j ⊛ X_j); its last plane is the
    coverage 1 − T_K. Returns (C, H, W) float32. (OpenCV does the in-place updates of the box
    views: NumPy is ~4x slower on strided views.)
    """
    import cv2

    c, h, w = image.shape
    acc = np.zeros((c + 1, h, w), np.float32)
    trans = np.ones((h, w), np.float32)
    for job, blurred_parts in blurred_jobs:
        for part, blurred in zip(job.parts, blurred_parts):
            y0, y1, x0, x1 = part.box
            t = trans[y0:y1, x0:x1]
            for i in range(c + 1):  # acc += T·(h ⊛ X·A), T·(h ⊛ X)
                cv2.accumulateProduct(blurred[i], t, acc[i, y0:y1, x0:x1])
            cv2.multiply(t, 1.0 - blurred[c], dst=t)  # T ← T·(1 − α)
    return _normalise(acc, image)


def _blur_parts(job: LayerJob, blur: Callable[[np.ndarray, Psf], np.ndarray]) -> list[np.ndarray]:
    return [part.stack if job.psf.is_identity else blur(part.stack, job.psf) for part in job.parts]


def _blurred_layers(image: np.ndarray, plan: LayerPlan, threads: int) -> Iterator[tuple[LayerJob, list[np.ndarray]]]:
    """Prepare and blur the layers, nearest first; ``threads`` > 1 works on several layers at once
    (each layer's preparation and blur is independent; only the compositing is sequential)."""
    def work(k: int) -> tuple[LayerJob, list[np.ndarray]]:
        job = layer_job(image, plan, k)
        return job, _blur_parts(job, _blur_separable)

    if threads <= 1 or len(plan.occupied) < 2:
        for k in plan.occupied:
            yield work(k)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for k in plan.occupied:
            pending.append(pool.submit(work, k))
            if len(pending) >= 2 * threads:  # bounded look-ahead: few stacks in memory
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _normalise(acc: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Divide the premultiplied colour planes by the coverage plane (last plane of ``acc``)."""
    c = image.shape[0]
    cover = acc[c]
    ok = cover > _COVERAGE_EPS
    out = acc[:c] / np.where(ok, cover, np.float32(1.0))
    if not ok.all():
        out[:, ~ok] = image[:, ~ok]
    return out


def _check_inputs(rgb: np.ndarray, depth_m: np.ndarray, psf: str, rho: float, max_step_px: float) -> None:
    if psf not in PSF_KINDS:
        raise ValueError(f"psf must be one of {PSF_KINDS}, got {psf!r}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if not max_step_px > 0:
        raise ValueError(f"max_step_px must be > 0, got {max_step_px}")
    if np.asarray(rgb).shape[:2] != np.asarray(depth_m).shape[:2]:
        raise ValueError(f"image {np.asarray(rgb).shape[:2]} and depth {np.asarray(depth_m).shape[:2]} sizes differ")


def render_defocus(rgb: np.ndarray, depth_m: np.ndarray, lens: Lens, psf: str = "gaussian",
                   rho: float = optics.PAPER1_RHO, max_step_px: float = 0.5,
                   valid: np.ndarray | None = None, *, threads: int | None = None) -> np.ndarray:
    """Defocused image as seen through ``lens`` from an all-in-focus image and its depth.

    rgb: (H, W, 3) uint8, or float in [0, 1] (other channel counts work too); depth_m: (H, W)
    metres, ≤ 0 / NaN / ``valid`` False = unknown (takes the nearest known depth). psf: 'gaussian'
    (σ = rho·ε) or 'disk' (diameter ε), with ε from :func:`rig.core.optics.blur_diameter_px` quantised
    to layers ``max_step_px`` apart. threads: layers worked on at once (default: OpenCV's thread
    count, so ``cv2.setNumThreads(1)`` in worker processes makes it sequential); the result does
    not depend on it. Returns the same shape and dtype as ``rgb``.
    """
    import cv2

    _check_inputs(rgb, depth_m, psf, rho, max_step_px)
    image = _as_planar(rgb)
    plan = layer_plan(depth_layers(depth_m, lens, max_step_px, valid), psf, rho)
    n = max(1, cv2.getNumThreads() if threads is None else int(threads))
    return _from_planar(_composite(image, _blurred_layers(image, plan, n)), rgb)


def render_defocus_direct(rgb: np.ndarray, depth_m: np.ndarray, lens: Lens, psf: str = "gaussian",
                          rho: float = optics.PAPER1_RHO, max_step_px: float = 0.5,
                          valid: np.ndarray | None = None, shared_prep: bool = False) -> np.ndarray:
    """The straightforward implementation of :func:`render_defocus`, for tests and ``rig bench synth``.

    Same layers, extension, PSFs and compositing, computed plainly, one layer after the other, over
    the whole frame: masks and the extension's box filters, then each plane blurred with the
    layer's 2-D kernel (``cv2.filter2D``). ``shared_prep``: build the layers with the fast boxed
    code instead and only blur and composite over the whole frame (isolates the convolution).
    Same result as :func:`render_defocus` to float32 rounding.
    """
    _check_inputs(rgb, depth_m, psf, rho, max_step_px)
    image = _as_planar(rgb)
    c, h, w = image.shape
    plan = layer_plan(depth_layers(depth_m, lens, max_step_px, valid), psf, rho)

    def jobs() -> Iterator[tuple[LayerJob, list[np.ndarray]]]:
        for k in plan.occupied:
            if not shared_prep:
                job = layer_job_full_frame(image, plan, k)
            else:
                boxed = layer_job(image, plan, k)
                full = np.zeros((c + 1, h, w), np.float32)
                for part in boxed.parts:
                    y0, y1, x0, x1 = part.box
                    full[:, y0:y1, x0:x1] += part.stack
                job = LayerJob(k, boxed.psf, (LayerPart((0, h, 0, w), full),))
            yield job, _blur_parts(job, _blur_direct)

    return _from_planar(_composite(image, jobs()), rgb)


# ------------------------------------------------------------------------------------------ torch
def _reflect101_index(n: int, r: int) -> np.ndarray:
    """Source indices of a length-n axis padded by r on both sides (OpenCV BORDER_REFLECT_101)."""
    idx = np.arange(-r, n + r)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


def render_defocus_torch(rgb: np.ndarray, depth_m: np.ndarray, lens: Lens, psf: str = "gaussian",
                         rho: float = optics.PAPER1_RHO, max_step_px: float = 0.5,
                         valid: np.ndarray | None = None, device: str = "cpu") -> np.ndarray:
    """:func:`render_defocus` with the blurring and compositing in PyTorch on ``device``.

    Layering and the extension behind occluders run on the CPU (NumPy/OpenCV); each layer's parts
    are blurred with torch (separable Gaussian or 2-D disk, reflect-101 borders) on the device and
    composited there. Same inputs and result (to float32 rounding) as :func:`render_defocus`.
    """
    import torch
    import torch.nn.functional as F

    _check_inputs(rgb, depth_m, psf, rho, max_step_px)
    dev = torch.device(device)
    image = _as_planar(rgb)
    c, h, w = image.shape
    plan = layer_plan(depth_layers(depth_m, lens, max_step_px, valid), psf, rho)
    acc = torch.zeros((c + 1, h, w), dtype=torch.float32, device=dev)
    trans = torch.ones((h, w), dtype=torch.float32, device=dev)
    groups = c + 1
    with torch.no_grad():
        for k in plan.occupied:
            job = layer_job(image, plan, k)
            for part in job.parts:
                y0, y1, x0, x1 = part.box
                x = torch.from_numpy(part.stack).to(dev)  # (C+1, bh, bw)
                if not job.psf.is_identity:
                    r = job.psf.radius_px
                    iy = torch.from_numpy(_reflect101_index(x.shape[1], r)).to(dev)
                    ix = torch.from_numpy(_reflect101_index(x.shape[2], r)).to(dev)
                    xp = x.index_select(1, iy).index_select(2, ix)[None]  # (1, C+1, bh+2r, bw+2r)
                    if job.psf.k1d is not None:
                        kern = torch.from_numpy(job.psf.k1d.copy()).to(dev)
                        xp = F.conv2d(xp, kern.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
                        xp = F.conv2d(xp, kern.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
                    else:
                        kern = torch.from_numpy(job.psf.k2d.copy()).to(dev)
                        xp = F.conv2d(xp, kern[None, None].expand(groups, 1, -1, -1), groups=groups)
                    x = xp[0]
                t = trans[y0:y1, x0:x1]
                x = x * t
                acc[:, y0:y1, x0:x1] += x
                t -= x[c]
        acc_np = acc.cpu().numpy()
    return _from_planar(_normalise(acc_np, image), rgb)
