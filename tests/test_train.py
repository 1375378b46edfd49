"""Training: config validation, scene-wise validation split, crops, loss decrease, exact resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inference import data as D
from inference.train import TRAIN_CONFIG_DIR, load_train_config, run_training, train_config_from_dict
from rig.core.errors import ConfigError, RigError

torch.set_num_threads(1)


def tiny_config(root: Path, **train: object) -> dict:
    return {"name": "tiny", "model": {"arch": "d3net-lite"},
            "data": {"root": str(root), "input": "N2_8", "crop_px": [32, 32], "crops_per_image": 2,
                     "val_fraction": 0.25, "max_scene_captures": 2},
            "train": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "threads": 1, "seed": 5, **train}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return D.write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "tiny", n=8, size_hw=(48, 64))


# ---- config ------------------------------------------------------------------------------------


def test_presets_validate() -> None:
    names = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
    for required in ("nyuv2_aif", "nyuv2_focus2", "nyuv2_focus4", "nyuv2_focus8", "dfd_n2_8", "dfd_n8",
                     "dfd_synth_pretrain"):
        assert required in names
    for name in names:
        cfg = load_train_config(name)
        assert cfg.name and cfg.train["epochs"] >= 1


@pytest.mark.parametrize("patch,key", [
    ({"model": {"arch": "resnet"}}, "model.arch"),
    ({"data": {"input": "N4"}}, "data.input"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"epochs": 1, "batch": 3}}, "train.batch"),
    ({"data": {"crop_px": [224]}}, "data.crop_px"),
])
def test_bad_keys_give_one_line_errors(tmp_path: Path, patch: dict, key: str) -> None:
    cfg = tiny_config(tmp_path)
    for section, values in patch.items():
        cfg[section].update(values)
    with pytest.raises(ConfigError) as e:
        train_config_from_dict(cfg, src="x.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.yaml: ") and key in msg


def test_missing_epochs_and_imagenet_weights_on_lite(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    del cfg["train"]["epochs"]
    with pytest.raises(ConfigError, match="train.epochs: missing"):
        train_config_from_dict(cfg)
    cfg = tiny_config(tmp_path)
    cfg["model"]["encoder_weights"] = "densenet121.pth"
    with pytest.raises(ConfigError, match="need model.arch 'd3net'"):
        train_config_from_dict(cfg)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "data": {"root": "nowhere", "input": "N2_8"},
                                   "train": {"epochs": "many"}}))
    r = subprocess.run([sys.executable, "-m", "rig.cli", "train", "--config", str(bad)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "train.epochs" in r.stderr and "Traceback" not in r.stderr


# ---- scenes, split, crops -----------------------------------------------------------------------


def test_group_scenes_by_time_gap_and_chunks() -> None:
    base = "2018-04-26T16:{:02d}:{:02d}.000000"
    ids = [base.format(0, 0), base.format(0, 20), base.format(0, 45),   # run 1 (gaps 20 s, 25 s)
           base.format(10, 0), base.format(10, 30),                     # run 2 after a 9 min gap
           "not-a-timestamp"]
    scenes = D.group_scenes(ids, gap_s=120, max_captures=None)
    assert scenes == [ids[:3], ids[3:5], ["not-a-timestamp"]]
    chunked = D.group_scenes(ids, gap_s=120, max_captures=2)
    assert [len(s) for s in chunked] == [2, 1, 2, 1]
    by_manifest = D.group_scenes(ids[:4], scene_of={ids[0]: "a", ids[1]: "b", ids[2]: "a", ids[3]: "b"})
    assert by_manifest == [sorted([ids[0], ids[2]]), sorted([ids[1], ids[3]])]


def test_carve_val_keeps_scenes_whole() -> None:
    ids = [f"2020-01-01T10:{m:02d}:{s:02d}" for m in range(0, 40, 5) for s in (0, 20, 40)]  # 8 scenes x 3
    train, val = D.carve_val(ids, 0.25, seed=1, gap_s=60, max_captures=None)
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(ids)
    assert len(val) == 6  # two whole scenes
    scenes = D.group_scenes(ids, 60, None)
    for s in scenes:
        assert set(s) <= set(val) or set(s).isdisjoint(val)
    assert D.carve_val(ids, 0.25, seed=1, gap_s=60, max_captures=None) == (train, val)
    with pytest.raises(RigError, match="only 1 scene"):
        D.carve_val(ids[:3], 0.3, seed=0, gap_s=60, max_captures=None)
    manifest = {"provenance": {"train": {"pairs": [{"id": i, "scene": i[:15]} for i in ids]}}}
    assert D.scene_ids_from_manifest(manifest, "train") == {i: i[:15] for i in ids}


def test_crops_are_pixel_exact_slices_with_flips(tiny_data: Path) -> None:
    images = D.load_image_set(tiny_data, "train", "N2_8")
    seen_flip = {False: 0, True: 0}
    batches = list(D.iter_batches(images, 3, (32, 32), 0.5, seed=2, epoch=0, crops_per_image=2))
    order = D.epoch_order(len(images), 2, 2, 0)
    pos = 0
    for rgb, depth, valid in batches:
        assert rgb.shape[1:] == (3, 32, 32) and depth.shape[1:] == (1, 32, 32)
        for b in range(rgb.shape[0]):
            i = int(order[pos])
            top, left, flip = D.crop_params(images.depth_m[i].shape, (32, 32), 0.5, 2, 0, pos)
            src = images.depth_m[i][top:top + 32, left:left + 32]
            np.testing.assert_array_equal(depth[b, 0], src[:, ::-1] if flip else src)  # no resampling
            ref_rgb = images.rgb[i][top:top + 32, left:left + 32].astype(np.float32) / 255
            np.testing.assert_array_equal(rgb[b].transpose(1, 2, 0), ref_rgb[:, ::-1] if flip else ref_rgb)
            seen_flip[flip] += 1
            pos += 1
    assert pos == 16 and seen_flip[True] > 0 and seen_flip[False] > 0
    # DDP shards: disjoint, same count per rank, together the whole epoch
    r0, r1 = D.rank_positions(16, 0, 2), D.rank_positions(16, 1, 2)
    assert len(r0) == len(r1) == 8 and sorted(r0 + r1) == list(range(16))


# ---- training ---------------------------------------------------------------------------------


def test_loss_decreases_and_files_are_written(tiny_data: Path, tmp_path: Path) -> None:
    cfg = train_config_from_dict(tiny_config(tiny_data, epochs=8, val_every=4))
    summary = run_training(cfg, tmp_path / "run")
    hist = [yaml.safe_load(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == list(range(1, 9))
    assert (hist[-1]["train_l1"] + hist[-2]["train_l1"]) / 2 < 0.7 * hist[0]["train_l1"]
    assert "val_rel" in hist[3] and "val_rel" not in hist[2]
    assert summary["best"]["epoch"] in (4, 8)
    for name in ("last.pt", "best.pt", "config.yaml", "split.json"):
        assert (tmp_path / "run" / name).is_file()
    from inference.model import load_model

    best = load_model(tmp_path / "run" / "best.pt")
    assert best.meta["val_carved"] and len(best.meta["val_ids"]) == 2  # one 2-capture scene
    assert best.meta["image_size_px"] == [64, 48]
    from inference.train import ship_model

    shipped = load_model(ship_model(tmp_path / "run" / "best.pt", tmp_path / "shipped.pt"))
    assert shipped.meta["val_ids"] == best.meta["val_ids"] and shipped.meta["val"]["rel"] == best.meta["val"]["rel"]
    assert next(iter(torch.load(tmp_path / "shipped.pt", weights_only=True)["state_dict"].values())).dtype == torch.float16


def test_resume_continues_exactly(tiny_data: Path, tmp_path: Path) -> None:
    cfg2 = train_config_from_dict(tiny_config(tiny_data, epochs=2))
    run_training(cfg2, tmp_path / "straight")
    cfg1 = train_config_from_dict(tiny_config(tiny_data, epochs=1))
    run_training(cfg1, tmp_path / "resumed")
    with pytest.raises(RigError, match="pass --resume"):
        run_training(cfg2, tmp_path / "resumed")
    run_training(cfg2, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][1]["train_l1"] == b["history"][1]["train_l1"]
    with pytest.raises(RigError, match="nothing to resume"):
        run_training(cfg2, tmp_path / "empty", resume=True)
