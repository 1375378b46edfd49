"""``rig eval``: metrics of a model on a dataset split, per-depth-bin RMS, qualitative grid.

Writes (with ``--out DIR``): ``metrics.json`` (mean and pooled metrics, per-image metrics, depth
bins, settings), ``depth_bins.png`` (RMS per ground-truth depth bin over the train/test depth
histograms, paper 1 Fig. 8) and ``grid.png`` (RGB, ground truth, prediction, |error|, MC-dropout
uncertainty for the first ``--grid`` images). ``rig report DIR`` turns the folder into a web page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.cv import ause, sparsification_curve, spearman
from inference.metrics import (BinAccumulator, depth_histogram, depth_metrics, eigen_crop, eval_mask, mean_metrics,
                               pooled_metrics)
from rig.core.errors import RigError

GRID_MC_SAMPLES = 20


@dataclass
class EvalSet:
    """Where the evaluated samples live: ``split`` folder and the ids (a carved val set lives in 'train')."""

    root: Path
    split_dir: str
    ids: list[str]
    label: str
    train_exclude: set[str] = field(default_factory=set)


def resolve_eval_set(root: Path, split: str, meta: dict[str, Any]) -> EvalSet:
    """The split's samples; for 'val' without a val folder, the validation ids recorded in the model."""
    from rig.core import dataset as rds

    rds.read_manifest(root)
    ids = rds.list_samples(root, split)
    if ids:
        return EvalSet(root, split, ids, split)
    if split == "val" and meta.get("val_ids"):
        src = meta.get("train_split", "train")
        have = set(rds.list_samples(root, src))
        ids = [i for i in meta["val_ids"] if i in have]
        if ids:
            return EvalSet(root, src, ids, f"val (carved from {src} by scene, {len(ids)} images)", set(ids))
    if split == "val":
        carved = carve_val_like_training(root, meta)
        if carved is not None:
            return carved
    raise RigError(f"{root}: split {split!r} has no samples"
                   + (" and the model records no validation ids" if split == "val" else ""))


def carve_val_like_training(root: Path, meta: dict[str, Any]) -> EvalSet | None:
    """A dataset without a val split that the model was not trained on (e.g. from `rig build-dataset`):
    carve 'val' from its 'train' split by scene, as `rig train` would (the model's data/train settings,
    else the training defaults); None when 'train' is empty."""
    from inference import data as D
    from rig.core import dataset as rds

    manifest = rds.read_manifest(root)
    have = rds.list_samples(root, "train")
    if not have:
        return None
    cfg = meta.get("config") or {}
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    try:
        _, ids = D.carve_val(have, float(data.get("val_fraction", 0.15)), int(train.get("seed", 0)),
                             float(data.get("scene_gap_s", 120.0)), data.get("max_scene_captures", 6),
                             D.scene_ids_from_manifest(manifest, "train"))
    except RigError as e:
        raise RigError(f"{root}: split 'val' has no samples, and carving one from 'train' failed: {e}") from None
    return EvalSet(root, "train", ids, f"val (carved from train by scene as `rig train` does, {len(ids)} images)",
                   set(ids))


def gt_range_m(depths_m: Any, valids: Any) -> list[float] | None:
    """[min, max] metres of the valid ground-truth pixels (> 0) over all images; None when none."""
    lo, hi = np.inf, -np.inf
    for d, v in zip(depths_m, valids):
        ok = np.asarray(v, bool) & (np.asarray(d) > 0)
        if ok.any():
            lo, hi = min(lo, float(d[ok].min())), max(hi, float(d[ok].max()))
    return None if not np.isfinite(lo) else [round(lo, 4), round(hi, 4)]


def already_cropped(root: Path) -> bool:
    """True when the dataset's images are already NYUv2's cropped valid region (``rig import-nyu``
    writes ``nyu_cropped: true``; images of exactly 561x427 are taken as cropped too)."""
    from rig.core import dataset as rds

    man = rds.read_manifest(root)
    if isinstance(man, dict) and man.get("nyu_cropped"):
        return True
    for split in ("test", "train", "val"):
        ids = rds.list_samples(root, split)
        if ids:
            from rig.core.imageio import read_depth_m

            return read_depth_m(rds.sample_path(root, split, "depth", ids[0])).shape == (427, 561)
    return False


def _bin_edges(max_depth_m: float, width_m: float) -> np.ndarray:
    top = max(width_m, np.ceil(max_depth_m / width_m) * width_m)
    return np.arange(0.0, top + width_m / 2, width_m)


def plot_depth_bins(bins: Any, out: Path, title: str) -> Path:
    """RMS per depth bin (bars) over normalised train/test depth histograms (paper 1 Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(bins.edges_m)
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.2), dpi=110, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    rms = np.asarray(bins.rms_m, dtype=float)
    ax1.bar(centres, np.nan_to_num(rms), width=width * 0.85, color="tab:red", alpha=0.8)
    ax1.set_ylabel("RMS error (m)")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    test = np.asarray(bins.count_test, dtype=float)
    ax2.step(edges[:-1], test / max(test.sum(), 1), where="post", label="evaluated", color="tab:blue")
    if bins.count_train is not None:
        train = np.asarray(bins.count_train, dtype=float)
        ax2.step(edges[:-1], train / max(train.sum(), 1), where="post", label="train", color="tab:green")
    ax2.set_xlabel("ground-truth depth (m)")
    ax2.set_ylabel("fraction of pixels")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_grid(rows: list[dict[str, Any]], out: Path) -> Path:
    """Qualitative grid: RGB | ground truth | prediction | |error| | uncertainty (std), one row per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("RGB", "ground truth (m)", "prediction (m)", "|error| (m)", "uncertainty σ (m)")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.0 * len(cols), 2.2 * len(rows)), dpi=100,
                             squeeze=False)
    for r, row in enumerate(rows):
        gt = row["gt"]
        ok = gt > 0
        lo, hi = (float(gt[ok].min()), float(gt[ok].max())) if ok.any() else (0.0, 1.0)
        err = np.where(ok, np.abs(row["pred"] - gt), np.nan)
        panels = [(row["rgb"], {}), (np.where(ok, gt, np.nan), {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                  (row["pred"], {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
                  (err, {"vmin": 0, "vmax": max(float(np.nanpercentile(err, 99)) if ok.any() else 1.0, 1e-3),
                         "cmap": "inferno"}),
                  (row["std"], {"vmin": 0, "cmap": "magma"})]
        for c, (img, kw) in enumerate(panels):
            ax = axes[r][c]
            im = ax.imshow(img, **kw)
            if c > 0:
                fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        axes[r][0].set_ylabel(row["id"][-15:], fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def evaluate(model_ref: str, data: Path, split: str = "test", input_kind: str | None = None,
             min_depth_m: float | None = None, max_depth_m: float | None = None, crop: bool = False,
             mc_samples: int = 0, bin_width_m: float = 0.5, grid: int = 4, limit: int | None = None,
             device: str = "cpu", out_dir: Path | None = None, progress: bool = True,
             input_dir: Path | None = None, flip_tta: bool | None = None) -> dict[str, Any]:
    """Evaluate; returns the metrics record (also written to ``out_dir/metrics.json`` with the figures)."""
    from inference.data import load_image_set
    from inference.mc_dropout import mc_predict
    from inference.model import load_model
    from inference.predict import predict_image, to_tensor
    from rig.core import dataset as rds
    from rig.core.imageio import read_depth_m

    loaded = load_model(model_ref, device=device, flip_tta=flip_tta)
    es = resolve_eval_set(Path(data), split, loaded.meta)
    crop_note = None
    if crop and already_cropped(es.root):
        crop, crop_note = False, "the dataset is already cropped to NYUv2's valid region (manifest nyu_cropped)"
    kind = input_kind or loaded.meta.get("input") or "N2_8"
    ids = es.ids[:limit] if limit else es.ids
    images = load_image_set(es.root, es.split_dir, kind, ids, input_dir)
    per_image, preds, rows = [], [], []
    unc_err, unc_sig, unc_rho, unc_ratio = [], [], [], []
    gmax = max(float(d.max()) for d in images.depth_m)
    edges = _bin_edges(max_depth_m or gmax, bin_width_m)
    acc = BinAccumulator(edges)
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as prog:
        task = prog.add_task(f"evaluating {len(images)} images", total=len(images))
        for i, sid in enumerate(images.ids):
            rgb, gt, valid = images.rgb[i], images.depth_m[i], images.valid[i]
            pred = predict_image(loaded.model, rgb, mc_samples=mc_samples, device=device)
            cmask = eigen_crop(gt.shape) if crop else None
            m = depth_metrics(pred.depth_m, gt, valid, min_depth_m, max_depth_m, cmask)
            per_image.append({"id": sid, **m})
            preds.append(pred.depth_m)
            if pred.std_m is not None:
                um = eval_mask(gt, valid, min_depth_m, max_depth_m, cmask)
                err, sig = np.abs(pred.depth_m[um] - gt[um]), pred.std_m[um]
                unc_err.append(err)
                unc_sig.append(sig)
                unc_rho.append(spearman(sig, err))
                unc_ratio.append(ause(err, sig)["ause_ratio"])
                per_image[-1].update({"spearman_std_err": unc_rho[-1], "ause_ratio": unc_ratio[-1]})
            acc.add(pred.depth_m, gt, eval_mask(gt, valid, min_depth_m, max_depth_m, cmask))
            if i < grid:
                std = pred.std_m
                if std is None:
                    import torch

                    with torch.inference_mode():
                        _, var = mc_predict(loaded.model, to_tensor(rgb, device), samples=GRID_MC_SAMPLES)
                    std = var[0, 0].sqrt().cpu().numpy()
                rows.append({"id": sid, "rgb": rgb, "gt": np.where(valid, gt, 0.0), "pred": pred.depth_m, "std": std})
            prog.update(task, advance=1)
    # training-set depth histogram (paper 1 Fig. 8): the dataset's train split minus evaluated ids
    train_ids = [t for t in rds.list_samples(es.root, "train") if t not in set(ids)]
    count_train = depth_histogram((read_depth_m(rds.sample_path(es.root, "train", "depth", t))
                                   for t in train_ids), edges) if train_ids else None
    bins = acc.result(count_train)
    mean = mean_metrics(per_image)
    result: dict[str, Any] = {
        "model": str(loaded.path), "arch": loaded.arch, "model_input": loaded.meta.get("input"),
        "data": str(es.root), "split": es.label, "input": kind,
        "input_dir": None if input_dir is None else str(input_dir), "n_images": mean.pop("n_images"),
        "metrics": mean,
        "pooled": pooled_metrics(preds, images.depth_m, images.valid, min_depth_m, max_depth_m, crop),
        "per_image": per_image, "bins": bins.to_dict(),
        "settings": {"min_depth_m": min_depth_m, "max_depth_m": max_depth_m, "crop": crop, "crop_note": crop_note,
                     "mc_samples": mc_samples, "bin_width_m": bin_width_m, "aggregate": "mean over images",
                     "flip_tta": bool(getattr(loaded.model, "flip_tta", False)) and not mc_samples,
                     "gt_range_m": gt_range_m(images.depth_m, images.valid)},
        "training": {k: loaded.meta.get(k) for k in ("epoch", "n_train", "n_val", "val_carved", "dataset")
                     if k in loaded.meta},
    }
    if unc_err:
        result["uncertainty"] = uncertainty_summary(unc_err, unc_sig, unc_rho, unc_ratio)
        result["settings"]["uncertainty"] = f"MC-dropout, {mc_samples} samples" if mc_samples > 1 else "aleatoric head"
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_depth_bins(bins, out_dir / "depth_bins.png", f"{loaded.arch} on {kind}: RMS per depth bin")
        result["figures"] = {"depth_bins": "depth_bins.png"}
        if "uncertainty" in result:
            plot_sparsification(result["uncertainty"], out_dir / "sparsification.png")
            result["figures"]["sparsification"] = "sparsification.png"
        if rows:
            plot_grid(rows, out_dir / "grid.png")
            result["figures"]["grid"] = "grid.png"
        write_json(out_dir / "metrics.json", result)
    return result


def uncertainty_summary(errors: list[np.ndarray], sigmas: list[np.ndarray], rhos: list[float],
                        ratios: list[float], steps: int = 20) -> dict[str, Any]:
    """How well σ ranks |error|: per-image means of Spearman(σ, |err|) and AUSE ratio (1 = random
    order, 0 = oracle), the pooled AUSE and the pooled sparsification curves (error of the pixels kept
    after removing the fraction ``removed`` with the largest σ / largest true error)."""
    e, sg = np.concatenate(errors), np.concatenate(sigmas)
    pooled = ause(e, sg, steps)
    return {"spearman_std_err": float(np.nanmean(rhos)), "ause_ratio": float(np.nanmean(ratios)),
            "pooled_ause": pooled["ause"], "pooled_ause_ratio": pooled["ause_ratio"],
            "spearman_std_err_pooled": spearman(sg, e),
            "sparsification": {"removed": [i / steps for i in range(steps)],
                               "by_std_m": sparsification_curve(e, sg, steps).tolist(),
                               "oracle_m": sparsification_curve(e, e, steps).tolist(),
                               "random_m": [float(e.mean())] * steps}}


def plot_sparsification(unc: dict[str, Any], out: Path) -> Path:
    """Sparsification curves (mean |error| of the kept pixels vs the fraction removed) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = unc["sparsification"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    ax.plot(sp["removed"], sp["by_std_m"], label="removed by predicted σ")
    ax.plot(sp["removed"], sp["oracle_m"], "--", label="oracle (by true error)")
    ax.plot(sp["removed"], sp["random_m"], ":", label="random order")
    ax.set_xlabel("fraction of pixels removed")
    ax.set_ylabel("mean |error| of the rest (m)")
    ax.set_title(f"sparsification: AUSE ratio {unc['pooled_ause_ratio']:.2f}, "
                 f"Spearman {unc['spearman_std_err']:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_json(path: Path, obj: Any) -> None:
    from rig.core.imageio import atomic_write_bytes

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not np.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer)):
            return clean(x.item())
        return x

    atomic_write_bytes(Path(path), json.dumps(clean(obj), indent=1).encode())
