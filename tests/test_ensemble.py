"""dfdnet ensembles shipped as one model (inference.model.DfdEnsemble, `rig depth-study ship A B`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.model import DfdEnsemble, DfdNet, combine_log_laplace, export_fp16, load_model
from inference.predict import predict_image
from inference.recipe import ensemble_depth_std, ensemble_model

torch.set_num_threads(1)

SMALL = {"enc": (4, 8, 8, 8, 16, 16), "dec": (16, 8, 8, 8, 4)}


def _member(seed: int, scale_m: float) -> DfdNet:
    torch.manual_seed(seed)
    net = DfdNet(scale_m, **SMALL)
    torch.nn.init.normal_(net.head.conv.weight, 0.0, 0.05)  # members that disagree, with a σ that varies
    return net.eval()


def _rgb(seed: int = 0, h: int = 48, w: int = 80) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_combine_hand_values() -> None:
    # two members: depth 2 m and 8 m, b 0.1 and 0.2 -> σ_i = d_i·√2·b_i
    mu = [torch.full((1, 1, 1, 1), math.log(2.0)), torch.full((1, 1, 1, 1), math.log(8.0))]
    lb = [torch.full((1, 1, 1, 1), math.log(0.1)), torch.full((1, 1, 1, 1), math.log(0.2))]
    m, log_b = combine_log_laplace(mu, lb)
    assert math.exp(float(m)) == pytest.approx(4.0)  # geometric mean
    s1, s2 = 2 * math.sqrt(2) * 0.1, 8 * math.sqrt(2) * 0.2
    want = math.sqrt((s1**2 + s2**2) / 2 + 9.0)  # mixture: mean σ² + var of (2, 8) = 9
    assert 4.0 * math.sqrt(2) * math.exp(float(log_b)) == pytest.approx(want, rel=1e-5)
    # one member: the combination is that member
    m1, lb1 = combine_log_laplace(mu[:1], lb[:1])
    assert torch.allclose(m1, mu[0]) and torch.allclose(lb1, lb[0], atol=1e-6)


def test_ensemble_equals_the_study_combination_of_its_members() -> None:
    a, b = _member(0, 2.0), _member(1, 3.0)
    ens = DfdEnsemble.of([a, b], SMALL)
    rgb = _rgb()
    pa, pb = (predict_image(n, rgb, flip_tta=False) for n in (a, b))
    depth, std = ensemble_depth_std([pa.depth_m, pb.depth_m], [pa.std_m, pb.std_m])
    pe = predict_image(ens, rgb, flip_tta=False)
    assert np.allclose(pe.depth_m, depth, rtol=1e-5)
    assert np.allclose(pe.std_m, std, rtol=1e-4)
    assert float(np.abs(pa.depth_m - pb.depth_m).mean()) > 0.1  # the members do differ
    assert (pe.std_m > np.maximum(pa.std_m, pb.std_m) * 0.7).all()  # spread adds to σ
    x = torch.rand(1, 3, 40, 70)
    with torch.no_grad():
        assert torch.allclose(ens(x), ens.decode(ens.trunk(x)))  # trunk/decode split = forward
        assert ens(x).shape == (1, 1, 40, 70)


def test_ensemble_moments_combine_the_members_and_follow_many_sample_mc() -> None:
    from inference.mc_dropout import mc_predict
    from inference.moments import log_depth_moments, moments_predict

    a, b = _member(0, 2.0), _member(1, 3.0)
    ens = DfdEnsemble.of([a, b], SMALL)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        (ma, va), (mb, vb) = (log_depth_moments(n, n.trunk(x)) for n in (a, b))
        me, ve = log_depth_moments(ens, ens.trunk(x))
    # the mean of two independent dropout draws: mean of means, variance (v_a + v_b) / 4
    assert torch.allclose(me, (ma + mb) / 2, atol=1e-6) and torch.allclose(ve, (va + vb) / 4, rtol=1e-5)
    mean, _ = moments_predict(ens, x)
    mc_mean, _ = mc_predict(ens, x, samples=1000, seed=0)
    assert float(((mean - mc_mean).abs() / mc_mean).max()) < 0.01


def test_ensemble_exports_to_onnx_with_parity_and_int8_keeps_each_members_ends(tmp_path) -> None:
    from inference.export import _random_rgb, export_model
    from inference.quantize import FP32_END_CONVS, fp32_convs

    ens = DfdEnsemble.of([_member(0, 2.0), _member(1, 3.0)], SMALL)
    rep = export_model(ens, tmp_path / "e.onnx", height=64, width=96, dynamic=True, mc_check_samples=4)
    assert max(rep.parity.values()) < 1e-4
    assert rep.mc_check["samples"] == 4  # the MC graphs ran (their statistics: tests/test_export.py)
    import onnx
    import onnxruntime as ort

    d, s = ort.InferenceSession(str(rep.files["depth"]), providers=["CPUExecutionProvider"]).run(
        None, {"rgb": _random_rgb(64, 96, 3)})
    assert d.shape == s.shape == (1, 1, 64, 96) and (s > 0).all()
    kept = fp32_convs(rep.files["depth"])
    graph = onnx.load(str(rep.files["depth"])).graph
    assert len(kept) == 2 * 2 * FP32_END_CONVS  # stem and head end of both members
    heads = {n.name for n in graph.node if n.op_type == "Conv" and any("head.conv" in i for i in n.input)}
    assert len(heads) == 2 and heads <= set(kept)


def test_fp32_convs_of_one_network_are_its_first_and_last_in_graph_order(tmp_path) -> None:
    import onnx

    from inference.export import export_model
    from inference.quantize import FP32_END_CONVS, fp32_convs

    rep = export_model(_member(0, 2.0), tmp_path / "m.onnx", height=64, width=96, mc=False, check=False)
    convs = [n.name for n in onnx.load(str(rep.files["depth"])).graph.node if n.op_type == "Conv"]
    assert fp32_convs(rep.files["depth"]) == convs[:FP32_END_CONVS] + convs[-FP32_END_CONVS:]


def _member_file(tmp_path, name: str, seed: int, **meta) -> str:
    base = {"input": "N2_8", "train_ids": ["a", "b"], "model_kwargs": SMALL, "recipe": {"name": "dfd_log_pre"},
            "budget": {"steps": 10, "seed": seed}}
    return str(export_fp16(_member(seed, 2.0 + seed), tmp_path / name, {**base, **meta}))


def test_ship_several_runs_writes_one_ensemble_that_predict_reads(tmp_path, capsys) -> None:
    import cv2

    from rig.cli import main

    a, b = _member_file(tmp_path, "a.pt", 0), _member_file(tmp_path, "b.pt", 1)
    out = tmp_path / "ens.pt"
    assert main(["depth-study", "ship", a, b, "--out", str(out), "--flip-tta"]) == 0
    assert "dfdnet-ens of 2 members" in capsys.readouterr().out
    loaded = load_model(out)
    assert loaded.arch == "dfdnet-ens" and loaded.model.flip_tta
    assert [m["budget"]["seed"] for m in loaded.meta["members"]] == [0, 1]
    assert loaded.meta["input"] == "N2_8" and loaded.meta["train_ids"] == ["a", "b"]
    # the file's prediction is the combination of the two member files' predictions
    rgb = _rgb(2)
    pa, pb = (predict_image(load_model(p).model, rgb, flip_tta=False) for p in (a, b))
    depth, std = ensemble_depth_std([pa.depth_m, pb.depth_m], [pa.std_m, pb.std_m])
    pe = predict_image(loaded.model, rgb, flip_tta=False)
    assert np.allclose(pe.depth_m, depth, rtol=1e-4) and np.allclose(pe.std_m, std, rtol=1e-3)
    # --member K writes one member back as a plain dfdnet file, with that member's record
    assert main(["depth-study", "ship", str(out), "--member", "1", "--out", str(tmp_path / "m1.pt")]) == 0
    m1 = load_model(tmp_path / "m1.pt")
    assert m1.arch == "dfdnet" and m1.meta["budget"]["seed"] == 1 and m1.model.flip_tta
    assert np.array_equal(predict_image(m1.model, rgb, flip_tta=False).depth_m, pb.depth_m)
    assert main(["depth-study", "ship", str(out), "--member", "2", "--out", str(tmp_path / "m2.pt")]) == 2
    assert main(["depth-study", "ship", a, "--member", "0", "--out", str(tmp_path / "m3.pt")]) == 2
    assert main(["depth-study", "ship", a, b, "--member", "0", "--out", str(tmp_path / "m4.pt")]) == 2
    err = capsys.readouterr().err
    assert "members 0..1" in err and "not an ensemble" in err and "one ensemble file" in err
    assert not any((tmp_path / f"m{i}.pt").exists() for i in (2, 3, 4))
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    assert main(["predict", "--model", str(out), "--input", str(tmp_path / "in.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").rglob("*.npy")) or any((tmp_path / "pred").rglob("*.png"))


@pytest.mark.parametrize("meta,msg", [
    ({"input": "N8"}, "different inputs"),
    ({"train_ids": ["a"]}, "different captures"),
    ({"model_kwargs": {}}, "network settings"),
])
def test_ship_refuses_members_that_cannot_form_one_model(tmp_path, capsys, meta, msg) -> None:
    from rig.cli import main

    a = _member_file(tmp_path, "a.pt", 0)
    b = _member_file(tmp_path, "b.pt", 1, **meta) if meta.get("model_kwargs") != {} else str(
        export_fp16(DfdNet(2.0).eval(), tmp_path / "b.pt", {"input": "N2_8", "train_ids": ["a", "b"],
                                                            "model_kwargs": {}}))
    assert main(["depth-study", "ship", a, b, "--out", str(tmp_path / "e.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and not (tmp_path / "e.pt").exists()


def test_ensemble_needs_dfdnet_members(tmp_path) -> None:
    from inference.model import LoadedModel, build_model
    from rig.core.errors import RigError

    lite = LoadedModel(build_model("d3net-lite").eval(), "d3net-lite", tmp_path / "l.pt", {})
    one = LoadedModel(_member(0, 2.0), "dfdnet", tmp_path / "d.pt", {"model_kwargs": SMALL})
    with pytest.raises(RigError, match="at least two"):
        ensemble_model([one])
    with pytest.raises(RigError, match="dfdnet models"):
        ensemble_model([one, lite])
