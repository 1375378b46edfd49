"""Depth prediction for images: one deterministic pass or MC-dropout mean + uncertainty.

``rig predict --model M --input FILE|DIR --out DIR [--mc-samples K] [--colorize]`` writes, per input
image, ``<basename>.png`` (16-bit depth in millimetres), with ``--mc-samples K`` also
``<basename>_std.png`` (16-bit MC-dropout standard deviation in millimetres), and with
``--colorize`` colour versions ``<basename>_color.png`` / ``<basename>_std_color.png`` on a fixed
depth range (the config's depth-sensor range, or ``--range MIN MAX``) with a colour bar in metres,
and with ``--ply`` a coloured point cloud ``<basename>.ply`` in metres. Beside the depth maps,
``camera_intrinsic.json`` (Open3D's format) holds the DSLR intrinsics at the depth maps' size.
Inputs may be JPEG/PNG/TIFF or camera RAW (NEF, DNG, read through rawpy).

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
from rig.core.imageio import RAW_EXTS

if TYPE_CHECKING:
    from inference.camind_use import CamindRunner
    from rig.core.config import RigConfig

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") + RAW_EXTS
STD_MAX_M = 0.5  # top of the uncertainty colour scale (as `rig live --std-max`)
# Aperture of each training input, and the focal length of the rig the DFD release (so the shipped
# models) was shot with: a Nikon D200 with a 35 mm lens (configs/rig/nikon_d200_xtion.yaml).
INPUT_F_NUMBER = {"N2_8": 2.8, "N8": 8.0}
TRAINED_FOCAL_MM = 35.0


@dataclass
class Prediction:
    """depth_m: (H, W) float32 metres; std_m: (H, W) metres (MC-dropout or aleatoric σ) or None."""

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
                  device: Any = "cpu", flip_tta: bool | None = None, uncertainty: str = "") -> Prediction:
    """Depth for one RGB uint8 image (H, W, 3) -> Prediction (depth_m, std_m), both (H, W) metres.

    ``mc_samples`` > 1: MC-dropout mean and std. ``uncertainty='moments'``: sampling-free MC-dropout
    (:mod:`inference.moments`), one pass. Otherwise one pass; a network with an aleatoric head
    (``forward_dist``, e.g. ``dfdnet``) also returns its predicted σ (``uncertainty='none'`` drops it).
    ``flip_tta``: average the log-depth (and log-scale) of the image and its mirror image (aleatoric
    networks, one-pass modes only); None = the model's own default (``model.flip_tta``, from its file).
    """
    import torch

    from inference.mc_dropout import mc_predict

    x = to_tensor(rgb, device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if uncertainty == "moments":
                from inference.moments import moments_predict

                mean, var = moments_predict(model, x)
                return Prediction(mean[0, 0].cpu().numpy(), var[0, 0].clamp_min(0).sqrt().cpu().numpy())
            if mc_samples and mc_samples > 1:
                mean, var = mc_predict(model, x, samples=mc_samples, seed=seed)
                return Prediction(mean[0, 0].cpu().numpy(), var[0, 0].clamp_min(0).sqrt().cpu().numpy())
            if uncertainty == "aleatoric" and not hasattr(model, "forward_dist"):
                raise RigError(f"--uncertainty aleatoric: this {getattr(model, 'arch', '')} model has no σ head "
                               "(use mc or moments)")
            flip = bool(getattr(model, "flip_tta", False)) if flip_tta is None else bool(flip_tta)
            if hasattr(model, "forward_dist") and (uncertainty != "none" or flip):
                from inference.losses import depth_std_m

                mu, log_b = model.forward_dist(x)
                if flip:
                    mu_f, lb_f = model.forward_dist(torch.flip(x, [3]))
                    mu = 0.5 * (mu + torch.flip(mu_f, [3]))
                    log_b = 0.5 * (log_b + torch.flip(lb_f, [3]))
                std = None if uncertainty == "none" else depth_std_m(mu, log_b)[0, 0].float().cpu().numpy()
                return Prediction(mu.exp()[0, 0].float().cpu().numpy(), std)
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


def draw_colorbar(rgb: np.ndarray, lo: float, hi: float, cmap: str = "viridis", unit: str = "m",
                  label: str = "depth") -> np.ndarray:
    """(H, W, 3) uint8 colourised image -> (H, W + bar, 3) with a vertical colour bar on the right:
    ``lo`` at the bottom, ``hi`` at the top, five tick labels in ``unit`` (e.g. metres)."""
    import cv2
    import matplotlib

    h, w = rgb.shape[:2]
    scale = max(0.35, min(h / 480.0, 1.2))
    panel_w = int(round(90 * scale))
    panel = np.full((h, panel_w, 3), 255, np.uint8)
    top, bottom = int(0.08 * h) + 4, h - int(0.05 * h) - 4
    bar_x0, bar_x1 = int(6 * scale), int(26 * scale)
    t = np.linspace(1.0, 0.0, max(bottom - top, 2))
    colors = (matplotlib.colormaps[cmap](t)[:, :3] * 255).astype(np.uint8)
    panel[top:top + len(t), bar_x0:bar_x1] = colors[:, None, :]
    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, 0.42 * scale, 1
    cv2.putText(panel, f"{label} {unit}", (2, max(int(0.06 * h), 10)), font, fs, (0, 0, 0), th, cv2.LINE_AA)
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = int(round(bottom - 1 - (bottom - 1 - top) * i / 4))
        cv2.line(panel, (bar_x1, y), (bar_x1 + 4, y), (0, 0, 0), 1)
        cv2.putText(panel, f"{v:.3g}", (bar_x1 + 6, y + int(4 * scale)), font, fs, (0, 0, 0), th, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([rgb, panel], axis=1))


def colorize_with_bar(values_m: np.ndarray, lo_m: float, hi_m: float, cmap: str = "viridis",
                      label: str = "depth") -> np.ndarray:
    """(H, W) metres -> (H, W + bar, 3) uint8: :func:`colorize` on the fixed range [lo_m, hi_m]
    (values outside are clipped) with :func:`draw_colorbar` in metres."""
    return draw_colorbar(colorize(values_m, lo=lo_m, hi=hi_m, cmap=cmap), lo_m, hi_m, cmap, "m", label)


def trained_optics(meta: dict[str, Any]) -> tuple[float | None, float | None]:
    """(f-number, focal length mm) a model was trained for: its meta's ``f_number`` / ``focal_mm``,
    else from its ``input`` (N2_8 -> f/2.8, N8 -> f/8, shot at :data:`TRAINED_FOCAL_MM`)."""
    inp = meta.get("input")
    f_number = meta.get("f_number") or INPUT_F_NUMBER.get(str(inp))
    focal_mm = meta.get("focal_mm") or (TRAINED_FOCAL_MM if inp in INPUT_F_NUMBER else None)
    return (None if f_number is None else float(f_number)), (None if focal_mm is None else float(focal_mm))


def optics_warning(path: Path, exif: dict[str, Any], f_number: float | None, focal_mm: float | None,
                   rel_tol: float = 0.06) -> str | None:
    """One line when the EXIF aperture or focal length of ``path`` differs (beyond ``rel_tol``) from
    what the model was trained on; None when they match or are unknown."""
    problems = []
    n, f = exif.get("FNumber"), exif.get("FocalLength")
    if f_number is not None and n is not None and abs(float(n) / f_number - 1.0) > rel_tol:
        problems.append(f"aperture f/{float(n):g} (model trained on f/{f_number:g})")
    if focal_mm is not None and f is not None and abs(float(f) / focal_mm - 1.0) > rel_tol:
        problems.append(f"focal length {float(f):g} mm (model trained on {focal_mm:g} mm)")
    if not problems:
        return None
    return (f"warning: {Path(path).name}: EXIF {' and '.join(problems)}; defocus differs, so depth will be "
            "wrong — use the model for this aperture/lens")


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


def write_prediction(out_dir: Path, stem: str, pred: Prediction, colorize_out: bool,
                     depth_range_m: tuple[float, float] = (0.5, 8.0), rgb: np.ndarray | None = None,
                     intrinsics: Any = None) -> list[Path]:
    """Write the depth (and σ) PNGs, with ``colorize_out`` colour PNGs on ``depth_range_m`` with a
    colour bar, and with ``intrinsics`` (rig.core.records.Intrinsics) a PLY coloured by ``rgb``."""
    from rig.core.imageio import write_depth_mm, write_image

    out_dir = Path(out_dir)
    written = [write_depth_mm(out_dir / f"{stem}.png", pred.depth_m)]
    if pred.std_m is not None:
        written.append(write_depth_mm(out_dir / f"{stem}_std.png", pred.std_m))
    if colorize_out:
        lo, hi = depth_range_m
        written.append(write_image(out_dir / f"{stem}_color.png", colorize_with_bar(pred.depth_m, lo, hi)))
        if pred.std_m is not None:
            written.append(write_image(out_dir / f"{stem}_std_color.png",
                                       colorize_with_bar(pred.std_m + 1e-9, 0.0, STD_MAX_M, "magma", "sigma")))
    if intrinsics is not None:
        from rig.core.pointcloud import write_point_cloud

        written.append(write_point_cloud(out_dir / f"{stem}.ply", pred.depth_m, rgb, intrinsics))
    return written


def write_intrinsics_beside(out_dir: Path, stem: str, k: Any, first_size: list[tuple[int, int]]) -> Path:
    """Open3D ``camera_intrinsic.json`` for the depth maps in ``out_dir`` (the first size seen);
    a depth map of another size gets its own ``<stem>.camera_intrinsic.json``."""
    from rig.core.pointcloud import O3D_INTRINSIC_NAME, write_o3d_intrinsics

    size = (int(k.width), int(k.height))
    if not first_size:
        first_size.append(size)
    name = O3D_INTRINSIC_NAME if size == first_size[0] else f"{stem}.{O3D_INTRINSIC_NAME}"
    return write_o3d_intrinsics(Path(out_dir) / name, k)
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
                  resize: str = "auto", camind: "CamindRunner | None" = None, *, cfg: "RigConfig | None" = None,
                  depth_range_m: tuple[float, float] | None = None, ply: bool = False,
                  warn: Any = None, uncertainty: str = "",
                  on_skip: "Callable[[Path, str], None] | None" = None,
                  flip_tta: bool | None = None) -> list[dict[str, Any]]:
    """Predict every input image into ``out_dir``; returns one record per image.

    ``cfg`` (default: the simulated preset, whose DSLR has the D200's field of view) gives the DSLR
    intrinsics written beside the depth maps (``camera_intrinsic.json``, and with ``ply`` a point
    cloud per image) and the colour range (``depth_range_m``, else its depth-sensor range). ``warn``
    (a print function) gets one line per image whose EXIF aperture/focal length differs from the
    model's training optics; records carry it as ``warning``.

    A truncated or corrupt input raises RigError, or, with ``on_skip``, is reported through it
    (path, one-line reason) and skipped. A full disk raises StorageFull (exit 4).

    A camera-independent model (``camind``: an :class:`inference.camind_use.CamindRunner`, or a camind
    file as ``model_ref``, then with the simulated preset's constants) runs on the CPU with the
    camera's k_cam / γ scaled to each image's width; its records add ``k_cam_px`` and ``gamma_px``.
    """
    from acquisition.exif import read_exif
    from rig.core.pointcloud import dslr_intrinsics_at
    from rig.core.session import StorageFull, is_disk_full

    if cfg is None:
        from rig.core.config import load_rig_config

        cfg = load_rig_config("simulated")
    if depth_range_m is None:
        depth_range_m = (float(cfg.depth_sensor.min_m), float(cfg.depth_sensor.max_m))
    trained: tuple[float | None, float | None] = (None, None)
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

        loaded = load_model(model_ref, device=device, flip_tta=flip_tta)
        size = loaded.meta.get("image_size_px") if resize == "auto" else None
        target = tuple(size) if size else None
        trained = trained_optics(loaded.meta)
        infer = lambda rgb: predict_image(loaded.model, rgb, mc_samples=mc_samples, seed=seed,  # noqa: E731
                                          device=device, uncertainty=uncertainty)
    records = []
    used: set[str] = set()
    first_size: list[tuple[int, int]] = []
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
        warning = optics_warning(f, read_exif(f), *trained) if any(v is not None for v in trained) else None
        if warning and warn is not None:
            warn(warning)
        pred = infer(rgb)
        h, w = pred.depth_m.shape
        k = dslr_intrinsics_at(cfg, w, h)
        try:
            files = write_prediction(out_dir, stem, pred, colorize_out, depth_range_m, rgb, k if ply else None)
            files.append(write_intrinsics_beside(out_dir, stem, k, first_size))
        except OSError as e:
            if is_disk_full(e):
                raise StorageFull(f"{out_dir}: disk full while writing {stem}.png; the {len(records)} depth map(s) "
                                  "written before are intact — free space, then run the same command again") from None
            raise RigError(f"{out_dir}: cannot write {stem}.png: {e.strerror or e}") from None
        rec = {"input": str(f), "stem": stem, "size_px": [rgb.shape[1], rgb.shape[0]],
               "outputs": [str(p) for p in files],
               "median_depth_m": float(np.median(pred.depth_m)),
               "mean_std_m": None if pred.std_m is None else float(pred.std_m.mean()), "warning": warning}
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
