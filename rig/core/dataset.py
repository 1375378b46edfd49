"""The training-dataset layout every stage agrees on.

    DIR/manifest.yaml
    DIR/<split>/N2_8/<id>.png   defocused RGB (8-bit)
    DIR/<split>/N8/<id>.png     all-in-focus RGB (8-bit)
    DIR/<split>/depth/<id>.png  depth, 16-bit millimetres, 0 = unknown
    DIR/<split>/valid/<id>.png  8-bit mask: 255 measured, 128 filled, 0 unknown

``split`` is 'train', 'val' or 'test'. Samples are written atomically; the manifest last.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from rig.core import __version__
from rig.core.errors import RigError
from rig.core.imageio import atomic_write_bytes, read_depth_m, read_rgb, write_depth_mm, write_image

SPLITS = ("train", "val", "test")
KINDS = ("N2_8", "N8", "depth", "valid")
MANIFEST = "manifest.yaml"


@dataclass
class Sample:
    """One dataset sample. RGB (H, W, 3) uint8; depth_m (H, W) float32 (0 = unknown); valid (H, W) uint8."""

    sample_id: str
    defocused_rgb: np.ndarray | None
    all_in_focus_rgb: np.ndarray | None
    depth_m: np.ndarray
    valid: np.ndarray


def sample_path(root: Path, split: str, kind: str, sample_id: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return Path(root) / split / kind / f"{sample_id}.png"


def write_sample(root: Path, split: str, sample: Sample) -> None:
    """Write the sample's files (each atomically); the depth and mask last."""
    if sample.defocused_rgb is not None:
        write_image(sample_path(root, split, "N2_8", sample.sample_id), sample.defocused_rgb)
    if sample.all_in_focus_rgb is not None:
        write_image(sample_path(root, split, "N8", sample.sample_id), sample.all_in_focus_rgb)
    write_image(sample_path(root, split, "valid", sample.sample_id), sample.valid.astype(np.uint8))
    write_depth_mm(sample_path(root, split, "depth", sample.sample_id), sample.depth_m)


def list_samples(root: Path, split: str) -> list[str]:
    """Ids of the split's samples that have a depth map, sorted."""
    d = Path(root) / split / "depth"
    return sorted(p.stem for p in d.glob("*.png")) if d.is_dir() else []


def read_sample(root: Path, split: str, sample_id: str, kinds: tuple[str, ...] = KINDS) -> Sample:
    """Read a sample; missing RGB kinds come back as None, a missing mask as depth > 0."""
    def rgb(kind: str) -> np.ndarray | None:
        p = sample_path(root, split, kind, sample_id)
        return read_rgb(p) if kind in kinds and p.is_file() else None

    depth_m = read_depth_m(sample_path(root, split, "depth", sample_id))
    vp = sample_path(root, split, "valid", sample_id)
    if "valid" in kinds and vp.is_file():
        import cv2

        valid = cv2.imread(str(vp), cv2.IMREAD_UNCHANGED)
        if valid is None or valid.shape != depth_m.shape:
            raise RigError(f"{vp}: unreadable mask or size differs from the depth map")
    else:
        valid = np.where(depth_m > 0, 255, 0).astype(np.uint8)
    return Sample(sample_id, rgb("N2_8"), rgb("N8"), depth_m, valid)


def iter_samples(root: Path, split: str) -> Iterator[Sample]:
    for sid in list_samples(root, split):
        yield read_sample(root, split, sid)


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write DIR/manifest.yaml atomically, adding the software version and a timestamp."""
    data = dict(manifest)
    data.setdefault("software", f"deep-dfd-rig {__version__}")
    data.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    path = Path(root) / MANIFEST
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    """The dataset's manifest; RigError (one line) when the folder is not a dataset."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise RigError(f"{root}: not a dataset folder (no {MANIFEST}); build one with `rig build-dataset` "
                       "or `rig import-dfd`")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RigError(f"{path}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RigError(f"{path}: expected a mapping")
    return data
