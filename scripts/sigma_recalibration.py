"""Does a σ recalibrated on out-of-fold predictions rank errors better? For the 3 fold models of one recipe
(STUDY/f0..f2/model.pt from `rig depth-study run`), fit log|err| ~ features on two folds' held-out pixels
and score the third (Spearman and AUSE ratio, mean ± sd over folds).

Usage: python scripts/sigma_recalibration.py STUDY/RECIPE DATA   (e.g. study15/dfd_log_pre data/dfd)
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from inference.cv import ause, spearman
from inference.model import load_model
from inference.recipe import load_images, predict_depth_std

torch.set_num_threads(1)

root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("data/dfd")
study = Path(sys.argv[1])
rng = np.random.default_rng(0)
data = {}
for k in range(3):
    lm = load_model(study / f"f{k}" / "model.pt")
    ids = lm.meta["val_ids"]
    imgs = load_images(root, "train", ids, "N2_8")
    rows = []
    for rgb, d, v in zip(imgs.rgb, imgs.depth_m, imgs.valid):
        depth, std = predict_depth_std(lm.model, rgb, True)
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
        gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
        grad = np.sqrt(gx * gx + gy * gy)
        tex, tex_wide = cv2.GaussianBlur(grad, (0, 0), 4), cv2.GaussianBlur(grad, (0, 0), 16)
        m = v & (d > 0)
        e = np.abs(depth - d)[m]
        f = np.stack([np.log(std[m]), np.log(depth[m]), np.log(tex[m] + 1e-3), np.log(tex_wide[m] + 1e-3)], 1)
        rows.append((e, f, std[m]))
    data[k] = rows
    print("fold", k, "done", flush=True)

names = ["log σ", "log depth", "log tex4", "log tex16"]
for cols in ([0], [0, 1], [0, 2], [0, 1, 2], [0, 1, 2, 3], [1], [2]):
    sp, au = [], []
    for k in range(3):
        tr = [r for j in range(3) if j != k for r in data[j]]
        X = np.concatenate([r[1][:, cols] for r in tr]); y = np.log(np.concatenate([r[0] for r in tr]) + 1e-3)
        sel = rng.choice(len(y), min(len(y), 400000), replace=False)
        A = np.c_[X[sel], np.ones(len(sel))]
        coef, *_ = np.linalg.lstsq(A, y[sel], rcond=None)
        s_k, a_k = [], []
        for e, f, s in data[k]:
            sig = np.exp(np.c_[f[:, cols], np.ones(len(f))] @ coef)
            s_k.append(spearman(sig, e)); a_k.append(ause(e, sig)["ause_ratio"])
        sp.append(np.nanmean(s_k)); au.append(np.nanmean(a_k))
    print(f"{'+'.join(names[c] for c in cols):40s} Spearman {np.mean(sp):.3f} ± {np.std(sp, ddof=1):.3f}  "
          f"AUSE {np.mean(au):.3f} ± {np.std(au, ddof=1):.3f}  coef(last fold) {np.round(coef, 2).tolist()}", flush=True)
