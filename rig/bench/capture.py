"""``rig bench capture``: the capture loop's own overhead against the simulated devices' time.

For each repeat one paired capture (depth burst + IR, f/2.8, f/8, ground truth) of a new simulated
scene is taken into a temporary session at the preset's real latencies (latency_scale 1, no
faults). The scene is rendered before the timed capture (that is the simulator's cost, not the
camera's), so each device operation costs its nominal latency (the remaining compute — exposure,
noise, JPEG encoding — is hidden inside it, like in-camera processing). The simulated devices
account the wall time spent inside their own operations; everything else in the capture's wall
time — verification, journal, fsyncs, the commit, waiting for background file jobs — is the loop's
overhead. A stricter figure compares the wall time with the nominal latencies alone: it also
charges the loop for any CPU contention that slows the simulated device work. Reported: medians over ``--repeats`` (after one warm-up capture), overhead in % of the
device time (goal ≤ 5 %), for the loop as used (file work on a background thread, overlapping the
devices) and, interleaved on the same scenes, the inline baseline (file work done in turn).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _capturer(cfg: Any, root: Path, name: str, scenes: int, overlap_io: bool) -> Any:
    from acquisition.capture import PairCapture
    from acquisition.devices import open_rig
    from rig.core.session import Session

    session = Session.create(root / name, cfg, planned_scenes=scenes)
    devices = open_rig(cfg)
    capture = PairCapture(session, devices.dslr, devices.sensor, scene_hook=devices.scene_hook(), backoff_s=0.0,
                          overlap_io=overlap_io)
    capture.prepare()
    return capture


def _one(capture: Any, i: int) -> dict[str, float]:
    rig = capture.dslr.rig
    rig.set_scene(i)
    rig.prerender()  # the world's rendering is the simulator's cost, not the camera's: done before timing
    nominal0 = rig.clock.nominal_s
    t0 = time.perf_counter()
    res = capture.capture_scene(i)
    wall = time.perf_counter() - t0
    nominal = rig.clock.nominal_s - nominal0
    if res.status != "ok" or res.device_s is None:
        raise RuntimeError(f"bench capture {i} failed: {res.error}")
    return {"wall_s": wall, "device_s": res.device_s, "overhead_s": wall - res.device_s,
            "overhead_pct": 100.0 * (wall - res.device_s) / res.device_s,
            "nominal_s": nominal, "strict_overhead_pct": 100.0 * (wall - nominal) / nominal,
            "file_work_s": capture.last_background_s, "mb": res.bytes / 1e6}


def measure(repeats: int, latency_scale: float = 1.0, preset: str = "simulated") -> dict[str, Any]:
    """``repeats`` captures (after a warm-up) with the file work overlapped (the capture loop as
    used) and, interleaved on the same scenes, done inline (the sequential baseline)."""
    from rig.core.config import load_rig_config

    cfg = load_rig_config(preset, overrides={"simulated.latency_scale": float(latency_scale), "faults.rate": 0.0,
                                             "dslr.driver": "simulated", "depth_sensor.driver": "simulated",
                                             "session.min_free_mb": 0.0})
    rows: dict[str, list[dict[str, float]]] = {"overlapped": [], "sequential": []}
    with tempfile.TemporaryDirectory(prefix="rig-bench-capture-") as tmp:
        caps = {"overlapped": _capturer(cfg, Path(tmp), "overlapped", repeats + 1, True),
                "sequential": _capturer(cfg, Path(tmp), "sequential", repeats + 1, False)}
        try:
            for i in range(repeats + 1):
                for mode, cap in caps.items():
                    r = _one(cap, i)
                    if i > 0:  # capture 0 is the warm-up (imports, first codec use)
                        rows[mode].append(r)
        finally:
            for cap in caps.values():
                cap.close()

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rows[mode]))

    out: dict[str, Any] = {"repeats": repeats, "latency_scale": latency_scale, "sensor_px": list(cfg.dslr.sensor_px),
                           "goal_pct": 5.0}
    for mode in rows:
        for key in ("wall_s", "device_s", "overhead_s", "overhead_pct", "nominal_s", "strict_overhead_pct",
                    "file_work_s", "mb"):
            out[f"{mode}_{key}_median"] = med(mode, key)
    out["overhead_pct_median"] = out["overlapped_overhead_pct_median"]
    out["overhead_ratio_vs_sequential"] = (out["overlapped_overhead_s_median"]
                                           / max(1e-9, out["sequential_overhead_s_median"]))
    out["per_repeat"] = rows
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of ``rig bench capture`` (args.repeats, args.quick)."""
    repeats = max(1, min(int(args.repeats), 2) if getattr(args, "quick", False) else int(args.repeats))
    res = measure(repeats)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"capture loop overhead (simulated rig {res['sensor_px'][0]}x{res['sensor_px'][1]}, "
              f"latency ×{res['latency_scale']:g}, median of {repeats})")
    t.add_column("figure")
    t.add_column("file work overlapped (used)", justify="right")
    t.add_column("file work inline (baseline)", justify="right")

    def row(label: str, key: str, fmt: str, scale: float = 1.0) -> None:
        t.add_row(label, fmt.format(res[f"overlapped_{key}_median"] * scale),
                  fmt.format(res[f"sequential_{key}_median"] * scale))

    row("wall time per pair", "wall_s", "{:.3f} s")
    row("simulated device time per pair", "device_s", "{:.3f} s")
    row("loop overhead (wall − device)", "overhead_s", "{:.0f} ms", 1000.0)
    row("overhead / device time", "overhead_pct", "{:.2f} %")
    row("nominal device latency per pair", "nominal_s", "{:.3f} s")
    row("(wall − nominal) / nominal (strict)", "strict_overhead_pct", "{:.2f} %")
    row("file work (encode, fsync, decode checks)", "file_work_s", "{:.0f} ms", 1000.0)
    row("data per capture", "mb", "{:.2f} MB")
    Console().print(t)
    ok = res["overhead_pct_median"] <= res["goal_pct"]
    print(f"overhead {res['overhead_pct_median']:.2f} % of device time (goal ≤ {res['goal_pct']:g} %: "
          f"{'met' if ok else 'NOT met'}); {res['overhead_ratio_vs_sequential']:.2f}× the inline baseline's overhead")
    return res
