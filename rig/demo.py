"""``rig demo``: the whole pipeline on the simulated rig, no hardware, on one screen.

The steps run in order, each calling the stages' public functions: optics -> synthetic defocus ->
capture (acquisition) -> register + dataset (registration) -> predict + report (inference) -> the
live loop and its replay (rig.live, rig.replay). Each step takes a :class:`DemoContext`, puts what it
produces into ``ctx.artifacts`` for the later steps and returns lines to print; only
:func:`run_demo` prints.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rig.core.config import RigConfig, load_rig_config

DEMO_MODEL = "dfd-n2.8"


@dataclass
class DemoContext:
    out_dir: Path
    config: RigConfig
    scenes: int
    quick: bool
    artifacts: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- foundation
def optics_step(ctx: DemoContext) -> list[str]:
    """Blur-vs-depth plot for the simulated rig's focus presets."""
    from rig.core import optics
    from rig.plots import plot_blur_vs_depth

    out = plot_blur_vs_depth(ctx.config, ctx.out_dir / "optics" / "blur_vs_depth.png")
    lens = ctx.config.lens()
    near, far = optics.dead_zone_m(lens)
    ctx.artifacts["blur_plot"] = out
    return [f"k_cam = {optics.k_cam_px(lens):.2f} px at focus {lens.focus_m:g} m; dead zone {near:.2f}-{far:.2f} m",
            f"plot: {out}"]


def synth_step(ctx: DemoContext) -> list[str]:
    """Synthetic defocus of a procedural scene at the simulated lens, focused at 2 m and 8 m.

    Writes ``<out>/synth/``: aif.png (all-in-focus), depth.png (colourised, near = blue),
    depth_mm.png (16-bit), defocus_focus2m.png, defocus_focus8m.png.
    """
    from rig.core import defocus, optics
    from rig.core.imageio import write_depth_mm, write_image
    from rig.synth import colourise_depth, procedural_scene

    cfg = ctx.config
    width, height = (322, 216) if ctx.quick else cfg.output.size_px
    near_m, far_m = cfg.simulated.depth_range_m
    rgb, depth = procedural_scene(width, height, seed=cfg.simulated.seed, near_m=near_m, far_m=far_m)
    out = ctx.out_dir / "synth"
    write_image(out / "aif.png", rgb)
    write_image(out / "depth.png", colourise_depth(depth, near_m, far_m))
    write_depth_mm(out / "depth_mm.png", depth)
    lines = [f"procedural scene {width}x{height}, depth {float(depth.min()):.2f}-{float(depth.max()):.2f} m, "
             f"{cfg.blur.psf} PSF ρ={cfg.blur.rho:g}, layers every {cfg.blur.max_layer_step_px:g} px of blur"]
    for focus_m in (2.0, 8.0):
        lens = cfg.lens("defocused", focus_m=focus_m)
        t0 = time.perf_counter()
        img = defocus.render_defocus(rgb, depth, lens, psf=cfg.blur.psf, rho=cfg.blur.rho,
                                     max_step_px=cfg.blur.max_layer_step_px)
        dt = time.perf_counter() - t0
        path = write_image(out / f"defocus_focus{focus_m:g}m.png", img)
        eps = optics.blur_diameter_px(depth, lens)
        n_layers = int((defocus.depth_layers(depth, lens, cfg.blur.max_layer_step_px).counts > 0).sum())
        lines.append(f"focus {focus_m:g} m: blur 0-{float(eps.max()):.1f} px (k_cam {optics.k_cam_px(lens):.2f} px), "
                     f"{n_layers} layers, {dt * 1000:.0f} ms -> {path.name}")
    ctx.artifacts["synth_dir"] = out
    lines.append(f"images: {out}")
    return lines


# ---------------------------------------------------------------------------------- acquisition
def capture_step(ctx: DemoContext) -> list[str]:
    """Capture ``ctx.scenes`` simulated scenes (no device latency with ``ctx.quick``) into
    ``ctx.out_dir/session``; sets ``ctx.artifacts['session']``. A previous demo session there is
    replaced; any other existing folder is left alone (Session.create refuses it)."""
    from acquisition.capture import PairCapture, run_scenes
    from acquisition.devices import open_rig
    from rig.core.config import config_with_overrides
    from rig.core.session import SESSION_FILE, Session

    cfg = ctx.config
    overrides: dict[str, object] = {"dslr.driver": "simulated", "depth_sensor.driver": "simulated"}
    if ctx.quick:
        overrides["simulated.latency_scale"] = 0.0
    cfg = config_with_overrides(cfg, overrides)
    path = ctx.out_dir / "session"
    if (path / SESSION_FILE).is_file():
        shutil.rmtree(path)
    session = Session.create(path, cfg, planned_scenes=ctx.scenes)
    devices = open_rig(cfg)
    capture = PairCapture(session, devices.dslr, devices.sensor, scene_hook=devices.scene_hook(),
                          backoff_s=0.5 * cfg.simulated.latency_scale)
    try:
        capture.prepare()
        run = run_scenes(capture, list(range(ctx.scenes)))
    finally:
        capture.close()
    if run.stop_error is not None:
        raise run.stop_error
    if run.interrupted:
        raise KeyboardInterrupt
    ctx.artifacts["session"] = path
    s = session.summary()
    mean_s = sum(r.elapsed_s for r in run.results) / max(1, len(run.results))
    return [f"{s['captures_ok']}/{ctx.scenes} scenes captured ({s['captures_failed']} failed), "
            f"{mean_s:.2f} s per capture, {s['raw_bytes'] / 1e6:.1f} MB",
            f"session: {path}  (inspect: rig sessions show {path})"]


# --------------------------------------------------------------------------------- registration
def register_step(ctx: DemoContext) -> list[str]:
    """Register ``ctx.artifacts['session']`` and build ``ctx.out_dir/'dataset'`` (split by scene);
    sets ``ctx.artifacts['dataset']``. A previous demo dataset there is replaced."""
    import numpy as np

    from registration.build import build_dataset
    from registration.register import RegisterOptions, open_session, register_session
    from rig.core.dataset import MANIFEST

    session_path = ctx.artifacts.get("session")
    if session_path is None:
        return ["no session from the capture step: nothing to register"]
    session = open_session(session_path)
    opts = RegisterOptions(size=tuple(session.config.output.size_px), align="flag",
                           max_fill_px=session.config.output.max_fill_px)  # type: ignore[arg-type]
    results = register_session(session_path, opts, progress=False)
    failed = [r for r in results if r.status == "failed"]
    lines = [f"{sum(r.status == 'registered' for r in results)} registered, "
             f"{sum(r.status == 'skipped' for r in results)} already done, {len(failed)} failed"]
    lines += [f"  {r.capture_id}: {r.error}" for r in failed]
    metas = [r.meta for r in results if r.meta]
    if metas:
        meas = np.mean([m["depth"]["measured_fraction"] for m in metas])
        fill = np.mean([m["depth"]["filled_fraction"] for m in metas])
        shift = max(m["alignment"].get("magnitude_px", 0.0) for m in metas)
        lines.append(f"depth in the DSLR frame: {meas:.1%} measured, {fill:.1%} filled; "
                     f"largest f/2.8↔f/8 shift {shift:.2f} px")
    out = ctx.out_dir / "dataset"
    if (out / MANIFEST).is_file():
        shutil.rmtree(out)
    manifest = build_dataset([session_path], out, test_fraction=0.25, seed=0, progress=False)
    ctx.artifacts["dataset"] = out
    sp = manifest["splits"]
    lines.append(f"dataset: {out} (train {sp['train']['count']}, test {sp['test']['count']}, split by scene)")
    return lines


# ------------------------------------------------------------------------------------ inference
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
    from rig.core import dataset as rds

    for split in ("test", "val", "train"):
        if rds.list_samples(root, split):
            return split
    return None


def predict_step(ctx: DemoContext) -> list[str]:
    """Predict depth on the demo's registered dataset (or the session's defocused images) with
    MC-dropout, evaluate against the dataset's ground truth and write ``ctx.out_dir/report``."""
    import torch

    from inference.evaluate import evaluate
    from inference.predict import predict_files
    from inference.report import build_report
    from rig.core import dataset as rds

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(ctx.out_dir)
    report_dir = out / "report"
    model_ref, model_desc = _demo_model(out)
    from inference.model import load_model

    own_sigma = hasattr(load_model(model_ref).model, "forward_dist")  # an aleatoric σ head: one pass gives σ
    mc = 0 if own_sigma else 8 if ctx.quick else 50
    sigma_name = "aleatoric σ (one pass)" if own_sigma else f"MC-dropout σ, {mc} samples"
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
                       f"{stem}: {sigma_name} (mean {r['mean_std_m'] * 100:.1f} cm)"))
    section = {"title": "Predictions with uncertainty",
               "text": f"{model_desc}; {sigma_name}; 16-bit depth/σ PNGs (mm) in {pred_dir}.",
               "images": images}
    page = build_report(eval_dir, report_dir, title="rig demo: depth from defocus", extra_sections=[section])
    ctx.artifacts["report"] = page
    ctx.artifacts["predictions"] = pred_dir
    lines += [f"{len(records)} depth maps (+ {sigma_name}) -> {pred_dir}", f"report: {page}"]
    return lines


# --------------------------------------------------------------------------- live loop + replay
def live_step(ctx: DemoContext) -> list[str]:
    """A few frames of the live loop on the simulated rig (shipped model, else untrained lite)."""
    from inference.model import shipped_models
    from rig.core.config import rig_config_from_dict
    from rig.live import LiveOptions, default_model, run_live

    raw = dict(ctx.config.raw)
    raw["simulated"] = dict(raw["simulated"], latency_scale=0.0)
    cfg = rig_config_from_dict(raw, src="demo (simulated, no device latency)")
    shipped = shipped_models()
    model = default_model()
    out = ctx.out_dir / "live"
    if (out / "session.yaml").is_file() and (out / "live" / "live.yaml").is_file():
        shutil.rmtree(out)  # the previous demo's live run (anything else there is left alone)
    frames = 3 if ctx.quick else 6
    opts = LiveOptions(source="simulated", model=model, mc_samples=0 if ctx.quick else 8, max_frames=frames,
                       save=out, panel=False, drop=False, scene_frames=frames, threads=0,
                       onnx_cache=ctx.out_dir / "onnx")
    lines: list[str] = []
    summary = run_live(cfg, opts, print_fn=lambda s: None)
    ctx.artifacts["live_session"] = out
    lines.append(f"model: {model}" + ("" if shipped else " (no shipped model: untrained weights, depth is "
                                                         "a constant guess)"))
    lines.append(f"{summary['frames_output']} frame(s) through {summary['engine']}: {summary['fps']:.1f} FPS, "
                 f"median inference {(summary['median_ms'].get('infer') or 0):.0f} ms")
    lines.append(f"recorded live session: {out}")
    if summary.get("onnx"):  # replay it through the same inference: the same depth maps, byte for byte
        from inference.live import read_jsonl
        from rig.replay import ReplayOptions, run_replay

        again = ctx.out_dir / "live-replay"
        if (again / "session.yaml").is_file() and (again / "live" / "live.yaml").is_file():
            shutil.rmtree(again)
        run_replay(out, ReplayOptions(through="infer", model=summary["onnx"], out=again,
                                      mc_samples=opts.mc_samples), print_fn=lambda s: None)
        a = read_jsonl(out / "live" / "results.jsonl")
        b = read_jsonl(again / "live" / "results.jsonl")
        same = len(a) == len(b) and all((out / "live" / x["depth"]).read_bytes()
                                        == (again / "live" / y["depth"]).read_bytes() for x, y in zip(a, b))
        lines.append(f"rig replay {out}: {len(b)} frame(s), depth maps "
                     + ("identical to the live run's" if same else "DIFFER from the live run's"))
    return lines


# --------------------------------------------------------------------------------- the pipeline
STEPS: tuple[tuple[str, Callable[[DemoContext], list[str]]], ...] = (
    ("optics", optics_step),
    ("synthetic defocus", synth_step),
    ("capture", capture_step),
    ("register + dataset", register_step),
    ("predict + report", predict_step),
    ("live loop", live_step),
)


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out_dir=out, config=load_rig_config("simulated"), scenes=max(1, args.scenes),
                      quick=bool(args.quick))
    for title, step in STEPS:
        t0 = time.perf_counter()
        console.print(f"[bold]▶ {title}[/bold]")
        lines = step(ctx) or []
        for line in lines:
            console.print(f"    {line}")
        console.print(f"  [green]✓[/green] {title} ({time.perf_counter() - t0:.1f} s)")
    console.print(f"[bold green]demo done[/bold green]: outputs in {out.resolve()}")
    return 0
