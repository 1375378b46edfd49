import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.core.config import CONFIG_DIR, load_rig_config
from rig.core.errors import ConfigError

PRESETS = sorted((CONFIG_DIR / "rig").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_load(path):
    cfg = load_rig_config(path)
    assert cfg.name == path.stem
    assert cfg.snapshot_id() == load_rig_config(path).snapshot_id()
    # the snapshot round-trips through YAML to the same config
    again = yaml.safe_load(cfg.to_yaml())
    assert again["dslr"]["focal_mm"] == cfg.dslr.focal_mm


def test_paper_values():
    nyu = load_rig_config("nyuv2_synthetic")
    assert (nyu.dslr.focal_mm, nyu.dslr.f_number_defocused, nyu.dslr.pixel_um) == (15.0, 2.8, 5.6)
    assert nyu.focus_presets_m == (2.0, 4.0, 8.0)
    d200 = load_rig_config("nikon_d200_xtion")
    assert d200.dslr.sensor_px == (3872, 2592) and d200.output.size_px == (645, 432)
    assert (d200.dslr.f_number_defocused, d200.dslr.f_number_all_in_focus, d200.dslr.iso) == (2.8, 8.0, 320)
    assert d200.depth_sensor.driver == "openni"


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((CONFIG_DIR / "rig" / "simulated.yaml").read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BAD = {
    "string_focal": (lambda d: d["dslr"].__setitem__("focal_mm", "abc"), "dslr.focal_mm", "a number"),
    "negative_pixel": (lambda d: d["dslr"].__setitem__("pixel_um", -1), "dslr.pixel_um", "µm"),
    "bad_psf": (lambda d: d["blur"].__setitem__("psf", "box"), "blur.psf", "'gaussian', 'disk'"),
    "unknown_key": (lambda d: d["dslr"].__setitem__("focal", 35), "dslr.focal", "allowed here"),
    "missing_required": (lambda d: d["dslr"].pop("focal_mm"), "dslr.focal_mm", "missing"),
    "size_len": (lambda d: d["output"].__setitem__("size_px", [645]), "output.size_px", "list of 2"),
    "rate_range": (lambda d: d["faults"].__setitem__("rate", 1.5), "faults.rate", "[0, 1]"),
    "fault_kind": (lambda d: d["faults"].__setitem__("kinds", ["gremlins"]), "faults.kinds[0]", "busy"),
    "aif_not_smaller": (lambda d: d["dslr"].__setitem__("f_number_all_in_focus", 2.0), "f_number_all_in_focus", "larger"),
    "focus_inside_f": (lambda d: d["dslr"].__setitem__("focus_m", 0.02), "dslr.focus_m", "[0.1, 1000] m"),
    "preset_inside_f": (lambda d: (d["dslr"].__setitem__("focal_mm", 300.0), d["dslr"].__setitem__("focus_m", 2.0), d["dslr"].__setitem__("focus_presets_m", [2.0, 0.2]))[0], "dslr.focus_presets_m[1]", "focal length"),
    "bool_as_number": (lambda d: d["dslr"].__setitem__("iso", True), "dslr.iso", "integer"),
    "output_bigger": (lambda d: d["output"].__setitem__("size_px", [5000, 5000]), "output.size_px", "exceed"),
    "section_not_map": (lambda d: d.__setitem__("dslr", [1, 2]), "dslr", "mapping"),
    "depth_range": (lambda d: d["depth_sensor"].__setitem__("min_m", 9.0), "depth_sensor.min_m", "below"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_name_file_key_and_allowed(tmp_path, case):
    mutate, key, allowed = BAD[case]
    p = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as ei:
        load_rig_config(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and key in msg and allowed in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("dslr: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_rig_config(p)
    with pytest.raises(ConfigError, match="no such config"):
        load_rig_config(tmp_path / "nope.yaml")


def test_cli_bad_config_one_line_exit_2(tmp_path):
    p = _write(tmp_path, lambda d: d["blur"].__setitem__("rho", "x"))
    r = subprocess.run([sys.executable, "-m", "rig.cli", "optics", "blur", "--config", str(p), "--depth", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "blur.rho" in r.stderr and "Traceback" not in r.stderr
