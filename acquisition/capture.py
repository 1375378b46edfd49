"""Paired capture: per scene a depth burst + IR frame, an f/2.8 shot and an exposure-matched f/8 shot.

One scene = one capture id (``c00042`` for scene 42). Each attempt writes into its own temporary
folder ``raw/.tmp-<id>-a<n>-<pid>/``; every image is decoded once to verify it (a truncated
download is a :class:`~acquisition.protocols.TransferError`); ``capture.yaml`` is written last, the
folder is renamed to ``raw/<id>/`` and only then the journal line is appended. A failed attempt is
journaled (``retrying`` / ``failed``), its temporary folder removed, and retried after an
exponential backoff; a disconnected device is reopened before the next attempt. Nothing captured
earlier is touched, and a half-written capture never looks complete.

Device operations run in order on the calling thread; writing the depth PNGs (burst, fused median
of :func:`acquisition.protocols.fuse_depth_burst`, IR), the decode checks and the simulated ground
truth run on one background thread meanwhile, so file work overlaps the camera's exposure and
transfer time (``rig bench capture`` measures what remains).

Retried: busy, timeout, truncated transfer, disconnect. Not retried (stop the session with one
line): a setting the camera does not offer, any other device error, a full disk
(:class:`rig.core.session.StorageFull`), other write errors.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from acquisition.protocols import (DepthSensor, DeviceBusy, DeviceDisconnected, DeviceTimeout, Dslr,
                                   TransferError, fuse_depth_burst)
from rig.core.config import RigConfig
from rig.core.errors import DeviceError, RigError, Terminated
from rig.core.imageio import atomic_write_bytes, write_depth_mm, write_image
from rig.core.records import (ALL_IN_FOCUS_NAME, CAPTURE_META_NAME, DEFOCUSED_NAME, DEPTH_FRAME_NAME, DEPTH_FUSED_NAME,
                         IR_NAME, TRUTH_DIR, Capture, DepthBurst, DslrShot, capture_to_dict)
from rig.core.session import (Session, StorageFull, capture_id_for, is_disk_full, sha256_files, utc_now_iso,
                              verify_image_file)

RETRYABLE: tuple[type[DeviceError], ...] = (DeviceBusy, DeviceTimeout, TransferError, DeviceDisconnected)
BACKOFF_MAX_S = 30.0
TRUTH_DEPTH_NAME = "depth_dslr.png"  # raw/<id>/truth/: simulated ground truth at the output size


@dataclass
class SceneInfo:
    """What the operator (or the simulated rig) says about the scene in front of the rig."""

    scene_id: str
    extra: dict[str, Any] = field(default_factory=dict)


SceneHook = Callable[[int], SceneInfo]


def default_scene_hook(scene_index: int) -> SceneInfo:
    return SceneInfo(scene_id=f"scene{scene_index:05d}")


@dataclass
class CaptureResult:
    """How one scene went: ok or failed, after how many attempts, and the saved record."""

    capture_id: str
    scene_index: int
    scene_id: str
    status: str  # ok | failed
    attempts: int
    error: str | None
    elapsed_s: float
    capture: Capture | None = None
    bytes: int = 0
    device_s: float | None = None  # simulated devices only: time spent inside device operations


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _raw_to_mm(frame: np.ndarray, depth_scale_m: float) -> np.ndarray:
    """Sensor raw units -> uint16 millimetres (0 stays 0)."""
    if abs(depth_scale_m - 0.001) < 1e-12:
        return np.asarray(frame, np.uint16)
    mm = np.rint(np.asarray(frame, np.float64) * depth_scale_m * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


class PairCapture:
    """The capture procedure over an open session and a DSLR (+ optional depth sensor).

    ``prepare()`` opens the devices and applies the session-wide settings; ``capture_scene(i)``
    captures scene i with retries; ``close()`` releases the devices. ``backoff_s`` is the first
    retry delay (doubled each attempt); ``sleep`` is injectable for tests; ``config`` overrides the
    session's snapshot for this run (e.g. ``--fault-rate`` on resume). ``overlap_io=False`` does the
    file work inline (the sequential baseline of ``rig bench capture``).
    """

    def __init__(self, session: Session, dslr: Dslr, sensor: DepthSensor | None, *,
                 scene_hook: SceneHook = default_scene_hook, backoff_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, config: RigConfig | None = None,
                 overlap_io: bool = True) -> None:
        self.session = session
        self.cfg = config if config is not None else session.config
        self.dslr = dslr
        self.sensor = sensor
        self.scene_hook = scene_hook
        self.backoff_s = float(backoff_s)
        self.sleep = sleep
        self._opened = False
        self._reconnect = False
        self._pool: ThreadPoolExecutor | None = None
        self.last_background_s = 0.0  # file work of the last attempt done on the background thread
        self.overlap_io = bool(overlap_io)

    # -- devices -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        if self._pool is None and self.overlap_io:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-io")
        self.dslr.open()
        self._apply_session_settings()
        if self.sensor is not None:
            self.sensor.start()
        self._opened = True

    def _apply_session_settings(self) -> None:
        d = self.cfg.dslr
        settings = self.dslr.settings()
        if "capturetarget" in settings:
            self.dslr.set_capture_target(d.capture_target)
        if "imageformat" in settings:
            self.dslr.set_image_format(d.image_format)

    def _reconnect_devices(self) -> None:
        """Reopen both devices after a disconnect (the next attempt starts from a clean state)."""
        try:
            self.dslr.close()
        except DeviceError:
            pass
        self.dslr.open()
        self._apply_session_settings()
        if self.sensor is not None:
            try:
                self.sensor.stop()
            except DeviceError:
                pass
            self.sensor.start()

    def close(self) -> None:
        for fn in ((self.sensor.stop if self.sensor is not None else None), self.dslr.close):
            if fn is None:
                continue
            try:
                fn()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass
        self._opened = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def device_clock_s(self) -> float | None:
        """Seconds the simulated devices have spent in their own operations (None for real devices)."""
        rig = getattr(self.dslr, "rig", None)
        clock = getattr(rig, "clock", None)
        return None if clock is None else float(clock.device_s)

    # -- one scene -----------------------------------------------------------------------------------
    def capture_scene(self, scene_index: int) -> CaptureResult:
        """Capture scene ``scene_index`` with up to ``session.retries`` retries; every attempt is
        journaled. Raises StorageFull / RigError / KeyboardInterrupt to stop the session (the
        attempt's temporary folder is removed and an ``interrupted`` line journaled when possible)."""
        if not self._opened:
            self.prepare()
        cid = capture_id_for(scene_index)
        info = self.scene_hook(scene_index)
        retries = int(self.cfg.session.retries)
        t_first = time.perf_counter()
        dev0 = self.device_clock_s()
        last_error: str | None = None
        for attempt in range(1, retries + 2):
            t0_mono, t0_wall = time.monotonic(), utc_now_iso()
            tmp: Path | None = None

            def journal(status: str, error: str | None, **more: Any) -> None:
                self.session.append_journal({
                    "capture_id": cid, "scene_id": info.scene_id, "scene_index": int(scene_index),
                    "attempt": attempt, "status": status, "error": error, "t_start": t0_wall,
                    "t_end": utc_now_iso(), "t_start_monotonic_s": round(t0_mono, 6),
                    "duration_s": round(time.monotonic() - t0_mono, 4), **more})

            try:
                self.session.ensure_free_space(self.cfg.session.min_free_mb)
                if self._reconnect:
                    self._reconnect_devices()
                    self._reconnect = False
                tmp = self.session.attempt_dir(cid, attempt)
                capture = self._attempt(tmp, cid, scene_index, info, attempt, t0_mono, t0_wall)
                files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
                nbytes = sum((tmp / f).stat().st_size for f in files)
                sha256 = sha256_files(tmp, files)  # before the rename that publishes the capture
                self.session.commit_capture(tmp, cid)
                tmp = None
                journal("ok", None, files=files, bytes=nbytes, sha256=sha256)
                dev1 = self.device_clock_s()
                return CaptureResult(cid, scene_index, info.scene_id, "ok", attempt, None,
                                     time.perf_counter() - t_first, capture, nbytes,
                                     None if dev0 is None or dev1 is None else dev1 - dev0)
            except RETRYABLE as e:
                self._discard(tmp)
                last_error = _one_line(e)
                if isinstance(e, DeviceDisconnected):
                    self._reconnect = True
                final = attempt > retries
                try:
                    journal("failed" if final else "retrying", last_error)
                except OSError as je:
                    if is_disk_full(je):
                        raise self._disk_full(cid) from None
                    raise RigError(f"{self.session.journal_path}: cannot write: {je.strerror or je}") from None
                if not final:
                    self.sleep(min(BACKOFF_MAX_S, self.backoff_s * 2 ** (attempt - 1)))
            except (KeyboardInterrupt, StorageFull) as e:
                self._discard(tmp)
                why = ("terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted by the user"
                       if isinstance(e, KeyboardInterrupt) else _one_line(e))
                self._journal_quietly(journal, "interrupted", why)
                raise
            except OSError as e:
                self._discard(tmp)
                if is_disk_full(e):
                    self._journal_quietly(journal, "interrupted", "disk full")
                    raise self._disk_full(cid) from None
                self._journal_quietly(journal, "failed", _one_line(e))
                raise RigError(f"{self.session.path}: cannot write capture {cid}: {e.strerror or e}") from None
            except RigError as e:  # a setting not offered, another device error: retrying will not help
                self._discard(tmp)
                self._journal_quietly(journal, "failed", _one_line(e))
                raise
        dev1 = self.device_clock_s()
        return CaptureResult(cid, scene_index, info.scene_id, "failed", retries + 1, last_error,
                             time.perf_counter() - t_first, None, 0,
                             None if dev0 is None or dev1 is None else dev1 - dev0)

    def _disk_full(self, cid: str) -> StorageFull:
        n = sum(1 for x in self.session.latest().values() if x["status"] == "ok")
        return StorageFull(f"{self.session.path}: disk full while writing capture {cid}; stopped cleanly with "
                           f"{n} capture(s) intact — free space, then resume with --resume")

    @staticmethod
    def _discard(tmp: Path | None) -> None:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _journal_quietly(journal: Callable[..., None], status: str, error: str) -> None:
        try:
            journal(status, error)
        except OSError:
            pass  # the disk is full or gone: the folder state alone is still consistent

    # -- the procedure -----------------------------------------------------------------------------
    def _verify(self, path: Path) -> tuple[int, ...]:
        try:
            return verify_image_file(path)
        except ValueError as e:
            raise TransferError(f"{path.parent.name}/{e}") from None

    def _shot(self, dest: Path, jobs: "_Jobs") -> tuple[DslrShot, Any]:
        """Trigger + download; the decode check runs in the background (joined before commit)."""
        t_mono, t_wall = time.monotonic(), utc_now_iso()
        shot = self.dslr.capture(dest)
        path = Path(shot.path)
        shape = jobs.submit(self._verify, path)
        rel = str(path.relative_to(dest.parent))
        return (DslrShot(file=rel, f_number=float(shot.f_number), shutter_s=float(shot.shutter_s), iso=int(shot.iso),
                         exif=dict(shot.exif), t_monotonic_s=t_mono, t_wall=t_wall), shape)

    def _write_verified(self, path: Path, image: np.ndarray) -> None:
        write_image(path, image)
        self._verify(path)

    def _write_burst(self, tmp: Path, frames: list[np.ndarray], ir: np.ndarray | None, scale: float) -> None:
        for i, frame in enumerate(frames):
            self._write_verified(tmp / DEPTH_FRAME_NAME.format(i), _raw_to_mm(frame, scale))
        self._write_verified(tmp / DEPTH_FUSED_NAME, _raw_to_mm(fuse_depth_burst(frames), scale))
        if ir is not None:
            self._write_verified(tmp / IR_NAME, np.asarray(ir))

    def _write_truth(self, tmp: Path, rel: str, truth: Callable[..., np.ndarray]) -> None:
        write_depth_mm(tmp / rel, truth(output_size=True))
        self._verify(tmp / rel)

    def _attempt(self, tmp: Path, cid: str, scene_index: int, info: SceneInfo, attempt: int,
                 t0_mono: float, t0_wall: str) -> Capture:
        """One attempt into ``tmp``. Device operations run here in order (depth burst + IR, f/2.8,
        f/8); encoding, writing and decode-checking files run on a background thread meanwhile."""
        jobs = _Jobs(self._pool)
        try:
            with jobs:
                return self._attempt_steps(tmp, cid, scene_index, info, attempt, t0_mono, t0_wall, jobs)
        finally:
            self.last_background_s = jobs.busy_s

    def _attempt_steps(self, tmp: Path, cid: str, scene_index: int, info: SceneInfo, attempt: int,
                       t0_mono: float, t0_wall: str, jobs: "_Jobs") -> Capture:
        from acquisition import sim_geometry
        from acquisition.gphoto2_driver import matched_exposure

        cfg = self.cfg
        d = cfg.dslr
        depth: DepthBurst | None = None
        if self.sensor is not None:
            t_mono, t_wall = time.monotonic(), utc_now_iso()
            frames = [self.sensor.read_depth() for _ in range(cfg.depth_sensor.burst_frames)]
            ir = self.sensor.read_ir()
            scale = float(self.sensor.depth_scale_m())
            jobs.submit(self._write_burst, tmp, frames, ir, scale)
            depth = DepthBurst(files=[DEPTH_FRAME_NAME.format(i) for i in range(len(frames))],
                               fused_file=DEPTH_FUSED_NAME, intrinsics=self.sensor.intrinsics(), depth_scale_m=scale,
                               ir_file=IR_NAME if ir is not None else None, t_monotonic_s=t_mono, t_wall=t_wall)

        truth_files: list[str] = []
        truth = getattr(self.dslr, "ground_truth_depth_dslr", None)
        if callable(truth):  # the simulated rig's ground truth, for tests and the demo
            rel = f"{TRUTH_DIR}/{TRUTH_DEPTH_NAME}"
            jobs.submit(self._write_truth, tmp, rel, truth)
            truth_files.append(rel)

        settings = self.dslr.settings()
        n1 = self.dslr.set_aperture(d.f_number_defocused)
        iso1 = self.dslr.set_iso(d.iso) if "iso" in settings else None
        s1 = self.dslr.set_shutter(d.shutter_s)
        shot1, shape1 = self._shot(tmp / DEFOCUSED_NAME, jobs)

        n2 = self.dslr.set_aperture(d.f_number_all_in_focus)
        match = matched_exposure(self.dslr, s1, n1, n2, mode=d.exposure_match, iso=iso1)
        if d.exposure_match == "shutter":
            self.dslr.set_shutter(match.shutter_s)
        else:
            assert match.iso is not None
            self.dslr.set_iso(match.iso)
        shot2, _ = self._shot(tmp / ALL_IN_FOCUS_NAME, jobs)

        extra: dict[str, Any] = {"scene_index": int(scene_index), "attempt": attempt, **info.extra,
                                 "exposure_match": {"mode": match.mode, "target": match.target,
                                                    "choice": match.choice,
                                                    "residual_stops": round(match.residual_stops, 4)}}
        if truth_files:
            extra["truth_files"] = truth_files
        jobs.join()  # every file written and decoded; the first error is raised here
        shape = shape1.result()

        k = sim_geometry.dslr_intrinsics(cfg)  # nominal, from the lens model (calibration refines it)
        if len(shape) >= 2 and (shape[1], shape[0]) != (k.width, k.height):
            k = k.scaled(int(shape[1]), int(shape[0]))
        rig = getattr(self.sensor, "rig", None)
        known_extrinsics = getattr(rig, "depth_to_dslr", None)
        capture = Capture(capture_id=cid, scene_id=info.scene_id, defocused=shot1, all_in_focus=shot2, depth=depth,
                          config_snapshot_id=self.session.snapshot_id, dslr_intrinsics=k,
                          depth_to_dslr=known_extrinsics, focus_m=float(d.focus_m), t_monotonic_s=t0_mono,
                          t_wall=t0_wall, extra=extra)
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(capture_to_dict(capture), Dumper=dumper, sort_keys=False, allow_unicode=True)
        atomic_write_bytes(tmp / CAPTURE_META_NAME, text.encode())
        return capture


class _Jobs:
    """Background file jobs of one attempt: ``join()`` waits for all and raises the first error;
    leaving the block (also on an exception) always waits, so nothing writes into a removed folder.
    Without a pool the jobs run inline (errors raised at once)."""

    def __init__(self, pool: ThreadPoolExecutor | None) -> None:
        self.pool = pool
        self.futures: list[Future] = []
        self.busy_s = 0.0  # time the background thread spent on this attempt's jobs

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        def timed() -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.busy_s += time.perf_counter() - t0

        if self.pool is None:
            f: Future = Future()
            f.set_result(timed())
            return f
        f = self.pool.submit(timed)
        self.futures.append(f)
        return f

    def join(self) -> None:
        wait(self.futures)
        for f in self.futures:
            exc = f.exception()
            if exc is not None:
                raise exc

    def __enter__(self) -> "_Jobs":
        return self

    def __exit__(self, *exc: object) -> None:
        wait(self.futures)


@dataclass
class SessionRun:
    """Outcome of capturing a list of scenes."""

    results: list[CaptureResult]
    interrupted: bool = False
    terminated: bool = False  # the interruption was SIGTERM (rig.core.errors.Terminated), not Ctrl-C
    stop_error: RigError | None = None

    @property
    def ok(self) -> int:
        return sum(r.status == "ok" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)


def run_scenes(capture: PairCapture, scene_indices: list[int],
               on_result: Callable[[CaptureResult], None] | None = None,
               on_start: Callable[[int], None] | None = None) -> SessionRun:
    """Capture each scene in turn. A failed scene (retries exhausted) does not stop the run; a full
    disk, a non-retryable error or Ctrl-C does (returned in ``stop_error`` / ``interrupted``)."""
    run = SessionRun(results=[])
    try:
        for i in scene_indices:
            if on_start is not None:
                on_start(i)
            res = capture.capture_scene(i)
            run.results.append(res)
            if on_result is not None:
                on_result(res)
    except KeyboardInterrupt as e:
        run.interrupted = True
        run.terminated = isinstance(e, Terminated)
    except RigError as e:
        run.stop_error = e
    return run
