"""The virtual DSLR (:class:`SimulatedDslr`): settings it offers, JPEG + EXIF it writes."""

from __future__ import annotations

import struct
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from acquisition.protocols import DeviceBusy, DeviceDisconnected, DeviceTimeout, Setting, ShotFile
from acquisition.simulated.faults import _timed
from acquisition.simulated.world import SimulatedRig
from rig.core.config import RigConfig
from rig.core.errors import DeviceError
from rig.core.imageio import atomic_write_bytes


F_NUMBERS: tuple[float, ...] = (1.8, 2.0, 2.2, 2.5, 2.8, 3.2, 3.5, 4.0, 4.5, 5.0, 5.6, 6.3, 7.1, 8.0, 9.0,
                                10.0, 11.0, 13.0, 14.0, 16.0, 18.0, 20.0, 22.0)
SHUTTER_CHOICES: tuple[str, ...] = (
    "1/4000", "1/3200", "1/2500", "1/2000", "1/1600", "1/1250", "1/1000", "1/800", "1/640", "1/500",
    "1/400", "1/320", "1/250", "1/200", "1/160", "1/125", "1/100", "1/80", "1/60", "1/50", "1/40", "1/30",
    "1/25", "1/20", "1/15", "1/13", "1/10", "1/8", "1/6", "1/5", "1/4", "0.3", "0.4", "0.5", "0.6", "0.8",
    "1", "1.3", "1.6", "2", "2.5", "3.2", "4", "5", "6", "8", "10", "13", "15", "20", "25", "30")
ISO_CHOICES: tuple[int, ...] = (100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000, 1250, 1600, 2000,
                                2500, 3200, 4000, 5000, 6400)
CAPTURE_TARGETS: tuple[str, ...] = ("Internal RAM", "Memory card")
IMAGE_FORMATS: tuple[str, ...] = ("JPEG Fine",)  # the simulated camera writes JPEG only

# ------------------------------------------------------------------------------------------ JPEG/EXIF
def _rational(x: float) -> tuple[int, int]:
    f = Fraction(float(x)).limit_denominator(100000)
    return f.numerator, f.denominator


def exif_app1(make: str, model: str, f_number: float, exposure_s: float, iso: int, focal_mm: float,
              datetime_original: str) -> bytes:
    """A minimal EXIF APP1 segment (little-endian TIFF: IFD0 Make/Model + Exif IFD)."""
    def ascii_(s: str) -> bytes:
        return s.encode("ascii", "replace") + b"\x00"

    ifd0 = [(0x010F, 2, ascii_(make)), (0x0110, 2, ascii_(model)), (0x8769, 4, None)]
    exif = [(0x829A, 5, struct.pack("<II", *_rational(exposure_s))),
            (0x829D, 5, struct.pack("<II", *_rational(f_number))),
            (0x8827, 3, struct.pack("<H", int(min(iso, 65535)))),
            (0x9003, 2, ascii_(datetime_original)),
            (0x920A, 5, struct.pack("<II", *_rational(focal_mm)))]
    type_size = {2: 1, 3: 2, 4: 4, 5: 8}

    def ifd_size(entries: list) -> int:
        return 2 + 12 * len(entries) + 4

    def data_size(entries: list) -> int:
        return sum(len(v) + (len(v) & 1) for _, _, v in entries if v is not None and len(v) > 4)

    ifd0_off = 8
    exif_off = ifd0_off + ifd_size(ifd0) + data_size(ifd0)

    def build(entries: list, off: int, exif_ptr: int | None) -> bytes:
        head = struct.pack("<H", len(entries))
        data = b""
        data_off = off + ifd_size(entries)
        for tag, typ, val in entries:
            if val is None:  # the Exif IFD pointer
                head += struct.pack("<HHII", tag, 4, 1, exif_ptr or 0)
                continue
            count = len(val) // type_size[typ]
            if len(val) <= 4:
                head += struct.pack("<HHI", tag, typ, count) + val.ljust(4, b"\x00")
            else:
                head += struct.pack("<HHII", tag, typ, count, data_off + len(data))
                data += val + (b"\x00" if len(val) & 1 else b"")
        return head + struct.pack("<I", 0) + data

    tiff = b"II*\x00" + struct.pack("<I", ifd0_off) + build(ifd0, ifd0_off, exif_off) + build(exif, exif_off, None)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def insert_app1(jpeg: bytes, app1: bytes) -> bytes:
    """Insert an APP1 segment after SOI and a leading JFIF APP0, if any."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + app1 + jpeg[pos:]


class SimulatedDslr:
    """A virtual tethered DSLR (:class:`acquisition.protocols.Dslr`) viewing the simulated world."""

    def __init__(self, cfg: RigConfig, rig: SimulatedRig | None = None) -> None:
        self.cfg = cfg
        self.rig = rig if rig is not None else SimulatedRig(cfg)
        self.model = cfg.dslr.model
        self._open = False
        self._f_number = F_NUMBERS[0]
        self._shutter = "1/100"
        self._iso = 100
        self._target = CAPTURE_TARGETS[0]
        self._format = IMAGE_FORMATS[0]
        self._shots = 0
        self._rng = np.random.default_rng([cfg.simulated.seed, 11])

    # -- connection ------------------------------------------------------------------------------
    @_timed("dslr.open")
    def open(self) -> None:
        self.rig.sleep("open")
        self._open = True

    def close(self) -> None:
        self._open = False

    def _check(self) -> None:
        if not self._open:
            raise DeviceDisconnected(f"{self.model}: not connected (open the camera first)")

    # -- settings --------------------------------------------------------------------------------
    def settings(self) -> dict[str, Setting]:
        self._check()
        return {
            "aperture": Setting("aperture", f"f/{self._f_number:g}", tuple(f"f/{n:g}" for n in F_NUMBERS)),
            "shutter": Setting("shutter", self._shutter, SHUTTER_CHOICES),
            "iso": Setting("iso", str(self._iso), tuple(str(i) for i in ISO_CHOICES)),
            "capturetarget": Setting("capturetarget", self._target, CAPTURE_TARGETS),
            "imageformat": Setting("imageformat", self._format, IMAGE_FORMATS),
            "focallength": Setting("focallength", f"{self.cfg.dslr.focal_mm:g}", (), readonly=True),
        }

    def _set(self, op: str) -> None:
        self._check()
        self.rig.sleep("set")

    @_timed("dslr.set")
    def set_aperture(self, f_number: float) -> float:
        from acquisition.gphoto2_driver import choose_f_number, parse_f_number

        choice, _ = choose_f_number(f_number, self.settings()["aperture"].choices, self.model)
        self._set("aperture")
        self._f_number = float(parse_f_number(choice) or f_number)
        return self._f_number

    @_timed("dslr.set")
    def set_shutter(self, shutter_s: float) -> float:
        from acquisition.gphoto2_driver import choose_shutter

        choice, value = choose_shutter(shutter_s, SHUTTER_CHOICES, self.model)
        self._set("shutter")
        self._shutter = choice
        return value

    @_timed("dslr.set")
    def set_iso(self, iso: int) -> int:
        from acquisition.gphoto2_driver import choose_iso

        choice, value = choose_iso(int(iso), tuple(str(i) for i in ISO_CHOICES), self.model)
        self._set("iso")
        self._iso = int(value)
        return self._iso

    @_timed("dslr.set")
    def set_capture_target(self, target: str) -> str:
        from acquisition.gphoto2_driver import choose_capture_target

        choice = choose_capture_target(target, CAPTURE_TARGETS, self.model)
        self._set("capturetarget")
        self._target = choice
        return choice

    @_timed("dslr.set")
    def set_image_format(self, fmt: str) -> str:
        from acquisition.gphoto2_driver import choose_image_format

        choice = choose_image_format(fmt, IMAGE_FORMATS, self.model)
        self._set("imageformat")
        self._format = choice
        return choice

    @property
    def shutter_s(self) -> float:
        from acquisition.gphoto2_driver import parse_shutter_s

        return float(parse_shutter_s(self._shutter) or 0.01)

    # -- capture ---------------------------------------------------------------------------------
    @_timed("dslr.capture")
    def capture(self, dest: Path) -> ShotFile:
        """Render the current scene through the current aperture/shutter/ISO, 'download' to ``dest``.

        Faults (cfg.faults): busy (before the trigger), timeout (after blocking), disconnect (mid
        transfer; the camera stays disconnected until ``open``), truncated (the file written to
        ``dest`` is cut short — the caller's decode check must catch it).
        """
        import cv2

        self._check()
        fault = self.rig.faults.draw(("busy", "timeout", "disconnect", "truncated"))
        if fault == "busy":
            raise DeviceBusy(f"{self.model}: PTP device busy (simulated)")
        if fault == "timeout":
            self.rig.sleep("timeout")
            raise DeviceTimeout(f"{self.model}: capture timed out (simulated)")
        t0 = time.perf_counter()
        shutter_s = self.shutter_s
        lin = self.rig.defocused_linear(self._f_number)
        rgb = self.rig.expose(lin, self._f_number, shutter_s, self._iso, self._rng)
        if tuple(rgb.shape[1::-1]) != tuple(self.cfg.dslr.sensor_px):
            rgb = cv2.resize(rgb, tuple(self.cfg.dslr.sensor_px), interpolation=cv2.INTER_LINEAR)
        self.rig.sleep("trigger", extra_s=shutter_s, spent_s=time.perf_counter() - t0)
        if fault == "disconnect":
            self._open = False
            raise DeviceDisconnected(f"{self.model}: USB disconnected during capture (simulated)")
        t1 = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise DeviceError(f"{self.model}: JPEG encoding failed")
        now = time.localtime()
        dto = time.strftime("%Y:%m:%d %H:%M:%S", now)
        exif = {"FNumber": float(self._f_number), "ExposureTime": float(shutter_s), "ISOSpeedRatings": int(self._iso),
                "FocalLength": float(self.cfg.dslr.focal_mm), "DateTimeOriginal": dto, "Model": self.model}
        data = insert_app1(buf.tobytes(), exif_app1("Deep-DFD", self.model, self._f_number, shutter_s, self._iso,
                                                    self.cfg.dslr.focal_mm, dto))
        if fault == "truncated":
            cut = float(self.rig.faults.rng.uniform(0.2, 0.95))
            data = data[: int(len(data) * cut)]
        dest = Path(dest)
        atomic_write_bytes(dest, data)
        self._shots += 1
        self.rig.sleep("download", spent_s=time.perf_counter() - t1)
        return ShotFile(path=dest, f_number=float(self._f_number), shutter_s=float(shutter_s), iso=int(self._iso),
                        exif=exif)

    # -- simulated-only extras -------------------------------------------------------------------
    def ground_truth_depth_dslr(self, output_size: bool = True) -> np.ndarray:
        """True depth in the DSLR frame for the current scene (see :class:`SimulatedRig`)."""
        return self.rig.ground_truth_depth_dslr(output_size)
