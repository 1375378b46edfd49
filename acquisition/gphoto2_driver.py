"""Tethered DSLR through libgphoto2 (python-gphoto2): the :class:`acquisition.protocols.Dslr` driver.

Every value is validated against the camera's own choice list before it is set (libgphoto2 can crash
on an f-number the camera does not offer) and read back afterwards. Names are normalised across
brands: aperture (Nikon ``f-number`` / Canon ``aperture``), shutter (``shutterspeed`` /
``shutterspeed2``), iso, capturetarget, imageformat (Nikon ``imagequality`` / Canon ``imageformat``).

Errors are the protocol's :class:`~rig.core.errors.DeviceError` subclasses with one-line messages;
"PTP Device Busy" (GP_ERROR_CAMERA_BUSY, -110) is retried with exponential backoff.
gphoto2 is imported lazily, so importing this module never needs the library.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, TypeVar

from acquisition.exif import read_exif
from acquisition.protocols import (DeviceBusy, DeviceDisconnected, DeviceTimeout, Dslr, Setting,
                                   SettingRejected, ShotFile, TransferError)
from rig.core.errors import DeviceError
from rig.core.imageio import atomic_write_bytes
from rig.core.optics import exposure_stops, matched_iso, matched_shutter_s

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_CAMERA_MSG = "no camera detected (check USB cable, camera on, not in mass-storage mode)"
CLAIM_HINT = ("another process holds the camera: on Linux the desktop auto-mounts it — run "
              "`pkill -f gvfs-gphoto2-volume-monitor` or `gio mount -s gphoto2`, then retry")

# libgphoto2 result codes (gphoto2.GP_ERROR_*), spelled out so the mapping needs no import.
GP_ERROR_IO = -7
GP_ERROR_LIBRARY = -4
GP_ERROR_TIMEOUT = -10
GP_ERROR_IO_READ = -34
GP_ERROR_IO_WRITE = -35
GP_ERROR_IO_USB_FIND = -52
GP_ERROR_IO_USB_CLAIM = -53
GP_ERROR_IO_LOCK = -60
GP_ERROR_CORRUPTED_DATA = -102
GP_ERROR_MODEL_NOT_FOUND = -105
GP_ERROR_CAMERA_BUSY = -110
GP_ERROR_NO_SPACE = -115

# normalised name -> gphoto2 widget names, most preferred first
SETTING_ALIASES: dict[str, tuple[str, ...]] = {
    "aperture": ("f-number", "aperture"),
    "shutter": ("shutterspeed", "shutterspeed2"),
    "iso": ("iso",),
    "capturetarget": ("capturetarget",),
    "imageformat": ("imagequality", "imageformat"),
}

F_NUMBER_REL_TOL = 0.01  # a requested f-number must be within 1 % of an offered one
SHUTTER_TOL_STOPS = 1.0 / 3.0  # shutter and ISO: within 1/3 stop
ISO_TOL_STOPS = 1.0 / 3.0
RAW_JPEG_EVENT_TIMEOUT_MS = 1000  # quiet period that ends a RAW+JPEG capture's event wait
EXIF_APERTURE_REL_TOL = 0.05  # EXIF FNumber vs the f-number set (nominal vs exact marked stops)
_EPS = 1e-9


class CameraClaimed(DeviceError):
    """Another process (usually the desktop's gvfs gphoto2 monitor) has claimed the USB device."""


class ApertureMismatch(DeviceError):
    """The saved shot's EXIF f-number differs from the one set (the file is kept)."""


class SettingNotApplied(DeviceError):
    """The camera kept another value after a set (mode dial not on M, lens not coupled…)."""


# --- choice strings ------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_f_number(text: str) -> float | None:
    """'f/2.8', 'F2.8', '2.8', 'f/8' -> N; None for anything else ('implicit auto', '')."""
    m = re.fullmatch(r"(?:f\s*/?\s*)?" + _NUM, str(text).strip().lower())
    if not m:
        return None
    v = float(m.group(1))
    return v if v > 0 else None


def parse_shutter_s(text: str) -> float | None:
    """Shutter choice -> seconds: '1/1000', '1/4000s', '0.5s', '0.0100s', '30', '1"', '1"3' (1.3 s),
    '2.5"'. None for 'bulb', 'time', 'auto' and anything else."""
    s = str(text).strip().lower().replace("sec", "s").replace("″", '"')
    m = re.fullmatch(r"(\d+)\s*/\s*" + _NUM + r"\s*s?", s)
    if m:
        den = float(m.group(2))
        return float(m.group(1)) / den if den > 0 and float(m.group(1)) > 0 else None
    m = re.fullmatch(r'(\d+)"(\d+)', s)  # Canon/Nikon 1"3 = 1.3 s
    if m:
        return float(f"{m.group(1)}.{m.group(2)}") or None
    m = re.fullmatch(_NUM + r'\s*(?:s|")?', s)
    if m:
        v = float(m.group(1))
        return v if v > 0 else None
    return None


def parse_iso(text: str) -> int | None:
    """'100', 'ISO 100', 'iso6400' -> int; None for 'Auto', 'Hi 1', …"""
    m = re.fullmatch(r"(?:iso\s*)?(\d+)", str(text).strip().lower())
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1))


def format_shutter(shutter_s: float) -> str:
    """0.001 -> '1/1000 s', 0.5 -> '0.5 s', 2 -> '2 s'."""
    if 0 < shutter_s < 0.3:
        return f"1/{1.0 / shutter_s:.4g} s"
    return f"{shutter_s:.4g} s"


def _offers(label: str, choices: Iterable[str], limit: int = 80) -> str:
    c = list(choices)
    shown = ", ".join(c[:limit]) + (f", … ({len(c)} in all)" if len(c) > limit else "")
    return f"{label} offers: {shown or 'nothing'}"


def _nearest(target: float, choices: Iterable[str], parse: Callable[[str], float | int | None],
             distance: Callable[[float, float], float]) -> tuple[str, float, float] | None:
    """(choice, value, distance) of the parseable choice closest to ``target``; None if none parse."""
    best: tuple[str, float, float] | None = None
    for c in choices:
        v = parse(c)
        if v is None or v <= 0:
            continue
        d = distance(float(v), target)
        if best is None or d < best[2] - _EPS:
            best = (c, float(v), d)
    return best


def _stops(v: float, target: float) -> float:
    return abs(math.log2(v / target))


def choose_f_number(f_number: float, choices: Iterable[str], camera: str = "camera") -> tuple[str, float]:
    """The offered choice within 1 % of ``f_number`` (nearest) -> (choice, N); else SettingRejected."""
    choices = tuple(choices)
    if not f_number > 0:
        raise SettingRejected(f"f-number must be > 0, got {f_number}; nothing was set")
    best = _nearest(f_number, choices, parse_f_number, lambda v, t: abs(v / t - 1.0))
    if best is None or best[2] > F_NUMBER_REL_TOL + _EPS:
        raise SettingRejected(f"f/{f_number:g} is not offered by {camera} "
                              f"({_offers('aperture', choices)}); nothing was set")
    return best[0], best[1]


def choose_shutter(shutter_s: float, choices: Iterable[str], camera: str = "camera") -> tuple[str, float]:
    """The offered shutter nearest to ``shutter_s`` within 1/3 stop -> (choice, seconds)."""
    choices = tuple(choices)
    if not shutter_s > 0:
        raise SettingRejected(f"shutter time must be > 0 s, got {shutter_s}; nothing was set")
    best = _nearest(shutter_s, choices, parse_shutter_s, _stops)
    if best is None or best[2] > SHUTTER_TOL_STOPS + _EPS:
        raise SettingRejected(f"shutter {format_shutter(shutter_s)} is not offered by {camera} within "
                              f"1/3 stop ({_offers('shutter', choices)}); nothing was set")
    return best[0], best[1]


def choose_iso(iso: int, choices: Iterable[str], camera: str = "camera") -> tuple[str, int]:
    """The offered ISO nearest to ``iso`` within 1/3 stop -> (choice, ISO)."""
    choices = tuple(choices)
    if not iso > 0:
        raise SettingRejected(f"ISO must be > 0, got {iso}; nothing was set")
    best = _nearest(float(iso), choices, parse_iso, _stops)
    if best is None or best[2] > ISO_TOL_STOPS + _EPS:
        raise SettingRejected(f"ISO {iso} is not offered by {camera} within 1/3 stop "
                              f"({_offers('iso', choices)}); nothing was set")
    return best[0], int(best[1])


_TARGET_WORDS = {"sdram": ("ram", "sdram", "internal"), "card": ("card",)}


def choose_capture_target(target: str, choices: Iterable[str], camera: str = "camera") -> str:
    """'sdram' | 'card' (or an exact choice string) -> the camera's choice ('Internal RAM', 'Memory card')."""
    choices = tuple(choices)
    want = target.strip().lower()
    for c in choices:
        if c.lower() == want:
            return c
    alias = {"ram": "sdram", "internal": "sdram", "memory card": "card", "sd": "card"}.get(want, want)
    for c in choices:
        if any(w in c.lower() for w in _TARGET_WORDS.get(alias, ())):
            return c
    raise SettingRejected(f"capture target {target!r} is not offered by {camera} "
                          f"(use sdram or card; {_offers('capturetarget', choices)}); nothing was set")


_RAW_WORDS = ("raw", "nef", "cr2", "cr3", "crw", "arw", "dng", "orf", "raf", "rw2", "pef")
_JPEG_WORDS = ("jpeg", "jpg", "fine", "normal", "basic", "standard")


def _format_kind(choice: str) -> str | None:
    c = choice.lower()
    raw = any(w in c for w in _RAW_WORDS)
    jpeg = any(w in c for w in _JPEG_WORDS)
    if raw and jpeg:
        return "raw+jpeg"
    if raw:
        return "raw"
    if jpeg:
        return "jpeg"
    return None


def _format_quality(choice: str) -> int:
    """Higher = better JPEG part: fine > normal > basic, large > medium > small, plain raw > cRAW."""
    c = choice.lower()
    q = 0
    q += 4 if ("extra fine" in c or "fine" in c or "superfine" in c) else 2 if "normal" in c else 0
    q += 2 if "large" in c else 1 if "medium" in c else 0
    q -= 1 if ("craw" in c or "compressed" in c or "small" in c) else 0
    q -= 1 if "*" in c else 0  # Nikon 'JPEG Fine*' (optimal quality) is still fine; prefer the plain one
    return q


def choose_image_format(fmt: str, choices: Iterable[str], camera: str = "camera") -> str:
    """'jpeg' | 'raw' | 'raw+jpeg' (or an exact choice) -> the best-quality matching camera choice."""
    choices = tuple(choices)
    want = fmt.strip().lower().replace(" ", "")
    for c in choices:
        if c.lower() == fmt.strip().lower():
            return c
    want = {"jpg": "jpeg", "raw+jpg": "raw+jpeg", "jpeg+raw": "raw+jpeg", "nef": "raw"}.get(want, want)
    matching = [c for c in choices if _format_kind(c) == want]
    if not matching:
        raise SettingRejected(f"image format {fmt!r} is not offered by {camera} "
                              f"(use jpeg, raw or raw+jpeg; {_offers('imageformat', choices)}); nothing was set")
    return max(matching, key=_format_quality)  # max keeps the first of equal scores


# --- gphoto2 errors and the busy retry ------------------------------------------------------------

_gp_module: ModuleType | None = None


def _gp() -> ModuleType:
    """The gphoto2 module (imported on first use); DeviceError when python-gphoto2 is missing."""
    global _gp_module
    if _gp_module is None:
        try:
            import gphoto2
        except ImportError as exc:
            raise DeviceError(f"python-gphoto2 is not installed ({exc}): pip install gphoto2") from exc
        _gp_module = gphoto2
    return _gp_module


def _is_gphoto2_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "GPhoto2Error" and isinstance(getattr(exc, "code", None), int)


def _is_busy(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == GP_ERROR_CAMERA_BUSY or "busy" in str(exc).lower()


def map_gphoto2_error(exc: BaseException, op: str) -> DeviceError:
    """A gphoto2.GPhoto2Error raised during ``op`` -> the protocol's DeviceError subclass (one line)."""
    code = getattr(exc, "code", None)
    text = str(exc).replace("\n", " ")
    if code == GP_ERROR_IO_USB_CLAIM:
        return CameraClaimed(f"{op}: could not claim the USB camera — {CLAIM_HINT}")
    if code == GP_ERROR_IO_LOCK:
        return CameraClaimed(f"{op}: could not lock the camera port ({text}) — {CLAIM_HINT}")
    if _is_busy(exc):
        return DeviceBusy(f"{op}: camera busy ({text}) — wait until it has finished writing, then retry")
    if code == GP_ERROR_TIMEOUT:
        return DeviceTimeout(f"{op}: camera did not answer in time ({text}) — check the USB cable; "
                             "a sleeping camera wakes on a half-press of the shutter button")
    if code in (GP_ERROR_IO_USB_FIND, GP_ERROR_MODEL_NOT_FOUND, GP_ERROR_IO):
        return DeviceDisconnected(f"{op}: lost the camera ({text}) — check the USB cable and that the camera "
                                  "is on; files already saved are kept")
    if code in (GP_ERROR_CORRUPTED_DATA, GP_ERROR_IO_READ, GP_ERROR_IO_WRITE):
        return TransferError(f"{op}: transfer failed ({text}) — retry; check the USB cable")
    if code == GP_ERROR_NO_SPACE:
        return DeviceError(f"{op}: camera storage full ({text}) — free the card or capture to sdram")
    if code == GP_ERROR_LIBRARY:
        return DeviceError(f"{op}: libgphoto2 could not load its port/camera drivers ({text}) — check the "
                           "IOLIBS/CAMLIBS environment variables or reinstall python-gphoto2")
    return DeviceError(f"{op} failed: {text}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for PTP busy: delays base, base·factor, … capped at max_delay_s."""

    attempts: int = 6
    base_delay_s: float = 0.1
    factor: float = 2.0
    max_delay_s: float = 2.0

    def delays_s(self) -> list[float]:
        """The sleeps between the ``attempts`` tries (attempts − 1 of them)."""
        return [min(self.base_delay_s * self.factor ** i, self.max_delay_s) for i in range(self.attempts - 1)]


DEFAULT_RETRY = RetryPolicy()


def call_with_retry(fn: Callable[..., T], *args: Any, op: str, policy: RetryPolicy = DEFAULT_RETRY,
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn(*args)``, retrying gphoto2 "busy" errors with backoff; other gphoto2 errors are mapped by
    :func:`map_gphoto2_error` (busy after the last attempt -> DeviceBusy). Non-gphoto2 errors pass."""
    delays = policy.delays_s()
    for attempt in range(max(policy.attempts, 1)):
        try:
            return fn(*args)
        except Exception as exc:
            if not _is_gphoto2_error(exc):
                raise
            if _is_busy(exc) and attempt < len(delays):
                log.info("%s: camera busy (%s), retry %d/%d in %.3f s", op, exc, attempt + 1,
                         policy.attempts - 1, delays[attempt])
                sleep(delays[attempt])
                continue
            err = map_gphoto2_error(exc, op)
            if isinstance(err, DeviceBusy):
                err = DeviceBusy(f"{op}: camera still busy after {attempt + 1} attempts over "
                                 f"{sum(delays[:attempt]):.2f} s — wait until it has finished writing, then retry")
            raise err from exc
    raise AssertionError("unreachable")  # pragma: no cover


# --- detection ------------------------------------------------------------------------------------

def detect_cameras() -> list[tuple[str, str]]:
    """(model, port) of every camera libgphoto2 auto-detects; DeviceError on library failure."""
    gp = _gp()
    cams = call_with_retry(gp.Camera.autodetect, op="detect cameras")
    return [(cams.get_name(i), cams.get_value(i)) for i in range(cams.count())]


def detect() -> tuple[list[str], str]:
    """(['<model> on <port>', …], reason) — reason is '' when a camera was found. Never raises."""
    try:
        found = detect_cameras()
    except DeviceError as exc:
        return [], str(exc)
    except Exception as exc:  # noqa: BLE001 - detection must never raise
        return [], f"gphoto2 detection failed: {exc}"
    if not found:
        return [], NO_CAMERA_MSG
    return [f"{model} on {port}" for model, port in found], ""


# --- the driver -----------------------------------------------------------------------------------

_JPEG_SUFFIXES = (".jpg", ".jpeg")


def _widget_choices(w: Any) -> tuple[str, ...]:
    gp = _gp()
    if w.get_type() in (gp.GP_WIDGET_RADIO, gp.GP_WIDGET_MENU):
        return tuple(str(c) for c in w.get_choices())
    return ()


def _widget_value(w: Any) -> str:
    try:
        v = w.get_value()
    except Exception:  # noqa: BLE001 - some widgets (buttons) have no value
        return ""
    return "" if v is None else str(v)


class Gphoto2Dslr:
    """A tethered DSLR through libgphoto2.

    port: a gphoto2 port ('usb:001,004') to pick one of several cameras; None = the first detected.
    retry: backoff for PTP busy. After a capture the camera's events are read until a quiet period of
    event_timeout_ms (at least 1 s in RAW+JPEG mode, whose second file arrives as a FILE_ADDED event)
    or event_drain_s in all.
    keep_on_camera: keep the shot on the camera after download; None = keep unless captured to RAM.
    verify_aperture: raise ApertureMismatch when the shot's EXIF FNumber differs from the f-number set.
    """

    def __init__(self, port: str | None = None, *, retry: RetryPolicy = DEFAULT_RETRY,
                 event_timeout_ms: int = 200, event_drain_s: float = 3.0,
                 keep_on_camera: bool | None = None, verify_aperture: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.port = port
        self.model = "unknown"
        self.retry = retry
        self.event_timeout_ms = int(event_timeout_ms)
        self.event_drain_s = float(event_drain_s)
        self.keep_on_camera = keep_on_camera
        self.verify_aperture = verify_aperture
        self.last_files: list[Path] = []  # every file the last capture() wrote (RAW+JPEG: two)
        self._sleep = sleep
        self._camera: Any = None
        self._names: dict[str, str] = {}  # normalised -> gphoto2 widget name

    # -- lifecycle --
    def open(self) -> None:
        """Detect and initialise the camera (DeviceError with what to do when there is none)."""
        if self._camera is not None:
            return
        gp = _gp()
        found = detect_cameras()
        if not found:
            raise DeviceError(NO_CAMERA_MSG)
        if self.port is not None:
            listed = ", ".join(f"{m} on {p}" for m, p in found)
            found = [(m, p) for m, p in found if p == self.port]
            if not found:
                raise DeviceError(f"no camera on port {self.port} (found: {listed})")
        model, port = found[0]
        camera = gp.Camera()

        def bind() -> None:  # to exactly this camera: several may be attached
            abilities = gp.CameraAbilitiesList()
            abilities.load()
            camera.set_abilities(abilities.get_abilities(abilities.lookup_model(model)))
            ports = gp.PortInfoList()
            ports.load()
            camera.set_port_info(ports.get_info(ports.lookup_path(port)))

        self._call(bind, op=f"select {model} on {port}")
        self._call(camera.init, op=f"open {model} on {port}")
        self._camera = camera
        self.model = model
        self.port = port
        try:
            self._names = self._resolve_names(self._walk())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the camera (safe to call twice)."""
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.exit()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.debug("camera.exit() failed: %s", exc)

    def __enter__(self) -> "Gphoto2Dslr":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --
    def _call(self, fn: Callable[..., T], *args: Any, op: str) -> T:
        return call_with_retry(fn, *args, op=op, policy=self.retry, sleep=self._sleep)

    def _cam(self) -> Any:
        if self._camera is None:
            raise DeviceError("camera is not open (call open() or use `with Gphoto2Dslr() as dslr:`)")
        return self._camera

    def _walk(self) -> list[Any]:
        """Every leaf widget of the camera's config tree."""
        gp = _gp()
        root = self._call(self._cam().get_config, op="read camera settings")
        leaves: list[Any] = []
        stack = [root]
        while stack:
            w = stack.pop()
            if w.get_type() in (gp.GP_WIDGET_WINDOW, gp.GP_WIDGET_SECTION):
                stack.extend(w.get_child(i) for i in reversed(range(w.count_children())))
            else:
                leaves.append(w)
        return leaves

    @staticmethod
    def _resolve_names(leaves: list[Any]) -> dict[str, str]:
        """Normalised name -> the widget to use: the first alias present and writable, else present."""
        by_name = {w.get_name(): w for w in leaves}
        names: dict[str, str] = {}
        for norm, aliases in SETTING_ALIASES.items():
            present = [a for a in aliases if a in by_name]
            writable = [a for a in present if not by_name[a].get_readonly()]
            if writable or present:
                names[norm] = (writable or present)[0]
        return names

    def settings(self) -> dict[str, Setting]:
        """Every setting: the normalised ones first, then every other widget by its gphoto2 name."""
        leaves = self._walk()
        self._names = self._resolve_names(leaves)
        by_name = {w.get_name(): w for w in leaves}
        out: dict[str, Setting] = {}
        for norm, name in self._names.items():
            w = by_name[name]
            out[norm] = Setting(norm, _widget_value(w), _widget_choices(w), bool(w.get_readonly()))
        used = set(self._names.values())
        for name, w in by_name.items():
            if name not in used and name not in out:
                out[name] = Setting(name, _widget_value(w), _widget_choices(w), bool(w.get_readonly()))
        return out

    def _widget(self, norm: str) -> tuple[str, Any]:
        name = self._names.get(norm)
        if name is None:
            raise SettingRejected(f"{self.model} has no {norm} setting "
                                  f"(it offers: {', '.join(sorted(self._names)) or 'none of the rig settings'})")
        return name, self._call(self._cam().get_single_config, name, op=f"read {name}")

    def read(self, norm: str) -> str:
        """Current value string of a normalised setting ('' when the camera lacks it)."""
        if norm not in self._names:
            return ""
        return _widget_value(self._widget(norm)[1])

    def _apply(self, norm: str, choose: Callable[[tuple[str, ...]], str]) -> str:
        """Validate with ``choose`` against the widget's own choices, set, read back; returns the value."""
        gp = _gp()
        name, w = self._widget(norm)
        choices = _widget_choices(w)
        if w.get_type() not in (gp.GP_WIDGET_RADIO, gp.GP_WIDGET_MENU):
            raise SettingRejected(f"{self.model}: {name} is not a choice list; refusing to set it unvalidated")
        if w.get_readonly():
            raise SettingRejected(f"{self.model}: {name} is read-only now — set the mode dial to M (manual) "
                                  "and the lens to its minimum aperture, then retry")
        choice = choose(choices)
        if choice not in choices:  # choose() only returns offered values; never hand libgphoto2 another
            raise SettingRejected(f"{self.model}: {choice!r} is not one of {name}'s choices; nothing was set")
        if _widget_value(w) != choice:
            w.set_value(choice)
            self._call(self._cam().set_single_config, name, w, op=f"set {name}={choice}")
        back = _widget_value(self._widget(norm)[1])
        for _ in range(2):  # some bodies report the new value a moment later
            if back == choice:
                break
            self._sleep(self.retry.base_delay_s)
            back = _widget_value(self._widget(norm)[1])
        if back != choice:
            raise SettingNotApplied(f"{self.model} kept {name}={back!r} after setting {choice!r} — set the mode "
                                    "dial to M (manual) and check the lens is coupled, then retry")
        return back

    # -- settings --
    def set_aperture(self, f_number: float) -> float:
        back = self._apply("aperture", lambda ch: choose_f_number(f_number, ch, self.model)[0])
        return float(parse_f_number(back) or f_number)

    def set_shutter(self, shutter_s: float) -> float:
        back = self._apply("shutter", lambda ch: choose_shutter(shutter_s, ch, self.model)[0])
        return float(parse_shutter_s(back) or shutter_s)

    def set_iso(self, iso: int) -> int:
        back = self._apply("iso", lambda ch: choose_iso(int(iso), ch, self.model)[0])
        return int(parse_iso(back) or iso)

    def set_capture_target(self, target: str) -> str:
        return self._apply("capturetarget", lambda ch: choose_capture_target(target, ch, self.model))

    def set_image_format(self, fmt: str) -> str:
        return self._apply("imageformat", lambda ch: choose_image_format(fmt, ch, self.model))

    # -- capture --
    def _drain_events(self) -> list[tuple[str, str]]:
        """Files the camera announces after a capture (FILE_ADDED), until a quiet period or the deadline."""
        gp = _gp()
        cam = self._cam()
        added: list[tuple[str, str]] = []
        timeout_ms = self.event_timeout_ms
        if "imageformat" in self._names and _format_kind(self.read("imageformat")) == "raw+jpeg":
            timeout_ms = max(timeout_ms, RAW_JPEG_EVENT_TIMEOUT_MS)  # the second file can take a moment
        deadline = time.monotonic() + self.event_drain_s
        while time.monotonic() < deadline:
            kind, data = self._call(cam.wait_for_event, timeout_ms, op="wait for camera events")
            if kind == gp.GP_EVENT_TIMEOUT:
                break
            if kind == gp.GP_EVENT_FILE_ADDED:
                added.append((data.folder, data.name))
        return added

    def _download(self, folder: str, name: str) -> bytes:
        """The file's bytes, checked against the size the camera reports (TransferError retried)."""
        gp = _gp()
        cam = self._cam()
        op = f"download {folder}/{name}"
        last: TransferError | None = None
        for _ in range(max(self.retry.attempts, 1)):
            cf = self._call(cam.file_get, folder, name, gp.GP_FILE_TYPE_NORMAL, op=op)
            data = bytes(memoryview(cf.get_data_and_size()))
            try:
                info = self._call(cam.file_get_info, folder, name, op=f"{op} (info)")
                size = int(info.file.size) if info.file.fields & gp.GP_FILE_INFO_SIZE else None
            except DeviceError:
                size = None
            problem = ""
            if size is not None and size != len(data):
                problem = f"got {len(data)} of {size} bytes"
            elif name.lower().endswith(_JPEG_SUFFIXES) and not (
                    data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-64:]):
                problem = "JPEG start/end markers missing (truncated)"
            if not problem:
                return data
            last = TransferError(f"{op}: {problem} — check the USB cable and retry")
            log.warning("%s", last)
        assert last is not None
        raise last

    def _f_number_now(self) -> float | None:
        return parse_f_number(self.read("aperture")) if "aperture" in self._names else None

    def capture(self, dest: Path) -> ShotFile:
        """Trigger, download atomically to ``dest``, then collect any further file the camera announces
        (a RAW+JPEG pair: the file whose type matches dest's suffix goes to dest, the other next to it
        with its own suffix), read EXIF, verify the aperture. Each file is on disk (and only then
        deleted from a camera capturing to RAM) before the next step can fail."""
        gp = _gp()
        cam = self._cam()
        dest = Path(dest)
        want_jpeg = dest.suffix.lower() in _JPEG_SUFFIXES
        f_number = self._f_number_now()
        shutter_s = parse_shutter_s(self.read("shutter")) if "shutter" in self._names else None
        iso = parse_iso(self.read("iso")) if "iso" in self._names else None
        keep = self.keep_on_camera
        if keep is None:  # a shot captured to the camera's RAM exists nowhere else: free the buffer once saved
            keep = "ram" not in self.read("capturetarget").lower()
        written: dict[Path, bytes] = {}
        self.last_files = []

        def save(folder: str, name: str) -> None:
            data = self._download(folder, name)
            sfx = Path(name).suffix.lower()
            out = dest if (sfx == dest.suffix.lower() or (want_jpeg and sfx in _JPEG_SUFFIXES)) \
                else dest.with_suffix(sfx)
            i = 1
            while out in written:  # a further file of the same type: next to dest, never over it
                out = dest.with_name(f"{dest.stem}-{i}{sfx}")
                i += 1
            atomic_write_bytes(out, data)
            written[out] = data
            self.last_files.append(out)
            if not keep:
                try:
                    self._call(cam.file_delete, folder, name, op=f"delete {folder}/{name} from the camera")
                except DeviceError as exc:  # the file is safe on disk; a full buffer shows up later
                    log.warning("%s", exc)

        path = self._call(cam.capture, gp.GP_CAPTURE_IMAGE, op=f"capture ({self.model})")
        save(path.folder, path.name)
        for folder, name in self._drain_events():
            if (folder, name) != (path.folder, path.name):
                save(folder, name)
        primary_path = dest if dest in written else self.last_files[0]
        primary_data = written[primary_path]

        exif = read_exif(primary_data)
        exif_n = exif.get("FNumber")
        if (self.verify_aperture and f_number is not None and exif_n is not None
                and abs(float(exif_n) / f_number - 1.0) > EXIF_APERTURE_REL_TOL):
            raise ApertureMismatch(
                f"{primary_path}: EXIF says f/{float(exif_n):g} but the camera was set to f/{f_number:g} — the "
                "lens did not follow (aperture ring not locked at its minimum, or a manual lens); the file was kept")
        nan = float("nan")
        return ShotFile(
            path=primary_path,
            f_number=float(f_number if f_number is not None else exif.get("FNumber", nan)),
            shutter_s=float(shutter_s if shutter_s is not None else exif.get("ExposureTime", nan)),
            iso=int(iso if iso is not None else exif.get("ISOSpeedRatings", 0)),
            exif=exif,
        )


# --- exposure matching between the two apertures -------------------------------------------------

@dataclass(frozen=True)
class MatchedExposure:
    """The offered setting that keeps the second shot's exposure equal to the first's.

    mode: 'shutter' (change the shutter) or 'iso' (change the ISO); target: the ideal shutter (s) or
    ISO; choice/value: what the camera offers nearest to it; residual_stops: exposure of the second
    shot minus the first in stops (> 0 = brighter).
    """

    mode: str
    f_number_from: float
    f_number_to: float
    shutter_s: float  # of the second shot
    iso: int | None  # of the second shot (None: unknown, shutter mode on a camera without ISO)
    target: float
    choice: str
    residual_stops: float


def matched_exposure(dslr: Dslr, shutter_s: float, n_from: float, n_to: float, mode: str = "shutter",
                     iso: int | None = None, max_residual_stops: float = 1.0 / 3.0) -> MatchedExposure:
    """Choose the shutter (or ISO) for f/``n_to`` matching a shot at ``shutter_s``, f/``n_from``.

    The ideal value is optics.matched_shutter_s / matched_iso; the nearest value the camera offers is
    chosen; SettingRejected when even that is more than ``max_residual_stops`` off. Sets nothing.
    """
    if mode not in ("shutter", "iso"):
        raise SettingRejected(f"exposure match mode must be 'shutter' or 'iso', got {mode!r}")
    settings = dslr.settings()
    model = getattr(dslr, "model", "camera")
    if iso is None and "iso" in settings:
        iso = parse_iso(settings["iso"].value)
    key = mode
    if key not in settings or not settings[key].choices:
        raise SettingRejected(f"{model} offers no {key} choices, cannot match exposure by {key}")
    choices = settings[key].choices
    if mode == "shutter":
        target = matched_shutter_s(shutter_s, n_from, n_to)
        best = _nearest(target, choices, parse_shutter_s, _stops)
        iso_to = iso
    else:
        if iso is None:
            raise SettingRejected(f"{model}: current ISO is {settings['iso'].value!r} (not a number); "
                                  "pass the base ISO to match exposure by ISO")
        target = matched_iso(iso, n_from, n_to)
        best = _nearest(target, choices, parse_iso, _stops)
        iso_to = int(best[1]) if best else None
    if best is None:
        raise SettingRejected(f"{model}: no numeric {key} choices ({_offers(key, choices)})")
    choice, value, _ = best
    shutter_to = value if mode == "shutter" else shutter_s
    iso_ref = float(iso) if iso else 100.0
    residual = (exposure_stops(shutter_to, n_to, float(iso_to) if (mode == "iso" and iso_to) else iso_ref)
                - exposure_stops(shutter_s, n_from, iso_ref))
    if abs(residual) > max_residual_stops + _EPS:
        want = format_shutter(target) if mode == "shutter" else f"ISO {target:.0f}"
        raise SettingRejected(f"{model}: nearest offered {key} to {want} is {choice} ({residual:+.2f} stops, "
                              f"limit ±{max_residual_stops:.2f}); {_offers(key, choices)}")
    return MatchedExposure(mode=mode, f_number_from=float(n_from), f_number_to=float(n_to),
                           shutter_s=float(shutter_to), iso=iso_to, target=float(target), choice=choice,
                           residual_stops=float(residual))
