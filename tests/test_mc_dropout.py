"""MC-dropout: the efficient path (trunk once, batched decoder samples) equals K full passes."""

from __future__ import annotations

import pytest
import torch

from inference.mc_dropout import mc_predict, mc_predict_naive
from inference.model import build_model

torch.set_num_threads(1)


@pytest.mark.parametrize("arch,samples,chunk", [("d3net-lite", 7, 3), ("d3net-lite", 5, None), ("d3net", 4, 3)])
def test_efficient_equals_naive_for_fixed_seed(arch: str, samples: int, chunk: int | None) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.rand(2, 3, 64, 96)
    m_eff, v_eff, s_eff = mc_predict(model, x, samples=samples, seed=11, chunk=chunk, return_samples=True)
    m_nai, v_nai, s_nai = mc_predict_naive(model, x, samples=samples, seed=11, return_samples=True)
    assert s_eff.shape == s_nai.shape == (samples, 2, 1, 64, 96)
    assert torch.allclose(s_eff, s_nai, rtol=1e-5, atol=1e-5)  # same dropout masks, sample by sample
    assert torch.allclose(m_eff, m_nai, rtol=1e-5, atol=1e-5)
    assert torch.allclose(v_eff, v_nai, rtol=1e-3, atol=1e-8)
    # dropout really is on: the samples differ and the variance is positive
    assert float(v_eff.mean()) > 0
    assert not torch.allclose(s_eff[0], s_eff[1])
    assert not model.training  # the model's mode is restored


def test_seed_controls_masks_and_mean_is_sample_average() -> None:
    torch.manual_seed(0)
    model = build_model("d3net-lite").eval()
    x = torch.rand(1, 3, 64, 96)
    a, va, sa = mc_predict(model, x, samples=6, seed=3, return_samples=True)
    b, vb = mc_predict(model, x, samples=6, seed=3)
    c, _ = mc_predict(model, x, samples=6, seed=4)
    assert torch.equal(a, b) and torch.equal(va, vb)
    assert not torch.allclose(a, c)
    assert torch.allclose(a, sa.mean(0), atol=1e-6)
    assert torch.allclose(va, sa.var(0, unbiased=False), rtol=1e-3, atol=1e-7)
    # outside MC the network is deterministic (dropout off in eval mode)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_keep_masks_are_bernoulli_and_generator_driven() -> None:
    from inference.dropout import sample_keep_mask

    for keep in (0.5, 0.8):
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        a = sample_keep_mask((4, 32, 20, 30), keep, g1)
        assert a.dtype == torch.uint8 and set(a.unique().tolist()) == {0, 1}
        assert abs(float(a.float().mean()) - keep) < 0.01
        assert torch.equal(a, sample_keep_mask((4, 32, 20, 30), keep, g2))  # same seed, same mask
        assert not torch.equal(a, sample_keep_mask((4, 32, 20, 30), keep, g1))  # the stream advances
