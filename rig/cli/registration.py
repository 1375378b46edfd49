"""Registration commands: ``rig calibrate geometry|stereo|blur``, ``rig register``, ``rig build-dataset``,
``rig import-dfd``. Handlers import the registration stage lazily (``rig --help`` stays fast).

``rig calibrate`` is a group: :data:`CALIBRATE_COMMANDS` lists the functions that add its
subcommands (``rig calibrate blur`` comes from :mod:`rig.cli.blur`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from rig.core.errors import PartialFailure, RigError

DIST_MODELS = ("simple", "standard", "rational")


def _add_board_args(p: argparse.ArgumentParser, pattern_flag: str) -> None:
    p.add_argument("--square-mm", type=float, required=True, help="square side (circles: spacing) in mm")
    p.add_argument("--marker-mm", type=float, help="charuco: marker side in mm (default 0.75 x square)")
    p.add_argument("--dictionary", default="DICT_5X5_100", help="charuco: ArUco dictionary (default DICT_5X5_100)")
    p.add_argument("--model", choices=DIST_MODELS, default="standard",
                   help="distortion model: simple (k1, k2), standard (k1, k2, p1, p2, k3), rational (8 terms)")
    p.add_argument("--fix-intrinsics", action="store_true",
                   help="keep each camera's own calibration in the stereo solve (default: refine jointly)")
    p.add_argument("--keep-outliers", action="store_true", help="do not drop outlier views")
    p.add_argument("--out", required=True, help="calibration file (OpenCV FileStorage .yaml)")
    p.add_argument("--report", help="one-page report (.png, .pdf, .svg or .html)")


def add_geometry_command(calibrate: argparse._SubParsersAction) -> None:
    p = calibrate.add_parser(
        "geometry", help="DSLR + depth-sensor IR intrinsics and extrinsics from board views",
        description="Calibrate the DSLR and the depth sensor's IR camera from simultaneous views of a board; "
                    "images are paired by sorted file name. Writes K, distortion, R, T (IR -> DSLR, metres), "
                    "per-view errors and RMS as OpenCV FileStorage YAML.")
    p.add_argument("--dslr", required=True, help="glob of the DSLR images (quote it)")
    p.add_argument("--ir", required=True, help="glob of the IR images, same count and order")
    p.add_argument("--board", choices=("chessboard", "circles", "charuco"), default="chessboard")
    p.add_argument("--pattern", required=True,
                   help="COLSxROWS: inner corners (chessboard), circles per row x rows (circles), squares (charuco)")
    _add_board_args(p, "--pattern")
    p.set_defaults(func=lambda a: cmd_calibrate_geometry(a))


def add_stereo_command(calibrate: argparse._SubParsersAction) -> None:
    p = calibrate.add_parser(
        "stereo", help="two cameras (left/right) from board views",
        description="Calibrate a stereo pair from board views (paired by sorted file name).")
    p.add_argument("--left", required=True, help="glob of the left images (quote it)")
    p.add_argument("--right", required=True, help="glob of the right images, same count and order")
    p.add_argument("--board", required=True, help="COLSxROWS board pattern, e.g. 9x6 (inner corners)")
    p.add_argument("--kind", choices=("chessboard", "circles", "charuco"), default="chessboard",
                   help="board kind (default chessboard)")
    _add_board_args(p, "--board")
    p.set_defaults(func=lambda a: cmd_calibrate_stereo(a))


# Subcommands of `rig calibrate`.
def add_blur_command(sub: argparse._SubParsersAction) -> None:
    """`rig calibrate blur` (paper 2's defocus-blur calibration; parser lives with its wiring)."""
    from rig.cli.blur import add_blur_parser

    add_blur_parser(sub, "blur")


def add_kcam_command(sub: argparse._SubParsersAction) -> None:
    """`rig calibrate k-cam` (k_cam for a camind model from real shots with depth)."""
    from rig.cli.blur import add_kcam_parser

    add_kcam_parser(sub, "k-cam")


CALIBRATE_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_geometry_command, add_stereo_command, add_blur_command, add_kcam_command]


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli.base import add_group

    calibrate = add_group(sub, "calibrate", "calibrate the rig: geometry (DSLR + depth sensor), stereo pairs, defocus blur (k_cam, γ), "
                         "k_cam for a camind model from shots with depth")
    for add in CALIBRATE_COMMANDS:
        add(calibrate)

    p = sub.add_parser("register", help="register a session's captures into the DSLR frame at the output size",
                       description="For each completed capture: resample both apertures to the output size "
                                   "(undistorted when calibrated), check their alignment, reproject the fused depth "
                                   "into the DSLR with a z-buffer, fill holes edge-aware; writes "
                                   "registered/<id>/{defocused,all_in_focus,depth,valid}.png + camera_intrinsic.json "
                                   "(Open3D) + frame.yaml (--ply: depth.ply). "
                                   "Resumable: finished frames are skipped.")
    p.add_argument("session", help="session folder (from `rig capture`)")
    p.add_argument("--align", choices=("correct", "flag", "off"), default="flag",
                   help="f/2.8 vs f/8 shift check: correct it, only flag it (default), or skip it")
    p.add_argument("--align-threshold", dest="align_threshold_px", type=float, default=0.5,
                   help="shift (output px) above which a pair is flagged/corrected (default 0.5)")
    p.add_argument("--fill", choices=("fast", "reference", "none"), default="fast",
                   help="hole filling: fast colorization (default), NYU's reference solve, or none")
    p.add_argument("--calibration", help="geometry calibration file (default: the session config's "
                                         "calibration.geometry, else capture.yaml's geometry)")
    p.add_argument("--force", action="store_true", help="re-register frames that are already done")
    p.add_argument("--ply", action="store_true", help="also write registered/<id>/depth.ply, a point cloud in m "
                   "coloured by the all-in-focus image (added to frames already done, too)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("build-dataset", help="registered sessions -> a train/test dataset (split by scene)",
                       description="Copy the registered frames of one or more sessions into DIR/{train,test}/"
                                   "{N2_8,N8,depth,valid}/<id>.png with a manifest.yaml; the split is drawn by "
                                   "scene, so no scene is in both splits.")
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session folders (registered)")
    p.add_argument("--out", required=True, help="dataset folder (new or empty)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="fraction of scenes in the test split (0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene split (0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build_dataset)

    p = sub.add_parser("import-dfd", help="import paper 1's DFD release into the dataset layout",
                       description="Import the published DFD indoor data (N2_8/, N8/, depth/), pairing files "
                                   "by nearest timestamp within a tolerance.")
    p.add_argument("src", metavar="SRC", help="release folder (with N2_8/, N8/, depth/ or train/, test/ inside)")
    p.add_argument("--out", required=True, help="dataset folder")
    p.add_argument("--tolerance-s", type=float, default=0.5, help="max timestamp gap when pairing (0.5 s)")
    p.add_argument("--split", help="import only this split (e.g. train)")
    p.add_argument("--config", help="rig config for the lens and output size (default: nikon_d200_xtion)")
    p.set_defaults(func=cmd_import_dfd)


# ------------------------------------------------------------------------------------------------
# handlers


def _board(kind: str, pattern: str, args: argparse.Namespace) -> Any:
    from registration.calibration import BoardSpec, parse_pattern

    cols, rows = parse_pattern(pattern)
    if args.marker_mm is not None and not args.marker_mm > 0:
        raise RigError(f"--marker-mm: must be > 0, got {args.marker_mm:g}")
    if kind == "charuco":
        import cv2

        if not hasattr(cv2.aruco, str(args.dictionary)):
            raise RigError(f"--dictionary: unknown ArUco dictionary {args.dictionary!r} (e.g. DICT_5X5_100)")
    return BoardSpec(kind=kind, cols=cols, rows=rows, square_m=args.square_mm / 1000.0,
                     marker_m=None if args.marker_mm is None else args.marker_mm / 1000.0, dictionary=args.dictionary)


def _flags(model: str) -> int:
    import cv2

    return {"simple": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST, "standard": 0,
            "rational": cv2.CALIB_RATIONAL_MODEL}[model]


def _run_stereo(files1: list[str], files2: list[str], names: tuple[str, str], board: Any, kind: str,
                args: argparse.Namespace) -> int:
    from rich.console import Console

    from registration.calibration import (_summary_text, calibrate_stereo, detect_pairs, save_calibration,
                                          write_report)

    console = Console()
    pairs = detect_pairs(files1, files2, board, progress=True)
    n1 = sum(a is not None for a, _ in pairs)
    n2 = sum(b is not None for _, b in pairs)
    if n1 == 0 or n2 == 0:
        who = names[0] if n1 == 0 else names[1]
        raise RigError(f"the {board.describe()} board was not found in any {who} image "
                       f"(check --pattern/--board: chessboards count inner corners, e.g. 9x6)")
    calib = calibrate_stereo(pairs, board, names, flags=_flags(args.model), fix_intrinsics=args.fix_intrinsics,
                             drop_outliers=not args.keep_outliers)
    calib.kind = kind
    out = save_calibration(calib, Path(args.out))
    console.print(f"board found in {n1}/{len(pairs)} {names[0]} and {n2}/{len(pairs)} {names[1]} images")
    console.print(_summary_text(calib))
    console.print(f"wrote {out}")
    if args.report:
        console.print(f"wrote {write_report(calib, Path(args.report))}")
    return 0


def cmd_calibrate_geometry(args: argparse.Namespace) -> int:
    """IR camera = camera 1, DSLR = camera 2: R, T is depth sensor → DSLR."""
    from registration.calibration import expand_glob

    board = _board(args.board, args.pattern, args)
    dslr = expand_glob(args.dslr, "--dslr")
    ir = expand_glob(args.ir, "--ir")
    return _run_stereo(ir, dslr, ("ir", "dslr"), board, "geometry", args)


def cmd_calibrate_stereo(args: argparse.Namespace) -> int:
    from registration.calibration import expand_glob

    board = _board(args.kind, args.board, args)
    left = expand_glob(args.left, "--left")
    right = expand_glob(args.right, "--right")
    return _run_stereo(left, right, ("left", "right"), board, "stereo", args)


def cmd_register(args: argparse.Namespace) -> int:
    """`rig register SESSION [--align ...] [--fill ...] [--force] [--calibration FILE]`."""
    from rich.console import Console

    from registration.register import FrameResult, RegisterOptions, open_session, register_session

    console = Console()
    session = open_session(args.session)
    size = tuple(session.config.output.size_px)
    if args.align_threshold_px <= 0:
        raise RigError("--align-threshold: must be > 0 px")
    opts = RegisterOptions(size=size, align=args.align, align_threshold_px=args.align_threshold_px,  # type: ignore[arg-type]
                           fill=args.fill, force=args.force,
                           calibration=Path(args.calibration) if args.calibration else None,
                           max_fill_px=session.config.output.max_fill_px, ply=args.ply)

    def report(r: FrameResult) -> None:
        if r.status == "failed":
            console.print(f"[red]✗[/red] {r.capture_id}: {r.error}", soft_wrap=True)
        elif r.status == "registered":
            al = r.meta.get("alignment", {})
            flag = ""
            if al.get("flagged"):
                flag = (f"  [yellow]shift {al['dx_px']:+.2f},{al['dy_px']:+.2f} px"
                        f"{' corrected' if al.get('corrected') else ' (flagged)'}[/yellow]")
            dep = r.meta.get("depth", {})
            console.print(f"[green]✓[/green] {r.capture_id}: measured {dep.get('measured_fraction', 0):.1%}, "
                          f"filled {dep.get('filled_fraction', 0):.1%} ({r.seconds:.2f} s){flag}")

    results = register_session(args.session, opts, on_frame=report, progress=not args.quiet, console=console)
    done = sum(r.status == "registered" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = [r for r in results if r.status == "failed"]
    console.print(f"registered {done}, already done {skipped}, failed {len(failed)} → "
                  f"{Path(args.session) / 'registered'}")
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(results)} capture(s) not registered "
                             f"({', '.join(r.capture_id for r in failed[:10])}); the others are done, and the "
                             f"failures are listed above and in {Path(args.session) / 'registered' / 'failed.yaml'}")
    return 0


def cmd_build_dataset(args: argparse.Namespace) -> int:
    from rich.console import Console

    from registration.build import build_dataset

    manifest = build_dataset([Path(s) for s in args.sessions], Path(args.out), args.test_fraction, args.seed,
                             progress=not args.quiet)
    sp = manifest["splits"]
    excluded = manifest.get("excluded") or {}
    for sample_id, reason in excluded.items():
        print(f"left out {sample_id}: {reason}", flush=True)
    Console().print(f"dataset {args.out}: train {sp['train']['count']} / test {sp['test']['count']} samples, "
                    f"{len(manifest['split']['train_scenes'])} / {len(manifest['split']['test_scenes'])} scenes "
                    f"(split by scene, seed {manifest['split']['seed']})")
    if excluded:
        raise PartialFailure(f"{len(excluded)} damaged capture(s) left out of {args.out} (listed above and in its "
                             "manifest.yaml under 'excluded'); the dataset holds the others")
    return 0


def cmd_import_dfd(args: argparse.Namespace) -> int:
    """`rig import-dfd SRC --out DIR [--tolerance-s 0.5] [--split NAME]`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from registration.importer import DEFAULT_CONFIG, SplitResult, build_manifest, import_split
    from rig.core.config import load_rig_config
    from rig.core.dataset import SPLITS, write_manifest
    from rig.core.datasets import DfdSplitDirs, locate_dfd_splits

    src = Path(args.src if hasattr(args, "src") else args.SRC).expanduser()
    out = Path(args.out).expanduser()
    tolerance_s = float(getattr(args, "tolerance_s", 0.5))
    split_arg = getattr(args, "split", None)
    if not tolerance_s >= 0:
        raise RigError(f"--tolerance-s: must be >= 0 s, got {tolerance_s}")
    if split_arg is not None and split_arg not in SPLITS:
        raise RigError(f"--split: must be one of {', '.join(SPLITS)}, got {split_arg!r}")
    cfg = load_rig_config(getattr(args, "config", None) or DEFAULT_CONFIG)
    size_wh = (int(cfg.output.size_px[0]), int(cfg.output.size_px[1]))
    found = locate_dfd_splits(src, split_arg)
    targets: list[tuple[DfdSplitDirs, str]] = []
    for dirs in found:
        name = split_arg or dirs.split
        if name not in SPLITS:
            raise RigError(f"{src}: cannot name the output split after the folder '{dirs.split}'; "
                           f"pass --split {'|'.join(SPLITS)}")
        targets.append((dirs, name))
    if out.exists() and not out.is_dir():
        raise RigError(f"--out {out}: exists and is not a folder")

    console = Console(stderr=False)
    results: list[SplitResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        for dirs, name in targets:
            results.append(import_split(dirs, out, name, tolerance_s, size_wh, progress))

    total_ok = sum(len(r.imported) + len(r.skipped) for r in results)
    for r in results:
        console.print(f"{r.split}: {len(r.imported)} imported, {len(r.skipped)} already there, "
                      f"{len(r.failed)} failed, {len(r.unmatched)} unmatched file(s) "
                      f"(tolerance {tolerance_s:g} s, largest RGB-depth gap "
                      f"{max((p['gap_s'] for p in r.pairs), default=0.0):.3f} s)")
        for u in r.unmatched:
            console.print(f"  unmatched: {u}")
        for f in r.failed:
            console.print(f"  failed: {f}")
    n_failed = sum(len(r.failed) for r in results)
    if total_ok == 0 and n_failed:  # pairing worked; reading the files did not — not a tolerance problem
        first = next(f for r in results for f in r.failed)
        raise PartialFailure(f"{src}: nothing imported: all {n_failed} paired sample(s) failed to read "
                             f"(first: {first})")
    if total_ok == 0:
        n_un = sum(len(r.unmatched) for r in results)
        raise RigError(f"{src}: nothing imported ({n_un} unmatched file(s) within {tolerance_s:g} s; "
                       "try a larger --tolerance-s)")
    path = write_manifest(out, build_manifest(out, results, cfg, src, tolerance_s, size_wh))
    console.print(f"wrote {total_ok} sample(s) under {out} ({path.name})")
    if n_failed:
        raise PartialFailure(f"{n_failed} of {n_failed + total_ok} sample(s) failed to import (listed above); "
                             f"the other {total_ok} are in {out}")
    return 0
