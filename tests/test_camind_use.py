"""A camera-independent (camind) model on a new camera: k_cam / γ from the rig config in `rig predict`
and `rig live`, no retraining (issue 7 item 4).

The models are tiny (base 4) with random weights and a perturbed depth head, so the depth map varies
with k_cam; the point is the wiring — the config's k_cam reaches the network — not the accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from inference.camind import CamIndDFD, save_camind
from inference.camind_use import (SOURCE_CONFIG, SOURCE_THIN_LENS, camera_constants, camind_model_path,
                                  focus_warning, open_camind)
from rig.core import optics
from rig.core.config import load_rig_config, update_config_file
from rig.core.errors import RigError
from rig.core.imageio import read_depth_m, write_image

torch.set_num_threads(1)
H, W = 32, 48


def _model_file(path: Path, use_k_cam: bool = True, focus_m: float = 2.0) -> Path:
    torch.manual_seed(0)
    model = CamIndDFD(base=4, use_k_cam=use_k_cam, depth_scale_m=2.0)
    with torch.no_grad():  # a non-trivial head so the depth depends visibly on the corrected blur
        model.depth_net.head.weight.normal_(0, 0.5)
    return save_camind(model.eval(), path, {"focus_m": focus_m, "train_k_cam_px": [2.0, 4.0],
                                            "image_size_px": [W, H]})


@pytest.fixture(scope="module")
def camind_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_file(tmp_path_factory.mktemp("camind") / "camind.pt")


def _rig_config(path: Path, k_cam_px: float) -> Path:
    shutil.copy(REPO / "configs" / "rig" / "simulated.yaml", path)
    update_config_file(path, {"blur.k_cam_px": str(k_cam_px)})
    return path


def _images(folder: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(folder / f"img{i}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return folder


def _rig(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from rig.cli import main

    capsys.readouterr()
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --- camera constants ---------------------------------------------------------------------------

def test_constants_from_the_config_value_and_scaled_with_width() -> None:
    cfg = load_rig_config("simulated", overrides={"blur.k_cam_px": 3.0, "blur.gamma_px": 0.5})
    assert camera_constants(cfg, 645) == (3.0, 0.5, SOURCE_CONFIG)
    k, g, source = camera_constants(cfg, 129)  # a fifth of the 645 px output width
    assert k == pytest.approx(0.6) and g == pytest.approx(0.1) and source == SOURCE_CONFIG


def test_constants_fall_back_to_the_thin_lens_model() -> None:
    cfg = load_rig_config("simulated")
    assert cfg.blur.k_cam_px is None
    k, g, source = camera_constants(cfg, 645)
    assert source == SOURCE_THIN_LENS and g == 0.0
    assert k == pytest.approx(optics.k_cam_px(cfg.lens("defocused")))
    assert camera_constants(cfg, 1290)[0] == pytest.approx(2 * k)


def test_focus_mismatch_warns_and_no_k_cam_model_says_so(tmp_path: Path) -> None:
    cfg = load_rig_config("simulated")  # focus 2 m
    assert focus_warning({"focus_m": 2.05}, cfg) is None  # within 5 %
    assert focus_warning({}, cfg) is None
    warn = focus_warning({"focus_m": 3.0}, cfg)
    assert warn is not None and "\n" not in warn and "3 m" in warn and "2 m" in warn
    runner = open_camind(_model_file(tmp_path / "nok.pt", use_k_cam=False, focus_m=3.0), cfg)
    assert any("focuses at 2 m" in n for n in runner.notes)
    assert any("k_cam is ignored" in n for n in runner.notes)
    assert "k_cam not used" in runner.describe()


def test_only_camind_files_are_detected(tmp_path: Path, camind_file: Path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 64)
    assert camind_model_path(str(camind_file)) == camind_file
    assert camind_model_path(str(tmp_path / "garbage.pt")) is None
    assert camind_model_path("d3net-lite") is None and camind_model_path("x.onnx") is None


# --- rig predict -------------------------------------------------------------------------------

def test_predict_uses_the_config_k_cam(tmp_path: Path, camind_file: Path, capsys: pytest.CaptureFixture) -> None:
    inp = _images(tmp_path / "in")
    cfg_a, cfg_b = _rig_config(tmp_path / "a.yaml", 2.5), _rig_config(tmp_path / "b.yaml", 10.0)

    def predict(out: str, *extra: str) -> tuple[np.ndarray, str]:
        rc, stdout, err = _rig(capsys, "predict", "--model", str(camind_file), "--input", str(inp),
                               "--out", str(tmp_path / out), *extra)
        assert rc == 0, err
        return read_depth_m(tmp_path / out / "img0.png"), stdout

    a, out_a = predict("a", "--config", str(cfg_a), "--colorize")
    assert "k_cam 2.5 px (blur calibration (config))" in out_a and "γ 0 px" in out_a
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "camera_intrinsic.json", "img0.png", "img0_color.png", "img1.png", "img1_color.png"]
    assert a.shape == (H, W) and (a > 0).all()
    b, _ = predict("b", "--config", str(cfg_b))
    assert not np.array_equal(a, b)  # the config's k_cam reaches the network
    c, out_c = predict("c", "--config", str(cfg_b), "--k-cam-px", "2.5")
    assert "k_cam 2.5 px (--k-cam-px)" in out_c
    assert np.array_equal(a, c)


def test_predict_bad_input_is_one_line(tmp_path: Path, camind_file: Path, capsys: pytest.CaptureFixture) -> None:
    inp = _images(tmp_path / "in", n=1)
    base = ("predict", "--model", str(camind_file), "--input", str(inp), "--out", str(tmp_path / "o"))
    for extra, needle in ((("--k-cam-px", "0"), "--k-cam-px"), (("--k-cam-px", "-1"), "--k-cam-px"),
                          (("--gamma-px", "-0.5"), "--gamma-px"), (("--mc-samples", "4"), "no dropout")):
        rc, _, err = _rig(capsys, *base, *extra)
        assert rc == 2, (extra, err)
        assert err.count("\n") == 1 and err.startswith("rig: error: ") and needle in err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --- rig live ------------------------------------------------------------------------------------

def test_live_runs_a_camind_model_with_the_config_constants(tmp_path: Path, camind_file: Path) -> None:
    from inference.live import read_jsonl
    from rig.live import LiveOptions, run_live

    cfg = load_rig_config("simulated", overrides={
        "dslr.sensor_px": [96, 64], "output.size_px": [W, H], "blur.k_cam_px": 1.5,
        "simulated.latency_scale": 0.0, "session.min_free_mb": 0.0})
    src = _images(tmp_path / "src")
    lines: list[str] = []
    out = run_live(cfg, LiveOptions(source=f"folder:{src}", model=str(camind_file), backend="onnx",
                                    save=tmp_path / "run", panel=False, drop=False, onnx_cache=tmp_path / "cache"),
                   print_fn=lines.append)
    assert out["frames_output"] == 2 and out["stopped_by"] == "end of source"
    assert "k_cam 1.5 px (blur calibration (config))" in out["engine"]
    assert out["engine"].startswith("onnxruntime CPU") and out["onnx"].endswith("-camind.onnx")
    results = read_jsonl(tmp_path / "run" / "live" / "results.jsonl")
    d = read_depth_m(tmp_path / "run" / "live" / results[0]["depth"])
    assert d.shape == (H, W) and (d > 0).all()
    with pytest.raises(RigError, match="no dropout"):
        run_live(cfg, LiveOptions(source=f"folder:{src}", model=str(camind_file), mc_samples=4,
                                  save=tmp_path / "mc", panel=False), print_fn=lines.append)
