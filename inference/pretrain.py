"""Synthetic pretraining images that match a real camera's blur (paper 1 §5: pretrain on simulated
defocus, then finetune on the real images).

Two sources, both rendered with the layered thin-lens model of :mod:`rig.core.defocus` at the
camera's optics (a :class:`rig.core.optics.Lens`, e.g. the fitted ``nikon_d200_xtion`` preset):

* :func:`scaled_depth_renders`: real all-in-focus images whose depth is multiplied by a random
  factor s (log-uniform in ``scale_range``) before rendering, labelled with the scaled depth. The
  same room then appears with several depths and the matching blur, so appearance alone cannot
  tell the depth: the network has to read the blur. (Jittering only the focus distance would do
  the opposite: the same image and label with different blur teaches the network to ignore blur.)
* :func:`procedural_renders`: procedural scenes whose texture is independent of depth.

Focus distance and ρ are jittered by small factors around the camera's values, for robustness to
calibration error. All arrays: RGB (H, W, 3) uint8, depth (H, W) float32 metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rig.core.optics import Lens


@dataclass(frozen=True)
class RenderJitter:
    """Random factors of one pretraining pool: depth scale range, ±log focus and ±log ρ jitter."""

    scale_range: tuple[float, float] = (0.6, 1.6)
    focus_log_jitter: float = 0.05
    rho_log_jitter: float = 0.10


@dataclass
class SynthPool:
    """Rendered images with their depth labels (lists of equal length)."""

    rgb: list[np.ndarray]
    depth_m: list[np.ndarray]
    scale: list[float]

    def __len__(self) -> int:
        return len(self.rgb)


def _render(rgb: np.ndarray, depth_m: np.ndarray, lens: Lens, psf: str, rho: float, max_step_px: float,
            jitter: RenderJitter, rng: np.random.Generator) -> np.ndarray:
    from rig.core.defocus import render_defocus

    focus_m = lens.focus_m * float(np.exp(rng.uniform(-jitter.focus_log_jitter, jitter.focus_log_jitter)))
    rho_j = rho * float(np.exp(rng.uniform(-jitter.rho_log_jitter, jitter.rho_log_jitter)))
    return render_defocus(rgb, depth_m, lens.with_focus(focus_m), psf=psf, rho=rho_j,
                          max_step_px=max_step_px, threads=1)


def scaled_depth_renders(aif_rgb: Sequence[np.ndarray], depth_m: Sequence[np.ndarray], lens: Lens, psf: str,
                         rho: float, max_step_px: float, per_image: int, seed: int,
                         jitter: RenderJitter = RenderJitter(), clip_m: tuple[float, float] = (0.3, 12.0)
                         ) -> SynthPool:
    """``per_image`` renders of every (all-in-focus image, depth) pair, each with its depth scaled."""
    rng = np.random.default_rng(seed)
    lo, hi = np.log(jitter.scale_range[0]), np.log(jitter.scale_range[1])
    pool = SynthPool([], [], [])
    for img, d in zip(aif_rgb, depth_m):
        for _ in range(per_image):
            s = float(np.exp(rng.uniform(lo, hi)))
            ds = np.clip(d * s, *clip_m).astype(np.float32)
            pool.rgb.append(_render(img, ds, lens, psf, rho, max_step_px, jitter, rng))
            pool.depth_m.append(ds)
            pool.scale.append(s)
    return pool


def procedural_renders(n: int, size_wh: tuple[int, int], lens: Lens, psf: str, rho: float, max_step_px: float,
                       seed: int, near_m: float = 0.6, far_range_m: tuple[float, float] = (3.0, 8.0),
                       jitter: RenderJitter = RenderJitter()) -> SynthPool:
    """``n`` procedural scenes of ``size_wh`` rendered through ``lens`` (texture independent of depth)."""
    from rig.core.procedural import procedural_scene

    rng = np.random.default_rng([seed, 1])
    w, h = size_wh
    pool = SynthPool([], [], [])
    for i in range(n):
        img, d = procedural_scene(w, h, seed=seed * 100_000 + i, near_m=near_m,
                                  far_m=float(rng.uniform(*far_range_m)))
        pool.rgb.append(_render(img, d, lens, psf, rho, max_step_px, jitter, rng))
        pool.depth_m.append(d)
        pool.scale.append(1.0)
    return pool
