"""Cross-validation folds by time and the sparsification / rank-correlation metrics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from inference.cv import ause, min_gap_s, sparsification_curve, spearman, time_folds


def _ids(times_s):
    t0 = dt.datetime(2018, 4, 26, 16, 0, 0)
    return [(t0 + dt.timedelta(seconds=float(s))).isoformat(timespec="microseconds") for s in times_s]


def test_folds_are_contiguous_cover_everything_and_never_leak_within_gap():
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(20, 60, 81))
    times[40:] += 1800  # a second session half an hour later
    ids = _ids(times)
    folds = time_folds(ids, 3, gap_s=120.0)
    held = [s for f in folds for s in f.held_out]
    assert sorted(held) == sorted(ids) and len(held) == len(set(held))
    order = sorted(ids)
    for f in folds:
        pos = sorted(order.index(s) for s in f.held_out)
        assert pos == list(range(pos[0], pos[-1] + 1))  # one contiguous chunk in time
        assert not set(f.train) & set(f.held_out)
        assert set(f.train) | set(f.held_out) | set(f.purged) == set(ids)
        assert min_gap_s(f) > 120.0
        assert f.purged  # neighbours in time were dropped, not trained on


def test_folds_reject_bad_k():
    with pytest.raises(ValueError):
        time_folds(_ids([0, 1, 2]), 1)
    with pytest.raises(ValueError):
        time_folds(_ids([0, 1]), 3)


def test_sparsification_curve_by_hand():
    err = np.array([4.0, 1.0, 3.0, 2.0])
    unc = np.array([0.9, 0.1, 0.5, 0.2])  # ranks the errors perfectly
    c = sparsification_curve(err, unc, steps=4)
    # remove 0, 1, 2, 3 of 4 pixels, largest σ first: means of [4,3,2,1], [3,2,1], [2,1], [1]
    np.testing.assert_allclose(c, [2.5, 2.0, 1.5, 1.0])
    a = ause(err, unc, steps=4)
    assert a["ause"] == pytest.approx(0.0)
    assert a["ause_ratio"] == pytest.approx(0.0)
    # reversed ranking: removes the smallest errors first -> means of [1,2,3,4], [2,3,4], [3,4], [4]
    bad = ause(err, -unc, steps=4)
    # curve 2.5, 3, 3.5, 4; oracle 2.5, 2, 1.5, 1 -> AUSE mean(0, 1, 2, 3) = 1.5
    assert bad["ause"] == pytest.approx(1.5)
    # random: flat at 2.5 -> mean(0, .5, 1, 1.5) = 0.75; ratio 2
    assert bad["ause_random"] == pytest.approx(0.75)
    assert bad["ause_ratio"] == pytest.approx(2.0)


def test_random_uncertainty_scores_near_chance():
    rng = np.random.default_rng(1)
    err = rng.exponential(1.0, 200_000)
    a = ause(err, rng.random(err.size))
    assert 0.95 < a["ause_ratio"] < 1.05


def test_spearman_by_hand():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ranks x = 1,2,3 ; y = 1,3,2 -> 1 - 6*(0+1+1)/(3*8) = 0.5
    assert spearman(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(0.5)
