"""The GPU benchmark script's tiny mode on the CPU (issue 14 item 9): the same code path writes its
JSON with every figure. Speed is not asserted; the GPU figures come from `scripts/gpu_bench.sh`."""

from __future__ import annotations

import json
from pathlib import Path

from rig.bench.gpu import GOAL_KEY, main, summarise


def test_tiny_mode_writes_every_figure_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_bench.json"
    assert main(["--tiny", "--json", str(out), "--archs", "d3net-lite", "--repeats", "1", "--mc-samples", "2",
                 "--work-dir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "tiny" and report["size_px"] == [64, 48]
    per = report["results"]["d3net-lite"]
    assert set(per) == {"torch_cpu_fp32", "ort_cpu_fp32"}
    for name, r in per.items():
        assert "error" not in r and "skipped" not in r, (name, r)
        assert r["fps"] > 0 and r["latency_ms_median"] > 0
        assert r["mc_over_one_pass"] > 0 and r["moments_over_one_pass"] > 0 and r["mc_samples"] == 2
    assert "CPUExecutionProvider" in per["ort_cpu_fp32"]["backend"]
    assert report["summary"]["goal_met"] is None  # no TensorRT figure in tiny mode


def test_summary_checks_d3net_tensorrt_fp16_against_200_fps() -> None:
    arch, backend = GOAL_KEY.split("/")
    assert summarise({arch: {backend: {"fps": 250.0}}})["goal_met"] is True
    assert summarise({arch: {backend: {"fps": 120.0}, "x": {"skipped": "no GPU"}}})["goal_met"] is False
