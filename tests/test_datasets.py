"""rig.core.datasets: timestamp pairing of paper 1's DFD release (both layouts) and the NYUv2 .mat loader."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from rig.core.datasets import (NYU_CROP_COLS, NYU_CROP_ROWS, find_dfd_triplets, list_images, load_nyu,
                          locate_dfd_splits, pair_by_timestamp, pair_folder, parse_timestamp, read_nyu_splits,
                          timestamp_gap_s)
from rig.core.errors import RigError
from tests.conftest import shared_subdir

# ------------------------------------------------------------------------------- timestamps


def test_parse_timestamp_release_names():
    assert parse_timestamp("2018-04-26T16:38:31.689710.JPG") == datetime(2018, 4, 26, 16, 38, 31, 689710)
    assert parse_timestamp(Path("/x/depth/2018-04-26T16:38:31.655986.png")) == datetime(2018, 4, 26, 16, 38, 31,
                                                                                         655986)
    # file-system-safe variant, milliseconds only, nanoseconds truncated
    assert parse_timestamp("2018-04-26_16-38-31.5.png") == datetime(2018, 4, 26, 16, 38, 31, 500000)
    assert parse_timestamp("2018-04-26T16:38:31.123456789.png") == datetime(2018, 4, 26, 16, 38, 31, 123456)
    assert parse_timestamp("2018-04-26T16:38:31.JPG") == datetime(2018, 4, 26, 16, 38, 31)
    assert parse_timestamp("DSC_0001.JPG") is None
    assert parse_timestamp("2018-13-40T16:38:31.png") is None  # not a date


def _names(times: list[str], ext: str) -> list[Path]:
    return [Path(f"2018-04-26T{t}{ext}") for t in times]


RGB_T = ["16:38:31.689710", "16:39:15.694566", "16:39:47.099665", "16:40:20.614968", "16:40:50.406869"]
DEPTH_T = ["16:38:31.655986", "16:39:15.627710", "16:39:47.032529", "16:40:20.448551", "16:40:50.373383"]


def test_pair_by_timestamp_survives_a_missing_file():
    rgb = _names(RGB_T, ".JPG")
    depth = _names(DEPTH_T[:2] + DEPTH_T[3:], ".png")  # the 3rd depth map is missing
    pairs, un_a, un_b = pair_by_timestamp(rgb, depth, 0.5)
    assert un_a == [rgb[2]] and un_b == []
    assert [(a.name[:19], b.name[:19]) for a, b in pairs] == [(a.name[:19], a.name[:19]) for a in rgb if a != rgb[2]]
    assert all(timestamp_gap_s(a, b) <= 0.5 for a, b in pairs)
    # a sorted-order zip would pair the 3rd RGB with the 4th depth map, 33 s away
    zipped = list(zip(sorted(rgb), sorted(depth)))
    assert max(timestamp_gap_s(a, b) for a, b in zipped) > 30


def test_pair_by_timestamp_is_one_to_one_and_nearest():
    a = _names(["10:00:00.000", "10:00:00.400"], ".JPG")
    b = _names(["10:00:00.300"], ".png")
    pairs, un_a, un_b = pair_by_timestamp(a, b, 0.5)
    assert pairs == [(a[1], b[0])] and un_a == [a[0]] and un_b == []  # 0.1 s beats 0.3 s
    # outside the tolerance: nothing pairs
    pairs, un_a, un_b = pair_by_timestamp(a, b, 0.05)
    assert pairs == [] and un_a == a and un_b == b
    # exactly at the tolerance pairs
    assert len(pair_by_timestamp(a[:1], b, 0.3)[0]) == 1
    with pytest.raises(ValueError):
        pair_by_timestamp(a, b, -1)


def test_pair_by_timestamp_greedy_by_smallest_gap_not_input_order():
    # a0 is listed first, but a1 is closer to b0: b0 must go to a1, and a0 takes b1
    a = _names(["10:00:00.000", "10:00:00.450"], ".JPG")
    b = _names(["10:00:00.400", "09:59:59.700"], ".png")
    pairs, un_a, un_b = pair_by_timestamp(a, b, 0.5)
    assert set(pairs) == {(a[1], b[0]), (a[0], b[1])} and not un_a and not un_b


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_pair_folder_timestamps_and_stem_fallback(tmp_path: Path):
    _touch(tmp_path / "rgb", [f"2018-04-26T{t}.JPG" for t in RGB_T[:3]] + ["scene_a.jpg", "scene_b.jpg", ".hidden.jpg"])
    _touch(tmp_path / "depth", [f"2018-04-26T{t}.png" for t in DEPTH_T[:2]] + ["scene_a.png", "notes.txt"])
    pairs, unmatched = pair_folder(tmp_path / "rgb", tmp_path / "depth", 0.5)
    ids = [p[0] for p in pairs]
    assert ids == [f"2018-04-26T{t}" for t in RGB_T[:2]] + ["scene_a"]
    assert sorted(Path(u).name for u in unmatched) == sorted([f"2018-04-26T{RGB_T[2]}.JPG", "scene_b.jpg"])
    assert all(r.suffix.lower() == ".jpg" and d.suffix == ".png" for _, r, d in pairs)


def _fake_split(folder: Path, rgb_t: list[str], depth_t: list[str], n8_t: list[str] | None = None) -> None:
    _touch(folder / "N2_8", [f"2018-04-26T{t}.JPG" for t in rgb_t])
    _touch(folder / "N8", [f"2018-04-26T{t}.JPG" for t in (rgb_t if n8_t is None else n8_t)])
    _touch(folder / "depth", [f"2018-04-26T{t}.png" for t in depth_t])


def test_find_dfd_triplets_split_folder_layout(tmp_path: Path):
    _fake_split(tmp_path / "train", RGB_T, DEPTH_T[:1] + DEPTH_T[2:] + ["17:00:00.000000"], n8_t=RGB_T[:4])
    triplets, unmatched = find_dfd_triplets(tmp_path / "train", 0.5)
    assert [t[0] for t in triplets] == [f"2018-04-26T{t}" for t in (RGB_T[0], RGB_T[2], RGB_T[3])]
    for _, n2, n8, depth in triplets:
        assert n2.parent.name == "N2_8" and n8.parent.name == "N8" and n2.name == n8.name
        assert timestamp_gap_s(n2, depth) <= 0.5
    assert sorted(unmatched) == sorted([f"N2_8/2018-04-26T{RGB_T[4]}.JPG", f"N2_8/2018-04-26T{RGB_T[1]}.JPG",
                                        "depth/2018-04-26T17:00:00.000000.png",
                                        f"depth/2018-04-26T{DEPTH_T[4]}.png"])
    # the parent folder works too (splits found by name)
    assert [d.split for d in locate_dfd_splits(tmp_path)] == ["train"]
    assert len(find_dfd_triplets(tmp_path, 0.5, split="train")[0]) == 3


def test_find_dfd_triplets_release_layout(tmp_path: Path):
    root = tmp_path / "dfd_indoor"
    for split, n in (("train", 3), ("test", 2)):
        _touch(root / "dfd_dataset_indoor_N2_8" / "rgb" / split, [f"2018-04-26T{t}.JPG" for t in RGB_T[:n]])
        _touch(root / "dfd_dataset_indoor_N8" / "rgb" / split, [f"2018-04-26T{t}.JPG" for t in RGB_T[:n]])
        _touch(root / "dfd_dataset_indoor_N8" / "depth" / split, [f"2018-04-26T{t}.png" for t in DEPTH_T[:n]])
    assert sorted(d.split for d in locate_dfd_splits(root)) == ["test", "train"]
    triplets, unmatched = find_dfd_triplets(root, 0.5, split="test")
    assert len(triplets) == 2 and unmatched == []
    assert triplets[0][1].parts[-4:-1] == ("dfd_dataset_indoor_N2_8", "rgb", "test")
    assert triplets[0][3].parts[-4:-1] == ("dfd_dataset_indoor_N8", "depth", "test")
    # one of the release's own split folders as the root
    inner = locate_dfd_splits(root / "dfd_dataset_indoor_N2_8" / "rgb" / "train")
    assert [d.split for d in inner] == ["train"]
    both, _ = find_dfd_triplets(root, 0.5)
    assert len(both) == 5


def test_find_dfd_triplets_errors(tmp_path: Path):
    with pytest.raises(RigError, match="no such folder"):
        find_dfd_triplets(tmp_path / "nope")
    with pytest.raises(RigError, match="no DFD data"):
        find_dfd_triplets(tmp_path)
    _fake_split(tmp_path / "train", RGB_T[:1], DEPTH_T[:1])
    with pytest.raises(RigError, match="no split 'val'"):
        find_dfd_triplets(tmp_path, split="val")


# ------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_release_pairs_by_timestamp_not_sorted_order():
    train = shared_subdir("dfd_indoor/train")
    triplets, unmatched = find_dfd_triplets(train, 0.5)
    assert len(triplets) == 81 and unmatched == []
    gaps = [timestamp_gap_s(n2, d) for _, n2, _, d in triplets]
    assert max(gaps) <= 0.5 and max(gaps) > 0.2  # the depth map is taken up to ~0.3 s before the RGB
    assert all(n2.name == n8.name for _, n2, n8, _ in triplets)
    assert len({t[3] for t in triplets}) == 81  # one-to-one
    # This copy has as many depth maps as RGB shots; the published release does not. Take one
    # depth map away, as in the release: a sorted-order zip silently shifts every later pair.
    rgb = list_images(train / "N2_8")
    depth = list_images(train / "depth")
    del depth[40]
    zipped = list(zip(rgb, depth))
    shifted = [timestamp_gap_s(a, b) for a, b in zipped]
    assert sum(g > 0.5 for g in shifted) == 40  # pairs 40..79 are wrong, and the last shot is dropped
    pairs, un_a, un_b = pair_by_timestamp(rgb, depth, 0.5)
    assert len(pairs) == 80 and un_a == [rgb[40]] and un_b == []
    assert max(timestamp_gap_s(a, b) for a, b in pairs) <= 0.5


# ------------------------------------------------------------------------------- NYUv2
def _nyu_image(i: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A recognisable (H, W, 3) uint8 image and (H, W) depth for index i."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(yy * 7 + i) % 256, (xx * 3 + i) % 256, np.full((h, w), i * 40 % 256)], axis=2).astype(np.uint8)
    depth = (0.5 + 0.001 * yy + 0.0001 * xx + i).astype(np.float32)
    return rgb, depth


def _write_nyu_mat(path: Path, n: int, h: int = 480, w: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tiny labelled-NYUv2 file in the real layout: MATLAB v7.3 (HDF5 with a 512-byte header),
    images (N, 3, W, H) uint8 and depths (N, W, H) — MATLAB's (H, W, 3, N) seen through h5py."""
    import h5py

    items = [_nyu_image(i, h, w) for i in range(n)]
    images = np.stack([rgb.transpose(2, 1, 0) for rgb, _ in items])
    depths = np.stack([d.T for _, d in items])
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=images, compression="gzip")
        f.create_dataset("depths", data=depths, compression="gzip")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" "))
    return items


def _write_splits(path: Path, train: list[int], test: list[int]) -> None:
    import scipy.io

    scipy.io.savemat(str(path), {"trainNdxs": np.array(train, dtype=np.float64)[:, None],
                                 "testNdxs": np.array(test, dtype=np.float64)[:, None]})  # v5, like the real one


def test_load_nyu_layout_crop_and_split(tmp_path: Path):
    mat, splits = tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "splits.mat"
    items = _write_nyu_mat(mat, 3)
    _write_splits(splits, [1, 3], [2])
    assert {k: v.tolist() for k, v in read_nyu_splits(splits).items()} == {"train": [0, 2], "test": [1]}

    full = list(load_nyu(mat, crop=False))
    assert [n for n, _, _ in full] == ["0001", "0002", "0003"]
    for (name, rgb, depth), (rgb0, d0) in zip(full, items):
        assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8 and depth.dtype == np.float32
        np.testing.assert_array_equal(rgb, rgb0)  # not transposed, channels in RGB order
        np.testing.assert_array_equal(depth, d0)

    train = list(load_nyu(mat, splits, "train"))
    assert [n for n, _, _ in train] == ["0001", "0003"]
    name, rgb, depth = train[1]
    assert rgb.shape == (427, 561, 3) and depth.shape == (427, 561)  # paper 1's 561x427
    (r0, r1), (c0, c1) = NYU_CROP_ROWS, NYU_CROP_COLS
    np.testing.assert_array_equal(rgb, items[2][0][r0:r1, c0:c1])
    np.testing.assert_array_equal(depth, items[2][1][r0:r1, c0:c1])
    assert (r0, c0) == (44, 40)  # MATLAB mask(45:471, 41:601)
    assert [n for n, _, _ in load_nyu(mat, splits, "test")] == ["0002"]


def test_load_nyu_errors(tmp_path: Path):
    mat = tmp_path / "small.mat"
    _write_nyu_mat(mat, 1, h=12, w=16)
    name, rgb, depth = next(load_nyu(mat, crop=False))
    assert rgb.shape == (12, 16, 3) and depth.shape == (12, 16)
    with pytest.raises(RigError, match="640x480"):
        next(load_nyu(mat, crop=True))
    with pytest.raises(RigError, match="splits file"):
        next(load_nyu(mat, split="train"))
    bad_split = tmp_path / "splits.mat"
    _write_splits(bad_split, [1, 5], [1])
    with pytest.raises(RigError, match="beyond"):
        next(load_nyu(mat, bad_split, "train", crop=False))
    not_hdf5 = tmp_path / "old.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(RigError, match="HDF5"):
        next(load_nyu(not_hdf5))
