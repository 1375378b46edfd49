"""Training data from the rig.core.dataset layout: in-memory image sets, scene-wise validation split, crops.

Augmentation is limited to random crops and horizontal flips: nothing that changes the blur (no
scaling, no rotation, no photometric jitter), because the blur size is the depth cue.
Every random choice is a function of (seed, epoch, position in the epoch), so a run resumed at an
epoch boundary — or spread over several DDP processes — sees exactly the same crops.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rig.core import dataset as rds
from rig.core.errors import RigError

INPUT_KINDS = ("N2_8", "N8")


@dataclass
class ImageSet:
    """Images held in memory. rgb: (H, W, 3) uint8; depth_m: (H, W) float32; valid: (H, W) bool."""

    ids: list[str]
    rgb: list[np.ndarray]
    depth_m: list[np.ndarray]
    valid: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def mean_depth_m(self) -> float:
        vals = [d[v & (d > 0)] for d, v in zip(self.depth_m, self.valid)]
        n = sum(x.size for x in vals)
        return float(sum(float(x.sum()) for x in vals) / n) if n else 0.0


def input_image_path(input_dir: Path, sample_id: str) -> Path | None:
    """``<input_dir>/<sample_id>.<ext>`` (e.g. a `rig synth` output folder), or None."""
    for ext in (".png", ".jpg", ".JPG", ".jpeg", ".tif", ".tiff"):
        p = Path(input_dir) / f"{sample_id}{ext}"
        if p.is_file():
            return p
    return None


def load_image_set(root: Path, split: str, input_kind: str, ids: Sequence[str] | None = None,
                   input_dir: Path | None = None) -> ImageSet:
    """Read the split's samples (or the given ids) with ``input_kind`` RGB ('N2_8' or 'N8'); with
    ``input_dir`` the input images come from ``<input_dir>/<id>.png`` instead (e.g. `rig synth` output)."""
    from rig.core.imageio import read_rgb

    if input_kind not in INPUT_KINDS:
        raise RigError(f"input must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
    ids = list(ids) if ids is not None else rds.list_samples(root, split)
    if not ids:
        raise RigError(f"{root}: split {split!r} has no samples (expected {split}/depth/*.png)")
    out = ImageSet([], [], [], [])
    for sid in ids:
        if input_dir is not None:
            s = rds.read_sample(root, split, sid, kinds=("depth", "valid"))
            p = input_image_path(Path(input_dir), sid)
            if p is None:
                raise RigError(f"{input_dir}: no input image for sample {sid} (expected {sid}.png)")
            rgb = read_rgb(p)
        else:
            s = rds.read_sample(root, split, sid, kinds=(input_kind, "depth", "valid"))
            rgb = s.defocused_rgb if input_kind == "N2_8" else s.all_in_focus_rgb
        if rgb is None:
            raise RigError(f"{rds.sample_path(root, split, input_kind, sid)}: missing input image")
        if rgb.shape[:2] != s.depth_m.shape:
            raise RigError(f"{sid}: RGB {rgb.shape[:2]} and depth {s.depth_m.shape} differ in size")
        out.ids.append(sid)
        out.rgb.append(rgb)
        out.depth_m.append(s.depth_m)
        out.valid.append((s.valid > 0) & (s.depth_m > 0))
    return out


# ----------------------------------------------------------------------------------------------
# Scene-wise validation split


def capture_time(sample_id: str) -> _dt.datetime | None:
    """The capture time encoded in an ISO-timestamp file name ('2018-04-26T16:38:31.689710'), else None."""
    try:
        return _dt.datetime.fromisoformat(sample_id)
    except ValueError:
        return None


def scene_ids_from_manifest(manifest: dict[str, Any], split: str) -> dict[str, str] | None:
    """Sample id -> scene id when the manifest records scenes (``scenes: {id: scene}`` at the top or
    under ``splits.<split>``, or ``scene`` fields in ``provenance.<split>.pairs``)."""
    for node in (manifest, (manifest.get("splits") or {}).get(split) or {}):
        sc = node.get("scenes") if isinstance(node, dict) else None
        if isinstance(sc, dict) and sc:
            return {str(k): str(v) for k, v in sc.items()}
    pairs = ((manifest.get("provenance") or {}).get(split) or {}).get("pairs")
    if isinstance(pairs, list) and pairs and all(isinstance(p, dict) and "scene" in p for p in pairs):
        return {str(p["id"]): str(p["scene"]) for p in pairs}
    return None


def group_scenes(ids: Sequence[str], gap_s: float = 120.0, max_captures: int | None = 6,
                 scene_of: dict[str, str] | None = None) -> list[list[str]]:
    """Group sample ids into scenes.

    With ``scene_of`` (manifest scene ids) that mapping decides. Otherwise ids are ordered by their
    timestamp and a new scene starts after a gap > ``gap_s``; a run longer than ``max_captures``
    is cut into consecutive chunks (consecutive captures share a room, so a validation chunk keeps
    its near-duplicates out of training). Ids without a timestamp are one scene each.
    """
    if scene_of is not None:
        groups: dict[str, list[str]] = {}
        for sid in ids:
            groups.setdefault(scene_of.get(sid, sid), []).append(sid)
        return [sorted(g) for _, g in sorted(groups.items())]
    timed = sorted((t, sid) for sid in ids if (t := capture_time(sid)) is not None)
    untimed = sorted(sid for sid in ids if capture_time(sid) is None)
    runs: list[list[str]] = []
    prev: _dt.datetime | None = None
    for t, sid in timed:
        if prev is None or (t - prev).total_seconds() > gap_s:
            runs.append([])
        runs[-1].append(sid)
        prev = t
    scenes: list[list[str]] = []
    for run in runs:
        if max_captures and len(run) > max_captures:
            n = -(-len(run) // max_captures)
            scenes.extend([list(c) for c in np.array_split(np.array(run, dtype=object), n)])
        else:
            scenes.append(run)
    return scenes + [[sid] for sid in untimed]


def carve_val(ids: Sequence[str], fraction: float, seed: int, gap_s: float = 120.0,
              max_captures: int | None = 6, scene_of: dict[str, str] | None = None
              ) -> tuple[list[str], list[str]]:
    """Split ids into (train, val) by whole scenes; val gets ~``fraction`` of the samples (>= 1 scene)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation fraction must be in (0, 1)")
    scenes = group_scenes(ids, gap_s, max_captures, scene_of)
    if len(scenes) < 2:
        raise RigError(f"cannot carve a validation split by scene: only {len(scenes)} scene(s) among "
                       f"{len(ids)} samples; lower data.scene_gap_s / data.max_scene_captures or add a 'val' split")
    order = np.random.default_rng(seed).permutation(len(scenes))
    target = fraction * len(ids)
    val: list[str] = []
    for i in order:
        if val and len(val) + len(scenes[i]) / 2 > target:
            break
        val.extend(scenes[i])
        if len(val) >= target:
            break
    val_set = set(val)
    return [s for s in ids if s not in val_set], sorted(val_set)


# ----------------------------------------------------------------------------------------------
# Random crops


def epoch_order(n_images: int, crops_per_image: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's sequence of image indices (each image ``crops_per_image`` times, shuffled)."""
    idx = np.tile(np.arange(n_images), crops_per_image)
    return np.random.default_rng([seed, epoch, 0]).permutation(idx)


def crop_params(shape: tuple[int, int], crop: tuple[int, int], hflip_p: float, seed: int, epoch: int,
                position: int) -> tuple[int, int, bool]:
    """(top, left, flip) for the crop at ``position`` of ``epoch``; crop = (h, w)."""
    rng = np.random.default_rng([seed, epoch, 1, position])
    h, w = shape
    ch, cw = crop
    if ch > h or cw > w:
        raise RigError(f"crop {cw}x{ch} is larger than the image {w}x{h}")
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), bool(rng.random() < hflip_p)


def make_crop(images: ImageSet, i: int, top: int, left: int, flip: bool, crop: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb (3, h, w) float32 in [0, 1], depth (1, h, w) float32 m, valid (1, h, w) bool)."""
    ch, cw = crop
    sl = (slice(top, top + ch), slice(left, left + cw))
    rgb = images.rgb[i][sl]
    depth = images.depth_m[i][sl]
    valid = images.valid[i][sl]
    if flip:
        rgb, depth, valid = rgb[:, ::-1], depth[:, ::-1], valid[:, ::-1]
    return (np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0,
            np.ascontiguousarray(depth[None], dtype=np.float32), np.ascontiguousarray(valid[None]))


def rank_positions(n_total: int, rank: int, world: int) -> list[int]:
    """Epoch positions handled by ``rank``: every world-th, truncated so all ranks get the same count."""
    per_rank = n_total // world
    return list(range(rank, per_rank * world, world))


def iter_batches(images: ImageSet, batch_size: int, crop: tuple[int, int], hflip_p: float, seed: int,
                 epoch: int, crops_per_image: int = 1, rank: int = 0, world: int = 1
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches (rgb (B,3,h,w), depth (B,1,h,w), valid (B,1,h,w)) of this rank for ``epoch``."""
    order = epoch_order(len(images), crops_per_image, seed, epoch)
    positions = rank_positions(len(order), rank, world)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        items = []
        for pos in chunk:
            i = int(order[pos])
            top, left, flip = crop_params(images.depth_m[i].shape, crop, hflip_p, seed, epoch, pos)
            items.append(make_crop(images, i, top, left, flip, crop))
        yield tuple(np.stack(x) for x in zip(*items))  # type: ignore[misc]


def batches_per_epoch(n_images: int, crops_per_image: int, batch_size: int, world: int = 1) -> int:
    per_rank = (n_images * crops_per_image) // world
    return -(-per_rank // batch_size)


def write_synthetic_dataset(root: Path, n: int = 6, size_hw: tuple[int, int] = (48, 64), seed: int = 0,
                            splits: Sequence[str] = ("train",), start: str = "2020-01-01T10:00:00",
                            spacing_s: float = 30.0) -> Path:
    """A tiny learnable dataset in the rig.core.dataset layout (tests, smoke runs).

    Each sample is a tilted depth plane (1-4 m) with a random texture whose brightness and blur grow
    with depth, so a network can fit it in a few steps. Ids are ISO timestamps 30 s apart; the
    N8 image is the unblurred texture. Returns ``root``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size_hw
    t0 = _dt.datetime.fromisoformat(start)
    k = 0
    for split in splits:
        for _ in range(n):
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            a, b, c = rng.uniform(-1, 1, 3)
            depth = (2.5 + a * (xx / w - 0.5) * 2 + b * (yy / h - 0.5) * 2 + 0.5 * c).clip(1.0, 4.0).astype(np.float32)
            tex = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
            sharp = (0.2 + 0.6 * (depth[..., None] - 1.0) / 3.0) * (0.6 + 0.4 * tex)
            blurred = cv2.GaussianBlur(sharp, (0, 0), 1.2)
            far = ((depth - 1.0) / 3.0)[..., None]
            defocused = far * blurred + (1 - far) * sharp
            sid = (t0 + _dt.timedelta(seconds=spacing_s * k)).isoformat(timespec="microseconds")
            k += 1
            rds.write_sample(root, split, rds.Sample(
                sid, (defocused * 255).astype(np.uint8), (sharp * 255).astype(np.uint8), depth,
                np.full((h, w), 255, np.uint8)))
    rds.write_manifest(root, {"name": "synthetic", "description": "tiny synthetic dataset (inference.data)"})
    return Path(root)
