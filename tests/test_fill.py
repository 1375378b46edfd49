"""Hole filling: NYU's colorization affinities and system, the fast hard-constraint solver, masks."""

from __future__ import annotations

import numpy as np
import pytest

from registration.fill import (colorization_matrix, colorization_weights, fill_colorization_fast,
                               fill_colorization_reference, fill_depth, grey_from_rgb)
from rig.core.records import VALID_FILLED, VALID_MEASURED, VALID_UNKNOWN


def _nyu_loop(rgb: np.ndarray, depth: np.ndarray, known: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """A line-by-line port of NYU's fill_depth_colorization.m (column-major loops, dense solve)."""
    grey = grey_from_rgb(rgb)
    h, w = depth.shape
    n = h * w
    inds = np.arange(n).reshape(w, h).T  # MATLAB's column-major numbering
    a = np.zeros((n, n))
    for j in range(w):
        for i in range(h):
            k = inds[i, j]
            nb, gv = [], []
            for ii in range(max(0, i - 1), min(i + 1, h - 1) + 1):
                for jj in range(max(0, j - 1), min(j + 1, w - 1) + 1):
                    if ii == i and jj == j:
                        continue
                    nb.append(inds[ii, jj])
                    gv.append(grey[ii, jj])
            cur = grey[i, j]
            allv = np.array(gv + [cur])
            c_var = np.mean((allv - allv.mean()) ** 2)
            csig = c_var * 0.6
            mgv = np.min((np.array(gv) - cur) ** 2)
            if csig < -mgv / np.log(0.01):
                csig = -mgv / np.log(0.01)
            if csig < 0.000002:
                csig = 0.000002
            g = np.exp(-(np.array(gv) - cur) ** 2 / csig)
            g /= g.sum()
            a[k, nb] = -g
            a[k, k] = 1.0
    kv = known.T.ravel() * alpha
    x = np.linalg.solve(a + np.diag(kv), kv * depth.T.ravel())
    return x.reshape(w, h).T


def _scene(h: int = 24, w: int = 32, seed: int = 0):
    """Two regions split by a colour edge, each with a smooth depth ramp; RGB noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    left = xx < w * 0.45 + 0.2 * yy
    depth = np.where(left, 1.0 + 0.01 * yy, 3.0 + 0.02 * xx).astype(np.float64)
    rgb = np.where(left[..., None], [200, 60, 40], [30, 90, 210]).astype(np.float64)
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth


def test_weights_match_the_nyu_loop_and_reference_solves_its_system():
    rgb, depth = _scene(7, 9)
    known = np.random.default_rng(1).random(depth.shape) > 0.3
    x_loop = _nyu_loop(rgb, depth, known)
    x_ref = fill_colorization_reference(rgb, np.where(known, depth, 0), known)
    assert np.allclose(x_ref, x_loop, atol=1e-5)
    w = colorization_weights(grey_from_rgb(rgb))
    assert np.allclose(w.sum(axis=0), 1.0)
    assert w[0, 0, 0] == 0 and w[7, -1, -1] == 0  # neighbours outside the image weigh nothing
    a = colorization_matrix(w, known.astype(float)).toarray()
    assert np.allclose(np.diag(a), 1.0 + known.ravel())


def test_fast_fill_converges_to_the_reference_solution():
    rgb, depth = _scene(30, 40, seed=5)
    known = np.random.default_rng(3).random(depth.shape) > 0.3
    known[5:20, 10:30] = False
    d = np.where(known, depth, 0)
    ref = fill_colorization_reference(rgb, d, known)
    fast = fill_colorization_fast(rgb, d, known, tol_m=1e-5)
    assert np.abs(fast - ref).max() < 1e-4  # 0.1 mm on depths of 1-4 m
    loose = fill_colorization_fast(rgb, d, known, max_iter=1)  # one sweep only: visibly not converged
    assert np.abs(loose - ref).max() > 10 * np.abs(fast - ref).max()


def test_hard_constraint_variant_solves_levins_system():
    rgb, depth = _scene()
    known = np.random.default_rng(2).random(depth.shape) > 0.4
    known[8:16, 10:20] = False  # a hole across the colour edge
    x = fill_colorization_fast(rgb, np.where(known, depth, 0), known, alpha=None)
    assert np.array_equal(x[known], depth[known].astype(np.float32))  # measured pixels untouched
    w = colorization_weights(grey_from_rgb(rgb))
    xp = np.pad(x.astype(np.float64), 1)
    avg = sum(w[k] * xp[1 + dy:1 + dy + x.shape[0], 1 + dx:1 + dx + x.shape[1]]
              for k, (dy, dx) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))))
    assert np.allclose(x[~known], avg[~known], atol=1e-6)  # each unknown = affinity-weighted mean


def test_fill_is_edge_aware_and_the_fast_one_is_no_worse_on_held_out_pixels():
    rgb, depth = _scene(40, 56, seed=3)
    rng = np.random.default_rng(4)
    measured = np.ones(depth.shape, bool)
    measured[10:30, 18:38] = False  # a big hole straddling the colour edge
    held = measured & (rng.random(depth.shape) < 0.1)
    inp = measured & ~held
    ref = fill_colorization_reference(rgb, np.where(inp, depth, 0), inp)
    fast = fill_colorization_fast(rgb, np.where(inp, depth, 0), inp)
    rmse = lambda x, m: float(np.sqrt(np.mean((x[m] - depth[m]) ** 2)))  # noqa: E731
    assert rmse(fast, held) == pytest.approx(rmse(ref, held), rel=1e-3, abs=1e-4)
    hole = ~measured
    assert rmse(fast, hole) < 0.1 and rmse(ref, hole) < 0.15  # the 2 m step is not smeared across
    naive = np.full(depth.shape, depth[measured].mean())
    assert rmse(fast, hole) < 0.2 * rmse(naive, hole)


def test_fill_depth_mask_codes_and_edge_cases():
    rgb, depth = _scene()
    d = depth.astype(np.float32).copy()
    d[5:9, 5:9] = 0
    out, mask = fill_depth(rgb, d)
    assert (mask[5:9, 5:9] == VALID_FILLED).all() and (out[5:9, 5:9] > 0).all()
    assert (mask[d > 0] == VALID_MEASURED).all() and np.array_equal(out[d > 0], d[d > 0])
    out, mask = fill_depth(rgb, d, method="none")
    assert (mask[5:9, 5:9] == VALID_UNKNOWN).all() and (out[5:9, 5:9] == 0).all()
    out, mask = fill_depth(rgb, np.zeros_like(d))
    assert (mask == VALID_UNKNOWN).all() and not out.any()
    with pytest.raises(ValueError):
        fill_depth(rgb, d, method="bogus")


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (2, 2), (13, 17)])
def test_weights_in_single_precision_match_double_and_weigh_nothing_outside(shape):
    grey = np.random.default_rng(5).random(shape)
    grey[:, : shape[1] // 2] *= 0.1  # an edge
    w64 = colorization_weights(grey)
    w32 = colorization_weights(grey.astype(np.float32))
    assert w32.dtype == np.float32 and w64.dtype == np.float64
    assert np.allclose(w32, w64, atol=1e-5)
    assert np.allclose(w64.sum(axis=0), 1.0)
    assert not w64[:3, 0].any() and not w64[[0, 3, 5], :, 0].any()  # top row / left column: no neighbours there


def test_hole_factorisation_falls_back_to_double_precision_when_singular():
    from registration.fill import _factorise, nested_dissection_order

    # two unknown pixels that only see each other: I − W is singular without ε
    nbrs = np.full((8, 2), -1)
    nbrs[4, 0], nbrs[3, 1] = 1, 0  # right of 0 is 1, left of 1 is 0
    weights = np.zeros((8, 2), np.float32)
    weights[4, 0] = weights[3, 1] = 1.0
    lu, _ = _factorise(np.array([0, 1]), nbrs, weights, 2)
    assert lu.L.dtype == np.float64
    ys, xs = np.mgrid[0:9, 0:11]
    order = nested_dissection_order(ys.ravel(), xs.ravel())
    assert np.array_equal(np.sort(order), np.arange(99))
