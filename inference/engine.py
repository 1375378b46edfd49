"""The deployment engine: onnxruntime sessions over the graphs of :mod:`inference.export`.

* Execution providers in order of preference — TensorRT, CUDA, CPU by default (configurable) — the
  first one onnxruntime offers is chosen and the rest follow it as fallbacks for nodes it cannot run;
  :attr:`DepthEngine.provider` is what the session really uses (onnxruntime silently drops a provider
  whose libraries are missing, so it is read back, not assumed).
* I/O binding: the input is bound from host memory; outputs go to preallocated host buffers on CPU
  (no copy) or stay on the device (CUDA/TensorRT) until copied once. For MC-dropout the trunk
  outputs stay where they are and are bound straight into the decoder.
* fp16 where the provider supports it: TensorRT builds fp16 engines (``trt_fp16_enable``); on CUDA an
  fp32 graph is converted to fp16 in memory (inputs/outputs stay float32); CPU runs fp32 (an fp16
  file is run as it is).
* TensorRT engine cache in a configurable folder (``trt_engine_cache_enable`` /
  ``trt_engine_cache_path``, plus the timing cache), so engines are built once per machine and shape.
* Warm-up runs at the working size when the engine is made (TensorRT builds its engine there).
* MC-dropout (paper 1 §3.4) as in training: the trunk runs once, the decoder runs the K dropout
  samples batched, in chunks whose moments are merged (Chan et al.) — depth = mean, uncertainty = std.
  On the CPU provider the chunks run on parallel single-threaded decoder sessions (one per core, each
  with its own dropout seeds, chunks assigned round-robin and merged in order: deterministic).

Only onnxruntime and NumPy are needed at run time (no torch).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rig.core.errors import RigError

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
DEFAULT_TRT_CACHE = Path(os.environ.get("RIG_TRT_CACHE", Path.home() / ".cache" / "deep-dfd-rig" / "tensorrt"))
MC_MEMORY_BUDGET_BYTES = 768 * 2**20
# widest live decoder activation per sample, in full-resolution-equivalent float channels
_DECODER_WIDTH = {"d3net": 160, "d3net-lite": 4}


@dataclass
class EngineConfig:
    """How :class:`DepthEngine` runs.

    providers: short names ('tensorrt', 'cuda', 'cpu') or onnxruntime names, most preferred first.
    threads: onnxruntime intra-op threads (0 = onnxruntime's default: one per physical core).
    fp16: None = on where the provider supports it (TensorRT, CUDA), False = fp32, True = fp16 when
    possible. spin: let idle worker threads spin (lower latency; off for the live loop, whose other
    stages need the cores). mc_chunk: dropout samples per decoder batch (0 = from a memory budget).
    mc_workers: parallel single-threaded decoder sessions on the CPU provider (0 = ``threads``, else
    every core): the decoder's many small element-wise ops use cores better side by side than split.
    """

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    threads: int = 0
    fp16: bool | None = None
    trt_cache_dir: Path = DEFAULT_TRT_CACHE
    warmup: int = 2
    spin: bool = True
    mc_chunk: int = 0
    mc_workers: int = 0
    device_id: int = 0


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """onnxruntime provider names: the requested ones that are available, in the requested order.

    RigError (one line) when none is available or a name is unknown.
    """
    out: list[str] = []
    for name in requested:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in PROVIDER_NAMES.values():
            raise RigError(f"unknown execution provider {name!r}; choose from {', '.join(PROVIDER_NAMES)}")
        if full in available and full not in out:
            out.append(full)
    if not out:
        raise RigError(f"none of the execution providers {', '.join(requested)} is available here "
                       f"(onnxruntime offers: {', '.join(available) or 'none'}); install onnxruntime "
                       "(CPU) or onnxruntime-gpu")
    return out


def provider_options(provider: str, cfg: EngineConfig, fp16: bool) -> dict[str, Any]:
    """The provider options the engine passes for ``provider`` (an onnxruntime name)."""
    if provider == PROVIDER_NAMES["tensorrt"]:
        cache = Path(cfg.trt_cache_dir)
        return {"device_id": cfg.device_id, "trt_fp16_enable": bool(fp16),
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    if provider == PROVIDER_NAMES["cuda"]:
        return {"device_id": cfg.device_id, "cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RigError("onnxruntime is not installed: pip install 'deep-dfd-rig[cpu]' (or [gpu])") from None
    return ort


def _session_options(cfg: EngineConfig, threads: int | None = None) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, int(cfg.threads if threads is None else threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not cfg.spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _is_fp16_graph(model_bytes: bytes) -> bool:
    import onnx

    m = onnx.load_from_string(model_bytes)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)


def _to_fp16(model_bytes: bytes) -> bytes:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = convert_float_to_float16(onnx.load_from_string(model_bytes), keep_io_types=True)
    from inference.onnx_graph import toposort_graph

    toposort_graph(m.graph)
    return m.SerializeToString()


def make_session(path: Path, cfg: EngineConfig, threads: int | None = None,
                 seed_offset: int = 0) -> tuple[Any, str, bool]:
    """(session, provider used, fp16 on) for one graph file; ``threads`` overrides cfg.threads,
    ``seed_offset`` shifts the seeds of the graph's dropout generators (parallel decoder workers)."""
    ort = _ort()
    providers = resolve_providers(cfg.providers, ort.get_available_providers())
    first = providers[0]
    gpu = first in (PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"])
    fp16 = gpu if cfg.fp16 is None else bool(cfg.fp16) and gpu
    data = Path(path).read_bytes()
    if seed_offset:
        from inference.onnx_graph import reseed_dropout

        data = reseed_dropout(data, seed_offset)
    file_fp16 = _is_fp16_graph(data)
    if first == PROVIDER_NAMES["cuda"] and fp16 and not file_fp16:
        data = _to_fp16(data)
        file_fp16 = True
    if first == PROVIDER_NAMES["tensorrt"]:
        Path(cfg.trt_cache_dir).mkdir(parents=True, exist_ok=True)
    opts = [provider_options(p, cfg, fp16) for p in providers]
    try:
        sess = ort.InferenceSession(data, _session_options(cfg, threads), providers=providers, provider_options=opts)
    except Exception as e:  # noqa: BLE001 — onnxruntime raises its own exception types
        raise RigError(f"{path}: onnxruntime cannot load it ({str(e).strip().splitlines()[0][:160]})") from None
    used = sess.get_providers()[0]
    trt_fp16 = fp16 and used == PROVIDER_NAMES["tensorrt"]
    return sess, used, bool(trt_fp16 or file_fp16)


def _device_of(provider: str) -> str:
    return "cpu" if provider == PROVIDER_NAMES["cpu"] else "cuda"


def to_input(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB (or (1, 3, H, W) float in [0, 1]) -> contiguous (1, 3, H, W) float32."""
    a = np.asarray(rgb)
    if a.ndim == 3 and a.shape[2] == 3:
        out = np.empty((1, 3, a.shape[0], a.shape[1]), np.float32)
        np.multiply(a.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out[0], casting="unsafe")
        return out
    if a.ndim == 4 and a.shape[:2] == (1, 3):
        return np.ascontiguousarray(a, dtype=np.float32)
    raise RigError(f"expected an RGB image (H, W, 3) uint8 or (1, 3, H, W) float, got shape {a.shape}")


def merge_moments(n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, mean_b: np.ndarray,
                  m2_b: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s parallel update: (count, mean, sum of squared deviations) of two sample sets."""
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
    return n, mean, m2


def chunk_sizes(samples: int, chunk: int) -> list[int]:
    """Split ``samples`` into near-equal chunks of at most ``chunk`` (few distinct shapes for TensorRT)."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    n = -(-samples // max(1, chunk))
    base, extra = divmod(samples, n)
    return [base + 1] * extra + [base] * (n - extra)


def default_mc_chunk(arch: str, height: int, width: int, samples: int) -> int:
    """Samples per decoder batch so the widest decoder activation stays within the memory budget."""
    hp, wp = -(-height // 32) * 32, -(-width // 32) * 32
    per_sample = hp * wp * _DECODER_WIDTH.get(arch, 64) * 4 * 2
    return max(1, min(samples, MC_MEMORY_BUDGET_BYTES // max(per_sample, 1)))


def _run_decoder(decoder: Any, names: list[str], feats: list[Any], k: int, h: int, w: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of ``k`` dropout samples: (mean, m2) (h, w) float64."""
    ort = _ort()
    db = decoder.io_binding()
    for n, v in zip(names, feats):
        db.bind_ortvalue_input(n, v)
    db.bind_ortvalue_input("samples", ort.OrtValue.ortvalue_from_numpy(np.zeros(k, np.float32)))
    for o in decoder.get_outputs():
        db.bind_output(o.name, "cpu")  # small: (1, 1, Hp, Wp) twice
    decoder.run_with_iobinding(db)
    c_mean, c_m2 = (v.numpy()[0, 0, :h, :w].astype(np.float64) for v in db.get_outputs())
    return c_mean, c_m2


def mc_from_sessions(trunk: Any, decoder: Any, x: np.ndarray, samples: int, chunk: int = 0,
                     device: str = "cpu", device_id: int = 0, executor: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """MC-dropout mean and std (H, W) float32 of ``x`` (1, 3, H, W) through trunk + decoder sessions.

    The trunk runs once; its outputs stay on ``device`` and are bound into the decoder, which runs
    the samples in chunks of at most ``chunk`` (0 = all at once). ``decoder`` may be a list of
    sessions (parallel workers with differently seeded dropout generators, run on ``executor``):
    chunk j goes to worker j mod W, each worker runs its chunks in order, and the chunk moments are
    merged in chunk order (float64) — so the result does not depend on thread timing.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    tb = trunk.io_binding()
    tb.bind_cpu_input(trunk.get_inputs()[0].name, x)
    names = [o.name for o in trunk.get_outputs()]
    for n in names:
        tb.bind_output(n, device, device_id)
    trunk.run_with_iobinding(tb)
    feats = tb.get_outputs()
    decoders = list(decoder) if isinstance(decoder, (list, tuple)) else [decoder]
    sizes = chunk_sizes(samples, chunk or samples)
    if len(decoders) == 1 or executor is None:
        parts = [_run_decoder(decoders[0], names, feats, k, h, w) for k in sizes]
    else:
        def worker(wi: int) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
            return [(j, _run_decoder(decoders[wi], names, feats, sizes[j], h, w))
                    for j in range(wi, len(sizes), len(decoders))]

        done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for fut in [executor.submit(worker, wi) for wi in range(min(len(decoders), len(sizes)))]:
            done.update(fut.result())
        parts = [done[j] for j in range(len(sizes))]
    n_tot, mean, m2 = sizes[0], parts[0][0], parts[0][1]
    for k, (c_mean, c_m2) in zip(sizes[1:], parts[1:]):
        n_tot, mean, m2 = merge_moments(n_tot, mean, m2, k, c_mean, c_m2)
    std = np.sqrt(np.maximum(m2 / n_tot, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass
class EngineInfo:
    """What an engine runs on (for the live panel and benchmark reports)."""

    model: str
    provider: str
    providers: list[str]
    fp16: bool
    threads: int
    input_size_px: tuple[int, int] | None  # fixed input (w, h) of a static graph, None when dynamic
    mc: bool
    arch: str
    warmup_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


class DepthEngine:
    """Depth (and MC-dropout uncertainty) from an exported model with onnxruntime.

    model: the depth graph FILE.onnx (its FILE.trunk.onnx / FILE.decoder.onnx are found next to it).
    warm_size: (width, height) to warm up at (default: the graph's fixed size or 645x432).
    mc: also load the MC-dropout graphs (needed by :meth:`predict_mc`).
    moments: also load the sampling-free moments graph FILE.moments.onnx (:meth:`predict_moments`).
    """

    def __init__(self, model: str | Path, config: EngineConfig | None = None,
                 warm_size: tuple[int, int] | None = None, mc: bool = False, moments: bool = False) -> None:
        from inference.onnx_graph import DEPTH_OUTPUT, INPUT_NAME, companion_paths, read_onnx_meta

        self.config = config or EngineConfig()
        self.path = Path(model)
        meta = read_onnx_meta(self.path)
        if meta.get("graph") not in (None, "depth"):
            raise RigError(f"{self.path}: this is the MC-dropout {meta.get('graph')} graph; pass the depth "
                           "graph FILE.onnx (its companions are found next to it)")
        self.meta = meta
        self.arch = str(meta.get("arch", ""))
        self.input_name, self.output_name = INPUT_NAME, DEPTH_OUTPUT
        self.session, self.provider, self.fp16 = make_session(self.path, self.config)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        dims = inp.shape
        self.fixed_size = (int(dims[3]), int(dims[2])) if all(isinstance(d, int) for d in dims[2:]) else None
        self.device = _device_of(self.provider)
        self.trunk = self.decoder = None
        self.decoders: list[Any] = []
        self._executor = None
        if mc:
            trunk_path, decoder_path = companion_paths(self.path)
            for p in (trunk_path, decoder_path):
                if not p.is_file():
                    raise RigError(f"{p}: missing — MC-dropout needs the trunk and decoder graphs written by "
                                   "`rig export` (re-export without --no-mc)")
            self.trunk, _, _ = make_session(trunk_path, self.config)
            workers = self.mc_workers()
            if workers > 1:  # CPU: one single-threaded decoder per core, each with its own dropout seeds
                from concurrent.futures import ThreadPoolExecutor

                self.decoders = [make_session(decoder_path, self.config, threads=1, seed_offset=1000 * i)[0]
                                 for i in range(workers)]
                self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mc-decoder")
            else:
                self.decoders = [make_session(decoder_path, self.config)[0]]
            self.decoder = self.decoders[0]
        self.moments = None
        if moments:
            from inference.onnx_graph import moments_path

            mp = moments_path(self.path)
            if not mp.is_file():
                raise RigError(f"{mp}: missing — moments uncertainty needs the graph written by `rig export` "
                               "(re-export without --no-mc)")
            self.moments, _, _ = make_session(mp, self.config)
        self._bindings: dict[tuple[int, ...], tuple[Any, Any, np.ndarray | None]] = {}
        size = warm_size or self.fixed_size or (645, 432)
        t0 = time.perf_counter()
        self.warm_up(size)
        self.info = EngineInfo(model=str(self.path), provider=self.provider,
                               providers=list(self.session.get_providers()), fp16=self.fp16,
                               threads=int(self.config.threads), input_size_px=self.fixed_size, mc=mc,
                               arch=self.arch, warmup_s=time.perf_counter() - t0, meta=meta)

    # -- checks ------------------------------------------------------------------------------------
    def _check_size(self, x: np.ndarray) -> None:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.fixed_size is not None and (w, h) != self.fixed_size:
            fw, fh = self.fixed_size
            raise RigError(f"{self.path}: exported for {fw}x{fh} input, got {w}x{h}; resize the images or "
                           "re-export with --dynamic (or --width/--height)")
        if min(h, w) < 32:
            raise RigError(f"image {w}x{h} is too small: at least 32 px each side")

    # -- one pass --------------------------------------------------------------------------------
    def _binding(self, shape: tuple[int, ...]) -> tuple[Any, Any, np.ndarray | None]:
        """An I/O binding per input shape with its output buffer (host array on CPU)."""
        if shape not in self._bindings:
            ort = _ort()
            b = self.session.io_binding()
            out_np = None
            if self.device == "cpu":
                out_np = np.empty((shape[0], 1, shape[2], shape[3]), np.float32)
                b.bind_ortvalue_output(self.output_name, ort.OrtValue.ortvalue_from_numpy(out_np))
            else:
                b.bind_output(self.output_name, self.device, self.config.device_id)
            self._bindings[shape] = (b, None, out_np)
        return self._bindings[shape]

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """One deterministic pass: (H, W, 3) uint8 RGB -> (H, W) float32 depth in metres."""
        x = to_input(rgb)
        self._check_size(x)
        b, _, out_np = self._binding(tuple(x.shape))
        b.bind_cpu_input(self.input_name, x)
        self.session.run_with_iobinding(b)
        if out_np is not None:
            return out_np[0, 0].copy()
        return b.copy_outputs_to_cpu()[0][0, 0]

    @property
    def has_aleatoric(self) -> bool:
        """True for a dfdnet graph, whose second output is the aleatoric σ (m)."""
        from inference.onnx_graph import ALEATORIC_OUTPUT

        return any(o.name == ALEATORIC_OUTPUT for o in self.session.get_outputs())

    def predict_with_std(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One pass -> (depth (H, W) m, aleatoric σ (H, W) m, or None when the graph has no σ head)."""
        from inference.onnx_graph import ALEATORIC_OUTPUT

        if not self.has_aleatoric:
            return self.predict(rgb), None
        x = to_input(rgb)
        self._check_size(x)
        depth, std = self.session.run([self.output_name, ALEATORIC_OUTPUT], {self.input_name: x})
        return depth[0, 0], std[0, 0]

    # -- MC-dropout ------------------------------------------------------------------------------
    def mc_workers(self) -> int:
        """Decoder workers: on the CPU provider one per intra-op thread (``config.mc_workers`` or
        ``config.threads``, else every core); one on a GPU (it batches the samples itself)."""
        if self.device != "cpu":
            return 1
        n = int(self.config.mc_workers) or int(self.config.threads) or (os.cpu_count() or 1)
        return max(1, min(n, 8))

    def mc_chunk(self, height: int, width: int, samples: int) -> int:
        """Samples per decoder batch: ``config.mc_chunk``, else within the memory budget and small
        enough that every worker gets a chunk."""
        if self.config.mc_chunk:
            return int(self.config.mc_chunk)
        chunk = default_mc_chunk(self.arch, height, width, samples)
        return max(1, min(chunk, -(-samples // max(1, len(self.decoders)))))

    def predict_mc(self, rgb: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
        """MC-dropout: (mean depth, std) (H, W) float32 metres from ``samples`` dropout samples."""
        if self.trunk is None or self.decoder is None:
            raise RigError("this engine was made without MC-dropout graphs (DepthEngine(..., mc=True))")
        if samples < 2:
            raise RigError("MC-dropout needs at least 2 samples")
        x = to_input(rgb)
        self._check_size(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        return mc_from_sessions(self.trunk, self.decoders, x, samples, self.mc_chunk(h, w, samples),
                                self.device, self.config.device_id, executor=self._executor)

    def predict_moments(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sampling-free MC-dropout (:mod:`inference.moments`): (mean depth, std) (H, W) float32 m, one pass."""
        if self.moments is None:
            raise RigError("this engine was made without the moments graph (DepthEngine(..., moments=True))")
        x = to_input(rgb)
        self._check_size(x)
        mean, std = self.moments.run(None, {self.input_name: x})
        return mean[0, 0], std[0, 0]

    def close(self) -> None:
        """Stop the decoder worker threads (sessions are freed with the engine)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def warm_up(self, size: tuple[int, int]) -> None:
        """Run each graph ``config.warmup`` times at ``size`` (w, h) (TensorRT builds engines here)."""
        w, h = size
        img = np.zeros((h, w, 3), np.uint8)
        for _ in range(max(0, int(self.config.warmup))):
            self.predict(img)
            if self.moments is not None:
                self.predict_moments(img)
            if self.trunk is not None:
                self.predict_mc(img, 2)

    def describe(self) -> str:
        """One line: provider, precision, threads."""
        fp = "fp16" if self.fp16 else "fp32"
        thr = f", {self.config.threads} thread(s)" if self.config.threads else ""
        return f"onnxruntime {self.provider.replace('ExecutionProvider', '')} ({fp}{thr})"
