"""Inference subcommands: ``rig train``, ``rig eval``, ``rig predict``, ``rig report``.

Handlers import torch and the stage modules lazily so ``rig --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable


def _lazy(target: str) -> Callable[[argparse.Namespace], Any]:
    module, _, func = target.partition(":")

    def run(args: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(module), func)(args)

    return run


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train D3-Net / d3net-lite on a dataset (DDP via torchrun)",
                       description="Train a depth network from a training config (configs/train/*.yaml or a "
                       "preset name). Multi-process: torchrun --nproc_per_node N -m rig.cli train ...")
    p.add_argument("--config", required=True, help="training config file or preset name (e.g. dfd_n2_8)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--data", help="override data.root (dataset folder)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--threads", type=int, help="override train.threads (torch CPU threads, 0 = default)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_lazy("inference.train:cmd_train"))

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (rel, log10, rms, rmslog, δ)",
                       description="Evaluate depth predictions against ground truth; writes metrics (JSON), "
                       "the per-depth-bin RMS plot with train/test depth histograms and a qualitative grid.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name (dfd-n2.8, dfd-n8)")
    p.add_argument("--data", required=True, help="dataset folder (rig.dataset layout)")
    p.add_argument("--split", default="test", help="split to evaluate (default test; 'val' falls back to the "
                   "validation ids recorded in the model when the dataset has no val split)")
    p.add_argument("--input", choices=("N2_8", "N8"), help="input images (default: what the model was trained on)")
    p.add_argument("--input-dir", help="take input images from this folder (<id>.png, e.g. `rig synth` output)")
    p.add_argument("--json", dest="json_out", help="write the metrics to this JSON file")
    p.add_argument("--out", help="folder for metrics.json, the depth-bin plot and the qualitative grid")
    p.add_argument("--min-depth", type=float, help="evaluate ground truth >= this depth (m)")
    p.add_argument("--max-depth", type=float, help="evaluate ground truth <= this depth (m)")
    p.add_argument("--crop", action="store_true", help="evaluate inside the Eigen et al. NYUv2 crop only")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples (0 = one deterministic pass)")
    p.add_argument("--bin-width", type=float, default=0.5, help="depth-bin width for the per-bin RMS (m)")
    p.add_argument("--grid", type=int, default=4, help="images in the qualitative grid (0 = none)")
    p.add_argument("--limit", type=int, help="evaluate at most this many images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=_lazy("inference.evaluate:cmd_eval"))

    p = sub.add_parser("predict", help="predict depth (16-bit mm PNG) for an image or a folder",
                       description="Predict depth for each image; writes <basename>.png (16-bit depth in mm), "
                       "with --mc-samples also <basename>_std.png (MC-dropout std in mm). A camera-independent "
                       "(camind) model uses the --config camera's k_cam and γ.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name (dfd-n2.8, dfd-n8)")
    p.add_argument("--input", required=True, help="image file or folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples (paper 1: 50); 0 = one pass")
    p.add_argument("--colorize", action="store_true", help="also write colourised depth (and uncertainty) PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks")
    p.add_argument("--resize", choices=("auto", "none"), default="auto",
                   help="auto: area-downsample images much wider than the model's training images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--config", help="camera-independent (camind) models: rig config file or preset whose "
                   "blur.k_cam_px (else thin-lens k_cam) and blur.gamma_px are used (default simulated)")
    p.add_argument("--k-cam-px", type=float, help="camind models: k_cam in the config's output px (overrides "
                   "the config)")
    p.add_argument("--gamma-px", type=float, help="camind models: in-focus blur γ in the config's output px "
                   "(overrides the config)")
    p.set_defaults(func=_lazy("inference.predict:cmd_predict"))

    p = sub.add_parser("report", help="HTML report of an evaluation (open report.html in a browser)",
                       description="Build an HTML page (tables, plots, image grids as files next to it) "
                       "from the folder `rig eval --out DIR` wrote.")
    p.add_argument("eval_dir", help="folder written by `rig eval --out`")
    p.add_argument("--out", help="report folder (default: EVAL_DIR/report)")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=_lazy("inference.report:cmd_report"))
