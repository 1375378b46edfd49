"""A classical defocus cue computed inside a network: Zhuo & Sim (2011) edge blur from one image.

The ratio R of gradient magnitudes of an image and its copy re-blurred with a known Gaussian σ0
gives the edge blur σ = σ0 / sqrt(R² - 1) (Zhuo & Sim, "Defocus map estimation from a single
image", 2011). Pure torch, no parameters, ONNX-exportable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CUE_SIGMA0_PX = 1.0
CUE_MAX_SIGMA_PX = 4.0


def _gauss1d(sigma_px: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return k / k.sum()


def defocus_cue(rgb: torch.Tensor, sigma0_px: float = CUE_SIGMA0_PX) -> torch.Tensor:
    """Zhuo & Sim edge-blur cue from RGB in [0, 1] (B, 3, H, W) -> (B, 2, H, W): [σ·w, w].

    σ (px, clipped to [0, 4]) is the Gaussian blur estimated from the gradient-magnitude ratio R of
    the image and its re-blurred copy; w in [0, 1] is an edge weight (gradient magnitude, saturating
    at 0.1 per pixel). Where there is no edge both channels are ~0.
    """
    gray = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])
    k = _gauss1d(sigma0_px).to(rgb)
    r = k.numel() // 2
    g1 = F.conv2d(F.pad(gray, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    g1 = F.conv2d(F.pad(g1, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))

    def grad_mag(x: torch.Tensor) -> torch.Tensor:
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
        gx = (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]) * 0.5
        gy = (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]) * 0.5
        return torch.sqrt(gx * gx + gy * gy + 1e-12)

    m0, m1 = grad_mag(gray), grad_mag(g1)
    ratio = (m0 / (m1 + 1e-6)).clamp(min=1.0 + 1e-3)
    sigma = (sigma0_px / torch.sqrt(ratio * ratio - 1.0)).clamp(0.0, CUE_MAX_SIGMA_PX)
    w = (m0 / 0.1).clamp(0.0, 1.0)
    return torch.cat([sigma * w, w], dim=1)
