"""`rig register` and `rig build-dataset` on sessions captured with the simulated rig."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from rig.cli import main
from rig.core.config import load_rig_config
from rig.core.dataset import list_samples, read_manifest, read_sample
from rig.core.imageio import read_depth_m
from rig.core.records import VALID_FILLED, VALID_MEASURED


def capture_session(path: Path, scenes: int) -> Path:
    """A session of ``scenes`` simulated captures (no device latency), as `rig capture` makes it."""
    acq = pytest.importorskip("acquisition.capture")
    from rig.core.config import config_with_overrides
    from acquisition.devices import open_rig
    from rig.core.session import Session

    cfg = config_with_overrides(load_rig_config("simulated"), {
        "dslr.driver": "simulated", "depth_sensor.driver": "simulated", "simulated.latency_scale": 0.0})
    session = Session.create(path, cfg, planned_scenes=scenes)
    devices = open_rig(cfg)
    capture = acq.PairCapture(session, devices.dslr, devices.sensor, scene_hook=devices.scene_hook(), backoff_s=0.0)
    try:
        capture.prepare()
        run = acq.run_scenes(capture, list(range(scenes)))
    finally:
        capture.close()
    assert run.ok == scenes
    return path


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    a = capture_session(root / "day1", 3)
    b = capture_session(root / "day2", 2)  # same seed: scenes 0 and 1 again (same scene ids as day1's)
    return a, b


@pytest.fixture(scope="module")
def registered(sessions):
    for s in sessions:
        assert main(["register", str(s), "--quiet"]) == 0
    return sessions


def test_register_writes_frames_in_the_dslr_frame(registered):
    a, _ = registered
    for cid in ("c00000", "c00001", "c00002"):
        reg = a / "registered" / cid
        assert sorted(p.name for p in reg.iterdir()) == ["all_in_focus.png", "camera_intrinsic.json", "defocused.png",
                                                         "depth.png", "frame.yaml", "valid.png"]
        meta = yaml.safe_load((reg / "frame.yaml").read_text())
        assert (meta["intrinsics"]["width"], meta["intrinsics"]["height"]) == (645, 432)
        assert meta["alignment"]["checked"] and meta["alignment"]["magnitude_px"] < 0.5
        depth = read_depth_m(reg / "depth.png")
        truth = read_depth_m(a / "raw" / cid / "truth" / "depth_dslr.png")
        import cv2

        valid = cv2.imread(str(reg / "valid.png"), cv2.IMREAD_UNCHANGED)
        assert depth.shape == valid.shape == truth.shape == (432, 645)
        measured = (valid == VALID_MEASURED) & (truth > 0)
        assert measured.mean() > 0.5
        assert set(np.unique(valid)) <= {0, VALID_FILLED, VALID_MEASURED}
        assert (depth[valid == VALID_FILLED] > 0).all()
        err = np.abs(depth - truth)[measured]
        # a naive registration (the sensor's depth just resized, ignoring the 7 cm offset) is far worse
        raw = cv2.imread(str(a / "raw" / cid / "depth_fused.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
        naive = cv2.resize(raw, (645, 432), interpolation=cv2.INTER_NEAREST)
        ok = measured & (naive > 0)
        assert np.median(err) < 0.04  # sensor noise grows with z²; the sim's scenes reach 8 m
        assert np.median(np.abs(depth - truth)[ok]) < 0.5 * np.median(np.abs(naive - truth)[ok])


def test_register_is_resumable_and_force_redoes(registered, capsys):
    a, _ = registered
    stamp = (a / "registered" / "c00001" / "frame.yaml").stat().st_mtime_ns
    shutil.rmtree(a / "registered" / "c00002")
    (a / "registered" / ".tmp-c00002-999").mkdir()  # debris of a killed run: not a frame
    capsys.readouterr()
    assert main(["register", str(a), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "registered 1, already done 2" in out
    assert (a / "registered" / "c00001" / "frame.yaml").stat().st_mtime_ns == stamp
    assert (a / "registered" / "c00002" / "frame.yaml").is_file()
    assert main(["register", str(a), "--quiet", "--force", "--fill", "none", "--align", "off"]) == 0
    assert "registered 3, already done 0" in capsys.readouterr().out
    meta = yaml.safe_load((a / "registered" / "c00001" / "frame.yaml").read_text())
    assert meta["depth"]["fill"] == "none" and meta["depth"]["filled_fraction"] == 0.0
    assert main(["register", str(a), "--quiet", "--force"]) == 0  # back to the defaults for the other tests


def test_build_dataset_splits_by_scene_without_leakage(registered, tmp_path):
    a, b = registered
    out = tmp_path / "ds"
    assert main(["build-dataset", str(a), str(b), "--out", str(out), "--test-fraction", "0.34", "--quiet"]) == 0
    man = read_manifest(out)
    train, test = list_samples(out, "train"), list_samples(out, "test")
    assert len(train) + len(test) == 5 and train and test
    scene_of = man["scenes"]
    assert not {scene_of[s] for s in train} & {scene_of[s] for s in test}
    # the scenes captured in both sessions are whole on one side
    shared = {scene_of[s] for s in scene_of if s.startswith("day2-")}
    for sc in shared:
        assert len({man["samples"][s]["split"] for s in scene_of if scene_of[s] == sc}) == 1
    assert man["split_by"] == "scene" and len(man["split"]["test_scenes"]) == 1
    assert man["apertures"] == {"defocused": 2.8, "all_in_focus": 8.0} and man["focus_m"] == 2.0
    assert man["k_cam_px"]["defocused"] > man["k_cam_px"]["all_in_focus"] > 0
    assert man["intrinsics"]["width"] == 645 and man["output_size_px"] == [645, 432]
    assert {p["path"] for p in man["provenance"]["sessions"]} == {str(a.resolve()), str(b.resolve())}
    assert man["provenance"]["sessions"][0]["captures"] == ["c00000", "c00001", "c00002"]
    assert "software" in man["provenance"]
    s = read_sample(out, "train", train[0])
    assert s.defocused_rgb.shape == (432, 645, 3) and s.depth_m.shape == (432, 645)
    # other seeds: never a leak either
    for seed in range(1, 6):
        o = tmp_path / f"ds{seed}"
        assert main(["build-dataset", str(a), str(b), "--out", str(o), "--seed", str(seed), "--quiet"]) == 0
        m = read_manifest(o)
        tr, te = list_samples(o, "train"), list_samples(o, "test")
        assert not {m["scenes"][x] for x in tr} & {m["scenes"][x] for x in te}


def test_bad_input_is_one_line_exit_2(registered, tmp_path, capsys):
    from rig.core.session import Session

    a, _ = registered
    for argv in (["register", str(tmp_path / "missing")], ["register", str(tmp_path)],
                 ["build-dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rig: error:") and err.count("\n") == 1
    empty = Session.create(tmp_path / "empty", load_rig_config("simulated")).path
    assert main(["register", str(empty)]) == 2
    assert "no completed captures" in capsys.readouterr().err
    assert main(["build-dataset", str(empty), "--out", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("keep me")
    assert main(["build-dataset", str(a), "--out", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err and (busy / "x.txt").read_text() == "keep me"
    fresh = capture_session(tmp_path / "unregistered", 1)
    assert main(["build-dataset", str(fresh), "--out", str(tmp_path / "o2")]) == 2
    assert "rig register" in capsys.readouterr().err


def test_demo_step_registers_and_builds(registered, tmp_path):
    from rig.demo import DemoContext
    from rig.demo import register_step

    _, b = registered
    ctx = DemoContext(out_dir=tmp_path, config=load_rig_config("simulated"), scenes=2, quick=True,
                      artifacts={"session": b})
    lines = register_step(ctx)
    assert ctx.artifacts["dataset"] == tmp_path / "dataset"
    assert read_manifest(tmp_path / "dataset")["splits"]["train"]["count"] >= 1
    assert any("already done" in line for line in lines)


def test_max_fill_px_leaves_far_holes_unknown(registered):
    """output.max_fill_px: the fill stops that far from measured depth (sky, beyond-range walls)."""
    from registration.fill import distance_to_measured_px
    from registration.register import RegisterOptions, open_session, register_capture, session_calibration
    from rig.core.records import VALID_UNKNOWN

    session = open_session(registered[0])
    cap = session.completed()[0]
    size = tuple(session.config.output.size_px)
    calib = session_calibration(session.config, None)
    full, meta_full = register_capture(session.raw_dir(cap.capture_id), cap, RegisterOptions(size=size), calib)
    near, meta_near = register_capture(session.raw_dir(cap.capture_id), cap,
                                       RegisterOptions(size=size, max_fill_px=1.0), calib)
    measured = full.valid == VALID_MEASURED
    assert np.array_equal(measured, near.valid == VALID_MEASURED)
    dist = distance_to_measured_px(measured)
    assert dist.max() > 1.0  # the frame has holes wider than the limit
    far = ~measured & (dist > 1.0)
    assert np.all(near.valid[far] == VALID_UNKNOWN) and np.all(near.depth_m[far] == 0)
    close = ~measured & (dist <= 1.0)
    assert np.array_equal(near.depth_m[close], full.depth_m[close])
    assert meta_near["depth"]["filled_fraction"] < meta_full["depth"]["filled_fraction"]
    assert meta_near["depth"]["max_fill_px"] == 1.0


def test_max_fill_px_config_key_is_validated(tmp_path):
    from rig.core.errors import ConfigError

    cfg = load_rig_config("simulated", overrides={"output.max_fill_px": 12})
    assert cfg.output.max_fill_px == 12.0
    assert load_rig_config("simulated").output.max_fill_px is None
    with pytest.raises(ConfigError, match="max_fill_px"):
        load_rig_config("simulated", overrides={"output.max_fill_px": -1})


def test_register_ply_and_open3d_intrinsics_reproject_onto_the_depth(registered):
    from test_field_outputs import assert_reprojects, k_from_o3d_json, read_ply

    day2 = registered[1]
    assert main(["register", str(day2), "--quiet", "--ply"]) == 0  # frames done before get their PLY too
    frames = sorted(p for p in (day2 / "registered").iterdir() if p.is_dir())
    assert frames
    for f in frames:
        k = k_from_o3d_json(f / "camera_intrinsic.json")
        depth = read_depth_m(f / "depth.png")
        assert (k.width, k.height) == (depth.shape[1], depth.shape[0])
        pts, cols = read_ply(f / "depth.ply")
        assert cols is not None and len(cols) == len(pts)
        assert_reprojects(pts, depth, k)


def test_eval_split_val_on_a_build_dataset_dataset(registered, tmp_path, capsys):
    """`rig eval --split val` with the shipped model (its val ids are from the DFD release) on a dataset
    `rig build-dataset` made: 'val' is carved from 'train' by scene, as `rig train` does."""
    import json

    a, b = registered
    out = tmp_path / "ds"
    assert main(["build-dataset", str(a), str(b), "--out", str(out), "--test-fraction", "0.34", "--quiet"]) == 0
    capsys.readouterr()
    rc = main(["eval", "--model", "dfd-n2.8", "--data", str(out), "--split", "val", "--grid", "0",
               "--device", "cpu", "--json", str(tmp_path / "m.json")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "m.json").read_text())
    scene_of = read_manifest(out)["scenes"]
    val = [p["id"] for p in res["per_image"]]
    assert res["n_images"] >= 1 and set(val) <= set(list_samples(out, "train"))
    assert len({scene_of[s] for s in val}) >= 1 and "carved from train" in res["split"]
