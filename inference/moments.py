"""Sampling-free MC-dropout: the mean and variance of the dropout noise propagated through the decoder.

Postels et al., ICCV 2019 ("Sampling-free epistemic uncertainty estimation using approximated
variance propagation") and Brach et al. 2020 ("Single shot MC dropout approximation"): instead of K
stochastic decoder passes, one pass carries a (mean, variance) pair per activation, assuming the
activations of a layer are independent Gaussians:

* dropout p (inverted, keep q = 1 - p): mean μ, variance v / q + μ² p / q;
* convolution (and transposed convolution): mean through the weights (+ bias); variance through the
  squared weights, or, for k x k convs (``SPATIAL_CORRELATED``), with a channel's neighbouring pixels
  fully correlated: Σ_c (Σ_k w σ)², and in dfdnet's decoder, whose noise enters only at 1/32 so its
  variance field is smooth, through the squared sums of each kernel, (Σ_k w)², a 1 x 1 convolution;
* batch norm in eval mode is affine: mean a·μ + b, variance a²·v;
* ReLU / LeakyReLU: the moments of a rectified Gaussian (Φ, φ of μ/σ); in dfdnet's two top decoder
  stages (1/2 and full resolution) the first-order (delta-method) form instead, mean ReLU(μ) and
  variance v·ReLU'(μ)² (:func:`linear_relu_moments`): there the erf/exp of the Gaussian form cost as
  much as the rest of the pass and, against MC-100 on the shipped model, changed σ's rank
  agreement by < 0.01;
* bilinear resizing: mean resized, standard deviation resized (neighbours share their dropped units,
  so they are treated as fully correlated);
* additive skips from the trunk are deterministic: they shift the mean only;
* dfdnet's decoder from dec3 (1/8) on carries each pixel's channel covariance instead of its
  diagonal (:func:`cov_block_moments`), kept at 1/16 where the noise field is smooth: C -> W C Wᵀ
  through the kernel sums, BN and ReLU as per-channel gains. Its channels are strongly correlated
  and the head's mixed-sign sum over them is where a diagonal loses σ's ranking;
* the log-depth head: depth = exp(log-depth) with the log-normal moments
  E = exp(μ + v/2), Var = (exp(v) − 1)·exp(2μ + v).

The decoders are walked module by module (:func:`module_moments` dispatches on the module type);
:data:`DECODERS` holds the per-architecture order of those modules (d3net, d3net-lite, dfdnet;
a dfdnet ensemble combines its members'). The
trunk (everything before the first dropout) is the network's own, run once.
"""

from __future__ import annotations

import functools
import math
from contextvars import ContextVar
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from inference.dropout import McDropout
from inference.model import D3Net, D3NetLite, DepthNet, DfdEnsemble, DfdNet, _add_broadcast

Moments = tuple[torch.Tensor, torch.Tensor]  # (mean, variance), same shape
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_VAR_FLOOR = 1e-12


def dropout_moments(m: Moments, p: float) -> Moments:
    """Inverted dropout with drop probability ``p``: mean kept, variance v/q + μ²·p/q."""
    mean, var = m
    if p <= 0.0:
        return m
    q = 1.0 - p
    return mean, var / q + mean * mean * (p / q)


def conv_moments(conv: nn.Module, m: Moments, weight_slice: slice | None = None,
                 bias: bool = True) -> Moments:
    """Conv2d / ConvTranspose2d: mean through W (+ bias), variance through W² (no bias).

    ``weight_slice`` picks input channels of the weight (D3-Net's decoder half of a concatenation).
    """
    mean, var = m
    w = conv.weight
    if weight_slice is not None:
        w = w[weight_slice] if isinstance(conv, nn.ConvTranspose2d) else w[:, weight_slice]
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):
        kw = dict(stride=conv.stride, padding=conv.padding, output_padding=conv.output_padding,
                  groups=conv.groups, dilation=conv.dilation)
        return F.conv_transpose2d(mean, w, b, **kw), F.conv_transpose2d(var, w * w, None, **kw)
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    out_mean = F.conv2d(mean, w, b, **kw)
    if SPATIAL_CORRELATED and w.shape[-1] > 1 and conv.groups == 1:
        kernel_var = _smooth_var if _SMOOTH_VAR.get() else _spatially_correlated_var
        return out_mean, kernel_var(var, w, kw)
    return out_mean, F.conv2d(var, w * w, None, **kw)


SPATIAL_CORRELATED = True


def _spatially_correlated_var(var: torch.Tensor, w: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    """Variance through a k x k conv when a channel's neighbouring pixels are fully correlated and
    channels independent: Σ_c (Σ_k w[o, c, k] σ[c, k])²."""
    o, c, kh, kww = w.shape
    sd = torch.sqrt(var.clamp_min(0.0))
    per = F.conv2d(sd, w.transpose(0, 1).reshape(c * o, 1, kh, kww), None, stride=kw["stride"],
                   padding=kw["padding"], dilation=kw["dilation"], groups=c)
    b, _, h, ww = per.shape
    return per.mul_(per).view(b, c, o, h, ww).sum(1)


# Set (per thread) by decoders whose dropout noise comes only from a coarse bottleneck (dfdnet).
_SMOOTH_VAR: ContextVar[bool] = ContextVar("smooth_var", default=False)


def _smooth_var(var: torch.Tensor, w: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    """:func:`_spatially_correlated_var` when, in addition, σ is constant under the kernel (the
    noise comes up from a coarse bottleneck, so its variance field is smooth at a kernel's scale):
    Σ_c (Σ_k w[o, c, k])² v[c], a 1 x 1 convolution (a centred k x k kernel when the conv changes
    the size: stride, dilation or uneven padding).

    On the shipped dfdnet against 200 MC samples it ranks σ as well as the per-tap form, at about a
    third of the moments pass's cost; on decoders with dropout at every level (d3net-lite) it does
    not, so only dfdnet's decoder uses it.
    """
    o, c, kh, kww = w.shape
    w2 = w.sum(dim=(2, 3), keepdim=True).square()
    same = (tuple(kw["stride"]) == (1, 1) and tuple(kw["dilation"]) == (1, 1) and kh % 2 == 1 and kww % 2 == 1
            and tuple(kw["padding"]) == ((kh - 1) // 2, (kww - 1) // 2))
    if same:
        return F.conv2d(var, w2, None)
    centred = torch.zeros_like(w)
    centred[:, :, kh // 2, kww // 2] = w2[:, :, 0, 0]
    return F.conv2d(var, centred, None, **kw)


def batchnorm_moments(bn: nn.BatchNorm2d, m: Moments) -> Moments:
    """Eval-mode batch norm, an affine map per channel."""
    mean, var = m
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    s = scale.view(1, -1, 1, 1)
    return mean * s + shift.view(1, -1, 1, 1), var * (s * s)


def leaky_relu_moments(m: Moments, slope: float = 0.0) -> Moments:
    """max(x, 0) + slope·min(x, 0) of x ~ N(μ, v): its mean and variance (slope 0: ReLU)."""
    mean, var = m
    var = var.clamp_min(_VAR_FLOOR)
    sd = torch.sqrt(var)
    a = mean / sd
    cdf = 0.5 * (1.0 + torch.erf(a * _INV_SQRT2))
    pdf = torch.exp(-0.5 * a * a) * _INV_SQRT2PI
    # E[x 1{x>0}] and E[x² 1{x>0}]; the negative side is the rest of E[x], E[x²]
    e_pos = mean * cdf + sd * pdf
    e2_pos = (mean * mean + var) * cdf + mean * sd * pdf
    if slope == 0.0:
        return e_pos, (e2_pos - e_pos * e_pos).clamp_min(0.0)
    e_neg = mean - e_pos
    e2_neg = mean * mean + var - e2_pos
    e1 = e_pos + slope * e_neg
    return e1, (e2_pos + slope * slope * e2_neg - e1 * e1).clamp_min(0.0)


def linear_relu_moments(m: Moments, slope: float = 0.0) -> Moments:
    """First-order (delta-method) LeakyReLU: mean f(μ), variance v·f'(μ)²: two comparisons and a
    multiply instead of the Gaussian form's erf and exp."""
    mean, var = m
    pos = mean > 0
    gain = torch.where(pos, torch.ones_like(mean), torch.full_like(mean, slope * slope))
    return torch.where(pos, mean, mean * slope), var * gain


def resize_moments(m: Moments, size: Any) -> Moments:
    """Bilinear resize (align_corners False): mean and standard deviation resized."""
    mean, var = m
    up_mean = F.interpolate(mean, size=size, mode="bilinear", align_corners=False)
    up_sd = F.interpolate(torch.sqrt(var.clamp_min(0.0)), size=size, mode="bilinear", align_corners=False)
    return up_mean, up_sd * up_sd


def add_deterministic(m: Moments, skip: torch.Tensor) -> Moments:
    """x + skip with a deterministic skip (the trunk's projections): the mean moves, the variance stays."""
    return _add_broadcast(m[0], skip), m[1]


def log_normal_moments(m: Moments) -> Moments:
    """Moments of exp(L) for L ~ N(μ, v): (exp(μ + v/2), (exp(v) − 1)·exp(2μ + v)); μ clamped as the heads do."""
    mu, var = m
    mu = mu.clamp(-10.0, 10.0)
    var = var.clamp(0.0, 20.0)
    mean = torch.exp(mu + 0.5 * var)
    # exp(v) − 1 without float32 cancellation for small v (torch.expm1 has no ONNX export)
    em1 = torch.where(var < 1e-3, var * (1.0 + 0.5 * var), torch.exp(var) - 1.0)
    return mean, em1 * mean * mean


def module_moments(mod: nn.Module, m: Moments) -> Moments:
    """Propagate through one module of the decoders' vocabulary (containers are walked in order)."""
    if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
        return conv_moments(mod, m)
    if isinstance(mod, nn.BatchNorm2d):
        return batchnorm_moments(mod, m)
    if isinstance(mod, McDropout):
        return dropout_moments(m, mod.p)
    if isinstance(mod, (nn.ReLU, nn.LeakyReLU)):
        return leaky_relu_moments(m, float(mod.negative_slope) if isinstance(mod, nn.LeakyReLU) else 0.0)
    if isinstance(mod, (nn.Identity, nn.Dropout)):  # nn.Dropout is off outside training
        return m
    if isinstance(mod, nn.Sequential):
        for child in mod:
            m = module_moments(child, m)
        return m
    if hasattr(mod, "conv") and hasattr(mod, "bn") and hasattr(mod, "drop"):  # _LiteConv: conv-BN-drop-ReLU
        m = batchnorm_moments(mod.bn, conv_moments(mod.conv, m))
        return drop_relu_moments(mod.drop, m)
    raise TypeError(f"no moment propagation for {type(mod).__name__}")


def drop_relu_moments(drop: nn.Module, m: Moments) -> Moments:
    """ReLU(dropout(x)) = dropout(ReLU(x)) (the mask scales by 0 or 1/q >= 0): the ReLU sees x's
    Gaussian, not the dropout's two-point mixture, and the dropout moments are then exact."""
    return module_moments(drop, leaky_relu_moments(m, 0.0))


def _lite_rest(mod: nn.Module, pre: torch.Tensor) -> Moments:
    """A _LiteConv's part after ``first``: dropout, ReLU, from the deterministic pre-activation."""
    return drop_relu_moments(mod.drop, (pre, torch.zeros_like(pre)))


def _skip_unet_moments(net: DepthNet, trunk: dict[str, Any], steps: list[tuple[str, str]]) -> Moments:
    """d3net-lite / dfdnet: dec5a.rest, dec5b, then (resize to skip, add skip, conv block) per step."""
    m = module_moments(net.dec5b, _lite_rest(net.dec5a, trunk["pre"]))
    for block, skip in steps:
        s = trunk[skip]
        m = module_moments(getattr(net, block), add_deterministic(resize_moments(m, s.shape[-2:]), s))
    return m


def _lite_moments(net: D3NetLite, trunk: dict[str, Any]) -> Moments:
    m = _skip_unet_moments(net, trunk, [("dec4a", "s4")])
    m = module_moments(net.dec4b, m)
    for block, skip in (("dec3", "s3"), ("dec2", "s2")):
        s = trunk[skip]
        m = module_moments(getattr(net, block), add_deterministic(resize_moments(m, s.shape[-2:]), s))
    logd = conv_moments(net.head.conv, m)
    logd = resize_moments(logd, (logd[0].shape[-2] * 4, logd[0].shape[-1] * 4))
    h, w = trunk["size"]
    return logd[0][..., :h, :w], logd[1][..., :h, :w]


Cov = torch.Tensor  # (B, n(n+1)/2, H, W): the channel covariance at each pixel, upper triangle packed


@functools.lru_cache(maxsize=None)
def _pair_lists(n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Rows, columns (i <= j) and diagonal slots of the packed upper triangle of an n x n matrix, as
    Python tuples (cached: built once per size; tensors are made per call, since one made under
    ``torch.inference_mode`` cannot enter a traced export)."""
    rows, cols = zip(*[(i, j) for i in range(n) for j in range(i, n)])
    slots = tuple(k for k, (i, j) in enumerate(zip(rows, cols)) if i == j)
    return rows, cols, slots


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (i <= j) of the packed upper triangle of an n x n matrix (constants of
    an exported graph)."""
    rows, cols, _ = _pair_lists(n)
    return torch.tensor(rows), torch.tensor(cols)


def _diag_slots(n: int) -> torch.Tensor:
    """Where the packed upper triangle of an n x n matrix stores its diagonal."""
    return torch.tensor(_pair_lists(n)[2])


def _kernel_sums(conv: nn.Module) -> torch.Tensor:
    """(out, in): each k x k kernel summed, the conv's action on noise that is constant under the kernel."""
    return conv.weight.sum(dim=(2, 3))


def _cov_kernel(w: torch.Tensor, from_diag: bool) -> torch.Tensor:
    """The 1 x 1 conv weight that maps a packed covariance (or a diagonal variance) through W (o, c) to
    the packed W C Wᵀ: entry (i, j) gets Σ_kl W[i, k] W[j, l] C_kl over the stored k <= l."""
    o, c = int(w.shape[0]), int(w.shape[1])  # Python ints, also while tracing an export
    i, j = _pairs(o)
    wi, wj = w.index_select(0, i), w.index_select(0, j)  # (pairs, c)
    if from_diag:
        return (wi * wj).view(len(i), c, 1, 1)
    k, l = _pairs(c)
    off = (k != l).to(w.dtype)  # C_kl and C_lk are one stored entry
    both = (wi.index_select(1, k) * wj.index_select(1, l)
            + off * (wi.index_select(1, l) * wj.index_select(1, k)))
    return both.reshape(len(i), len(k), 1, 1)


def _cov_scale(cov: Cov, gain: torch.Tensor, n: int) -> Cov:
    """C_ij g_i g_j for per-pixel channel gains g, (B, n, H, W)."""
    i, j = _pairs(n)
    return cov * gain.index_select(1, i) * gain.index_select(1, j)


def _cov_diag(cov: Cov, n: int) -> torch.Tensor:
    """The variances, (B, n, H, W)."""
    return cov.index_select(1, _diag_slots(n))


def relu_sd_gain(mean: torch.Tensor, var: torch.Tensor, linear: bool) -> torch.Tensor:
    """sd(ReLU(x)) / sd(x) for x ~ N(μ, v), from a = μ/σ alone (so it holds for any small v):
    √((a² + 1)Φ + aφ − (aΦ + φ)²); with ``linear`` the first-order gain 1{μ > 0}."""
    if linear:
        return (mean > 0).to(mean.dtype)
    a = (mean / torch.sqrt(var.clamp_min(1e-30))).clamp(-20.0, 20.0)
    cdf = 0.5 * (1.0 + torch.erf(a * _INV_SQRT2))
    pdf = torch.exp(-0.5 * a * a) * _INV_SQRT2PI
    e1 = a * cdf + pdf
    return torch.sqrt(((a * a + 1.0) * cdf + a * pdf - e1 * e1).clamp(0.0, 1.0))


def cov_block_moments(block: nn.Module, mean: torch.Tensor, var: torch.Tensor | None, cov: Cov | None,
                      skip: torch.Tensor, linear: bool, pool: int) -> tuple[torch.Tensor, Cov]:
    """One dfdnet decoder step, resize + skip + _LiteConv (conv-BN-ReLU, no dropout), carrying the
    channel covariance of the noise, kept at a coarse resolution, instead of its diagonal.

    The noise comes up from the 1/32 bottleneck, so it is smooth: under a kernel it is constant and
    the conv acts on it through its kernel sums W (``_smooth_var``), C -> W C Wᵀ, and the covariance
    field stays where it was formed (1/8), since the resize to finer stages is linear and commutes
    with W. BN scales it by s_i s_j; the ReLU by g_i g_j, g the standard-deviation gain of each
    channel's Gaussian (or, with ``linear``, first-order) ReLU moments at the block's resolution,
    averaged over ``pool`` x ``pool`` pixels down to the covariance's.

    mean: (B, c, h, w), the previous block's output; ``var`` (B, c, H', W') its variance or ``cov``
    its packed covariance at the coarse resolution. Returns the post-ReLU mean (B, o, H, W) at the
    skip's resolution and the packed covariance (B, o(o+1)/2, H', W').
    """
    size = skip.shape[-2:]
    o = int(block.conv.weight.shape[0])
    c = F.conv2d(var if cov is None else cov, _cov_kernel(_kernel_sums(block.conv), cov is None))
    up = F.interpolate(mean, size=size, mode="bilinear", align_corners=False)
    pre = block.bn(block.conv(_add_broadcast(up, skip)))
    bn = block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    v = _cov_diag(c, o) * (scale * scale).view(1, -1, 1, 1)
    if pool > 1:
        v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    out_mean = (linear_relu_moments if linear else leaky_relu_moments)((pre, v))[0]
    gain = relu_sd_gain(pre, v, linear)
    if pool > 1:
        gain = F.avg_pool2d(gain, pool)
    return out_mean, _cov_scale(c, gain * scale.view(1, -1, 1, 1), o)


def cov_head_moments(conv: nn.Module, mean: torch.Tensor, cov: Cov) -> Moments:
    """The head's log-depth channel (0) of a covariance-carrying decoder: (mean, wᵀ C w resized to the
    mean's resolution), (B, 1, H, W)."""
    var = F.conv2d(cov, _cov_kernel(_kernel_sums(conv)[0:1], False))
    return conv(mean)[:, 0:1], F.interpolate(var, size=mean.shape[-2:], mode="bilinear", align_corners=False)


# dfdnet decoder steps (block, skip); from COV_FROM on they carry the full channel covariance
DFDNET_STEPS = [("dec4", "s4"), ("dec3", "s3"), ("dec2", "s2"), ("dec1", "s1"), ("dec0", "s0")]
COV_FROM = 1  # dec3, dec2, dec1, dec0 (1/8 ... full resolution) and the head; the covariance stays at 1/16


def _dfdnet_moments(net: DfdNet, trunk: dict[str, Any]) -> Moments:
    """dfdnet: diagonal moments through dec5 and dec4 (1/32, 1/16), then the channel covariance
    (:func:`cov_block_moments`, kept at 1/16) through dec3 ... dec0 and the head: there the channels
    are strongly correlated, and the head's mixed-sign sum of them cancels or adds what a diagonal
    misses.

    On the seed-0 ``dfd-n2.8`` and the 11 DFD training captures of ``rig bench infer``, σ's mean
    per-image Spearman with MC-50 went from 0.49 (diagonal throughout) to 0.86 (covariance from dec2
    on, kept at 1/8: 0.83), and the AUSE ratio to MC-50's from 1.46 to 1.00. On four captures
    against MC-400 the Spearman went from 0.07–0.67 to 0.86–0.95; the covariance kept at full
    resolution instead ranked no better and cost 2.9x one pass (torch).
    """
    token = _SMOOTH_VAR.set(True)  # dropout only at 1/32: the variance field is smooth (_smooth_var)
    try:
        mean, var = _skip_unet_moments(net, trunk, DFDNET_STEPS[:COV_FROM])
        cov: Cov | None = None
        for i, (block, skip) in enumerate(DFDNET_STEPS[COV_FROM:]):
            mean, cov = cov_block_moments(getattr(net, block), mean, var if cov is None else None, cov,
                                          trunk[skip], linear=COV_FROM + i >= 3,  # dec1, dec0: first order
                                          pool=2 ** (i + 1))  # dec2 at 1/4 ... dec0 at 1/1
        out = cov_head_moments(net.head.conv, mean, cov)
    finally:
        _SMOOTH_VAR.reset(token)
    h, w = trunk["size"]
    return out[0][..., :h, :w], out[1][..., :h, :w]


def _d3net_moments(net: D3Net, trunk: dict[str, Any]) -> Moments:
    def rest(block: nn.Module, m: Moments) -> Moments:  # _UpBlock.rest
        m = drop_relu_moments(block.drop1, m)
        m = batchnorm_moments(block.bn2, conv_moments(block.conv2, m))
        return drop_relu_moments(block.drop2, m)

    pre = trunk["pre"]
    m = rest(net.decoder[0], (pre, torch.zeros_like(pre)))
    for level in range(1, len(net.decoder)):
        block = net.decoder[level]
        y = conv_moments(block.conv1, m, weight_slice=slice(net._skip_ch[level], None), bias=False)
        m = rest(block, batchnorm_moments(block.bn1, add_deterministic(y, trunk["skip_terms"][level - 1])))
    logd = conv_moments(net.head.conv, m)
    h, w = trunk["size"]
    return logd[0][..., :h, :w], logd[1][..., :h, :w]


def _ensemble_moments(net: DfdEnsemble, trunk: dict[str, Any]) -> Moments:
    """dfdnet-ens: its log-depth is the members' mean, whose dropout masks are independent, so the
    mean is the members' mean and the variance Σ_i v_i / M² (what MC-dropout of the ensemble estimates)."""
    outs = [_dfdnet_moments(m, net.member_trunk(trunk, i)) for i, m in enumerate(net.members)]
    k = len(outs)
    return sum(o[0] for o in outs) / k, sum(o[1] for o in outs) / (k * k)


DECODERS: dict[str, Callable[[Any, dict[str, Any]], Moments]] = {
    "d3net": _d3net_moments, "d3net-lite": _lite_moments, "dfdnet": _dfdnet_moments,
    "dfdnet-ens": _ensemble_moments}


def log_depth_moments(net: DepthNet, trunk: dict[str, Any]) -> Moments:
    """Mean and variance of the log-depth under the decoder's dropout, (B, 1, H, W) each."""
    if net.arch not in DECODERS:
        raise ValueError(f"no moment propagation for architecture {net.arch!r}")
    return DECODERS[net.arch](net, trunk)


def moments_predict(net: DepthNet, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling-free MC-dropout: depth mean (m) and variance (m²), (B, 1, H, W) each, in one pass.

    rgb: (B, 3, H, W) in [0, 1]. Approximates :func:`inference.mc_dropout.mc_predict` with K → ∞.
    """
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            return log_normal_moments(log_depth_moments(net, net.trunk(rgb)))
    finally:
        net.train(was_training)
