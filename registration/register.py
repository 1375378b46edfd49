"""``rig register SESSION``: every completed capture → a registered frame in the DSLR frame.

Per capture (``raw/<id>/`` → ``registered/<id>/``):

1. geometry: DSLR intrinsics, depth-sensor intrinsics and depth → DSLR extrinsics from the
   calibration file (``--calibration`` or the session config's ``calibration.geometry``, written by
   ``rig calibrate geometry``), else from ``capture.yaml`` (nominal / simulated-rig values);
2. both apertures resampled to the output size with INTER_AREA and undistorted identically
   (:mod:`registration.resample`), the f/2.8 ↔ f/8 alignment checked (``--align``);
3. the fused depth burst reprojected into the DSLR at the output size with a z-buffer
   (:mod:`registration.reproject`), holes filled edge-aware from the all-in-focus image
   (:mod:`registration.fill`), the mask telling measured / filled / unknown pixels apart;
4. written to ``registered/.tmp-<id>/`` — defocused.png, all_in_focus.png, depth.png (16-bit mm),
   valid.png, camera_intrinsic.json (Open3D's format), with ``ply`` depth.ply (a point cloud in
   metres coloured by the all-in-focus image), frame.yaml last — and renamed to ``registered/<id>/``: a folder with frame.yaml is
   complete, so a re-run skips it (resumable) unless ``--force``.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from rig.core import __version__
from rig.core.config import RigConfig
from rig.core.errors import RigError
from rig.core.imageio import atomic_write_bytes, read_depth_m, read_rgb, write_depth_mm, write_image
from rig.core.pointcloud import O3D_INTRINSIC_NAME, write_o3d_intrinsics, write_point_cloud
from rig.core.session import StorageFull, capture_file_path, is_disk_full
from rig.core.records import (VALID_FILLED, VALID_MEASURED, Capture, Extrinsics, Intrinsics, RegisteredFrame)

FRAME_FILES = {"defocused": "defocused.png", "all_in_focus": "all_in_focus.png", "depth": "depth.png",
               "valid": "valid.png"}
FRAME_META = "frame.yaml"
PLY_NAME = "depth.ply"
FILL_METHODS = ("fast", "reference", "none")


@dataclass(frozen=True)
class RegisterOptions:
    """How to register: output size (w, h), alignment mode/threshold, fill method, overrides."""

    size: tuple[int, int]
    align: str = "flag"
    align_threshold_px: float = 0.5
    fill: str = "fast"
    force: bool = False
    calibration: Path | None = None
    grow_px: float = 0.05
    max_fill_px: float | None = None  # output.max_fill_px: holes further from measured depth stay unknown
    ply: bool = False  # also write depth.ply (coloured point cloud in metres)


@dataclass(frozen=True)
class Geometry:
    dslr: Intrinsics  # at the calibration / nominal resolution (rescaled to the images as needed)
    depth: Intrinsics
    depth_to_dslr: Extrinsics
    source: str


@dataclass
class FrameResult:
    capture_id: str
    status: str  # "registered" | "skipped" | "failed"
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def capture_geometry(capture: Capture, calibration: Path | None) -> Geometry:
    """The geometry to register ``capture`` with: a calibration file when given, else capture.yaml's."""
    if calibration is not None:
        from registration.calibration import geometry_from_calibration, load_calibration

        dslr, depth, extr = geometry_from_calibration(load_calibration(calibration))
        if capture.depth is not None:
            w, h = capture.depth.intrinsics.width, capture.depth.intrinsics.height
            if (depth.width, depth.height) != (w, h):
                depth = depth.scaled(w, h)
        return Geometry(dslr=dslr, depth=depth, depth_to_dslr=extr, source=str(calibration))
    missing = [name for name, v in (("dslr_intrinsics", capture.dslr_intrinsics), ("depth", capture.depth),
                                    ("depth_to_dslr", capture.depth_to_dslr)) if v is None]
    if missing:
        raise RigError(f"capture {capture.capture_id}: capture.yaml has no {', '.join(missing)}; calibrate the rig "
                       "(`rig calibrate geometry`) and pass --calibration or set calibration.geometry")
    assert capture.dslr_intrinsics is not None and capture.depth is not None and capture.depth_to_dslr is not None
    return Geometry(dslr=capture.dslr_intrinsics, depth=capture.depth.intrinsics,
                    depth_to_dslr=capture.depth_to_dslr, source="capture.yaml")


def _read_depth_raw(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 2:
        raise RigError(f"{path}: missing or not a 16-bit depth PNG")
    return img


def register_capture(raw_dir: Path, capture: Capture, opts: RegisterOptions,
                     calibration: Path | None = None) -> tuple[RegisteredFrame, dict[str, Any]]:
    """Register one capture in memory; returns the frame and its frame.yaml metadata."""
    from registration.fill import fill_depth
    from registration.reproject import reproject_depth
    from registration.resample import prepare_pair

    t0 = time.perf_counter()
    if capture.depth is None:
        raise RigError(f"capture {capture.capture_id}: no depth burst (the rig had no depth sensor)")
    geo = capture_geometry(capture, calibration)
    root = raw_dir.parent.parent  # the session folder: `file:` paths never lead outside it
    defocused = read_rgb(capture_file_path(raw_dir, capture.defocused.file, root))
    aif = read_rgb(capture_file_path(raw_dir, capture.all_in_focus.file, root))
    if defocused.shape != aif.shape:
        raise RigError(f"capture {capture.capture_id}: the f/{capture.defocused.f_number:g} shot is "
                       f"{defocused.shape[1]}x{defocused.shape[0]} but the f/{capture.all_in_focus.f_number:g} shot "
                       f"is {aif.shape[1]}x{aif.shape[0]}; both apertures must be shot at the same size")
    pair = prepare_pair(defocused, aif, geo.dslr, opts.size, align=opts.align, threshold_px=opts.align_threshold_px)
    # files are always millimetres
    depth_raw = _read_depth_raw(capture_file_path(raw_dir, capture.depth.fused_file, root))
    if depth_raw.shape != (geo.depth.height, geo.depth.width):
        raise RigError(f"{raw_dir / capture.depth.fused_file}: {depth_raw.shape[1]}x{depth_raw.shape[0]} does not "
                       f"match the depth intrinsics {geo.depth.width}x{geo.depth.height}")
    depth_m = reproject_depth(depth_raw, geo.depth, pair.intrinsics, geo.depth_to_dslr, depth_scale_m=0.001,
                              grow_px=opts.grow_px)
    filled_m, mask = fill_depth(pair.all_in_focus, depth_m, method=opts.fill, max_fill_px=opts.max_fill_px)
    n = float(mask.size)
    meta: dict[str, Any] = {
        "frame_id": capture.capture_id,
        "capture_id": capture.capture_id,
        "scene_id": capture.scene_id,
        "focus_m": capture.focus_m,
        "f_number": {"defocused": float(capture.defocused.f_number),
                     "all_in_focus": float(capture.all_in_focus.f_number)},
        "intrinsics": pair.intrinsics.to_dict(),
        "pixel_convention": "OpenCV: pixel centres at integer coordinates",
        "geometry_source": geo.source,
        "alignment": pair.alignment_dict(),
        "depth": {"units": "mm (16-bit PNG), 0 = unknown", "frame": "DSLR (all-in-focus shot)",
                  "measured_fraction": round(float(np.count_nonzero(mask == VALID_MEASURED)) / n, 6),
                  "filled_fraction": round(float(np.count_nonzero(mask == VALID_FILLED)) / n, 6),
                  "unknown_fraction": round(float(np.count_nonzero(filled_m <= 0)) / n, 6),
                  "fill": opts.fill, "max_fill_px": opts.max_fill_px},
        "valid_codes": {"255": "measured", "128": "filled", "0": "unknown"},
        "notes": list(pair.notes),
        "software": f"deep-dfd-rig {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    frame = RegisteredFrame(frame_id=capture.capture_id, defocused_rgb=pair.defocused, all_in_focus_rgb=pair.all_in_focus,
                            depth_m=filled_m, valid=mask, intrinsics=pair.intrinsics)
    return frame, meta


def write_registered(out_dir: Path, frame: RegisteredFrame, meta: dict[str, Any], ply: bool = False) -> Path:
    """Write a frame into ``out_dir`` via a temporary sibling folder renamed into place (with
    ``ply`` also depth.ply: the measured and filled depth as a coloured point cloud in metres).

    An existing ``out_dir`` is replaced only after the new one is complete.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write_image(tmp / FRAME_FILES["defocused"], frame.defocused_rgb)
        write_image(tmp / FRAME_FILES["all_in_focus"], frame.all_in_focus_rgb)
        write_depth_mm(tmp / FRAME_FILES["depth"], frame.depth_m)
        write_image(tmp / FRAME_FILES["valid"], frame.valid.astype(np.uint8))
        write_o3d_intrinsics(tmp / O3D_INTRINSIC_NAME, frame.intrinsics)
        if ply:
            write_point_cloud(tmp / PLY_NAME, frame.depth_m, frame.all_in_focus_rgb, frame.intrinsics)
        atomic_write_bytes(tmp / FRAME_META, yaml.safe_dump(meta, sort_keys=False).encode())
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".old-{out_dir.name}-{os.getpid()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def is_registered(out_dir: Path) -> bool:
    """A registered frame is complete when its folder holds frame.yaml (written last, then renamed)."""
    return (Path(out_dir) / FRAME_META).is_file() and all((Path(out_dir) / f).is_file() for f in FRAME_FILES.values())


def read_registered(out_dir: Path) -> tuple[RegisteredFrame, dict[str, Any]]:
    """Read a registered frame folder back (RigError, one line, when incomplete)."""
    import cv2

    out_dir = Path(out_dir)
    if not is_registered(out_dir):
        raise RigError(f"{out_dir}: not a complete registered frame (missing {FRAME_META} or an image)")
    meta = yaml.safe_load((out_dir / FRAME_META).read_text())
    valid = cv2.imread(str(out_dir / FRAME_FILES["valid"]), cv2.IMREAD_UNCHANGED)
    frame = RegisteredFrame(frame_id=str(meta.get("frame_id", out_dir.name)),
                            defocused_rgb=read_rgb(out_dir / FRAME_FILES["defocused"]),
                            all_in_focus_rgb=read_rgb(out_dir / FRAME_FILES["all_in_focus"]),
                            depth_m=read_depth_m(out_dir / FRAME_FILES["depth"]), valid=valid,
                            intrinsics=Intrinsics.from_dict(meta["intrinsics"]))
    return frame, meta


def open_session(path: Path | str):  # -> rig.core.session.Session
    """Open a session folder; RigError (one line) when it is not one."""
    from rig.core.session import Session

    return Session.open(Path(path))


def session_calibration(cfg: RigConfig, override: Path | None) -> Path | None:
    """The geometry calibration file to use: --calibration, else the config's calibration.geometry."""
    path = override if override is not None else cfg.calibration.geometry
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise RigError(f"{path}: geometry calibration file not found (calibration.geometry / --calibration)")
    return path


def register_session(session_path: Path | str, opts: RegisterOptions | None = None,
                     on_frame: Callable[[FrameResult], None] | None = None,
                     progress: bool = False, console: Any = None) -> list[FrameResult]:
    """Register every completed capture of a session (skipping complete frames unless forced)."""
    session = open_session(session_path)
    cfg = session.config
    if opts is None:
        opts = RegisterOptions(size=tuple(cfg.output.size_px), max_fill_px=cfg.output.max_fill_px)  # type: ignore[arg-type]
    captures = [cid for cid, e in session.latest().items() if e["status"] == "ok"]
    if not captures:
        raise RigError(f"{session.path}: no completed captures to register (capture some with `rig capture`)")
    calib = session_calibration(cfg, opts.calibration)
    if calib is not None:
        from registration.calibration import load_calibration

        load_calibration(calib)  # a bad file stops the run here, before any capture, with one line
    results: list[FrameResult] = []
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]register[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=True, console=console)
        bar.start()
        task = bar.add_task("", total=len(captures))
    failures: dict[str, str] = {}
    try:
        for cid in captures:
            out_dir = session.registered_dir(cid)
            if bar is not None:
                bar.update(task, description=cid)
            t0 = time.perf_counter()
            res = _register_one(session, cid, out_dir, opts, calib)
            if res.status == "failed":
                failures[cid] = str(res.error)
            res.seconds = time.perf_counter() - t0
            results.append(res)
            if on_frame is not None:
                on_frame(res)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    _write_failures(session.path / "registered", failures)
    return results


FAILURES_FILE = "failed.yaml"  # registered/failed.yaml: the captures the last run could not register, with why


def _register_one(session: Any, cid: str, out_dir: Path, opts: RegisterOptions,
                  calib: Path | None) -> FrameResult:
    """Check one capture's files (SHA-256 + full decode), then register it; a damaged or unusable
    capture becomes a failed result with its reason. A full disk stops the run (StorageFull, exit 4)."""
    damages = session.check_capture(cid)
    if damages:
        return FrameResult(cid, "failed", error="damaged: " + "; ".join(f"{d.file}: {d.reason}" for d in damages))
    if is_registered(out_dir) and not opts.force:
        if opts.ply and not (out_dir / PLY_NAME).is_file():  # --ply on a frame done before
            done, _ = read_registered(out_dir)
            write_point_cloud(out_dir / PLY_NAME, done.depth_m, done.all_in_focus_rgb, done.intrinsics)
        return FrameResult(cid, "skipped")
    try:
        cap = session.read_capture(cid)
        frame, meta = register_capture(session.raw_dir(cid), cap, opts, calib)
        meta["session"] = str(Path(session.path).resolve())
        write_registered(out_dir, frame, meta, ply=opts.ply)
        return FrameResult(cid, "registered", meta=meta)
    except OSError as e:
        if is_disk_full(e):
            raise StorageFull(f"{session.path}: disk full while registering {cid}; registered frames so far are "
                              "intact — free space, then run the same command again (it resumes)") from None
        return FrameResult(cid, "failed", error=f"{e.strerror or e}")
    except (RigError, ValueError) as e:
        return FrameResult(cid, "failed", error=str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _write_failures(folder: Path, failures: dict[str, str]) -> None:
    """Mark the captures this run could not register (registered/failed.yaml; removed when none)."""
    path = Path(folder) / FAILURES_FILE
    if not failures:
        path.unlink(missing_ok=True)
        return
    try:
        atomic_write_bytes(path, yaml.safe_dump({"failed": failures}, sort_keys=True).encode())
    except OSError as e:
        if is_disk_full(e):
            raise StorageFull(f"{path}: disk full; registered frames so far are intact — free space, then run "
                              "the same command again") from None
        raise
