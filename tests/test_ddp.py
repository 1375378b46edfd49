"""DDP: `rig train` under torchrun with 2 CPU processes (gloo) on a tiny synthetic dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from inference import data as D


def test_two_process_gloo_training(tmp_path: Path) -> None:
    root = D.write_synthetic_dataset(tmp_path / "ds", n=8, size_hw=(48, 64))
    cfg = {"name": "tiny_ddp", "model": {"arch": "d3net-lite"},
           "data": {"root": str(root), "input": "N2_8", "crop_px": [32, 32], "crops_per_image": 2,
                    "val_fraction": 0.25, "max_scene_captures": 2},
           "train": {"epochs": 2, "batch_size": 2, "lr": 2e-3, "threads": 1, "device": "cpu"}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rig.cli", "train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
           "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("done: 2 epochs") == 1  # rank 0 reports, rank 1 stays quiet
    hist = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]  # written once (by rank 0), not twice
    for h in hist:
        assert h["world"] == 2
        # 6 train images x 2 crops = 12 crops per epoch, 6 per process, batches of 2 -> 3 steps each
        assert h["batches"] == 3
        assert h["param_max_diff"] == 0.0  # gradients were averaged: both processes hold the same weights
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["meta"]["val_carved"]
