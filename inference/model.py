"""D3-Net (paper 1 §3.1) and a light CPU variant, with a registry and model-file loading.

Both networks take RGB in [0, 1], shape (B, 3, H, W) with any H, W (reflect-padded to a multiple of
32 inside, cropped back) and return depth in metres, (B, 1, H, W). The output head predicts
log-depth: its bias starts at log(depth_scale_m) (the mean training depth), so an untrained network
already predicts a sensible constant depth.

Every network is split in two for MC-dropout (paper 1 §3.4): :meth:`trunk` — everything up to the
first dropout (the encoder, skip features, the first decoder convolution before its dropout), run
once — and :meth:`decode`, the stochastic rest, which can run ``repeat`` dropout samples of the same
trunk as one batch. ``forward(x) == decode(trunk(x))``.

* ``d3net``: DenseNet-121 encoder (blocks 6/12/24/16, growth 32, bn_size 4, compression 0.5) whose
  parameters carry torchvision's ``features.*`` names, so :func:`load_imagenet_encoder` loads a
  torchvision-format DenseNet-121 state dict; as in the authors' code the stem max-pool is replaced
  by a strided 4x4 convolution (``features.downconv0``/``features.norm1``, not in torchvision's
  dict) and skips are taken after each transition, before its pooling. The decoder is U-Net-like:
  five up-blocks (4x4 transposed conv + 3x3 conv, BN, ReLU) each concatenating the encoder map of
  its scale; dropout p=0.5 follows the first four decoder convolutions.
* ``d3net-lite``: a small U-Net for CPUs (~1.6 M parameters, 3 MB in fp16) with the same dropout
  placement and head; skips are added (FPN-style, projected by 1x1 convs in the trunk) and the
  decoder stops at 1/4 resolution followed by bilinear upsampling, so that dropout samples are cheap.
* ``dfdnet``: a full-resolution U-Net (a stride-1 stage whose features reach a full-resolution
  decoder stage, because the blur to read at 645x432 is 0-2 px), optionally fed the classical
  defocus cue of :mod:`inference.blur_cue`, with a two-channel head: log-depth μ and the log scale
  of a Laplace distribution over log-depth (aleatoric uncertainty, one pass). ``forward`` returns
  depth like the others; :meth:`DfdNet.forward_dist` returns (μ, log b).
* ``dfdnet-ens``: M ``dfdnet`` members (independently trained seeds) run as one network
  (:class:`DfdEnsemble`): log-depth μ is the members' mean (the geometric-mean depth) and the scale is
  set so that its σ is the σ of the equal-weight mixture (the members' aleatoric σ plus their spread).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from inference.blur_cue import defocus_cue
from inference.dropout import McDropout
from rig.core.errors import RigError

STRIDE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_DEPTH_SCALE_M = 2.5


# ----------------------------------------------------------------------------------------------
# Shared pieces


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom/right to multiples of ``stride``; returns (x, (H, W))."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class DepthHead(nn.Module):
    """3x3 conv to one channel = log-depth; depth_m = exp(log-depth). Bias starts at log(scale)."""

    def __init__(self, in_ch: int, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 1, 3, padding=1, bias=True)
        nn.init.normal_(self.conv.weight, 0.0, 1e-3)
        self.reset_scale(depth_scale_m)

    def reset_scale(self, depth_scale_m: float) -> None:
        if not depth_scale_m > 0:
            raise ValueError("depth_scale_m must be > 0")
        with torch.no_grad():
            self.conv.bias.fill_(math.log(depth_scale_m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.conv(x).clamp(-10.0, 10.0))


def _init_decoder(modules: list[nn.Module], std: float = 0.02) -> None:
    """Zero-mean normal init of decoder convolutions (BN: weight 1, bias 0)."""
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class DepthNet(nn.Module):
    """Common interface: normalisation, padding, trunk/decode split."""

    arch: str = ""
    flip_tta: bool = False  # predict_image's default: average with the mirror image (set from the model file)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def trunk(self, rgb: torch.Tensor) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, trunk: dict[str, Any], repeat: int = 1) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.decode(self.trunk(rgb), 1)

    def _prepare(self, rgb: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected RGB of shape (B, 3, H, W), got {tuple(rgb.shape)}")
        x = (rgb - self.mean) / self.std
        return pad_to_stride(x)

    @staticmethod
    def _rep(t: torch.Tensor, repeat: int) -> torch.Tensor:
        return t if repeat == 1 else t.repeat(repeat, *([1] * (t.ndim - 1)))

    def set_depth_scale(self, depth_scale_m: float) -> None:
        self.head.reset_scale(depth_scale_m)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# D3-Net


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.relu1(self.norm1(x)))
        y = self.conv2(self.relu2(self.norm2(y)))
        return torch.cat([x, y], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, n_layers: int, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__(OrderedDict(
            (f"denselayer{i + 1}", _DenseLayer(in_ch + i * growth, growth, bn_size)) for i in range(n_layers)))


class _Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression); the 2x2 average pooling is applied by the caller."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(OrderedDict([("norm", nn.BatchNorm2d(in_ch)), ("relu", nn.ReLU(inplace=True)),
                                      ("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))]))


class _UpBlock(nn.Module):
    """4x4 stride-2 transposed conv + BN (+dropout) + ReLU, 3x3 conv + BN (+dropout) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.drop1 = McDropout(dropout) if dropout else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.drop2 = McDropout(dropout) if dropout else nn.Identity()

    def first(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic part before the first dropout."""
        return self.bn1(self.conv1(x))

    def rest(self, y: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.drop1(y))
        return F.relu(self.drop2(self.bn2(self.conv2(y))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(x))


class D3Net(DepthNet):
    """D3-Net: DenseNet-121 encoder + U-Net decoder with dropout (paper 1 §3.1)."""

    arch = "d3net"

    def __init__(self, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M, growth: int = 32,
                 block_config: tuple[int, ...] = (6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, dropout: float = 0.5) -> None:
        super().__init__()
        feats: OrderedDict[str, nn.Module] = OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.LeakyReLU(0.2, inplace=True)),
            ("downconv0", nn.Conv2d(num_init_features, num_init_features, 4, stride=2, padding=1, bias=False)),
            ("norm1", nn.BatchNorm2d(num_init_features)),
            ("relu1", nn.LeakyReLU(0.2, inplace=True)),
        ])
        ch = num_init_features
        skip_ch = [num_init_features]  # out_conv1 at 1/2
        for i, n in enumerate(block_config):
            feats[f"denseblock{i + 1}"] = _DenseBlock(n, ch, growth, bn_size)
            ch += n * growth
            if i != len(block_config) - 1:
                feats[f"transition{i + 1}"] = _Transition(ch, ch // 2)
                ch //= 2
                skip_ch.append(ch)
        feats["norm5"] = nn.BatchNorm2d(ch)
        self.features = nn.Sequential(feats)
        self.n_blocks = len(block_config)
        # decoder: d_block5 (1024 -> 512, 1/16), then with concatenated skips down to 1/1
        blocks: list[nn.Module] = []
        in_ch = ch
        out_ch = ch // 2
        for level in range(self.n_blocks + 1):  # 5 up-blocks for 4 dense blocks
            skip = skip_ch[-level] if level > 0 else 0
            blocks.append(_UpBlock(in_ch + (skip if level > 0 else 0), out_ch, dropout if level < 2 else 0.0))
            in_ch = out_ch
            out_ch = max(out_ch // 2, num_init_features) if level < self.n_blocks - 1 else out_ch
        self.decoder = nn.ModuleList(blocks)
        self._skip_ch = [0] + [skip_ch[-level] for level in range(1, self.n_blocks + 1)]
        self.head = DepthHead(in_ch, depth_scale_m)
        _init_decoder([self.decoder])
        self._init_encoder()

    def _init_encoder(self) -> None:
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def trunk(self, rgb: torch.Tensor) -> dict[str, Any]:
        x, size = self._prepare(rgb)
        f = self.features
        out = f.relu0(f.norm0(f.conv0(x)))
        skips = [out]  # 1/2
        out = f.relu1(f.norm1(f.downconv0(out)))  # 1/4
        for i in range(self.n_blocks):
            out = getattr(f, f"denseblock{i + 1}")(out)
            if i != self.n_blocks - 1:
                out = getattr(f, f"transition{i + 1}")(out)
                skips.append(out)
                out = F.avg_pool2d(out, 2)
        out = F.leaky_relu(f.norm5(out), 0.2)
        # Up-block l >= 1 starts with a transposed conv of cat([skip_l, decoder]): its skip half is
        # deterministic, so it is computed here once; decode() adds the decoder half per sample.
        skip_terms = []
        for level in range(1, len(self.decoder)):
            conv = self.decoder[level].conv1
            c_skip = skips[-level].shape[1]
            skip_terms.append(F.conv_transpose2d(skips[-level], conv.weight[:c_skip], None, conv.stride,
                                                 conv.padding))
        return {"pre": self.decoder[0].first(out), "skip_terms": skip_terms, "size": size}

    def decode(self, trunk: dict[str, Any], repeat: int = 1) -> torch.Tensor:
        out = self.decoder[0].rest(self._rep(trunk["pre"], repeat))
        for level in range(1, len(self.decoder)):
            block = self.decoder[level]
            term = trunk["skip_terms"][level - 1]
            conv = block.conv1
            y = F.conv_transpose2d(out, conv.weight[self._skip_ch[level]:], None, conv.stride,
                                   conv.padding)
            out = block.rest(block.bn1(_add_broadcast(y, term)))
        h, w = trunk["size"]
        return self.head(out)[..., :h, :w]


def _add_broadcast(x: torch.Tensor, per_image: torch.Tensor) -> torch.Tensor:
    """x: (K*B, C, H, W) dropout samples (sample-major) + per_image: (B, C, H, W), without copying per_image K times."""
    b = per_image.shape[0]
    if b == 1 or x.shape[0] == b:
        return x + per_image
    return (x.view(x.shape[0] // b, *per_image.shape) + per_image.unsqueeze(0)).view(x.shape)


# torchvision's old checkpoints name dense-layer modules 'norm.1' instead of 'norm1'
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def encoder_state_dict_torchvision(model: D3Net) -> dict[str, torch.Tensor]:
    """The encoder's parameters under torchvision ``densenet121`` names (no downconv0/norm1)."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith("features.") and not k.startswith(("features.downconv0", "features.norm1."))}


def load_imagenet_encoder(model: D3Net, path: str | Path) -> list[str]:
    """Load a torchvision-format DenseNet-121 state dict file into the encoder; returns the keys loaded.

    Keys outside ``features.*`` (the classifier) are ignored; old 'norm.1'-style keys are renamed.
    Raises RigError (one line) when the file is unreadable or does not fit DenseNet-121.
    """
    if not isinstance(model, D3Net):
        raise RigError("ImageNet encoder weights apply to the 'd3net' architecture only")
    try:
        sd = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file is a user error
        raise RigError(f"{path}: cannot read DenseNet-121 state dict "
                       f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:120]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise RigError(f"{path}: not a state dict")
    renamed: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        m = _OLD_KEY.match(k)
        renamed[m.group(1) + m.group(2) if m else k] = v
    own = model.state_dict()
    wanted = encoder_state_dict_torchvision(model)
    missing = [k for k in wanted if k not in renamed]
    if missing:
        raise RigError(f"{path}: not a DenseNet-121 state dict (missing {missing[0]} and {len(missing) - 1} more)")
    for k in wanted:
        if tuple(renamed[k].shape) != tuple(own[k].shape):
            raise RigError(f"{path}: {k} has shape {tuple(renamed[k].shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict({k: renamed[k] for k in wanted}, strict=False)
    return list(wanted)


# ----------------------------------------------------------------------------------------------
# Light variant


def _cbr(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class _LiteConv(nn.Module):
    """3x3 conv + BN (+dropout) + ReLU; ``first`` is the part before the dropout."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.drop = McDropout(dropout) if dropout else nn.Identity()

    def first(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def rest(self, y: torch.Tensor) -> torch.Tensor:
        return F.relu(self.drop(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(x))


class D3NetLite(DepthNet):
    """Small U-Net: 5-level encoder (stride 32), additive skips, decoder to 1/4 + bilinear x4."""

    arch = "d3net-lite"

    def __init__(self, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M,
                 enc: tuple[int, ...] = (24, 48, 96, 160, 256), dec: tuple[int, ...] = (96, 64, 32, 16),
                 dropout: float = 0.5) -> None:
        super().__init__()
        stages = []
        in_ch = 3
        for ch in enc:
            stages.append(nn.Sequential(_cbr(in_ch, ch, 2), _cbr(ch, ch)))
            in_ch = ch
        self.encoder = nn.ModuleList(stages)
        # decoder: level 5 (1/32): two dropout convs; level 4 (1/16): two dropout convs; 1/8, 1/4 plain
        self.dec5a = _LiteConv(enc[4], dec[0], dropout)
        self.dec5b = _LiteConv(dec[0], dec[0], dropout)
        self.proj4 = nn.Conv2d(enc[3], dec[0], 1)
        self.dec4a = _LiteConv(dec[0], dec[1], dropout)
        self.dec4b = _LiteConv(dec[1], dec[1], dropout)
        self.proj3 = nn.Conv2d(enc[2], dec[1], 1)
        self.dec3 = _LiteConv(dec[1], dec[2], 0.0)
        self.proj2 = nn.Conv2d(enc[1], dec[2], 1)
        self.dec2 = _LiteConv(dec[2], dec[3], 0.0)
        self.head = DepthHead(dec[3], depth_scale_m)
        decoder = [self.dec5a, self.dec5b, self.proj4, self.dec4a, self.dec4b, self.proj3, self.dec3,
                   self.proj2, self.dec2]
        _init_decoder(decoder)
        for m in self.encoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def trunk(self, rgb: torch.Tensor) -> dict[str, Any]:
        x, size = self._prepare(rgb)
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        # skip projections are deterministic: computed once here
        return {"pre": self.dec5a.first(feats[4]), "s4": self.proj4(feats[3]), "s3": self.proj3(feats[2]),
                "s2": self.proj2(feats[1]), "size": size}

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return _add_broadcast(up, skip)

    def decode(self, trunk: dict[str, Any], repeat: int = 1) -> torch.Tensor:
        x = self.dec5b(self.dec5a.rest(self._rep(trunk["pre"], repeat)))
        x = self.dec4b(self.dec4a(self._up(x, trunk["s4"])))
        x = self.dec3(self._up(x, trunk["s3"]))
        x = self.dec2(self._up(x, trunk["s2"]))
        h, w = trunk["size"]
        logd = self.head.conv(x)
        ph, pw = logd.shape[-2] * 4, logd.shape[-1] * 4
        logd = F.interpolate(logd, size=(ph, pw), mode="bilinear", align_corners=False)
        return logd.clamp_(-10.0, 10.0).exp_()[..., :h, :w]


# ----------------------------------------------------------------------------------------------
# DFD-Net: full resolution, aleatoric head

LOG_B_INIT = math.log(0.25)


class DfdNet(DepthNet):
    """Full-resolution U-Net: 6 levels (1, 1/2 ... 1/32), additive skips, full-resolution decoder."""

    arch = "dfdnet"

    def __init__(self, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M, dropout: float = 0.2,
                 blur_cue: bool = False, enc: tuple[int, ...] = (8, 24, 48, 96, 160, 256),
                 dec: tuple[int, ...] = (96, 64, 48, 24, 8)) -> None:
        super().__init__()
        self.blur_cue = bool(blur_cue)
        in_ch = 3 + (2 if self.blur_cue else 0)
        self.stem = nn.Sequential(_cbr(in_ch, enc[0]), _cbr(enc[0], enc[0]))
        stages = []
        c = enc[0]
        for ch in enc[1:]:
            stages.append(nn.Sequential(_cbr(c, ch, 2), _cbr(ch, ch)))
            c = ch
        self.encoder = nn.ModuleList(stages)
        self.dec5a = _LiteConv(enc[5], dec[0], dropout)
        self.dec5b = _LiteConv(dec[0], dec[0], dropout)
        self.proj4 = nn.Conv2d(enc[4], dec[0], 1)
        self.dec4 = _LiteConv(dec[0], dec[1], 0.0)
        self.proj3 = nn.Conv2d(enc[3], dec[1], 1)
        self.dec3 = _LiteConv(dec[1], dec[2], 0.0)
        self.proj2 = nn.Conv2d(enc[2], dec[2], 1)
        self.dec2 = _LiteConv(dec[2], dec[3], 0.0)
        self.proj1 = nn.Conv2d(enc[1], dec[3], 1)
        self.dec1 = _LiteConv(dec[3], dec[4], 0.0)
        self.proj0 = nn.Conv2d(enc[0], dec[4], 1)
        self.dec0 = _LiteConv(dec[4], dec[4], 0.0)
        self.head = _DistHead(dec[4], depth_scale_m)
        _init_decoder([self.dec5a, self.dec5b, self.proj4, self.dec4, self.proj3, self.dec3, self.proj2,
                       self.dec2, self.proj1, self.dec1, self.proj0, self.dec0])
        for m in list(self.stem.modules()) + list(self.encoder.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def _prepare(self, rgb: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, size = super()._prepare(rgb)
        if self.blur_cue:
            rgb_p = x * self.std + self.mean  # padded RGB in [0, 1]
            x = torch.cat([x, defocus_cue(rgb_p)], dim=1)
        return x, size

    def trunk(self, rgb: torch.Tensor) -> dict[str, Any]:
        x, size = self._prepare(rgb)
        f0 = self.stem(x)
        feats = [f0]
        for stage in self.encoder:
            feats.append(stage(feats[-1]))
        return {"pre": self.dec5a.first(feats[5]), "s4": self.proj4(feats[4]), "s3": self.proj3(feats[3]),
                "s2": self.proj2(feats[2]), "s1": self.proj1(feats[1]), "s0": self.proj0(feats[0]),
                "size": size}

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return _add_broadcast(up, skip)

    def decode_dist(self, trunk: dict[str, Any], repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-depth μ, log b), each (B·repeat, 1, H, W), cropped to the input size."""
        x = self.dec5b(self.dec5a.rest(self._rep(trunk["pre"], repeat)))
        x = self.dec4(self._up(x, trunk["s4"]))
        x = self.dec3(self._up(x, trunk["s3"]))
        x = self.dec2(self._up(x, trunk["s2"]))
        x = self.dec1(self._up(x, trunk["s1"]))
        x = self.dec0(self._up(x, trunk["s0"]))
        out = self.head.conv(x)
        h, w = trunk["size"]
        return out[:, 0:1, :h, :w].clamp(-10.0, 10.0), out[:, 1:2, :h, :w].clamp(-8.0, 3.0)

    def forward_dist(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode_dist(self.trunk(rgb), 1)

    def decode(self, trunk: dict[str, Any], repeat: int = 1) -> torch.Tensor:
        return self.decode_dist(trunk, repeat)[0].exp()




def combine_log_laplace(mus: list[torch.Tensor], log_bs: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """M members' (log-depth μ_i, log b_i), each (B, 1, H, W), -> one (μ, log b) of the same shapes.

    μ = mean_i μ_i (the geometric-mean depth). b is chosen so that the one-member σ formula
    exp(μ)·√2·b gives the σ (m) of the equal-weight mixture: sqrt(mean_i σ_i² + var_i depth_i), with
    σ_i = exp(μ_i)·√2·b_i (:func:`inference.recipe.ensemble_depth_std` on the members' outputs).
    """
    mu_stack = torch.stack(mus)
    mu = mu_stack.mean(0)
    depth = mu_stack.exp()
    sigma = depth * torch.stack(log_bs).exp() * math.sqrt(2.0)
    spread = (depth - depth.mean(0, keepdim=True)).square().mean(0)
    std_m = (sigma.square().mean(0) + spread).sqrt()
    log_b = std_m.clamp_min(1e-12).log() - mu - 0.5 * math.log(2.0)
    return mu, log_b.clamp(-8.0, 3.0)


class DfdEnsemble(DepthNet):
    """M ``dfdnet`` members as one network (a ``dfd-n2.8`` file of several seeds): the same
    trunk/decode/forward_dist interface as :class:`DfdNet`, so predict, flip TTA, MC-dropout, ONNX
    export and moments treat it as one model; a pass costs M member passes.

    The trunk is the members' trunks with keys ``m<i>_<key>``; the heads are combined by
    :func:`combine_log_laplace`.
    """

    arch = "dfdnet-ens"

    def __init__(self, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M, members: int = 2,
                 member_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if int(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(DfdNet(depth_scale_m, **dict(member_kwargs or {}))
                                     for _ in range(int(members)))

    @classmethod
    def of(cls, nets: list["DfdNet"], member_kwargs: dict[str, Any] | None = None) -> "DfdEnsemble":
        """An ensemble (eval mode) holding copies of trained ``nets``, each built by
        ``DfdNet(**member_kwargs)`` (the members' common constructor arguments)."""
        ens = cls(members=len(nets), member_kwargs=member_kwargs)
        for dst, src in zip(ens.members, nets):
            dst.load_state_dict(src.state_dict(), strict=True)
        return ens.eval()

    def trunk(self, rgb: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, m in enumerate(self.members):
            t = m.trunk(rgb)
            out["size"] = t.pop("size")
            out.update({f"m{i}_{k}": v for k, v in t.items()})
        return out

    @staticmethod
    def member_trunk(trunk: dict[str, Any], i: int) -> dict[str, Any]:
        """Member ``i``'s own trunk dict out of the ensemble's."""
        prefix = f"m{i}_"
        own = {k[len(prefix):]: v for k, v in trunk.items() if k.startswith(prefix)}
        own["size"] = trunk["size"]
        return own

    def decode_dist(self, trunk: dict[str, Any], repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-depth μ, log b) of the mixture, each (B·repeat, 1, H, W)."""
        outs = [m.decode_dist(self.member_trunk(trunk, i), repeat) for i, m in enumerate(self.members)]
        return combine_log_laplace([o[0] for o in outs], [o[1] for o in outs])

    def forward_dist(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode_dist(self.trunk(rgb), 1)

    def decode(self, trunk: dict[str, Any], repeat: int = 1) -> torch.Tensor:
        return self.decode_dist(trunk, repeat)[0].exp()

    def set_depth_scale(self, depth_scale_m: float) -> None:
        for m in self.members:
            m.set_depth_scale(depth_scale_m)


class _DistHead(nn.Module):
    """3x3 conv to two channels: log-depth (bias log(scale)) and log Laplace scale (bias log 0.25)."""

    def __init__(self, in_ch: int, depth_scale_m: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 2, 3, padding=1, bias=True)
        nn.init.normal_(self.conv.weight, 0.0, 1e-3)
        self.reset_scale(depth_scale_m)

    def reset_scale(self, depth_scale_m: float) -> None:
        if not depth_scale_m > 0:
            raise ValueError("depth_scale_m must be > 0")
        with torch.no_grad():
            self.conv.bias[0] = math.log(depth_scale_m)
            self.conv.bias[1] = LOG_B_INIT


# ----------------------------------------------------------------------------------------------
# Registry and model files

MODELS: dict[str, Callable[..., DepthNet]] = {"d3net": D3Net, "d3net-lite": D3NetLite, "dfdnet": DfdNet,
                                              "dfdnet-ens": DfdEnsemble}
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED_SUFFIX = ".pt"


def build_model(name: str, depth_scale_m: float = DEFAULT_DEPTH_SCALE_M, **kwargs: Any) -> DepthNet:
    """A fresh network by registry name ('d3net', 'd3net-lite', 'dfdnet' or 'dfdnet-ens')."""
    if name not in MODELS:
        raise RigError(f"unknown model architecture {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](depth_scale_m=depth_scale_m, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class LoadedModel:
    """A network ready for inference plus what its file said about it."""

    model: DepthNet
    arch: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def shipped_models(include_camind: bool = True) -> list[str]:
    """Names of the model files in ``models/`` (``--model NAME``); ``include_camind`` False leaves out
    camera-independent (camind) files, which :func:`load_model` does not read (they need a camera's k_cam)."""
    names = sorted(p.name[: -len(SHIPPED_SUFFIX)] for p in MODELS_DIR.glob(f"*{SHIPPED_SUFFIX}"))
    if include_camind:
        return names
    from inference.camind import is_camind_file

    return [n for n in names if not is_camind_file(MODELS_DIR / f"{n}{SHIPPED_SUFFIX}")]


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A model file path, or a shipped name ('dfd-n2.8' -> models/dfd-n2.8.pt)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    cand = MODELS_DIR / f"{name_or_path}{SHIPPED_SUFFIX}"
    if cand.is_file():
        return cand
    if p.is_dir() and (p / "best.pt").is_file():
        return p / "best.pt"
    shipped = ", ".join(shipped_models()) or "none shipped yet"
    raise RigError(f"{name_or_path}: no such model file or shipped model (shipped: {shipped})")


def _first_sentence(text: str, max_chars: int) -> str:
    """The first line of an error message, cut at a word boundary (never mid-word)."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    line = line.split(". ")[0].rstrip(".")
    if len(line) <= max_chars:
        return line
    return line[:max_chars].rsplit(" ", 1)[0] + " …"


def _refuse_non_torch_file(path: Path) -> None:
    """One clear line for files torch.load would misreport: empty, ONNX, or not a checkpoint at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise RigError(f"{path}: cannot read: {e.strerror or e}") from None
    if not head:
        raise RigError(f"{path}: empty file (0 bytes), not a model; copy the model file again")
    if path.suffix.lower() == ".onnx":
        raise RigError(f"{path}: an ONNX file; this command needs a torch model (.pt, a run folder or a shipped "
                       "name) — `rig live` and `rig replay` run .onnx files")
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch checkpoints are zip files (or legacy pickles)
        raise RigError(f"{path}: not a PyTorch model file (neither a torch zip checkpoint nor a pickle)")


def _guess_arch(state: dict[str, Any]) -> str:
    return "d3net" if any(k.startswith("features.denseblock") for k in state) else "d3net-lite"


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu",
               flip_tta: bool | None = None) -> LoadedModel:
    """Load a training checkpoint, an exported (fp16) model file or a bare state dict; eval mode.

    ``flip_tta``: whether predict_image averages the mirror image by default; None = what the file says.

    Files are read with ``weights_only=True``. Raises RigError (one line) on any problem.
    """
    path = resolve_model_path(name_or_path)
    _refuse_non_torch_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file is a user error
        raise RigError(f"{path}: not a readable model file ({_first_sentence(str(e), 160)})") from None
    if not isinstance(obj, dict):
        raise RigError(f"{path}: not a model file (expected a state dict)")
    if "state_dict" in obj or "model" in obj:
        state = obj.get("state_dict", obj.get("model"))
        meta = dict(obj.get("meta", {}))
        arch = str(obj.get("arch") or meta.get("arch") or _guess_arch(state))
    else:
        state, meta, arch = obj, {}, _guess_arch(obj)
    if not isinstance(state, dict):
        raise RigError(f"{path}: not a model file (no state dict inside)")
    if arch == "camind":
        raise RigError(f"{path}: a camera-independent (camind) model: run it with rig predict or rig live and "
                       "--config CAMERA (it needs that camera's k_cam)")
    model = build_model(arch, **dict(meta.get("model_kwargs", {})))
    state = {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RigError(f"{path}: weights do not fit architecture {arch!r} ({str(e).splitlines()[0][:160]})") from None
    model.eval().to(device)
    model.flip_tta = bool(meta.get("flip_tta", False)) if flip_tta is None else bool(flip_tta)
    meta.setdefault("arch", arch)
    return LoadedModel(model=model, arch=arch, path=path, meta=meta)


def export_fp16(model: DepthNet, path: Path, meta: dict[str, Any]) -> Path:
    """Write ``{'arch', 'state_dict' (fp16 floats), 'meta'}`` atomically (shipped-model format)."""
    import io

    from rig.core.imageio import atomic_write_bytes

    sd = {k: (v.detach().half() if torch.is_floating_point(v) else v.detach()).cpu().contiguous()
          for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"arch": model.arch, "state_dict": sd, "meta": meta}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
