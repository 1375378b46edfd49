"""``rig replay``: a recording fed back through registration and/or inference, as if live.

Recordings:

* a **capture session** (``rig capture``): ``register`` runs :func:`registration.register.register_capture`
  on each completed capture (the very function ``rig register`` uses); ``infer`` runs the defocused
  shot (area-resized to the output size) through the live loop's inference; ``all`` registers, then
  infers on the registered defocused image and scores the prediction against the registered depth
  (``metrics.jsonl``: abs rel, RMS, δ<1.25 over the measured pixels).
* a **live run** (``rig live``, ``live/`` sub-layout): ``infer`` only (it has no depth).
* a **RealSense recording** (``.db3`` / ``.bag``, :class:`acquisition.realsense_driver.RealSenseSensor`
  playback, every frame in order): the colour camera stands in for the DSLR — ``register`` reprojects
  each depth frame into the colour camera at the output size (:func:`registration.reproject.reproject_depth`,
  colour frame centre-cropped to the output aspect like the live loop's frames) and fills it
  (:func:`registration.fill.fill_depth`); ``infer`` runs the colour frames; ``all`` both + metrics.
* an **OpenNI recording** (``.oni``, :class:`acquisition.openni_driver.OpenNISensor` playback; the
  rig's own recordings play back in OpenNI2 2.2, see :mod:`acquisition.oni_file`). With a colour
  stream (recorded with ``color=True``) the colour camera stands in for the DSLR, as for RealSense:
  depth and colour frames are paired by timestamp (within half a frame period), the depth is taken as
  registered to the colour frame (``registration=True`` on the sensor; OpenNI2 records no
  depth -> colour extrinsics; the Dummy device's streams share one grid), resampled into the colour
  camera at the output size and filled; ``infer`` runs the colour frames; ``all`` both + metrics.
  Depth only: ``register`` reprojects it into the DSLR of ``--config`` (its calibration file, or the
  simulated rig's known geometry); there is no image, so no filling and no ``infer``/``all``.

The output folder (``--out``) is itself a session (session.yaml of the recording's config): the
re-registered frames in ``registered/<id>/`` (the layout of :mod:`registration.register`), the
inference in ``live/`` (:mod:`inference.live` layout: inputs, depth, std, views, journals), and
``metrics.jsonl`` with ``all``. Frames go through the live loop with blocking queues (nothing is
dropped, order kept); ``--speed X`` paces them at X times the recorded rate (0 = as fast as
possible). The same inputs give byte-identical outputs (onnxruntime's dropout generators are seeded
in the graph and a fresh engine is made per replay).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from rig.core.errors import RigError

if TYPE_CHECKING:
    from rig.core.config import RigConfig

THROUGH = ("register", "infer", "all")
METRICS_FILE = "metrics.jsonl"


@dataclass
class Recording:
    """What is being replayed."""

    kind: str  # 'session' | 'live' | 'realsense' | 'openni'
    path: Path
    config: "RigConfig"


def open_recording(path: str | Path, config: str | None = None) -> Recording:
    """Identify a recording by its path (one-line RigError when it is none of the known kinds)."""
    from rig.core.config import load_rig_config

    p = Path(path)
    if not p.exists():
        raise RigError(f"{p}: no such session folder or recording")
    suffix = p.suffix.lower()
    if p.is_file():
        cfg = load_rig_config(config or "simulated")
        if suffix in (".db3", ".bag"):
            return Recording("realsense", p, cfg)
        if suffix == ".oni":
            return Recording("openni", p, cfg)
        raise RigError(f"{p}: not a session folder, RealSense .db3/.bag or OpenNI .oni recording")
    from inference.live import LIVE_DIR
    from rig.core.session import Session

    session = Session.open(p)
    cfg = load_rig_config(config) if config else session.config
    kind = "live" if (p / LIVE_DIR / "frames.jsonl").is_file() else "session"
    return Recording(kind, p, cfg)


def _paced(items: Iterator[tuple[float | None, Any]], speed: float) -> Iterator[Any]:
    """Yield items at their recorded times (s) divided by ``speed``; speed <= 0: no waiting."""
    t0 = time.monotonic()
    first: float | None = None
    for t, item in items:
        if speed > 0 and t is not None:
            first = t if first is None else first
            wait = t0 + (t - first) / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield item


def _metrics(pred_m: np.ndarray, truth_m: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
    """abs rel, RMS (m), δ<1.25 over pixels with truth (measured ones when a mask is given)."""
    m = truth_m > 0
    if valid is not None:
        from rig.core.records import VALID_MEASURED

        m &= valid == VALID_MEASURED
    if not m.any():
        return {"pixels": 0}
    p, t = pred_m[m].astype(np.float64), truth_m[m].astype(np.float64)
    ratio = np.maximum(p / t, t / np.maximum(p, 1e-9))
    return {"pixels": int(m.sum()), "abs_rel": float(np.mean(np.abs(p - t) / t)),
            "rms_m": float(np.sqrt(np.mean((p - t) ** 2))), "delta1": float(np.mean(ratio < 1.25))}


def crop_intrinsics(k: Any, size: tuple[int, int]) -> Any:
    """Intrinsics of an image after :func:`inference.live.resize_to` (centre crop to the target aspect,
    then resampling to ``size`` = (w, h))."""
    from rig.core.records import Intrinsics

    tw, th = size
    w, h = k.width, k.height
    target, aspect = tw / th, w / h
    x0 = y0 = 0
    if abs(aspect / target - 1.0) > 0.01:
        if aspect > target:
            cw = int(round(h * target))
            x0 = (w - cw) // 2
            w = cw
        else:
            ch = int(round(w / target))
            y0 = (h - ch) // 2
            h = ch
    cropped = Intrinsics(width=w, height=h, fx=k.fx, fy=k.fy, cx=k.cx - x0, cy=k.cy - y0, dist=k.dist)
    return cropped.scaled(tw, th)


# ----------------------------------------------------------------------------------------------
# Frame generators per recording kind. Each yields (t_seconds | None, SourceFrame); with register,
# the registered frame is written to out/registered/<name>/ before the frame is yielded.


def _session_items(rec: Recording, through: str, out: Path, notes: list[str],
                   skipped: list[str]) -> Iterator[tuple[float | None, Any]]:
    from inference.live import SourceFrame
    from registration.register import RegisterOptions, register_capture, session_calibration, write_registered
    from rig.core.imageio import read_rgb
    from rig.core.session import Session, capture_file_path

    session = Session.open(rec.path)
    ids = [cid for cid, e in session.latest().items() if e["status"] == "ok"]
    if not ids:
        raise RigError(f"{rec.path}: no completed captures to replay")
    opts = RegisterOptions(size=tuple(rec.config.output.size_px), max_fill_px=rec.config.output.max_fill_px)  # type: ignore[arg-type]
    calib = session_calibration(rec.config, None) if through != "infer" else None
    for cid in ids:
        damages = session.check_capture(cid)  # SHA-256 + full decode: a damaged capture is never replayed
        if damages:
            skipped.append(f"{cid}: damaged ({'; '.join(f'{d.file}: {d.reason}' for d in damages)})")
            notes.append(f"skipped {skipped[-1]}")
            continue
        cap = session.read_capture(cid)
        raw = session.raw_dir(cap.capture_id)
        t = float(cap.t_monotonic_s) if cap.t_monotonic_s else None
        if through == "infer":
            yield t, SourceFrame(rgb=read_rgb(capture_file_path(raw, cap.defocused.file, session.path)),
                                 name=cap.capture_id, meta={"capture_id": cap.capture_id})
            continue
        try:
            frame, meta = register_capture(raw, cap, opts, calib)
        except RigError as e:
            notes.append(f"{cap.capture_id}: not registered ({e})")
            continue
        meta["replayed_from"] = str(Path(rec.path).resolve())
        write_registered(out / "registered" / cap.capture_id, frame, meta)
        yield t, SourceFrame(rgb=frame.defocused_rgb, name=cap.capture_id,
                             meta={"capture_id": cap.capture_id, "registered": f"registered/{cap.capture_id}"})


def _live_items(rec: Recording, through: str, notes: list[str],
                skipped: list[str]) -> Iterator[tuple[float | None, Any]]:
    from inference.live import read_live_frames
    from rig.live import read_checked_frame

    if through != "infer":
        raise RigError(f"{rec.path}: a live run has no depth to register; use --through infer")
    for e in read_live_frames(rec.path):
        try:
            frame = read_checked_frame(e["path"], f"live#{e['index']}")
        except RigError as err:
            skipped.append(str(err))
            notes.append(f"skipped {err}")
            continue
        frame.meta["live_index"] = int(e["index"])
        yield float(e["t_monotonic_s"]), frame


def _end_of_recording(exc: BaseException) -> bool:
    return "end of recording" in str(exc)


def _register_to_colour(out: Path, name: str, rgb: np.ndarray, depth: np.ndarray, k_depth: Any, target: Any,
                        depth_to_colour: Any, depth_scale_m: float, meta: dict[str, Any]) -> str:
    """Register one depth frame of an RGB-D recording into its colour camera, which stands in for the
    DSLR: reproject, fill, write ``out/registered/<name>`` (with ``meta`` beside the frame id and
    intrinsics); returns that folder relative to ``out``."""
    from registration.fill import fill_depth
    from registration.register import write_registered
    from registration.reproject import reproject_depth
    from rig.core.records import RegisteredFrame

    d_m = reproject_depth(depth, k_depth, target, depth_to_colour, depth_scale_m=depth_scale_m)
    filled, mask = fill_depth(rgb, d_m, method="fast")
    frame = RegisteredFrame(frame_id=name, defocused_rgb=rgb, all_in_focus_rgb=rgb, depth_m=filled,
                            valid=mask, intrinsics=target)
    write_registered(out / "registered" / name, frame, {"frame_id": name, "intrinsics": target.to_dict(), **meta})
    return f"registered/{name}"


def _realsense_items(rec: Recording, through: str, out: Path,
                     notes: list[str]) -> Iterator[tuple[float | None, Any]]:
    from acquisition.realsense_driver import RealSenseSensor
    from inference.live import SourceFrame, resize_to
    from rig.core.errors import DeviceError

    size = tuple(int(v) for v in rec.config.output.size_px)
    sensor = RealSenseSensor(playback=rec.path, color=True)
    try:
        sensor.start()
    except DeviceError as e:
        if "no color stream" not in str(e):
            raise
        if through != "register":
            raise RigError(f"{rec.path}: the recording has no colour stream to infer on; use --through register")
        sensor = RealSenseSensor(playback=rec.path)
        sensor.start()
    has_color = sensor.want["color"]
    try:
        scale = sensor.depth_scale_m()
        k_depth = sensor.intrinsics()
        target = to_color = None
        if has_color:
            target = crop_intrinsics(sensor.color_intrinsics(), size)  # type: ignore[arg-type]
            to_color = sensor.depth_to_color()
        else:
            raise RigError(f"{rec.path}: no colour stream: nothing to register the depth to")
        i = 0
        while True:
            try:
                depth = sensor.read_depth()
                color = sensor.read_color()
            except DeviceError as e:
                if _end_of_recording(e):
                    return
                raise
            t = sensor.last_frame["depth"].timestamp_ms / 1000.0
            name = f"rs{i:05d}"
            rgb = resize_to(np.asarray(color), size)  # type: ignore[arg-type]
            meta: dict[str, Any] = {"frame_number": sensor.last_frame["depth"].frame_number}
            if through != "infer":
                meta["registered"] = _register_to_colour(out, name, rgb, depth, k_depth, target, to_color, scale, {
                    "geometry_source": "realsense recording",
                    "replayed_from": str(Path(rec.path).resolve()), "frame_number": meta["frame_number"],
                    "depth": {"units": "mm (16-bit PNG), 0 = unknown", "frame": "RealSense colour camera"}})
            yield t, SourceFrame(rgb=rgb, name=name, meta=meta)
            i += 1
    finally:
        sensor.stop()


def pair_by_time(depth: Iterator[tuple[int, Any]], color: Iterator[tuple[int, Any]],
                 tolerance_us: int) -> Iterator[tuple[int, Any, Any]]:
    """(t_us, depth, colour) for each depth and colour frame (each iterator: (t_us, frame) in time
    order) at most ``tolerance_us`` apart; an unmatched frame is skipped. Reads depth, then colour."""
    d, c = next(depth, None), next(color, None)
    while d is not None and c is not None:
        if abs(d[0] - c[0]) <= tolerance_us:
            yield d[0], d[1], c[1]
            d, c = next(depth, None), next(color, None)
        elif d[0] < c[0]:
            d = next(depth, None)
        else:
            c = next(color, None)


def _oni_frames(sensor: Any, what: str, notes: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(t_us, frame) of one stream of a played-back .oni until its end (a stalled stream ends it too)."""
    from acquisition.protocols import DeviceTimeout
    from rig.core.errors import DeviceError

    read = sensor.read_depth if what == "depth" else sensor.read_color
    while True:
        try:
            frame = read()
        except DeviceTimeout as e:
            notes.append(f"{what} stream stopped early: {e}")
            return
        except DeviceError as e:
            if _end_of_recording(e):
                return
            raise
        yield sensor.last_timestamp_us[what], frame


def _open_oni(rec: Recording, through: str) -> Any:
    """The started playback sensor of an .oni (with its colour stream when it has one); one-line
    errors for a bad file and for infer/all on a depth-only recording."""
    from acquisition.openni_driver import OpenNISensor

    sensor = OpenNISensor.from_config(rec.config.depth_sensor, playback=rec.path, color=True)
    sensor.start()
    if sensor.color_intrinsics() is None and through != "register":
        sensor.stop()
        raise RigError(f"{rec.path}: an OpenNI recording without a colour stream holds depth only; use "
                       "--through register (or record with colour)")
    return sensor


def _openni_items(rec: Recording, through: str, out: Path, notes: list[str]) -> Iterator[tuple[float | None, Any]]:
    sensor = _open_oni(rec, through)
    try:
        if sensor.color_intrinsics() is not None:
            yield from _openni_color_items(rec, sensor, through, out, notes)
        else:
            yield from _openni_dslr_items(rec, sensor, out)
    finally:
        sensor.stop()


def _openni_color_items(rec: Recording, sensor: Any, through: str, out: Path,
                        notes: list[str]) -> Iterator[tuple[float | None, Any]]:
    """Colour .oni: the colour camera stands in for the DSLR (see the module docstring)."""
    from inference.live import SourceFrame, resize_to
    from rig.core.records import Extrinsics

    size = tuple(int(v) for v in rec.config.output.size_px)
    k_color = sensor.color_intrinsics()
    target = crop_intrinsics(k_color, size)  # type: ignore[arg-type]
    k_depth = k_color.scaled(sensor.width, sensor.height)  # registered depth: the colour camera's geometry
    same = Extrinsics.from_matrix(np.eye(4))
    scale = sensor.depth_scale_m()
    half_frame_us = int(0.5e6 / max(sensor.fps, 1))
    pairs = pair_by_time(_oni_frames(sensor, "depth", notes), _oni_frames(sensor, "colour", notes), half_frame_us)
    i = 0
    for t_us, depth, color in pairs:
        name = f"oni{i:05d}"
        rgb = resize_to(color, size)  # type: ignore[arg-type]
        meta: dict[str, Any] = {"t_us": t_us}
        if through != "infer":
            meta["registered"] = _register_to_colour(out, name, rgb, depth, k_depth, target, same, scale, {
                "t_us": t_us, "geometry_source": "OpenNI recording: depth registered to the colour camera",
                "replayed_from": str(Path(rec.path).resolve()),
                "depth": {"units": "mm (16-bit PNG), 0 = unknown", "frame": "OpenNI colour camera"}})
        yield t_us / 1e6, SourceFrame(rgb=rgb, name=name, meta=meta)
        i += 1
    if i == 0:
        raise RigError(f"{rec.path}: the recording plays back no depth and colour frame pair")


def _openni_dslr_items(rec: Recording, sensor: Any, out: Path) -> Iterator[tuple[float | None, Any]]:
    """Depth-only .oni: reprojected into the DSLR of the config (register only)."""
    from registration.register import write_registered
    from registration.reproject import reproject_depth
    from rig.core.errors import DeviceError
    from rig.core.records import VALID_MEASURED, VALID_UNKNOWN

    cfg = rec.config
    size = tuple(int(v) for v in cfg.output.size_px)
    if cfg.calibration.geometry is not None:
        from registration.calibration import geometry_from_calibration, load_calibration

        k_dslr, k_depth_cal, to_dslr = geometry_from_calibration(load_calibration(cfg.calibration.geometry))
        source = str(cfg.calibration.geometry)
    elif cfg.dslr.driver == "simulated":
        from acquisition import sim_geometry

        k_dslr, k_depth_cal, to_dslr = (sim_geometry.dslr_intrinsics(cfg), sim_geometry.depth_intrinsics(cfg),
                                        sim_geometry.depth_to_dslr(cfg))
        source = "simulated rig geometry"
    else:
        raise RigError(f"{cfg.path}: calibration.geometry is not set; an .oni replay needs the depth -> DSLR "
                       "calibration (rig calibrate geometry)")
    target = k_dslr.scaled(*size)
    k_depth = sensor.intrinsics()
    if (k_depth_cal.width, k_depth_cal.height) == (k_depth.width, k_depth.height):
        k_depth = k_depth_cal
    scale = sensor.depth_scale_m()
    i = 0
    while True:
        try:
            depth = sensor.read_depth()
        except DeviceError as e:
            if _end_of_recording(e) and i > 0:
                return
            if _end_of_recording(e):
                raise RigError(f"{rec.path}: the recording plays back no depth frames") from None
            raise
        name = f"oni{i:05d}"
        d_m = reproject_depth(depth, k_depth, target, to_dslr, depth_scale_m=scale)
        mask = np.where(d_m > 0, VALID_MEASURED, VALID_UNKNOWN).astype(np.uint8)
        write_registered(out / "registered" / name, _grey_frame(name, d_m, mask, target, size), {
            "frame_id": name, "intrinsics": target.to_dict(), "geometry_source": source,
            "replayed_from": str(Path(rec.path).resolve()),
            "depth": {"units": "mm (16-bit PNG), 0 = unknown", "frame": "DSLR", "fill": "none"}})
        yield sensor.last_timestamp_us["depth"] / 1e6, None
        i += 1


def _grey_frame(name: str, depth_m: np.ndarray, valid: np.ndarray, k: Any, size: tuple[int, ...]) -> Any:
    """A registered frame without an image (black placeholders)."""
    from rig.core.records import RegisteredFrame

    grey = np.zeros((size[1], size[0], 3), np.uint8)
    return RegisteredFrame(frame_id=name, defocused_rgb=grey, all_in_focus_rgb=grey, depth_m=depth_m,
                           valid=valid, intrinsics=k)


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class ReplayOptions:
    through: str = "infer"
    speed: float = 0.0
    model: str | None = None
    out: Path | None = None
    mc_samples: int = 0
    max_frames: int | None = None
    backend: str = "auto"
    threads: int = 0
    providers: tuple[str, ...] | None = None
    config: str | None = None


def default_out(rec: Recording, through: str) -> Path:
    stem = rec.path.stem if rec.path.is_file() else rec.path.name
    return rec.path.parent / f"{stem}-replay-{through}"


def run_replay(path: str | Path, opts: ReplayOptions, print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay a recording (see the module docstring); returns a summary dict."""
    from rig.core.session import Session

    if opts.through not in THROUGH:
        raise RigError(f"--through {opts.through!r}: choose {', '.join(THROUGH)}")
    if opts.speed < 0:
        raise RigError("--speed: must be >= 0 (0 = as fast as possible)")
    if opts.max_frames is not None and opts.max_frames < 1:
        raise RigError("--max-frames: must be >= 1")
    rec = open_recording(path, opts.config)
    out = Path(opts.out) if opts.out else default_out(rec, opts.through)
    if out.resolve() == rec.path.resolve():
        raise RigError(f"--out: must differ from the recording {rec.path}")
    if rec.kind == "openni":
        _open_oni(rec, opts.through).stop()  # a bad file is refused before any output folder exists
    session = Session.create(out, rec.config)
    try:
        summary = _replay_into(rec, opts, out, session, print_fn)
    except BaseException:
        session.discard_if_no_data(REPLAY_BOOKKEEPING)  # a failed replay leaves no empty output behind
        raise
    done = summary.get("registered", summary.get("frames_output", 0))
    if not done and session.discard_if_no_data(REPLAY_BOOKKEEPING):
        print_fn(f"nothing replayed; {out} not kept")
    return summary


REPLAY_BOOKKEEPING = ("live/live.yaml",)


def _replay_into(rec: Recording, opts: ReplayOptions, out: Path, session: Any,
                 print_fn: Callable[[str], None]) -> dict[str, Any]:
    """The replay itself, into the new output ``session`` (see :func:`run_replay`)."""
    from inference.live import LiveLoop, LiveRecorder

    notes: list[str] = []
    skipped: list[str] = []
    t0 = time.perf_counter()
    if rec.kind == "session":
        items = _session_items(rec, opts.through, out, notes, skipped)
    elif rec.kind == "live":
        items = _live_items(rec, opts.through, notes, skipped)
    elif rec.kind == "realsense":
        items = _realsense_items(rec, opts.through, out, notes)
    else:
        items = _openni_items(rec, opts.through, out, notes)
    summary: dict[str, Any] = {"recording": str(rec.path), "kind": rec.kind, "through": opts.through,
                               "out": str(out), "skipped": skipped}
    if opts.through == "register":
        n = 0
        paced = _paced(items, opts.speed)
        try:
            for _ in paced:
                n += 1
                if opts.max_frames is not None and n >= opts.max_frames:
                    break
        finally:
            paced.close()
            items.close()  # releases a played-back device now
        summary.update({"registered": n, "wall_s": time.perf_counter() - t0})
        for note in notes:
            print_fn(note)
        print_fn(f"registered {n} frame(s) from {rec.path} into {out / 'registered'}")
        return summary

    from rig.live import build_backend

    size = tuple(int(v) for v in rec.config.output.size_px)
    backend = build_backend(opts.model, backend=opts.backend, mc_samples=opts.mc_samples, size=size,  # type: ignore[arg-type]
                            threads=opts.threads, providers=opts.providers, cfg=rec.config)
    for note in backend.notes:
        print_fn(note)
    recorder = LiveRecorder(session.path, {"replay_of": str(rec.path), "kind": rec.kind, "through": opts.through,
                                           "model": backend.model, "onnx": backend.onnx,
                                           "engine": backend.description, "size_px": list(size),
                                           "mc_samples": int(opts.mc_samples), "speed": float(opts.speed)})
    sinks = []
    scores: list[dict[str, Any]] = []
    if opts.through == "all":
        from registration.register import read_registered

        def score(result: Any, view: np.ndarray) -> None:
            reg = result.frame.meta.get("registered")
            if not reg:
                return
            frame, _ = read_registered(out / reg)
            m = _metrics(result.depth_m, frame.depth_m, frame.valid)
            m.update({"frame": result.frame.name, "index": result.frame.index})
            scores.append(m)
            with open(out / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(m) + "\n")

        sinks.append(score)
    loop = LiveLoop(_paced(items, opts.speed), backend.infer, size=size, sinks=sinks, recorder=recorder,
                    drop=False, max_frames=opts.max_frames, queue_size=2)
    try:
        result = loop.run()
    finally:
        if backend.engine is not None:
            backend.engine.close()
    for note in notes:
        print_fn(note)
    summary.update(result.to_dict())
    summary.update({"engine": backend.description, "model": backend.model})
    print_fn(f"replayed {result.frames_output} frame(s) from {rec.path} through {opts.through} "
             f"({backend.description}): {result.fps_text()}, median inference "
             f"{(result.median_ms.get('infer') or 0):.0f} ms -> {out}")
    if scores:
        ok = [s for s in scores if s.get("pixels")]
        if ok:
            summary["mean_abs_rel"] = float(np.mean([s["abs_rel"] for s in ok]))
            summary["mean_rms_m"] = float(np.mean([s["rms_m"] for s in ok]))
            print_fn(f"vs registered depth ({len(ok)} frame(s)): abs rel {summary['mean_abs_rel']:.3f}, "
                     f"RMS {summary['mean_rms_m']:.3f} m ({METRICS_FILE})")
    return summary
