"""The camera-independent (camind) network in ONNX: k_cam and γ as graph inputs, parity with torch
at two k_cam values, `rig export` printing it, and `rig live --backend onnx` running onnxruntime
(issue 14 item 8). Tiny untrained models (base 4); speed is not measured here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.camind import CamIndDFD, predict_camind, save_camind
from inference.camind_onnx import (CamindEngine, camind_parity_max_abs_m, export_camind, is_camind_onnx,
                                   parity_constants)
from inference.engine import EngineConfig
from inference.onnx_graph import read_onnx_meta

torch.set_num_threads(1)
H, W = 30, 45  # not multiples of 4: the padding and crop inside the graph are exercised
TOL_M = 2e-5


def _model(use_k_cam: bool = True) -> CamIndDFD:
    torch.manual_seed(0)
    model = CamIndDFD(base=4, use_k_cam=use_k_cam, depth_scale_m=2.0)
    with torch.no_grad():  # a non-trivial head so the depth depends visibly on k_cam
        model.depth_net.head.weight.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[CamIndDFD, Path, object]:
    model = _model()
    out = tmp_path_factory.mktemp("camind_onnx") / "camind.onnx"
    report = export_camind(model, out, height=H, width=W, model_meta={"train_k_cam_px": [2.0, 4.0]})
    return model, out, report


def test_export_reports_parity_at_two_k_cam_values(exported) -> None:
    _, out, report = exported
    assert len(report.parity) == 2 and all(v < TOL_M for v in report.parity.values())
    assert any("k_cam 2 px" in k for k in report.parity) and any("k_cam 4 px" in k for k in report.parity)
    meta = read_onnx_meta(out)
    assert meta["graph"] == "camind" and meta["model_meta"]["train_k_cam_px"] == [2.0, 4.0]
    assert set(meta["parity_max_abs"]) == set(report.parity) and is_camind_onnx(out)


def test_parity_holds_for_other_sizes_and_constants(exported) -> None:
    model, out, _ = exported
    for (h, w), k, g in (((32, 48), 1.0, 0.0), ((61, 83), 3.5, 0.4)):
        assert camind_parity_max_abs_m(model, out, h, w, k, g) < TOL_M


def test_engine_matches_torch_and_depth_follows_k_cam(exported) -> None:
    model, out, _ = exported
    engine = CamindEngine(out, EngineConfig(providers=("cpu",), threads=1, warmup=1), warm_size=(W, H))
    assert engine.provider == "CPUExecutionProvider"
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    depths = []
    for k in (0.25, 4.0):
        got = engine.predict(img, k, 0.2)
        np.testing.assert_allclose(got, predict_camind(model, img, k, 0.2), atol=TOL_M)
        depths.append(got)
    assert np.abs(depths[0] - depths[1]).max() > 10 * TOL_M  # k_cam really is an input of the graph


def test_a_model_without_k_cam_exports_and_runs(tmp_path: Path) -> None:
    model = _model(use_k_cam=False)
    report = export_camind(model, tmp_path / "nok.onnx", height=32, width=48)
    assert all(v < TOL_M for v in report.parity.values())
    engine = CamindEngine(tmp_path / "nok.onnx", EngineConfig(providers=("cpu",), threads=1, warmup=0))
    img = np.full((32, 48, 3), 128, np.uint8)
    np.testing.assert_allclose(engine.predict(img, 1.0, 0.0), engine.predict(img, 5.0, 0.0))


def test_parity_constants_come_from_training_k_cam() -> None:
    assert parity_constants({"train_k_cam_px": [4.0, 2.0, 3.0]}) == [(2.0, 0.0), (4.0, 0.3)]
    assert parity_constants({}) == [(1.0, 0.0), (2.0, 0.3)]


def test_rig_export_prints_camind_parity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rig.cli import main

    pt = save_camind(_model(), tmp_path / "camind.pt", {"focus_m": 2.0, "train_k_cam_px": [2.0, 4.0],
                                                        "image_size_px": [W, H]})
    rc = main(["export", "--model", str(pt), "--out", str(tmp_path / "c.onnx"), "--height", str(H),
               "--width", str(W)])
    out = capsys.readouterr().out
    assert rc in (0, None) and is_camind_onnx(tmp_path / "c.onnx")
    lines = [s for s in out.splitlines() if s.startswith("parity depth")]
    assert len(lines) == 2 and "k_cam 2 px" in lines[0] and "k_cam 4 px" in lines[1]


def test_live_backend_onnx_runs_onnxruntime_for_camind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rig.core.config import load_rig_config
    from rig.live import build_backend

    cfg = load_rig_config("simulated", overrides={"output.size_px": [W, H], "blur.k_cam_px": 2.5})
    pt = save_camind(_model(), tmp_path / "camind.pt", {"focus_m": 2.0, "train_k_cam_px": [2.0, 4.0]})
    onnx_be = build_backend(str(pt), backend="onnx", size=(W, H), threads=1, providers=("cpu",),
                            onnx_cache=tmp_path / "cache", cfg=cfg)
    torch_be = build_backend(str(pt), backend="torch", size=(W, H), threads=1, cfg=cfg)
    assert isinstance(onnx_be.engine, CamindEngine) and onnx_be.description.startswith("onnxruntime CPU")
    assert onnx_be.onnx and Path(onnx_be.onnx).parent == tmp_path / "cache"
    assert not any("torch" in n for n in onnx_be.notes)
    img = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    calls: list[int] = []
    real = onnx_be.engine.session.run
    monkeypatch.setattr(onnx_be.engine.session, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    got, std = onnx_be.infer(img)
    assert calls and std is None
    np.testing.assert_allclose(got, torch_be.infer(img)[0], atol=TOL_M)


def test_deeper_network_exports_with_its_own_stride(tmp_path) -> None:
    torch.manual_seed(0)
    model = CamIndDFD(base=4, depth_scale_m=2.0, levels=5).eval()  # stride 16: 30x45 pads to 32x48
    report = export_camind(model, tmp_path / "deep.onnx", height=H, width=W, model_meta={"train_k_cam_px": [2.0, 4.0]})
    assert all(v < TOL_M for v in report.parity.values())
    assert camind_parity_max_abs_m(model, tmp_path / "deep.onnx", 37, 70, 3.0, 0.2) < TOL_M
