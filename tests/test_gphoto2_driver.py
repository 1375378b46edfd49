"""The gphoto2 DSLR driver.

Pure parts (choice parsing/selection, error mapping, busy retry) run everywhere; the device tests
run libgphoto2's own virtual camera (a generic-PTP "Nikon DSC D750", see tests/vcamera.py).
Test doubles, documented: a function raising gphoto2.GPhoto2Error(-110 / -53) — the virtual camera
cannot be made busy or claimed by another process — and, for the ISO exposure match, a Dslr whose
settings() returns a Nikon ISO list (the virtual camera has no ISO setting).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from vcamera import SOURCE_EXPOSURE_S, SOURCE_ISO, no_camera_env, pattern_rgb, vcamera  # noqa: F401

from acquisition.gphoto2_driver import (CLAIM_HINT, NO_CAMERA_MSG, ApertureMismatch, CameraClaimed, Gphoto2Dslr,
                                        RetryPolicy, call_with_retry, choose_capture_target, choose_f_number,
                                        choose_image_format, choose_iso, choose_shutter, detect,
                                        map_gphoto2_error, matched_exposure, parse_f_number, parse_iso,
                                        parse_shutter_s)
from acquisition.protocols import (DeviceBusy, DeviceDisconnected, DeviceTimeout, Dslr, Setting,
                                   SettingRejected, TransferError)
from rig.core.errors import DeviceError

gp = pytest.importorskip("gphoto2")

NIKON_APERTURES = ("f/1.8", "f/2", "f/2.2", "f/2.5", "f/2.8", "f/3.2", "f/3.5", "f/4", "f/4.5", "f/5",
                   "f/5.6", "f/6.3", "f/7.1", "f/8", "f/9", "f/10", "f/11", "f/13", "f/16", "f/22")
NIKON_SHUTTERS = ("1/4000", "1/3200", "1/2500", "1/2000", "1/1600", "1/1250", "1/1000", "1/800", "1/640",
                  "1/500", "1/400", "1/320", "1/250", "1/200", "1/160", "1/125", "1/100", "1/80", "1/60",
                  "1/50", "1/40", "1/30", "1/25", "1/20", "1/15", "1/13", "1/10", "1/8", "1/6", "1/5", "1/4",
                  "1/3", "0.4000s", "0.5000s", "0.6000s", "0.8000s", "1.0000s", "1.3000s", "30.0000s", "Bulb")
NIKON_ISOS = ("Auto", "100", "125", "160", "200", "250", "320", "400", "500", "640", "800", "1000",
              "1250", "1600", "3200", "6400", "Hi 1")


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


# --- parsing choice strings -----------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("f/2.8", 2.8), ("2.8", 2.8), ("f/8", 8.0), ("F5.6", 5.6), ("f2", 2.0),
                                        ("22", 22.0), ("implicit auto", None), ("", None), ("f/", None)])
def test_parse_f_number(text, value):
    assert parse_f_number(text) == value


@pytest.mark.parametrize("text,value", [("1/1000", 0.001), ("1/4000s", 0.00025), ("0.5s", 0.5),
                                        ("0.0100s", 0.01), ("30", 30.0), ('1"', 1.0), ('1"3', 1.3),
                                        ('2.5"', 2.5), ("1/60 sec", 1 / 60), ("bulb", None), ("Bulb", None),
                                        ("Time", None), ("auto", None), ("0", None)])
def test_parse_shutter(text, value):
    got = parse_shutter_s(text)
    assert got == (pytest.approx(value) if value is not None else None)


@pytest.mark.parametrize("text,value", [("100", 100), ("ISO 6400", 6400), ("iso320", 320), ("Auto", None),
                                        ("Hi 1", None), ("0", None)])
def test_parse_iso(text, value):
    assert parse_iso(text) == value


# --- choosing among the camera's own choices ------------------------------------------------------

def test_choose_f_number_nearest_within_one_percent():
    assert choose_f_number(2.8, NIKON_APERTURES) == ("f/2.8", 2.8)
    assert choose_f_number(5.65, NIKON_APERTURES) == ("f/5.6", 5.6)  # 0.9 % off
    assert choose_f_number(8.0, ("implicit auto", "2.8", "8")) == ("8", 8.0)  # Canon style
    with pytest.raises(SettingRejected) as e:
        choose_f_number(5.9, NIKON_APERTURES, "Nikon D750")  # 5 % from f/5.6 and f/6.3
    msg = one_line(e.value)
    assert "f/5.9" in msg and "Nikon D750" in msg and "f/5.6, f/6.3" in msg and "nothing was set" in msg
    assert e.value.exit_code == 2


def test_choose_shutter_within_a_third_stop():
    assert choose_shutter(1 / 60, NIKON_SHUTTERS) == ("1/60", pytest.approx(1 / 60))
    assert choose_shutter(1 / 64, NIKON_SHUTTERS)[0] == "1/60"
    assert choose_shutter(0.45, NIKON_SHUTTERS)[0] in ("0.4000s", "0.5000s")
    assert choose_shutter(1.25, NIKON_SHUTTERS)[0] == "1.3000s"
    with pytest.raises(SettingRejected) as e:
        choose_shutter(5.0, NIKON_SHUTTERS, "Nikon D750")  # nearest offered is 1.3 s or 30 s: > 1/3 stop
    msg = one_line(e.value)
    assert "5 s" in msg and "30.0000s" in msg and "Bulb" in msg


def test_choose_iso_ignores_auto_and_hi():
    assert choose_iso(320, NIKON_ISOS) == ("320", 320)
    assert choose_iso(2800, NIKON_ISOS) == ("3200", 3200)  # 0.19 stop
    with pytest.raises(SettingRejected) as e:
        choose_iso(25, NIKON_ISOS)
    assert "ISO 25" in one_line(e.value)


def test_choose_capture_target():
    choices = ("Internal RAM", "Memory card")
    assert choose_capture_target("sdram", choices) == "Internal RAM"
    assert choose_capture_target("card", choices) == "Memory card"
    assert choose_capture_target("memory card", choices) == "Memory card"
    with pytest.raises(SettingRejected) as e:
        choose_capture_target("cloud", choices)
    assert "Internal RAM, Memory card" in one_line(e.value)


def test_choose_image_format_nikon_and_canon():
    nikon = ("JPEG Basic", "JPEG Normal", "JPEG Fine", "NEF (Raw)", "NEF+Basic", "NEF+Normal", "NEF+Fine")
    assert choose_image_format("jpeg", nikon) == "JPEG Fine"
    assert choose_image_format("raw", nikon) == "NEF (Raw)"
    assert choose_image_format("raw+jpeg", nikon) == "NEF+Fine"
    assert choose_image_format("JPEG Normal", nikon) == "JPEG Normal"  # an exact choice string
    canon = ("Large Fine JPEG", "Large Normal JPEG", "Medium Fine JPEG", "Small Fine JPEG", "RAW + Large Fine JPEG",
             "RAW + Small Normal JPEG", "cRAW", "RAW")
    assert choose_image_format("jpeg", canon) == "Large Fine JPEG"
    assert choose_image_format("raw", canon) == "RAW"
    assert choose_image_format("raw+jpeg", canon) == "RAW + Large Fine JPEG"
    with pytest.raises(SettingRejected) as e:
        choose_image_format("raw", ("JPEG Fine", "JPEG Normal"))
    assert "JPEG Fine, JPEG Normal" in one_line(e.value)


# --- busy retry and error mapping (test double: functions raising real GPhoto2Error codes) ---------

class Flaky:
    """Raises gphoto2.GPhoto2Error(code) ``fails`` times, then returns 'ok'."""

    def __init__(self, code: int, fails: int) -> None:
        self.code, self.fails, self.calls = code, fails, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.fails:
            raise gp.GPhoto2Error(self.code)
        return "ok"


def test_busy_is_retried_with_exponential_backoff():
    sleeps: list[float] = []
    fn = Flaky(gp.GP_ERROR_CAMERA_BUSY, fails=2)
    policy = RetryPolicy(attempts=5, base_delay_s=0.001, factor=2.0)
    assert call_with_retry(fn, op="capture", policy=policy, sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert sleeps == pytest.approx([0.001, 0.002])


def test_busy_retry_with_real_sleeps_is_fast():
    fn = Flaky(-110, fails=2)
    assert call_with_retry(fn, op="set f-number", policy=RetryPolicy(attempts=3, base_delay_s=0.0005)) == "ok"


def test_busy_forever_gives_device_busy_after_all_attempts():
    sleeps: list[float] = []
    fn = Flaky(-110, fails=100)
    with pytest.raises(DeviceBusy) as e:
        call_with_retry(fn, op="capture", policy=RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02),
                        sleep=sleeps.append)
    assert fn.calls == 4 and sleeps == pytest.approx([0.01, 0.02, 0.02])
    assert "4 attempts" in one_line(e.value) and e.value.exit_code == 3


def test_claimed_camera_explains_the_fix_and_is_not_retried():
    fn = Flaky(gp.GP_ERROR_IO_USB_CLAIM, fails=1)
    with pytest.raises(CameraClaimed) as e:
        call_with_retry(fn, op="open camera", sleep=lambda s: None)
    msg = one_line(e.value)
    assert fn.calls == 1 and CLAIM_HINT in msg and "gvfs-gphoto2-volume-monitor" in msg
    assert isinstance(e.value, DeviceError)


@pytest.mark.parametrize("code,cls", [(-10, DeviceTimeout), (-52, DeviceDisconnected), (-7, DeviceDisconnected),
                                      (-102, TransferError), (-34, TransferError), (-6, DeviceError)])
def test_gphoto2_codes_map_to_protocol_errors(code, cls):
    err = map_gphoto2_error(gp.GPhoto2Error(code), "download x.jpg")
    assert type(err) is cls and one_line(err).startswith("download x.jpg")
    with pytest.raises(cls):
        call_with_retry(Flaky(code, fails=1), op="op", sleep=lambda s: None)


def test_non_gphoto2_errors_pass_through():
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        call_with_retry(boom, op="op")


# --- exposure matching (test double for ISO: the virtual camera has no ISO setting) ----------------

class IsoOnlyDslr:
    """A Dslr whose settings() offers Nikon's ISO list (documented double; nothing else is used)."""

    model = "double"

    def settings(self) -> dict[str, Setting]:
        return {"iso": Setting("iso", "200", NIKON_ISOS), "shutter": Setting("shutter", "1/250", NIKON_SHUTTERS)}


def test_matched_exposure_by_iso():
    m = matched_exposure(IsoOnlyDslr(), 1 / 250, 2.8, 8.0, mode="iso", iso=100, max_residual_stops=0.5)
    assert m.target == pytest.approx(100 * (8 / 2.8) ** 2)  # 816
    assert m.choice == "800" and m.iso == 800 and m.shutter_s == pytest.approx(1 / 250)
    assert m.residual_stops == pytest.approx(math.log2(800 / m.target))
    m2 = matched_exposure(IsoOnlyDslr(), 1 / 250, 2.8, 8.0, mode="iso")  # base ISO read from the camera
    assert m2.choice == "1600"
    with pytest.raises(SettingRejected):
        matched_exposure(IsoOnlyDslr(), 1 / 250, 2.8, 8.0, mode="aperture")


# --- device tests: libgphoto2's virtual camera ---------------------------------------------------

@pytest.mark.device
def test_detect_finds_the_virtual_camera(vcamera):  # noqa: F811
    found, reason = detect()
    assert found == ["Nikon DSC D750 on usb:001,001"] and reason == ""
    with Gphoto2Dslr() as dslr:
        assert isinstance(dslr, Dslr)
        assert dslr.model == "Nikon DSC D750" and dslr.port == "usb:001,001"
    with Gphoto2Dslr(port="usb:001,001") as dslr:  # bound to an explicit port
        assert dslr.settings()["aperture"].value == "f/2.8"


@pytest.mark.device
def test_unknown_port_is_one_line_error(vcamera):  # noqa: F811
    with pytest.raises(DeviceError) as e:
        Gphoto2Dslr(port="usb:009,009").open()
    assert "usb:009,009" in one_line(e.value) and "Nikon DSC D750 on usb:001,001" in str(e.value)


@pytest.mark.device
def test_no_camera_is_one_line_device_error(tmp_path):
    with no_camera_env(tmp_path):
        found, reason = detect()
        assert found == [] and reason == NO_CAMERA_MSG
        with pytest.raises(DeviceError) as e:
            Gphoto2Dslr().open()
    assert one_line(e.value) == NO_CAMERA_MSG and e.value.exit_code == 3


@pytest.mark.device
def test_settings_are_normalised_and_round_trip(vcamera):  # noqa: F811
    with Gphoto2Dslr() as dslr:
        s = dslr.settings()
        assert s["aperture"].value == "f/2.8" and "f/8" in s["aperture"].choices and not s["aperture"].readonly
        assert s["shutter"].value == "0.0100s" and "0.1000s" in s["shutter"].choices
        assert s["capturetarget"].choices == ("Internal RAM", "Memory card")
        assert "f-number" not in s and "shutterspeed" not in s  # reported under the normalised names only
        assert dslr.set_aperture(8.0) == 8.0
        assert dslr.set_aperture(5.62) == 5.6  # nearest offered within 1 %
        assert dslr.set_shutter(1 / 50) == pytest.approx(0.02)
        assert dslr.set_capture_target("card") == "Memory card"
        s = dslr.settings()  # a fresh read of the whole tree
        assert (s["aperture"].value, s["shutter"].value, s["capturetarget"].value) == \
            ("f/5.6", "0.0200s", "Memory card")
        assert dslr.set_capture_target("sdram") == "Internal RAM"


@pytest.mark.device
def test_values_the_camera_does_not_offer_are_rejected_and_nothing_is_set(vcamera):  # noqa: F811
    with Gphoto2Dslr() as dslr:
        dslr.set_aperture(4.0)
        dslr.set_shutter(0.01)
        with pytest.raises(SettingRejected) as e:
            dslr.set_aperture(1.4)  # would crash libgphoto2 if passed through
        assert "f/1.4" in one_line(e.value) and "f/2.8, f/3.5" in str(e.value) and e.value.exit_code == 2
        with pytest.raises(SettingRejected):
            dslr.set_shutter(3.0)  # nearest offered is 1 s: 1.6 stops off
        with pytest.raises(SettingRejected) as e:
            dslr.set_iso(100)  # the virtual camera has no ISO setting
        assert "no iso setting" in one_line(e.value)
        with pytest.raises(SettingRejected):
            dslr.set_image_format("raw")
        s = dslr.settings()
        assert (s["aperture"].value, s["shutter"].value) == ("f/4", "0.0100s")


@pytest.mark.device
def test_capture_downloads_atomically_with_exif(vcamera, tmp_path):  # noqa: F811
    dest = tmp_path / "raw" / "cap0001" / "defocused.jpg"
    with Gphoto2Dslr() as dslr:
        assert dslr.set_aperture(2.8) == 2.8
        dslr.set_shutter(0.01)
        shot = dslr.capture(dest)
    assert shot.path == dest and dslr.last_files == [dest]
    assert dest.read_bytes() == vcamera.source.read_bytes()  # the camera's file, byte for byte
    img = cv2.imread(str(dest), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == pattern_rgb().shape
    assert np.abs(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(int) - pattern_rgb()).mean() < 8
    assert shot.f_number == 2.8 and shot.shutter_s == pytest.approx(0.01)
    assert shot.iso == SOURCE_ISO  # the camera has no ISO setting: taken from EXIF
    assert shot.exif["FNumber"] == pytest.approx(2.8) and shot.exif["ExposureTime"] == pytest.approx(SOURCE_EXPOSURE_S)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["defocused.jpg"]  # no temporary files left


@pytest.mark.device
def test_second_file_announced_by_an_event_is_downloaded_too(vcamera, tmp_path):  # noqa: F811
    """As the second half of a RAW+JPEG pair arrives: a FILE_ADDED event after the capture.

    The virtual camera's own event injector (PTP opcode 0x9999, sent through the ptp2 'opcode'
    setting) adds a file and announces it 300 ms later.
    """
    dest = tmp_path / "shot.jpg"
    with Gphoto2Dslr(event_timeout_ms=500, event_drain_s=1.0) as dslr:
        cam = dslr._cam()
        w = cam.get_single_config("opcode")
        w.set_value("0x9999,0x0,0x12C")
        cam.set_single_config("opcode", w)
        dslr.capture(dest)
    assert dslr.last_files == [dest, tmp_path / "shot-1.jpg"]
    for p in dslr.last_files:
        assert p.read_bytes() == vcamera.source.read_bytes()


@pytest.mark.device
def test_exif_aperture_mismatch_keeps_the_file(vcamera, tmp_path):  # noqa: F811
    dest = tmp_path / "all_in_focus.jpg"
    with Gphoto2Dslr() as dslr:
        dslr.set_aperture(8.0)  # the camera's JPEG says f/2.8 in its EXIF
        with pytest.raises(ApertureMismatch) as e:
            dslr.capture(dest)
    msg = one_line(e.value)
    assert "f/2.8" in msg and "f/8" in msg and "kept" in msg and e.value.exit_code == 3
    assert dest.read_bytes() == vcamera.source.read_bytes()


@pytest.mark.device
def test_matched_exposure_on_the_camera_choices(vcamera):  # noqa: F811
    with Gphoto2Dslr() as dslr:
        m = matched_exposure(dslr, 0.01, 2.8, 8.0)
        assert m.target == pytest.approx(0.01 * (8 / 2.8) ** 2)
        assert (m.choice, m.shutter_s) == ("0.1000s", pytest.approx(0.1))
        assert m.residual_stops == pytest.approx(math.log2(0.1 / m.target))  # +0.29 stop
        assert dslr.settings()["shutter"].value == "0.0100s"  # sets nothing
        with pytest.raises(SettingRejected) as e:
            matched_exposure(dslr, 0.01, 2.8, 8.0, max_residual_stops=0.1)
        assert "+0.29 stops" in one_line(e.value)
        with pytest.raises(SettingRejected):
            matched_exposure(dslr, 0.01, 2.8, 8.0, mode="iso")  # no ISO on this camera


@pytest.mark.device
def test_operations_on_a_closed_camera_are_one_line_errors(vcamera, tmp_path):  # noqa: F811
    dslr = Gphoto2Dslr()
    with pytest.raises(DeviceError) as e:
        dslr.capture(tmp_path / "x.jpg")
    assert "not open" in one_line(e.value)
    dslr.open()
    dslr.close()
    dslr.close()  # twice is fine
