"""D3-Net / d3net-lite: shapes, padding, head start, dropout placement, torchvision key names, files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from inference.model import (D3Net, McDropout, build_model, count_parameters, encoder_state_dict_torchvision,
                             export_fp16, load_imagenet_encoder, load_model, resolve_model_path)
from rig.core.errors import RigError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def d3net() -> D3Net:
    torch.manual_seed(0)
    return build_model("d3net", depth_scale_m=2.0).eval()  # type: ignore[return-value]


def _torchvision_densenet121_keys() -> list[str]:
    """The parameter/buffer names of torchvision's densenet121 ``features`` (written from its spec)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["features.conv0.weight"] + [f"features.norm0.{b}" for b in bn]
    for i, n in enumerate((6, 12, 24, 16), start=1):
        for j in range(1, n + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            keys += [f"{p}.norm1.{b}" for b in bn] + [f"{p}.conv1.weight"]
            keys += [f"{p}.norm2.{b}" for b in bn] + [f"{p}.conv2.weight"]
        if i < 4:
            keys += [f"features.transition{i}.norm.{b}" for b in bn] + [f"features.transition{i}.conv.weight"]
    return keys + [f"features.norm5.{b}" for b in bn]


@pytest.mark.parametrize("arch", ["d3net", "d3net-lite"])
def test_shapes_any_size_and_head_start(arch: str, d3net: D3Net) -> None:
    model = d3net if arch == "d3net" else build_model(arch, depth_scale_m=2.0).eval()
    for h, w in ((64, 96), (45, 70)):  # 45x70: padded to 64x96 inside and cropped back
        with torch.inference_mode():
            y = model(torch.rand(2, 3, h, w))
        assert y.shape == (2, 1, h, w)
        assert torch.isfinite(y).all() and (y > 0).all()
        # the log-depth head starts at log(depth scale): an untrained net predicts ~2 m
        assert float(y.mean()) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("arch", ["d3net", "d3net-lite"])
def test_trunk_decode_split_equals_forward(arch: str, d3net: D3Net) -> None:
    model = d3net if arch == "d3net" else build_model(arch).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        a = model(x)
        b = model.decode(model.trunk(x), repeat=3)
    assert b.shape == (3, 1, 64, 96)
    assert torch.allclose(b, a.expand(3, -1, -1, -1), atol=1e-6)


@pytest.mark.parametrize("arch", ["d3net", "d3net-lite"])
def test_dropout_in_first_four_decoder_convs_only(arch: str, d3net: D3Net) -> None:
    model = d3net if arch == "d3net" else build_model(arch)
    drops = [(n, m) for n, m in model.named_modules() if isinstance(m, McDropout)]
    assert len(drops) == 4 and all(m.p == 0.5 for _, m in drops)
    assert not any(n.startswith(("features", "encoder")) for n, _ in drops)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_d3net_encoder_is_densenet121_with_torchvision_names(d3net: D3Net) -> None:
    enc = encoder_state_dict_torchvision(d3net)
    assert list(enc) == _torchvision_densenet121_keys()
    assert enc["features.norm5.weight"].shape == (1024,)
    assert enc["features.denseblock4.denselayer16.conv2.weight"].shape == (32, 128, 3, 3)
    assert enc["features.transition3.conv.weight"].shape == (512, 1024, 1, 1)
    assert 6.9e6 < sum(v.numel() for k, v in enc.items() if "running" not in k and "num_batches" not in k) < 7.0e6


def test_load_imagenet_encoder_from_torchvision_format_file(tmp_path: Path, d3net: D3Net) -> None:
    torch.manual_seed(1)
    src = build_model("d3net")
    sd = {k: v.clone() for k, v in encoder_state_dict_torchvision(src).items()}
    # make it look like a torchvision file: classifier, and the old 'norm.1' naming for some layers
    sd["classifier.weight"] = torch.zeros(1000, 1024)
    sd["classifier.bias"] = torch.zeros(1000)
    old = "features.denseblock1.denselayer1.norm1.weight"
    sd[old.replace("norm1", "norm.1")] = sd.pop(old)
    path = tmp_path / "densenet121.pth"
    torch.save(sd, path)
    dst = build_model("d3net")
    decoder_before = dst.decoder[0].conv1.weight.clone()
    loaded = load_imagenet_encoder(dst, path)  # type: ignore[arg-type]
    assert len(loaded) == len(_torchvision_densenet121_keys())
    ref = encoder_state_dict_torchvision(src)
    got = encoder_state_dict_torchvision(dst)  # type: ignore[arg-type]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert torch.equal(dst.decoder[0].conv1.weight, decoder_before)  # decoder untouched

    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(RigError, match="not a DenseNet-121"):
        load_imagenet_encoder(dst, bad)  # type: ignore[arg-type]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(RigError, match="cannot read"):
        load_imagenet_encoder(dst, garbage)  # type: ignore[arg-type]


def test_decoder_init_is_zero_mean_normal(d3net: D3Net) -> None:
    w = torch.cat([m.weight.detach().reshape(-1) for m in d3net.decoder.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(float(w.mean())) < 1e-3
    assert float(w.std()) == pytest.approx(0.02, rel=0.05)
    assert float(d3net.head.conv.bias.detach()) == pytest.approx(math.log(2.0))


def test_registry_and_fp16_export_roundtrip(tmp_path: Path) -> None:
    with pytest.raises(RigError, match="unknown model architecture"):
        build_model("resnet")
    model = build_model("d3net-lite", depth_scale_m=3.0).eval()
    assert count_parameters(model) < 2.5e6
    path = export_fp16(model, tmp_path / "lite.pt", {"input": "N2_8", "image_size_px": [96, 64]})
    assert path.stat().st_size < 5 * 2**20  # a few MB at most
    loaded = load_model(path)
    assert loaded.arch == "d3net-lite" and loaded.meta["input"] == "N2_8"
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), model(x), rtol=2e-2)  # fp16 weights
    assert resolve_model_path(path) == path
    with pytest.raises(RigError, match="no such model file or shipped model"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "arch": "d3net-lite"}, bad)
    with pytest.raises(RigError, match="do not fit"):
        load_model(bad)
