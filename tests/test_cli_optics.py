import json
import subprocess
import sys

import numpy as np
import pytest

from rig.core import optics
from rig.cli import main
from rig.core.config import load_rig_config


def test_optics_blur_json(capsys):
    assert main(["optics", "blur", "--config", "nyuv2_synthetic", "--focus", "2", "--depth", "1", "2", "4", "8",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["depths_m"] == [1, 2, 4, 8] and res["unit"] == "px (output)" and res["quantity"] == "blur_diameter"
    assert res["focus_m"] == 2.0 and res["config"] == "nyuv2_synthetic"
    values = res["values_px"]
    lens = load_rig_config("nyuv2_synthetic").lens(focus_m=2.0)
    assert np.allclose(values, optics.blur_diameter_px([1, 2, 4, 8], lens), atol=1e-6)
    assert values[1] == 0.0


def test_optics_plot(tmp_path):
    out = tmp_path / "fig.png"
    assert main(["optics", "plot", "--config", "nyuv2_synthetic", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("argv,needle", [
    (["optics", "blur", "--config", "simulated", "--depth", "-1"], "--depth"),
    (["optics", "blur", "--config", "simulated", "--depth", "1", "--focus", "0.001"], "--focus"),
    (["optics", "blur", "--config", "no_such_preset", "--depth", "1"], "no such config"),
    (["optics", "blur", "--config", "simulated", "--depth", "abc"], "invalid float"),
])
def test_bad_input_one_line(argv, needle):
    r = subprocess.run([sys.executable, "-m", "rig.cli", *argv], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "rig.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "optics" in r.stdout and "demo" in r.stdout
