"""Depth-estimation error metrics (Eigen et al. 2014; paper 1 Table 2) on pixels with ground truth.

For one image with predicted depth d and ground truth g (metres) over the N evaluated pixels:

    rel    = mean |d - g| / g
    log10  = mean |log10 d - log10 g|
    rms    = sqrt(mean (d - g)^2)                  (m)
    rmslog = sqrt(mean (ln d - ln g)^2)
    δ<t    = fraction of pixels with max(d/g, g/d) < t, t = 1.25, 1.25², 1.25³

A pixel is evaluated when g > 0 (and the valid mask > 0, when given) and g lies in
[min_depth_m, max_depth_m] when those are set; predictions are clipped to that range (and to >= 1 mm).
A set of images is summarised by the mean over images of each image's metric ("image" mean, as in
Eigen et al.); :func:`pooled_metrics` computes them over all pixels at once instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("rel", "log10", "rms", "rmslog", "delta1", "delta2", "delta3")
LOWER_IS_BETTER = {"rel": True, "log10": True, "rms": True, "rmslog": True,
                   "delta1": False, "delta2": False, "delta3": False}
MIN_PRED_M = 1e-3


def eval_mask(gt_m: np.ndarray, valid: np.ndarray | None = None, min_depth_m: float | None = None,
              max_depth_m: float | None = None, crop: np.ndarray | None = None) -> np.ndarray:
    """Boolean (H, W) mask of evaluated pixels."""
    gt = np.asarray(gt_m)
    m = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        m &= np.asarray(valid) > 0
    if min_depth_m is not None:
        m &= gt >= min_depth_m
    if max_depth_m is not None:
        m &= gt <= max_depth_m
    if crop is not None:
        m &= crop
    return m


def eigen_crop(shape: tuple[int, int]) -> np.ndarray:
    """The NYUv2 evaluation crop of Eigen et al. (rows 45..471, cols 41..601 of 480x640), scaled to ``shape``."""
    h, w = shape
    m = np.zeros((h, w), dtype=bool)
    m[int(round(45 / 480 * h)):int(round(471 / 480 * h)), int(round(41 / 640 * w)):int(round(601 / 640 * w))] = True
    return m


def _values(pred_m: np.ndarray, gt_m: np.ndarray, mask: np.ndarray, min_depth_m: float | None,
            max_depth_m: float | None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_m, dtype=np.float64)
    gt = np.asarray(gt_m, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    d = pred[mask]
    g = gt[mask]
    lo = max(MIN_PRED_M, min_depth_m or 0.0)
    d = np.clip(np.nan_to_num(d, nan=lo, posinf=max_depth_m or 1e6), lo, max_depth_m or np.inf)
    return d, g


def _metrics_from_values(d: np.ndarray, g: np.ndarray) -> dict[str, float]:
    if d.size == 0:
        return {k: float("nan") for k in METRIC_NAMES}
    ratio = np.maximum(d / g, g / d)
    return {
        "rel": float(np.mean(np.abs(d - g) / g)),
        "log10": float(np.mean(np.abs(np.log10(d) - np.log10(g)))),
        "rms": float(np.sqrt(np.mean((d - g) ** 2))),
        "rmslog": float(np.sqrt(np.mean((np.log(d) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
    }


def depth_metrics(pred_m: np.ndarray, gt_m: np.ndarray, valid: np.ndarray | None = None,
                  min_depth_m: float | None = None, max_depth_m: float | None = None,
                  crop: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one image; also ``n_pixels``. NaN metrics when no pixel has ground truth."""
    mask = eval_mask(gt_m, valid, min_depth_m, max_depth_m, crop)
    d, g = _values(pred_m, gt_m, mask, min_depth_m, max_depth_m)
    out = _metrics_from_values(d, g)
    out["n_pixels"] = int(mask.sum())
    return out


def mean_metrics(per_image: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over images (images without evaluated pixels are skipped); ``n_images`` counted."""
    used = [m for m in per_image if m.get("n_pixels", 1) > 0]
    out = {k: float(np.mean([m[k] for m in used])) if used else float("nan") for k in METRIC_NAMES}
    out["n_images"] = len(used)
    return out


def pooled_metrics(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray],
                   valids: Iterable[np.ndarray | None] | None = None, min_depth_m: float | None = None,
                   max_depth_m: float | None = None, crop: bool = False) -> dict[str, float]:
    """Metrics over all evaluated pixels of all images at once (inside :func:`eigen_crop` with ``crop``)."""
    preds, gts = list(preds), list(gts)
    vs = list(valids) if valids is not None else [None] * len(preds)
    ds, gs = [], []
    for p, g, v in zip(preds, gts, vs):
        mask = eval_mask(g, v, min_depth_m, max_depth_m, eigen_crop(np.shape(g)) if crop else None)
        d, gg = _values(p, g, mask, min_depth_m, max_depth_m)
        ds.append(d)
        gs.append(gg)
    return _metrics_from_values(np.concatenate(ds) if ds else np.zeros(0), np.concatenate(gs) if gs else np.zeros(0))


@dataclass
class DepthBins:
    """Per-depth-bin RMS error (paper 1 Fig. 8). ``edges_m`` has len(rms_m) + 1 entries."""

    edges_m: np.ndarray
    rms_m: np.ndarray          # NaN where the bin has no evaluated pixel
    count_test: np.ndarray     # evaluated pixels per bin
    count_train: np.ndarray | None = None  # training-set ground-truth pixels per bin

    def to_dict(self) -> dict[str, list[float]]:
        out = {"edges_m": [float(x) for x in self.edges_m],
               "rms_m": [None if not np.isfinite(x) else float(x) for x in self.rms_m],  # type: ignore[misc]
               "count_test": [int(x) for x in self.count_test]}
        if self.count_train is not None:
            out["count_train"] = [int(x) for x in self.count_train]
        return out


class BinAccumulator:
    """Accumulates squared errors per ground-truth depth bin over many images."""

    def __init__(self, edges_m: np.ndarray) -> None:
        self.edges_m = np.asarray(edges_m, dtype=np.float64)
        n = len(self.edges_m) - 1
        self.sq = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray, mask: np.ndarray) -> None:
        d = np.asarray(pred_m, dtype=np.float64)[mask]
        g = np.asarray(gt_m, dtype=np.float64)[mask]
        idx = np.digitize(g, self.edges_m) - 1
        ok = (idx >= 0) & (idx < len(self.count))
        np.add.at(self.sq, idx[ok], (d[ok] - g[ok]) ** 2)
        np.add.at(self.count, idx[ok], 1)

    def result(self, count_train: np.ndarray | None = None) -> DepthBins:
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.where(self.count > 0, np.sqrt(self.sq / np.maximum(self.count, 1)), np.nan)
        return DepthBins(self.edges_m, rms, self.count.copy(), count_train)


def depth_histogram(depths_m: Iterable[np.ndarray], edges_m: np.ndarray) -> np.ndarray:
    """Pixel counts of ground-truth depth (> 0) per bin over a set of depth maps."""
    counts = np.zeros(len(edges_m) - 1, dtype=np.int64)
    for d in depths_m:
        v = np.asarray(d)
        counts += np.histogram(v[v > 0], bins=edges_m)[0]
    return counts
