"""Sampling-free MC-dropout (inference.moments): formulas, agreement with many-sample MC, ONNX, CLI, int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.cv import spearman
from inference.mc_dropout import mc_predict
from inference.model import build_model
from inference.moments import (dropout_moments, leaky_relu_moments, log_normal_moments, moments_predict)

torch.set_num_threads(1)

SMALL = {"d3net-lite": {"enc": (8, 8, 8, 16, 16), "dec": (16, 16, 8, 8)},
         "dfdnet": {"enc": (4, 8, 8, 8, 16, 16), "dec": (16, 8, 8, 8, 4)},
         "d3net": {"growth": 4, "block_config": (1, 1, 1, 1), "num_init_features": 8, "bn_size": 1}}


def test_elementwise_moments_match_sampling() -> None:
    g = torch.Generator().manual_seed(0)
    mu, sd = torch.tensor([-1.0, 0.0, 0.5, 2.0]), torch.tensor([0.5, 1.0, 2.0, 0.3])
    z = mu + sd * torch.randn(200_000, 4, generator=g)
    for slope in (0.0, 0.2):
        m, v = leaky_relu_moments((mu, sd**2), slope)
        y = torch.where(z > 0, z, slope * z)
        assert torch.allclose(m, y.mean(0), atol=0.01) and torch.allclose(v, y.var(0), rtol=0.03, atol=0.01)
    m, v = log_normal_moments((mu, sd**2 * 0.1))
    y = torch.exp(mu + sd * 0.1**0.5 * torch.randn(200_000, 4, generator=g))
    assert torch.allclose(m, y.mean(0), rtol=0.01) and torch.allclose(v, y.var(0), rtol=0.05)
    keep = (torch.rand(200_000, 4, generator=g) < 0.5).float() / 0.5
    m, v = dropout_moments((mu, sd**2), 0.5)
    y = z * keep
    assert torch.allclose(m, y.mean(0), atol=0.02) and torch.allclose(v, y.var(0), rtol=0.03)


@pytest.mark.parametrize("arch", ["d3net-lite", "dfdnet", "d3net"])
def test_moments_agree_with_many_sample_mc_on_a_small_network(arch: str) -> None:
    torch.manual_seed(0)
    net = build_model(arch, **SMALL[arch]).eval()
    torch.nn.init.normal_(net.head.conv.weight, 0.0, 0.1)  # an untrained head (std 1e-3) hides the variance
    x = torch.rand(1, 3, 64, 96)
    mean, var = moments_predict(net, x)
    mc_mean, mc_var = mc_predict(net, x, samples=2000, seed=0)
    assert mean.shape == var.shape == (1, 1, 64, 96)
    assert float(((mean - mc_mean).abs() / mc_mean).max()) < 0.01
    assert not net.training


@pytest.mark.parametrize("arch", ["d3net-lite", pytest.param("dfdnet", marks=pytest.mark.xfail(
    reason="dfdnet's covariance pass assumes noise that is smooth under a kernel; a 64x96 random net's "
           "2x3 bottleneck is all border (the shipped model is checked on a real capture below)")),
    pytest.param("d3net", marks=pytest.mark.xfail(
        reason="open: σ ranks do not follow MC on this small random d3net (independence assumption)"))])
def test_moments_sigma_ranks_follow_many_sample_mc(arch: str) -> None:
    torch.manual_seed(0)
    net = build_model(arch, **SMALL[arch]).eval()
    torch.nn.init.normal_(net.head.conv.weight, 0.0, 0.1)
    x = torch.rand(1, 3, 64, 96)
    _, var = moments_predict(net, x)
    _, mc_var = mc_predict(net, x, samples=1000, seed=0)
    sd, mc_sd = var.sqrt(), mc_var.sqrt()
    assert 0.2 < float(sd.mean() / mc_sd.mean()) < 5.0  # the scale is approximate (2x here)
    assert spearman(sd.numpy(), mc_sd.numpy()) > 0.7


def test_predict_image_moments_mode_returns_std() -> None:
    from inference.predict import predict_image

    torch.manual_seed(0)
    net = build_model("d3net-lite", **SMALL["d3net-lite"]).eval()
    rgb = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    pred = predict_image(net, rgb, uncertainty="moments")
    assert pred.std_m is not None and pred.std_m.shape == (64, 96) and float(pred.std_m.min()) >= 0


@pytest.mark.parametrize("arch", ["d3net-lite", "dfdnet"])
def test_moments_graph_matches_torch_and_dfdnet_exports_its_aleatoric_std(arch: str, tmp_path) -> None:
    from inference.engine import DepthEngine, EngineConfig
    from inference.export import export_model
    from inference.onnx_graph import read_onnx_meta

    torch.manual_seed(0)
    net = build_model(arch, **SMALL[arch]).eval()
    rep = export_model(net, tmp_path / "m.onnx", height=64, width=96, dynamic=True, mc_check_samples=4)
    assert rep.parity["moments 96x64"] < 1e-4
    assert rep.files["moments"].name == "m.moments.onnx"
    outputs = read_onnx_meta(rep.files["depth"])["outputs"]
    assert outputs == (["depth_m", "aleatoric_std_m"] if arch == "dfdnet" else ["depth_m"])
    eng = DepthEngine(rep.files["depth"], EngineConfig(providers=("cpu",), threads=1, warmup=1),
                      warm_size=(96, 64), moments=True)
    rgb = (np.random.default_rng(1).random((48, 80, 3)) * 255).astype(np.uint8)
    mean, std = eng.predict_moments(rgb)
    t_mean, t_var = moments_predict(net, torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255)
    assert np.abs(mean - t_mean[0, 0].numpy()).max() < 1e-4
    assert np.abs(std - t_var[0, 0].sqrt().numpy()).max() < 1e-4
    assert eng.predict(rgb).shape == (48, 80)
    if arch == "dfdnet":
        import onnxruntime as ort

        d, a = ort.InferenceSession(str(rep.files["depth"]), providers=["CPUExecutionProvider"]).run(
            None, {"rgb": rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255})
        mu, log_b = net.forward_dist(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255)
        assert np.allclose(a, (mu.exp() * log_b.exp() * 2**0.5).detach().numpy(), rtol=1e-4, atol=1e-6)


def test_cli_uncertainty_modes(tmp_path, capsys) -> None:
    from rig.cli import main
    from rig.core.imageio import write_image

    from inference.model import export_fp16

    write_image(tmp_path / "a.png", (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    torch.manual_seed(0)
    model = str(export_fp16(build_model("d3net-lite", **SMALL["d3net-lite"]), tmp_path / "m.pt",
                            {"arch": "d3net-lite", "model_kwargs": SMALL["d3net-lite"]}))
    assert main(["predict", "--model", model, "--input", str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "o"), "--uncertainty", "moments"]) == 0
    assert (tmp_path / "o" / "a_std.png").is_file()
    code = main(["predict", "--model", model, "--input", str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "o"), "--uncertainty", "moments", "--mc-samples", "5"])
    assert code != 0 and "--mc-samples" in capsys.readouterr().err


def test_int8_quantised_graph_runs_close_to_fp32(tmp_path) -> None:
    import onnxruntime as ort

    from inference.export import _random_rgb, export_model
    from inference.quantize import int8_path, quantize_int8

    torch.manual_seed(0)
    net = build_model("d3net-lite", **SMALL["d3net-lite"]).eval()
    rep = export_model(net, tmp_path / "m.onnx", height=64, width=96, mc=False, check=False)
    q = quantize_int8(rep.files["depth"], int8_path(rep.files["depth"]), [_random_rgb(64, 96, i) for i in range(4)])
    x = _random_rgb(64, 96, 9)
    a = ort.InferenceSession(str(rep.files["depth"]), providers=["CPUExecutionProvider"]).run(None, {"rgb": x})[0]
    b = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"rgb": x})[0]
    assert b.shape == a.shape and float(np.mean(np.abs(b - a) / a)) < 0.05
    import onnx

    from inference.quantize import FP32_END_CONVS, fp32_convs

    kept = fp32_convs(rep.files["depth"])
    assert len(kept) == 2 * FP32_END_CONVS
    nodes = onnx.load(str(q)).graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    # QDQ: a quantised Conv reads a DequantizeLinear output as its weight, a kept one its fp32 initializer
    dq_outputs = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    quantised = {n.name for n in convs if n.input[1] in dq_outputs}
    assert quantised and not quantised & set(kept)
    assert {n.name for n in convs} - quantised == set(kept)


def test_bench_summary_has_the_issue_keys() -> None:
    from rig.bench.uncertainty import summary

    figs = {"deploy": {"torch_vs_ort": {"by_threads": {"1": {"speedup": 1.4}, "2": {"speedup": 2.3}}},
                       "mc_dropout": {"ratio": 9.0}, "live_loop": {"by_threads": {"2": {"ratio": 0.8}}}},
            "uncertainty": {"moments": {"ratio": 1.2}, "agreement": {"spearman_mean": 0.85},
                            "int8": {"speedup": 2.0, "rel_change": 0.01}}}
    s = summary(figs)
    assert s == {"ort_over_torch_1thread": 1.4, "ort_over_torch_2threads": 2.3, "mc50_over_one_pass": 9.0,
                 "moments_over_one_pass": 1.2, "moments_vs_mc50_spearman": 0.85, "live_over_model_2threads": 0.8,
                 "int8_over_fp32": 2.0, "int8_rel_change": 0.01}
    assert summary({})["int8_over_fp32"] is None


def test_smooth_kernel_variance_equals_the_per_tap_form_on_a_constant_field() -> None:
    """dfdnet's 1 x 1 kernel variance: exact where σ is constant under the kernel (away from the
    zero padding), and the same shape as the conv's output for strided convs too."""
    from inference.moments import _smooth_var, _spatially_correlated_var

    torch.manual_seed(0)
    w = torch.randn(5, 4, 3, 3)
    var = torch.rand(1, 4, 1, 1).expand(1, 4, 12, 16).contiguous()
    kw = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    a, b = _smooth_var(var, w, kw), _spatially_correlated_var(var, w, kw)
    assert a.shape == b.shape == (1, 5, 12, 16)
    assert torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], rtol=1e-5)
    kw2 = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    a2, b2 = _smooth_var(var, w, kw2), _spatially_correlated_var(var, w, kw2)
    assert a2.shape == b2.shape == (1, 5, 6, 8)
    assert torch.allclose(a2[..., 1:, 1:], b2[..., 1:, 1:], rtol=1e-5)


def test_first_order_relu_hand_values_and_only_dfdnets_top_stages_use_it(monkeypatch) -> None:
    import inference.moments as M

    mean, var = M.linear_relu_moments((torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 0.5])), 0.1)
    assert torch.allclose(mean, torch.tensor([-0.1, 2.0])) and torch.allclose(var, torch.tensor([0.005, 0.5]))
    # where σ ≪ |μ| the Gaussian form agrees with it
    g_mean, g_var = M.leaky_relu_moments((torch.tensor([-3.0, 3.0]), torch.tensor([0.01, 0.01])), 0.1)
    l_mean, l_var = M.linear_relu_moments((torch.tensor([-3.0, 3.0]), torch.tensor([0.01, 0.01])), 0.1)
    assert torch.allclose(g_mean, l_mean, atol=1e-4) and torch.allclose(g_var, l_var, rtol=1e-3)
    sizes: dict[str, list[int]] = {"linear": [], "gauss": []}
    lin, gauss = M.linear_relu_moments, M.leaky_relu_moments
    monkeypatch.setattr(M, "linear_relu_moments", lambda m, s=0.0: sizes["linear"].append(m[0].shape[-1]) or lin(m, s))
    monkeypatch.setattr(M, "leaky_relu_moments", lambda m, s=0.0: sizes["gauss"].append(m[0].shape[-1]) or gauss(m, s))
    torch.manual_seed(0)
    moments_predict(build_model("dfdnet", **SMALL["dfdnet"]).eval(), torch.rand(1, 3, 64, 96))
    assert sorted(set(sizes["linear"])) == [48, 96]            # dec1 (1/2) and dec0 (full resolution)
    assert sizes["gauss"] and max(sizes["gauss"]) <= 24          # every coarser stage: the Gaussian form
    sizes["linear"].clear()
    moments_predict(build_model("d3net-lite", **SMALL["d3net-lite"]).eval(), torch.rand(1, 3, 64, 96))
    assert not sizes["linear"]                                   # other decoders keep the Gaussian form


def _unpack(cov: torch.Tensor, n: int) -> torch.Tensor:
    """Packed (B, n(n+1)/2, H, W) -> (B, n, n, H, W)."""
    from inference.moments import _pairs

    i, j = _pairs(n)
    full = torch.zeros(cov.shape[0], n, n, *cov.shape[-2:], dtype=cov.dtype)
    full[:, i, j] = cov
    full[:, j, i] = cov
    return full


def _random_cov(n: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=g)
    return a @ a.T + 0.1 * torch.eye(n)


def test_cov_kernel_maps_a_packed_covariance_to_w_c_wt() -> None:
    from inference.moments import _cov_diag, _cov_kernel, _pairs

    g = torch.Generator().manual_seed(0)
    w, c = torch.randn(3, 4, generator=g), _random_cov(4, g)
    i, j = _pairs(4)
    packed = c[i, j].view(1, -1, 1, 1).expand(1, -1, 2, 3).contiguous()
    out = _unpack(torch.nn.functional.conv2d(packed, _cov_kernel(w, False)), 3)
    assert torch.allclose(out[0, :, :, 1, 2], w @ c @ w.T, atol=1e-4)
    var = torch.rand(1, 4, 2, 3, generator=g)
    out_d = _unpack(torch.nn.functional.conv2d(var, _cov_kernel(w, True)), 3)
    assert torch.allclose(out_d[0, :, :, 1, 1], w @ torch.diag(var[0, :, 1, 1]) @ w.T, atol=1e-5)
    assert torch.allclose(_cov_diag(torch.nn.functional.conv2d(packed, _cov_kernel(w, False)), 3)[0, :, 0, 0],
                          torch.diagonal(w @ c @ w.T), atol=1e-4)


def test_relu_sd_gain_matches_the_gaussian_moments_and_ignores_the_scale() -> None:
    from inference.moments import relu_sd_gain

    mu, var = torch.tensor([-2.0, -0.3, 0.0, 0.5, 3.0]), torch.full((5,), 0.7)
    _, out_var = leaky_relu_moments((mu, var))
    assert torch.allclose(relu_sd_gain(mu, var, False), (out_var / var).sqrt(), atol=1e-5)
    # only μ/σ matters, down to variances far below float32's useful range for the direct form
    assert torch.allclose(relu_sd_gain(mu * 1e-10, var * 1e-20, False), relu_sd_gain(mu, var, False), atol=1e-5)
    assert relu_sd_gain(mu, var, True).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("linear", [False, True])
def test_cov_block_follows_samples_of_smooth_correlated_noise(linear: bool) -> None:
    """A conv-BN-ReLU block on noise constant over space and correlated across channels (what comes
    up from dfdnet's bottleneck): the coarse packed covariance equals the sample covariance of the
    block's output away from the border; the ReLU is in its active regime (BN shift large)."""
    from inference.model import _LiteConv
    from inference.moments import cov_block_moments

    g = torch.Generator().manual_seed(1)
    block = _LiteConv(4, 3, 0.0).eval()
    with torch.no_grad():
        block.conv.weight.copy_(torch.randn(3, 4, 3, 3, generator=g) * 0.3)
        block.bn.bias.fill_(20.0)
        block.bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
    c = _random_cov(4, g) * 0.05
    mean = torch.rand(1, 4, 8, 12, generator=g)
    skip = torch.rand(1, 4, 16, 24, generator=g)
    from inference.moments import _pairs
    i, j = _pairs(4)
    with torch.inference_mode():
        cov_in = c[i, j].view(1, -1, 1, 1).expand(1, -1, 8, 12).contiguous()
        out_mean, cov = cov_block_moments(block, mean, None, cov_in, skip, linear=linear, pool=2)
        z = torch.randn(20000, 4, generator=g) @ torch.linalg.cholesky(c).T
        ys = block(torch.nn.functional.interpolate(mean, size=(16, 24), mode="bilinear", align_corners=False)
                   + skip + z.view(-1, 4, 1, 1))
    assert out_mean.shape == (1, 3, 16, 24) and cov.shape == (1, 6, 8, 12)
    sample = torch.cov(ys[:, :, 8, 12].T)  # an interior pixel of the fine grid (coarse 4, 6)
    assert torch.allclose(_unpack(cov, 3)[0, :, :, 4, 6], sample, rtol=0.05, atol=2e-3)
    assert torch.allclose(out_mean[0, :, 8, 12], ys[:, :, 8, 12].mean(0), rtol=1e-3)


@pytest.mark.slow
@pytest.mark.realdata
def test_moments_sigma_follows_mc_on_the_shipped_model_and_a_real_capture() -> None:
    """The shipped f/2.8 model (dfdnet or its ensemble) on one real DFD capture: the sampling-free σ
    ranks the pixels as MC-dropout with 50 samples does (issue 14's goal: mean Spearman >= 0.8 over the
    benchmark's images; one image here, so a margin)."""
    from conftest import shared_subdir

    from inference import model as M
    from rig.core.imageio import read_rgb

    src = shared_subdir("dfd_indoor/train")
    if "dfd-n2.8" not in M.shipped_models(include_camind=False):
        pytest.skip("dfd-n2.8 is not shipped")
    net = M.load_model("dfd-n2.8").model.eval()
    rgb = read_rgb(sorted((src / "N2_8").glob("*"))[40])  # 645x432, the model's size
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255.0
    _, var = moments_predict(net, x)
    _, mc_var = mc_predict(net, x, samples=50, seed=0)
    assert spearman(var.sqrt()[0, 0].numpy(), mc_var.sqrt()[0, 0].numpy()) > 0.75  # 0.75 here, 0.86 over 11
