"""EXIF of a DSLR shot (JPEG or TIFF-based raw such as NEF), read with exifread.

Only the tags the rig records are returned, as plain Python values (YAML/JSON friendly):

    FNumber            float  (N, e.g. 2.8)
    ExposureTime       float  (seconds)
    ISOSpeedRatings    int
    FocalLength        float  (mm)
    DateTimeOriginal   str    ('YYYY:MM:DD HH:MM:SS', camera local time)
    SubSecTimeOriginal str    (fraction digits of DateTimeOriginal, e.g. '25' = .25 s)
    Model              str

Absent or unreadable tags are left out; a file without EXIF gives ``{}``.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from rig.core.errors import RigError

EXIF_KEYS: tuple[str, ...] = ("FNumber", "ExposureTime", "ISOSpeedRatings", "FocalLength",
                              "DateTimeOriginal", "SubSecTimeOriginal", "Model")
_FLOAT_KEYS = ("FNumber", "ExposureTime", "FocalLength")
_INT_KEYS = ("ISOSpeedRatings",)
_IFD_PREFIXES = ("EXIF", "Image")  # exifread names tags "<IFD> <Tag>"; raw files keep some in IFD0


def _number(value: Any) -> float | None:
    """exifread value (list of Ratio/int, tuple of float for DOUBLE, str) -> float or None."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[0]
    if isinstance(value, (list, tuple)):  # exifread gives DOUBLE values as 1-tuples
        value = value[0] if value else None
    try:
        if isinstance(value, Fraction):
            if value.denominator == 0:
                return None
            return float(value)
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    s = str(value).strip().strip("\x00").strip()
    return s or None


def exif_from_tags(tags: dict[str, Any]) -> dict[str, Any]:
    """Pick and convert :data:`EXIF_KEYS` out of an ``exifread.process_file`` result."""
    out: dict[str, Any] = {}
    for key in EXIF_KEYS:
        tag = None
        for prefix in _IFD_PREFIXES:
            tag = tags.get(f"{prefix} {key}")
            if tag is not None:
                break
        if tag is None:
            continue
        values = getattr(tag, "values", tag)
        if key in _FLOAT_KEYS or key in _INT_KEYS:
            num = _number(values)
            if num is None or num <= 0:
                continue
            out[key] = int(round(num)) if key in _INT_KEYS else num
        else:
            txt = _text(values)
            if txt is not None:
                out[key] = txt
    return out


def read_exif(source: Path | str | bytes) -> dict[str, Any]:
    """The rig's EXIF subset (see module docstring) of a file path or of the file's bytes.

    Raises RigError (one line) when a path does not exist; never for missing/corrupt EXIF.
    """
    import exifread

    if isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(source))
    else:
        p = Path(source)
        if not p.is_file():
            raise RigError(f"{p}: no such file (cannot read EXIF)")
        stream = io.BytesIO(p.read_bytes())
    log = logging.getLogger("exifread")
    level = log.level
    log.setLevel(logging.CRITICAL)  # exifread logs 'File format not recognized' etc. for plain files
    try:
        tags = exifread.process_file(stream, details=False)
    except Exception:  # noqa: BLE001 - corrupt EXIF must not lose a shot; it just has no EXIF
        tags = {}
    finally:
        log.setLevel(level)
    return exif_from_tags(tags)


def exif_datetime(exif: dict[str, Any]) -> datetime | None:
    """DateTimeOriginal (+ SubSecTimeOriginal) as a naive datetime in camera time, or None."""
    raw = exif.get("DateTimeOriginal")
    if not raw:
        return None
    try:
        dt = datetime.strptime(str(raw)[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    sub = str(exif.get("SubSecTimeOriginal", "")).strip()
    if sub.isdigit():
        dt = dt.replace(microsecond=min(int(round(float("0." + sub) * 1e6)), 999_999))
    return dt
