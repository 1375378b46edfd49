"""Edge-aware depth hole filling: colorization (Levin, Lischinski & Weiss 2004) as in NYU's toolbox.

NYU Depth v2's ``fill_depth_colorization.m`` fills a depth map x from its measured pixels d
(mask m) and the colour image by solving the sparse linear system

    (A + α·M) x = α·M·d,   A = I − W,

where W holds, for every pixel, normalised affinities to its (up to) 8 neighbours in a 3x3 window,
w_ij = exp(−(g_i − g_j)²/σ_i²) with g the grey image in [0, 1] and σ_i² chosen per window
(0.6·variance, at least the value that gives the most similar neighbour a weight 0.01, at least
2e-6). Unknown pixels become an affinity-weighted average of their neighbours; measured pixels
are pulled towards d (α = 1 also denoises them, as the toolbox does).

* :func:`fill_colorization_reference` — the toolbox's method verbatim: builds A + α·M as a
  ``scipy.sparse`` matrix and solves it directly (``spsolve``; MATLAB uses ``\\``).
* :func:`fill_colorization_fast` — the same system solved block-wise: the holes (one small
  independent block per hole) by a sparse direct solve factorised once (single precision,
  nested-dissection order, a refinement step in double precision at the end), the measured
  pixels by cheap Jacobi sweeps (OpenCV multiply-accumulates on a padded buffer), alternated
  (block Gauss–Seidel) until the measured values settle — the reference's solution to ~0.2 mm,
  without factorising the whole image. With ``alpha=None`` it is Levin et al.'s original
  hard-constraint form (measured pixels fixed). Quality and speed against the reference
  (held-out measured pixels): ``rig bench fill``.

Shapes: rgb (H, W, 3) uint8 (or float in [0, 1]); depth (H, W) float metres, 0 = unknown;
valid (H, W) bool. Results are (H, W) float32 metres.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rig.core.records import VALID_FILLED, VALID_MEASURED, VALID_UNKNOWN

# neighbour offsets (dy, dx) of the 3x3 window without its centre
OFFSETS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def grey_from_rgb(rgb: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """MATLAB's rgb2gray on [0, 1] values: 0.2989 R + 0.5870 G + 0.1140 B, (H, W) ``dtype``."""
    x = np.asarray(rgb)
    scale = 1.0 / 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    if x.ndim == 2:
        return (x * scale).astype(dtype, copy=False) if scale != 1.0 else x.astype(dtype)
    coef = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103]) * scale
    if dtype == np.float64:
        return x[..., 0] * coef[0] + x[..., 1] * coef[1] + x[..., 2] * coef[2]
    c = coef.astype(dtype)
    grey = x[..., 0].astype(dtype)
    grey *= c[0]
    for i in (1, 2):
        grey += x[..., i] * c[i]
    return grey


def _shifted(a: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """b[i, j] = a[i + dy, j + dx], ``fill`` outside the image."""
    h, w = a.shape
    out = np.full_like(a, fill)
    out[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = \
        a[max(dy, 0):h + min(dy, 0) or None, max(dx, 0):w + min(dx, 0) or None]
    return out


def colorization_weights(grey: np.ndarray) -> np.ndarray:
    """Normalised neighbour affinities (8, H, W) of NYU's fill_depth_colorization.

    Entry k is the weight of neighbour OFFSETS[k]; neighbours outside the image weigh 0; each
    pixel's weights sum to 1. float32 in, float32 out; anything else is computed in float64.
    The window statistics (mean, variance over the 3x3 window inside the image) are box sums in
    float64; a squared difference is computed once per pair of neighbours (OFFSETS[k] of p is
    OFFSETS[7 − k] of its neighbour).
    """
    import cv2

    g = np.asarray(grey, dtype=np.float32 if np.asarray(grey).dtype == np.float32 else np.float64)
    h, w = g.shape
    g64 = g.astype(np.float64)
    box = lambda a: cv2.boxFilter(a, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)  # noqa: E731
    n_win = box(np.ones((h, w)))  # pixels of the window inside the image (centre included)
    mean = box(g64) / n_win
    var = box(g64 * g64) / n_win - mean * mean  # E[g²] − E[g]²: the window's (population) variance
    # squared grey differences to the neighbours, +inf outside the image (weight exp(−inf) = 0)
    gp = np.full((h + 2, w + 2), np.inf, dtype=g.dtype)
    gp[1:-1, 1:-1] = g
    d2: list[np.ndarray] = [np.empty(0)] * 8
    for k in range(4):  # OFFSETS[k] = −OFFSETS[7 − k]
        dy, dx = OFFSETS[7 - k]
        e = np.full_like(gp, np.inf)
        ys, xs = slice(max(0, -dy), h + 2 - max(0, dy)), slice(max(0, -dx), w + 2 - max(0, dx))
        with np.errstate(invalid="ignore"):  # inf − inf where both lie outside: never read
            np.subtract(gp[max(0, dy):h + 2 + min(0, dy), max(0, dx):w + 2 + min(0, dx)], gp[ys, xs], out=e[ys, xs])
        np.multiply(e, e, out=e)  # e[q] = (g[q + o] − g[q])²: inf wherever a pixel lies outside
        d2[7 - k] = e[1:1 + h, 1:1 + w]  # at p, towards p + o
        d2[k] = e[1 - dy:1 - dy + h, 1 - dx:1 - dx + w]  # at p, towards p − o: e[p − o]
    mgv = np.full((h, w), np.inf, dtype=g.dtype)
    for d in d2:
        np.fmin(mgv, d, out=mgv)
    csig = np.maximum(np.maximum(var * 0.6, mgv / -np.log(0.01)), 2e-6)
    neg_inv = (-1.0 / csig).astype(g.dtype)
    wts = np.empty((8, h, w), dtype=g.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # a 1x1 image has no neighbours at all
        for k, d in enumerate(d2):
            np.multiply(d, neg_inv, out=wts[k])
        np.exp(wts, out=wts)
        wts *= 1.0 / wts.sum(axis=0, keepdims=True)
    return wts


def colorization_matrix(weights: np.ndarray, data_weight: np.ndarray):  # -> scipy.sparse.csr_matrix
    """A + diag(data_weight) with A = I − W (row-major pixel order), as a CSR matrix."""
    import scipy.sparse as sp

    _, h, w = weights.shape
    n = h * w
    idx = np.arange(n).reshape(h, w)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [1.0 + data_weight.ravel().astype(np.float64)]
    for k, (dy, dx) in enumerate(OFFSETS):
        nbr = _shifted(idx.astype(np.float64), dy, dx, -1.0).astype(np.int64)
        ok = nbr >= 0
        rows.append(idx[ok])
        cols.append(nbr[ok])
        vals.append(-weights[k][ok])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _prepare(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None,
             grey_dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey (H, W) ``grey_dtype`` in [0, 1], depth (H, W) float64 with 0 where not measured,
    measured (H, W) bool)."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    m = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    if rgb.shape[:2] != d.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and depth {d.shape} differ in size")
    return grey_from_rgb(rgb, grey_dtype), np.where(m, d, 0.0), m


def fill_colorization_reference(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None = None,
                                alpha: float = 1.0) -> np.ndarray:
    """NYU's fill_depth_colorization: build the sparse system and solve it directly (spsolve).

    Returns the solution x (H, W) float32 in the depth's unit — measured pixels included (they are
    smoothed slightly, as in the toolbox). All zeros when nothing is measured.
    """
    from scipy.sparse.linalg import spsolve

    grey, d, m = _prepare(rgb, depth, valid)
    if not m.any():
        return np.zeros(d.shape, np.float32)
    scale = float(d[m].max())  # the toolbox normalises by the largest depth (no effect on x)
    a = colorization_matrix(colorization_weights(grey), alpha * m)
    x = spsolve(a.tocsc(), (alpha * m * (d / scale)).ravel())
    return (np.asarray(x).reshape(d.shape) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the fast solver: the same system split into its unknown and measured blocks


def _window_weights(gpad: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """NYU's normalised affinities (8, n) for the pixels (ys, xs) only; ``gpad`` is the grey image
    padded by one NaN pixel. Same formula as :func:`colorization_weights`."""
    centre = gpad[ys + 1, xs + 1]
    nb = np.stack([gpad[ys + 1 + dy, xs + 1 + dx] for dy, dx in OFFSETS])  # (8, n)
    inside = ~np.isnan(nb)
    n_win = inside.sum(axis=0) + 1
    vals = np.where(inside, nb, 0.0)
    mean = (vals.sum(axis=0) + centre) / n_win
    var = ((np.where(inside, nb - mean, 0.0) ** 2).sum(axis=0) + (centre - mean) ** 2) / n_win
    d2 = np.where(inside, (nb - centre) ** 2, np.inf)
    csig = np.maximum(np.maximum(var * 0.6, -d2.min(axis=0) / np.log(0.01)), 2e-6)
    wts = np.where(inside, np.exp(-np.where(inside, d2, 0.0) / csig), 0.0)
    return wts / wts.sum(axis=0, keepdims=True)


def nested_dissection_order(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A fill-reducing elimination order (permutation) of grid pixels (ys, xs) for stencils within
    a 3x3 window: geometric nested dissection with dyadic splits of the bounding box.

    Each split takes a line of pixels (a row or a column; the longer side first) that separates
    the two halves of its cell — with 3x3 stencils nothing couples across a one-pixel line — and
    orders half A, half B, then the line. Cells of at most 4x4 pixels keep raster order. The
    order is a sort on one ternary key per pixel (A = 0, B = 1, separator = 2 per level).
    """
    sy = max(int(ys.max()) + 2, 2).bit_length() if ys.size else 1
    sx = max(int(xs.max()) + 2, 2).bit_length() if xs.size else 1
    key = np.zeros(ys.size, np.int64)
    done = np.zeros(ys.size, bool)
    for _ in range(39):  # 3^39 < 2^63
        if sx <= 2 and sy <= 2:
            break
        if sx >= sy:
            coord, bits = xs, sx
            sx -= 1
        else:
            coord, bits = ys, sy
            sy -= 1
        pos = coord & ((1 << bits) - 1)
        mid = 1 << (bits - 1)
        digit = (pos > mid).astype(np.int64)
        digit[pos == mid] = 2
        digit[done] = 0
        key *= 3
        key += digit
        done |= digit == 2
    return np.argsort(key, kind="stable")


class _HoleSystem:
    """The unknown pixels' block (I − W_uu) x_u = W_um x_m, factorised once.

    weights: (8, n) float32 (or float64) affinities of the n unknown pixels (ys, xs) to their
    OFFSETS neighbours (0 outside the image). :meth:`solve` reads the measured values from a
    zero-bordered (H + 2, W + 2) float32 buffer and writes the unknowns into it. Unknown pixels
    without unknown neighbours (isolated dropouts) need no factorisation; the others form one
    small block per hole, factorised by SuperLU in a nested-dissection order without pivoting
    (diagonally dominant), in single precision — in double, with ε added to the diagonal, if a
    block is singular (a hole with no affinity to any measured pixel).
    """

    def __init__(self, weights: np.ndarray, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> None:
        h, w = shape
        n = ys.size
        wp = w + 2
        self.flat = (ys + 1) * wp + (xs + 1)  # the unknowns in the padded buffer
        self.nb_idx = self.flat + np.array([dy * wp + dx for dy, dx in OFFSETS])[:, None]  # (8, n)
        number = np.full((h + 2) * wp, -1, dtype=np.int32)  # unknown-pixel number, -1 = measured/outside
        number[self.flat] = np.arange(n, dtype=np.int32)
        nbrs = number[self.nb_idx]  # (8, n) unknown numbers of the neighbours
        unknown_nb = nbrs >= 0
        self.nb_w = np.where(unknown_nb, 0.0, weights).astype(weights.dtype)  # weights of the measured neighbours
        self.coupled = np.flatnonzero(unknown_nb.any(axis=0))
        self.lu = None
        if self.coupled.size:
            self.coupled = self.coupled[nested_dissection_order(ys[self.coupled], xs[self.coupled])]
            self.lu, self.a_t = _factorise(self.coupled, nbrs, weights, n)

    def solve(self, xp: np.ndarray, refine: bool = False) -> None:
        """x_u from the measured values, in place in the padded buffer ``xp`` (H + 2, W + 2).
        refine: one step of iterative refinement in double precision (the final solve)."""
        xf = xp.reshape(-1)
        rhs = np.einsum("kn,kn->n", self.nb_w, xf[self.nb_idx])
        if self.lu is not None:
            b = rhs[self.coupled]
            x = self.lu.solve(b.astype(self.lu.L.dtype), trans="T")
            if refine and self.lu.L.dtype != np.float64:
                r = b - self.a_t.T @ x.astype(np.float64)
                x = x + self.lu.solve(r.astype(self.lu.L.dtype), trans="T")
            rhs[self.coupled] = x
        xf[self.flat] = rhs


def _factorise(order: np.ndarray, nbrs: np.ndarray, weights: np.ndarray, n: int) -> tuple[Any, Any]:
    """(SuperLU factors of Aᵀ, Aᵀ in double precision (CSC)), A = I − W_uu over the unknowns
    ``order`` (in that order): nbrs (8, n) are the unknown numbers of each unknown's neighbours
    (−1: none), weights (8, n) their affinities. A's rows, built directly as Aᵀ's columns, need
    no sorting into CSC."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    size = order.size
    position = np.full(n + 1, -1, dtype=np.int32)  # position[-1] = -1: measured or outside
    position[order] = np.arange(size, dtype=np.int32)
    cols = np.empty((size, 9), np.int32)  # row r of A: the diagonal, then the unknown neighbours
    cols[:, 0] = np.arange(size)
    cols[:, 1:] = position[nbrs[:, order]].T
    vals = np.empty((size, 9), np.float64)
    vals[:, 1:] = -weights[:, order].T
    keep = cols >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    for diag, dtype in ((1.0, np.float32), (1.0 + 1e-9, np.float64)):  # ε: never singular
        vals[:, 0] = diag
        at = sp.csc_matrix((vals[keep], cols[keep], indptr), shape=(size, size))
        try:
            # small relax/panel sizes: the blocks of grid problems this size gain nothing from supernodes
            return splu(at.astype(dtype), permc_spec="NATURAL", diag_pivot_thresh=0.0, relax=1, panel_size=1,
                        options={"SymmetricMode": True}), at
        except RuntimeError:  # exactly singular in single precision
            continue
    raise RuntimeError("hole system is singular")


def fill_colorization_fast(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None = None,
                           alpha: float | None = 1.0, tol_m: float = 2e-4, max_iter: int = 30) -> np.ndarray:
    """NYU's system solved block-wise: a direct solve for the holes, cheap sweeps for the rest.

    With u the unknown and m the measured pixels, (A + α·M)x = α·M·d splits into

        (I − W_uu) x_u = W_um x_m                         (holes: harmonic in the affinities)
        (1 + α) x_m − W_mm x_m − W_mu x_u = α d_m          (measured: pulled towards d)

    The hole block has one row per unknown pixel and falls apart into one small block per hole:
    it is factorised once (:class:`_HoleSystem`). Block Gauss–Seidel then alternates a Jacobi
    step on the measured block, x_m ← (α·d + (W·x)_m)/(1 + α), which contracts errors by
    1/(1 + α) per sweep, with an exact hole solve, until x changes by less than ``tol_m`` (the
    reference's own solution, to that tolerance). ``alpha=None``: Levin et al.'s hard
    constraints (x_m = d, one hole solve). Returns (H, W) float32 like
    :func:`fill_colorization_reference`.
    """
    grey, d, m = _prepare(rgb, depth, valid, np.float64 if alpha is None else np.float32)
    if not m.any() or m.all():
        return np.where(m, d, 0.0).astype(np.float32)
    h, w = d.shape
    ys, xs = np.nonzero(~m)
    if alpha is None:
        weights = None
        wts = _window_weights(np.pad(grey, 1, constant_values=np.nan), ys, xs)
    else:
        weights = colorization_weights(grey)
        wts = weights[:, ys, xs]
    holes = _HoleSystem(wts, ys, xs, (h, w))
    xp = np.zeros((h + 2, w + 2), np.float32)  # the solution, zero-bordered (weights there are 0)
    np.copyto(xp[1:-1, 1:-1], d, where=m, casting="unsafe")
    holes.solve(xp, refine=weights is None)
    if weights is not None:
        xp = _measured_sweeps(xp, weights, d, alpha, holes, tol_m, max_iter)
        holes.solve(xp, refine=True)
    x = xp[1:-1, 1:-1]
    floor = np.float32(1e-6 * float(d[m].max()))
    return np.where(m | ((x > floor) & (x < np.inf)), x, np.float32(0.0))  # holes: finite and > 0, or 0


def _measured_sweeps(xp: np.ndarray, weights: np.ndarray, d: np.ndarray, alpha: float, holes: _HoleSystem,
                     tol_m: float, max_iter: int) -> np.ndarray:
    """Block Gauss–Seidel on NYU's system: x_m ← (α·d + (W·x)_m)/(1 + α), then the exact hole
    solve, until x changes by less than tol_m (m) or after max_iter sweeps.

    xp: (H + 2, W + 2) float32 zero-bordered solution (holes solved); weights: (8, H, W) float32;
    d: (H, W) measured depth (0 elsewhere). Returns the final buffer (one of two, swapped).
    """
    import cv2

    h, w = d.shape
    scaled = weights * np.float32(1.0 / (1.0 + alpha))  # x_m ← α/(1+α)·d + Σ_k w_k/(1+α)·x_k
    ad = (d * (alpha / (1.0 + alpha))).astype(np.float32)
    gp = np.zeros_like(xp)
    for _ in range(max_iter):
        g = gp[1:-1, 1:-1]
        np.copyto(g, ad)
        for k, (dy, dx) in enumerate(OFFSETS):
            cv2.accumulateProduct(scaled[k], xp[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], g)
        holes.solve(gp)  # overwrites the holes' values in g
        change = float(cv2.norm(gp, xp, cv2.NORM_INF))
        xp, gp = gp, xp
        if change < tol_m:
            break
    return xp


def distance_to_measured_px(measured: np.ndarray) -> np.ndarray:
    """(H, W) float32 Euclidean distance (px) from each pixel to the nearest True of ``measured``."""
    import cv2

    return cv2.distanceTransform(np.where(measured, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def fill_depth(rgb: np.ndarray, depth_m: np.ndarray, valid: np.ndarray | None = None, *,
               method: str = "fast", alpha: float = 1.0,
               keep_measured: bool = True, max_fill_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill the holes of a registered depth map; returns (depth_m float32, mask uint8).

    mask: VALID_MEASURED where depth was measured, VALID_FILLED where it was filled, VALID_UNKNOWN
    where nothing could be (no measurement at all). keep_measured: measured pixels keep their
    value (the solver's smoothed value is used only in the holes). method: 'fast', 'reference'
    or 'none' (no filling: holes stay 0 / unknown). max_fill_px: holes further than this (px,
    Euclidean) from every measured pixel stay unknown (0) — the fill extrapolates there (sky,
    surfaces beyond the sensor's range) and a training set should not learn that.
    """
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    measured = d > 0 if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    mask = np.where(measured, VALID_MEASURED, VALID_UNKNOWN).astype(np.uint8)
    if method == "none" or not measured.any() or measured.all():
        return np.where(measured, d, 0.0).astype(np.float32), mask
    if method == "fast":
        x = fill_colorization_fast(rgb, d, measured)
    elif method == "reference":
        x = fill_colorization_reference(rgb, d, measured, alpha=alpha)
    else:
        raise ValueError(f"unknown fill method {method!r} (fast, reference, none)")
    x = np.maximum(x, 0.0)
    out = np.where(measured, d, x) if keep_measured else x
    if max_fill_px is not None:
        out = np.where(~measured & (distance_to_measured_px(measured) > max_fill_px), 0.0, out)
    mask[~measured & (out > 0)] = VALID_FILLED
    return out.astype(np.float32), mask
