"""``rig bench register`` / ``rig bench fill``: the checkable "summary" object (issue 14), from
quick runs — the keys and plain numbers, and today's accuracy (speed is only measured, never asserted)."""

from __future__ import annotations

import argparse

import pytest

from rig.bench.register import run, run_fill


def test_register_summary_holds_speed_and_both_errors():
    pytest.importorskip("pyrealsense2")
    s = run(argparse.Namespace(quick=True, repeats=2))["summary"]
    assert {"speed_over_rs_align", "mae_mm", "rs_align_mae_mm"} <= set(s)
    assert all(isinstance(s[k], float) for k in ("speed_over_rs_align", "mae_mm", "rs_align_mae_mm"))
    assert s["speed_over_rs_align"] > 0 and s["runs"] == 2
    assert s["mae_mm"] < 15.0 and s["mae_mm"] < s["rs_align_mae_mm"] / 2  # the accuracy of today (11 vs 34.5 mm)


def test_fill_summary_holds_worst_and_median_speedups(monkeypatch, tmp_path):
    monkeypatch.setenv("RIG_SHARED_DATA", str(tmp_path))  # no real frames: the quick analytic frame
    s = run_fill(argparse.Namespace(quick=True, repeats=1))["summary"]
    assert {"worst_frame_speedup", "median_speedup"} <= set(s)
    assert 0 < s["worst_frame_speedup"] <= s["median_speedup"] and s["frames"] == 2


def test_json_file_has_the_summary_at_the_top_level(monkeypatch, tmp_path):
    import json

    from rig.cli import main
    from rig.cli.foundation import bench_report

    monkeypatch.setenv("RIG_SHARED_DATA", str(tmp_path))  # the quick analytic frame
    out = tmp_path / "fill.json"
    assert main(["bench", "fill", "--quick", "--repeats", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"worst_frame_speedup", "median_speedup"} <= set(doc["summary"])
    assert "rows" in doc["fill"] and "summary" not in doc["fill"]  # moved, the rest kept
    both = bench_report({"register": {"a": 1, "summary": {"speed_over_rs_align": 1.2, "mae_mm": 11.0,
                                                          "rs_align_mae_mm": 34.5}},
                         "fill": {"b": 2, "summary": {"worst_frame_speedup": 25.0, "median_speedup": 40.0}}})
    assert both["summary"]["register"]["mae_mm"] == 11.0 and both["summary"]["fill"]["median_speedup"] == 40.0
    assert both["register"] == {"a": 1} and both["fill"] == {"b": 2}


def test_register_json_summary_at_the_top_level(tmp_path):
    pytest.importorskip("pyrealsense2")
    import json

    from rig.cli import main

    out = tmp_path / "register.json"
    assert main(["bench", "register", "--quick", "--repeats", "1", "--json", str(out)]) == 0
    s = json.loads(out.read_text())["summary"]
    assert {"speed_over_rs_align", "mae_mm", "rs_align_mae_mm"} <= set(s)
    assert s["mae_mm"] < 12.3  # the quick run is seed 0 alone: 12.1 mm (11.0 over the three frames)


def test_agreement_images_of_a_model_without_held_out_ids_are_real_and_not_calibration_images():
    from inference.quantize import CALIBRATION_IMAGES, dfd_images
    from rig.bench.uncertainty import VAL_IMAGES, _val_images

    size = (96, 64)
    every = dfd_images(size)
    if not every:
        pytest.skip("no DFD indoor data under ../shared/data")
    imgs, note = _val_images({"input": "N2_8", "train_ids": ["x"]}, size, quick=False)
    assert 0 < len(imgs) <= VAL_IMAGES and "training images" in note
    calibration = {sid for sid, _, _ in every[:CALIBRATION_IMAGES]}
    assert not calibration & {sid for sid, _, _ in imgs}
    assert all(gt is not None and (gt > 0).any() for _, _, gt in imgs)
    quick, note_q = _val_images({"input": "N2_8"}, size, quick=True)
    assert "random" in note_q and all(gt is None for _, _, gt in quick)
