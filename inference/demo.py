"""``rig demo`` step of the inference stage: depth + MC-dropout uncertainty + an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rig.demo import DemoContext

DEMO_MODEL = "dfd-n2.8"


def _demo_model(out_dir: Path) -> tuple[str, str]:
    """(model reference, description): the shipped f/2.8 model, else a freshly initialised light model."""
    from inference.model import MODELS_DIR, SHIPPED_SUFFIX, build_model, export_fp16

    shipped = MODELS_DIR / f"{DEMO_MODEL}{SHIPPED_SUFFIX}"
    if shipped.is_file():
        return str(shipped), (f"shipped model {DEMO_MODEL} (trained on the real DFD indoor images: expect "
                              "large errors on the simulated rig's scenes)")
    path = out_dir / "model" / "d3net-lite-untrained.pt"
    export_fp16(build_model("d3net-lite"), path, {"arch": "d3net-lite", "input": "N2_8", "untrained": True})
    return str(path), "untrained d3net-lite (no shipped model found)"


def _session_images(session: Path) -> list[Path]:
    raw = Path(session) / "raw"
    return sorted(raw.glob("*/defocused.jpg")) if raw.is_dir() else []


def _dataset_split(root: Path) -> str | None:
    from rig import dataset as rds

    for split in ("test", "val", "train"):
        if rds.list_samples(root, split):
            return split
    return None


def predict_step(ctx: "DemoContext") -> list[str]:
    """Predict depth on the demo's registered dataset (or the session's defocused images) with
    MC-dropout, evaluate against the dataset's ground truth and write ``ctx.out_dir/report``."""
    import torch

    from inference.evaluate import evaluate
    from inference.predict import predict_files
    from inference.report import build_report
    from rig import dataset as rds

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(ctx.out_dir)
    report_dir = out / "report"
    model_ref, model_desc = _demo_model(out)
    mc = 8 if ctx.quick else 50
    limit = 2 if ctx.quick else 8
    lines = [f"model: {model_desc}"]
    dataset = ctx.artifacts.get("dataset")
    split = _dataset_split(Path(dataset)) if dataset else None
    eval_dir = out / "eval"
    inputs: list[Path] = []
    if dataset and split:
        res = evaluate(model_ref, Path(dataset), split, "N2_8", mc_samples=0, grid=min(limit, 3), limit=limit,
                       out_dir=eval_dir, progress=False)
        m = res["metrics"]
        lines.append(f"{res['n_images']} {split} images of {dataset}: rel {m['rel']:.3f}, rms {m['rms']:.3f} m, "
                     f"δ1 {m['delta1'] * 100:.1f}%")
        inputs = [rds.sample_path(Path(dataset), split, "N2_8", sid) for sid in rds.list_samples(Path(dataset), split)]
    elif ctx.artifacts.get("session"):
        inputs = _session_images(Path(ctx.artifacts["session"]))
    if not inputs:
        return lines + ["no dataset or session images from earlier steps: nothing to predict"]
    inputs = [p for p in inputs if p.is_file()][:limit]
    pred_dir = out / "predict"
    records = predict_files(model_ref, inputs, pred_dir, mc_samples=mc, colorize_out=True)
    images: list[tuple[Any, str]] = []
    for r in records:
        stem = r["stem"]
        images.append((Path(r["input"]), f"{stem}: input (f/2.8)"))
        images.append((pred_dir / f"{stem}_color.png", f"{stem}: depth (median {r['median_depth_m']:.2f} m)"))
        images.append((pred_dir / f"{stem}_std_color.png",
                       f"{stem}: MC-dropout σ, {mc} samples (mean {r['mean_std_m'] * 100:.1f} cm)"))
    section = {"title": "Predictions with MC-dropout uncertainty",
               "text": f"{model_desc}; {mc} dropout samples per image; 16-bit depth/σ PNGs (mm) in {pred_dir}.",
               "images": images}
    page = build_report(eval_dir, report_dir, title="rig demo: depth from defocus", extra_sections=[section])
    ctx.artifacts["report"] = page
    ctx.artifacts["predictions"] = pred_dir
    lines += [f"{len(records)} depth maps (+ σ) with {mc} MC-dropout samples -> {pred_dir}", f"report: {page}"]
    return lines
