"""OpenNI2 depth sensors (Asus Xtion, PrimeSense Carmine, Kinect via its driver) and .oni playback.

Runtime: the ``openni`` Python package (ctypes bindings) over the system's OpenNI2 library. Debian's
``libopenni2-0`` ships only ``libOpenNI2.so.0`` (no ``libOpenNI2.so`` symlink, that is in the -dev
package), while ``openni2.initialize(dir)`` looks for exactly ``libOpenNI2.so``; so the library is
found here (``OPENNI2_REDIST64``/``OPENNI2_REDIST``, the multiarch and usual lib folders, both names)
and loaded with ``openni._openni2.load_dll``. It must be loaded from its real folder: OpenNI2 looks
for its drivers in ``OpenNI2/Drivers`` next to the library (Debian's build reads
``/etc/openni2/OpenNI.ini`` and loads ``*.so.0`` drivers from there).

Device: depth in millimetres (PIXEL_FORMAT_DEPTH_1_MM), the video mode chosen among the modes the
sensor offers, mirroring off, depth-to-colour registration when asked for (and offered), intrinsics
from the stream's field of view. ``.oni`` files play back one frame per read (speed -1: manual,
repeat off). ``detect()`` lists devices without opening them.

Known OpenNI2 2.2 behaviour handled here:
* the Dummy driver (``uri='Dummy'``, libDummyDevice: 320x240 depth + RGB, a bouncing disc) does not
  join its frame thread on stop, and the thread sets its own running flag when first scheduled:
  destroying a stream after ``stop()`` is a use-after-free (segfaults, even after a 100 ms grace
  period on a loaded machine), and a stop() before the thread ran leaves it running for ever. For
  that driver ``start()`` waits for the first frame, and ``stop()`` closes the device first and
  keeps the stopped stream handles until OpenNI2 shuts down (a small, bounded leak per start);
* the .oni player drops every frame of a stream recorded without a cropping property
  (PlayerStream::OnNewDataCallback returns when ONI_STREAM_PROPERTY_CROPPING is missing); streams of
  drivers without cropping support (the Dummy device) record fine but play back no frames.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import sysconfig
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.protocols import DeviceTimeout, SettingRejected
from rig.core.errors import DeviceError
from rig.core.records import Intrinsics

LIB_NAMES = ("libOpenNI2.so", "libOpenNI2.so.0")
INSTALL_HINT = "apt-get install libopenni2-0"
ONI_SUFFIX = ".oni"
STOP_GRACE_S = 0.1  # between stopping and destroying streams (> one 30 fps frame period)
UNJOINED_THREAD_URIS = ("Dummy", "Oz", "PingPong")  # libDummyDevice: stop() does not join its thread
RECORDER_START_S = 0.05  # frames arriving before the recorder thread handled 'start' are not recorded

_LOCK = threading.Lock()
_LIVE: "weakref.WeakSet[OpenNISensor]" = weakref.WeakSet()
_PARKED: list[Any] = []  # stopped streams of drivers that do not join their threads (see stop())
_atexit_registered = False


def _one_line(exc: BaseException) -> str:
    args = getattr(exc, "args", ()) or (exc,)
    if type(exc).__name__ == "OpenNIError" and len(args) >= 2 and args[1]:
        args = (args[1],)  # (status code, message, log file): the message says it all
    parts = []
    for a in args:
        if isinstance(a, bytes):
            a = a.decode(errors="replace")
        if a is None:
            continue
        parts.append(str(a))
    text = " ".join(" ".join(parts).split())
    return text or type(exc).__name__


def default_search_dirs() -> list[Path]:
    """Where the OpenNI2 runtime is looked for, in order."""
    dirs: list[Path] = []
    for var in ("OPENNI2_REDIST64", "OPENNI2_REDIST"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs += [Path("/usr/lib") / multiarch, Path("/lib") / multiarch]
    dirs += [Path("/usr/lib"), Path("/usr/local/lib"), Path("/lib"), Path("/lib64")]
    return dirs


def find_openni2_library(search_dirs: list[Path] | None = None) -> Path | None:
    """The first libOpenNI2.so or libOpenNI2.so.0 in ``search_dirs`` (default: :func:`default_search_dirs`)."""
    for d in search_dirs if search_dirs is not None else default_search_dirs():
        for name in LIB_NAMES:
            p = Path(d) / name
            if p.is_file():
                return p
    return None


def require_openni2_library(search_dirs: list[Path] | None = None) -> Path:
    """The runtime library, or a one-line DeviceError saying how to install it."""
    lib = find_openni2_library(search_dirs)
    if lib is None:
        where = ", ".join(str(d) for d in (search_dirs if search_dirs is not None else default_search_dirs()))
        raise DeviceError(f"OpenNI2 runtime not found (no libOpenNI2.so[.0] in {where}): {INSTALL_HINT}")
    return lib


def drivers_dir(lib: Path) -> Path:
    """The driver folder OpenNI2 uses for the library file ``lib`` (default repository ``OpenNI2/Drivers``
    next to it; the library is loaded from its own folder, so no symlink elsewhere is involved)."""
    return Path(lib).parent / "OpenNI2" / "Drivers"


def _stop_all_at_exit() -> None:
    for sensor in list(_LIVE):
        try:
            sensor.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
    if _PARKED:
        time.sleep(STOP_GRACE_S)
        _forget_parked_streams()


def _forget_parked_streams() -> None:
    """At exit, leave OpenNI2 to the OS when Dummy-like streams were parked.

    Their driver threads were never joined and their device is closed: ``oniShutdown`` (openni's own
    atexit ``unload()``) then destroys those streams and segfaulted the interpreter at exit, every
    time once librealsense was loaded in the same process (seen in the full test suite). The process
    is ending, so skipping the shutdown loses nothing: recordings were finalised in ``stop()``.
    """
    try:
        from openni import openni2
    except ImportError:
        return
    openni2._openni2_initialized = False  # makes openni2.unload() a no-op
    _PARKED.clear()


def load_openni2(search_dirs: list[Path] | None = None) -> Any:
    """Load and initialise the OpenNI2 runtime once per process; returns ``openni.openni2``."""
    global _atexit_registered
    try:
        from openni import _openni2 as c_api
        from openni import openni2
    except ImportError as exc:
        raise DeviceError(f"openni Python package not available ({exc}): pip install openni") from None
    with _LOCK:
        if not _atexit_registered:
            # registered after openni's own atexit(unload), so it runs first: streams are stopped
            # (with the Dummy driver's grace period) before OpenNI2 shuts down
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True
        if openni2.is_initialized():
            return openni2
        if not openni2.loaded_dll_directory:
            lib = require_openni2_library(search_dirs).resolve()  # drivers are found next to the real file
            try:
                c_api.load_dll(str(lib))
            except OSError as exc:
                raise DeviceError(f"{lib}: cannot load the OpenNI2 runtime ({_one_line(exc)}): "
                                  f"{INSTALL_HINT}") from None
            openni2.loaded_dll_directory = str(lib.parent)  # initialize() then only calls oniInitialize
        try:
            openni2.initialize()
        except Exception as exc:  # noqa: BLE001 - OpenNIError or a ctypes failure: one line for the user
            raise DeviceError(f"OpenNI2 initialisation failed: {_one_line(exc)}") from None
        return openni2


def _device_infos(openni2: Any) -> list[Any]:
    from openni import _openni2 as c_api

    pdevs = ctypes.POINTER(c_api.OniDeviceInfo)()
    count = ctypes.c_int()
    c_api.oniGetDeviceList(ctypes.byref(pdevs), ctypes.byref(count))
    try:
        return [c_api.OniDeviceInfo.from_buffer_copy(pdevs[i]) for i in range(count.value)]
    finally:
        c_api.oniReleaseDeviceList(pdevs)


def _describe(info: Any) -> str:
    name = (info.name or b"").decode(errors="replace").strip()
    vendor = (info.vendor or b"").decode(errors="replace").strip()
    uri = (info.uri or b"").decode(errors="replace")
    label = " ".join(x for x in (vendor, name) if x) or "OpenNI2 device"
    return f"{label} ({uri})"


def detect(search_dirs: list[Path] | None = None) -> tuple[list[str], str]:
    """OpenNI2 devices as 'vendor name (uri)', and why none when the list is empty (opens nothing)."""
    try:
        openni2 = load_openni2(search_dirs)
        infos = _device_infos(openni2)
    except DeviceError as exc:
        return [], str(exc)
    if infos:
        return [_describe(i) for i in infos], ""
    folder = drivers_dir(Path(openni2.loaded_dll_directory or ".") / LIB_NAMES[0])
    drivers = sorted(p.name.split(".")[0].removeprefix("lib") for p in folder.glob("lib*.so*"))
    return [], (f"no OpenNI2 device found (drivers: {', '.join(drivers) or 'none'} in {folder}): "
                "plug the sensor in and check its udev rules (installed by libopenni2-0)")


def intrinsics_from_fov(width: int, height: int, hfov_rad: float, vfov_rad: float) -> Intrinsics:
    """Pinhole intrinsics matching OpenNI2's own depth->world conversion (no distortion).

    OpenNI2 maps pixel (u, v) at depth Z to X = (u / W - 1/2)·Z·2tan(hfov/2): focal W / (2 tan(hfov/2))
    and principal point (W/2, H/2) in pixel-index coordinates (OpenCV's convention).
    """
    if not (0 < hfov_rad < math.pi and 0 < vfov_rad < math.pi):
        raise ValueError(f"field of view out of range: {hfov_rad}, {vfov_rad} rad")
    fx = width / (2.0 * math.tan(hfov_rad / 2.0))
    fy = height / (2.0 * math.tan(vfov_rad / 2.0))
    return Intrinsics(width=int(width), height=int(height), fx=fx, fy=fy, cx=width / 2.0, cy=height / 2.0)


class OpenNISensor:
    """An OpenNI2 depth sensor (``uri``: None = the first device, 'Dummy' = the Dummy driver) or an
    ``.oni`` recording (``playback=``). ``record_to='x.oni'`` records the depth (and IR) streams.

    ``read_depth()`` -> (H, W) uint16 millimetres (0 = no measurement); ``read_ir()`` -> (H, W)
    uint16/uint8 or None without an IR sensor. ``hfov_deg`` is used for the intrinsics only when the
    stream does not report its field of view (then pixels are taken as square).
    """

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30, *, uri: str | None = None,
                 playback: str | Path | None = None, record_to: str | Path | None = None,
                 registration: bool = False, mirror: bool = False, ir: bool = False, hfov_deg: float = 58.0,
                 timeout_s: float = 2.0, search_dirs: list[Path] | None = None) -> None:
        if playback is not None and (uri is not None or record_to is not None):
            raise DeviceError("OpenNI2: playback cannot be combined with uri or record_to")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.uri = uri
        self.playback_path = Path(playback) if playback is not None else None
        self.record_to = Path(record_to) if record_to is not None else None
        self.registration, self.mirror, self.want_ir = bool(registration), bool(mirror), bool(ir)
        self.hfov_deg = float(hfov_deg)
        self.timeout_s = float(timeout_s)
        self.search_dirs = search_dirs
        self.model = "OpenNI2 device"
        self.fov_source = ""  # 'stream' or 'config' once intrinsics() ran
        self.playback_frames: int | None = None
        self.last_frame_index: int | None = None
        self._openni2: Any = None
        self._device: Any = None
        self._depth: Any = None
        self._ir: Any = None
        self._recorder: Any = None
        self._depth_format: Any = None
        self._frames_read = 0

    @classmethod
    def from_config(cls, depth_cfg: Any, **kwargs: Any) -> "OpenNISensor":
        """From a rig config's ``depth_sensor`` section (size_px, fps, mirror, registration, hfov_deg)."""
        w, h = depth_cfg.size_px
        kw = dict(mirror=bool(depth_cfg.mirror), registration=bool(depth_cfg.registration),
                  hfov_deg=float(depth_cfg.hfov_deg))
        kw.update(kwargs)
        return cls(int(w), int(h), int(depth_cfg.fps), **kw)

    def __enter__(self) -> "OpenNISensor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the device or file, configure the streams, start them (and the recorder)."""
        if self._depth is not None:
            return
        from openni.utils import OpenNIError

        openni2 = self._openni2 = load_openni2(self.search_dirs)
        try:
            self._open_device(openni2)
            self._configure(openni2)
            if self.record_to is not None:
                self._start_recorder(openni2)  # before the streams: frames only count once it runs
            self._depth.start()
            if self._ir is not None:
                self._ir.start()
            if self.uri in UNJOINED_THREAD_URIS:
                # its thread sets its own 'running' flag when first scheduled: a stop() before that
                # would leave it running forever, so wait until it has produced a frame
                openni2.wait_for_any_stream([self._depth], max(self.timeout_s, 1.0))
        except OpenNIError as exc:
            self.stop()
            raise DeviceError(f"OpenNI2 {self.model}: {_one_line(exc)}") from None
        except DeviceError:
            self.stop()
            raise
        self._frames_read = 0
        _LIVE.add(self)

    def stop(self) -> None:
        """Stop and close everything (a recording is finalised)."""
        _LIVE.discard(self)
        streams = [s for s in (self._depth, self._ir) if s is not None]
        if self._recorder is not None:
            self._safe(self._recorder.stop)
        for s in streams:
            self._safe(s.stop)
        if self._recorder is not None:
            self._safe(self._recorder.close)
        if streams:
            time.sleep(STOP_GRACE_S)
        if self.uri in UNJOINED_THREAD_URIS:
            # The driver's frame threads are never joined: close the device first (OpenNI2 then never
            # frees the driver's stream objects) and park the stream handles until OpenNI2 shuts
            # down, so a late thread finds valid memory however long the machine takes to run it.
            if self._device is not None:
                self._safe(self._device.close)
            _PARKED.extend(streams)
            streams = []
        for s in streams:
            self._safe(s.close)
        if self._device is not None:
            self._safe(self._device.close)
        self._recorder = self._depth = self._ir = self._device = None

    @staticmethod
    def _safe(fn: Any) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - closing must not fail halfway
            pass

    def _open_device(self, openni2: Any) -> None:
        from openni.utils import OpenNIError

        if self.playback_path is not None:
            path = self.playback_path
            # a bad recording file is bad input (exit 2), not a device problem
            if path.suffix.lower() != ONI_SUFFIX:
                raise DeviceError(f"{path}: not an OpenNI recording (expected {ONI_SUFFIX})", exit_code=2)
            if not path.is_file():
                raise DeviceError(f"{path}: OpenNI recording not found", exit_code=2)
            try:
                self._device = openni2.Device.open_file(str(path).encode())
            except OpenNIError as exc:
                raise DeviceError(f"{path}: cannot open OpenNI recording ({_one_line(exc)}); not an .oni file "
                                  "or a damaged one", exit_code=2) from None
            self._device.playback.set_speed(-1.0)  # manual: one frame per read, nothing dropped
            self._device.playback.set_repeat_enabled(False)
        else:
            try:
                self._device = openni2.Device(self.uri.encode() if self.uri else None)
            except OpenNIError as exc:
                if self.uri:
                    raise DeviceError(f"OpenNI2 device '{self.uri}' cannot be opened: {_one_line(exc)}") from None
                _, reason = detect(self.search_dirs)
                raise DeviceError(reason or f"no OpenNI2 device could be opened: {_one_line(exc)}") from None
        info = self._device.get_device_info()
        self.model = _describe(info)

    def _configure(self, openni2: Any) -> None:
        from openni import _openni2 as c_api
        from openni.utils import OpenNIError

        dev = self._device
        if not dev.has_sensor(openni2.SENSOR_DEPTH):
            raise DeviceError(f"OpenNI2 {self.model} has no depth sensor")
        self._depth = dev.create_depth_stream()
        depth_formats = (openni2.PIXEL_FORMAT_DEPTH_1_MM, openni2.PIXEL_FORMAT_DEPTH_100_UM)
        if self.playback_path is None:
            self._set_mode(self._depth, dev.get_sensor_info(openni2.SENSOR_DEPTH),
                           (openni2.PIXEL_FORMAT_DEPTH_1_MM,), "depth")
            if self._depth.is_property_supported(c_api.ONI_STREAM_PROPERTY_MIRRORING):
                self._depth.set_mirroring_enabled(self.mirror)
            elif self.mirror:
                raise SettingRejected(f"OpenNI2 {self.model}: mirroring not supported by the depth stream")
            d2c = openni2.IMAGE_REGISTRATION_DEPTH_TO_COLOR
            if self.registration:
                if not dev.is_image_registration_mode_supported(d2c):
                    raise SettingRejected(f"OpenNI2 {self.model}: depth-to-colour registration not supported")
                dev.set_image_registration_mode(d2c)
            elif dev.is_image_registration_mode_supported(d2c):
                try:
                    dev.set_image_registration_mode(openni2.IMAGE_REGISTRATION_OFF)
                except OpenNIError:
                    pass
        mode = self._depth.get_video_mode()
        if mode.pixelFormat not in depth_formats:
            raise DeviceError(f"OpenNI2 {self.model}: depth stream delivers {mode.pixelFormat}, not millimetres")
        self._depth_format = mode.pixelFormat
        self.width, self.height, self.fps = int(mode.resolutionX), int(mode.resolutionY), int(mode.fps)
        if self.playback_path is not None:
            self.playback_frames = int(self._depth.get_number_of_frames())
        if self.want_ir and dev.has_sensor(openni2.SENSOR_IR):
            self._ir = dev.create_ir_stream()
            if self.playback_path is None:
                self._set_mode(self._ir, dev.get_sensor_info(openni2.SENSOR_IR),
                               (openni2.PIXEL_FORMAT_GRAY16, openni2.PIXEL_FORMAT_GRAY8), "IR")

    def _set_mode(self, stream: Any, sensor_info: Any, formats: tuple[Any, ...], what: str) -> None:
        """Select (width, height, fps) in one of ``formats`` among the modes the sensor offers."""
        from openni.utils import OpenNIError

        offered = list(sensor_info.videoModes)
        match = [m for m in offered if (m.resolutionX, m.resolutionY, m.fps) == (self.width, self.height, self.fps)
                 and m.pixelFormat in formats]
        if not match:
            listing = ", ".join(sorted({f"{m.resolutionX}x{m.resolutionY}@{m.fps}" for m in offered
                                        if m.pixelFormat in formats})) or "none"
            raise SettingRejected(f"OpenNI2 {self.model}: {what} {self.width}x{self.height}@{self.fps} not offered; "
                                  f"offered: {listing}")
        match.sort(key=lambda m: formats.index(m.pixelFormat))
        want, cur = match[0], stream.get_video_mode()
        same = (cur.resolutionX, cur.resolutionY, cur.fps, cur.pixelFormat) == (
            want.resolutionX, want.resolutionY, want.fps, want.pixelFormat)
        if not same:
            try:
                stream.set_video_mode(want)
            except OpenNIError as exc:
                raise SettingRejected(f"OpenNI2 {self.model}: {what} mode rejected: {_one_line(exc)}") from None

    def _start_recorder(self, openni2: Any) -> None:
        path = self.record_to
        assert path is not None
        if path.suffix.lower() != ONI_SUFFIX:
            raise SettingRejected(f"{path}: OpenNI recordings must end in {ONI_SUFFIX}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._recorder = openni2.Recorder(str(path).encode())
        self._recorder.attach(self._depth, False)  # lossless
        if self._ir is not None:
            self._recorder.attach(self._ir, False)
        self._recorder.start()
        time.sleep(RECORDER_START_S)  # the recorder thread arms itself asynchronously

    # -- frames -------------------------------------------------------------------------------------

    def _read(self, stream: Any, what: str) -> np.ndarray:
        if stream is None or self._openni2 is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        if self.playback_frames is not None and what == "depth" and self._frames_read >= self.playback_frames:
            raise DeviceError(f"{self.playback_path}: end of recording ({self.playback_frames} depth frames)")
        ready = self._openni2.wait_for_any_stream([stream], self.timeout_s)
        if ready is None:
            raise DeviceTimeout(f"OpenNI2 {self.model}: no {what} frame within {self.timeout_s:g} s")
        frame = stream.read_frame()
        try:
            h, w, stride = int(frame.height), int(frame.width), int(frame.stride)
            bpp = 1 if frame.videoMode.pixelFormat == self._openni2.PIXEL_FORMAT_GRAY8 else 2
            dtype = np.uint8 if bpp == 1 else np.uint16
            raw = np.frombuffer(frame.get_buffer_as_uint8(), dtype=dtype)
            img = raw.reshape(h, stride // bpp)[:, :w].copy()
            if what == "depth":
                self.last_frame_index = int(frame.frameIndex)
                self._frames_read += 1
        finally:
            frame.close()
        return img

    def read_depth(self) -> np.ndarray:
        """Next depth frame, (H, W) uint16 in the stream's units (see depth_scale_m), 0 = no data."""
        return self._read(self._depth, "depth")

    def read_ir(self) -> np.ndarray | None:
        """Next IR frame, or None when IR was not asked for or the device has no IR sensor."""
        return None if self._ir is None else self._read(self._ir, "IR")

    def depth_scale_m(self) -> float:
        """Metres per depth unit: 0.001 (DEPTH_1_MM) or 0.0001 (DEPTH_100_UM)."""
        if self._depth_format is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        return 0.0001 if self._depth_format == self._openni2.PIXEL_FORMAT_DEPTH_100_UM else 0.001

    def intrinsics(self) -> Intrinsics:
        """Depth intrinsics from the stream's horizontal/vertical FOV, else from ``hfov_deg``."""
        from openni.utils import OpenNIError

        if self._depth is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        try:
            hfov, vfov = float(self._depth.get_horizontal_fov()), float(self._depth.get_vertical_fov())
            if not (0 < hfov < math.pi and 0 < vfov < math.pi):
                raise ValueError
            self.fov_source = "stream"
        except (OpenNIError, ValueError):
            hfov = math.radians(self.hfov_deg)
            vfov = 2.0 * math.atan(math.tan(hfov / 2.0) * self.height / self.width)  # square pixels
            self.fov_source = "config"
        return intrinsics_from_fov(self.width, self.height, hfov, vfov)
