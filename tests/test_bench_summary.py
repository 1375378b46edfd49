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
