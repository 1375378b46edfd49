"""``rig import-dfd``: paper 1's published DFD release -> the rig's dataset layout (rig/core/dataset.py).

    rig import-dfd ../shared/data/dfd_indoor/train --out out/dfd
    rig import-dfd ~/dfd_datasets/dfd_indoor --out out/dfd --split test   # the release's own layout

Files are paired by the nearest name timestamp within ``--tolerance-s`` (never by sorted order); what
could not be paired is printed and recorded in the manifest, the rest is imported (exit 0). Samples
already in DIR are skipped (resumable); the manifest is written last. The release's depth maps are
already hole-filled, so the valid mask is 255 wherever depth > 0 (measured and filled pixels cannot be
told apart; the manifest says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rig.core.dataset import KINDS, MANIFEST, Sample, sample_path, write_sample
from rig.core.datasets import DfdSplitDirs, pair_dfd_split, timestamp_gap_s
from rig.core.errors import RigError

DEFAULT_CONFIG = "nikon_d200_xtion"
HOLE_FILLED_NOTE = ("depth of paper 1's release is already hole-filled (no zeros); valid = 255 where depth > 0, "
                    "measured and filled pixels cannot be told apart")


@dataclass
class SplitResult:
    """What one split's import did."""

    split: str
    source: DfdSplitDirs
    imported: list[str]
    skipped: list[str]
    failed: list[str]  # 'id: reason'
    unmatched: list[str]
    pairs: list[dict[str, Any]]


def _resize(image: np.ndarray, size_wh: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, tuple(int(v) for v in size_wh), interpolation=interp)


def load_triplet(n2_8: Path, n8: Path, depth: Path, size_wh: tuple[int, int]) -> Sample:
    """Read one release triplet as a dataset Sample at ``size_wh`` (id filled by the caller)."""
    from rig.core.imageio import read_depth_m, read_rgb

    defocused = read_rgb(n2_8)
    aif = read_rgb(n8)
    depth_m = read_depth_m(depth)
    if defocused.shape != aif.shape:
        raise RigError(f"{n8.name}: size {aif.shape[1]}x{aif.shape[0]} differs from the f/2.8 shot "
                       f"{defocused.shape[1]}x{defocused.shape[0]}")
    if depth_m.shape != defocused.shape[:2]:
        raise RigError(f"{depth.name}: depth size {depth_m.shape[1]}x{depth_m.shape[0]} differs from the RGB "
                       f"{defocused.shape[1]}x{defocused.shape[0]}")
    defocused = _resize(defocused, size_wh, nearest=False)
    aif = _resize(aif, size_wh, nearest=False)
    depth_m = _resize(depth_m, size_wh, nearest=True)
    valid = np.where(depth_m > 0, 255, 0).astype(np.uint8)
    return Sample("", defocused, aif, depth_m.astype(np.float32), valid)


def _complete(root: Path, split: str, sample_id: str) -> bool:
    return all(sample_path(root, split, k, sample_id).is_file() for k in KINDS)


def import_split(dirs: DfdSplitDirs, out: Path, split: str, tolerance_s: float,
                 size_wh: tuple[int, int], progress: Any = None) -> SplitResult:
    """Pair and import one split into ``out/<split>``; existing complete samples are skipped."""
    triplets, unmatched = pair_dfd_split(dirs, tolerance_s)
    res = SplitResult(split, dirs, [], [], [], unmatched, [])
    task = progress.add_task(f"import {split}", total=len(triplets)) if progress is not None else None
    for sid, n2, n8, depth in triplets:
        res.pairs.append({"id": sid, "N2_8": n2.name, "N8": n8.name, "depth": depth.name,
                          "gap_s": round(timestamp_gap_s(n2, depth), 6)})
        if _complete(out, split, sid):
            res.skipped.append(sid)
        else:
            try:
                sample = load_triplet(n2, n8, depth, size_wh)
                sample.sample_id = sid
                write_sample(out, split, sample)
                res.imported.append(sid)
            except RigError as e:
                res.failed.append(f"{sid}: {e}")
        if task is not None:
            progress.advance(task)
    return res


def build_manifest(out: Path, results: list[SplitResult], cfg: Any, source: Path, tolerance_s: float,
                   size_wh: tuple[int, int]) -> dict[str, Any]:
    """The manifest: lens and blur of the rig config, splits, provenance (merged with an existing one)."""
    import yaml

    from rig.core.optics import k_cam_px

    old: dict[str, Any] = {}
    mpath = out / MANIFEST
    if mpath.is_file():
        try:
            loaded = yaml.safe_load(mpath.read_text())
            old = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            old = {}
    lens_d, lens_a = cfg.lens("defocused"), cfg.lens("all_in_focus")
    splits = dict(old.get("splits") or {})
    provenance = dict(old.get("provenance") or {})
    for r in results:
        ids = sorted(set(r.imported) | set(r.skipped))
        splits[r.split] = {"count": len(ids)}
        provenance[r.split] = {
            "source": str(Path(source).resolve()),
            "folders": {"N2_8": str(r.source.n2_8.resolve()), "N8": str(r.source.n8.resolve()),
                        "depth": str(r.source.depth.resolve())},
            "source_split": r.source.split,
            "pairing": "nearest file-name timestamp, one-to-one, greedy by smallest gap",
            "tolerance_s": float(tolerance_s),
            "max_gap_s": max((p["gap_s"] for p in r.pairs), default=0.0),
            "unmatched": list(r.unmatched),
            "failed": list(r.failed),
            "pairs": r.pairs,
        }
    return {
        "name": old.get("name", "dfd_indoor"),
        "description": "Paper 1 (Carvalho et al. 2018) real DFD indoor data, imported with `rig import-dfd`",
        "rig_config": cfg.name,
        "lens": {"focal_mm": cfg.dslr.focal_mm, "pixel_um": cfg.dslr.pixel_um,
                 "sensor_px": list(cfg.dslr.sensor_px), "downsample": round(cfg.downsample, 6)},
        "apertures": {"defocused": cfg.dslr.f_number_defocused, "all_in_focus": cfg.dslr.f_number_all_in_focus},
        "focus_m": cfg.dslr.focus_m,
        "k_cam_px": {"defocused": round(k_cam_px(lens_d), 6), "all_in_focus": round(k_cam_px(lens_a), 6)},
        "blur": {"psf": cfg.blur.psf, "rho": cfg.blur.rho},
        "output_size_px": [int(size_wh[0]), int(size_wh[1])],
        "depth": {"units": "mm (16-bit PNG)", "hole_filled": True, "note": HOLE_FILLED_NOTE},
        "valid_codes": {"255": "depth > 0", "0": "unknown"},
        "splits": splits,
        "provenance": provenance,
    }
