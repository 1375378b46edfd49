"""Intel RealSense (librealsense 2 / pyrealsense2) depth sensor: live, recording to .db3, playback.

One code path for a live camera and a recording: the sensor API (open the matching stream profiles on
each sensor, start them with a callback that copies frames into a queue). Why not ``rs.pipeline``:

* a pipeline playing a file with real-time off still drops frames (its frame queue is tiny and the
  file is read as fast as possible: 6 of 60 recorded frames reached ``wait_for_frames``), while a
  non-real-time playback device waits for each sensor callback to return, so a blocking queue gives
  every recorded frame, in order;
* librealsense 2.59 aborts the process (``playback_sensor::unregister_before_start_callback`` not
  implemented) when a pipeline records a played-back device, and a ``software_device`` added to a
  context is not listed by it, so the pipeline path could not be exercised without hardware.

Recording wraps the device in ``rs.recorder(path, device)`` — the record device that
``rs.config.enable_record_to_file`` uses internally. librealsense >= 2.58 writes rosbag2 (SQLite)
files and refuses any other suffix than ``.db3``; playback reads ``.db3`` and legacy ``.bag``.

Errors are one-line :class:`rig.core.errors.DeviceError` subclasses (see :mod:`acquisition.protocols`).
"""

from __future__ import annotations

import collections
import gc
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.protocols import DeviceDisconnected, DeviceTimeout, SettingRejected
from rig.core.errors import DeviceError
from rig.core.records import Extrinsics, Intrinsics

RECORD_SUFFIX = ".db3"
PLAYBACK_SUFFIXES = (".db3", ".bag")
DEPTH, INFRARED, COLOR = "depth", "infrared", "color"


def _rs() -> Any:
    """The pyrealsense2 module, or a one-line DeviceError saying how to install it."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # the wheel is missing or its native library failed to load
        raise DeviceError(f"pyrealsense2 not available ({exc}): pip install pyrealsense2") from None
    return rs


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- geometry conversion ---------------------------------------------------------------------------

def _fit_opencv_dist(xu: np.ndarray, yu: np.ndarray, xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
    """Least-squares OpenCV (k1, k2, p1, p2, k3) mapping undistorted (xu, yu) to distorted (xd, yd).

    OpenCV's model is linear in its coefficients:
    xd - xu = xu(k1 r² + k2 r⁴ + k3 r⁶) + 2 p1 xu yu + p2 (r² + 2 xu²), likewise for y.
    """
    r2 = xu * xu + yu * yu
    ax = np.stack([xu * r2, xu * r2**2, 2 * xu * yu, r2 + 2 * xu * xu, xu * r2**3], axis=1)
    ay = np.stack([yu * r2, yu * r2**2, r2 + 2 * yu * yu, 2 * xu * yu, yu * r2**3], axis=1)
    a = np.concatenate([ax, ay])
    b = np.concatenate([xd - xu, yd - yu])
    coeffs, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coeffs


def _opencv_distort(xu: np.ndarray, yu: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k1, k2, p1, p2, k3 = d
    r2 = xu * xu + yu * yu
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return (xu * radial + 2 * p1 * xu * yu + p2 * (r2 + 2 * xu * xu),
            yu * radial + p1 * (r2 + 2 * yu * yu) + 2 * p2 * xu * yu)


def intrinsics_from_rs(intr: Any, max_fit_error_px: float = 0.05) -> Intrinsics:
    """``rs.intrinsics`` -> :class:`Intrinsics` with OpenCV distortion (k1, k2, p1, p2, k3).

    ``none`` and ``brown_conrady`` map exactly (librealsense stores Brown-Conrady in OpenCV order).
    Any other model (modified/inverse Brown-Conrady, fisheye) is converted by fitting OpenCV's model
    to librealsense's own projection (``rs2_project_point_to_pixel``, the one ``rs.align`` uses) on a
    grid covering the image; a model OpenCV cannot express within ``max_fit_error_px`` raises
    DeviceError. All-zero Brown-Conrady coefficients (any variant) mean no distortion.
    """
    rs = _rs()
    base = dict(width=int(intr.width), height=int(intr.height), fx=float(intr.fx), fy=float(intr.fy),
                cx=float(intr.ppx), cy=float(intr.ppy))
    coeffs = [float(c) for c in intr.coeffs]
    brown_family = (rs.distortion.brown_conrady, rs.distortion.modified_brown_conrady,
                    rs.distortion.inverse_brown_conrady)
    if intr.model == rs.distortion.none or (intr.model in brown_family and not any(coeffs)):
        return Intrinsics(**base)
    if intr.model == rs.distortion.brown_conrady:
        return Intrinsics(**base, dist=tuple(coeffs[:5]))
    us, vs = np.meshgrid(np.linspace(0, intr.width - 1, 17), np.linspace(0, intr.height - 1, 13))
    xu = ((us - intr.ppx) / intr.fx).ravel()
    yu = ((vs - intr.ppy) / intr.fy).ravel()
    px = np.array([rs.rs2_project_point_to_pixel(intr, [float(x), float(y), 1.0]) for x, y in zip(xu, yu)])
    xd = (px[:, 0] - intr.ppx) / intr.fx
    yd = (px[:, 1] - intr.ppy) / intr.fy
    dist = _fit_opencv_dist(xu, yu, xd, yd)
    fx_, fy_ = _opencv_distort(xu, yu, dist)
    err_px = float(np.max(np.hypot((fx_ - xd) * intr.fx, (fy_ - yd) * intr.fy)))
    if not err_px <= max_fit_error_px:  # also catches NaN (a degenerate model)
        raise DeviceError(f"RealSense distortion model {intr.model} cannot be expressed with OpenCV's 5 "
                          f"coefficients (fit error {err_px:.2f} px); calibrate the stream with OpenCV instead")
    return Intrinsics(**base, dist=tuple(float(c) for c in dist))


def extrinsics_from_rs(ext: Any) -> Extrinsics:
    """``rs.extrinsics`` (rotation stored column-major, translation in metres) -> :class:`Extrinsics`."""
    rot = np.asarray(ext.rotation, dtype=np.float64).reshape(3, 3).T
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = np.asarray(ext.translation, dtype=np.float64)
    return Extrinsics.from_matrix(m)


# --- discovery ------------------------------------------------------------------------------------

def _name_serial(dev: Any) -> tuple[str, str]:
    rs = _rs()
    name = dev.get_info(rs.camera_info.name) if dev.supports(rs.camera_info.name) else "Intel RealSense"
    serial = dev.get_info(rs.camera_info.serial_number) if dev.supports(rs.camera_info.serial_number) else "?"
    return name, serial


def _describe(dev: Any) -> str:
    name, serial = _name_serial(dev)
    return f"{name} (serial {serial})"


def detect(context: Any = None) -> tuple[list[str], str]:
    """RealSense devices visible to librealsense as 'name (serial N)', and why none when empty.

    Only queries the context: never starts a pipeline (which blocks for seconds without a device).
    ``context`` defaults to a fresh ``rs.context()``; recordings loaded into it are listed too.
    """
    try:
        rs = _rs()
    except DeviceError as exc:
        return [], str(exc)
    ctx = context if context is not None else rs.context()
    try:
        devices = [_describe(d) for d in ctx.query_devices()]
    except RuntimeError as exc:
        return [], f"librealsense could not list devices: {_one_line(exc)}"
    if devices:
        return devices, ""
    return [], (f"no RealSense device found by librealsense {rs.__version__}: plug the camera into a USB 3 "
                "port and install librealsense's udev rules")


# --- the sensor -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameInfo:
    """Metadata of the last frame read from one stream."""

    stream: str
    frame_number: int
    timestamp_ms: float


@dataclass
class _Frame:
    stream: str
    data: np.ndarray
    frame_number: int
    timestamp_ms: float


# stream name -> (rs stream attribute, preferred index, rs format attribute)
_STREAMS = {DEPTH: ("depth", 0, "z16"), INFRARED: ("infrared", 1, "y8"), COLOR: ("color", 0, "rgb8")}


class RealSenseSensor:
    """A RealSense camera (live), a camera being recorded to ``.db3``, or a recording played back.

    Live: ``RealSenseSensor(640, 480, 30, ir=True, serial=None)`` opens the first camera (or the one
    with ``serial``); ``device=`` takes an ``rs.device`` directly (e.g. a ``software_device``).
    ``record_to='x.db3'`` records every streamed frame. Playback: ``RealSenseSensor(playback='x.db3')``
    replays the file deterministically (real time off, every frame in order, end -> DeviceError);
    its streams and sizes are those recorded, ``width``/``height``/``fps`` are ignored.

    Frames: ``read_depth()`` (H, W) uint16 raw units (x ``depth_scale_m()`` = metres), ``read_ir()``
    (H, W) uint8 or None, ``read_color()`` (H, W, 3) uint8 RGB or None. Frames of a stream that is not
    read are kept up to ``queue_frames`` (oldest dropped); a live camera keeps the latest
    ``queue_frames`` per stream when reading falls behind, a recording never drops (it waits).
    """

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30, *, ir: bool = False,
                 color: bool = False, color_size: tuple[int, int] | None = None, serial: str | None = None,
                 device: Any = None, record_to: str | Path | None = None, playback: str | Path | None = None,
                 timeout_s: float = 2.0, queue_frames: int = 8) -> None:
        if playback is not None and (record_to is not None or device is not None or serial is not None):
            raise DeviceError("RealSense: playback cannot be combined with record_to, device or serial")
        if queue_frames < 1:
            raise ValueError("queue_frames must be >= 1")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.color_size = tuple(color_size) if color_size else (self.width, self.height)
        self.want = {DEPTH: True, INFRARED: bool(ir), COLOR: bool(color)}
        self.serial = serial
        self.record_to = Path(record_to) if record_to is not None else None
        self.playback_path = Path(playback) if playback is not None else None
        self.timeout_s = float(timeout_s)
        self.queue_frames = int(queue_frames)
        self.model = "Intel RealSense"
        self.last_frame: dict[str, FrameInfo] = {}
        self._device_arg = device
        self._ctx: Any = None
        self._device: Any = None
        self._playback: Any = None
        self._recorder: Any = None
        self._sensors: list[Any] = []
        self._profiles: dict[str, Any] = {}
        self._depth_scale_m: float | None = None
        self._queue: queue.Queue[_Frame] = queue.Queue(maxsize=self.queue_frames)
        self._pending: dict[str, collections.deque[_Frame]] = {}
        self._closing = threading.Event()
        self._callback_error: str | None = None
        self._resumer: threading.Thread | None = None
        self._started = False

    @classmethod
    def from_config(cls, depth_cfg: Any, **kwargs: Any) -> "RealSenseSensor":
        """From a rig config's ``depth_sensor`` section (size_px, fps); kwargs as in the constructor."""
        w, h = depth_cfg.size_px
        return cls(int(w), int(h), int(depth_cfg.fps), **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> "RealSenseSensor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Open the device (or recording), select the streams, start streaming (and recording)."""
        if self._started:
            return
        rs = _rs()
        self._closing.clear()
        self._callback_error = None
        # live: room for queue_frames of every stream (oldest dropped); playback: the reader's pace
        n_streams = sum(self.want.values())
        self._queue = queue.Queue(maxsize=self.queue_frames * (1 if self.playback_path else n_streams))
        self._pending = {k: collections.deque(maxlen=self.queue_frames) for k in _STREAMS}
        self.last_frame = {}
        try:
            if self.playback_path is not None:
                self._open_playback(rs)
            else:
                self._open_live(rs)
            by_sensor = self._select_profiles(rs)
            self._depth_scale_m = self._find_depth_scale(rs)
            for sensor, profiles in by_sensor:
                sensor.open(profiles)
                self._sensors.append(sensor)
            if self._playback is not None:
                self._playback.pause()  # nothing is read before every sensor has started
            for sensor in self._sensors:
                sensor.start(self._on_frame)
            if self._playback is not None:
                # resume() returns only once the reading thread is idle (end of file, or a 10 s
                # timeout); the reader holds that thread back, so resume off the caller's thread
                self._resumer = threading.Thread(target=self._resume_playback, args=(self._playback,),
                                                 name="realsense-playback-resume", daemon=True)
                self._resumer.start()
        except RuntimeError as exc:
            self._shutdown()
            raise DeviceError(f"RealSense {self.model}: cannot start streaming: {_one_line(exc)}") from None
        except DeviceError:
            self._shutdown()
            raise
        self._started = True

    def stop(self) -> None:
        """Stop streaming; a recording is finalised (its file closed) before this returns."""
        if self._started or self._device is not None:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closing.set()  # frame callbacks stop waiting for the reader
        for sensor in self._sensors:
            try:
                sensor.stop()
            except RuntimeError:
                pass  # never started
        if self._resumer is not None:
            self._resumer.join(timeout=15.0)
            self._resumer = None
        self._release()
        self._started = False

    def _resume_playback(self, playback: Any) -> None:
        try:
            playback.resume()
        except Exception as exc:  # noqa: BLE001 - reported by the next read
            self._callback_error = f"playback resume failed: {_one_line(exc)}"

    def _release(self) -> None:
        for sensor in self._sensors:
            try:
                sensor.close()
            except RuntimeError:
                pass
        if self._recorder is not None:
            try:
                self._recorder.pause()
            except RuntimeError:
                pass
        # the .db3 is written completely only when the record device is destroyed
        self._sensors, self._profiles = [], {}
        self._recorder = self._device = self._playback = self._ctx = None
        gc.collect()

    def _open_playback(self, rs: Any) -> None:
        path = self.playback_path
        assert path is not None
        if path.suffix.lower() not in PLAYBACK_SUFFIXES:
            raise DeviceError(f"{path}: not a RealSense recording (expected .db3 or .bag)")
        if not path.is_file():
            raise DeviceError(f"{path}: RealSense recording not found")
        self._ctx = rs.context()
        try:
            dev = self._ctx.load_device(str(path))
        except RuntimeError as exc:
            raise DeviceError(f"{path}: unreadable RealSense recording ({_one_line(exc)})") from None
        self._device = dev
        self._playback = dev.as_playback()
        self._playback.set_real_time(False)  # wait for each frame to be taken: deterministic
        self.model, self.serial = _name_serial(dev)

    def _open_live(self, rs: Any) -> None:
        if self.record_to is not None and self.record_to.suffix.lower() != RECORD_SUFFIX:
            raise SettingRejected(f"{self.record_to}: RealSense recordings must end in {RECORD_SUFFIX} "
                                  "(librealsense >= 2.58 writes rosbag2/SQLite)")
        dev = self._device_arg
        if dev is None:
            self._ctx = rs.context()
            devices = list(self._ctx.query_devices())
            if self.serial is not None:
                devices = [d for d in devices if d.supports(rs.camera_info.serial_number)
                           and d.get_info(rs.camera_info.serial_number) == self.serial]
            if not devices:
                found, reason = detect(self._ctx)
                if self.serial is not None and found:
                    raise DeviceError(f"no RealSense device with serial {self.serial}; found {', '.join(found)}")
                raise DeviceError(reason or "no RealSense device found")
            dev = devices[0]
        self.model, self.serial = _name_serial(dev)
        self._device = dev
        if self.record_to is not None:
            self.record_to.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._recorder = rs.recorder(str(self.record_to), dev)
            except RuntimeError as exc:
                raise DeviceError(f"{self.record_to}: cannot record: {_one_line(exc)}") from None

    def _select_profiles(self, rs: Any) -> list[tuple[Any, list[Any]]]:
        """Match each wanted stream to one profile; returns [(sensor, [profiles])] to open."""
        source = self._recorder if self._recorder is not None else self._device
        sensors = list(source.query_sensors())
        chosen: dict[int, tuple[Any, list[Any]]] = {}
        for name, wanted in self.want.items():
            if not wanted:
                continue
            stream_attr, index, fmt_attr = _STREAMS[name]
            stream_type, fmt = getattr(rs.stream, stream_attr), getattr(rs.format, fmt_attr)
            size = self.color_size if name == COLOR else (self.width, self.height)
            candidates = []
            for si, sensor in enumerate(sensors):
                for p in sensor.get_stream_profiles():
                    if p.stream_type() == stream_type and p.is_video_stream_profile():
                        candidates.append((si, sensor, p.as_video_stream_profile()))
            if self._playback is not None:  # a recording: take the stream as recorded
                match = list(candidates)
            else:
                match = [c for c in candidates if c[2].format() == fmt and c[2].fps() == self.fps
                         and (c[2].width(), c[2].height()) == size]
            match.sort(key=lambda c: c[2].stream_index() != index)  # IR: the left imager (index 1)
            if not match:
                if self._playback is not None:
                    raise DeviceError(f"{self.playback_path}: the recording has no {name} stream")
                offered = sorted({f"{c[2].width()}x{c[2].height()}@{c[2].fps()} {c[2].format()}" for c in candidates})
                raise SettingRejected(f"RealSense {self.model}: {name} {size[0]}x{size[1]}@{self.fps} "
                                      f"{fmt_attr} not offered; offered: {', '.join(offered) or 'none'}")
            si, sensor, prof = match[0]
            chosen.setdefault(si, (sensor, []))[1].append(prof)
            self._profiles[name] = prof
        return list(chosen.values())

    def _find_depth_scale(self, rs: Any) -> float:
        source = self._recorder if self._recorder is not None else self._device
        for sensor in source.query_sensors():
            if sensor.supports(rs.option.depth_units):
                return float(sensor.get_option(rs.option.depth_units))
        try:
            return float(self._device.first_depth_sensor().get_depth_scale())
        except RuntimeError:
            raise DeviceError(f"RealSense {self.model}: no depth sensor reports its depth units") from None

    # -- frames -------------------------------------------------------------------------------------

    def _on_frame(self, frame: Any) -> None:
        """librealsense callback: copy the pixels out and queue them (never raises)."""
        try:
            rs = _rs()
            st = frame.get_profile().stream_type()
            name = COLOR if st == rs.stream.color else INFRARED if st == rs.stream.infrared else DEPTH
            item = _Frame(name, np.asanyarray(frame.get_data()).copy(), int(frame.get_frame_number()),
                          float(frame.get_timestamp()))
            if self._playback is not None:
                while not self._closing.is_set():  # back-pressure: playback waits for the reader
                    try:
                        self._queue.put(item, timeout=0.05)
                        return
                    except queue.Full:
                        continue
            else:
                while True:
                    try:
                        self._queue.put_nowait(item)
                        return
                    except queue.Full:  # live: drop the oldest frame
                        try:
                            self._queue.get_nowait()
                        except queue.Empty:
                            pass
        except Exception as exc:  # noqa: BLE001 - an exception must not escape into librealsense
            self._callback_error = _one_line(exc)

    def _finished(self) -> bool:
        if self._playback is None:
            return False
        return self._playback.current_status() == _rs().playback_status.stopped

    def _next(self, name: str) -> _Frame:
        """The next frame of stream ``name``; frames of other streams met on the way are kept."""
        if not self._started:
            raise DeviceError("RealSense sensor not started: call start() first")
        if not self.want[name]:
            raise DeviceError(f"RealSense: the {name} stream was not enabled")
        pending = self._pending[name]
        if pending:
            return pending.popleft()
        deadline = time.monotonic() + self.timeout_s
        while True:
            item = self._get_queued(name, deadline)
            if item.stream == name:
                return item
            self._pending[item.stream].append(item)

    def _get_queued(self, name: str, deadline: float) -> _Frame:
        while True:
            try:
                return self._queue.get(timeout=0.02)
            except queue.Empty:
                pass
            if self._callback_error:
                raise DeviceError(f"RealSense {self.model}: frame callback failed: {self._callback_error}")
            if self._finished():  # the file is read; whatever the callbacks queued is already there
                try:
                    return self._queue.get(timeout=0.05)
                except queue.Empty:
                    raise DeviceError(f"{self.playback_path}: end of recording (no more {name} frames)") from None
            if time.monotonic() > deadline:
                if self._device is not None and not self._device.is_connected():
                    raise DeviceDisconnected(f"RealSense {self.model} disconnected")
                raise DeviceTimeout(f"RealSense {self.model}: no {name} frame within {self.timeout_s:g} s")

    def _read(self, name: str) -> np.ndarray:
        item = self._next(name)
        self.last_frame[name] = FrameInfo(name, item.frame_number, item.timestamp_ms)
        return item.data

    def read_depth(self) -> np.ndarray:
        """Next depth frame, (H, W) uint16 in raw units (0 = no measurement)."""
        return self._read(DEPTH)

    def read_ir(self) -> np.ndarray | None:
        """Next IR frame (H, W) uint8, or None when the IR stream is not enabled."""
        return self._read(INFRARED) if self.want[INFRARED] else None

    def read_color(self) -> np.ndarray | None:
        """Next colour frame (H, W, 3) uint8 RGB, or None when the colour stream is not enabled."""
        return self._read(COLOR) if self.want[COLOR] else None

    # -- geometry -----------------------------------------------------------------------------------

    def _profile(self, name: str) -> Any:
        if name not in self._profiles:
            raise DeviceError(f"RealSense: no {name} stream (start() first, with that stream enabled)")
        return self._profiles[name]

    def depth_scale_m(self) -> float:
        """Metres per raw depth unit, as the depth sensor reports it (RS2_OPTION_DEPTH_UNITS)."""
        if self._depth_scale_m is None:
            raise DeviceError("RealSense sensor not started: call start() first")
        return self._depth_scale_m

    def intrinsics(self) -> Intrinsics:
        """Of the depth stream, OpenCV convention (see :func:`intrinsics_from_rs`)."""
        return intrinsics_from_rs(self._profile(DEPTH).get_intrinsics())

    def ir_intrinsics(self) -> Intrinsics:
        return intrinsics_from_rs(self._profile(INFRARED).get_intrinsics())

    def color_intrinsics(self) -> Intrinsics:
        return intrinsics_from_rs(self._profile(COLOR).get_intrinsics())

    def depth_to_color(self) -> Extrinsics:
        """Transform from the depth camera frame to the colour camera frame (metres)."""
        try:
            ext = self._profile(DEPTH).get_extrinsics_to(self._profile(COLOR))
        except RuntimeError as exc:
            raise DeviceError(f"RealSense {self.model}: no depth-to-colour extrinsics ({_one_line(exc)})") from None
        return extrinsics_from_rs(ext)
