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
  independent block per hole) by a sparse direct solve factorised once, the measured pixels by
  cheap vectorised Jacobi sweeps, alternated (block Gauss–Seidel) until the measured values
  settle — the reference's solution to ~0.2 mm, without factorising the whole image. With
  ``alpha=None`` it is Levin et al.'s original hard-constraint form (measured pixels fixed).
  Quality and speed against the reference (held-out measured pixels): ``rig bench fill``.

Shapes: rgb (H, W, 3) uint8 (or float in [0, 1]); depth (H, W) float metres, 0 = unknown;
valid (H, W) bool. Results are (H, W) float32 metres.
"""

from __future__ import annotations

import numpy as np

from rig.core.records import VALID_FILLED, VALID_MEASURED, VALID_UNKNOWN

# neighbour offsets (dy, dx) of the 3x3 window without its centre
OFFSETS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's rgb2gray on [0, 1] values: 0.2989 R + 0.5870 G + 0.1140 B, float64 (H, W)."""
    x = np.asarray(rgb, dtype=np.float64)
    if np.issubdtype(np.asarray(rgb).dtype, np.integer):
        x = x / 255.0
    if x.ndim == 2:
        return x
    return 0.298936021293775 * x[..., 0] + 0.587043074451121 * x[..., 1] + 0.114020904255103 * x[..., 2]


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
    """
    g = np.asarray(grey, dtype=np.float32 if np.asarray(grey).dtype == np.float32 else np.float64)
    h, w = g.shape
    gp = np.pad(g, 1, constant_values=np.nan)
    nbs = [gp[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in OFFSETS]  # views, NaN outside
    n_win = np.ones_like(g)  # neighbours inside the image + the centre
    total = g.copy()
    for nb in nbs:
        n_win += ~np.isnan(nb)
        total += np.nan_to_num(nb)
    mean = total / n_win
    var = (g - mean) ** 2
    mgv = np.full(g.shape, np.inf, dtype=g.dtype)
    d2s = []
    for nb in nbs:
        dev = np.nan_to_num(nb - mean)
        var += dev * dev
        d2 = (nb - g) ** 2  # NaN outside
        np.fmin(mgv, d2, out=mgv)
        d2s.append(d2)
    var /= n_win
    csig = np.maximum(np.maximum(var * 0.6, mgv / -np.log(0.01)), 2e-6).astype(g.dtype)
    wts = np.empty((8, h, w), dtype=g.dtype)
    for k, d2 in enumerate(d2s):
        np.exp(-d2 / csig, out=wts[k])
    np.nan_to_num(wts, copy=False)  # outside the image: weight 0
    with np.errstate(invalid="ignore", divide="ignore"):  # a 1x1 image has no neighbours at all
        wts /= wts.sum(axis=0, keepdims=True)
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


def _prepare(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    m = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    if rgb.shape[:2] != d.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and depth {d.shape} differ in size")
    return grey_from_rgb(rgb), np.where(m, d, 0.0), m


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


def _neighbour_sum(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(W·x) for every pixel: Σ_k w_k · x[neighbour k]; neighbours outside the image weigh 0."""
    h, w = x.shape
    xp = np.pad(x, 1)
    acc = np.zeros_like(x)
    tmp = np.empty_like(x)
    for k, (dy, dx) in enumerate(OFFSETS):
        np.multiply(weights[k], xp[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], out=tmp)
        acc += tmp
    return acc


def fill_colorization_fast(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray | None = None,
                           alpha: float | None = 1.0, tol_m: float = 2e-4, max_iter: int = 30) -> np.ndarray:
    """NYU's system solved block-wise: a direct solve for the holes, cheap sweeps for the rest.

    With u the unknown and m the measured pixels, (A + α·M)x = α·M·d splits into

        (I − W_uu) x_u = W_um x_m                         (holes: harmonic in the affinities)
        (1 + α) x_m − W_mm x_m − W_mu x_u = α d_m          (measured: pulled towards d)

    The hole block has one row per unknown pixel and falls apart into one small block per hole
    (isolated unknown pixels are solved directly): it is factorised once (SuperLU, minimum-degree
    ordering on A + Aᵀ — grid structure, no pivoting — diagonally dominant). Block
    Gauss–Seidel then alternates an exact hole solve with a Jacobi step on the measured block,
    x_m ← (α·d + (W·x)_m)/(1 + α), which contracts errors by 1/(1 + α) per sweep, until x_m
    changes by less than ``tol_m`` (the reference's own solution, to that tolerance).
    ``alpha=None``: Levin et al.'s hard constraints (x_m = d, one hole solve).
    Returns (H, W) float32 like :func:`fill_colorization_reference`.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    grey, d, m = _prepare(rgb, depth, valid)
    x = np.where(m, d, 0.0)
    if not m.any() or m.all():
        return x.astype(np.float32)
    h, w = d.shape
    ys, xs = np.nonzero(~m)
    n = ys.size
    index = np.full((h + 2, w + 2), -1, dtype=np.int64)  # unknown-pixel number, -1 = measured/outside
    index[ys + 1, xs + 1] = np.arange(n)
    if alpha is None:
        wts = _window_weights(np.pad(grey, 1, constant_values=np.nan), ys, xs)
        weights = None
    else:
        weights = colorization_weights(grey.astype(np.float32))
        wts = weights[:, ys, xs].astype(np.float64)
    nbrs = np.stack([index[ys + 1 + dy, xs + 1 + dx] for dy, dx in OFFSETS])  # (8, n) unknown numbers
    unknown_nb = nbrs >= 0
    nb_idx = np.stack([(ys + 1 + dy) * (w + 2) + (xs + 1 + dx) for dy, dx in OFFSETS])  # flat, padded
    nb_w = np.where(unknown_nb, 0.0, wts)  # weights of the measured neighbours (0 outside the image)
    # unknown pixels without unknown neighbours (e.g. single dropouts) need no factorisation
    coupled = np.flatnonzero(unknown_nb.any(axis=0))
    lu = None
    if coupled.size:
        renum = np.full(n, -1, dtype=np.int64)
        renum[coupled] = np.arange(coupled.size)
        sub = unknown_nb[:, coupled]
        k_idx, j_idx = np.nonzero(sub)
        rows = np.concatenate([np.arange(coupled.size), j_idx])
        cols = np.concatenate([np.arange(coupled.size), renum[nbrs[:, coupled][k_idx, j_idx]]])
        vals = np.concatenate([np.full(coupled.size, 1.0 + 1e-9), -wts[:, coupled][k_idx, j_idx]])  # ε: never singular
        a = sp.csc_matrix((vals, (rows, cols)), shape=(coupled.size, coupled.size))
        # diagonally dominant: no pivoting needed; symmetric structure: minimum degree on A + Aᵀ
        lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})

    def solve_holes() -> None:
        xp = np.pad(x, 1).ravel()
        rhs = np.einsum("kn,kn->n", nb_w, xp[nb_idx])
        if lu is not None:
            rhs[coupled] = lu.solve(rhs[coupled])
        x[ys, xs] = rhs

    solve_holes()
    if alpha is not None and weights is not None:
        ad = (alpha * d).astype(np.float32)
        unknown = ~m
        for _ in range(max_iter):
            new = (ad + _neighbour_sum(x.astype(np.float32), weights)) / np.float32(1.0 + alpha)
            np.copyto(new, x, where=unknown, casting="unsafe")  # holes: from the exact solve below
            change = float(np.abs(new - x).max())
            x = new.astype(np.float64)
            solve_holes()
            if change < tol_m:
                break
    floor = 1e-6 * float(d[m].max())
    x[~m] = np.where(np.isfinite(x[~m]) & (x[~m] > floor), x[~m], 0.0)
    return x.astype(np.float32)


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
