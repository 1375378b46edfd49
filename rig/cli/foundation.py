"""Foundation and whole-pipeline subcommands: ``rig optics``, ``rig synth``, ``rig demo``, ``rig bench``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rig.core.errors import RigError
from rig.cli.base import threads_count

# `rig bench NAME` -> "module:function"; the function takes the parsed args and returns a dict of
# measured figures (printed as a table, written with --json).
BENCH_TARGETS: dict[str, str] = {
    "synth": "rig.bench.synth:run",
    "capture": "rig.bench.capture:run",
    "register": "rig.bench.register:run",
    "fill": "rig.bench.register:run_fill",
    "infer": "rig.bench.infer:run",
}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as e:
        raise RigError(f"{target} is not available in this build ({e})") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli.base import add_group

    optics = add_group(sub, "optics", "thin-lens blur: diameters, plots, fitting the real DSLR's blur")
    p = optics.add_parser("blur", help="blur-circle diameter (output px) at given depths",
                          description="Print the blur-circle diameter in output pixels at each depth.")
    p.add_argument("--config", required=True, help="rig config file or preset name")
    p.add_argument("--focus", type=float, help="focus distance in m (default: the config's)")
    p.add_argument("--depth", type=float, nargs="+", required=True, help="depths in m")
    p.add_argument("--aperture", choices=("defocused", "all_in_focus"), default="defocused")
    p.add_argument("--sigma", action="store_true", help="print the Gaussian σ = ρ·ε instead")
    p.add_argument("--json", action="store_true", help="print JSON only: depths_m, values_px (output px), the "
                   "quantity (blur_diameter or gaussian_sigma) and the lens")
    p.set_defaults(func=cmd_optics_blur)

    p = optics.add_parser("plot", help="blur diameter vs depth for the focus presets (paper 1 Fig. 4)")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="output image (.png/.pdf/.svg)")
    p.add_argument("--max-depth", type=float, default=10.0, help="right end of the depth axis, m")
    p.set_defaults(func=cmd_optics_plot)

    p = optics.add_parser("fit-blur", help="fit focus distance / ρ / PSF so synthetic f/2.8 matches the real one",
                          description="Search the focus distance (and ρ, PSF type) for which synthesising the "
                          "defocused image from the all-in-focus image + depth best matches the real defocused "
                          "image; report errors vs no blur and the paper's NYU settings.")
    p.add_argument("--data", required=True, help="folder with N2_8/, N8/, depth/ (e.g. ../shared/data/dfd_indoor/train)")
    p.add_argument("--config", required=True, help="rig config (the fitted values are written into it with --write)")
    p.add_argument("--limit", type=int, default=24, help="number of image triplets used (default 24)")
    p.add_argument("--write", action="store_true", help="write the fitted values into the config file")
    p.add_argument("--json", dest="json_out", help="also write the result as JSON to this file")
    p.set_defaults(func=_cmd_fit_blur)

    p = sub.add_parser("synth", help="layered synthetic defocus of all-in-focus RGB + depth",
                       description="Render defocused images from all-in-focus RGB + depth (paper 1 Eq. 1-2).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rgb-dir", help="folder of all-in-focus images (paired with --depth-dir by timestamp/name)")
    src.add_argument("--nyu", help="NYUv2 labelled .mat file (HDF5 v7.3)")
    p.add_argument("--depth-dir", help="folder of 16-bit PNG depth in mm")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="max timestamp gap (s) when pairing --rgb-dir/--depth-dir names (default 0.5)")
    p.add_argument("--splits", help="NYUv2 splits.mat (official 795/654 split); with --nyu")
    p.add_argument("--split", choices=("train", "test", "all"), default="all", help="NYUv2 split to render")
    p.add_argument("--config", required=True)
    p.add_argument("--focus", type=float, help="focus distance in m (default: the config's)")
    p.add_argument("--psf", choices=("disk", "gaussian"), help="PSF (default: the config's)")
    p.add_argument("--out", required=True, help="output folder: <name>.png + manifest.yaml (re-run to resume)")
    p.add_argument("--workers", type=int, default=0, help="processes (default 0: all cores)")
    p.add_argument("--limit", type=int, help="render at most this many images")
    p.add_argument("--device", default="cpu", help="'cpu' (NumPy/OpenCV) or a torch device, e.g. cuda")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("demo", help="run the whole pipeline on the simulated rig (no hardware needed)",
                       description="Run the whole pipeline on one screen with the simulated rig, no hardware: "
                       "optics, synthetic defocus, capture a session, register it and build a dataset, predict "
                       "with an HTML report, and a short live loop replayed byte for byte; everything goes "
                       "under --out.")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--scenes", type=int, default=4, help="simulated scenes to capture")
    p.add_argument("--quick", action="store_true", help="smallest possible run (used by the tests)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCH_TARGETS) + ", all")
    p.add_argument("name", choices=(*BENCH_TARGETS, "all"))
    p.add_argument("--json", dest="json_out", help="write the figures as JSON to this file")
    p.add_argument("--repeats", type=int, default=5, help="runs per measurement; the median is reported")
    p.add_argument("--quick", action="store_true", help="small inputs (a smoke run, not a measurement)")
    p.add_argument("--model", help="model for `bench infer` (path or shipped name; default: shipped, else untrained lite)")
    p.add_argument("--threads", type=threads_count, default=0, help="CPU threads for torch / onnxruntime (default: all cores)")
    p.set_defaults(func=cmd_bench)


def _cmd_fit_blur(args: argparse.Namespace) -> int:
    from rig.fit_blur import cmd_fit_blur

    return cmd_fit_blur(args)


def _cmd_synth(args: argparse.Namespace) -> int:
    from rig.synth import cmd_synth

    return cmd_synth(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from rig.demo import run_demo

    return run_demo(args)


def cmd_optics_blur(args: argparse.Namespace) -> int:
    from rig.core import optics
    from rig.core.config import load_rig_config

    cfg = load_rig_config(args.config)
    if args.focus is not None and args.focus * 1000.0 <= cfg.dslr.focal_mm:
        raise RigError(f"--focus: must exceed the focal length ({cfg.dslr.focal_mm:g} mm), got {args.focus:g} m")
    if any(d <= 0 for d in args.depth):
        raise RigError("--depth: depths must be > 0 m")
    lens = cfg.lens(args.aperture, focus_m=args.focus)
    diam = optics.blur_diameter_px(args.depth, lens)
    values = optics.gaussian_sigma_px(diam, cfg.blur.rho) if args.sigma else diam
    out = [round(float(v), 6) for v in values]
    if args.json:
        print(json.dumps({"config": cfg.name, "aperture": args.aperture, "f_number": lens.f_number,
                          "focal_mm": lens.focal_mm, "focus_m": lens.focus_m,
                          "quantity": "gaussian_sigma" if args.sigma else "blur_diameter", "unit": "px (output)",
                          "depths_m": [float(d) for d in args.depth], "values_px": out}))
        return 0
    from rich.console import Console
    from rich.table import Table

    kind = "σ (px)" if args.sigma else "ε (px)"
    t = Table(title=f"{cfg.name}: f={lens.focal_mm:g} mm N={lens.f_number:g} focus={lens.focus_m:g} m "
              f"k_cam={optics.k_cam_px(lens):.3f} px")
    t.add_column("depth (m)", justify="right")
    t.add_column(kind, justify="right")
    for d, v in zip(args.depth, out):
        t.add_row(f"{d:g}", f"{v:.3f}")
    Console().print(t)
    near, far = optics.dead_zone_m(lens)
    print(f"dead zone (ε < 1 px): {near:.3f} m .. {far:.3f} m")
    return 0


def cmd_optics_plot(args: argparse.Namespace) -> int:
    from rig.core.config import load_rig_config
    from rig.plots import plot_blur_vs_depth

    cfg = load_rig_config(args.config)
    if args.max_depth <= 0.1:
        raise RigError("--max-depth: must be > 0.1 m")
    out = plot_blur_vs_depth(cfg, Path(args.out), max_depth_m=args.max_depth)
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    names = list(BENCH_TARGETS) if args.name == "all" else [args.name]
    if args.repeats < 1:
        raise RigError("--repeats: must be >= 1")
    results: dict[str, Any] = {}
    for name in names:
        try:
            fn = _resolve(BENCH_TARGETS[name])
        except RigError as e:
            if args.name == "all":
                print(f"bench {name}: skipped ({e})", file=sys.stderr)
                continue
            raise
        results[name] = fn(args)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(bench_report(results), indent=2, default=float))
        print(f"wrote {args.json_out}")
    return 0


def bench_report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The --json document: each bench's figures under its name, and its checkable "summary"
    object moved to the top level — the object itself for one bench, {name: summary} for several."""
    report: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    for name, figures in results.items():
        report[name] = {k: v for k, v in figures.items() if k != "summary"}
        if "summary" in figures:
            summaries[name] = figures["summary"]
    if summaries:
        report["summary"] = next(iter(summaries.values())) if len(results) == 1 else summaries
    return report
