"""The notebook entry point: one object that loads a model and predicts metric depth.

    from inference import DepthModel
    m = DepthModel.load("dfd-n2.8")          # shipped name, model file or run folder
    depth_m, std_m = m.predict(rgb)          # rgb: (H, W, 3) uint8 array or an image path (RAW too)

``predict`` resizes the image to the resolution the model was trained at (defocus blur scales with
the image, so a full DSLR frame must be downsampled), runs :func:`inference.predict.predict_image`
and returns depth in metres at the input's size (``full_size=False``: at the model's size).
``std_m`` is the uncertainty in metres (MC-dropout with ``mc_samples`` >= 2, or whatever
uncertainty the model itself gives), else None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rig.core.errors import RigError


@dataclass
class DepthModel:
    """A loaded depth network (``net``: torch module in eval mode) with its file's ``meta``."""

    net: Any
    arch: str
    path: Path
    meta: dict[str, Any]
    device: str = "cpu"

    @classmethod
    def load(cls, name_or_path: str | Path = "dfd-n2.8", device: str = "cpu") -> "DepthModel":
        """Load a shipped model name ('dfd-n2.8', 'dfd-n8'), a model file or a run folder."""
        from inference.model import load_model

        loaded = load_model(name_or_path, device=device)
        return cls(net=loaded.model, arch=loaded.arch, path=loaded.path, meta=dict(loaded.meta), device=device)

    @property
    def image_size_px(self) -> tuple[int, int] | None:
        """(width, height) of the training images, when the model file records it."""
        size = self.meta.get("image_size_px")
        return (int(size[0]), int(size[1])) if size else None

    def predict(self, rgb: np.ndarray | str | Path, mc_samples: int = 0, seed: int = 0,
                full_size: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W, 3) uint8 RGB (or float in [0, 1], or an image file) -> (depth_m, std_m), each
        (H, W) float32 metres (std_m None without uncertainty). ``mc_samples`` >= 2: MC-dropout."""
        import cv2

        from inference.predict import predict_image, resize_for_model

        img = _as_rgb_u8(rgb)
        small = resize_for_model(img, self.image_size_px)
        pred = predict_image(self.net, small, mc_samples=mc_samples, seed=seed, device=self.device)
        depth_m, std_m = pred.depth_m, pred.std_m
        h, w = img.shape[:2]
        if full_size and depth_m.shape != (h, w):
            depth_m = cv2.resize(depth_m, (w, h), interpolation=cv2.INTER_LINEAR)
            if std_m is not None:
                std_m = cv2.resize(std_m, (w, h), interpolation=cv2.INTER_LINEAR)
        return depth_m.astype(np.float32), (None if std_m is None else std_m.astype(np.float32))


def _as_rgb_u8(rgb: np.ndarray | str | Path) -> np.ndarray:
    """An image path, (H, W, 3) uint8, or (H, W, 3) float in [0, 1] -> (H, W, 3) uint8 RGB."""
    if isinstance(rgb, (str, Path)):
        from rig.core.imageio import read_rgb

        return read_rgb(Path(rgb))
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise RigError(f"DepthModel.predict: expected an RGB image (H, W, 3), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise RigError(f"DepthModel.predict: expected uint8 or float [0, 1] pixels, got {a.dtype}")
