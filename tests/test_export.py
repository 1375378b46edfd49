"""ONNX export: the depth graph matches torch at any size (padding inside), fp16, the MC-dropout trunk +
decoder graphs (exact without dropout, same statistics as torch with it), metadata and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from inference.engine import DepthEngine, EngineConfig, mc_from_sessions  # noqa: E402
from inference.export import (_cpu_session, _random_rgb, companion_paths, export_model, parity_max_abs_m,  # noqa: E402
                              read_onnx_meta, trunk_parity_max_abs)
from inference.model import build_model  # noqa: E402
from rig.cli import main  # noqa: E402
from rig.core.errors import RigError  # noqa: E402

PARITY_M = 1e-4  # fp32 onnxruntime vs torch on depths of ~2.5 m


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def lite(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model("d3net-lite", **kw).eval()


@pytest.fixture(scope="module")
def lite_dynamic(tmp_path_factory) -> tuple[object, Path]:
    torch.set_num_threads(1)
    net = lite()
    out = tmp_path_factory.mktemp("onnx") / "lite.onnx"
    export_model(net, out, height=64, width=96, dynamic=True, check=False)
    return net, out


def test_dynamic_depth_graph_matches_torch_at_other_sizes(lite_dynamic):
    net, path = lite_dynamic
    # sizes that are not multiples of the stride exercise the in-graph reflect padding and crop
    for h, w in ((64, 96), (35, 53), (77, 130), (32, 32)):
        assert parity_max_abs_m(net, path, h, w) < PARITY_M, (h, w)
    assert parity_max_abs_m(net, path, 40, 70, batch=2) < PARITY_M
    inputs = _cpu_session(path).get_inputs()[0]
    assert [isinstance(d, str) for d in inputs.shape] == [True, False, True, True]


def test_trunk_graph_matches_torch(lite_dynamic):
    net, path = lite_dynamic
    trunk, decoder = companion_paths(path)
    assert trunk.is_file() and decoder.is_file()
    assert trunk_parity_max_abs(net, trunk, 45, 70) < 1e-4


def test_metadata_names_the_graphs_and_their_companions(lite_dynamic):
    _, path = lite_dynamic
    meta = read_onnx_meta(path)
    assert meta["graph"] == "depth" and meta["arch"] == "d3net-lite" and meta["dynamic"] is True
    assert meta["mc_trunk"] == "lite.trunk.onnx" and meta["mc_decoder"] == "lite.decoder.onnx"
    assert meta["trunk_outputs"] == ["pre", "s2", "s3", "s4"] and meta["expanded"] == ["pre"]
    dec = read_onnx_meta(companion_paths(path)[1])
    assert dec["graph"] == "decoder" and dec["dropout_layers"] == 4 and dec["dropout_nodes"] == 4


def test_static_export_has_a_fixed_input_and_still_pads_inside(tmp_path):
    net = lite(1)
    out = tmp_path / "static.onnx"
    rep = export_model(net, out, height=45, width=70, dynamic=False, mc=False)
    assert set(rep.files) == {"depth"} and not companion_paths(out)[0].exists()
    assert rep.parity["depth 70x45"] < PARITY_M
    assert _cpu_session(out).get_inputs()[0].shape == [1, 3, 45, 70]
    eng = DepthEngine(out, EngineConfig(providers=("cpu",), threads=1, warmup=0))
    with pytest.raises(RigError, match="exported for 70x45"):
        eng.predict(np.zeros((64, 96, 3), np.uint8))


def test_mc_graphs_without_dropout_reproduce_the_single_pass_exactly(tmp_path):
    """No dropout layers: every MC sample equals the deterministic pass, so the chunked trunk/decoder
    path (chunks 3+2+2 merged) must return that pass and a zero standard deviation."""
    net = lite(2, dropout=0.0)
    out = tmp_path / "nodrop.onnx"
    export_model(net, out, height=48, width=80, dynamic=True, check=False)
    x = _random_rgb(41, 67, seed=3)
    trunk, decoder = (_cpu_session(p) for p in companion_paths(out))
    mean, std = mc_from_sessions(trunk, decoder, x, samples=7, chunk=3)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()[0, 0]
    assert mean.shape == ref.shape == (41, 67)
    assert np.abs(mean - ref).max() < PARITY_M
    assert float(std.max()) < 1e-5


def test_mc_dropout_statistics_match_torch(lite_dynamic):
    """With dropout the masks come from onnxruntime's generator, not torch's: the MC mean and the
    spread must agree statistically (std ratio near 1), and the spread must be real (> 0)."""
    net, path = lite_dynamic
    x = _random_rgb(48, 64, seed=4)
    trunk, decoder = (_cpu_session(p) for p in companion_paths(path))
    mean, std = mc_from_sessions(trunk, decoder, x, samples=64, chunk=20)
    from inference.mc_dropout import mc_predict

    with torch.inference_mode():
        tm, tv = mc_predict(net, torch.from_numpy(x), samples=64, seed=0)
    t_std = tv.sqrt().numpy()[0, 0]
    assert float(std.mean()) > 1e-6
    assert 0.75 < float(std.mean()) / float(t_std.mean()) < 1.33
    assert float(np.abs(mean - tm.numpy()[0, 0]).mean()) < 3 * float(t_std.mean())


def test_fp16_export_is_close_to_torch_and_half_the_size(tmp_path):
    net = lite(0)
    out32, out16 = tmp_path / "a32.onnx", tmp_path / "a16.onnx"
    export_model(net, out32, height=64, width=96, dynamic=True, mc=False, check=False)
    rep = export_model(net, out16, height=64, width=96, dynamic=True, fp16=True, mc=True)
    assert read_onnx_meta(out16)["fp16"] is True
    assert out16.stat().st_size < 0.6 * out32.stat().st_size
    assert 0 < rep.parity["depth 96x64"] < 0.02  # fp16: about 1 mm at 2.5 m
    eng = DepthEngine(out16, EngineConfig(providers=("cpu",), threads=1, warmup=0), mc=True)
    mean, std = eng.predict_mc(np.full((64, 96, 3), 128, np.uint8), 4)
    assert np.isfinite(mean).all() and np.isfinite(std).all()


def test_export_cli_prints_parity_and_writes_three_graphs(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    rc = main(["export", "--model", "d3net-lite", "--out", str(out), "--height", "40", "--width", "60",
               "--dynamic"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "parity depth 60x40: max |Δ| =" in text and "m (onnxruntime CPU vs torch)" in text
    assert "MC-dropout (32 samples)" in text
    assert all(p.is_file() for p in (out, *companion_paths(out)))
    parity = read_onnx_meta(out)["parity_max_abs"]
    assert max(parity.values()) < PARITY_M


@pytest.mark.parametrize("argv,msg", [
    (["--model", "no-such-model"], "no such model file"),
    (["--model", "d3net-lite", "--height", "16"], "at least 32 px"),
    (["--model", "d3net-lite", "--opset", "13"], "17 or newer"),
])
def test_export_cli_bad_input_is_one_line(tmp_path, capsys, argv, msg):
    rc = main(["export", "--out", str(tmp_path / "x.onnx"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_read_onnx_meta_rejects_a_non_onnx_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RigError, match="not a readable ONNX model"):
        read_onnx_meta(bad)


@pytest.mark.slow
def test_parity_at_the_dfd_size_645x432(tmp_path):
    """The deployment size, static graph (as `rig live` exports it) and dynamic."""
    net = lite(5)
    rep = export_model(net, tmp_path / "full.onnx", height=432, width=645, dynamic=True, mc=True,
                       mc_check_samples=8)
    assert rep.parity["depth 645x432"] < PARITY_M
    assert rep.parity["trunk 645x432"] < PARITY_M
    assert 0.5 < rep.mc_check["std_ratio"] < 2.0


@pytest.mark.slow
def test_d3net_exports_with_its_trunk_and_decoder(tmp_path):
    """The full D3-Net: every trunk tensor (a list in its trunk dict) becomes a named graph output."""
    torch.manual_seed(0)
    net = build_model("d3net").eval()
    out = tmp_path / "d3.onnx"
    rep = export_model(net, out, height=64, width=96, dynamic=True, mc_check_samples=16)
    assert rep.parity["depth 96x64"] < PARITY_M and rep.parity["depth 53x35"] < PARITY_M
    assert rep.parity["trunk 96x64"] < PARITY_M
    meta = read_onnx_meta(out)
    assert meta["arch"] == "d3net" and meta["trunk_outputs"][0] == "pre" and len(meta["trunk_outputs"]) > 1
    assert 0.5 < rep.mc_check["std_ratio"] < 2.0
