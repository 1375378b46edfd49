"""libgphoto2's own virtual camera for device tests (the ``vusb`` port driver bundled in the gphoto2 wheel).

How it works (verified with python-gphoto2 2.6.4 / libgphoto2 2.5.34):

* ``IOLIBS`` selects libgphoto2's port drivers. ``import gphoto2`` sets it to the wheel's
  ``libgphoto2/iolibs`` (real USB) — or to ``libgphoto2/vusb`` when ``VCAMERADIR`` is already set —
  but libgphoto2 re-reads ``IOLIBS`` on every port-list load, so switching it in ``os.environ``
  after the import works in-process (no subprocess needed). ``CAMLIBS`` = the wheel's camlibs.
* The vusb driver always presents one camera, "Nikon DSC D750" on ``usb:001,001`` (a generic PTP
  camera: ``f-number`` f/2.8…f/22, ``shutterspeed`` 1 s…0.0001 s, ``capturetarget``; no ISO and no
  image-format setting). Settings reset to f/2.8, 1/100 s on every ``Camera.init()``.
* ``VCAMERADIR`` is the camera's storage. libgphoto2 reads that folder ONCE PER PROCESS (the first
  time a vusb camera is opened) and keeps the listing, so every test in a process shares one folder:
  :func:`vcamera_dir` creates it once. A capture duplicates the folder's JPEG (same bytes).
* The virtual card fills after 26 captures per process (then capture fails) — keep device tests
  frugal with captures.
* Setting a value that is not among a widget's choices (e.g. f-number 'f/1.4') SEGFAULTS the
  process inside libgphoto2 — go through the driver, which validates first.
* Extra events: the ptp2 'opcode' setting sends PTP opcodes; '0x9999,0x0,<ms hex>' makes the
  virtual camera add a file and announce it (FILE_ADDED) after that delay.

Use the ``vcamera`` fixture (import it into your test module: ``from vcamera import vcamera``) or
the :func:`vcamera_env` context manager.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

SOURCE_NAME = "DCIM/100NIKON/DSC_0001.JPG"
SOURCE_F_NUMBER = 2.8  # the EXIF FNumber of the virtual camera's only JPEG (= its default f-number)
SOURCE_EXPOSURE_S = 0.01
SOURCE_ISO = 320
SOURCE_FOCAL_MM = 35.0
SOURCE_MODEL = "NIKON D750"
SOURCE_SIZE_PX = (64, 48)  # width, height

_DIR: Path | None = None


def wheel_libgphoto2_dir() -> Path:
    """site-packages/gphoto2/libgphoto2 (holds camlibs/, iolibs/, vusb/). Found without importing gphoto2."""
    import importlib.util

    spec = importlib.util.find_spec("gphoto2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("python-gphoto2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "libgphoto2"


def pattern_rgb() -> np.ndarray:
    """A deterministic (48, 64, 3) uint8 RGB pattern (gradients + a square) for the camera's JPEG."""
    w, h = SOURCE_SIZE_PX
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=-1).astype(np.uint8)
    img[12:36, 20:44] = (250, 30, 30)
    return img




def jpeg_with_exif(rgb: np.ndarray, f_number: float | None = SOURCE_F_NUMBER,
                   exposure_s: float = SOURCE_EXPOSURE_S, iso: int = SOURCE_ISO,
                   focal_mm: float = SOURCE_FOCAL_MM, model: str = SOURCE_MODEL,
                   datetime_original: str = "2024:05:01 12:34:56", subsec: str = "25") -> bytes:
    """JPEG bytes with camera-style EXIF (RATIONAL FNumber/ExposureTime/FocalLength) written by Pillow.

    f_number=None leaves FNumber out.
    """
    from fractions import Fraction

    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    def rational(v: float) -> IFDRational:
        fr = Fraction(v).limit_denominator(100000)
        return IFDRational(fr.numerator, fr.denominator)

    exif = Image.Exif()
    exif[0x010F] = model.split()[0]  # Make
    exif[0x0110] = model  # Model
    sub = exif.get_ifd(0x8769)  # Exif sub-IFD
    if f_number is not None:
        sub[0x829D] = rational(f_number)  # FNumber
    sub[0x829A] = rational(exposure_s)  # ExposureTime
    sub[0x8827] = int(iso)  # ISOSpeedRatings
    sub[0x920A] = rational(focal_mm)  # FocalLength
    sub[0x9003] = datetime_original  # DateTimeOriginal
    sub[0x9291] = subsec  # SubSecTimeOriginal
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def vcamera_dir() -> Path:
    """This process's VCAMERADIR (created once): DCIM/100NIKON/DSC_0001.JPG with EXIF f/2.8."""
    global _DIR
    if _DIR is None:
        root = Path(tempfile.mkdtemp(prefix="rig-vcamera-"))
        atexit.register(shutil.rmtree, root, True)  # ignore_errors
        src = root / SOURCE_NAME
        src.parent.mkdir(parents=True)
        src.write_bytes(jpeg_with_exif(pattern_rgb()))
        _DIR = root
    return _DIR


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def vcamera_env() -> Iterator[Path]:
    """Point libgphoto2 at the virtual camera (VCAMERADIR, IOLIBS=vusb, CAMLIBS); restores the env after.

    Yields the VCAMERADIR folder.
    """
    lib = wheel_libgphoto2_dir()
    vusb = lib / "vusb"
    if not (vusb / "vusb.so").exists() and not list(vusb.glob("vusb*")):
        pytest.skip(f"the gphoto2 wheel has no virtual-camera port driver in {vusb}")
    d = vcamera_dir()
    with _environ(VCAMERADIR=str(d), IOLIBS=str(vusb), CAMLIBS=str(lib / "camlibs")):
        yield d


@contextmanager
def no_camera_env(tmp: Path) -> Iterator[None]:
    """libgphoto2 with a real port driver that has nothing attached (only ptpip: no auto-detectable port)."""
    lib = wheel_libgphoto2_dir()
    iolibs = Path(tmp) / "iolibs-empty-bus"
    iolibs.mkdir(parents=True, exist_ok=True)
    link = iolibs / "ptpip.so"
    if not link.exists():
        link.symlink_to(lib / "iolibs" / "ptpip.so")
    with _environ(IOLIBS=str(iolibs), CAMLIBS=str(lib / "camlibs")):
        yield


@dataclass(frozen=True)
class VCamera:
    """The virtual camera's storage folder and its source JPEG (what every capture returns)."""

    root: Path
    source: Path
    f_number: float = SOURCE_F_NUMBER


@pytest.fixture
def vcamera() -> Iterator[VCamera]:
    """Env set for libgphoto2's virtual Nikon D750 during the test (see module docstring)."""
    with vcamera_env() as root:
        yield VCamera(root=root, source=root / SOURCE_NAME)
