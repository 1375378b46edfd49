"""ONNX export of the depth networks for deployment (``rig export``).

One export writes three graphs next to each other (opset 17, TorchScript-based exporter,
``dynamo=False``: the torch.export-based exporter needs ``onnxscript``, which the project does not
install):

* ``FILE.onnx`` — **depth**: ``rgb`` (B, 3, H, W) float32 in [0, 1] -> ``depth_m`` (B, 1, H, W) metres,
  one deterministic pass (dropout off). The reflect padding to the network's stride (32) and the crop
  back are inside the graph, so with ``--dynamic`` any H, W >= 32 is accepted (batch, height and
  width symbolic); without it the graph is fixed to 1 x 3 x ``height`` x ``width``.
* ``FILE.trunk.onnx`` — **MC-dropout trunk**: ``rgb`` (1, 3, H, W) -> the network's deterministic
  trunk tensors (encoder, skip features, the first decoder convolution before its dropout;
  :meth:`inference.model.DepthNet.trunk`), run once per frame.
* ``FILE.decoder.onnx`` — **MC-dropout decoder**: the trunk tensors + ``samples`` (K,) (its length K
  is the number of dropout samples; its values are not used) -> ``mean_m`` and ``m2_m2`` (1, 1, Hp, Wp)
  at the padded size: the mean of the K sampled depth maps and the sum of their squared deviations
  from it. The K samples run as one batch (trunk tensors broadcast or expanded along the batch, as in
  training); an engine runs chunks of samples and merges them (Chan et al.'s parallel variance), so
  memory stays bounded for any K. Dropout masks come from ``RandomUniformLike`` nodes whose ``seed``
  attributes are set at export (:data:`DROPOUT_SEED` + i): a fresh session replays the same masks
  for the same sequence of calls, so replays are deterministic.

Every graph carries metadata (``rig.*`` metadata_props; :func:`read_onnx_meta`): the graph kind,
the architecture, the source model's meta (training image size, depth scale…), the input size, and
for the depth graph the names of its MC companions and the parity measured after export.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from inference.onnx_graph import (ALEATORIC_OUTPUT, DEPTH_OUTPUT, INPUT_NAME, MOMENTS_OUTPUTS,  # noqa: F401
                                 _write_model, companion_paths, moments_path, read_onnx_meta, reseed_dropout,
                                 set_onnx_meta, toposort_graph)
from rig.core.errors import RigError

OPSET = 17
FORMAT = "deep-dfd-onnx/1"
SAMPLES_INPUT = "samples"
MC_OUTPUTS = ("mean_m", "m2_m2")
DROPOUT_SEED = 1000
DEFAULT_SIZE_PX = (645, 432)  # (width, height): the DFD output size
MIN_SIDE_PX = 32  # = the networks' stride; reflect padding to it needs at least one stride of image
UNTRAINED_SEED = 0  # torch seed of an architecture exported without weights
_NO_CROP = 1 << 30  # a slice end beyond any image: ONNX Slice clamps it (decoder graphs stay uncropped)


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and measured."""

    files: dict[str, Path]  # 'depth', and with MC 'trunk', 'decoder'
    parity: dict[str, float] = field(default_factory=dict)  # 'depth WxH' (m) / 'trunk WxH' -> max |Δ| vs torch
    mc_check: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# torch wrappers that become the graphs


def _pad_to_stride_dynamic(rgb: Any, stride: int) -> Any:
    """Reflect-pad bottom/right to a multiple of ``stride``; traced with symbolic sizes.

    Padding commutes with the network's per-channel normalisation, so padding the raw input here and
    letting the network's own ``pad_to_stride`` see an already aligned image gives the same values.
    """
    import torch.nn.functional as F

    h, w = rgb.shape[-2], rgb.shape[-1]
    ph = (stride - h % stride) % stride
    pw = (stride - w % stride) % stride
    return F.pad(rgb, (0, pw, 0, ph), mode="reflect")


def _flatten_trunk(trunk: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """Trunk dict -> (names, tensors): tensors by key, lists as 'key.i'; 'size' is dropped."""
    import torch

    names, tensors = [], []
    for key in sorted(trunk):
        if key == "size":
            continue
        value = trunk[key]
        if torch.is_tensor(value):
            names.append(key)
            tensors.append(value)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                names.append(f"{key}.{i}")
                tensors.append(v)
        else:
            raise TypeError(f"trunk entry {key!r} is neither a tensor nor a list of tensors")
    return names, tensors


def _unflatten_trunk(names: list[str], tensors: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lists: dict[str, dict[int, Any]] = {}
    for name, t in zip(names, tensors):
        key, dot, idx = name.partition(".")
        if dot:
            lists.setdefault(key, {})[int(idx)] = t
        else:
            out[key] = t
    for key, items in lists.items():
        out[key] = [items[i] for i in range(len(items))]
    return out


def _graph_modules():  # classes need torch: built on first use so importing this module stays light
    import torch
    import torch.nn as nn

    from inference.model import STRIDE

    class DepthGraph(nn.Module):
        """rgb (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) m; padding and crop inside."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, rgb: torch.Tensor) -> Any:
            h, w = rgb.shape[-2], rgb.shape[-1]
            trunk = self.net.trunk(_pad_to_stride_dynamic(rgb, STRIDE))
            trunk["size"] = (h, w)  # symbolic: the crop back follows the input size
            if hasattr(self.net, "decode_dist"):  # dfdnet: depth and its aleatoric std
                mu, log_b = self.net.decode_dist(trunk, 1)
                return mu.exp(), aleatoric_std_m(mu, log_b)
            return self.net.decode(trunk, 1)

    class MomentsGraph(nn.Module):
        """rgb (B, 3, H, W) -> (mean depth, epistemic std) (B, 1, H, W): sampling-free MC-dropout."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            from inference.moments import log_depth_moments, log_normal_moments

            h, w = rgb.shape[-2], rgb.shape[-1]
            trunk = self.net.trunk(_pad_to_stride_dynamic(rgb, STRIDE))
            trunk["size"] = (h, w)
            mean, var = log_normal_moments(log_depth_moments(self.net, trunk))
            return mean, var.clamp_min(0.0).sqrt()

    class TrunkGraph(nn.Module):
        """rgb (1, 3, H, W) -> the flattened trunk tensors (at the padded size's scales)."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
            _, tensors = _flatten_trunk(self.net.trunk(_pad_to_stride_dynamic(rgb, STRIDE)))
            return tuple(tensors)

    class DecoderGraph(nn.Module):
        """trunk tensors (batch 1) + samples (K,) -> (mean, m2) over K dropout samples, padded size."""

        def __init__(self, net: nn.Module, names: list[str], expand: tuple[str, ...]) -> None:
            super().__init__()
            self.net = net
            self.names = list(names)
            self.expand = set(expand)  # tensors repeated along the batch; the rest broadcast

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            *tensors, samples = inputs
            k = samples.shape[0]
            tensors = [t.expand(k, -1, -1, -1) if n in self.expand else t for n, t in zip(self.names, tensors)]
            trunk = _unflatten_trunk(self.names, tensors)
            trunk["size"] = (_NO_CROP, _NO_CROP)
            out = self.net.decode(trunk, 1)  # (K, 1, Hp, Wp)
            mean = out.mean(0, keepdim=True)
            dev = out - mean
            m2 = (dev * dev).sum(0, keepdim=True)
            return mean, m2

    return DepthGraph, TrunkGraph, DecoderGraph, MomentsGraph


def aleatoric_std_m(mu: Any, log_b: Any) -> Any:
    """Depth std (m) of a Laplace(μ, b) log-depth, to first order: exp(μ)·√2·b."""
    return mu.exp() * log_b.exp() * 2.0 ** 0.5


@contextmanager
def random_dropout(net: Any) -> Iterator[int]:
    """Within the block every :class:`inference.model.McDropout` of ``net`` samples a fresh mask with
    ``rand_like`` (exported as ONNX ``RandomUniformLike``): x * (u < keep) / keep. Yields the count."""
    import torch

    from inference.dropout import McDropout

    layers = [m for m in net.modules() if isinstance(m, McDropout) and m.p > 0]

    def make(keep: float):
        def forward(x: torch.Tensor) -> torch.Tensor:
            return x * (torch.rand_like(x) < keep).to(x.dtype) / keep
        return forward

    for m in layers:
        m.forward = make(1.0 - m.p)  # instance attribute shadows the class method
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward


def _broadcastable(net: Any, names: list[str], tensors: list[Any]) -> tuple[str, ...]:
    """Trunk tensors that must be expanded to K samples (the rest broadcast): 'pre' (an ensemble's
    'm<i>_pre') always; all of
    them when the decoder concatenates skips (D3-Net) rather than adding them (d3net-lite)."""
    import torch

    DecoderGraph = _graph_modules()[2]
    for expand in (tuple(n for n in names if n == "pre" or n.endswith("_pre")), tuple(names)):
        try:
            with torch.inference_mode(), random_dropout(net):
                DecoderGraph(net, names, expand)(*tensors, torch.zeros(2))
            return expand
        except RuntimeError:
            continue
    raise RigError("cannot export the MC-dropout decoder: trunk tensors do not fit the decoder")


# ----------------------------------------------------------------------------------------------
# Export


def _torch_export(module: Any, args: tuple[Any, ...], path: Path, input_names: list[str],
                  output_names: list[str], dynamic_axes: dict[str, dict[int, str]] | None, opset: int) -> None:
    import torch

    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        # the TorchScript exporter warns about itself and about Python ints taken from shapes; the
        # symbolic shapes are checked by the parity tests at other sizes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    module.eval()  # the exporter restores the wrapper's own mode, which may have switched the net
    tmp.replace(path)


def _finish(path: Path, meta: dict[str, str], fp16: bool, seed_random: bool) -> None:
    """Seed RandomUniformLike nodes, convert to fp16 (I/O kept float32), write metadata, check."""
    import onnx

    model = onnx.load(str(path))
    if seed_random:
        i = 0
        for node in model.graph.node:
            if node.op_type == "RandomUniformLike":
                for a in list(node.attribute):
                    if a.name == "seed":
                        node.attribute.remove(a)
                node.attribute.append(onnx.helper.make_attribute("seed", float(DROPOUT_SEED + i)))
                i += 1
        meta["rig.dropout_nodes"] = str(i)
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_float_to_float16(model, keep_io_types=True)
        toposort_graph(model.graph)  # the converter appends its input casts at the end
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.checker.check_model(model)
    _write_model(path, model.SerializeToString())


def check_export_args(opset: int, height: int, width: int, out: str | Path, min_side_px: int) -> Path:
    """The ``.onnx`` output path of an export, after checking the opset and the example size
    (each side at least ``min_side_px``); RigError (one line) otherwise."""
    if opset < 17:
        raise RigError(f"--opset: 17 or newer is needed (reflect Pad, Resize), got {opset}")
    if min(height, width) < min_side_px:
        raise RigError(f"--height/--width: at least {min_side_px} px each (got {width}x{height})")
    out = Path(out)
    if out.suffix != ".onnx":
        raise RigError(f"{out}: the output file must end in .onnx")
    return out


def export_model(net: Any, out: str | Path, *, height: int = DEFAULT_SIZE_PX[1], width: int = DEFAULT_SIZE_PX[0],
                 dynamic: bool = False, fp16: bool = False, mc: bool = True, opset: int = OPSET,
                 source: str = "", model_meta: dict[str, Any] | None = None, check: bool = True,
                 mc_check_samples: int = 32) -> ExportReport:
    """Export ``net`` (a :class:`inference.model.DepthNet`) to ``out`` (+ MC companions); see module doc.

    height, width: the example input (the fixed input size without ``dynamic``). With ``check`` the
    graphs are run with onnxruntime (CPU) on a random image of that size and compared with torch.
    """
    import torch

    out = check_export_args(opset, height, width, out, MIN_SIDE_PX)
    t_start = time.perf_counter()
    net = net.float().eval()
    DepthGraph, TrunkGraph, DecoderGraph, MomentsGraph = _graph_modules()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, height, width, generator=gen)
    arch = getattr(net, "arch", "") or type(net).__name__
    base = {"rig.format": FORMAT, "rig.arch": arch, "rig.source": source, "rig.opset": str(opset),
            "rig.input_size_px": json.dumps([width, height]), "rig.dynamic": json.dumps(bool(dynamic)),
            "rig.fp16": json.dumps(bool(fp16)), "rig.model_meta": json.dumps(model_meta or {}, default=str),
            "rig.exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    files: dict[str, Path] = {"depth": out}
    trunk_path, decoder_path = companion_paths(out)
    img_axes = {0: "batch", 2: "height", 3: "width"}

    depth_outputs = [DEPTH_OUTPUT] + ([ALEATORIC_OUTPUT] if hasattr(net, "decode_dist") else [])
    _torch_export(DepthGraph(net), (example,), out, [INPUT_NAME], depth_outputs,
                  {n: img_axes for n in [INPUT_NAME, *depth_outputs]} if dynamic else None, opset)
    depth_meta = dict(base, **{"rig.graph": "depth", "rig.outputs": json.dumps(depth_outputs)})
    mom_path = moments_path(out)
    if mc:
        depth_meta["rig.mc_trunk"] = trunk_path.name
        depth_meta["rig.mc_decoder"] = decoder_path.name
        depth_meta["rig.moments"] = mom_path.name
        _torch_export(MomentsGraph(net), (example,), mom_path, [INPUT_NAME], list(MOMENTS_OUTPUTS),
                      {n: img_axes for n in [INPUT_NAME, *MOMENTS_OUTPUTS]} if dynamic else None, opset)
        _finish(mom_path, dict(base, **{"rig.graph": "moments"}), fp16, False)
        files["moments"] = mom_path

    if mc:
        with torch.inference_mode():
            names, tensors = _flatten_trunk(net.trunk(_pad_to_stride_dynamic(example, MIN_SIDE_PX)))
        expand = _broadcastable(net, names, tensors)
        trunk_axes = None
        if dynamic:
            trunk_axes = {INPUT_NAME: {2: "height", 3: "width"}}
            trunk_axes.update({n: {2: f"{n}_h", 3: f"{n}_w"} for n in names})
        _torch_export(TrunkGraph(net), (example,), trunk_path, [INPUT_NAME], names, trunk_axes, opset)
        dec_axes: dict[str, dict[int, str]] = {SAMPLES_INPUT: {0: "samples"}}
        if dynamic:
            dec_axes.update({n: {2: f"{n}_h", 3: f"{n}_w"} for n in names})
            dec_axes.update({o: {2: "padded_height", 3: "padded_width"} for o in MC_OUTPUTS})
        with random_dropout(net) as n_drop:
            _torch_export(DecoderGraph(net, names, expand), (*[t.clone() for t in tensors], torch.zeros(4)),
                          decoder_path, names + [SAMPLES_INPUT], list(MC_OUTPUTS), dec_axes, opset)
        mc_meta = {"rig.trunk_outputs": json.dumps(names), "rig.expanded": json.dumps(list(expand)),
                   "rig.dropout_layers": str(n_drop), "rig.dropout_seed": str(DROPOUT_SEED)}
        _finish(trunk_path, dict(base, **{"rig.graph": "trunk"}, **mc_meta), fp16, False)
        _finish(decoder_path, dict(base, **{"rig.graph": "decoder"}, **mc_meta), fp16, True)
        files["trunk"], files["decoder"] = trunk_path, decoder_path
        depth_meta.update(mc_meta)

    else:  # companions of an earlier export under this name would not match this graph
        for stale in (trunk_path, decoder_path, mom_path):
            stale.unlink(missing_ok=True)
    _finish(out, depth_meta, fp16, False)
    report = ExportReport(files=files)
    if check:
        report.parity[f"depth {width}x{height}"] = parity_max_abs_m(net, out, height, width)
        if dynamic:
            h2, w2 = max(MIN_SIDE_PX, height // 2 + 3), max(MIN_SIDE_PX, width // 2 + 5)
            report.parity[f"depth {w2}x{h2}"] = parity_max_abs_m(net, out, h2, w2)
        if mc:
            report.parity[f"trunk {width}x{height}"] = trunk_parity_max_abs(net, trunk_path, height, width)
            report.mc_check = mc_check(net, out, height, width, samples=mc_check_samples)
            report.parity[f"moments {width}x{height}"] = moments_parity_max_abs(net, mom_path, height, width)
        set_onnx_meta(out, {"rig.parity_max_abs": json.dumps(report.parity),
                            "rig.mc_check": json.dumps(report.mc_check)})
    report.seconds = time.perf_counter() - t_start
    return report


# ----------------------------------------------------------------------------------------------
# Parity against torch


def _cpu_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _random_rgb(height: int, width: int, seed: int = 1, batch: int = 1) -> np.ndarray:
    """A smooth random image (B, 3, H, W) float32 in [0, 1] (texture at several scales)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((batch, 3, height, width), np.float32)
    for b in range(batch):
        acc = np.zeros((height, width, 3), np.float32)
        for scale in (4, 16, 64):
            small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
            acc += cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        out[b] = (acc / 3.0).transpose(2, 0, 1)
    return np.clip(out, 0.0, 1.0)


def parity_max_abs_m(net: Any, onnx_path: str | Path, height: int, width: int, seed: int = 1,
                     batch: int = 1) -> float:
    """max |depth_onnxruntime − depth_torch| (m) of the depth graph on a random image."""
    import torch

    x = _random_rgb(height, width, seed, batch)
    sess = _cpu_session(Path(onnx_path))
    got = sess.run([DEPTH_OUTPUT], {INPUT_NAME: x})[0]  # (a dfdnet graph's aleatoric std is not compared)
    net.eval()
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    if got.shape != ref.shape:
        raise RigError(f"{onnx_path}: output shape {got.shape} differs from torch's {ref.shape}")
    return float(np.abs(got.astype(np.float64) - ref).max())


def moments_parity_max_abs(net: Any, path: str | Path, height: int, width: int, seed: int = 1) -> float:
    """max |Δ| (m) over the moments graph's mean depth and std, onnxruntime vs torch."""
    import torch

    from inference.moments import moments_predict

    x = _random_rgb(height, width, seed)
    got = _cpu_session(Path(path)).run(list(MOMENTS_OUTPUTS), {INPUT_NAME: x})
    mean, var = moments_predict(net, torch.from_numpy(x))
    ref = (mean.numpy(), var.clamp_min(0).sqrt().numpy())
    return float(max(np.abs(g.astype(np.float64) - r).max() for g, r in zip(got, ref)))


def trunk_parity_max_abs(net: Any, trunk_path: str | Path, height: int, width: int, seed: int = 1) -> float:
    """max |Δ| over every trunk tensor, onnxruntime vs torch."""
    import torch

    from inference.model import pad_to_stride

    x = _random_rgb(height, width, seed)
    sess = _cpu_session(Path(trunk_path))
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {INPUT_NAME: x})
    with torch.inference_mode():
        t = torch.from_numpy(x)
        ref_names, ref = _flatten_trunk(net.trunk(pad_to_stride(t)[0]))
    if ref_names != names:
        raise RigError(f"{trunk_path}: trunk outputs {names} do not match the network's {ref_names}")
    return float(max(np.abs(g.astype(np.float64) - r.numpy()).max() for g, r in zip(got, ref)))


def mc_check(net: Any, depth_path: str | Path, height: int, width: int, samples: int = 32,
             seed: int = 1) -> dict[str, float]:
    """MC-dropout through the exported trunk + decoder vs torch's :func:`inference.mc_dropout.mc_predict`.

    The masks differ (onnxruntime's generator vs torch's), so this compares statistics: the largest
    difference of the two MC means, and the ratio of the mean standard deviations (≈ 1).
    """
    import torch

    from inference.engine import mc_from_sessions
    from inference.mc_dropout import mc_predict

    trunk_path, decoder_path = companion_paths(depth_path)
    x = _random_rgb(height, width, seed)
    mean, std = mc_from_sessions(_cpu_session(trunk_path), _cpu_session(decoder_path), x, samples)
    with torch.inference_mode():
        tm, tv = mc_predict(net, torch.from_numpy(x), samples=samples, seed=seed)
    t_std = tv.clamp_min(0).sqrt().numpy()[0, 0]
    return {"samples": float(samples),
            "max_abs_mean_diff_m": float(np.abs(mean.astype(np.float64) - tm.numpy()[0, 0]).max()),
            "mean_std_onnx_m": float(std.mean()), "mean_std_torch_m": float(t_std.mean()),
            "std_ratio": float(std.mean() / max(float(t_std.mean()), 1e-12))}


# ----------------------------------------------------------------------------------------------
# CLI


def default_model() -> str:
    """The first shipped model, else the untrained 'd3net-lite' architecture."""
    from inference.model import shipped_models

    shipped = shipped_models()
    preferred = [m for m in shipped if "2.8" in m or "2_8" in m]
    return (preferred or shipped or ["d3net-lite"])[0]


def load_net(model_ref: str) -> tuple[Any, dict[str, Any], str]:
    """A network for export: a model file/shipped name, or an architecture name (untrained)."""
    from inference.model import MODELS, build_model, load_model

    if model_ref in MODELS and not Path(model_ref).exists():
        import torch

        torch.manual_seed(UNTRAINED_SEED)  # untrained weights are reproducible (cacheable, comparable)
        return build_model(model_ref).eval(), {"arch": model_ref, "untrained": True}, model_ref
    loaded = load_model(model_ref)
    return loaded.model, dict(loaded.meta), str(loaded.path)
