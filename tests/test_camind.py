"""Camera-independent DFD model (inference.camind): the k_cam correction reaches the depth network,
loss/targets follow rig.core.optics, and a tiny cross-camera experiment runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.camind import (CamIndDFD, CameraSet, blur_target_px, camind_loss, format_table, predict_camind,
                              run_cross_camera_experiment)
from rig.core import optics
from rig.core.optics import Lens


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _model(**kw) -> CamIndDFD:
    torch.manual_seed(0)
    return CamIndDFD(base=4, **kw).eval()


def test_two_k_cam_values_give_different_depth():
    m = _model()
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        a, b = m(x, 2.0, 0.3), m(x, 4.0, 0.3)
    assert not torch.allclose(a.depth_m, b.depth_m)
    assert torch.equal(a.lambda_px, b.lambda_px)  # the blur network does not see k_cam
    assert torch.allclose(a.corrected, 2.0 * b.corrected)  # corrected = σ_defocus / (ρ·k_cam)


def test_corrected_differs_from_uncorrected_and_matches_formula():
    m = _model(rho=0.3)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out = m(x, torch.tensor([2.0, 5.0]), torch.tensor([0.2, 0.4]))
    g = torch.tensor([0.2, 0.4]).view(-1, 1, 1, 1)
    sig = torch.sqrt(torch.clamp(out.lambda_px ** 2 - g ** 2, min=1e-6))
    assert torch.allclose(out.sigma_defocus_px, sig)
    assert torch.allclose(out.corrected, sig / (0.3 * torch.tensor([2.0, 5.0]).view(-1, 1, 1, 1)))
    assert not torch.allclose(out.corrected, out.lambda_px)
    assert not torch.allclose(out.corrected, out.sigma_defocus_px)


def test_gradient_wrt_k_cam_and_gamma_is_nonzero():
    m = _model()
    x = torch.rand(1, 3, 16, 16)
    k = torch.tensor([3.0], requires_grad=True)
    g = torch.tensor([0.5], requires_grad=True)
    m(x, k, g).depth_m.mean().backward()
    assert k.grad is not None and float(k.grad.abs()) > 0
    assert g.grad is not None and float(g.grad.abs()) > 0


def test_no_k_cam_variant_ignores_k_cam():
    m = _model(use_k_cam=False)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x, 2.0).depth_m, m(x, 4.0).depth_m)


def test_blur_target_matches_optics_and_loss_is_finite():
    lens = Lens(focal_mm=35.0, f_number=2.8, pixel_um=25.0, focus_m=2.0, downsample=4.0)
    k = optics.k_cam_px(lens)
    d = np.array([0.7, 1.5, 2.0, 5.0], np.float32)
    want = optics.gaussian_sigma_px(optics.blur_diameter_px(d, lens), 0.3)
    got = blur_target_px(torch.from_numpy(d).view(1, 1, 1, 4), torch.tensor([k]), 2.0, 0.3)
    np.testing.assert_allclose(got.numpy().ravel(), want, rtol=1e-5)
    m = _model().train()
    out = m(torch.rand(1, 3, 8, 8), k)
    loss, parts = camind_loss(out, torch.full((1, 1, 8, 8), 3.0), torch.tensor([k]), 2.0, 0.3, b_weight=0.5)
    assert torch.isfinite(loss) and parts["blur"] > 0
    loss.backward()
    assert m.blur_net.head.weight.grad.abs().sum() > 0 and m.depth_net.head.weight.grad.abs().sum() > 0


def test_predict_camind_shape_and_padding():
    m = _model()
    depth = predict_camind(m, (np.random.default_rng(0).random((15, 22, 3)) * 255).astype(np.uint8), 3.0, 0.2)
    assert depth.shape == (15, 22) and depth.dtype == np.float32 and np.all(depth > 0)


def _toy_camera(name: str, k_cam: float, n: int = 3, seed: int = 0) -> CameraSet:
    """Blur-coded toy images: texture blurred by the true per-pixel σ of a step depth map."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    rgbs, depths = [], []
    for _ in range(n):
        depth = np.where(np.arange(32)[None, :] < rng.integers(8, 24), 1.0, 4.0) * np.ones((24, 1))
        tex = rng.random((24, 32, 3))
        sig = 0.3 * k_cam * np.abs(depth - 2.0) / depth
        img = np.where(depth[..., None] < 2.0, gaussian_filter(tex, (sig.max(), sig.max(), 0)),
                       gaussian_filter(tex, (sig.min(), sig.min(), 0)))
        rgbs.append(img.astype(np.float32))
        depths.append(depth.astype(np.float32))
    return CameraSet(name, np.stack(rgbs), np.stack(depths), k_cam, 0.0, k_cam * 1.05)


def test_tiny_cross_camera_experiment_runs():
    train = [_toy_camera("a", 2.0), _toy_camera("b", 4.0, seed=1)]
    test = [_toy_camera("c", 3.0, seed=2)]
    rows = run_cross_camera_experiment(train, test, focus_m=2.0, steps=4, crop_hw=(16, 24), batch=2, base=4)
    assert [r["variant"] for r in rows] == ["no k_cam", "gt k_cam", "est k_cam"]
    for r in rows:
        assert 0.0 <= r["delta1"] <= r["delta2"] <= r["delta3"] <= 1.0
        assert np.isfinite(r["rel"]) and np.isfinite(r["rms"]) and np.isfinite(r["log10"])
    table = format_table(rows)
    assert table.count("\n") == 4 and "est k_cam" in table


def test_gamma_is_subtracted_exactly_once():
    """λ is trained toward √(σ² + γ²); the correction √(λ² − γ²) then gives back the defocus σ itself."""
    from inference.camind import total_blur_target_px

    k, g = torch.tensor([6.0]), torch.tensor([0.8])
    d = torch.tensor([0.7, 1.5, 3.0, 6.0]).view(1, 1, 1, 4)
    sig = blur_target_px(d, k, 2.0, 0.3)
    lam = total_blur_target_px(d, k, 2.0, 0.3, g)
    np.testing.assert_allclose(lam.numpy(), np.sqrt(sig.numpy() ** 2 + 0.64), rtol=1e-6)
    m = _model()
    recovered, _ = m.correct(lam, k, g)
    np.testing.assert_allclose(recovered.numpy(), sig.numpy(), rtol=1e-4, atol=1e-3)
    # a λ equal to the defocus-only σ (the old target) would lose γ twice: the correction shrinks it
    twice, _ = m.correct(sig, k, g)
    assert float((sig - twice).abs().max()) > 0.1
    # the loss is zero at the right target (blur part) and positive at the old one
    out = m(torch.rand(1, 3, 4, 4), 6.0, 0.8)
    from inference.camind import CamIndOutput

    depth = torch.full((1, 1, 4, 4), 3.0)
    right = CamIndOutput(depth, total_blur_target_px(depth, k, 2.0, 0.3, g), out.sigma_defocus_px, out.corrected)
    old = CamIndOutput(depth, blur_target_px(depth, k, 2.0, 0.3), out.sigma_defocus_px, out.corrected)
    assert camind_loss(right, depth, k, 2.0, 0.3, gamma_px=g)[1]["blur"] < 1e-6
    assert camind_loss(old, depth, k, 2.0, 0.3, gamma_px=g)[1]["blur"] > 0.05


def test_deeper_unets_keep_shapes_pad_any_size_and_round_trip(tmp_path):
    from inference.camind import load_camind, predict_camind, save_camind

    shallow = CamIndDFD(base=4)
    assert shallow.stride == 4 and {k.split(".")[1] for k in shallow.state_dict() if k.startswith("blur_net")} == {
        "e1", "e2", "e3", "u2", "u1", "head"}  # the 3-level names files were saved with
    deep = CamIndDFD(base=4, levels=5, depth_scale_m=2.0).eval()
    assert deep.stride == 16 and deep.blur_net.channels == (4, 8, 16, 32, 64)
    rgb = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)  # not multiples of 16
    d = predict_camind(deep, rgb, 3.0)
    assert d.shape == (37, 53) and np.isfinite(d).all()
    path = save_camind(deep, tmp_path / "deep.pt", {"focus_m": 1.0})
    again, meta = load_camind(path)
    assert meta["levels"] == 5 and again.stride == 16
    np.testing.assert_array_equal(predict_camind(again, rgb, 3.0), d)
    with pytest.raises(ValueError):
        CamIndDFD(base=4, levels=1)
