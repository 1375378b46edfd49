"""The camera-independent network (paper 2) at full size on the real DSLR, as a ``rig depth-study`` recipe.

Training sees **no real defocused image and not the real aperture**: the training captures' f/8
images and depth (scaled-depth renders, :func:`inference.pretrain.scaled_depth_renders`) and
procedural scenes are rendered through the real rig's lens (the ``nikon_d200_xtion`` preset: 35 mm,
focus 1.687 m, ρ 0.264, 645x432) at other f-numbers, :data:`TRAIN_F_NUMBERS` (k_cam 14.5, 10.1,
5.1 and 3.6 px). The held-out real f/2.8 images (k_cam 7.23 px, between the training cameras) are
then read with only that camera's thin-lens k_cam and γ = 0, the constants ``rig predict`` takes
from the rig config: the cross-camera test of paper 2 on a real camera.

Network: :class:`inference.camind.CamIndDFD` with :data:`LEVELS`-level U-Nets of base width
:data:`BASE` (receptive field for 645x432 images), trained on ``budget.crop_px``² crops (the study
used 128: 0.9 s per batch-8 step on one AVX2 core, as a dfdnet step on 192² crops). Focus and ρ
are not jittered (the blur target must match the render), only the depth scale is.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from inference.camind import CameraSet, CamIndDFD
    from inference.recipe import Budget, Images

TRAIN_F_NUMBERS = (1.4, 2.0, 4.0, 5.6)
LEVELS, BASE = 6, 8
RIG_CONFIG = "nikon_d200_xtion"


def rig_constants(rig_config: str = RIG_CONFIG) -> tuple[float, float, float, float, int]:
    """(k_cam_px, gamma_px, focus_m, rho, output width px) of the rig's defocused camera at its
    output size. k_cam is always the **thin-lens** value: a ``blur.k_cam_px`` stored in the config
    (``rig calibrate k-cam --write`` fits it on captures that a fold may hold out) is not used here,
    so that cross-validation never sees held-out images through k_cam; γ is ``blur.gamma_px``."""
    from rig.core import optics
    from rig.core.config import load_rig_config

    cfg = load_rig_config(rig_config)
    k = optics.k_cam_px(cfg.lens("defocused"))
    return k, float(cfg.blur.gamma_px), float(cfg.dslr.focus_m), float(cfg.blur.rho), int(cfg.output.size_px[0])


def camera_sets_for(train: "Images", budget: "Budget", f_numbers: tuple[float, ...] = TRAIN_F_NUMBERS,
                    rig_config: str = RIG_CONFIG) -> list["CameraSet"]:
    """One :class:`inference.camind.CameraSet` per training f-number: ``budget.synth_per_image``
    scaled-depth renders of every training f/8 image + ``budget.procedural`` procedural scenes,
    split evenly over the cameras (at least one render per image and camera)."""
    from inference.camind import CameraSet
    from inference.pretrain import RenderJitter, procedural_renders, scaled_depth_renders
    from rig.core import optics
    from rig.core.config import load_rig_config

    cfg = load_rig_config(rig_config)
    exact = RenderJitter(focus_log_jitter=0.0, rho_log_jitter=0.0)
    kw = dict(psf=cfg.blur.psf, rho=cfg.blur.rho, max_step_px=cfg.blur.max_layer_step_px, jitter=exact)
    per_image = max(1, budget.synth_per_image // len(f_numbers))
    n_proc = max(1, budget.procedural // len(f_numbers))
    h, w = train.depth_m[0].shape
    sets = []
    for i, n in enumerate(f_numbers):
        lens = dataclasses.replace(cfg.lens("defocused"), f_number=float(n))  # the rig's lens at f/n
        a = scaled_depth_renders(train.aif, train.depth_m, lens, per_image=per_image, seed=budget.seed * 10 + i, **kw)
        b = procedural_renders(n_proc, (w, h), lens, seed=budget.seed * 10 + i, **kw)
        rgb = np.stack(a.rgb + b.rgb).astype(np.float32) / 255.0
        sets.append(CameraSet(f"f/{n:g}", rgb, np.stack(a.depth_m + b.depth_m).astype(np.float32),
                              optics.k_cam_px(lens)))
    return sets


def train_camind_recipe(budget: "Budget", train: "Images", out_dir: Path,
                        log: Callable[[str], None] = lambda s: None, use_k_cam: bool = True
                        ) -> tuple["CamIndDFD", dict[str, Any]]:
    """Train the camind network on the training captures' renders (resuming from
    ``out_dir/last.pt``); returns (model in eval mode, meta record for :func:`save_camind`).
    ``use_k_cam`` False: paper 2's "no k_cam" baseline, the same network and batches."""
    import torch

    from inference.camind import CamIndDFD, train_camind

    out_dir.mkdir(parents=True, exist_ok=True)
    k_cam, gamma, focus_m, rho, ref_w = rig_constants()
    t0 = time.perf_counter()
    sets = camera_sets_for(train, budget)
    log(f"camind pool: {sum(len(s.rgb) for s in sets)} renders at {', '.join(s.name for s in sets)} "
        f"({time.perf_counter() - t0:.0f} s)")
    depth_scale = float(np.exp(np.mean(np.log(np.concatenate([s.depth_m.ravel() for s in sets])))))
    torch.manual_seed(budget.seed)
    model = CamIndDFD(base=BASE, rho=rho, use_k_cam=use_k_cam, depth_scale_m=depth_scale, levels=LEVELS)
    t1 = time.perf_counter()
    losses = train_camind(model, sets, focus_m, budget.steps, (budget.crop_px, budget.crop_px), batch=budget.batch,
                          lr=budget.lr, seed=budget.seed, log=log, checkpoint=str(out_dir / "last.pt"),
                          checkpoint_every=budget.ckpt_every)
    h, w = train.depth_m[0].shape
    meta = {"arch": "camind", "budget": dataclasses.asdict(budget),
            "input": "N2_8", "focus_m": focus_m, "train_k_cam_px": [float(s.k_cam_px) for s in sets],
            "train_f_numbers": [float(n) for n in TRAIN_F_NUMBERS], "image_size_px": [int(w), int(h)],
            "train_ids": list(train.ids), "train_seconds": time.perf_counter() - t1,
            "depth_scale_m": depth_scale, "eval_k_cam_px": k_cam, "eval_gamma_px": gamma,
            "eval_ref_width_px": ref_w,
            "final_train_loss": float(np.mean(losses[-200:])) if losses else None}
    return model.eval(), meta


@dataclasses.dataclass
class CamindOnRig:
    """A camind network bound to one camera's constants: k_cam and γ in px at ``ref_width_px``
    (scaled to each image's width, as ``rig predict`` does)."""

    model: "CamIndDFD"
    k_cam_px: float
    gamma_px: float = 0.0
    ref_width_px: int = 645

    def depth_m(self, rgb: np.ndarray) -> np.ndarray:
        """Depth (H, W) m of one uint8 (H, W, 3) image, the constants scaled to its width."""
        from inference.camind import predict_camind

        s = rgb.shape[1] / float(self.ref_width_px)
        return predict_camind(self.model, rgb, self.k_cam_px * s, self.gamma_px * s)


# ------------------------------------------------------------------------- k_cam from real pairs
K_CAM_FACTORS = (0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0)  # √2 steps around the starting k_cam


@dataclasses.dataclass(frozen=True)
class KcamFit:
    """The k_cam (px at ``ref_width_px``) under which a camind network's depth best matches measured
    depth on real defocused images: ``factor`` × the starting k_cam; ``loss_by_factor``: each tried
    factor -> mean |log depth error|; ``at_edge``: the best factor is the grid's first or last."""

    k_cam_px: float
    factor: float
    loss_by_factor: dict[float, float]
    at_edge: bool
    images: int


def log_depth_error(pred_m: np.ndarray, depth_m: np.ndarray, valid: np.ndarray) -> float:
    """Mean |log pred − log depth| over ``valid`` pixels with depth > 0; (H, W) arrays in metres."""
    m = valid & (depth_m > 0) & np.isfinite(pred_m) & (pred_m > 0)
    if not m.any():
        return float("nan")
    return float(np.mean(np.abs(np.log(pred_m[m]) - np.log(depth_m[m]))))


def fit_k_cam(model: "CamIndDFD", rgbs: list[np.ndarray], depths_m: list[np.ndarray], valids: list[np.ndarray],
              k_cam0_px: float, gamma_px: float = 0.0, ref_width_px: int = 645,
              factors: tuple[float, ...] = K_CAM_FACTORS, refine: bool = True) -> KcamFit:
    """Fit one camera's k_cam for a trained camind network from its real (defocused uint8 (H, W, 3),
    depth (H, W) m, valid (H, W) bool) pairs: the factor of ``k_cam0_px`` (e.g. the thin-lens value)
    on the grid ``factors``, then, with ``refine``, ±¼ octave around the best, that minimises the mean
    per-image |log depth error| (the network's training loss). The network itself is not changed."""
    if not rgbs:
        raise ValueError("fit_k_cam needs at least one image")

    def loss(f: float) -> float:
        rig = CamindOnRig(model, k_cam0_px * f, gamma_px, ref_width_px)
        return float(np.nanmean([log_depth_error(rig.depth_m(r), d, v) for r, d, v in zip(rgbs, depths_m, valids)]))

    losses = {float(f): loss(f) for f in factors}
    best = min(losses, key=losses.__getitem__)
    at_edge = best in (min(factors), max(factors))
    if refine:
        for f in (best * 2**-0.25, best * 2**0.25):
            losses[float(f)] = loss(f)
        best = min(losses, key=losses.__getitem__)
    return KcamFit(k_cam_px=float(k_cam0_px * best), factor=float(best), loss_by_factor=dict(sorted(losses.items())),
                   at_edge=bool(at_edge), images=len(rgbs))
