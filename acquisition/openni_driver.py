"""OpenNI2 depth sensors (Asus Xtion, PrimeSense Carmine, Kinect via its driver) and .oni playback.

Runtime: the ``openni`` Python package (ctypes bindings) over the system's OpenNI2 library. Debian's
``libopenni2-0`` ships only ``libOpenNI2.so.0`` (no ``libOpenNI2.so`` symlink, that is in the -dev
package), while ``openni2.initialize(dir)`` looks for exactly ``libOpenNI2.so``; so the library is
found here (``OPENNI2_REDIST64``/``OPENNI2_REDIST``, the multiarch and usual lib folders, both names)
and loaded with ``openni._openni2.load_dll``. It must be loaded from its real folder: OpenNI2 looks
for its drivers in ``OpenNI2/Drivers`` next to the library (Debian's build reads
``/etc/openni2/OpenNI.ini`` and loads ``*.so.0`` drivers from there).

Device: depth in millimetres (PIXEL_FORMAT_DEPTH_1_MM), the video mode chosen among the modes the
sensor offers, mirroring off, depth-to-colour registration when asked for (and offered), colour
(RGB888 at the depth's size and rate) when asked for, intrinsics from each stream's field of view. ``.oni`` files play back one frame per read (speed -1: manual,
repeat off). ``detect()`` lists devices without opening them.

Known OpenNI2 2.2 behaviour handled here:
* the Dummy driver (``uri='Dummy'``, libDummyDevice: 320x240 depth + RGB, a bouncing disc) does not
  join its frame thread on stop, and the thread sets its own running flag when first scheduled:
  destroying a stream after ``stop()`` is a use-after-free (segfaults, even after a 100 ms grace
  period on a loaded machine), and a stop() before the thread ran leaves it running for ever. For
  that driver ``start()`` waits for the first frame, and ``stop()`` closes the device first and
  keeps the stopped stream handles until OpenNI2 shuts down (a small, bounded leak per start);
* the .oni player drops every frame of a stream recorded without a cropping property
  (PlayerStream::OnNewDataCallback returns when ONI_STREAM_PROPERTY_CROPPING is missing), and the
  recorder writes one only for drivers with cropping support (not the Dummy device): every recording
  made here is finalised with :func:`acquisition.oni_file.add_cropping` ("cropping off" for each stream
  without one), so it plays back whatever the driver. An older recording is fixed the same way;
* Debian's libOpenNI2 keeps an error buffer per calling thread and, whenever a thread it has not seen
  makes a call, probes every thread it has seen with ``pthread_kill(id, 0)``: a thread that made
  OpenNI2 calls and has since exited (its stack unmapped by later thread churn) crashes the process
  at that probe (seen as segfaults in ``rig replay x.oni --through all``, whose frames are read by
  the live loop's source thread). Every OpenNI2 call of this module therefore runs on one thread that
  lives as long as the process (:func:`on_openni_thread`), whichever thread calls it. OpenNI2's own
  recorder thread enters those buffers too when the driver lacks a property it records (the Dummy
  device has no field of view), so a long process that records the Dummy device more than once can
  still crash that way (the tests record it in a fresh interpreter); real sensors report them;
* a frame arriving while the recorder is being destroyed can deadlock (the frame thread holds the
  stream's recorder list and waits for the recorder's stream list, which ``oniRecorderDestroy`` holds
  while it waits for the stream's recorder list): ``stop()`` stops the recorder (new frames are then
  refused before any lock), stops the streams, waits out a frame period, and only then destroys it.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import math
import os
import queue
import shutil
import sysconfig
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from acquisition.protocols import DeviceTimeout, SettingRejected
from rig.core.errors import DeviceError
from rig.core.records import Intrinsics

LIB_NAMES = ("libOpenNI2.so", "libOpenNI2.so.0")
INSTALL_HINT = "apt-get install libopenni2-0"
ONI_SUFFIX = ".oni"
STOP_GRACE_S = 0.1  # between stopping and destroying streams (> one 30 fps frame period)
UNJOINED_THREAD_URIS = ("Dummy", "Oz", "PingPong")  # libDummyDevice: stop() does not join its thread
MAX_FIX_BYTES = 1 << 30  # recordings up to 1 GiB without cropping properties are played from a fixed copy
RECORDER_START_S = 0.05  # frames arriving before the recorder thread handled 'start' are not recorded

_LOCK = threading.Lock()
_LIVE: "weakref.WeakSet[OpenNISensor]" = weakref.WeakSet()
_PARKED: list[Any] = []  # stopped streams of drivers that do not join their threads (see stop())
_atexit_registered = False
T = TypeVar("T")


class _OpenNIThread:
    """One daemon thread, started on first use, that runs every OpenNI2 call of the process."""

    def __init__(self) -> None:
        self._jobs: "queue.Queue[tuple[Callable[[], Any], dict[str, Any], threading.Event]]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def running_here(self) -> bool:
        return threading.current_thread() is self._thread

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the OpenNI2 thread (directly when already on it); its exception is re-raised here."""
        if self.running_here():
            return fn()
        with self._lock:
            if not self.alive():
                self._thread = threading.Thread(target=self._serve, name="openni2", daemon=True)
                self._thread.start()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _serve(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            finally:
                del fn
                done.set()


_ONI_THREAD = _OpenNIThread()


def on_openni_thread(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator: the function runs on the process's OpenNI2 thread (see the module docstring)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return _ONI_THREAD.call(lambda: fn(*args, **kwargs))
    return wrapper


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
    if _ONI_THREAD.alive():
        _ONI_THREAD.call(_stop_all)
    else:
        _stop_all()


def _stop_all() -> None:
    """Stop every sensor, then shut OpenNI2 down here (openni's own atexit ``unload()`` would make
    the main thread's first OpenNI2 call, see the module docstring) or leave it (parked streams)."""
    for sensor in list(_LIVE):
        try:
            sensor.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
    if _PARKED:
        time.sleep(STOP_GRACE_S)
        _forget_parked_streams()
        return
    try:
        from openni import openni2

        openni2.unload()
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        pass


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


@on_openni_thread
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


@on_openni_thread
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
    ``.oni`` recording (``playback=``). ``record_to='x.oni'`` records the depth (and IR, colour)
    streams, losslessly.

    ``read_depth()`` -> (H, W) uint16 millimetres (0 = no measurement); ``read_ir()`` -> (H, W)
    uint16/uint8 or None without an IR sensor; ``read_color()`` (``color=True``, at the depth's size
    and rate) -> (H, W, 3) uint8 RGB or None without a colour sensor or stream. ``last_timestamp_us``
    holds each stream's last frame time. ``hfov_deg`` is used for the intrinsics only when a stream
    does not report its field of view (then pixels are taken as square).
    """

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30, *, uri: str | None = None,
                 playback: str | Path | None = None, record_to: str | Path | None = None,
                 registration: bool = False, mirror: bool = False, ir: bool = False, color: bool = False,
                 hfov_deg: float = 58.0,
                 timeout_s: float = 2.0, search_dirs: list[Path] | None = None) -> None:
        if playback is not None and (uri is not None or record_to is not None):
            raise DeviceError("OpenNI2: playback cannot be combined with uri or record_to")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.uri = uri
        self.playback_path = Path(playback) if playback is not None else None
        self.record_to = Path(record_to) if record_to is not None else None
        self.registration, self.mirror, self.want_ir = bool(registration), bool(mirror), bool(ir)
        self.want_color = bool(color)
        self.hfov_deg = float(hfov_deg)
        self.timeout_s = float(timeout_s)
        self.search_dirs = search_dirs
        self.model = "OpenNI2 device"
        self.fov_source = ""  # 'stream' or 'config' once intrinsics() ran
        self.playback_frames: int | None = None  # depth frames in the recording
        self.playback_fixed_streams = 0  # streams given a cropping property in a private copy (see _open_device)
        self._playback_copy: Path | None = None
        self.playback_color_frames: int | None = None
        self.last_frame_index: int | None = None
        self.last_timestamp_us: dict[str, int] = {}
        self._openni2: Any = None
        self._device: Any = None
        self._depth: Any = None
        self._ir: Any = None
        self._color: Any = None
        self._recorder: Any = None
        self._depth_format: Any = None
        self._frames_read: dict[str, int] = {}

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

    @on_openni_thread
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
            for stream in self._streams():
                stream.start()
            if self.uri in UNJOINED_THREAD_URIS:
                # its threads set their own 'running' flag when first scheduled: a stop() before that
                # would leave them running forever, so wait until each has produced a frame
                for stream in self._streams():
                    openni2.wait_for_any_stream([stream], max(self.timeout_s, 1.0))
        except OpenNIError as exc:
            self._safe(self.stop)  # the first error is the one to report
            raise DeviceError(f"OpenNI2 {self.model}: {_one_line(exc)}") from None
        except DeviceError:
            self._safe(self.stop)
            raise
        self._frames_read = {}
        _LIVE.add(self)

    def _streams(self) -> list[Any]:
        return [s for s in (self._depth, self._ir, self._color) if s is not None]

    @on_openni_thread
    def stop(self) -> None:
        """Stop and close everything (a recording is finalised and given its cropping properties)."""
        _LIVE.discard(self)
        streams = self._streams()
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            self._safe(recorder.stop)  # from now on the recorder refuses frames before taking any lock
        for s in streams:
            self._safe(s.stop)
        if streams:
            time.sleep(STOP_GRACE_S)  # frames in flight (threads not joined by the driver) land first
        if recorder is not None:
            self._safe(recorder.close)
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
        self._depth = self._ir = self._color = self._device = None
        if self._playback_copy is not None:
            self._safe(lambda: shutil.rmtree(self._playback_copy.parent))  # type: ignore[union-attr]
            self._playback_copy = None
        if recorder is not None and self.record_to is not None and self.record_to.is_file():
            self._finalise_recording(self.record_to)

    def _playable_copy(self, path: Path) -> Path:
        """``path``, or a private temporary copy of it with a cropping property for each stream that
        lacks one (a recording made by OpenNI2 itself from a driver without cropping, which its player
        would play as no frames at all). The user's file is never modified; files over
        ``MAX_FIX_BYTES`` or not understood are opened as they are."""
        from acquisition.oni_file import OniFormatError, with_cropping

        try:
            if path.stat().st_size > MAX_FIX_BYTES:
                return path
            fixed, count = with_cropping(path.read_bytes())
        except (OniFormatError, OSError):
            return path
        if not count:
            return path
        tmp = Path(tempfile.mkdtemp(prefix="rig-oni-")) / path.name
        tmp.write_bytes(fixed)
        self._playback_copy, self.playback_fixed_streams = tmp, count
        return tmp

    @staticmethod
    def _finalise_recording(path: Path) -> None:
        from acquisition.oni_file import OniFormatError, add_cropping

        try:
            add_cropping(path)
        except (OniFormatError, OSError) as exc:
            raise DeviceError(f"{path}: recording written but cannot be made playable: {_one_line(exc)}") from None

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
            opened = self._playable_copy(path)
            try:
                self._device = openni2.Device.open_file(str(opened).encode())
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
        if self.want_color and dev.has_sensor(openni2.SENSOR_COLOR):
            self._color = dev.create_color_stream()
            if self.playback_path is None:
                self._set_mode(self._color, dev.get_sensor_info(openni2.SENSOR_COLOR),
                               (openni2.PIXEL_FORMAT_RGB888,), "colour")
            else:
                self.playback_color_frames = int(self._color.get_number_of_frames())
            if self._color.get_video_mode().pixelFormat != openni2.PIXEL_FORMAT_RGB888:
                raise DeviceError(f"OpenNI2 {self.model}: colour stream is not RGB888")
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
        for stream in self._streams():
            self._recorder.attach(stream, False)  # lossless
        self._recorder.start()
        time.sleep(RECORDER_START_S)  # the recorder thread arms itself asynchronously

    # -- frames -------------------------------------------------------------------------------------

    def _read(self, stream: Any, what: str) -> np.ndarray:
        if stream is None or self._openni2 is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        total = {"depth": self.playback_frames, "colour": self.playback_color_frames}.get(what)
        if total is not None and self._frames_read.get(what, 0) >= total:
            raise DeviceError(f"{self.playback_path}: end of recording ({total} {what} frames)")
        ready = self._openni2.wait_for_any_stream([stream], self.timeout_s)
        if ready is None:
            raise DeviceTimeout(f"OpenNI2 {self.model}: no {what} frame within {self.timeout_s:g} s")
        frame = stream.read_frame()
        try:
            h, w, stride = int(frame.height), int(frame.width), int(frame.stride)
            fmt = frame.videoMode.pixelFormat
            if fmt == self._openni2.PIXEL_FORMAT_RGB888:
                raw = np.frombuffer(frame.get_buffer_as_uint8(), dtype=np.uint8)
                img = raw[:h * stride].reshape(h, stride)[:, :w * 3].reshape(h, w, 3).copy()
            else:
                bpp = 1 if fmt == self._openni2.PIXEL_FORMAT_GRAY8 else 2
                raw = np.frombuffer(frame.get_buffer_as_uint8(), dtype=np.uint8 if bpp == 1 else np.uint16)
                img = raw[:h * stride // bpp].reshape(h, stride // bpp)[:, :w].copy()
            if what == "depth":
                self.last_frame_index = int(frame.frameIndex)
            self.last_timestamp_us[what] = int(frame.timestamp)
            self._frames_read[what] = self._frames_read.get(what, 0) + 1
        finally:
            frame.close()
        return img

    @on_openni_thread
    def read_depth(self) -> np.ndarray:
        """Next depth frame, (H, W) uint16 in the stream's units (see depth_scale_m), 0 = no data."""
        return self._read(self._depth, "depth")

    @on_openni_thread
    def read_ir(self) -> np.ndarray | None:
        """Next IR frame, or None when IR was not asked for or the device has no IR sensor."""
        return None if self._ir is None else self._read(self._ir, "IR")

    @on_openni_thread
    def read_color(self) -> np.ndarray | None:
        """Next colour frame, (H, W, 3) uint8 RGB, or None when colour was not asked for or there is none."""
        return None if self._color is None else self._read(self._color, "colour")

    def depth_scale_m(self) -> float:
        """Metres per depth unit: 0.001 (DEPTH_1_MM) or 0.0001 (DEPTH_100_UM)."""
        if self._depth_format is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        return 0.0001 if self._depth_format == self._openni2.PIXEL_FORMAT_DEPTH_100_UM else 0.001

    @on_openni_thread
    def intrinsics(self) -> Intrinsics:
        """Depth intrinsics from the stream's horizontal/vertical FOV, else from ``hfov_deg``."""
        if self._depth is None:
            raise DeviceError("OpenNI2 sensor not started: call start() first")
        return self._stream_intrinsics(self._depth)

    @on_openni_thread
    def color_intrinsics(self) -> Intrinsics | None:
        """Colour intrinsics (as :meth:`intrinsics`), or None without a colour stream."""
        return None if self._color is None else self._stream_intrinsics(self._color)

    def _stream_intrinsics(self, stream: Any) -> Intrinsics:
        from openni.utils import OpenNIError

        mode = stream.get_video_mode()
        width, height = int(mode.resolutionX), int(mode.resolutionY)
        try:
            hfov, vfov = float(stream.get_horizontal_fov()), float(stream.get_vertical_fov())
            if not (0 < hfov < math.pi and 0 < vfov < math.pi):
                raise ValueError
            self.fov_source = "stream"
        except (OpenNIError, ValueError):
            hfov = math.radians(self.hfov_deg)
            vfov = 2.0 * math.atan(math.tan(hfov / 2.0) * height / width)  # square pixels
            self.fov_source = "config"
        return intrinsics_from_fov(width, height, hfov, vfov)
