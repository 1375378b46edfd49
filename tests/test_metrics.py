"""Depth metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.metrics import (BinAccumulator, depth_histogram, depth_metrics, eigen_crop, mean_metrics,
                               pooled_metrics)

# three evaluated pixels: (pred, gt) = (1, 1), (2, 1), (4, 5); a fourth has no ground truth
PRED = np.array([[1.0, 2.0], [4.0, 7.0]])
GT = np.array([[1.0, 1.0], [5.0, 0.0]])


def test_metrics_match_hand_computation() -> None:
    m = depth_metrics(PRED, GT)
    assert m["n_pixels"] == 3
    assert m["rel"] == pytest.approx((0 + 1 + 0.2) / 3)
    assert m["log10"] == pytest.approx((0 + math.log10(2) + abs(math.log10(0.8))) / 3)
    assert m["rms"] == pytest.approx(math.sqrt((0 + 1 + 1) / 3))
    assert m["rmslog"] == pytest.approx(math.sqrt((0 + math.log(2) ** 2 + math.log(0.8) ** 2) / 3))
    # ratios max(d/g, g/d): 1, 2, 1.25 -> 1.25 is not < 1.25; 2 is not < 1.25^3 = 1.953
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(2 / 3)
    assert m["delta3"] == pytest.approx(2 / 3)


def test_valid_mask_and_depth_range() -> None:
    valid = np.array([[255, 0], [255, 255]], np.uint8)
    m = depth_metrics(PRED, GT, valid)
    assert m["n_pixels"] == 2
    assert m["rel"] == pytest.approx(0.1)  # (0 + 0.2) / 2
    r = depth_metrics(PRED, GT, max_depth_m=2.0)
    assert r["n_pixels"] == 2 and r["rel"] == pytest.approx(0.5)
    # predictions are clipped into [min, max]: 9 m -> 3 m against ground truth 2 m
    c = depth_metrics(np.array([[9.0]]), np.array([[2.0]]), max_depth_m=3.0)
    assert c["rms"] == pytest.approx(1.0)


def test_empty_image_gives_nan_and_is_skipped_in_mean() -> None:
    empty = depth_metrics(PRED, np.zeros_like(GT))
    assert empty["n_pixels"] == 0 and math.isnan(empty["rel"])
    mean = mean_metrics([depth_metrics(PRED, GT), empty, depth_metrics(GT, GT)])
    assert mean["n_images"] == 2
    assert mean["rel"] == pytest.approx(0.2)  # (0.4 + 0) / 2
    assert mean["delta1"] == pytest.approx((1 / 3 + 1) / 2)


def test_pooled_differs_from_image_mean() -> None:
    a = (np.array([[2.0]]), np.array([[1.0]]))            # rel 1
    b = (np.full((1, 3), 1.0), np.full((1, 3), 1.0))      # rel 0 over 3 pixels
    pooled = pooled_metrics([a[0], b[0]], [a[1], b[1]])
    assert pooled["rel"] == pytest.approx(0.25)
    assert mean_metrics([depth_metrics(*a), depth_metrics(*b)])["rel"] == pytest.approx(0.5)


def test_depth_bins_and_histogram() -> None:
    edges = np.array([0.0, 1.5, 3.0, 6.0])
    acc = BinAccumulator(edges)
    acc.add(PRED, GT, GT > 0)
    res = acc.result(depth_histogram([GT, np.array([[2.0, 7.0]])], edges))
    assert list(res.count_test) == [2, 0, 1]
    assert res.rms_m[0] == pytest.approx(math.sqrt((0 + 1) / 2))
    assert math.isnan(res.rms_m[1])
    assert res.rms_m[2] == pytest.approx(1.0)
    assert list(res.count_train) == [2, 1, 1]  # 7 m is outside the edges
    d = res.to_dict()
    assert d["rms_m"][1] is None and d["count_train"] == [2, 1, 1]


def test_eigen_crop_scales_with_image() -> None:
    c = eigen_crop((480, 640))
    assert c.sum() == (471 - 45) * (601 - 41)
    small = eigen_crop((48, 64))
    assert small.shape == (48, 64) and not small[0, 0] and small[24, 32]
