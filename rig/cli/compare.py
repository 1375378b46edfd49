"""Paper 1's comparisons: ``rig baseline zhuo|eval``, ``rig finetune-diw``, ``rig diw-pairs``,
``rig diw-eval``, ``rig compare``.

Handlers import torch, OpenCV and the stage modules lazily so ``rig --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rig.core.errors import RigError
from rig.cli.base import threads_count

if TYPE_CHECKING:
    from inference.baseline_zhuo import ZhuoParams


def _baseline_args(p: argparse.ArgumentParser) -> None:
    add_param_args(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli.base import add_group

    g = add_group(sub, "baseline", "classical single-image defocus baseline (Zhuo & Sim 2011)")
    p = g.add_parser("zhuo", help="defocus map + thin-lens depth (16-bit mm PNG) for an image or a folder",
                     description="Zhuo & Sim 2011: edge blur from the gradient ratio to a re-blurred copy, joint "
                     "bilateral filtering, matting-Laplacian propagation; blur -> depth with the rig's thin lens on "
                     "one side of the focal plane. Writes <basename>.png (16-bit depth in mm).")
    p.add_argument("--input", required=True, help="image file or folder of images (full DSLR frames are "
                   "area-downsampled to the config's output size)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--colorize", action="store_true", help="also write colourised depth and blur-map PNGs "
                   "(depth on a fixed range with a colour bar in metres)")
    p.add_argument("--range", type=float, nargs=2, metavar=("MIN", "MAX"), dest="depth_range",
                   help="--colorize depth range in m (default: the config's depth sensor min_m max_m)")
    _baseline_args(p)
    p.set_defaults(func=cmd_zhuo)

    p = g.add_parser("eval", help="metrics of the baseline on a dataset split (beside networks with --model)",
                     description="Evaluate the baseline with the depth metrics of `rig eval` on a dataset split "
                     "(rig.core.dataset folder or paper 1's DFD release); --model adds networks to the same table.")
    p.add_argument("--data", required=True, help="dataset folder (rig.core.dataset layout) or the DFD release")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--input", choices=("N2_8", "N8"), default="N2_8", help="input images (default N2_8)")
    p.add_argument("--model", action="append", help="also evaluate this network (repeatable)")
    p.add_argument("--limit", type=int, help="evaluate at most this many images")
    p.add_argument("--json", dest="json_out", help="write all metrics to this JSON file")
    _baseline_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("finetune-diw", help="finetune a depth model on relative-depth point pairs (DIW ranking loss)",
                       description="Chen et al. 2016 ranking loss on log depth, from a metric model. Annotations: "
                       "the DIW release CSV, a pair CSV (image,xA,yA,xB,yB,relation) or JSON.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name")
    p.add_argument("--annotations", required=True, help="training annotations (DIW CSV, pair CSV or JSON)")
    p.add_argument("--images", help="folder the annotated image paths are relative to")
    p.add_argument("--out", required=True, help="output model file (.pt, loadable by rig predict/eval)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--crop", type=int, default=0, help="random square crops of this size holding pairs (0 = whole)")
    p.add_argument("--val-annotations", help="held-out annotations: WHDR before and after")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ of WHDR (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the summary (losses, WHDR) to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=threads_count, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("diw-pairs", help="sample relative-depth point pairs from a dataset's depth maps",
                       description="Random point pairs of each depth map of a dataset split, with their true order "
                       "('=' within ratio 1+τ); image paths relative to DATA/SPLIT.")
    p.add_argument("--data", required=True, help="dataset folder (rig.core.dataset layout)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="annotation file to write")
    p.add_argument("--n-pairs", type=int, default=200, help="pairs per image (default 200)")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ (default 0.02)")
    p.add_argument("--input", choices=("N2_8", "N8"), default="N2_8", help="image kind the pairs refer to")
    p.add_argument("--min-dist", type=float, default=4.0, help="minimum distance of a pair's points (px)")
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--format", choices=("pairs", "diw"), default="pairs", help="pair CSV (default) or DIW CSV")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("diw-eval", help="WHDR of a model on relative-depth annotations",
                       description="Weighted human disagreement rate of a model's depth on point-pair annotations.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name")
    p.add_argument("--annotations", required=True, help="DIW CSV, pair CSV or JSON")
    p.add_argument("--images", help="folder the annotated image paths are relative to")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ (default 0.02)")
    p.add_argument("--json", dest="json_out", help="write the result to this JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=threads_count, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=cmd_whdr)

    p = sub.add_parser("compare", help="outdoor comparison page: N=2.8 and N=8 models vs. the classical baseline",
                       description="Pair DSLR shots by EXIF time and f-number, downsample to the output size, run the "
                       "N=2.8 model on the f/2.8 image, the N=8 model on the f/8 image and the Zhuo & Sim baseline; "
                       "writes DIR/index.html with the PNGs (paper 1 Fig. 13).")
    p.add_argument("--pairs", required=True, help="folder of DSLR shots (sub-folders such as N2_8/ and N8/ are read)")
    p.add_argument("--out", required=True, help="report folder (index.html + PNGs)")
    p.add_argument("--model-n2-8", default="dfd-n2.8", help="model for the f/2.8 images (default dfd-n2.8)")
    p.add_argument("--model-n8", default="dfd-n8", help="model for the f/8 images (default dfd-n8)")
    p.add_argument("--tolerance-s", type=float, default=60.0, help="largest EXIF time gap of a pair (default 60 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=threads_count, default=0, help="torch CPU threads (0 = default)")
    _baseline_args(p)
    p.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------------------------------ CLI
def add_param_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by the baseline commands."""
    from inference.baseline_zhuo import DEFAULT_CONFIG, SIDES, ZhuoParams

    d = ZhuoParams()
    p.add_argument("--config", default=DEFAULT_CONFIG, help="rig config (lens, focus, ρ, γ); default "
                   "nikon_d200_xtion (paper 1's real rig)")
    p.add_argument("--side", choices=SIDES, default="far", help="side of the focal plane the scene is assumed "
                   "on (defocus alone cannot tell; default far)")
    p.add_argument("--focus-m", type=float, help="override the focus distance (m)")
    p.add_argument("--sigma0", type=float, default=d.sigma0_px, help=f"re-blur σ0 in px (default {d.sigma0_px})")
    p.add_argument("--canny-low", type=float, default=d.canny_low,
                   help=f"Canny low threshold (default {d.canny_low:g})")
    p.add_argument("--canny-high", type=float, default=d.canny_high,
                   help=f"Canny high threshold (default {d.canny_high:g})")
    p.add_argument("--lam", type=float, default=d.lam, help=f"propagation data weight λ (default {d.lam:g})")
    p.add_argument("--work-px", type=int, default=d.work_px,
                   help=f"long side of the propagation grid, 0 = full size (default {d.work_px})")


def params_from_args(args: argparse.Namespace) -> ZhuoParams:
    from inference.baseline_zhuo import ZhuoParams

    if args.sigma0 <= 0:
        raise RigError("--sigma0: must be > 0 px")
    if not 0 < args.canny_low <= args.canny_high:
        raise RigError("--canny-low/--canny-high: need 0 < low <= high")
    if args.lam <= 0:
        raise RigError("--lam: must be > 0")
    if args.work_px < 0 or 0 < args.work_px < 16:
        raise RigError("--work-px: use 0 (full size) or at least 16")
    return ZhuoParams(sigma0_px=args.sigma0, canny_low=args.canny_low, canny_high=args.canny_high, lam=args.lam,
                      work_px=args.work_px)


def config_from_args(args: argparse.Namespace) -> Any:
    from rig.core.config import load_rig_config

    cfg = load_rig_config(args.config)
    if args.focus_m is not None:
        if args.focus_m * 1000.0 <= cfg.dslr.focal_mm:
            raise RigError(f"--focus-m: must exceed the focal length ({cfg.dslr.focal_mm:g} mm)")
        cfg = load_rig_config(args.config, {"dslr.focus_m": float(args.focus_m)})
    return cfg


def cmd_zhuo(args: argparse.Namespace) -> int:
    """``rig baseline zhuo``: depth PNGs (16-bit mm) for an image or a folder."""
    import numpy as np

    from inference.baseline_zhuo import estimate_for_config, fit_to_output
    from inference.predict import colorize, colorize_with_bar, list_inputs
    from rig.cli.inference import parse_depth_range
    from rig.core.imageio import read_rgb, write_depth_mm, write_image

    cfg = config_from_args(args)
    lo, hi = parse_depth_range(args.depth_range) or (cfg.depth_sensor.min_m, cfg.depth_sensor.max_m)
    params = params_from_args(args)
    inputs = list_inputs(Path(args.input))
    out = Path(args.out)
    for f in inputs:
        rgb = fit_to_output(read_rgb(f), cfg)
        res = estimate_for_config(rgb, cfg, args.side, params)
        write_depth_mm(out / f"{f.stem}.png", res.depth_m)
        if args.colorize:
            write_image(out / f"{f.stem}_color.png", colorize_with_bar(res.depth_m, lo, hi))
            write_image(out / f"{f.stem}_blur_color.png", colorize(res.blur_px + 1e-6, lo=0.0, cmap="magma"))
        print(f"{f.name}: {res.info['n_edges']} edge px, median blur {np.median(res.blur_px):.2f} px, "
              f"median depth {np.median(res.depth_m):.2f} m ({args.side} side) -> {out / (f.stem + '.png')}")
    print(f"wrote {len(inputs)} depth map(s) to {out}")
    return 0


def format_metrics_table(rows: list[tuple[str, dict[str, float]]], title: str) -> Any:
    """A rich Table of the depth metrics, one row per method."""
    import numpy as np
    from rich.table import Table

    from inference.metrics import METRIC_NAMES

    t = Table(title=title)
    t.add_column("method")
    for k in METRIC_NAMES:
        t.add_column(k, justify="right")
    for name, m in rows:
        t.add_row(name, *[("-" if m.get(k) is None or not np.isfinite(m[k]) else
                           f"{m[k] * 100:.1f}%" if k.startswith("delta") else f"{m[k]:.3f}") for k in METRIC_NAMES])
    return t


def cmd_eval(args: argparse.Namespace) -> int:
    """``rig baseline eval``: the baseline's metrics on a dataset split, beside networks' (--model)."""
    from rich.console import Console

    from inference.baseline_zhuo import evaluate_baseline
    from inference.evaluate import write_json

    cfg = config_from_args(args)
    params = params_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise RigError("--limit: must be >= 1")
    meta: dict[str, Any] = {}
    if args.model:  # split 'val' = the validation ids the (first) model records, as `rig eval` does
        from inference.model import load_model

        meta = load_model(args.model[0]).meta
    res = evaluate_baseline(Path(args.data), args.split, cfg, args.input, args.side, params, args.limit,
                            progress=True, meta=meta)
    lo, hi = res["settings"]["sensor_range_m"]
    rows = [(f"Zhuo & Sim ({args.side} side)", res["metrics"]),
            (f"  clipped to {lo:g}-{hi:g} m", res["sensor_range"]),
            ("  oracle side of focus", res["oracle_side"])]
    nets = []
    for ref in args.model or []:
        from inference.evaluate import evaluate

        r = evaluate(ref, Path(args.data), args.split, input_kind=None, grid=0, limit=args.limit, progress=True)
        nets.append(r)
        rows.append((f"{Path(r['model']).name} ({r['arch']}, {r['input']})", r["metrics"]))
    Console().print(format_metrics_table(rows, f"{res['split']} of {res['data']}: {res['n_images']} images, "
                                         f"baseline input {args.input}, config {cfg.name}"))
    if args.json_out:
        write_json(Path(args.json_out), {"baseline": res, "networks": nets})
        print(f"wrote {args.json_out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``rig compare``."""
    import torch

    from inference.compare import compare_pairs
    from inference.predict import _device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tolerance_s <= 0:
        raise RigError("--tolerance-s: must be > 0")
    cfg = config_from_args(args)
    params = params_from_args(args)
    r = compare_pairs(Path(args.pairs), Path(args.out), args.model_n2_8, args.model_n8, cfg, args.tolerance_s,
                      _device(args.device), baseline=not args.no_baseline, baseline_params=params, side=args.side)
    for u in r["unpaired"]:
        print(f"not paired: {u}")
    print(f"{len(r['scenes'])} scene(s) -> {r['index']}")
    return 0


# -------------------------------------------------------------------------------------------- CLI
def _device(name: str) -> str:
    from inference.predict import _device as dev

    return dev(name)


def cmd_pairs(args: argparse.Namespace) -> int:
    """``rig diw-pairs``: sample annotated pairs from a dataset split's depth maps."""
    from inference.diw import diw_csv_text, pairs_from_dataset, write_pairs_csv

    if args.n_pairs < 1:
        raise RigError("--n-pairs: must be >= 1")
    if args.tau < 0:
        raise RigError("--tau: must be >= 0")
    sets = pairs_from_dataset(Path(args.data), args.split, args.n_pairs, args.seed, args.tau, args.input,
                              args.limit, args.min_dist)
    out = Path(args.out)
    if args.format == "diw":
        from rig.core.imageio import atomic_write_bytes

        atomic_write_bytes(out, diw_csv_text(sets).encode())
    else:
        write_pairs_csv(out, sets)
    n = sum(len(s) for s in sets)
    n_eq = sum(int((s.rel == 0).sum()) for s in sets)
    print(f"wrote {n} pairs ({n_eq} '=', τ={args.tau:g}) from {len(sets)} depth maps to {out}; "
          f"images are relative to {Path(args.data) / args.split}")
    return 0


def cmd_whdr(args: argparse.Namespace) -> int:
    """``rig diw-eval``: WHDR of a model on an annotation file."""
    import torch

    from inference.diw import evaluate_whdr, load_annotations, load_pair_images
    from inference.model import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    sets = load_annotations(args.annotations)
    device = _device(args.device)
    loaded = load_model(args.model, device=device)
    images = load_pair_images(sets, Path(args.images) if args.images else None, Path(args.annotations).parent,
                              _train_width(loaded))
    r = evaluate_whdr(loaded.model, images, args.tau, device)
    print(f"{loaded.path.name}: WHDR {r['whdr'] * 100:.1f}% over {r['n_pairs']} pairs "
          f"(equal pairs {_pct(r['whdr_eq'])} of {r['n_eq']}, ordinal {_pct(r['whdr_neq'])} of {r['n_neq']}; "
          f"τ={args.tau:g}); sign-only WHDR (Chen et al., τ=0) {_pct(r['whdr_sign'])} of {r['n_neq']} ordinal pairs")
    if args.json_out:
        from inference.evaluate import write_json

        write_json(Path(args.json_out), {"model": str(loaded.path), "annotations": str(args.annotations), **r})
    return 0


def _train_width(loaded: Any) -> int | None:
    """Width of the model's training images (much wider inputs are area-downsampled to it)."""
    size = loaded.meta.get("image_size_px")
    return int(size[0]) if size else None


def _pct(x: float) -> str:
    import numpy as np

    return "-" if not np.isfinite(x) else f"{x * 100:.1f}%"


def cmd_finetune(args: argparse.Namespace) -> int:
    """``rig finetune-diw``: ranking-loss finetuning of a metric model on point-pair annotations."""
    import torch

    from inference.diw import finetune_diw, load_annotations, load_pair_images, save_finetuned

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lr <= 0:
        raise RigError("--lr: must be > 0")
    if args.batch < 1:
        raise RigError("--batch: must be >= 1")
    if args.crop < 0 or 0 < args.crop < 32:
        raise RigError("--crop: use 0 (whole images) or at least 32 px")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise RigError(f"{out}: exists; pass --force to overwrite")
    device = _device(args.device)
    from inference.model import load_model

    sets = load_annotations(args.annotations)
    vsets = load_annotations(args.val_annotations) if args.val_annotations else None
    start = load_model(args.model, device=device)
    images_dir = Path(args.images) if args.images else None
    train = load_pair_images(sets, images_dir, Path(args.annotations).parent, _train_width(start))
    val = (load_pair_images(vsets, images_dir, Path(args.val_annotations).parent, _train_width(start))
           if vsets else None)
    loaded, summary = finetune_diw(start, train, steps=args.steps, lr=args.lr, batch_images=args.batch,
                                   crop_px=args.crop, seed=args.seed, device=device, val=val, tau=args.tau)
    save_finetuned(loaded, out, summary)
    if args.json_out:
        from inference.evaluate import write_json

        write_json(Path(args.json_out), summary)
    print(f"finetuned {summary['steps']} steps in {summary['seconds']:.0f} s (loss {summary['loss_first']:.4f} -> "
          f"{summary['loss_last']:.4f}) -> {out}")
    return 0
