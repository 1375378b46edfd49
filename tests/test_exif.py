"""acquisition.exif: the rig's EXIF subset from JPEG bytes/files (EXIF written by Pillow, read by exifread)."""

from __future__ import annotations

import io
from datetime import datetime

import cv2
import numpy as np
import pytest
from vcamera import jpeg_with_exif, pattern_rgb

from acquisition.exif import EXIF_KEYS, exif_datetime, read_exif
from rig.core.errors import RigError


def test_reads_every_key_with_types_and_units(tmp_path):
    data = jpeg_with_exif(pattern_rgb(), f_number=5.6, exposure_s=1 / 250, iso=320, focal_mm=35.0,
                          model="NIKON D200", datetime_original="2024:05:01 12:34:56", subsec="07")
    p = tmp_path / "shot.jpg"
    p.write_bytes(data)
    exif = read_exif(p)
    assert set(exif) == set(EXIF_KEYS)
    assert exif["FNumber"] == pytest.approx(5.6) and isinstance(exif["FNumber"], float)
    assert exif["ExposureTime"] == pytest.approx(0.004)
    assert exif["ISOSpeedRatings"] == 320 and isinstance(exif["ISOSpeedRatings"], int)
    assert exif["FocalLength"] == pytest.approx(35.0)
    assert exif["Model"] == "NIKON D200"
    assert exif["DateTimeOriginal"] == "2024:05:01 12:34:56"
    assert exif["SubSecTimeOriginal"] == "07"
    assert read_exif(data) == exif  # bytes and path give the same


def test_missing_tag_is_left_out():
    exif = read_exif(jpeg_with_exif(pattern_rgb(), f_number=None))
    assert "FNumber" not in exif and exif["ISOSpeedRatings"] > 0


def test_pillow_float_values_stored_as_double_are_read():
    from PIL import Image

    ex = Image.Exif()
    ex.get_ifd(0x8769)[0x829D] = 8.0  # a float: Pillow writes a DOUBLE, not a RATIONAL
    buf = io.BytesIO()
    Image.fromarray(pattern_rgb()).save(buf, "JPEG", exif=ex)
    assert read_exif(buf.getvalue())["FNumber"] == pytest.approx(8.0)


def test_no_exif_and_garbage_give_empty_dict():
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    assert read_exif(buf.tobytes()) == {}
    assert read_exif(b"not an image at all") == {}
    assert read_exif(b"") == {}


def test_missing_file_is_one_line_rig_error(tmp_path):
    with pytest.raises(RigError) as e:
        read_exif(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(e.value) and "\n" not in str(e.value)


def test_exif_datetime_with_subseconds():
    assert exif_datetime({"DateTimeOriginal": "2024:05:01 12:34:56", "SubSecTimeOriginal": "25"}) == \
        datetime(2024, 5, 1, 12, 34, 56, 250000)
    assert exif_datetime({"DateTimeOriginal": "2024:05:01 12:34:56"}) == datetime(2024, 5, 1, 12, 34, 56)
    assert exif_datetime({"DateTimeOriginal": "0000:00:00 00:00:00"}) is None
    assert exif_datetime({}) is None
