"""A RealSense camera made of librealsense's own ``software_device``: inject frames, record ``.db3``.

Reusable by any test that needs real librealsense behaviour without hardware (the driver tests,
registration's comparison with ``rs.align``). Geometry comes in the rig's records:

    rig = make_software_device(depth_intr, color_intr, depth_scale_m=0.001, extrinsics=depth_to_color)
    rig.inject(0, depth=depth_u16, color=rgb_u8)          # frames flow to whoever started the sensors
    path = record_db3(tmp / "x.db3", [d0, d1], [c0, c1], depth_intr=..., color_intr=..., ...)
    aligned = align_depth_to_color(depth_u16, rgb_u8, depth_intr, color_intr, depth_to_color)

Layout mirrors a D4xx: sensor "Stereo Module" with depth (Z16, index 0) and IR (Y8, index 1, same
intrinsics as depth, identity extrinsics), sensor "RGB Camera" with colour (RGB8). Depth units are the
read-only RS2_OPTION_DEPTH_UNITS option. Quirks learned on librealsense 2.59.1:

* a fresh ``software_video_frame`` per frame, and its pixel buffer kept alive until the frame has
  been consumed (``SoftwareRig`` keeps them) — librealsense reads the buffer after ``on_video_frame``;
* ``rs.recorder(path, device)`` must exist before the sensors are opened; the file only accepts the
  ``.db3`` suffix, and it is complete only once the recorder (and every sensor obtained from it) is
  destroyed — :func:`record_db3` drops them and runs the garbage collector;
* frames are recorded at arrival time, not at their ``timestamp``: unpaced injection gives a
  recording a few milliseconds long (``paced=True`` spaces them 1/fps apart);
* ``software_device.add_to(context)`` does not make the device visible to ``context.query_devices()``
  or to a pipeline, so pipelines can only be tested on recordings (:func:`playback_framesets`);
  ``context.load_device(path)`` is listed, but the context holds it weakly (keep the returned device);
* a syncer emits the very first frames of each stream alone, before it has seen the other stream;
* ``rs.align`` leaves sparse zero holes even for identical cameras (~5 % of a 64x48 frame): compare
  aligned values where both are non-zero;
* ``rs.extrinsics.rotation`` is column-major.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rig.core.records import Extrinsics, Intrinsics

rs = None  # pyrealsense2, imported lazily so that importing this module never fails


def _lib() -> Any:
    global rs
    if rs is None:
        import pyrealsense2

        rs = pyrealsense2
    return rs


def rs_intrinsics(intr: Intrinsics, model: str = "brown_conrady") -> Any:
    """:class:`Intrinsics` -> ``rs.intrinsics``; ``intr.dist`` (OpenCV k1, k2, p1, p2, k3) as coeffs."""
    lib = _lib()
    out = lib.intrinsics()
    out.width, out.height = int(intr.width), int(intr.height)
    out.fx, out.fy, out.ppx, out.ppy = float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy)
    out.model = getattr(lib.distortion, model)
    coeffs = [float(c) for c in intr.dist] + [0.0] * 5
    out.coeffs = coeffs[:5]
    return out


def rs_extrinsics(ext: Extrinsics) -> Any:
    """:class:`Extrinsics` (row-major R, t in metres) -> ``rs.extrinsics`` (column-major rotation)."""
    lib = _lib()
    out = lib.extrinsics()
    out.rotation = [float(x) for x in np.asarray(ext.rotation, dtype=np.float64).T.ravel()]
    out.translation = [float(x) for x in ext.translation_m]
    return out


@dataclass
class SoftwareRig:
    """A software RealSense: the device, its sensors and stream profiles, and injection."""

    device: Any
    depth_sensor: Any
    color_sensor: Any | None
    depth_profile: Any
    ir_profile: Any | None
    color_profile: Any | None
    depth_scale_m: float
    fps: int
    _buffers: list[np.ndarray] = field(default_factory=list, repr=False)

    def sensors_and_profiles(self) -> list[tuple[Any, list[Any]]]:
        """[(sensor, [profiles])] — what to open to stream everything."""
        out = [(self.depth_sensor, [p for p in (self.depth_profile, self.ir_profile) if p is not None])]
        if self.color_sensor is not None:
            out.append((self.color_sensor, [self.color_profile]))
        return out

    def inject(self, frame_number: int, depth: np.ndarray | None = None, ir: np.ndarray | None = None,
               color: np.ndarray | None = None, timestamp_ms: float | None = None) -> None:
        """Push one frame per given stream into the started sensors.

        depth (H, W) uint16 raw units; ir (H, W) uint8; color (H, W, 3) uint8 RGB; timestamp defaults
        to frame_number / fps.
        """
        lib = _lib()
        ts = 1000.0 * frame_number / self.fps if timestamp_ms is None else float(timestamp_ms)
        for arr, profile, sensor, dtype in ((depth, self.depth_profile, self.depth_sensor, np.uint16),
                                            (ir, self.ir_profile, self.depth_sensor, np.uint8),
                                            (color, self.color_profile, self.color_sensor, np.uint8)):
            if arr is None:
                continue
            if profile is None:
                raise ValueError("this software device has no such stream")
            buf = np.ascontiguousarray(arr, dtype=dtype)
            vp = profile.as_video_stream_profile()
            expect = (vp.height(), vp.width()) + ((3,) if buf.ndim == 3 else ())
            if buf.shape != expect:
                raise ValueError(f"frame shape {buf.shape} does not match the stream's {expect}")
            self._buffers.append(buf)
            frame = lib.software_video_frame()
            frame.pixels = buf
            frame.bpp = buf.itemsize * (buf.shape[2] if buf.ndim == 3 else 1)
            frame.stride = buf.strides[0]
            frame.timestamp = ts
            frame.domain = lib.timestamp_domain.hardware_clock
            frame.frame_number = int(frame_number)
            frame.profile = vp
            sensor.on_video_frame(frame)


def make_software_device(depth_intr: Intrinsics, color_intr: Intrinsics | None = None,
                         depth_scale_m: float = 0.001, extrinsics: Extrinsics | None = None, *,
                         ir: bool = True, fps: int = 30, name: str = "Software RealSense",
                         serial: str = "SW-0001", depth_model: str = "brown_conrady",
                         color_model: str = "brown_conrady") -> SoftwareRig:
    """A ``software_device`` with depth (+ IR) and optional colour streams.

    extrinsics: depth camera -> colour camera (X_color = R X_depth + t, metres); identity if None.
    depth_model / color_model: librealsense distortion model names for ``intr.dist``.
    """
    lib = _lib()
    dev = lib.software_device()
    dev.register_info(lib.camera_info.name, name)
    dev.register_info(lib.camera_info.serial_number, serial)
    dsens = dev.add_sensor("Stereo Module")
    dsens.add_read_only_option(lib.option.depth_units, float(depth_scale_m))

    def stream(kind: str, index: int, uid: int, intr: Intrinsics, fmt: str, bpp: int, model: str) -> Any:
        vs = lib.video_stream()
        vs.type, vs.index, vs.uid = getattr(lib.stream, kind), index, uid
        vs.width, vs.height, vs.fps, vs.bpp = intr.width, intr.height, fps, bpp
        vs.fmt = getattr(lib.format, fmt)
        vs.intrinsics = rs_intrinsics(intr, model)
        return vs

    dprof = dsens.add_video_stream(stream("depth", 0, 0, depth_intr, "z16", 2, depth_model)).as_video_stream_profile()
    irprof = None
    if ir:
        irprof = dsens.add_video_stream(stream("infrared", 1, 1, depth_intr, "y8", 1, depth_model))
        irprof = irprof.as_video_stream_profile()
        irprof.register_extrinsics_to(dprof, rs_extrinsics(Extrinsics.from_matrix(np.eye(4))))
    csens = cprof = None
    if color_intr is not None:
        csens = dev.add_sensor("RGB Camera")
        cprof = csens.add_video_stream(stream("color", 0, 2, color_intr, "rgb8", 3, color_model))
        cprof = cprof.as_video_stream_profile()
        ext = extrinsics if extrinsics is not None else Extrinsics.from_matrix(np.eye(4))
        dprof.register_extrinsics_to(cprof, rs_extrinsics(ext))
    return SoftwareRig(dev, dsens, csens, dprof, irprof, cprof, float(depth_scale_m), int(fps))


def record_db3(path: str | Path, depth_frames: Sequence[np.ndarray],
               color_frames: Sequence[np.ndarray] | None = None, ir_frames: Sequence[np.ndarray] | None = None,
               *, depth_intr: Intrinsics, color_intr: Intrinsics | None = None, depth_scale_m: float = 0.001,
               extrinsics: Extrinsics | None = None, fps: int = 30, name: str = "Software RealSense",
               serial: str = "SW-0001", depth_model: str = "brown_conrady",
               color_model: str = "brown_conrady", paced: bool = False) -> Path:
    """Record frames (frame i of every given stream share number i and timestamp i/fps) to ``path``.

    The recording is made by librealsense's recorder wrapping a software device; returns the path once
    the file is complete. color_frames needs color_intr; ir_frames are (H, W) uint8 at depth size.
    The recorder stamps frames with their arrival time: ``paced=True`` injects them 1/fps apart so that
    a real-time playback (:func:`playback_framesets`) replays them at the recorded rate.
    """
    lib = _lib()
    path = Path(path)
    if color_frames is not None and color_intr is None:
        raise ValueError("color_frames need color_intr")
    rig = make_software_device(depth_intr, color_intr, depth_scale_m, extrinsics, ir=ir_frames is not None,
                               fps=fps, name=name, serial=serial, depth_model=depth_model,
                               color_model=color_model)
    recorder = lib.recorder(str(path), rig.device)
    sink = lib.frame_queue(4 * len(depth_frames) + 8, keep_frames=False)
    opened = []
    for sensor, profiles in rig.sensors_and_profiles():
        sensor.open(profiles)
        opened.append(sensor)
    for sensor in opened:
        sensor.start(sink)
    for i, depth in enumerate(depth_frames):
        if paced and i:
            time.sleep(1.0 / fps)
        rig.inject(i, depth=depth, ir=None if ir_frames is None else ir_frames[i],
                   color=None if color_frames is None else color_frames[i])
    expected = len(depth_frames) * (1 + (ir_frames is not None) + (color_frames is not None))
    for _ in range(expected):  # every frame went through the sensors (and the recorder)
        sink.wait_for_frame(2000)
    for sensor in opened:
        sensor.stop()
        sensor.close()
    recorder.pause()
    del recorder, opened, sink, rig
    gc.collect()
    return path


def playback_framesets(path: str | Path, timeout_ms: int = 1000, real_time: bool = True) -> Iterator[Any]:
    """Framesets of a recording through ``rs.pipeline`` + ``enable_device_from_file``.

    For geometry checks (``rs.align`` on played-back frames). A pipeline keeps only its latest
    framesets: with real time off the file is read as fast as possible and most frames are skipped
    (6 of 60 reached ``wait_for_frames`` here); in real time (default) a recording made with
    ``record_db3(..., paced=True)`` is replayed at its rate and a prompt reader gets its framesets.
    The first framesets of a playback may hold a single stream. For every frame in order, use the
    driver's playback (acquisition.realsense_driver.RealSenseSensor(playback=...)).
    """
    lib = _lib()
    cfg = lib.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    pipe = lib.pipeline()
    profile = pipe.start(cfg)
    try:
        profile.get_device().as_playback().set_real_time(real_time)
        while True:
            ok, frames = pipe.try_wait_for_frames(timeout_ms)
            if not ok:
                return
            yield frames
    finally:
        pipe.stop()


def align_depth_to_color(depth: np.ndarray, color: np.ndarray, depth_intr: Intrinsics, color_intr: Intrinsics,
                         extrinsics: Extrinsics, depth_scale_m: float = 0.001,
                         depth_model: str = "brown_conrady", color_model: str = "brown_conrady") -> np.ndarray:
    """librealsense's ``rs.align(color)`` of one depth frame: (Hc, Wc) uint16 raw units, 0 = no data."""
    lib = _lib()
    rig = make_software_device(depth_intr, color_intr, depth_scale_m, extrinsics, ir=False,
                               depth_model=depth_model, color_model=color_model)
    sync = lib.syncer(8)
    opened = []
    for sensor, profiles in rig.sensors_and_profiles():
        sensor.open(profiles)
        opened.append(sensor)
    for sensor in opened:
        sensor.start(sync)
    try:
        # the syncer emits the very first frames alone (it has not yet seen the other stream), so
        # the same pair is injected again until a depth + colour frameset comes out
        for i in range(5):
            rig.inject(i, depth=depth, color=color)
            while True:
                ok, frames = sync.try_wait_for_frames(200)
                if not ok:
                    break
                if frames.get_depth_frame() and frames.get_color_frame():
                    aligned = lib.align(lib.stream.color).process(frames).get_depth_frame()
                    return np.asanyarray(aligned.get_data()).copy()
        raise RuntimeError("software device produced no depth + colour frameset")
    finally:
        for sensor in opened:
            sensor.stop()
            sensor.close()
