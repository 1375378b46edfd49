"""``rig synth``: render synthetic defocus for a folder of all-in-focus RGB + depth, or NYUv2.

Each input becomes ``<out>/<name>.png`` (the defocused image, 8-bit RGB) rendered with
:func:`rig.core.defocus.render_defocus`; ``<out>/manifest.yaml`` records the camera parameters and the
source. Runs on all cores (one process per image), writes every file atomically, and resumes: an
output that exists and decodes is skipped, and a folder rendered with other camera parameters is
refused. Also home of :func:`procedural_scene`, the small textured test scene used by the demo,
the benchmark and the tests.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from rig.core.errors import PartialFailure, RigError
from rig.core.procedural import procedural_scene  # noqa: F401 — re-exported (demo, bench, tests)

MANIFEST = "manifest.yaml"
# manifest keys that must agree for a resumed run (the rest describe the run)
_CAMERA_KEYS = ("focal_mm", "f_number", "pixel_um", "downsample", "focus_m", "psf", "rho", "k_cam_px",
                "max_step_px")


def colourise_depth(depth_m: np.ndarray, near_m: float | None = None, far_m: float | None = None) -> np.ndarray:
    """Depth (H, W) m -> (H, W, 3) uint8 RGB (turbo colour map over inverse depth; unknown = black)."""
    import cv2

    d = np.asarray(depth_m, dtype=np.float64)
    known = np.isfinite(d) & (d > 0)
    if not known.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo = near_m if near_m is not None else float(d[known].min())
    hi = far_m if far_m is not None else float(d[known].max())
    inv = np.where(known, 1.0 / np.where(known, d, 1.0), 0.0)
    t = (inv - 1.0 / hi) / max(1.0 / lo - 1.0 / hi, 1e-12)
    grey = np.clip(np.rint((1.0 - t) * 255.0), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb[~known] = 0
    return rgb


# ---------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class SynthParams:
    """Camera and renderer settings of one ``rig synth`` output folder (written to the manifest)."""

    focal_mm: float
    f_number: float
    pixel_um: float
    downsample: float
    focus_m: float
    psf: str
    rho: float
    k_cam_px: float
    max_step_px: float

    def lens(self):
        from rig.core.optics import Lens

        return Lens(focal_mm=self.focal_mm, f_number=self.f_number, pixel_um=self.pixel_um,
                    focus_m=self.focus_m, downsample=self.downsample)

    def camera_dict(self) -> dict[str, Any]:
        return {k: (round(v, 9) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def params_from_args(args: argparse.Namespace) -> tuple[SynthParams, Any]:
    """SynthParams from the config + CLI overrides; returns (params, config)."""
    from rig.core import optics
    from rig.core.config import load_rig_config

    cfg = load_rig_config(args.config)
    focus = cfg.dslr.focus_m if args.focus is None else float(args.focus)
    if focus * 1000.0 <= cfg.dslr.focal_mm:
        raise RigError(f"--focus: must exceed the focal length ({cfg.dslr.focal_mm:g} mm), got {focus:g} m")
    lens = cfg.lens("defocused", focus_m=focus)
    return SynthParams(focal_mm=lens.focal_mm, f_number=lens.f_number, pixel_um=lens.pixel_um,
                       downsample=float(lens.downsample), focus_m=lens.focus_m, psf=args.psf or cfg.blur.psf,
                       rho=cfg.blur.rho, k_cam_px=optics.k_cam_px(lens),
                       max_step_px=cfg.blur.max_layer_step_px), cfg


# ------------------------------------------------------------------------------------- manifest
def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of an output folder, or None when there is none. Unreadable -> RigError."""
    import yaml

    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RigError(f"{path}: unreadable manifest ({type(e).__name__}); move it away or use another --out") from None
    if not isinstance(data, dict):
        raise RigError(f"{path}: not a rig synth manifest; move it away or use another --out")
    return data


def write_manifest(out_dir: Path, data: dict[str, Any]) -> Path:
    """Atomically (temp file + rename) write ``<out>/manifest.yaml``."""
    import yaml

    from rig.core.imageio import atomic_write_bytes

    path = Path(out_dir) / MANIFEST
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode("utf-8"))
    return path


def _check_resume(out_dir: Path, params: SynthParams) -> None:
    old = read_manifest(out_dir)
    if old is None:
        return
    new = params.camera_dict()
    for key in _CAMERA_KEYS:
        a, b = old.get(key), new[key]
        same = (isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-6 * max(1.0, abs(b))) \
            or a == b
        if not same:
            raise RigError(f"{out_dir / MANIFEST}: this folder was rendered with {key}={a!r}, not {b!r}; "
                           "use another --out (or delete the folder) to render with other settings")


# ---------------------------------------------------------------------------------------- work
@dataclass
class Item:
    """One image to render: from files (rgb_path, depth_path) or from arrays (NYUv2)."""

    name: str
    rgb_path: Path | None = None
    depth_path: Path | None = None
    rgb: np.ndarray | None = None
    depth_m: np.ndarray | None = None


def output_ok(path: Path) -> bool:
    """True when ``path`` exists and decodes as an image (a finished output to skip on resume)."""
    import cv2

    if not path.is_file() or path.stat().st_size == 0:
        return False
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None


def render_item(item: Item, params: SynthParams, out_dir: Path, device: str = "cpu") -> tuple[str, str, str]:
    """Render one item and write ``<out>/<name>.png`` atomically -> (name, 'ok'|'error', message)."""
    from rig.core import defocus
    from rig.core.imageio import read_depth_m, read_rgb, write_image

    try:
        rgb = item.rgb if item.rgb is not None else read_rgb(item.rgb_path)  # type: ignore[arg-type]
        depth = item.depth_m if item.depth_m is not None else read_depth_m(item.depth_path)  # type: ignore[arg-type]
        if rgb.shape[:2] != depth.shape[:2]:
            where = item.depth_path or item.name
            raise RigError(f"{where}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
                           f"{rgb.shape[1]}x{rgb.shape[0]}")
        if not (np.isfinite(depth) & (depth > 0)).any():
            raise RigError(f"{item.depth_path or item.name}: depth has no valid pixel")
        kw = dict(psf=params.psf, rho=params.rho, max_step_px=params.max_step_px)
        if device == "cpu":
            out = defocus.render_defocus(rgb, depth, params.lens(), **kw)
        else:
            out = defocus.render_defocus_torch(rgb, depth, params.lens(), device=device, **kw)
        write_image(out_dir / f"{item.name}.png", out)
        return item.name, "ok", ""
    except RigError as e:
        return item.name, "error", str(e)
    except (ValueError, OSError) as e:
        return item.name, "error", f"{item.rgb_path or item.name}: {type(e).__name__}: {e}"


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per process; no oversubscription


def _render_star(job: tuple[Item, SynthParams, Path]) -> tuple[str, str, str]:
    return render_item(*job)


def folder_items(rgb_dir: Path, depth_dir: Path, tolerance_s: float) -> tuple[list[Item], list[str]]:
    """Pair the two folders (rig.core.datasets.pair_folder: by timestamp in the name, else by stem)."""
    from rig.core.datasets import pair_folder

    for flag, d in (("--rgb-dir", rgb_dir), ("--depth-dir", depth_dir)):
        if not d.is_dir():
            raise RigError(f"{flag} {d}: no such folder")
    pairs, unmatched = pair_folder(rgb_dir, depth_dir, tolerance_s)
    if not pairs:
        raise RigError(f"no RGB/depth pairs between {rgb_dir} and {depth_dir} ({len(unmatched)} unmatched files; "
                       f"names must share a stem or timestamps be within {tolerance_s:g} s)")
    return [Item(name=str(i), rgb_path=Path(r), depth_path=Path(d)) for i, r, d in pairs], unmatched


def nyu_items(args: argparse.Namespace) -> Iterator[Item]:
    from rig.core.datasets import load_nyu

    mat = Path(args.nyu)
    if not mat.is_file():
        raise RigError(f"--nyu {mat}: no such file")
    if args.splits and not Path(args.splits).is_file():
        raise RigError(f"--splits {args.splits}: no such file")
    for name, rgb, depth in load_nyu(mat, Path(args.splits) if args.splits else None, split=args.split, crop=True):
        yield Item(name=name, rgb=rgb, depth_m=depth)


def _bounded_imap(pool: Any, jobs: Iterable[Any], func: Any, in_flight: int) -> Iterator[Any]:
    """Like Pool.imap_unordered but never more than ``in_flight`` jobs queued (NYU arrays are big)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(func, (job,)))
        while len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def cmd_synth(args: argparse.Namespace) -> int:
    """Handler of ``rig synth`` (see the parser in rig/commands.py)."""
    import multiprocessing as mp

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rig import __version__

    console = Console(stderr=True)
    params, cfg = params_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise RigError("--limit: must be >= 1")
    if args.workers < 0:
        raise RigError("--workers: must be >= 0 (0 = all cores)")
    device = str(args.device)
    if device != "cpu":
        _check_torch_device(device)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise RigError(f"--out {out_dir}: exists and is not a folder")

    unmatched: list[str] = []
    total: int | None
    if args.rgb_dir:
        if not args.depth_dir:
            raise RigError("--rgb-dir needs --depth-dir (the 16-bit depth PNGs in mm)")
        items_list, unmatched = folder_items(Path(args.rgb_dir), Path(args.depth_dir), args.tolerance)
        if args.limit:
            items_list = items_list[: args.limit]
        items: Iterable[Item] = items_list
        total = len(items_list)
        source = f"folder rgb={args.rgb_dir} depth={args.depth_dir}"
    else:
        if args.depth_dir:
            raise RigError("--depth-dir goes with --rgb-dir, not --nyu")
        gen = nyu_items(args)
        first = next(gen, None)  # opens the file now: a bad file fails before anything is written
        if first is None:
            raise RigError(f"--nyu {args.nyu}: no images in split '{args.split}'")
        items = _limited(_chain_first(first, gen), args.limit)
        total = args.limit
        source = f"nyu {args.nyu} split={args.split}"

    _check_resume(out_dir, params)
    created_out = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {**params.camera_dict(), "source": source, "config": cfg.name,
                                "config_snapshot": cfg.snapshot_id(), "software": f"rig {__version__}",
                                "status": "incomplete", "count": _count_outputs(out_dir)}
    write_manifest(out_dir, manifest)
    if unmatched:
        console.print(f"[yellow]{len(unmatched)} files without a partner skipped[/yellow] (e.g. {unmatched[0]})")

    workers = args.workers or os.cpu_count() or 1
    done = skipped = 0
    failures: list[tuple[str, str]] = []
    t0 = time.perf_counter()

    def todo() -> Iterator[Item]:
        nonlocal skipped
        for it in items:
            if output_ok(out_dir / f"{it.name}.png"):
                skipped += 1
                progress.advance(task)
                continue
            yield it

    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=total)
        if device != "cpu" or workers == 1:
            results: Iterator[tuple[str, str, str]] = (render_item(it, params, out_dir, device) for it in todo())
            pool = None
        else:
            # forkserver, not fork: forking a process whose OpenCV thread pool is running deadlocks
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "cv2", "rig.core.defocus", "rig.synth"])
            pool = ctx.Pool(workers, initializer=_worker_init)
            results = _bounded_imap(pool, ((it, params, out_dir) for it in todo()), _render_star, 2 * workers)
        try:
            for name, status, msg in results:
                if status == "ok":
                    done += 1
                else:
                    failures.append((name, msg))
                progress.update(task, advance=1, description=name)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()

    manifest.update(status="complete" if not failures else "incomplete", count=_count_outputs(out_dir))
    if failures:
        manifest["failed"] = [f"{n}: {m}" for n, m in failures]
    if failures and manifest["count"] == 0:  # nothing rendered: leave nothing behind
        (out_dir / MANIFEST).unlink(missing_ok=True)
        if created_out and not any(out_dir.iterdir()):
            out_dir.rmdir()
    else:
        write_manifest(out_dir, manifest)
    dt = time.perf_counter() - t0
    print(f"synth: {done} rendered, {skipped} already done, {len(failures)} failed in {dt:.1f} s "
          f"-> {out_dir} (focus {params.focus_m:g} m, {params.psf}, k_cam {params.k_cam_px:.2f} px)")
    if failures:
        name, msg = failures[0]
        raise PartialFailure(f"{len(failures)} of {done + len(failures)} images failed (first: {msg}); "
                       "fix them and run the same command again to resume")
    return 0


def _chain_first(first: Item, rest: Iterator[Item]) -> Iterator[Item]:
    yield first
    yield from rest


def _limited(items: Iterator[Item], limit: int | None) -> Iterator[Item]:
    for i, it in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield it


def _count_outputs(out_dir: Path) -> int:
    return sum(1 for p in Path(out_dir).glob("*.png") if not p.name.startswith("."))


def _check_torch_device(device: str) -> None:
    try:
        import torch

        dev = torch.device(device)
    except (ImportError, RuntimeError) as e:
        raise RigError(f"--device {device}: not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
