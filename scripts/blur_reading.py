"""Does a depth model read defocus blur? Two checks that need no held-out real images.

1. Procedural scenes (``rig.core.procedural``: texture independent of depth, so blur is the only
   depth cue) rendered through the rig's defocused lens without jitter. For each model: mean rel,
   the median of predicted/true depth per true-depth bin, the Spearman correlation of predicted and
   true thin-lens blur |1 - focus/depth| (proportional to the blur radius), and how often the
   predicted depth lies on the right side of the focus distance where the true blur is at least
   15 % of its largest value. Blur is the same on both sides of the focus distance, so a model
   that reads blur perfectly still has to guess the side here: the side score shows what it
   guesses, the blur-space Spearman what it reads.
2. With ``--held-out DATA``: a fold model's held-out real images (the ``val_ids`` of its file),
   the same per-bin table on real f/2.8 images.

Usage: python scripts/blur_reading.py MODEL.pt [MODEL.pt ...] [--scenes 12] [--held-out data/dfd]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from inference.cv import spearman
from inference.model import load_model
from inference.predict import predict_image
from inference.pretrain import RenderJitter, procedural_renders
from inference.recipe import load_images
from rig.core.config import load_rig_config
from rig.core.errors import RigError

BINS_M = (0.0, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 20.0)


def bin_ratios(preds_m: list[np.ndarray], depths_m: list[np.ndarray]) -> str:
    """'lo-hi:ratio' per true-depth bin: the median of predicted/true depth over the bin's pixels."""
    logs = np.concatenate([np.log(p / d).ravel() for p, d in zip(preds_m, depths_m)])
    truth = np.concatenate([d.ravel() for d in depths_m])
    idx = np.digitize(truth, BINS_M) - 1
    return " ".join(f"{BINS_M[i]:g}-{BINS_M[i + 1]:g} m: {np.exp(np.median(logs[idx == i])):.2f}"
                    for i in range(len(BINS_M) - 1) if np.any(idx == i))


def side_right_and_far(preds_m: list[np.ndarray], depths_m: list[np.ndarray], focus_m: float
                       ) -> tuple[float, float]:
    """(share of pixels whose prediction is on the true side of ``focus_m``, share truly beyond it),
    pooled over the given pixel arrays (any shape, same shapes pairwise)."""
    truth_far = np.concatenate([(d > focus_m).ravel() for d in depths_m])
    pred_far = np.concatenate([(p > focus_m).ravel() for p in preds_m])
    return float(np.mean(truth_far == pred_far)), float(np.mean(truth_far))


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--scenes", type=_positive_int, default=12)
    ap.add_argument("--config", default="nikon_d200_xtion")
    ap.add_argument("--held-out", default=None, help="dataset folder: also score each model's held-out fold")
    args = ap.parse_args()
    try:
        report(args)
    except RigError as e:
        print(f"blur_reading: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def report(args: argparse.Namespace) -> None:
    """Print both checks for every model of ``args.models`` (RigError, one line, on bad input)."""
    if args.held_out and not Path(args.held_out).is_dir():
        raise RigError(f"--held-out {args.held_out}: not a folder (a dataset from `rig import-dfd`)")
    torch.set_num_threads(1)
    cfg = load_rig_config(args.config)
    lens = cfg.lens("defocused")
    focus_m = float(lens.focus_m)
    still = RenderJitter(scale_range=(1.0, 1.0), focus_log_jitter=0.0, rho_log_jitter=0.0)
    w, h = cfg.output.size_px
    scenes = procedural_renders(args.scenes, (w, h), lens, psf=cfg.blur.psf, rho=cfg.blur.rho,
                                max_step_px=cfg.blur.max_layer_step_px, seed=99, jitter=still)
    for path in args.models:
        lm = load_model(path)
        preds = [predict_image(lm.model, rgb).depth_m for rgb in scenes.rgb]
        rel = np.mean([np.mean(np.abs(p - d) / d) for p, d in zip(preds, scenes.depth_m)])
        rho_b, side, far = [], [], []
        for p, d in zip(preds, scenes.depth_m):
            bt, bp = np.abs(1 - focus_m / d).ravel(), np.abs(1 - focus_m / p).ravel()
            rho_b.append(spearman(bp[::50], bt[::50]))
            m = bt >= 0.15 * bt.max()
            s, f = side_right_and_far([p.ravel()[m]], [d.ravel()[m]], focus_m)
            side.append(s)
            far.append(f)
        print(f"{path}\n  procedural ({args.scenes} scenes): rel {rel:.3f}; blur-space Spearman "
              f"{np.mean(rho_b):.2f}; side of focus right {100 * np.mean(side):.1f} % (always 'far': "
              f"{100 * np.mean(far):.1f} %)\n  pred/true: "
              f"{bin_ratios(preds, scenes.depth_m)}")
        if args.held_out and lm.meta.get("val_ids"):
            ims = load_images(Path(args.held_out), "train", lm.meta["val_ids"], str(lm.meta.get("input", "N2_8")))
            preds = [predict_image(lm.model, rgb).depth_m for rgb in ims.rgb]
            ps = [p[v] for p, v in zip(preds, ims.valid)]
            ds = [d[v] for d, v in zip(ims.depth_m, ims.valid)]
            side_h, far_h = side_right_and_far(ps, ds, focus_m)
            print(f"  held-out real ({len(ps)} images): side of focus right {100 * side_h:.1f} % (always 'far': "
                  f"{100 * far_h:.1f} %)\n  pred/true: "
                  f"{bin_ratios(ps, ds)}")


if __name__ == "__main__":
    sys.exit(main())
