"""k_cam fitted from real shots with depth for a camind model (inference.camind_study.fit_k_cam,
`rig calibrate k-cam`, `rig depth-study fit-kcam`)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inference.camind_study import K_CAM_FACTORS, fit_k_cam, log_depth_error


class _BlurToDepth(torch.nn.Module):
    """Test double for CamIndDFD's interface only (``stride``, ``forward(x, k_cam_px, gamma_px)`` ->
    ``.depth_m``): depth = c / k_cam everywhere, so the depth a k_cam gives is known in closed form.
    The search logic is what is tested here; real networks are fitted in tests/test_recipe.py."""

    stride = 8

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor, k_cam_px: float, gamma_px: float = 0.0) -> SimpleNamespace:
        return SimpleNamespace(depth_m=torch.full_like(x[:, :1], self.c / k_cam_px))


def _pairs(depth: float, n: int = 3):
    rgb = [np.zeros((16, 24, 3), np.uint8) for _ in range(n)]
    return rgb, [np.full((16, 24), depth, np.float32) for _ in range(n)], [np.ones((16, 24), bool) for _ in range(n)]


def test_log_depth_error_hand_values():
    d = np.array([[1.0, 2.0], [4.0, 0.0]], np.float32)
    p = np.array([[2.0, 2.0], [2.0, 5.0]], np.float32)
    v = np.ones_like(d, bool)
    assert log_depth_error(p, d, v) == pytest.approx((math.log(2) + 0 + math.log(2)) / 3)  # depth 0 skipped
    assert math.isnan(log_depth_error(p, d, np.zeros_like(v)))


@pytest.mark.parametrize("true_factor,want", [(0.5, 0.5), (1.41, 1.41), (0.6, 0.71 * 2**-0.25), (3.0, 2.0 * 2**0.25)])
def test_fit_finds_the_k_cam_that_matches_the_depth(true_factor, want):
    k0, c = 7.0, 14.0
    rgb, depth, valid = _pairs(c / (k0 * true_factor))  # the depth the true k_cam would give
    fit = fit_k_cam(_BlurToDepth(c), rgb, depth, valid, k0, ref_width_px=24)
    assert fit.factor == pytest.approx(want, rel=1e-6) and fit.k_cam_px == pytest.approx(k0 * want)
    assert len(fit.loss_by_factor) == len(K_CAM_FACTORS) + 2 and fit.images == 3
    assert fit.at_edge == (true_factor > 2.0)
    assert min(fit.loss_by_factor.values()) == fit.loss_by_factor[fit.factor]


def test_fit_scales_k_cam_to_the_image_width():
    # images half the reference width: the network sees k_cam / 2, as rig predict would give it
    k0, c = 8.0, 8.0
    rgb, depth, valid = _pairs(c / (k0 * 0.5))
    fit = fit_k_cam(_BlurToDepth(c), rgb, depth, valid, k0, ref_width_px=48)
    assert fit.factor == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_k_cam(_BlurToDepth(c), [], [], [], k0)
