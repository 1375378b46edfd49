"""Procedural textured scenes with known depth: blur is the only cue that follows depth.

Texture is drawn independently of depth, so a network trained on these renders cannot read depth
from appearance. Used by the demo, ``rig bench synth`` and synthetic pretraining.
"""

from __future__ import annotations

import numpy as np


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth value noise (h, w) float32 in ~[0, 1] from a (cells x cells·w/h) random grid."""
    import cv2

    gh, gw = max(2, cells), max(2, int(round(cells * w / h)))
    return cv2.resize(rng.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Colourful multi-scale texture (h, w, 3) float32 in [0, 1]: octave noise + a few hard stripes."""
    base = rng.random(3).astype(np.float32)
    tint = (rng.random(3).astype(np.float32) - 0.5) * 0.6
    lum = sum(_noise(rng, h, w, c) * a for c, a in ((4, 0.35), (16, 0.3), (64, 0.2), (max(h // 2, 2), 0.15)))
    img = base[None, None, :] * 0.5 + (lum[..., None] - 0.5) + tint[None, None, :] * lum[..., None]
    period = int(rng.integers(6, 24))
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = (((xx + yy * rng.integers(0, 2)) // period) % 2).astype(np.float32)
    img += 0.25 * (stripes[..., None] - 0.5) * (rng.random() < 0.6)
    return np.clip(img + 0.25, 0.0, 1.0)


def procedural_scene(width: int = 645, height: int = 432, seed: int = 0, near_m: float = 0.5,
                     far_m: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured indoor-like scene: (rgb (H, W, 3) uint8, depth_m (H, W) float32).

    A back wall at ``far_m``, a floor ramp from ~1.3·near at the bottom row to the wall (depth
    inverse-linear in the row, as a real ground plane), a slanted panel, and three to four
    fronto-parallel boxes between ``near_m`` and ~0.6·far (one close to ``near_m``), each with its
    own texture so every occlusion edge is visible.
    """
    import cv2

    if width < 16 or height < 16:
        raise ValueError("procedural_scene: width and height must be >= 16")
    if not 0 < near_m < far_m:
        raise ValueError("procedural_scene: need 0 < near_m < far_m")
    rng = np.random.default_rng(seed)
    h, w = height, width
    rgb = _texture(rng, h, w)
    depth = np.full((h, w), far_m, np.float32)
    horizon = int(h * rng.uniform(0.45, 0.6))
    rows = np.arange(h - horizon, dtype=np.float32) + 1.0
    floor_near = min(1.3 * near_m, 0.5 * far_m)
    inv = 1.0 / far_m + (1.0 / floor_near - 1.0 / far_m) * rows / rows[-1]
    depth[horizon:] = (1.0 / inv)[:, None]
    rgb[horizon:] = _texture(rng, h - horizon, w)

    def paste(mask: np.ndarray, d: np.ndarray | float) -> None:
        depth[mask] = d[mask] if isinstance(d, np.ndarray) else d
        rgb[mask] = _texture(rng, h, w)[mask]

    yy, xx = np.mgrid[0:h, 0:w]
    # slanted panel: depth ramps along x between two distances
    x0, x1 = sorted(rng.integers(0, w, 2))
    x1 = max(x1, x0 + w // 6)
    y0 = int(h * rng.uniform(0.1, 0.3))
    panel = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < int(h * rng.uniform(0.55, 0.8)))
    d_a, d_b = rng.uniform(0.3, 0.8, 2) * far_m
    paste(panel, (d_a + (d_b - d_a) * (xx - x0) / max(1, x1 - x0)).astype(np.float32))
    # fronto-parallel boxes and an ellipse, far to near so nearer ones occlude
    n_obj = int(rng.integers(3, 5))
    dists = np.sort(np.exp(rng.uniform(np.log(near_m), np.log(0.6 * far_m), n_obj)))[::-1]
    dists[-1] = near_m * rng.uniform(1.0, 1.3)
    for i, d in enumerate(dists):
        bw, bh = int(w * rng.uniform(0.12, 0.3)), int(h * rng.uniform(0.15, 0.4))
        cx, cy = int(rng.integers(bw // 2, w - bw // 2)), int(rng.integers(bh // 2, h - bh // 2))
        if i % 2:
            m = ((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1.0
        else:
            m = (np.abs(xx - cx) <= bw // 2) & (np.abs(yy - cy) <= bh // 2)
        paste(m, float(d))
    rgb8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return rgb8, np.clip(depth, near_m, far_m).astype(np.float32)


