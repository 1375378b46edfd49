"""Device protocols every driver implements (gphoto2, RealSense, OpenNI2, simulated).

Errors: drivers raise :class:`rig.core.errors.DeviceError` subclasses below with one-line messages that
say what to do. Settings are validated against the device's own choices before being set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rig.core.errors import DeviceError
from rig.core.records import Intrinsics


class DeviceBusy(DeviceError):
    """Transient: the device said busy (PTP busy); retry with backoff."""


class DeviceDisconnected(DeviceError):
    """The device went away (unplugged, powered off)."""


class DeviceTimeout(DeviceError):
    """An operation did not finish in time."""


class TransferError(DeviceError):
    """A file arrived truncated or corrupt."""


class SettingRejected(DeviceError):
    """A value the device does not offer (exit code 2: it is bad input)."""

    exit_code = 2


TRANSIENT_ERRORS: tuple[type[DeviceError], ...] = (DeviceBusy, DeviceTimeout, TransferError)


@dataclass(frozen=True)
class Setting:
    """One camera setting: its current value and the values the device offers (empty = free text)."""

    name: str
    value: str
    choices: tuple[str, ...] = ()
    readonly: bool = False


@dataclass
class ShotFile:
    """A captured image downloaded to ``path`` with the settings it was taken with."""

    path: Path
    f_number: float
    shutter_s: float
    iso: int
    exif: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Dslr(Protocol):
    """A tethered stills camera."""

    model: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def settings(self) -> dict[str, Setting]:
        """Every setting by its normalised name ('aperture', 'shutter', 'iso', 'capturetarget', 'imageformat', …)."""
        ...

    def set_aperture(self, f_number: float) -> float:
        """Set the nearest offered f-number within 1 %; returns the value set; SettingRejected otherwise."""
        ...

    def set_shutter(self, shutter_s: float) -> float:
        """Set the nearest offered shutter speed (within 1/3 stop); returns the value set."""
        ...

    def set_iso(self, iso: int) -> int: ...

    def set_capture_target(self, target: str) -> str: ...

    def set_image_format(self, fmt: str) -> str: ...

    def capture(self, dest: Path) -> ShotFile:
        """Trigger, download to ``dest`` (written atomically), read back settings + EXIF."""
        ...


@runtime_checkable
class DepthSensor(Protocol):
    """An RGB-D / depth camera (or a recording of one)."""

    model: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def intrinsics(self) -> Intrinsics:
        """Of the depth image."""
        ...

    def depth_scale_m(self) -> float:
        """Metres per raw depth unit."""
        ...

    def read_depth(self) -> np.ndarray:
        """One depth frame, (H, W) uint16 in the sensor's raw units (0 = no measurement)."""
        ...

    def read_ir(self) -> np.ndarray | None:
        """One IR frame (H, W) uint8/uint16, or None when the sensor has none."""
        ...


def fuse_depth_burst(frames: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per-pixel median of a burst ignoring zeros (no measurement); 0 where every frame is 0.

    frames: N x (H, W) uint16 -> (H, W) uint16.
    """
    stack = np.asarray(frames)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError("expected a non-empty stack of (H, W) frames")
    # Sort with zeros pushed to the end; the median of the n valid values sits at (n-1)//2 and n//2.
    data = np.where(stack == 0, np.inf, stack.astype(np.float32))
    data.sort(axis=0)
    n = (stack != 0).sum(axis=0)
    lo = np.take_along_axis(data, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(data, np.maximum(n // 2, 0)[None], axis=0)[0]
    med = np.where(n > 0, (lo + hi) * 0.5, 0.0)  # n == 0: lo = hi = inf, replaced by 0
    return np.rint(med).astype(stack.dtype)


def read_depth_burst(sensor: DepthSensor, n_frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Read ``n_frames`` from a started sensor and fuse them; returns (frames, fused)."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    frames = [sensor.read_depth() for _ in range(n_frames)]
    return frames, fuse_depth_burst(frames)
