"""`rig eval --out` + `rig report`: the page loads in headless Chromium with its tables and images;
the demo's predict step writes a report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference.data import write_synthetic_dataset
from inference.evaluate import evaluate
from inference.report import build_report
from inference.train import run_training, train_config_from_dict
from rig.core.errors import RigError

torch.set_num_threads(1)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny model trained for one epoch, evaluated on its scene-carved validation split."""
    tmp = tmp_path_factory.mktemp("rep")
    root = write_synthetic_dataset(tmp / "ds", n=8, size_hw=(48, 64))
    cfg = train_config_from_dict({
        "name": "tiny", "model": {"arch": "d3net-lite"},
        "data": {"root": str(root), "input": "N2_8", "crop_px": [32, 32], "val_fraction": 0.25,
                 "max_scene_captures": 2},
        "train": {"epochs": 1, "batch_size": 4, "threads": 1}})
    run_training(cfg, tmp / "run")
    res = evaluate(str(tmp / "run" / "best.pt"), root, "val", mc_samples=3, grid=2, out_dir=tmp / "eval",
                   progress=False)
    return tmp / "eval", res


def test_eval_on_carved_val_writes_metrics_and_figures(evaluated: tuple[Path, dict]) -> None:
    eval_dir, res = evaluated
    assert res["split"].startswith("val (carved from train") and res["n_images"] == 2
    assert res["training"]["val_carved"] is True
    on_disk = json.loads((eval_dir / "metrics.json").read_text())
    assert on_disk["metrics"]["rel"] == pytest.approx(res["metrics"]["rel"])
    for name in ("depth_bins.png", "grid.png"):
        img = cv2.imread(str(eval_dir / name))
        assert img is not None and img.std() > 10


def test_report_html_content(evaluated: tuple[Path, dict], tmp_path: Path) -> None:
    eval_dir, res = evaluated
    page = build_report(eval_dir, tmp_path / "report", title="tiny report")
    html = page.read_text()
    assert "<h1>tiny report</h1>" in html
    lo, hi = res["settings"]["gt_range_m"]
    assert "…" not in html and f"all depths (ground truth {lo:.2f}–{hi:.2f} m)" in html  # not a placeholder
    assert f"{res['metrics']['rel']:.3f}" in html and "paper 1 Table 2" in html
    for name in ("depth_bins.png", "grid.png", "sparsification.png"):
        assert f"src='{name}'" in html and (tmp_path / "report" / name).is_file()  # files next to the page
    assert "AUSE ratio" in html and f"{res['uncertainty']['ause_ratio']:.2f}" in html
    with pytest.raises(RigError, match="no metrics.json"):
        build_report(tmp_path / "nothing")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(evaluated: tuple[Path, dict], tmp_path: Path) -> None:
    eval_dir, res = evaluated
    page = build_report(eval_dir, tmp_path / "report")
    url = page.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    total = re.search(r'data-images="(\d+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    # depth bins, grid and sparsification (the eval ran MC-dropout, so it has σ): all decoded
    assert total and loaded and int(total.group(1)) == int(loaded.group(1)) == 3
    cells = re.findall(r"<td data-metric=\"rel\">([^<]+)</td>", dom)
    assert f"{res['metrics']['rel']:.3f}" in cells
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, "--window-size=1000,1400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1400, 1000)
    assert (img < 200).any(axis=2).mean() > 0.05  # text, tables and figures drawn, not a blank page


def test_demo_predict_step_writes_report(tmp_path: Path) -> None:
    from rig.demo import predict_step
    from rig.core.config import load_rig_config
    from rig.demo import DemoContext

    root = write_synthetic_dataset(tmp_path / "ds", n=2, size_hw=(48, 64), splits=("test",))
    ctx = DemoContext(out_dir=tmp_path / "demo", config=load_rig_config("simulated"), scenes=2, quick=True,
                      artifacts={"dataset": root})
    lines = predict_step(ctx)
    assert any("rel" in line for line in lines)
    page = ctx.artifacts["report"]
    assert page == tmp_path / "demo" / "report" / "report.html" and page.is_file()
    html = page.read_text()
    assert "MC-dropout" in html and html.count("<img") >= 2 + 2 * 2  # bins + grid + (depth, σ) per image
    std = cv2.imread(str(ctx.artifacts["predictions"] / f"{sorted(p.stem for p in (root / 'test' / 'N2_8').iterdir())[0]}_std.png"),
                     cv2.IMREAD_UNCHANGED)
    assert std is not None and std.dtype == np.uint16


def test_demo_predict_step_on_session_images_keeps_same_named_inputs_apart(tmp_path: Path) -> None:
    from rig.demo import predict_step
    from rig.core.config import load_rig_config
    from rig.demo import DemoContext
    from rig.core.imageio import write_image

    rng = np.random.default_rng(0)
    for cid in ("c1", "c2"):
        write_image(tmp_path / "session" / "raw" / cid / "defocused.jpg", rng.integers(0, 255, (48, 64, 3), np.uint8))
    ctx = DemoContext(out_dir=tmp_path / "demo", config=load_rig_config("simulated"), scenes=2, quick=True,
                      artifacts={"session": tmp_path / "session"})
    predict_step(ctx)
    preds = sorted(p.name for p in ctx.artifacts["predictions"].glob("*.png"))
    assert preds == sorted(f"{s}{k}.png" for s in ("defocused", "c2_defocused") for k in ("", "_std", "_color", "_std_color"))
    html = ctx.artifacts["report"].read_text()
    srcs = re.findall(r"src='([^']+)'", html)
    assert len(srcs) == 6 and len(set(srcs)) == 6  # input, depth, σ per image, no name clash
    assert "<h2>Metrics</h2>" not in html  # no ground truth without a dataset
