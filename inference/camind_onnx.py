"""The camera-independent (camind) network in ONNX: export, parity against torch, and its engine.

The graph ``FILE.onnx`` (opset 17, batch/height/width symbolic) takes

* ``rgb`` (B, 3, H, W) float32 in [0, 1],
* ``k_cam_px`` (B,) float32 — the camera constant (output px at the image's width),
* ``gamma_px`` (B,) float32 — the in-focus blur γ (px),

and returns ``depth_m`` (B, 1, H, W). The reflect padding to the U-Nets' stride (4 for 3 levels) and the crop back are
inside the graph, so one file serves every camera and image size: the caller passes the rig
config's k_cam and γ scaled to the image width (:mod:`inference.camind_use`). A model trained
without k_cam ignores ``k_cam_px`` (the exporter may then drop that input; the engine feeds only
the inputs the graph declares). Metadata: ``rig.graph`` = ``camind`` plus the model's meta.

:class:`CamindEngine` runs the graph with onnxruntime through :func:`inference.engine.make_session`
(same providers, threads and fp16 rules as :class:`inference.engine.DepthEngine`); it needs no torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rig.core.errors import RigError

GRAPH_KIND = "camind"
K_CAM_INPUT = "k_cam_px"
GAMMA_INPUT = "gamma_px"
MIN_SIDE_PX = 8  # reflect padding by up to stride − 1 px needs a few pixels of image


def _graph_module(model: Any) -> Any:
    """torch wrapper: (rgb, k_cam_px, gamma_px) -> depth_m, padding to the stride and crop inside."""
    import torch
    from torch import nn

    from inference.export import _pad_to_stride_dynamic

    class CamindGraph(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, rgb: torch.Tensor, k_cam_px: torch.Tensor, gamma_px: torch.Tensor) -> torch.Tensor:
            h, w = rgb.shape[-2], rgb.shape[-1]
            out = self.net(_pad_to_stride_dynamic(rgb, self.net.stride), k_cam_px, gamma_px)
            return out.depth_m[:, :, :h, :w]

    return CamindGraph(model)


def parity_constants(meta: dict[str, Any]) -> list[tuple[float, float]]:
    """Two (k_cam_px, gamma_px) pairs to check parity at: the smallest and largest training k_cam
    (meta ``train_k_cam_px``), else 1 and 2 px; γ 0 for the first, 0.3 px for the second."""
    ks = sorted({float(k) for k in meta.get("train_k_cam_px") or [] if float(k) > 0})
    lo, hi = (ks[0], ks[-1]) if len(ks) >= 2 else ((ks[0], 2 * ks[0]) if ks else (1.0, 2.0))
    return [(lo, 0.0), (hi, 0.3)]


def export_camind(model: Any, out: str | Path, *, height: int, width: int, source: str = "",
                  model_meta: dict[str, Any] | None = None, fp16: bool = False, check: bool = True,
                  opset: int = 17) -> Any:
    """Export a :class:`inference.camind.CamIndDFD` to ``out``; returns an
    :class:`inference.export.ExportReport` whose parity holds max |Δdepth| (m) vs torch at the
    two :func:`parity_constants` (example input ``height`` x ``width``)."""
    import torch

    from inference.export import FORMAT, ExportReport, _finish, _torch_export, check_export_args
    from inference.onnx_graph import DEPTH_OUTPUT, INPUT_NAME, set_onnx_meta

    out = check_export_args(opset, height, width, out, MIN_SIDE_PX)
    t0 = time.perf_counter()
    model = model.float().eval()
    meta = dict(model_meta or {})
    example = (torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)),
               torch.ones(1), torch.zeros(1))
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, K_CAM_INPUT: {0: "batch"},
            GAMMA_INPUT: {0: "batch"}, DEPTH_OUTPUT: {0: "batch", 2: "height", 3: "width"}}
    _torch_export(_graph_module(model), example, out, [INPUT_NAME, K_CAM_INPUT, GAMMA_INPUT], [DEPTH_OUTPUT],
                  axes, opset)
    _finish(out, {"rig.format": FORMAT, "rig.graph": GRAPH_KIND, "rig.arch": GRAPH_KIND, "rig.source": source,
                  "rig.opset": str(opset), "rig.input_size_px": json.dumps([width, height]),
                  "rig.dynamic": "true", "rig.fp16": json.dumps(bool(fp16)),
                  "rig.use_k_cam": json.dumps(bool(model.use_k_cam)), "rig.rho": str(model.rho),
                  "rig.model_meta": json.dumps(meta, default=str),
                  "rig.exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, fp16, False)
    report = ExportReport(files={"depth": out})
    if check:
        for k, g in parity_constants(meta):
            report.parity[f"depth {width}x{height} k_cam {k:g} px γ {g:g} px"] = camind_parity_max_abs_m(
                model, out, height, width, k, g)
        set_onnx_meta(out, {"rig.parity_max_abs": json.dumps(report.parity)})
    report.seconds = time.perf_counter() - t0
    return report


def camind_parity_max_abs_m(model: Any, onnx_path: str | Path, height: int, width: int, k_cam_px: float,
                            gamma_px: float, seed: int = 1) -> float:
    """max |depth_onnxruntime − depth_torch| (m) on a random image, both given ``k_cam_px`` / ``gamma_px``."""
    import torch

    from inference.export import _cpu_session, _random_rgb

    x = _random_rgb(height, width, seed)
    sess = _cpu_session(Path(onnx_path))
    got = sess.run(None, camind_feed(sess, x, k_cam_px, gamma_px))[0]
    h, w = x.shape[-2:]
    with torch.inference_mode():  # as inference.camind.predict_camind: reflect-pad to the stride, crop back
        st = model.stride
        t = torch.nn.functional.pad(torch.from_numpy(x), (0, (-w) % st, 0, (-h) % st), mode="reflect")
        ref = model(t, float(k_cam_px), float(gamma_px)).depth_m[:, :, :h, :w].numpy()
    if got.shape != ref.shape:
        raise RigError(f"{onnx_path}: output shape {got.shape} differs from torch's {ref.shape}")
    return float(np.abs(got.astype(np.float64) - ref).max())


def camind_feed(session: Any, x: np.ndarray, k_cam_px: float, gamma_px: float) -> dict[str, np.ndarray]:
    """The session's inputs for image batch ``x`` (B, 3, H, W): only those the graph declares."""
    from inference.onnx_graph import INPUT_NAME

    b = int(x.shape[0])
    values = {INPUT_NAME: x, K_CAM_INPUT: np.full(b, k_cam_px, np.float32),
              GAMMA_INPUT: np.full(b, gamma_px, np.float32)}
    return {i.name: values[i.name] for i in session.get_inputs()}


def is_camind_onnx(path: str | Path) -> bool:
    """True when ``path`` is an ONNX file written by :func:`export_camind`."""
    from inference.onnx_graph import read_onnx_meta

    try:
        return read_onnx_meta(path).get("graph") == GRAPH_KIND
    except RigError:
        return False


class CamindEngine:
    """Depth from an exported camind graph with onnxruntime (providers as :class:`DepthEngine`).

    config: an :class:`inference.engine.EngineConfig`; warm_size: (width, height) to warm up at.
    """

    def __init__(self, model: str | Path, config: Any = None, warm_size: Sequence[int] = (645, 432)) -> None:
        from inference.engine import EngineConfig, make_session
        from inference.onnx_graph import read_onnx_meta

        self.path = Path(model)
        self.meta = read_onnx_meta(self.path)
        if self.meta.get("graph") != GRAPH_KIND:
            raise RigError(f"{self.path}: not a camind graph (rig.graph {self.meta.get('graph')!r})")
        self.config = config or EngineConfig()
        self.session, self.provider, self.fp16 = make_session(self.path, self.config)
        w, h = int(warm_size[0]), int(warm_size[1])
        for _ in range(max(0, int(self.config.warmup))):
            self.predict(np.zeros((h, w, 3), np.uint8), 1.0, 0.0)

    def predict(self, rgb: np.ndarray, k_cam_px: float, gamma_px: float) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 depth (m); constants in px at this image's width."""
        from inference.engine import to_input

        x = to_input(rgb)
        if min(x.shape[-2:]) < MIN_SIDE_PX:
            raise RigError(f"image {x.shape[-1]}x{x.shape[-2]} is too small: at least {MIN_SIDE_PX} px each side")
        return self.session.run(None, camind_feed(self.session, x, k_cam_px, gamma_px))[0][0, 0]

    def close(self) -> None:
        """Nothing to stop (one session, freed with the engine); the live loop calls it on every engine."""

    def describe(self) -> str:
        """One line: provider and precision."""
        fp = "fp16" if self.fp16 else "fp32"
        thr = f", {self.config.threads} thread(s)" if self.config.threads else ""
        return f"onnxruntime {self.provider.replace('ExecutionProvider', '')} ({fp}{thr})"
