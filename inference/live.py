"""The live loop: frames from any source -> resize -> depth (+ MC-dropout uncertainty) -> view, saved.

Generic: it takes an iterator of frames and an inference function; where the frames come from (a
DSLR, the simulated rig, a recorded session, a folder) is wired in :mod:`rig.live`. It imports no
device library.

Stages run in threads joined by bounded queues::

    capture ──q_in──► infer ──q_out──► output (colourise, compose, save, publish) ──► display (main thread)
       └──q_rec──► recorder (every captured frame, lossless)

* ``drop=True`` (live): q_in and q_out hold at most ``queue_size`` frames and drop the OLDEST when a
  new one arrives, so the display never lags behind the camera; drops are counted. The recorder's
  queue never drops (it blocks the capture instead): every captured frame is saved.
* ``drop=False`` (replay, benchmarks): every queue blocks, every frame is processed, in order.

Stop: the source ends, ``max_frames`` frames were captured, :meth:`LiveLoop.stop` (Ctrl-C / SIGINT
in :func:`run_live`, 'q' in the window) — the stages then drain their queues, so every captured
frame is recorded and every inferred frame is saved before :meth:`LiveLoop.run` returns.

A live run is recorded as a session (:class:`rig.core.session.Session`: session.yaml with the rig config,
an empty captures.jsonl, raw/) with a ``live/`` sub-layout (:class:`LiveRecorder`)::

    live/live.yaml          the run: source, model, engine, size, MC samples, start; + summary at the end
    live/frames.jsonl       one line per captured frame (written after its file): index, file, source,
                            t_wall, t_monotonic_s, capture_s
    live/input/000000.png   the model input as inferred (RGB at the output size, lossless PNG)
    live/original/000000.*  the source's own file when it has one (a DSLR JPEG), else absent
    live/results.jsonl      one line per inferred frame: index, depth/std/view files, infer_s, latency_s
    live/depth/000000.png   depth, 16-bit PNG in millimetres (rig.core.imageio)
    live/depth/camera_intrinsic.json  the DSLR at the output size, Open3D's format (with intrinsics)
    live/ply/000000.ply     coloured point cloud in metres (with ``ply``)
    live/std/000000.png     MC-dropout standard deviation, 16-bit mm (with MC-dropout only)
    live/view/000000.jpg    the composite shown (input | depth | uncertainty)

``rig replay`` and ``rig live --source replay:SESSION`` read it back with :func:`read_live_frames`.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from inference.live_view import (colorize_fixed, compose_view, depth_mm_u16, encode_jpeg, encode_png,  # noqa: F401
                                  resize_to)
from rig.core.errors import RigError

LIVE_DIR = "live"
FRAMES_JOURNAL = "frames.jsonl"
RESULTS_JOURNAL = "results.jsonl"
LIVE_META = "live.yaml"
FRAME_NAME = "{:06d}"
DEFAULT_DEPTH_RANGE_M = (0.5, 10.0)
STAGES = ("capture", "resize", "infer", "render", "save", "record")


# ----------------------------------------------------------------------------------------------
# Records


@dataclass
class SourceFrame:
    """One frame from a source: RGB (H, W, 3) uint8 at any size, with where it came from."""

    rgb: np.ndarray
    name: str = ""
    original: bytes | None = None  # the source's own file (e.g. the DSLR's JPEG), recorded as is
    original_suffix: str = ".jpg"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Frame:
    """A captured frame at the model's input size."""

    index: int
    rgb: np.ndarray  # (H, W, 3) uint8 at the output size
    name: str
    t_monotonic_s: float  # when the source delivered it
    t_wall: str
    capture_s: float
    resize_s: float
    original: bytes | None = None
    original_suffix: str = ".jpg"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """Depth of one frame: depth_m, std_m (H, W) float32 metres (std None without MC-dropout)."""

    frame: Frame
    depth_m: np.ndarray
    std_m: np.ndarray | None
    infer_s: float


InferFn = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
Sink = Callable[[Result, np.ndarray], None]  # (result, composite view RGB) -> None


# ----------------------------------------------------------------------------------------------
# Queues and statistics


class StageQueue:
    """A bounded FIFO between two stages: drop-oldest (``drop=True``) or blocking on put.

    ``close()`` ends the stream: ``get`` returns None once the queue is closed and empty.
    """

    def __init__(self, maxsize: int, drop: bool) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = int(maxsize)
        self.drop = bool(drop)
        self.dropped = 0
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, abort: threading.Event | None = None) -> Any | None:
        """Append ``item``; returns the item dropped to make room (drop mode) or None."""
        with self._cond:
            victim = None
            if self.drop:
                if len(self._items) >= self.maxsize:
                    victim = self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if abort is not None and abort.is_set():
                        break
                    self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()
            return victim

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest item; None when closed and empty (or after ``timeout`` s with nothing)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(0.1 if left is None else min(0.1, left))
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)


class LiveStats:
    """Thread-safe counters and recent per-stage latencies (seconds)."""

    def __init__(self, window: int = 60) -> None:
        self._lock = threading.Lock()
        self.latency: dict[str, collections.deque[float]] = {s: collections.deque(maxlen=window) for s in STAGES}
        self.totals: dict[str, list[float]] = {s: [] for s in STAGES}
        self.end_to_end: collections.deque[float] = collections.deque(maxlen=window)
        self.output_times: collections.deque[float] = collections.deque(maxlen=window)
        self.counts = {"captured": 0, "inferred": 0, "output": 0, "recorded": 0}
        self.t_start = time.monotonic()
        self.t_first_output: float | None = None
        self.t_last_output: float | None = None

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.latency[stage].append(seconds)
            self.totals[stage].append(seconds)

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def output_done(self, latency_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts["output"] += 1
            self.end_to_end.append(latency_s)
            self.output_times.append(now)
            if self.t_first_output is None:
                self.t_first_output = now
            self.t_last_output = now

    def fps(self) -> float:
        """Output frames per second over the recent window."""
        with self._lock:
            t = list(self.output_times)
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def medians_ms(self) -> dict[str, float | None]:
        with self._lock:
            out = {s: (statistics.median(v) * 1e3 if v else None) for s, v in self.latency.items()}
            out["end_to_end"] = statistics.median(self.end_to_end) * 1e3 if self.end_to_end else None
        return out


@dataclass
class LiveSummary:
    """What a live run did (also written to live/live.yaml)."""

    frames_captured: int
    frames_inferred: int
    frames_output: int
    frames_recorded: int
    dropped: int
    wall_s: float
    fps: float  # output frames / time between the first and the last output
    median_ms: dict[str, float | None]
    stopped_by: str
    error: str | None = None

    def fps_text(self) -> str:
        """'12.34 FPS', or why there is no rate (fewer than two output frames span no time)."""
        if self.frames_output < 2:
            return f"FPS n/a ({self.frames_output} frame{'' if self.frames_output == 1 else 's'} output)"
        return f"{self.fps:.2f} FPS"

    def to_dict(self) -> dict[str, Any]:
        return {"frames_captured": self.frames_captured, "frames_inferred": self.frames_inferred,
                "frames_output": self.frames_output, "frames_recorded": self.frames_recorded,
                "dropped": self.dropped, "wall_s": round(self.wall_s, 4), "fps": round(self.fps, 4),
                "median_ms": {k: (None if v is None else round(v, 3)) for k, v in self.median_ms.items()},
                "stopped_by": self.stopped_by, "error": self.error}


# ----------------------------------------------------------------------------------------------
# Image helpers


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _append_line(path: Path, entry: dict[str, Any]) -> None:
    """One JSON line in a single write + fsync (a torn last line is skipped by the readers)."""
    from inference.live_sync import append_lines

    append_lines(path, [entry])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a journal (a torn last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn last line (no newline yet)
                continue
            raise RigError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


class LiveRecorder:
    """Writes a live run into ``session_dir/live/`` (see the module docstring for the layout).

    Every journal line is written after the files it names are durable (``self.journal``, a
    :class:`inference.live_sync.DurableJournal`): one fsync per file and line by default, in
    batches from a background thread while a :class:`LiveLoop` runs (``batch_sync``).
    stored_depth_png: depth / σ PNGs without compression (lossless; CPU left to inference).
    ``intrinsics`` (rig.core.records.Intrinsics at the output size): written as
    depth/camera_intrinsic.json, and with ``ply`` used for a point cloud per frame.
    """

    def __init__(self, session_dir: Path, run_info: dict[str, Any], batch_sync: bool = False,
                 stored_depth_png: bool = True, intrinsics: Any = None, ply: bool = False) -> None:
        import yaml

        from inference.live_sync import DurableJournal
        from rig.core.imageio import atomic_write_bytes

        self.journal = DurableJournal(batch=batch_sync)
        self.stored_depth_png = stored_depth_png

        self.root = Path(session_dir) / LIVE_DIR
        for sub in ("input", "depth", "view"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if (self.root / FRAMES_JOURNAL).exists():
            raise RigError(f"{self.root}: already holds a live run; choose a new --save folder")
        self.intrinsics = intrinsics
        self.ply = bool(ply and intrinsics is not None)
        if self.ply:
            (self.root / "ply").mkdir(exist_ok=True)
        if intrinsics is not None:
            from rig.core.pointcloud import O3D_INTRINSIC_NAME, write_o3d_intrinsics

            write_o3d_intrinsics(self.root / "depth" / O3D_INTRINSIC_NAME, intrinsics)
        self.info = dict(run_info, started=_utc_now())
        atomic_write_bytes(self.root / LIVE_META, yaml.safe_dump(self.info, sort_keys=False).encode())
        (self.root / FRAMES_JOURNAL).touch()
        (self.root / RESULTS_JOURNAL).touch()

    def record_frame(self, frame: Frame) -> None:
        stem = FRAME_NAME.format(frame.index)
        rel = f"input/{stem}.png"
        lossless_original = (frame.original is not None and frame.original_suffix == ".png"
                             and not frame.meta.get("resized", True))
        # a lossless source file that needed no resizing IS the model input: written as is
        files = [self.root / rel]
        self.journal.write_file(files[0], frame.original if lossless_original else encode_png(frame.rgb))
        entry: dict[str, Any] = {"index": frame.index, "file": rel, "source": frame.name, "t_wall": frame.t_wall,
                                 "t_monotonic_s": round(frame.t_monotonic_s, 6), "capture_s": round(frame.capture_s, 6),
                                 "size_px": [int(frame.rgb.shape[1]), int(frame.rgb.shape[0])]}
        if frame.original is not None and not lossless_original:
            orig = f"original/{stem}{frame.original_suffix}"
            (self.root / "original").mkdir(exist_ok=True)
            files.append(self.root / orig)
            self.journal.write_file(files[-1], frame.original)
            entry["original"] = orig
        meta = {k: v for k, v in frame.meta.items() if k != "resized"}
        if meta:
            entry["meta"] = meta
        self.journal.commit(self.root / FRAMES_JOURNAL, entry, files)

    def record_result(self, result: Result, view: np.ndarray, latency_s: float) -> None:
        stem = FRAME_NAME.format(result.frame.index)
        entry: dict[str, Any] = {"index": result.frame.index, "depth": f"depth/{stem}.png",
                                 "view": f"view/{stem}.jpg", "infer_s": round(result.infer_s, 6),
                                 "latency_s": round(latency_s, 6),
                                 "median_depth_m": round(float(np.median(result.depth_m[::4, ::4])), 4)}
        files = [self.root / entry["depth"]]
        self.journal.write_file(files[0], encode_png(depth_mm_u16(result.depth_m), stored=self.stored_depth_png))
        if result.std_m is not None:
            (self.root / "std").mkdir(exist_ok=True)
            entry["std"] = f"std/{stem}.png"
            entry["mean_std_m"] = round(float(result.std_m.mean()), 5)
            files.append(self.root / entry["std"])
            self.journal.write_file(files[-1], encode_png(depth_mm_u16(result.std_m), stored=self.stored_depth_png))
        files.append(self.root / entry["view"])
        self.journal.write_file(files[-1], encode_jpeg(view, 90))
        if self.ply:
            from rig.core.pointcloud import point_cloud_bytes

            entry["ply"] = f"ply/{stem}.ply"
            files.append(self.root / entry["ply"])
            self.journal.write_file(files[-1], point_cloud_bytes(result.depth_m, result.frame.rgb, self.intrinsics))
        self.journal.commit(self.root / RESULTS_JOURNAL, entry, files)

    def finish(self, summary: LiveSummary) -> None:
        import yaml

        from rig.core.imageio import atomic_write_bytes

        self.journal.flush()
        self.info["finished"] = _utc_now()
        self.info["summary"] = summary.to_dict()
        atomic_write_bytes(self.root / LIVE_META, yaml.safe_dump(self.info, sort_keys=False).encode())


def read_frame_file(path: Path, name: str) -> SourceFrame:
    """A SourceFrame from an image file; the file's bytes ride along as the original (a lossless PNG
    at the output size is then recorded as is instead of re-encoded)."""
    import cv2

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RigError(f"{path}: cannot read ({e.strerror or e})") from None
    buf = np.frombuffer(data, np.uint8)
    suffix = Path(path).suffix.lower()
    from rig.core.imageio import RAW_EXTS, read_raw_rgb

    if suffix in RAW_EXTS:  # camera RAW (NEF, DNG): demosaiced by LibRaw; the file rides along
        return SourceFrame(rgb=read_raw_rgb(Path(path)), name=name, original=data, original_suffix=suffix)
    img, plain_rgb = None, False
    if suffix == ".png":  # (JPEGs go through IMREAD_COLOR: it applies the EXIF orientation)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        plain_rgb = img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    if not plain_rgb:  # grey, 16-bit, alpha PNGs are converted: then not the file's own pixels
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise RigError(f"{path}: missing or not a decodable image")
    lossless = suffix == ".png" and plain_rgb
    return SourceFrame(rgb=cv2.cvtColor(img, cv2.COLOR_BGR2RGB), name=name,
                       original=data if lossless else None, original_suffix=suffix)


def read_live_frames(session_dir: Path) -> list[dict[str, Any]]:
    """The captured frames of a recorded live run (entries of live/frames.jsonl, paths absolute)."""
    root = Path(session_dir) / LIVE_DIR
    if not (root / FRAMES_JOURNAL).is_file():
        raise RigError(f"{session_dir}: no live run recorded here (no {LIVE_DIR}/{FRAMES_JOURNAL})")
    out = []
    for e in read_jsonl(root / FRAMES_JOURNAL):
        e = dict(e)
        e["path"] = root / e["file"]
        out.append(e)
    return out


# ----------------------------------------------------------------------------------------------
# The loop


class LiveLoop:
    """Threaded capture -> infer -> output pipeline (see the module docstring).

    source: iterator of RGB arrays or :class:`SourceFrame`. infer: rgb (H, W, 3) uint8 -> (depth_m,
    std_m | None). size: (width, height) the frames are resized to. sinks: called by the output
    stage with (result, composite view). recorder: saves every captured frame and every result.
    batch_sync: the recorder's fsyncs run in batches on a "sync" thread (off the inference, output
    and record threads; journal lines still follow their files to disk), else one per file inline.
    """

    def __init__(self, source: Iterable[Any], infer: InferFn, *, size: tuple[int, int] = (645, 432),
                 sinks: Iterable[Sink] = (), recorder: LiveRecorder | None = None, queue_size: int = 2,
                 drop: bool = True, max_frames: int | None = None,
                 depth_range_m: tuple[float, float] = DEFAULT_DEPTH_RANGE_M, std_max_m: float = 0.5,
                 record_queue: int = 64, batch_sync: bool = True) -> None:
        self.source = source
        self.infer = infer
        self.size = (int(size[0]), int(size[1]))
        self.sinks = list(sinks)
        self.recorder = recorder
        self.drop = drop
        self.max_frames = max_frames
        self.depth_range_m = depth_range_m
        self.std_max_m = std_max_m
        self.q_in = StageQueue(queue_size, drop)
        self.q_out = StageQueue(queue_size, drop)
        self.q_rec = StageQueue(record_queue, False)
        self.stats = LiveStats()
        self.latest_view: tuple[int, np.ndarray] | None = None  # (index, RGB) for the display
        self._view_lock = threading.Lock()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self.stopped_by = "end of source"
        self.batch_sync = batch_sync
        self._writers_left = 0  # output + record stages still running (the sync stage waits for them)
        self._writers_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the capture stage to stop; the other stages drain and finish."""
        if not self._stop.is_set():
            self.stopped_by = reason
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.stop(f"error: {exc}")

    # -- stages ----------------------------------------------------------------------------------
    def _capture(self) -> None:
        it: Iterator[Any] = iter(self.source)
        index = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and index >= self.max_frames:
                    self.stop("max frames")
                    break
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                sf = item if isinstance(item, SourceFrame) else SourceFrame(rgb=np.asarray(item), name=f"frame {index}")
                rgb = resize_to(sf.rgb, self.size)
                t2 = time.perf_counter()
                frame = Frame(index=index, rgb=rgb, name=sf.name, t_monotonic_s=time.monotonic(), t_wall=_utc_now(),
                              capture_s=t1 - t0, resize_s=t2 - t1, original=sf.original,
                              original_suffix=sf.original_suffix, meta=dict(sf.meta, resized=rgb is not sf.rgb))
                self.stats.add("capture", t1 - t0)
                self.stats.add("resize", t2 - t1)
                self.stats.count("captured")
                if self.recorder is not None:
                    self.q_rec.put(frame, abort=self._stop)  # blocking: every captured frame is recorded
                self.q_in.put(frame, abort=self._stop if not self.drop else None)
                index += 1
        except BaseException as e:  # noqa: BLE001 — reported by run()
            self._fail(e)
        finally:
            for obj in (it, self.source):  # a generator, and a source object with close() (a camera)
                close = getattr(obj, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001 — releasing must not hide the outcome
                        pass
            self.q_in.close()
            self.q_rec.close()

    def _infer(self) -> None:
        try:
            while True:
                frame = self.q_in.get()
                if frame is None:
                    break
                t0 = time.perf_counter()
                depth, std = self.infer(frame.rgb)
                dt = time.perf_counter() - t0
                self.stats.add("infer", dt)
                self.stats.count("inferred")
                self.q_out.put(Result(frame=frame, depth_m=depth, std_m=std, infer_s=dt))
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
            self._drain(self.q_in)
        finally:
            self.q_out.close()

    def _output(self) -> None:
        try:
            while True:
                result = self.q_out.get()
                if result is None:
                    break
                t0 = time.perf_counter()
                view = compose_view(result, self.depth_range_m, self.std_max_m)
                with self._view_lock:
                    self.latest_view = (result.frame.index, view)
                t1 = time.perf_counter()
                self.stats.add("render", t1 - t0)
                latency = time.monotonic() - result.frame.t_monotonic_s
                if self.recorder is not None:
                    self.recorder.record_result(result, view, latency)
                for sink in self.sinks:
                    sink(result, view)
                self.stats.add("save", time.perf_counter() - t1)
                self.stats.output_done(latency)
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
            self._drain(self.q_out)
        finally:
            self._writer_done()

    def _record(self) -> None:
        assert self.recorder is not None
        try:
            while True:
                frame = self.q_rec.get()
                if frame is None:
                    break
                t0 = time.perf_counter()
                self.recorder.record_frame(frame)
                self.stats.add("record", time.perf_counter() - t0)
                self.stats.count("recorded")
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
            self._drain(self.q_rec)
        finally:
            self._writer_done()

    def _writer_done(self) -> None:
        with self._writers_lock:
            self._writers_left -= 1

    def _writers_finished(self) -> bool:
        with self._writers_lock:
            return self._writers_left <= 0

    def _sync(self) -> None:
        assert self.recorder is not None
        try:
            self.recorder.journal.run(self._writers_finished)
        except BaseException as e:  # noqa: BLE001
            self._fail(e)

    @staticmethod
    def _drain(q: StageQueue) -> None:
        while q.get(timeout=0.0) is not None:
            pass

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [("capture", self._capture), ("infer", self._infer),
                                                         ("output", self._output)]
        self._writers_left = 1
        if self.recorder is not None:
            targets.append(("record", self._record))
            self._writers_left = 2
            if self.batch_sync:
                self.recorder.journal.batch = True
                targets.append(("sync", self._sync))
        self._threads = [threading.Thread(target=fn, name=f"live-{name}", daemon=True) for name, fn in targets]
        self.stats = LiveStats()
        for t in self._threads:
            t.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def get_view(self) -> tuple[int, np.ndarray] | None:
        with self._view_lock:
            return self.latest_view

    def summary(self) -> LiveSummary:
        s = self.stats
        span = (s.t_last_output - s.t_first_output) if s.t_first_output is not None and s.t_last_output else 0.0
        fps = (s.counts["output"] - 1) / span if span > 0 and s.counts["output"] > 1 else 0.0
        err = None
        if self._errors:
            e = self._errors[0]
            err = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return LiveSummary(frames_captured=s.counts["captured"], frames_inferred=s.counts["inferred"],
                           frames_output=s.counts["output"], frames_recorded=s.counts["recorded"],
                           dropped=self.q_in.dropped + self.q_out.dropped, wall_s=time.monotonic() - s.t_start,
                           fps=fps, median_ms=s.medians_ms(), stopped_by=self.stopped_by, error=err)

    def run(self, on_tick: Callable[["LiveLoop"], None] | None = None, tick_s: float = 0.03,
            handle_sigint: bool = True) -> LiveSummary:
        """Start the stages, call ``on_tick(self)`` every ``tick_s`` from this thread (display, panel)
        until they all finish, then finish the recording. Re-raises the first stage error.

        Ctrl-C (SIGINT) and SIGTERM, when called from the main thread, stop the capture; the queued
        frames are still inferred and saved (``stopped_by`` 'interrupted (Ctrl-C)' or 'terminated
        (SIGTERM)'). A second signal stops waiting (what is on disk stays valid) and raises
        KeyboardInterrupt or :class:`~rig.core.errors.Terminated`. A signal the parent process set
        to be ignored (a script's background job) stays ignored.
        """
        import signal

        from rig.core.errors import Terminated

        reasons = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
        old_handlers: dict[int, Any] = {}
        forced: BaseException | None = None

        def on_signal(signum: int, frame: Any) -> None:
            if self.stopping and self.stopped_by in reasons.values():
                raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt
            self.stop(reasons[signum])

        if handle_sigint and threading.current_thread() is threading.main_thread():
            for sig in reasons:
                if signal.getsignal(sig) != signal.SIG_IGN:
                    old_handlers[sig] = signal.signal(sig, on_signal)
        self.start()
        try:
            while self.alive():
                if on_tick is not None:
                    on_tick(self)
                self.join(tick_s)
        except KeyboardInterrupt as e:
            forced = e
            self.stop(reasons[signal.SIGTERM] if isinstance(e, Terminated) else reasons[signal.SIGINT])
            self.join(5.0)
        finally:
            for sig, old in old_handlers.items():
                signal.signal(sig, old)
        if on_tick is not None:
            on_tick(self)
        summary = self.summary()
        if self.recorder is not None:
            self.recorder.finish(summary)
        if forced is not None:
            raise forced
        if self._errors:
            e = self._errors[0]
            if isinstance(e, RigError):
                raise e
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise RigError(f"live loop stopped: {type(e).__name__}: {msg}") from e
        return summary


# ----------------------------------------------------------------------------------------------
# Panel


def stats_table(loop: LiveLoop, title: str = "rig live") -> Any:
    """A compact rich table (fits 80 columns): FPS, frames, drops and queue depths in the title,
    one row per stage with its median latency over the recent frames."""
    from rich.table import Table

    med = loop.stats.medians_ms()
    c = loop.stats.counts
    dropped = loop.q_in.dropped + loop.q_out.dropped
    t = Table(title=f"{title}: [bold]{loop.stats.fps():.1f} FPS[/bold]", expand=False,
              caption=f"frames {c['captured']}/{c['inferred']}/{c['output']} (captured/inferred/shown), "
                      f"dropped {dropped}, queues {len(loop.q_in)}/{len(loop.q_out)}/{len(loop.q_rec)}")
    t.add_column("stage")
    t.add_column("median ms", justify="right")
    labels = {"capture": "capture (source)", "resize": "resize to output size", "infer": "inference",
              "render": "colourise + compose", "save": "save results + publish", "record": "record input",
              "end_to_end": "capture -> shown"}
    for key, label in labels.items():
        v = med.get(key)
        t.add_row(label, "-" if v is None else f"{v:.1f}")
    return t
