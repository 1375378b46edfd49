"""Using a camera-independent (camind) model on a new camera: its k_cam and γ from the rig config.

A camind model (:mod:`inference.camind`) divides its predicted blur by ρ·k_cam before the depth
network, so the same weights serve any camera once that camera's constants are known — no
retraining. They come from the rig config:

* k_cam (px, blur-circle diameter convention, at ``output.size_px``): ``blur.k_cam_px`` as measured
  by ``rig calibrate blur --write``, else the thin-lens value :func:`rig.core.optics.k_cam_px` of the
  defocused lens;
* γ (px, the in-focus blur): ``blur.gamma_px`` (default 0).

Both are in output pixels of the config, so they are scaled by ``width / output.size_px[0]`` when
the image handed to the network has another width. ``rig predict`` and ``rig live`` route camind
model files here (:func:`camind_model_path`, :func:`open_camind`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rig.core.errors import RigError

if TYPE_CHECKING:
    from inference.camind import CamIndDFD
    from rig.core.config import RigConfig

SOURCE_CONFIG = "blur calibration (config)"
SOURCE_THIN_LENS = "thin-lens model"
FOCUS_TOLERANCE = 0.05  # relative focus-distance difference above which the model is warned about


def camera_constants(cfg: "RigConfig", width_px: int | float) -> tuple[float, float, str]:
    """(k_cam_px, gamma_px, source) for images ``width_px`` wide.

    k_cam: ``cfg.blur.k_cam_px`` (source "blur calibration (config)"), else the thin-lens k_cam of
    the defocused lens (source "thin-lens model"); γ: ``cfg.blur.gamma_px``. Both are given in
    ``cfg.output.size_px`` pixels and scaled here by ``width_px / cfg.output.size_px[0]``.
    """
    from rig.core import optics

    scale = float(width_px) / float(cfg.output.size_px[0])
    if cfg.blur.k_cam_px is not None:
        k, source = float(cfg.blur.k_cam_px), SOURCE_CONFIG
    else:
        k, source = optics.k_cam_px(cfg.lens("defocused")), SOURCE_THIN_LENS
    return k * scale, float(cfg.blur.gamma_px) * scale, source


def focus_warning(meta: dict[str, Any], cfg: "RigConfig") -> str | None:
    """One line when the model's training focus (meta ``focus_m``) differs from ``cfg.dslr.focus_m``
    by more than 5 % (the depth network learned one focus distance), else None."""
    trained = meta.get("focus_m")
    if trained is None:
        return None
    trained, now = float(trained), float(cfg.dslr.focus_m)
    if abs(trained - now) <= FOCUS_TOLERANCE * now:
        return None
    return (f"warning: the model was trained focused at {trained:g} m but {cfg.name} focuses at {now:g} m "
            f"(dslr.focus_m); its depth network learned one focus distance, so depths will be biased")


def refuse_mc_samples(mc_samples: int) -> None:
    """RigError (one line) when MC-dropout samples are asked of a camind model (it has no dropout)."""
    if mc_samples:
        raise RigError("--mc-samples: a camera-independent (camind) model has no dropout, so no "
                       "MC-dropout uncertainty; leave --mc-samples at 0")


def check_overrides(k_cam_px: float | None, gamma_px: float | None) -> None:
    """RigError (one line) unless ``k_cam_px`` is None or finite > 0 and ``gamma_px`` None or finite >= 0."""
    if k_cam_px is not None and not (math.isfinite(k_cam_px) and k_cam_px > 0):
        raise RigError(f"--k-cam-px: must be a number > 0 (output px), got {k_cam_px:g}")
    if gamma_px is not None and not (math.isfinite(gamma_px) and gamma_px >= 0):
        raise RigError(f"--gamma-px: must be a number >= 0 (output px), got {gamma_px:g}")


def camind_model_path(model_ref: str | Path | None) -> Path | None:
    """The model file when ``model_ref`` (file, run folder or shipped name) is a camind file, else None."""
    if model_ref is None or str(model_ref).endswith(".onnx"):
        return None
    try:
        from inference.camind import is_camind_file
        from inference.model import resolve_model_path
    except ImportError:  # no torch: an ONNX-only install has no camind models either
        return None
    try:
        path = resolve_model_path(model_ref)
    except RigError:
        return None
    return path if is_camind_file(path) else None


@dataclass
class CamindRunner:
    """A loaded camind model with the camera's constants.

    k_cam_px, gamma_px: at ``ref_width_px`` (the config's output width), in px; *_source: where each
    came from; notes: one-line warnings to show the user.
    """

    model: "CamIndDFD"
    meta: dict[str, Any]
    path: Path
    k_cam_px: float
    gamma_px: float
    k_source: str
    gamma_source: str
    ref_size_px: tuple[int, int]
    config_name: str
    notes: list[str] = field(default_factory=list)

    @property
    def ref_width_px(self) -> int:
        """The width (px) ``k_cam_px`` / ``gamma_px`` are given at: the config's output width."""
        return int(self.ref_size_px[0])

    @property
    def image_size_px(self) -> tuple[int, int]:
        """(W, H) to resize much larger inputs to: the model's training images (meta ``image_size_px``),
        else the config's output size."""
        size = self.meta.get("image_size_px") or self.ref_size_px
        return int(size[0]), int(size[1])

    def constants_at(self, width_px: int) -> tuple[float, float]:
        """(k_cam_px, gamma_px) scaled to an image ``width_px`` wide."""
        s = float(width_px) / self.ref_width_px
        return self.k_cam_px * s, self.gamma_px * s

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """Depth (H, W) float32 m from an RGB (H, W, 3) uint8 image, constants scaled to its width."""
        from inference.camind import predict_camind

        k, g = self.constants_at(int(rgb.shape[1]))
        return predict_camind(self.model, rgb, k, g)

    def describe(self) -> str:
        """One line: the k_cam and γ used, and where they came from."""
        k = (f"k_cam {self.k_cam_px:.4g} px ({self.k_source})" if self.model.use_k_cam
             else "k_cam not used (the model was trained without k_cam)")
        return (f"{k}, γ {self.gamma_px:.4g} px ({self.gamma_source}) at {self.ref_width_px} px wide, "
                f"config {self.config_name}")


def open_camind(path: Path, cfg: "RigConfig", k_cam_px: float | None = None,
                gamma_px: float | None = None) -> CamindRunner:
    """Load a camind file and take its constants from ``cfg``, or from the overrides (output px of
    ``cfg``, like ``blur.k_cam_px``). RigError (one line) on a bad override or file."""
    from inference.camind import load_camind

    check_overrides(k_cam_px, gamma_px)
    model, meta = load_camind(path)
    size = (int(cfg.output.size_px[0]), int(cfg.output.size_px[1]))
    k_cfg, g_cfg, k_source = camera_constants(cfg, size[0])
    runner = CamindRunner(model=model, meta=meta, path=Path(path),
                          k_cam_px=k_cfg if k_cam_px is None else float(k_cam_px),
                          gamma_px=g_cfg if gamma_px is None else float(gamma_px),
                          k_source=k_source if k_cam_px is None else "--k-cam-px",
                          gamma_source="config blur.gamma_px" if gamma_px is None else "--gamma-px",
                          ref_size_px=size, config_name=cfg.name)
    warn = focus_warning(meta, cfg)
    if warn:
        runner.notes.append(warn)
    if not model.use_k_cam:
        runner.notes.append("note: this camind model was trained without k_cam (use_k_cam false): "
                            "k_cam is ignored, only γ is applied")
    return runner
