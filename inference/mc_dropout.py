"""MC-dropout (paper 1 §3.4): K stochastic passes with dropout on, depth = mean, uncertainty = variance.

The encoder has no dropout, so :func:`mc_predict` runs the network's deterministic trunk (encoder,
skips, first decoder convolution) once and the stochastic decoder for the K samples in batches of
``chunk``. Sample k draws its dropout masks from its own generator seeded ``seed + k`` (see
:class:`inference.model.McDropout`), so :func:`mc_predict_naive` — K full forward passes — draws
the very same masks and gives the same result up to floating-point rounding.
BatchNorm stays in inference mode (running statistics) in both.
"""

from __future__ import annotations

import torch

from inference.dropout import mc_dropout_masks
from inference.model import DepthNet

DEFAULT_SAMPLES = 50
_CHUNK_BUDGET_BYTES = 768 * 2**20


def sample_generators(seed: int, first: int, count: int, device: torch.device | str) -> list[torch.Generator]:
    """Generators of samples first..first+count-1, seeded seed + k."""
    gens = []
    for k in range(first, first + count):
        g = torch.Generator(device=device)
        g.manual_seed(int(seed) + k)
        gens.append(g)
    return gens


MAX_CHUNK = 10  # larger decoder batches measured slower on CPU (activations fall out of cache)


def default_chunk(model: DepthNet, batch: int, height: int, width: int, samples: int) -> int:
    """Samples per decoder batch: at most MAX_CHUNK, and the widest decoder activation within ~768 MB."""
    # widest live decoder activations, in full-resolution-equivalent channels
    widest = {"d3net": 64 + 64 + 32, "d3net-lite": 4}.get(model.arch, 64)
    per_sample = batch * height * width * widest * 4 * 2  # float32, input + output of a layer
    return max(1, min(samples, MAX_CHUNK, int(_CHUNK_BUDGET_BYTES // max(per_sample, 1))))


def _mean_var(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) variance over dim 0, two-pass (stable in float32, faster than var_mean here)."""
    n = stack.shape[0]
    mean = stack.sum(0) / n
    d = stack - mean
    return mean, d.mul_(d).sum(0) / n


def mc_predict(model: DepthNet, rgb: torch.Tensor, samples: int = DEFAULT_SAMPLES, seed: int = 0,
               chunk: int | None = None, return_samples: bool = False):
    """MC-dropout mean and variance of depth, (B, 1, H, W) each, from ``samples`` dropout samples.

    rgb: (B, 3, H, W) in [0, 1]. With ``return_samples`` also returns the (K, B, 1, H, W) samples.
    """
    if samples < 1:
        raise ValueError("samples must be >= 1")
    was_training = model.training
    model.eval()
    b, _, h, w = rgb.shape
    chunk = chunk or default_chunk(model, b, h, w, samples)
    outs = []
    try:
        with torch.inference_mode():
            trunk = model.trunk(rgb)
            for first in range(0, samples, chunk):
                n = min(chunk, samples - first)
                with mc_dropout_masks(model, sample_generators(seed, first, n, rgb.device)):
                    outs.append(model.decode(trunk, repeat=n).reshape(n, b, 1, h, w))
    finally:
        model.train(was_training)
    stack = outs[0] if len(outs) == 1 else torch.cat(outs)
    mean, var = _mean_var(stack)
    if return_samples:
        return mean, var, stack
    return mean, var


def mc_predict_naive(model: DepthNet, rgb: torch.Tensor, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                     return_samples: bool = False):
    """The reference: ``samples`` complete forward passes, sample k with generator seed + k."""
    was_training = model.training
    model.eval()
    b, _, h, w = rgb.shape
    outs = []
    try:
        with torch.inference_mode():
            for k in range(samples):
                with mc_dropout_masks(model, sample_generators(seed, k, 1, rgb.device)):
                    outs.append(model(rgb))
    finally:
        model.train(was_training)
    stack = torch.stack(outs)
    mean, var = _mean_var(stack)
    if return_samples:
        return mean, var, stack
    return mean, var
