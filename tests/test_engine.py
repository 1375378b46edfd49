"""The onnxruntime engine: provider choice and options, I/O binding, MC-dropout moments, determinism.

CI has onnxruntime (CPU) only: TensorRT/CUDA are exercised through the provider resolution (which
provider is chosen from a given availability list, what options it gets), not run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from inference.engine import (DepthEngine, EngineConfig, chunk_sizes, default_mc_chunk, merge_moments,  # noqa: E402
                              provider_options, resolve_providers, to_input)
from inference.export import export_model  # noqa: E402
from inference.model import build_model  # noqa: E402
from rig.core.errors import RigError  # noqa: E402

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_model("d3net-lite").eval()
    out = tmp_path_factory.mktemp("engine") / "lite.onnx"
    export_model(net, out, height=64, width=96, dynamic=True, check=False)
    return out


def cpu_cfg(**kw) -> EngineConfig:
    kw.setdefault("warmup", 1)
    return EngineConfig(providers=kw.pop("providers", ("tensorrt", "cuda", "cpu")), threads=1, **kw)


def test_providers_are_taken_in_the_requested_order_among_the_available():
    assert resolve_providers(("tensorrt", "cuda", "cpu"), [CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers(("tensorrt", "cuda", "cpu"), [TRT, CUDA, CPU]) == [TRT, CUDA, CPU]
    assert resolve_providers(("cpu", "cuda"), [TRT, CUDA, CPU]) == [CPU, CUDA]
    assert resolve_providers((CUDA, "cpu"), [CPU]) == [CPU]
    with pytest.raises(RigError, match="none of the execution providers tensorrt, cuda is available"):
        resolve_providers(("tensorrt", "cuda"), [CPU])
    with pytest.raises(RigError, match="unknown execution provider 'npu'"):
        resolve_providers(("npu",), [CPU])


def test_tensorrt_options_enable_the_engine_cache_in_the_configured_folder(tmp_path):
    cfg = EngineConfig(trt_cache_dir=tmp_path / "trt", device_id=1)
    opts = provider_options(TRT, cfg, fp16=True)
    assert opts["trt_engine_cache_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert opts["trt_fp16_enable"] is True and opts["device_id"] == 1 and opts["trt_timing_cache_enable"] is True
    assert provider_options(TRT, cfg, fp16=False)["trt_fp16_enable"] is False
    assert provider_options(CUDA, cfg, fp16=True)["device_id"] == 1
    assert provider_options(CPU, cfg, fp16=False) == {}


def test_engine_reports_the_provider_it_really_uses(model_path):
    eng = DepthEngine(model_path, cpu_cfg(), warm_size=(96, 64))
    assert eng.provider == CPU and eng.info.providers == [CPU]
    assert eng.fp16 is False  # CPU runs fp32
    assert eng.describe() == "onnxruntime CPU (fp32, 1 thread(s))"
    with pytest.raises(RigError, match="none of the execution providers cuda is available"):
        DepthEngine(model_path, cpu_cfg(providers=("cuda",)))


def test_predict_matches_torch_and_results_are_not_overwritten_by_the_next_call(model_path):
    torch.manual_seed(0)
    net = build_model("d3net-lite").eval()
    eng = DepthEngine(model_path, cpu_cfg(), warm_size=(96, 64))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    da = eng.predict(a)
    da_copy = da.copy()
    db = eng.predict(b)  # same shape: the same I/O binding and output buffer
    assert np.array_equal(da, da_copy) and not np.array_equal(da, db)
    with torch.inference_mode():
        ref = net(torch.from_numpy(to_input(a))).numpy()[0, 0]
    assert da.shape == (50, 70) and np.abs(da - ref).max() < 1e-4


def test_to_input_and_size_errors(model_path):
    x = to_input(np.full((4, 5, 3), 255, np.uint8))
    assert x.shape == (1, 3, 4, 5) and x.dtype == np.float32 and np.allclose(x, 1.0)
    with pytest.raises(RigError, match="expected an RGB image"):
        to_input(np.zeros((4, 5), np.uint8))
    eng = DepthEngine(model_path, cpu_cfg(warmup=0))
    with pytest.raises(RigError, match="too small"):
        eng.predict(np.zeros((20, 64, 3), np.uint8))
    with pytest.raises(RigError, match="without MC-dropout graphs"):
        eng.predict_mc(np.zeros((64, 64, 3), np.uint8), 4)


def test_mc_graphs_missing_is_one_line(model_path, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(model_path.read_bytes())
    with pytest.raises(RigError, match="lonely.trunk.onnx: missing"):
        DepthEngine(lonely, cpu_cfg(warmup=0), mc=True)
    with pytest.raises(RigError, match="pass the depth graph"):
        DepthEngine(model_path.with_name("lite.decoder.onnx"), cpu_cfg(warmup=0))


def test_merged_chunk_moments_equal_the_moments_of_all_samples():
    rng = np.random.default_rng(1)
    samples = rng.normal(2.0, 0.3, (10, 3, 4))
    n, mean, m2 = 0, None, None
    for part in np.split(samples, [3, 7]):
        c_mean, c_m2 = part.mean(0), ((part - part.mean(0)) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = len(part), c_mean, c_m2
        else:
            n, mean, m2 = merge_moments(n, mean, m2, len(part), c_mean, c_m2)
    assert n == 10
    assert np.allclose(mean, samples.mean(0)) and np.allclose(m2 / n, samples.var(0))


def test_chunks_are_near_equal_and_cover_every_sample():
    assert chunk_sizes(50, 16) == [13, 13, 12, 12]
    assert chunk_sizes(7, 7) == [7] and chunk_sizes(7, 100) == [7] and chunk_sizes(3, 1) == [1, 1, 1]
    assert default_mc_chunk("d3net-lite", 432, 645, 50) == 50
    assert default_mc_chunk("d3net", 432, 645, 50) < 5


def test_mc_dropout_is_reproducible_with_a_fresh_engine_and_varies_within_one(model_path):
    img = np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    runs = []
    for _ in range(2):
        eng = DepthEngine(model_path, cpu_cfg(warmup=0, mc_chunk=5), mc=True)
        first = eng.predict_mc(img, 12)
        second = eng.predict_mc(img, 12)
        runs.append((first, second))
    (m1, s1), (m2, s2) = runs[0][0], runs[1][0]
    assert np.array_equal(m1, m2) and np.array_equal(s1, s2)  # same seeds, same call sequence
    assert not np.array_equal(runs[0][0][1], runs[0][1][1])  # the generator moves on between frames
    assert float(s1.mean()) > 0 and s1.shape == (64, 96)


def test_parallel_decoder_workers_draw_independent_masks_deterministically(model_path):
    """On CPU the chunks run on one decoder session per worker; each worker's dropout generators are
    seeded apart, so two one-sample chunks on two workers differ (equal seeds would give std 0), and
    a fresh engine reproduces the result."""
    img = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    results = []
    for _ in range(2):
        eng = DepthEngine(model_path, cpu_cfg(warmup=0, mc_workers=2, mc_chunk=1), mc=True)
        assert len(eng.decoders) == 2
        results.append(eng.predict_mc(img, 2))
        eng.close()
    (m1, s1), (m2, s2) = results
    assert float(s1.min()) > 0
    assert np.array_equal(m1, m2) and np.array_equal(s1, s2)
