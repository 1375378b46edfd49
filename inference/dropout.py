"""Dropout whose masks can come from explicit generators (MC-dropout equivalence, reproducibility).

:class:`McDropout` is the dropout layer of every network in :mod:`inference.model`;
:class:`mc_dropout_masks` switches it to K explicit mask streams for batched MC-dropout samples.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class McDropout(nn.Module):
    """Dropout p (element-wise, inverted scaling).

    Training mode: ordinary dropout from the global RNG. Outside training it is the identity, unless
    :func:`mc_dropout_masks` set ``generators``: then the batch holds ``len(generators)`` dropout
    samples of ``B = N / len(generators)`` images (sample-major), and sample k's masks — one
    (B, C, H, W) draw per layer, in layer order — come from ``generators[k]``. A single pass with
    ``[g_k]`` therefore draws exactly the masks that sample k of a batched pass does.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError("dropout p must be in [0, 1)")
        self.p = p
        self.generators: list[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            return F.dropout(x, self.p, self.training)
        if self.p == 0.0:
            return x
        k = len(self.generators)
        if x.shape[0] % k:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of the {k} dropout samples")
        b = x.shape[0] // k
        mask = torch.empty_like(x)
        for i, g in enumerate(self.generators):
            mask[i * b:(i + 1) * b] = sample_keep_mask((b, *x.shape[1:]), 1.0 - self.p, g, x.device)
        return x * mask.mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


_BIT_SHIFTS: dict[str, torch.Tensor] = {}


def sample_keep_mask(shape: tuple[int, ...], keep: float, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """A {0, 1} uint8 mask of ``shape``, each element 1 with probability ``keep``, from ``generator``.

    For keep = 0.5 (paper 1's dropout) every element takes one bit of 64-bit random words — about
    five times cheaper than one uniform float per element, which matters for 50 MC-dropout samples.
    """
    n = 1
    for d in shape:
        n *= int(d)
    if keep == 0.5:
        key = str(device)
        if key not in _BIT_SHIFTS:
            _BIT_SHIFTS[key] = torch.arange(8, dtype=torch.uint8, device=device)
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 63) // 64,), dtype=torch.int64, generator=generator,
                              device=device)
        bits = (words.view(torch.uint8).unsqueeze(-1) >> _BIT_SHIFTS[key]) & 1
        return bits.reshape(-1)[:n].view(shape)
    return (torch.rand(shape, generator=generator, device=device) < keep).to(torch.uint8)


class mc_dropout_masks:  # noqa: N801 — used as a context manager
    """``with mc_dropout_masks(model, generators): ...`` — dropout on, masks from ``generators``."""

    def __init__(self, model: nn.Module, generators: list[torch.Generator]) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, McDropout)]
        self.generators = list(generators)

    def __enter__(self) -> "mc_dropout_masks":
        for m in self.layers:
            m.generators = self.generators
        return self

    def __exit__(self, *exc: Any) -> None:
        for m in self.layers:
            m.generators = None
