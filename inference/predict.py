"""Depth prediction for images: one deterministic pass or MC-dropout mean + uncertainty.

``rig predict --model M --input FILE|DIR --out DIR [--mc-samples K] [--colorize]`` writes, per input
image, ``<basename>.png`` (16-bit depth in millimetres), with ``--mc-samples K`` also
``<basename>_std.png`` (16-bit MC-dropout standard deviation in millimetres), and with
``--colorize`` colour versions ``<basename>_color.png`` / ``<basename>_std_color.png``.

A camera-independent model (``inference.camind``, detected from the file) takes the camera's k_cam
and γ from ``--config`` (rig preset or YAML; ``blur.k_cam_px`` from ``rig calibrate blur --write``,
else the thin-lens value) or from ``--k-cam-px`` / ``--gamma-px``; see :mod:`inference.camind_use`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from rig.core.errors import RigError

if TYPE_CHECKING:
    from inference.camind_use import CamindRunner

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Prediction:
    """depth_m: (H, W) float32 metres; std_m: (H, W) MC-dropout standard deviation or None."""

    depth_m: np.ndarray
    std_m: np.ndarray | None = None


def to_tensor(rgb: np.ndarray, device: Any = "cpu"):  # -> torch.Tensor
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    import torch

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RigError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
    return t.unsqueeze(0).to(device)


def predict_image(model: Any, rgb: np.ndarray, mc_samples: int = 0, seed: int = 0,
                  device: Any = "cpu") -> Prediction:
    """Depth for one RGB uint8 image; ``mc_samples`` > 1 uses MC-dropout (mean, std)."""
    import torch

    from inference.mc_dropout import mc_predict

    x = to_tensor(rgb, device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if mc_samples and mc_samples > 1:
                mean, var = mc_predict(model, x, samples=mc_samples, seed=seed)
                return Prediction(mean[0, 0].cpu().numpy(), var[0, 0].clamp_min(0).sqrt().cpu().numpy())
            return Prediction(model(x)[0, 0].float().cpu().numpy())
    finally:
        model.train(was_training)


def resize_for_model(rgb: np.ndarray, target_wh: tuple[int, int] | None) -> np.ndarray:
    """Area-downsample an image to the model's training width when it is much larger (e.g. a full
    3872x2592 DSLR frame for a model trained at 645x432), keeping the aspect ratio; blur scales with
    the image, so a model must see the resolution it was trained at."""
    import cv2

    if target_wh is None:
        return rgb
    h, w = rgb.shape[:2]
    tw = int(target_wh[0])
    if w <= tw * 1.25:
        return rgb
    th = int(round(h * tw / w))
    return cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)


def colorize(depth_m: np.ndarray, lo: float | None = None, hi: float | None = None,
             cmap: str = "viridis") -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB through a matplotlib colour map (0/NaN -> black)."""
    import matplotlib

    d = np.asarray(depth_m, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo = float(np.percentile(d[ok], 1)) if lo is None else lo
    hi = float(np.percentile(d[ok], 99)) if hi is None else hi
    t = np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = (matplotlib.colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)
    rgb[~ok] = 0
    return rgb


def list_inputs(path: Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."))
        if not files:
            raise RigError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
        return files
    raise RigError(f"{p}: no such file or folder")


def write_prediction(out_dir: Path, stem: str, pred: Prediction, colorize_out: bool) -> list[Path]:
    from rig.core.imageio import write_depth_mm, write_image

    out_dir = Path(out_dir)
    written = [write_depth_mm(out_dir / f"{stem}.png", pred.depth_m)]
    if pred.std_m is not None:
        written.append(write_depth_mm(out_dir / f"{stem}_std.png", pred.std_m))
    if colorize_out:
        written.append(write_image(out_dir / f"{stem}_color.png", colorize(pred.depth_m)))
        if pred.std_m is not None:
            written.append(write_image(out_dir / f"{stem}_std_color.png",
                                       colorize(pred.std_m + 1e-9, lo=0.0, cmap="magma")))
    return written


def read_checked_rgb(path: Path) -> np.ndarray:
    """An input image, refused with one line (RigError) when it is truncated, corrupt or undecodable."""
    from rig.core.imageio import read_rgb
    from rig.core.session import verify_image_file

    try:
        verify_image_file(Path(path))
    except ValueError as e:
        raise RigError(f"{Path(path).parent / str(e)}; refused") from None
    return read_rgb(path)


def predict_files(model_ref: str, inputs: Iterable[Path], out_dir: Path, mc_samples: int = 0,
                  colorize_out: bool = False, seed: int = 0, device: str = "cpu",
                  resize: str = "auto", camind: "CamindRunner | None" = None,
                  on_skip: "Callable[[Path, str], None] | None" = None) -> list[dict[str, Any]]:
    """Predict every input image into ``out_dir``; returns one record per image.

    A truncated or corrupt input raises RigError, or, with ``on_skip``, is reported through it
    (path, one-line reason) and skipped. A full disk raises StorageFull (exit 4).

    A camera-independent model (``camind``: an :class:`inference.camind_use.CamindRunner`, or a camind
    file as ``model_ref``, then with the simulated preset's constants) runs on the CPU with the
    camera's k_cam / γ scaled to each image's width; its records add ``k_cam_px`` and ``gamma_px``.
    """
    from rig.core.session import StorageFull, is_disk_full

    if camind is None:
        from inference.camind_use import camind_model_path, open_camind

        path = camind_model_path(model_ref)
        if path is not None:
            from rig.core.config import load_rig_config

            camind = open_camind(path, load_rig_config("simulated"))
    if camind is not None:
        from inference.camind_use import refuse_mc_samples

        refuse_mc_samples(mc_samples)
        target = camind.image_size_px if resize == "auto" else None
        infer = lambda rgb: Prediction(camind.infer(rgb))  # noqa: E731
    else:
        from inference.model import load_model

        loaded = load_model(model_ref, device=device)
        size = loaded.meta.get("image_size_px") if resize == "auto" else None
        target = tuple(size) if size else None
        infer = lambda rgb: predict_image(loaded.model, rgb, mc_samples=mc_samples, seed=seed,  # noqa: E731
                                          device=device)
    records = []
    used: set[str] = set()
    for f in inputs:
        # same-named inputs from different folders (session raw/<id>/defocused.jpg) get the folder prefixed
        stem = f.stem if f.stem not in used else f"{f.parent.name}_{f.stem}"
        try:
            image = read_checked_rgb(f)
        except RigError as e:
            if on_skip is None:
                raise
            on_skip(f, str(e))
            continue
        used.add(stem)
        rgb = resize_for_model(image, target)
        pred = infer(rgb)
        try:
            files = write_prediction(out_dir, stem, pred, colorize_out)
        except OSError as e:
            if is_disk_full(e):
                raise StorageFull(f"{out_dir}: disk full while writing {stem}.png; the {len(records)} depth map(s) "
                                  "written before are intact — free space, then run the same command again") from None
            raise RigError(f"{out_dir}: cannot write {stem}.png: {e.strerror or e}") from None
        rec = {"input": str(f), "stem": stem, "size_px": [rgb.shape[1], rgb.shape[0]],
               "outputs": [str(p) for p in files],
               "median_depth_m": float(np.median(pred.depth_m)),
               "mean_std_m": None if pred.std_m is None else float(pred.std_m.mean())}
        if camind is not None:
            rec["k_cam_px"], rec["gamma_px"] = camind.constants_at(rgb.shape[1])
        records.append(rec)
    return records


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RigError("--device cuda: no CUDA device available")
    return name
