"""int8 static quantisation of an exported depth graph with onnxruntime (``rig export --int8``).

Calibration images are drawn from the model's training images (paper 1's DFD release under the
shared data folder, minus the model's validation ids), area-resized to the graph's input size;
without them a set of smooth random images is used (and said so). QDQ format, per-channel int8 weights,
uint8 activations (the U8S8 kernels: int8 activations measured no faster here); the graph is pre-processed (shape inference, fusions) first.
The first two and last two convolutions stay fp32 (:func:`fp32_convs`): on the shipped dfdnet at
645x432 that was both faster (1.71x vs 1.57x over fp32 at one thread) and closer to fp32 (mean
relative change 1.3 % vs 1.8 %) than quantising every convolution (2026-12-03, timed side by side with
the fp32 graph, median of 7; at two threads the two were within noise, 1.43x vs 1.41x).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rig.core.errors import RigError

CALIBRATION_IMAGES = 16
FP32_END_CONVS = 2  # convolutions kept fp32 at each end of the graph (measured faster and closer to fp32)


def dfd_images(size_wh: tuple[int, int], ids: Sequence[str] | None = None, exclude: Sequence[str] = (),
               limit: int | None = None, kind: str = "N2_8") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, RGB uint8 (H, W, 3), depth m (H, W)) of the DFD indoor training split at ``size_wh``."""
    import cv2

    from rig.core.datasets import find_dfd_triplets, shared_data_root
    from rig.core.imageio import read_depth_m, read_rgb

    root = shared_data_root() / "dfd_indoor"
    if not root.is_dir():
        return []
    triplets, _ = find_dfd_triplets(root, split="train")
    keep, skip = (set(ids) if ids is not None else None), set(exclude)
    out = []
    for sid, n2, n8, depth in triplets:
        if (keep is not None and sid not in keep) or sid in skip:
            continue
        rgb = cv2.resize(read_rgb(n2 if kind == "N2_8" else n8), size_wh, interpolation=cv2.INTER_AREA)
        d = cv2.resize(read_depth_m(depth), size_wh, interpolation=cv2.INTER_NEAREST)
        out.append((sid, rgb, d))
        if limit is not None and len(out) >= limit:
            break
    return out


def calibration_inputs(size_wh: tuple[int, int], model_meta: dict[str, Any],
                       count: int = CALIBRATION_IMAGES) -> tuple[list[np.ndarray], str]:
    """(1, 3, H, W) float32 calibration inputs and a one-line note on where they came from."""
    from inference.export import _random_rgb

    images = dfd_images(size_wh, exclude=list(model_meta.get("val_ids") or []), limit=count,
                        kind=str(model_meta.get("input", "N2_8")))
    if images:
        xs = [np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32) / 255.0 for _, rgb, _ in images]
        return xs, f"{len(xs)} DFD indoor training images (validation ids excluded)"
    w, h = size_wh
    return [_random_rgb(h, w, seed=100 + i) for i in range(count)], f"{count} random images (no DFD data found)"


class _Reader:
    """onnxruntime CalibrationDataReader over a list of inputs."""

    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(inputs)
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.name: x}

    def rewind(self) -> None:  # pragma: no cover - onnxruntime may call it for some methods
        pass


def quantize_int8(fp32_path: str | Path, out_path: str | Path, inputs: list[np.ndarray]) -> Path:
    """Static int8 quantisation (QDQ, per-channel) of ``fp32_path`` calibrated on ``inputs``."""
    import tempfile

    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise RigError("--int8 needs onnxruntime (pip install 'deep-dfd-rig[cpu]')") from None
    from inference.onnx_graph import INPUT_NAME

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(INPUT_NAME, list(inputs))
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="rig-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=fp32_convs(pre))
    return out


def _conv_hops(nodes: list[Any], start: set[str], forward: bool) -> dict[str, float]:
    """Fewest Conv nodes on a data path from tensors ``start`` to each node (forward: from the graph
    input; backward: to the graph outputs), the node itself included. Shape nodes cut the path: the
    padding and cropping arithmetic is not a data path."""
    import math

    hops: dict[str, float] = {}
    tensor_hops = {t: 0.0 for t in start}
    for node in (nodes if forward else reversed(nodes)):
        if node.op_type == "Shape":
            continue
        ins, outs = (node.input, node.output) if forward else (node.output, node.input)
        near = min((tensor_hops.get(t, math.inf) for t in ins if t), default=math.inf)
        h = near + (1.0 if node.op_type == "Conv" else 0.0)
        hops[node.name] = h
        for t in outs:
            if t:
                tensor_hops[t] = min(tensor_hops.get(t, math.inf), h)
    return hops


def fp32_convs(path: str | Path, ends: int = FP32_END_CONVS) -> list[str]:
    """Names of the Conv nodes kept in fp32: those within ``ends`` convolutions of the graph input
    and of its outputs (the full-resolution stem, which reads the 0-2 px blur, and the layers that
    write depth), so every member of an ensemble (dfdnet-ens) keeps its own in fp32."""
    import onnx

    graph = onnx.load(str(path)).graph
    nodes = list(graph.node)
    weights = {t.name for t in graph.initializer}
    near_in = _conv_hops(nodes, {i.name for i in graph.input} - weights, forward=True)
    near_out = _conv_hops(nodes, {o.name for o in graph.output}, forward=False)
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    keep = [c for c in convs if near_in[c] <= ends or near_out[c] <= ends]
    return keep if len(keep) < len(convs) else []


def int8_path(depth_path: str | Path) -> Path:
    """FILE.onnx -> FILE.int8.onnx."""
    p = Path(depth_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.int8.onnx")
