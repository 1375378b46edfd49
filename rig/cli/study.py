"""Depth-quality study and pretraining data: ``rig depth-study run|table|ship``, ``rig import-nyu``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from rig.cli.base import add_group
from rig.core.errors import RigError


def _positive_int(name: str, v: int, hi: int) -> int:
    if not 1 <= v <= hi:
        raise RigError(f"--{name}: must be in 1..{hi}, got {v}")
    return v


def _dataset_root(data: str) -> Path:
    """--data as a Path, refused in one line unless it holds a train/ split."""
    root = Path(data)
    if not (root / "train").is_dir():
        raise RigError(f"--data {root}: not a dataset folder (no train/; make one with `rig import-dfd`)")
    return root


def _device(name: str) -> str:
    """--device as a torch device string, refused in one line when torch cannot use it here."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise RigError(f"--device: not a torch device name: {name!r} (cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RigError(f"--device {name}: this machine's torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise RigError(f"--device: cpu or cuda[:N], got {name!r}")
    return str(dev)


def cmd_study_run(args: argparse.Namespace) -> int:
    import torch

    from inference.recipe import RECIPES, Budget, bf16_supported, run_fold

    root = _dataset_root(args.data)
    if args.recipe not in RECIPES:
        raise RigError(f"--recipe: one of {', '.join(RECIPES)}, got {args.recipe!r}")
    fold = None if args.fold == "all" else int(args.fold) if args.fold.isdigit() else None
    if fold is None and args.fold != "all":
        raise RigError(f"--fold: a fold number or 'all', got {args.fold!r}")
    _positive_int("steps", args.steps, 10**7)
    _positive_int("k", args.k, 100)
    _positive_int("threads", args.threads, 1024)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise RigError(f"--lr: must be a positive number, got {args.lr}")
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    budget = Budget(steps=args.steps, batch=args.batch, crop_px=args.crop, lr=args.lr, seed=args.seed,
                    synth_per_image=args.synth_per_image, procedural=args.procedural, precision=args.precision)
    if args.precision == "bf16" and device == "cpu" and not bf16_supported():
        print("warning: this CPU has no native bfloat16 (AVX512-BF16/AMX): --precision bf16 will be slow",
              file=sys.stderr)
    out = Path(args.out)
    if (out / "result.json").exists():
        print(f"{out}: already done (result.json); remove it to run again")
        return 0
    res = run_fold(root, RECIPES[args.recipe], budget, fold, args.k, args.input, out, log=print, device=device)
    ev = res.get("eval", {}).get("plain")
    if ev:
        print(f"held-out fold {fold}: rel {ev['rel']:.3f} rms {ev['rms']:.3f} m δ1 {ev['delta1'] * 100:.1f}% "
              f"AUSE ratio {ev['ause_ratio']:.2f} Spearman {ev['spearman']:.2f}")
    print(f"model: {out / 'model.pt'}")
    return 0


def _fmt(v: Any, pct: bool = False) -> str:
    m, s = v
    if pct:
        return f"{m * 100:.1f} ± {s * 100:.1f} %" if math.isfinite(s) else f"{m * 100:.1f} %"
    return f"{m:.3f} ± {s:.3f}" if math.isfinite(s) else f"{m:.3f}"


def cmd_study_table(args: argparse.Namespace) -> int:
    from inference.recipe import ablation_rows

    d = Path(args.study_dir)
    if not d.is_dir():
        raise RigError(f"{d}: no such folder")
    rows = ablation_rows(d)
    if not rows:
        raise RigError(f"{d}: no finished folds (<recipe>/f<k>/result.json)")
    print("| recipe | TTA | folds | rel | rms (m) | δ1 | AUSE ratio | Spearman(σ, abs err) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['tta']} | {len(r['folds'])} | {_fmt(r['rel'])} | {_fmt(r['rms'])} | "
              f"{_fmt(r['delta1'], True)} | {_fmt(r['ause_ratio'])} | {_fmt(r['spearman'])} |")
    return 0


def cmd_study_ensemble(args: argparse.Namespace) -> int:
    from inference.recipe import ensemble_fold

    root = _dataset_root(args.data)
    members = [Path(m) for m in args.members]
    for m in members:
        if not m.is_dir():
            raise RigError(f"{m}: no such folder")
    folds = sorted(set.intersection(*({p.name for p in m.glob("f*") if (p / "model.pt").is_file()}
                                      for m in members)))
    if not folds:
        raise RigError("the member folders share no finished fold (f<k>/model.pt)")
    for f in folds:
        res = ensemble_fold(root, [m / f for m in members], Path(args.out) / f)
        ev = res["eval"]["flip"]
        print(f"{f}: ensemble of {len(members)}, flip TTA: rel {ev['rel']:.3f} rms {ev['rms']:.3f} m "
              f"δ1 {ev['delta1'] * 100:.1f}% AUSE ratio {ev['ause_ratio']:.2f} Spearman {ev['spearman']:.2f}")
    return 0


def cmd_study_fit_kcam(args: argparse.Namespace) -> int:
    from inference.recipe import kcam_fold

    root = _dataset_root(args.data)
    runs = sorted(p for p in Path(args.runs).glob("f*") if (p / "model.pt").is_file())
    if not runs:
        raise RigError(f"{args.runs}: no fold runs (f<k>/model.pt) of a camind recipe")
    for run in runs:
        res = kcam_fold(root, run, Path(args.out) / run.name)
        fit, ev = res["meta"]["k_cam_fit"], res["eval"]["plain"]
        print(f"{run.name}: k_cam {fit['k_cam_px']:.3f} px (× {fit['factor']:.3f} the rig's, fitted on "
              f"{fit['images']} training captures); held out: rel {ev['rel']:.3f} rms {ev['rms']:.3f} m "
              f"δ1 {ev['delta1'] * 100:.1f}%")
    return 0


def cmd_study_ship(args: argparse.Namespace) -> int:
    from inference.camind import is_camind_file, load_camind, save_camind
    from inference.model import export_fp16, load_model
    from inference.recipe import ensemble_member, ensemble_model

    run = args.run[0]
    if len(args.run) == 1 and Path(run).is_file() and is_camind_file(run):  # a camind run: stays a camind file
        if args.flip_tta:
            raise RigError("--flip-tta: camind models run one pass in rig predict/live; ship without it")
        cam, cmeta = load_camind(run)
        out = save_camind(cam, Path(args.out), {**cmeta, "shipped_from": str(run)}, half=True)
        print(f"wrote {out} (camind, {cmeta.get('levels', 3)}-level U-Nets, trained focused at "
              f"{cmeta.get('focus_m')} m; k_cam comes from the rig config at use)")
        return 0
    if args.member is not None and len(args.run) > 1:
        raise RigError("--member takes one ensemble file")
    if len(args.run) > 1:  # several seeds: one ensemble file
        if any(Path(r).is_file() and is_camind_file(r) for r in args.run):
            raise RigError("camind runs cannot form an ensemble; ship one camind run")
        model, meta = ensemble_model([load_model(r) for r in args.run])
        desc = f"dfdnet-ens of {len(args.run)} members"
    elif args.member is not None:  # one member of an ensemble file, e.g. for a faster live loop
        loaded = load_model(args.run[0])
        model, meta = ensemble_member(loaded, args.member)
        desc = f"dfdnet, member {args.member} of {loaded.path.name}"
    else:
        loaded = load_model(args.run[0])
        model, meta = loaded.model, {**loaded.meta, "shipped_from": str(args.run[0])}
        desc = loaded.arch
    if args.flip_tta:
        meta["flip_tta"] = True
    out = export_fp16(model, Path(args.out), meta)
    print(f"wrote {out} ({desc}, input {meta.get('input')})")
    return 0


def cmd_import_nyu(args: argparse.Namespace) -> int:
    from registration.nyu_import import import_nyu

    for name in ("mat", "splits"):
        p = Path(getattr(args, name))
        if not p.is_file():
            raise RigError(f"{p}: no such file")
    counts = import_nyu(Path(args.mat), Path(args.splits), Path(args.out), limit=args.limit)
    print(f"wrote {counts.get('train', 0)} train / {counts.get('test', 0)} test NYUv2 samples under {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    g = add_group(sub, "depth-study", "cross-validated depth-quality recipes: train a fold, tabulate, ship")
    p = g.add_parser("run", help="train one recipe on one time fold (or all data) and score the held-out fold",
                     description="Train a recipe for a fixed number of Adam steps on the training ids of one "
                     "time fold (contiguous chunks; captures within 120 s of a held-out one are purged) or on "
                     "everything (--fold all), then score the held-out fold with and without flip TTA. "
                     "Resumable: run the same command again after an interruption.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (e.g. from `rig import-dfd`)")
    p.add_argument("--recipe", required=True,
                   help="lite_l1, dfd_log, dfd_log_pre, dfd_log_pre_cue, dfd_log_cue, dfd_si_pre, "
                   "dfd_log_pre_photo (+ photometric jitter), camind_dslr "
                   "(the camera-independent network, trained on renders at other f-numbers only) or "
                   "camind_dslr_nok (the same without k_cam)")
    p.add_argument("--fold", required=True, help="fold number (0..k-1) or 'all'")
    p.add_argument("--k", type=int, default=3, help="number of time folds")
    p.add_argument("--input", default="N2_8", choices=("N2_8", "N8"), help="network input")
    p.add_argument("--steps", type=int, required=True, help="Adam steps (the budget)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--crop", type=int, default=192, help="square crop size (px)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--synth-per-image", type=int, default=4, help="scaled-depth renders per training image")
    p.add_argument("--procedural", type=int, default=60, help="procedural scenes in the pretraining pool")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="where the training steps run: cpu (default) or cuda[:N]; "
                   "scoring runs on the CPU")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="training arithmetic: bf16 = bfloat16 autocast + channels_last (about 2.5x faster "
                   "per step on CPUs with AVX512-BF16 or AMX; evaluation stays fp32)")
    p.add_argument("--out", required=True, help="run folder (last.pt, model.pt, result.json)")
    p.set_defaults(func=cmd_study_run)
    p = g.add_parser("table", help="the ablation table (mean ± sd over folds) of a study folder",
                     description="Markdown table over STUDY_DIR/<recipe>/f<k>/result.json: mean ± sd over folds.")
    p.add_argument("study_dir", help="folder holding <recipe>/f<k>/ runs")
    p.set_defaults(func=cmd_study_table)
    p = g.add_parser("ensemble", help="score the ensemble of several recipes' fold runs",
                     description="For every fold finished in all MEMBER folders (<member>/f<k>/model.pt), "
                     "average the members' log depth, take σ as the mixture's (aleatoric + the members' "
                     "spread), score the held-out ids and write OUT/f<k>/result.json, so that "
                     "`rig depth-study table` lists the ensemble beside its members.")
    p.add_argument("members", nargs="+", help="recipe run folders (e.g. study/dfd_log_pre study/dfd_log_pre_s1)")
    p.add_argument("--data", required=True, help="the dataset folder the members were trained on")
    p.add_argument("--out", required=True, help="folder for the ensemble's f<k>/result.json (e.g. study/ens2)")
    p.set_defaults(func=cmd_study_ensemble)

    p = g.add_parser("fit-kcam", help="camind fold runs with k_cam fitted on each fold's own training captures",
                     description="For each fold run of a camind recipe (RUNS/f<k>/model.pt), fit k_cam on the real "
                     "f/2.8 images + depth of that fold's training captures (which camind training never saw; as "
                     "`rig calibrate k-cam` does for a new camera), score the held-out captures at that k_cam, and "
                     "write OUT/f<k>/result.json for `rig depth-study table`.")
    p.add_argument("runs", help="a camind recipe's folder of fold runs (e.g. study/camind_dslr)")
    p.add_argument("--data", required=True, help="the dataset the runs were trained on")
    p.add_argument("--out", required=True, help="folder for f<k>/result.json (e.g. study/camind_dslr_kfit)")
    p.set_defaults(func=cmd_study_fit_kcam)

    p = g.add_parser("ship", help="write a run's model.pt (or several seeds' as one ensemble) as a shipped fp16 model file",
                     description="Export a `depth-study run` model as models/<name>.pt (fp16, with its metadata). "
                     "Given several dfdnet runs (other seeds of one recipe, same input and training captures), "
                     "write one ensemble file (arch dfdnet-ens): geometric-mean depth, σ of the members' mixture; "
                     "each prediction then costs one pass per member.")
    p.add_argument("run", nargs="+", help="model.pt of a run, or several (an ensemble); shipped model files are "
                   "accepted as members")
    p.add_argument("--out", required=True, help="models/<name>.pt")
    p.add_argument("--flip-tta", action="store_true", help="record that predictions average the mirror image")
    p.add_argument("--member", type=int, default=None, help="write member K of an ensemble file as a one-pass "
                   "dfdnet model (e.g. for `rig live` on a slow CPU)")
    p.set_defaults(func=cmd_study_ship)

    p = sub.add_parser("import-nyu", help="write the NYUv2 labelled set in the dataset layout (train/test)",
                       description="Read nyu_depth_v2_labeled.mat and splits.mat and write OUT/train and OUT/test "
                       "(N8 = RGB, depth, valid), cropped to 561x427, for the nyuv2_* training presets.")
    p.add_argument("mat", help="nyu_depth_v2_labeled.mat")
    p.add_argument("--splits", required=True, help="splits.mat (official 795/654 split)")
    p.add_argument("--out", default="out/nyuv2", help="dataset folder to write (default: %(default)s)")
    p.add_argument("--limit", type=int, help="at most this many images per split")
    p.set_defaults(func=cmd_import_nyu)
