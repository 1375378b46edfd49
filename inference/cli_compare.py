"""Paper 1's comparisons: ``rig baseline zhuo|eval``, ``rig finetune-diw``, ``rig diw-pairs``,
``rig diw-eval``, ``rig compare``.

Handlers import torch, OpenCV and the stage modules lazily so ``rig --help`` stays fast.
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


def _baseline_args(p: argparse.ArgumentParser) -> None:
    from inference.baseline_zhuo import add_param_args

    add_param_args(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli import add_group

    g = add_group(sub, "baseline", "classical single-image defocus baseline (Zhuo & Sim 2011)")
    p = g.add_parser("zhuo", help="defocus map + thin-lens depth (16-bit mm PNG) for an image or a folder",
                     description="Zhuo & Sim 2011: edge blur from the gradient ratio to a re-blurred copy, joint "
                     "bilateral filtering, matting-Laplacian propagation; blur -> depth with the rig's thin lens on "
                     "one side of the focal plane. Writes <basename>.png (16-bit depth in mm).")
    p.add_argument("--input", required=True, help="image file or folder of images (full DSLR frames are "
                   "area-downsampled to the config's output size)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--colorize", action="store_true", help="also write colourised depth and blur-map PNGs")
    _baseline_args(p)
    p.set_defaults(func=_lazy("inference.baseline_zhuo:cmd_zhuo"))

    p = g.add_parser("eval", help="metrics of the baseline on a dataset split (beside networks with --model)",
                     description="Evaluate the baseline with the depth metrics of `rig eval` on a dataset split "
                     "(rig.dataset folder or paper 1's DFD release); --model adds networks to the same table.")
    p.add_argument("--data", required=True, help="dataset folder (rig.dataset layout) or the DFD release")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--input", choices=("N2_8", "N8"), default="N2_8", help="input images (default N2_8)")
    p.add_argument("--model", action="append", help="also evaluate this network (repeatable)")
    p.add_argument("--limit", type=int, help="evaluate at most this many images")
    p.add_argument("--json", dest="json_out", help="write all metrics to this JSON file")
    _baseline_args(p)
    p.set_defaults(func=_lazy("inference.baseline_zhuo:cmd_eval"))

    p = sub.add_parser("finetune-diw", help="finetune a depth model on relative-depth point pairs (DIW ranking loss)",
                       description="Chen et al. 2016 ranking loss on log depth, from a metric model. Annotations: "
                       "the DIW release CSV, a pair CSV (image,xA,yA,xB,yB,relation) or JSON.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name")
    p.add_argument("--annotations", required=True, help="training annotations (DIW CSV, pair CSV or JSON)")
    p.add_argument("--images", help="folder the annotated image paths are relative to")
    p.add_argument("--out", required=True, help="output model file (.pt, loadable by rig predict/eval)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--crop", type=int, default=0, help="random square crops of this size holding pairs (0 = whole)")
    p.add_argument("--val-annotations", help="held-out annotations: WHDR before and after")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ of WHDR (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the summary (losses, WHDR) to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=_lazy("inference.diw:cmd_finetune"))

    p = sub.add_parser("diw-pairs", help="sample relative-depth point pairs from a dataset's depth maps",
                       description="Random point pairs of each depth map of a dataset split, with their true order "
                       "('=' within ratio 1+τ); image paths relative to DATA/SPLIT.")
    p.add_argument("--data", required=True, help="dataset folder (rig.dataset layout)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="annotation file to write")
    p.add_argument("--n-pairs", type=int, default=200, help="pairs per image (default 200)")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ (default 0.02)")
    p.add_argument("--input", choices=("N2_8", "N8"), default="N2_8", help="image kind the pairs refer to")
    p.add_argument("--min-dist", type=float, default=4.0, help="minimum distance of a pair's points (px)")
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--format", choices=("pairs", "diw"), default="pairs", help="pair CSV (default) or DIW CSV")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_lazy("inference.diw:cmd_pairs"))

    p = sub.add_parser("diw-eval", help="WHDR of a model on relative-depth annotations",
                       description="Weighted human disagreement rate of a model's depth on point-pair annotations.")
    p.add_argument("--model", required=True, help="model file, run folder or shipped name")
    p.add_argument("--annotations", required=True, help="DIW CSV, pair CSV or JSON")
    p.add_argument("--images", help="folder the annotated image paths are relative to")
    p.add_argument("--tau", type=float, default=0.02, help="equality threshold τ (default 0.02)")
    p.add_argument("--json", dest="json_out", help="write the result to this JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.set_defaults(func=_lazy("inference.diw:cmd_whdr"))

    p = sub.add_parser("compare", help="outdoor comparison page: N=2.8 and N=8 models vs. the classical baseline",
                       description="Pair DSLR shots by EXIF time and f-number, downsample to the output size, run the "
                       "N=2.8 model on the f/2.8 image, the N=8 model on the f/8 image and the Zhuo & Sim baseline; "
                       "writes DIR/index.html with the PNGs (paper 1 Fig. 13).")
    p.add_argument("--pairs", required=True, help="folder of DSLR shots (sub-folders such as N2_8/ and N8/ are read)")
    p.add_argument("--out", required=True, help="report folder (index.html + PNGs)")
    p.add_argument("--model-n2-8", default="dfd-n2.8", help="model for the f/2.8 images (default dfd-n2.8)")
    p.add_argument("--model-n8", default="dfd-n8", help="model for the f/8 images (default dfd-n8)")
    p.add_argument("--tolerance-s", type=float, default=60.0, help="largest EXIF time gap of a pair (default 60 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    _baseline_args(p)
    p.set_defaults(func=_lazy("inference.compare:cmd_compare"))
