"""Cross-validation by scene and uncertainty metrics (pure functions over ids and arrays).

Folds: captures sorted by time are cut into K contiguous chunks of near-equal size; fold k holds
chunk k out. Training for fold k leaves out every capture within ``gap_s`` of a held-out capture
(a purge), so no near-duplicate of a held-out view is trained on.

Sparsification (Ilg et al. 2018): remove pixels in order of decreasing predicted σ and track the
error of what remains; the oracle removes them in order of decreasing true error. AUSE is the area
between the two curves. ``ause_ratio`` divides it by the area between a random order (a flat curve
at the full error) and the oracle: 1 = no better than chance, 0 = perfect ranking.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _time_of(sample_id: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(sample_id)


@dataclass(frozen=True)
class Fold:
    """One fold: the held-out ids, the training ids, and the ids purged for being too close in time."""

    index: int
    held_out: tuple[str, ...]
    train: tuple[str, ...]
    purged: tuple[str, ...]


def time_folds(ids: Sequence[str], k: int, gap_s: float = 120.0) -> list[Fold]:
    """K contiguous time chunks; training ids within ``gap_s`` of any held-out id are purged.

    ids: ISO-timestamp sample ids ('2018-04-26T16:38:31.689710'). Raises ValueError for k < 2 or
    fewer ids than folds.
    """
    if k < 2:
        raise ValueError("need at least 2 folds")
    order = sorted(ids, key=_time_of)
    if len(order) < k:
        raise ValueError(f"{len(order)} samples cannot make {k} folds")
    chunks = [list(c) for c in np.array_split(np.array(order, dtype=object), k)]
    times = {sid: _time_of(sid) for sid in order}
    folds = []
    for i, held in enumerate(chunks):
        ht = [times[s] for s in held]
        lo, hi = min(ht), max(ht)
        train, purged = [], []
        for s in order:
            if s in held:
                continue
            t = times[s]
            near = (lo - _dt.timedelta(seconds=gap_s)) <= t <= (hi + _dt.timedelta(seconds=gap_s))
            (purged if near else train).append(s)
        folds.append(Fold(i, tuple(held), tuple(train), tuple(purged)))
    return folds


def min_gap_s(fold: Fold) -> float:
    """Smallest time (s) between a training id and a held-out id of the fold."""
    if not fold.train:
        return float("inf")
    tt = np.array([_time_of(s).timestamp() for s in fold.train])
    hh = np.array([_time_of(s).timestamp() for s in fold.held_out])
    return float(np.abs(tt[:, None] - hh[None, :]).min())


def sparsification_curve(error: np.ndarray, uncertainty: np.ndarray, steps: int = 20) -> np.ndarray:
    """Mean error of the pixels kept after removing the fraction i/steps (i = 0..steps-1) with the
    largest ``uncertainty``. error, uncertainty: same-shape arrays (flattened). Returns (steps,)."""
    e = np.asarray(error, np.float64).ravel()
    u = np.asarray(uncertainty, np.float64).ravel()
    if e.size == 0:
        return np.full(steps, np.nan)
    order = np.argsort(-u, kind="stable")
    e_sorted = e[order]
    # mean of e_sorted[cut:] for each cut, via a suffix sum
    suffix = np.cumsum(e_sorted[::-1])[::-1]
    n = e.size
    out = np.empty(steps)
    for i in range(steps):
        cut = min(int(round(i / steps * n)), n - 1)
        out[i] = suffix[cut] / (n - cut)
    return out


def ause(error: np.ndarray, uncertainty: np.ndarray, steps: int = 20) -> dict[str, float]:
    """AUSE and its ratio to a random ordering's: {'ause', 'ause_random', 'ause_ratio'}.

    Areas are means over the ``steps`` removal fractions of (curve - oracle curve). A random order
    keeps the mean error at every fraction (its expected curve is flat).
    """
    curve = sparsification_curve(error, uncertainty, steps)
    oracle = sparsification_curve(error, error, steps)
    e_mean = float(np.mean(np.asarray(error, np.float64)))
    a = float(np.mean(curve - oracle))
    a_rand = float(np.mean(e_mean - oracle))
    return {"ause": a, "ause_random": a_rand, "ause_ratio": a / a_rand if a_rand > 0 else float("nan")}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two same-size arrays (average ranks for ties)."""
    from scipy.stats import rankdata

    a = rankdata(np.asarray(x, np.float64).ravel())
    b = rankdata(np.asarray(y, np.float64).ravel())
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
