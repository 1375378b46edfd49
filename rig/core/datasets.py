"""Reading public datasets: paper 1's DFD release (pairing by timestamp) and NYUv2 labelled (.mat).

DFD release (Carvalho et al. 2018). File names are ISO timestamps of the capture: the RGB shots
``2018-04-26T16:38:31.689710.JPG`` (the f/2.8 and f/8 shots of one scene carry the same name) and the
depth map ``2018-04-26T16:38:31.655986.png`` taken up to ~0.3 s earlier. Files are paired by the
nearest timestamp within a tolerance, one-to-one — never by sorted order: the release has files
without a partner, and one missing file silently shifts every later pair of a sorted-order zip.
Two layouts are read:

    <root>/<split>/{N2_8,N8,depth}/                  (a split folder, as in ../shared/data)
    <root>/dfd_dataset_indoor_N2_8/rgb/<split>/       (the release as downloaded)
    <root>/dfd_dataset_indoor_N8/rgb/<split>/
    <root>/dfd_dataset_indoor_N{8,2_8}/depth/<split>/

NYUv2 labelled (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5). MATLAB writes arrays column-major,
so h5py sees them transposed: ``images`` (N, 3, W, H) uint8 and ``depths`` (N, W, H) float metres for
MATLAB's (H, W, 3, N) / (H, W, N). The official 795/654 split is ``splits.mat`` (MATLAB v5) with
1-based ``trainNdxs`` / ``testNdxs``. Paper 1 uses the 561x427 crop of the Kinect's valid projection
region (NYU toolbox ``get_projection_mask``: MATLAB ``mask(45:471, 41:601)``), i.e. rows 44:471 and
columns 40:601 in 0-based half-open Python indexing.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rig.core.errors import RigError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

# 2018-04-26T16:38:31.689710 ; also accepted: '_' or ' ' for 'T', '-' for ':' (file-system-safe names)
_TS_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T_ ](?P<h>\d{2})[:\-](?P<m>\d{2})[:\-](?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?")

# NYU toolbox get_projection_mask(): MATLAB mask(45:471, 41:601) -> 427 rows x 561 columns
NYU_CROP_ROWS = (44, 471)
NYU_CROP_COLS = (40, 601)
NYU_SIZE_HW = (480, 640)

RELEASE_PREFIX = "dfd_dataset_indoor_"


# --------------------------------------------------------------------------------- timestamps
def parse_timestamp(name: str | Path) -> datetime | None:
    """The ISO timestamp in a file name (``2018-04-26T16:38:31.689710.JPG``), or None.

    Fractions beyond microseconds are truncated; names without a timestamp give None.
    """
    stem = Path(name).name
    m = _TS_RE.search(stem)
    if m is None:
        return None
    frac = (m.group("frac") or "0")[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{m.group('date')}T{m.group('h')}:{m.group('m')}:{m.group('s')}.{frac}")
    except ValueError:
        return None


def pair_by_timestamp(a: Sequence[Path], b: Sequence[Path], tolerance_s: float
                      ) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """One-to-one pairs of files whose name timestamps differ by at most ``tolerance_s``.

    Greedy by smallest gap: all candidate pairs within the tolerance are taken in order of gap, each
    file at most once (optimal for captures spaced much further apart than the tolerance). Files
    whose name carries no timestamp are unmatched. Returns (pairs in the order of ``a``'s times,
    unmatched a, unmatched b).
    """
    if tolerance_s < 0:
        raise ValueError("tolerance_s must be >= 0")
    ta = [(parse_timestamp(p), p) for p in a]
    tb = sorted(((t.timestamp(), k) for k, t in enumerate(parse_timestamp(p) for p in b) if t is not None),
                key=lambda x: x[0])  # (time, index into b)
    times_b = [t for t, _ in tb]
    candidates: list[tuple[float, int, int]] = []
    for i, (t, _) in enumerate(ta):
        if t is None:
            continue
        x = t.timestamp()
        lo = bisect.bisect_left(times_b, x - tolerance_s - 1e-9)
        hi = bisect.bisect_right(times_b, x + tolerance_s + 1e-9)
        for j in range(lo, hi):
            gap = abs(times_b[j] - x)
            if gap <= tolerance_s + 1e-9:
                candidates.append((gap, i, j))
    candidates.sort()
    used_a: dict[int, int] = {}
    used_b: set[int] = set()
    for _, i, j in candidates:
        if i in used_a or j in used_b:
            continue
        used_a[i] = j
        used_b.add(j)
    order = sorted(used_a, key=lambda i: (ta[i][0], str(ta[i][1])))
    pairs = [(ta[i][1], b[tb[used_a[i]][1]]) for i in order]
    paired_b = {tb[j][1] for j in used_b}
    unmatched_a = [p for i, (_, p) in enumerate(ta) if i not in used_a]
    unmatched_b = [p for k, p in enumerate(b) if k not in paired_b]
    return pairs, unmatched_a, unmatched_b


def timestamp_gap_s(a: Path, b: Path) -> float:
    """|t(a) − t(b)| in seconds from the file names (inf when either has no timestamp)."""
    ta, tb = parse_timestamp(a), parse_timestamp(b)
    if ta is None or tb is None:
        return float("inf")
    return abs((ta - tb).total_seconds())


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension, case-insensitive) directly in ``folder``, sorted; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def _pair_lists(a: list[Path], b: list[Path], tolerance_s: float
                ) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Timestamped names by nearest timestamp; the rest by identical stem."""
    a_ts = [p for p in a if parse_timestamp(p) is not None]
    b_ts = [p for p in b if parse_timestamp(p) is not None]
    pairs, un_a, un_b = pair_by_timestamp(a_ts, b_ts, tolerance_s)
    b_by_stem = {p.stem: p for p in b if parse_timestamp(p) is None}
    for p in (p for p in a if parse_timestamp(p) is None):
        q = b_by_stem.pop(p.stem, None)
        if q is None:
            un_a.append(p)
        else:
            pairs.append((p, q))
    un_b.extend(b_by_stem.values())
    return pairs, un_a, un_b


def pair_folder(rgb_dir: Path, depth_dir: Path, tolerance_s: float = 0.5
                ) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair the images of two folders: by nearest name timestamp, else by identical stem.

    Returns ([(id, rgb_path, depth_path)], unmatched paths as strings); id = the RGB file's stem.
    """
    pairs, un_a, un_b = _pair_lists(list_images(rgb_dir), list_images(depth_dir), tolerance_s)
    return [(r.stem, r, d) for r, d in pairs], [str(p) for p in (*un_a, *un_b)]


def shared_data_root() -> Path:
    """Where the project's shared real data lives: ``$RIG_SHARED_DATA``, else ``../shared/data``
    beside the repository (it may be absent: callers check)."""
    import os

    return Path(os.environ.get("RIG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


# --------------------------------------------------------------------------------- DFD release
@dataclass(frozen=True)
class DfdSplitDirs:
    """The three folders of one split of the DFD release."""

    split: str
    n2_8: Path
    n8: Path
    depth: Path


def _split_dirs_plain(folder: Path, split: str) -> DfdSplitDirs | None:
    dirs = [folder / "N2_8", folder / "N8", folder / "depth"]
    return DfdSplitDirs(split, *dirs) if all(d.is_dir() for d in dirs) else None


def _release_root(root: Path) -> Path | None:
    """The folder holding dfd_dataset_indoor_N2_8/ and dfd_dataset_indoor_N8/ (root or a parent of it)."""
    for cand in (root, *root.parents[:4]):
        if (cand / f"{RELEASE_PREFIX}N2_8").is_dir() and (cand / f"{RELEASE_PREFIX}N8").is_dir():
            return cand
    return None


def locate_dfd_splits(root: Path, split: str | None = None) -> list[DfdSplitDirs]:
    """Find the DFD split folders under ``root`` in either layout (see the module docstring).

    ``root`` may be a split folder (``…/train`` holding N2_8/N8/depth), a folder of split folders,
    the release root holding ``dfd_dataset_indoor_*``, or one of the release's own folders
    (``…/dfd_dataset_indoor_N2_8/rgb/train``). ``split`` picks one split by name. RigError (one line)
    when nothing is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise RigError(f"{root}: no such folder (expected the DFD release or a folder with N2_8/, N8/, depth/)")
    found: list[DfdSplitDirs] = []
    direct = _split_dirs_plain(root, root.name)
    if direct is not None:
        found.append(direct)
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            d = _split_dirs_plain(sub, sub.name)
            if d is not None:
                found.append(d)
    if not found:
        rel = _release_root(root)
        if rel is not None:
            n2, n8 = rel / f"{RELEASE_PREFIX}N2_8", rel / f"{RELEASE_PREFIX}N8"
            inside = root.resolve() != rel.resolve() and root.parent.name in ("rgb", "depth")
            names = sorted({p.name for p in (n2 / "rgb").glob("*") if p.is_dir()})
            if inside:
                names = [root.name]
            for name in names:
                depth = next((d for d in (n8 / "depth" / name, n2 / "depth" / name) if d.is_dir()), None)
                if (n2 / "rgb" / name).is_dir() and (n8 / "rgb" / name).is_dir() and depth is not None:
                    found.append(DfdSplitDirs(name, n2 / "rgb" / name, n8 / "rgb" / name, depth))
    if split is not None:
        picked = [d for d in found if d.split == split]
        if not picked and len(found) == 1 and direct is not None:
            picked = [DfdSplitDirs(split, direct.n2_8, direct.n8, direct.depth)]  # a renamed split folder
        if not picked:
            have = ", ".join(d.split for d in found) or "none"
            raise RigError(f"{root}: no split '{split}' in the DFD data (found: {have})")
        found = picked
    if not found:
        raise RigError(f"{root}: no DFD data found (expected N2_8/, N8/, depth/ folders or the release's "
                       f"{RELEASE_PREFIX}N2_8/rgb/<split> layout)")
    return found


def pair_dfd_split(dirs: DfdSplitDirs, tolerance_s: float = 0.5
                   ) -> tuple[list[tuple[str, Path, Path, Path]], list[str]]:
    """Triplets (id, f/2.8 path, f/8 path, depth path) of one split and the unmatched files.

    The f/2.8 shot is paired with the f/8 shot, then with the depth map, each by nearest name
    timestamp within ``tolerance_s`` (identical stems when the names carry no timestamp).
    id = the f/2.8 file's stem. Unmatched entries are 'kind/name' strings (kind N2_8, N8 or depth).
    """
    n2 = list_images(dirs.n2_8)
    rgb_pairs, un_n2, un_n8 = _pair_lists(n2, list_images(dirs.n8), tolerance_s)
    # depth is paired against the f/2.8 shots that have an f/8 partner
    with_n8 = [a for a, _ in rgb_pairs]
    n8_of = {a: b for a, b in rgb_pairs}
    dpairs, un_n2_depth, un_depth = _pair_lists(with_n8, list_images(dirs.depth), tolerance_s)
    triplets = sorted(((a.stem, a, n8_of[a], d) for a, d in dpairs), key=lambda t: t[0])
    unmatched = ([f"N2_8/{p.name}" for p in (*un_n2, *un_n2_depth)]
                 + [f"N8/{p.name}" for p in un_n8] + [f"depth/{p.name}" for p in un_depth])
    return triplets, unmatched


def find_dfd_triplets(root: Path, tolerance_s: float = 0.5, split: str | None = None
                      ) -> tuple[list[tuple[str, Path, Path, Path]], list[str]]:
    """All (id, n2_8, n8, depth) triplets under ``root`` (either layout) and the unmatched files.

    With several splits and no ``split`` given, every split's triplets are returned (ids may then
    repeat across splits; use :func:`locate_dfd_splits` + :func:`pair_dfd_split` to keep them apart).
    Unmatched entries are prefixed by the split name when more than one split was read.
    """
    found = locate_dfd_splits(Path(root), split)
    triplets: list[tuple[str, Path, Path, Path]] = []
    unmatched: list[str] = []
    for dirs in found:
        t, u = pair_dfd_split(dirs, tolerance_s)
        triplets.extend(t)
        unmatched.extend(f"{dirs.split}/{x}" if len(found) > 1 else x for x in u)
    return triplets, unmatched


# --------------------------------------------------------------------------------- NYUv2
def crop_nyu(image: np.ndarray) -> np.ndarray:
    """Crop a 480x640 NYUv2 image (H, W[, C]) to the 427x561 valid-projection region."""
    if image.shape[:2] != NYU_SIZE_HW:
        raise ValueError(f"expected a 480x640 NYUv2 image, got {image.shape[:2]}")
    (r0, r1), (c0, c1) = NYU_CROP_ROWS, NYU_CROP_COLS
    return image[r0:r1, c0:c1]


def read_nyu_splits(splits_path: Path) -> dict[str, np.ndarray]:
    """The official split from ``splits.mat``: {'train': 0-based indices (795), 'test': (654)}."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(splits_path))
    except (OSError, ValueError, NotImplementedError) as e:
        raise RigError(f"{splits_path}: cannot read the NYUv2 splits file ({e})") from None
    out = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        if key not in mat:
            raise RigError(f"{splits_path}: no '{key}' in the NYUv2 splits file")
        idx = np.asarray(mat[key]).astype(np.int64).ravel()
        if idx.size and idx.min() < 1:
            raise RigError(f"{splits_path}: '{key}' must hold 1-based indices")
        out[split] = idx - 1
    return out


def load_nyu(mat_path: Path, splits_path: Path | None = None, split: str = "all", crop: bool = True
             ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (name, rgb (H, W, 3) uint8, depth_m (H, W) float32) from the labelled NYUv2 .mat.

    name = the 1-based MATLAB index, zero-padded ('0001'). ``split`` 'train'/'test' needs
    ``splits_path``; 'all' yields every image. ``crop`` = paper 1's 561x427 valid region.
    Reads one image at a time (the file is 2.8 GB).
    """
    import h5py

    if split not in ("all", "train", "test"):
        raise RigError(f"split must be 'all', 'train' or 'test', got {split!r}")
    if split != "all" and splits_path is None:
        raise RigError(f"the NYUv2 '{split}' split needs the splits file (splits.mat, --splits)")
    try:
        f = h5py.File(str(mat_path), "r")
    except OSError as e:
        raise RigError(f"{mat_path}: cannot open as a MATLAB v7.3 (HDF5) file ({e})") from None
    with f:
        if "images" not in f or "depths" not in f:
            raise RigError(f"{mat_path}: not the NYUv2 labelled file (needs 'images' and 'depths')")
        images, depths = f["images"], f["depths"]
        if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3 or depths.shape[0] != images.shape[0]:
            raise RigError(f"{mat_path}: unexpected layout images {images.shape} depths {depths.shape} "
                           "(expected (N, 3, W, H) and (N, W, H))")
        n = images.shape[0]
        if split == "all":
            indices = np.arange(n)
        else:
            indices = read_nyu_splits(Path(splits_path))[split]  # type: ignore[arg-type]
        if indices.size and indices.max() >= n:
            raise RigError(f"{splits_path}: index {indices.max() + 1} beyond the {n} images of {mat_path}")
        width = max(4, len(str(n)))
        for i in indices:
            rgb = np.ascontiguousarray(np.asarray(images[int(i)], dtype=np.uint8).transpose(2, 1, 0))
            depth = np.ascontiguousarray(np.asarray(depths[int(i)], dtype=np.float32).T)
            if crop:
                if rgb.shape[:2] != NYU_SIZE_HW:
                    raise RigError(f"{mat_path}: images are {rgb.shape[1]}x{rgb.shape[0]}, the 561x427 crop "
                                   "needs NYUv2's 640x480 (use crop=False)")
                rgb, depth = np.ascontiguousarray(crop_nyu(rgb)), np.ascontiguousarray(crop_nyu(depth))
            yield f"{int(i) + 1:0{width}d}", rgb, depth
