"""Training losses on depth maps (pure functions over tensors).

pred / mu / log_b / depth_m: (B, 1, H, W); valid: bool (B, 1, H, W). Depth in metres.
"""

from __future__ import annotations

import math

import torch


def masked_l1(pred: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |pred - depth| (m) over valid pixels with depth > 0 (0 with gradient when none)."""
    m = valid & (depth_m > 0)
    if not bool(m.any()):
        return (pred * 0).sum()
    return (pred[m] - depth_m[m]).abs().mean()


def log_l1(pred: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |log pred - log depth| over valid pixels (0 with gradient when none)."""
    m = valid & (depth_m > 0)
    if not bool(m.any()):
        return (pred * 0).sum()
    return (torch.log(pred[m].clamp_min(1e-6)) - torch.log(depth_m[m])).abs().mean()


def scale_invariant(pred: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor, lam: float = 0.85
                    ) -> torch.Tensor:
    """Eigen et al. (2014) scale-invariant log loss, per image then averaged: sqrt(mean d² - λ mean(d)²)."""
    return log_scale_invariant(torch.log(pred.clamp_min(1e-6)), depth_m, valid, lam)


def log_scale_invariant(log_pred: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor, lam: float = 0.85
                        ) -> torch.Tensor:
    """:func:`scale_invariant` of a log-depth prediction: per image sqrt(mean g² - λ mean(g)²) with
    g = log_pred - log depth over valid pixels with depth > 0 (0 with gradient for an empty image)."""
    out = []
    for p, g, v in zip(log_pred, depth_m, valid):
        m = v & (g > 0)
        if not bool(m.any()):
            out.append((p * 0).sum())
            continue
        d = p[m] - torch.log(g[m])
        out.append(torch.sqrt((d * d).mean() - lam * d.mean() ** 2 + 1e-8))
    return torch.stack(out).mean()


def log_l1_laplace_loss(mu: torch.Tensor, log_b: torch.Tensor, depth_m: torch.Tensor,
                        valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 of log-depth, Laplace NLL of the scale head), means over valid pixels.

    The mean head is trained by the plain L1 of log depth; the scale head by the Laplace negative
    log-likelihood with the error detached, so the uncertainty never trades off the depth accuracy.
    """
    m = valid & (depth_m > 0)
    if not bool(m.any()):
        z = (mu * 0).sum() + (log_b * 0).sum()
        return z, z
    err = (mu[m] - torch.log(depth_m[m])).abs()
    lb = log_b[m]
    nll = err.detach() * torch.exp(-lb) + lb
    return err.mean(), nll.mean()


def log_si_laplace_loss(mu: torch.Tensor, log_b: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor,
                        lam: float = 0.85) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale-invariant log loss of the mean head, Laplace NLL of the scale head).

    The mean head is trained by :func:`log_scale_invariant` (λ = 0.85 as in BTS: mostly the image's
    shape, 15 % its scale); the scale head exactly as in :func:`log_l1_laplace_loss` (NLL of the
    detached |μ - log depth|).
    """
    _, nll = log_l1_laplace_loss(mu, log_b, depth_m, valid)
    return log_scale_invariant(mu, depth_m, valid, lam) + (log_b * 0).sum(), nll


def depth_std_m(mu: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """σ of depth in metres from the Laplace log-depth head: exp(μ)·√2·b (first-order)."""
    return mu.exp() * math.sqrt(2.0) * log_b.exp()
