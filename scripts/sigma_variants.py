"""Which σ ranks the errors best on held-out folds: the aleatoric head (the shipped default), the
sampling-free MC-dropout σ (inference.moments), or both combined, sqrt(σ_a² + σ_e²)? For the fold
models of one dfdnet recipe (STUDY/f0..f2/model.pt from `rig depth-study run`): per held-out image
the Spearman of σ with |error| and the AUSE ratio, then mean ± sd over folds. The depth is the
shipped path's (flip TTA) for every variant; no weights are fitted.

Usage: python scripts/sigma_variants.py STUDY/RECIPE DATA   (e.g. s15/dfd_log_pre data/dfd)
"""
import sys
from pathlib import Path

import numpy as np
import torch

from inference.cv import ause, spearman
from inference.model import load_model
from inference.moments import moments_predict
from inference.predict import to_tensor
from inference.recipe import load_images, predict_depth_std

torch.set_num_threads(1)
study, root = Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "data/dfd")
folds = sorted(p for p in study.glob("f[0-9]*") if (p / "model.pt").exists())
variants = ("aleatoric", "moments", "combined")
per_fold: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
for fold in folds:
    lm = load_model(fold / "model.pt")
    imgs = load_images(root, "train", lm.meta["val_ids"], str(lm.meta.get("input", "N2_8")))
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for rgb, d, v in zip(imgs.rgb, imgs.depth_m, imgs.valid):
        depth, s_a = predict_depth_std(lm.model, rgb, True)
        x = to_tensor(rgb)
        s_e = moments_predict(lm.model, x)[1].clamp_min(0).sqrt()[0, 0].numpy()
        m = v & (d > 0)
        e = np.abs(depth - d)[m]
        for name, s in (("aleatoric", s_a), ("moments", s_e), ("combined", np.sqrt(s_a**2 + s_e**2))):
            scores[name].append((spearman(s[m], e), ause(e, s[m])["ause_ratio"]))
    for name in variants:
        rho, ratio = np.nanmean(np.array(scores[name]), 0)
        per_fold[name].append((rho, ratio))
        print(f"{fold.name} {name:10s} Spearman {rho:.3f}  AUSE ratio {ratio:.3f}", flush=True)
for name in variants:
    a = np.array(per_fold[name])
    sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(2)
    print(f"{name:10s} Spearman {a[:, 0].mean():.3f} ± {sd[0]:.3f}  AUSE ratio {a[:, 1].mean():.3f} ± {sd[1]:.3f}")
