"""Benchmarks of the registration stage: ``rig bench register`` and ``rig bench fill``.

``run``: depth → DSLR reprojection on an analytic scene seen by the simulated rig's geometry
(exact ground truth in both frames by ray casting), against librealsense's ``rs.align`` fed the
same frames through a pyrealsense2 software device (depth stream + a colour stream with the DSLR's
intrinsics at the output size and the extrinsics). Errors are measured against the ground-truth
depth in the DSLR frame; times are medians of ``--repeats`` runs of each method, same process.

``run_fill``: hole filling on a real indoor RGB-D frame (../shared/data/dfd_indoor when present,
else the analytic scene with a textured rendering): 10 % of the measured pixels are hidden, both
fills run, RMSE on the hidden pixels and the median time of each are reported.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rig.core.records import Extrinsics, Intrinsics

# ------------------------------------------------------------------------------------------------
# geometry of the simulated rig (the same formulas as acquisition/sim_geometry.py, restated here
# because registration must not import acquisition)


def sim_rig_geometry(cfg: Any) -> tuple[Intrinsics, Intrinsics, Extrinsics]:
    """(DSLR intrinsics at output size, depth-sensor intrinsics, sensor → DSLR) of a RigConfig."""
    w, h = cfg.dslr.sensor_px
    f_px = cfg.dslr.focal_mm / (cfg.dslr.pixel_um * 1e-3)
    dslr = Intrinsics(width=w, height=h, fx=f_px, fy=f_px, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0)
    dslr = dslr.scaled(*cfg.output.size_px)
    sw, sh = cfg.depth_sensor.size_px
    sensor = Intrinsics.from_hfov(sw, sh, cfg.depth_sensor.hfov_deg)
    ax, ay, az = np.deg2rad(cfg.simulated.sensor_rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = np.asarray(cfg.simulated.sensor_offset_mm, dtype=np.float64) / 1000.0
    return dslr, sensor, Extrinsics.from_matrix(m)


# ------------------------------------------------------------------------------------------------
# an analytic scene: planes, rectangles and spheres, ray cast exactly in any pinhole camera


@dataclass(frozen=True)
class Plane:
    normal: tuple[float, float, float]
    offset_m: float  # n·X = offset
    bounds: tuple[float, float, float, float] | None = None  # (xmin, xmax, ymin, ymax) world, or None


@dataclass(frozen=True)
class Sphere:
    centre_m: tuple[float, float, float]
    radius_m: float


def analytic_scene(seed: int = 0) -> list[Plane | Sphere]:
    """A room-like scene in the DSLR frame: back wall 6 m, floor, boxes at 1.2–3 m, spheres."""
    rng = np.random.default_rng(seed)
    prims: list[Plane | Sphere] = [
        Plane((0.08, 0.0, 1.0), 6.0),  # slightly slanted back wall
        Plane((0.0, -1.0, 0.35), -1.1),  # floor rising towards the back (slanted)
    ]
    for i in range(4):
        z = float(rng.uniform(1.2, 3.0))
        x0 = float(rng.uniform(-0.9, 0.5)) * z / 2.0
        y0 = float(rng.uniform(-0.6, 0.3)) * z / 2.0
        prims.append(Plane((0.0, 0.0, 1.0), z, (x0, x0 + 0.35 * z / 2, y0, y0 + 0.3 * z / 2)))
    for i in range(2):
        z = float(rng.uniform(1.0, 2.5))
        prims.append(Sphere((float(rng.uniform(-0.3, 0.3)) * z, float(rng.uniform(-0.2, 0.2)) * z, z),
                            float(rng.uniform(0.15, 0.3))))
    return prims


def raycast_depth(scene: list[Plane | Sphere], k: Intrinsics, cam_to_world: np.ndarray | None = None,
                  max_m: float = 10.0, return_ids: bool = False) -> Any:
    """Exact z-depth (H, W) float64 in metres of the scene seen by a pinhole camera (no distortion).

    cam_to_world: 4x4 X_world = M·X_cam (None = identity). 0 where nothing is hit within max_m.
    return_ids: also return the index of the primitive hit per pixel (-1 = none).
    """
    m = np.eye(4) if cam_to_world is None else np.asarray(cam_to_world, dtype=np.float64)
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    d_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)  # z = 1
    d = d_cam @ m[:3, :3].T
    o = m[:3, 3]
    best = np.full(u.shape, np.inf)
    ids = np.full(u.shape, -1, dtype=np.int64)
    for i, p in enumerate(scene):
        if isinstance(p, Plane):
            n = np.asarray(p.normal, dtype=np.float64)
            den = d @ n
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (p.offset_m - o @ n) / den
            hit = np.isfinite(s) & (s > 1e-6)
            if p.bounds is not None:
                x = o[0] + s * d[..., 0]
                y = o[1] + s * d[..., 1]
                xmin, xmax, ymin, ymax = p.bounds
                hit &= (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
        else:
            c = np.asarray(p.centre_m, dtype=np.float64)
            oc = o - c
            a = np.einsum("...i,...i->...", d, d)
            b = 2.0 * (d @ oc)
            cc = oc @ oc - p.radius_m ** 2
            disc = b * b - 4 * a * cc
            with np.errstate(invalid="ignore"):
                s = (-b - np.sqrt(disc)) / (2 * a)
            hit = (disc >= 0) & (s > 1e-6)
        closer = hit & (s < best)
        best = np.where(closer, s, best)  # s is the camera z because d_cam has z = 1
        ids[closer] = i
    far = ~np.isfinite(best) | (best > max_m)
    best[far] = 0.0
    ids[far] = -1
    return (best, ids) if return_ids else best


def scene_depths(cfg: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Intrinsics, Intrinsics, Extrinsics]:
    """(sensor depth uint16 mm, truth depth in the DSLR frame at output size (m), dslr, sensor, extr)."""
    dslr, sensor, extr = sim_rig_geometry(cfg)
    scene = analytic_scene(seed)
    sensor_m = raycast_depth(scene, sensor, extr.matrix(), max_m=cfg.depth_sensor.max_m)
    depth_mm = np.rint(sensor_m * 1000.0).astype(np.uint16)
    truth_m = raycast_depth(scene, dslr, None, max_m=cfg.depth_sensor.max_m).astype(np.float32)
    return depth_mm, truth_m, dslr, sensor, extr


# ------------------------------------------------------------------------------------------------
# librealsense's align, fed through a software device


class RsAligner:
    """``rs.align(rs.stream.color)`` on injected frames (pyrealsense2 software_device).

    Depth stream: uint16 with ``depth_units`` = depth_scale_m and the sensor intrinsics; colour
    stream: rgb8 with the target intrinsics; extrinsics depth → colour registered on the profiles.
    :meth:`align` returns the aligned depth (uint16, the sensor's z, as librealsense does) and the
    time spent in ``align.process`` alone.
    """

    def __init__(self, src: Intrinsics, dst: Intrinsics, src_to_dst: Extrinsics, depth_scale_m: float = 0.001):
        import pyrealsense2 as rs

        self.rs = rs
        self.src, self.dst = src, dst
        self.device = rs.software_device()
        self.depth_sensor = self.device.add_sensor("Depth")
        self.color_sensor = self.device.add_sensor("Color")
        self.depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_scale_m))
        self.depth_profile = self.depth_sensor.add_video_stream(
            self._stream(rs.stream.depth, rs.format.z16, 2, 1, src))
        self.color_profile = self.color_sensor.add_video_stream(
            self._stream(rs.stream.color, rs.format.rgb8, 3, 2, dst))
        ex = rs.extrinsics()
        r = np.asarray(src_to_dst.rotation, dtype=np.float64)
        ex.rotation = [float(x) for x in r.T.ravel()]  # librealsense stores rotations column-major
        ex.translation = [float(x) for x in src_to_dst.translation_m]
        self.depth_profile.register_extrinsics_to(self.color_profile, ex)
        self.syncer = rs.syncer()
        self.depth_sensor.open(self.depth_profile)
        self.color_sensor.open(self.color_profile)
        self.depth_sensor.start(self.syncer)
        self.color_sensor.start(self.syncer)
        self.align_block = rs.align(rs.stream.color)
        self.color = np.zeros((dst.height, dst.width, 3), dtype=np.uint8)
        self.frame_number = 0
        self.last_cpu_s = 0.0
        self._keep: list[np.ndarray] = []

    def _stream(self, kind: Any, fmt: Any, bpp: int, uid: int, k: Intrinsics) -> Any:
        rs = self.rs
        intr = rs.intrinsics()
        intr.width, intr.height = k.width, k.height
        intr.fx, intr.fy, intr.ppx, intr.ppy = k.fx, k.fy, k.cx, k.cy
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = [float(c) for c in (list(k.dist) + [0.0] * 5)[:5]]
        vs = rs.video_stream()
        vs.type, vs.fmt, vs.bpp, vs.index, vs.uid = kind, fmt, bpp, 0, uid
        vs.width, vs.height, vs.fps, vs.intrinsics = k.width, k.height, 30, intr
        return vs

    def _frame(self, pixels: np.ndarray, bpp: int, width: int, profile: Any) -> Any:
        rs = self.rs
        f = rs.software_video_frame()
        f.pixels = pixels
        f.bpp, f.stride = bpp, bpp * width
        f.timestamp = self.frame_number * 33.3
        f.domain = rs.timestamp_domain.hardware_clock
        f.frame_number = self.frame_number
        f.profile = profile.as_video_stream_profile()
        return f

    def align(self, depth_u16: np.ndarray, attempts: int = 5) -> tuple[np.ndarray, float]:
        """Aligned depth (H, W) uint16 in the colour frame, and seconds spent in align.process
        (wall clock; the thread's CPU time of the same call is left in ``last_cpu_s``)."""
        depth = np.ascontiguousarray(depth_u16, dtype=np.uint16)
        self._keep = [depth]  # librealsense may read the buffer after on_video_frame returns
        for _ in range(attempts):
            self.frame_number += 1
            self.depth_sensor.on_video_frame(self._frame(depth, 2, self.src.width, self.depth_profile))
            self.color_sensor.on_video_frame(self._frame(self.color, 3, self.dst.width, self.color_profile))
            frames = self.syncer.wait_for_frames(2000)
            if frames.size() < 2:
                continue  # the syncer's first frameset can hold one stream only
            c0, t0 = time.thread_time(), time.perf_counter()
            aligned = self.align_block.process(frames)
            dt = time.perf_counter() - t0
            self.last_cpu_s = time.thread_time() - c0
            out = np.asanyarray(aligned.get_depth_frame().get_data()).copy()
            return out, dt
        raise RuntimeError("rs.align: the software device never produced a depth + colour frameset")

    def close(self) -> None:
        for s in (self.depth_sensor, self.color_sensor):
            try:
                s.stop()
                s.close()
            except Exception:  # noqa: BLE001 — best-effort teardown of a software device
                pass


# ------------------------------------------------------------------------------------------------
# metrics and timing


def depth_errors(pred_m: np.ndarray, truth_m: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """MAE / RMSE (mm) on pixels where both are > 0 (and ``mask``), coverage of the truth's pixels."""
    both = (pred_m > 0) & (truth_m > 0)
    if mask is not None:
        both &= mask
    n_truth = int(np.count_nonzero(truth_m > 0))
    err = (pred_m[both].astype(np.float64) - truth_m[both].astype(np.float64)) * 1000.0
    return {"mae_mm": float(np.mean(np.abs(err))) if err.size else float("nan"),
            "rmse_mm": float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan"),
            "p95_abs_mm": float(np.percentile(np.abs(err), 95)) if err.size else float("nan"),
            "pixels": int(err.size),
            "coverage": float(np.count_nonzero((pred_m > 0) & (truth_m > 0))) / max(n_truth, 1)}


def median_times_s(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                   cpu_clock: Callable[[], float] = time.process_time) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds (all threads of the process by default) of
    ``repeats`` calls after ``warmup``; CPU time is what a loaded machine distorts least."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = cpu_clock(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_clock() - c0)
    return float(np.median(wall)), float(np.median(cpu))



def _print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="right" if h != header[0] else "left")
    for r in rows:
        t.add_row(*r)
    Console(width=170).print(t)


# ------------------------------------------------------------------------------------------------
# rig bench register


def crack_pixels(depth_m: np.ndarray) -> int:
    """Unknown pixels with at least 6 of their 8 neighbours known (splatting cracks, not holes)."""
    import cv2

    known = (depth_m > 0).astype(np.float32)
    neighbours = cv2.filter2D(known, -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - known
    return int(np.count_nonzero((known == 0) & (neighbours >= 6)))


def register_summary(t_ours_s: list[float], t_rs_s: list[float], res: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's checkable figures: the median of the per-run speed ratios rs.align / ours (each
    pair timed back to back on the same frame), our MAE and rs.align's (mm), the load average."""
    pairs = [r / o for o, r in zip(t_ours_s, t_rs_s)]
    return {"speed_over_rs_align": float(np.median(pairs)) if pairs else float("nan"),
            "mae_mm": res["ours_mae_mm"], "rs_align_mae_mm": res.get("rs_align_mae_mm", float("nan")),
            "runs": len(pairs), "load_average_1min": round(os.getloadavg()[0], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Reprojection accuracy + speed vs rs.align on the simulated rig's geometry.

    Per frame: each method runs ``repeats`` times, interleaved (ours, rs.align, ours, …) so that
    machine load hits both alike; the speed ratio is median(rs.align) / median(ours).
    """
    from rig.core.config import load_rig_config
    from registration.reproject import reproject_depth

    repeats = max(1, int(getattr(args, "repeats", 5)))
    quick = bool(getattr(args, "quick", False))
    cfg = load_rig_config("simulated")
    seeds = [0] if quick else [0, 1, 2]
    try:
        import pyrealsense2  # noqa: F401
        have_rs = True
    except ImportError:
        have_rs = False
    rows_ours: list[dict[str, float]] = []
    rows_rs: list[dict[str, float]] = []
    common: list[dict[str, float]] = []
    t_ours: list[float] = []
    t_rs: list[float] = []
    c_ours: list[float] = []  # thread CPU time: less sensitive to other processes on a loaded machine
    c_rs: list[float] = []
    for seed in seeds:
        depth_mm, truth_m, dslr, sensor, extr = scene_depths(cfg, seed)
        ours = reproject_depth(depth_mm, sensor, dslr, extr, depth_scale_m=0.001)  # also warms the caches
        e = depth_errors(ours, truth_m)
        e["cracks"] = crack_pixels(ours)
        rows_ours.append(e)
        aligner = RsAligner(sensor, dslr, extr, 0.001) if have_rs else None
        try:
            if aligner is not None:
                rs_m = aligner.align(depth_mm)[0].astype(np.float32) / 1000.0
                e = depth_errors(rs_m, truth_m)
                e["cracks"] = crack_pixels(rs_m)
                rows_rs.append(e)
                both = (ours > 0) & (rs_m > 0)
                common.append({"ours_mae": depth_errors(ours, truth_m, both)["mae_mm"],
                               "rs_mae": depth_errors(rs_m, truth_m, both)["mae_mm"],
                               "ours_rmse": depth_errors(ours, truth_m, both)["rmse_mm"],
                               "rs_rmse": depth_errors(rs_m, truth_m, both)["rmse_mm"]})
            for _ in range(repeats):
                c0, t0 = time.thread_time(), time.perf_counter()
                reproject_depth(depth_mm, sensor, dslr, extr, depth_scale_m=0.001)
                t_ours.append(time.perf_counter() - t0)
                c_ours.append(time.thread_time() - c0)
                if aligner is not None:
                    t_rs.append(aligner.align(depth_mm)[1])
                    c_rs.append(aligner.last_cpu_s)
        finally:
            if aligner is not None:
                aligner.close()

    def avg(rows: list[dict[str, float]], key: str) -> float:
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")

    res: dict[str, Any] = {
        "frames": len(seeds), "repeats": repeats,
        "sensor_px": [sensor.width, sensor.height], "output_px": [dslr.width, dslr.height],
        "ours_time_ms": 1000 * float(np.median(t_ours)),
        "ours_cpu_ms": 1000 * float(np.median(c_ours)),
        "ours_mae_mm": avg(rows_ours, "mae_mm"), "ours_rmse_mm": avg(rows_ours, "rmse_mm"),
        "ours_coverage": avg(rows_ours, "coverage"), "ours_cracks": avg(rows_ours, "cracks"),
    }
    if t_rs:
        res.update({
            "rs_align_time_ms": 1000 * float(np.median(t_rs)),
            "rs_align_cpu_ms": 1000 * float(np.median(c_rs)),
            "cpu_speed_ratio_vs_rs_align": float(np.median(c_rs)) / float(np.median(c_ours)),
            "rs_align_mae_mm": avg(rows_rs, "mae_mm"), "rs_align_rmse_mm": avg(rows_rs, "rmse_mm"),
            "rs_align_coverage": avg(rows_rs, "coverage"), "rs_align_cracks": avg(rows_rs, "cracks"),
            "common_ours_mae_mm": avg(common, "ours_mae"), "common_rs_mae_mm": avg(common, "rs_mae"),
            "common_ours_rmse_mm": avg(common, "ours_rmse"), "common_rs_rmse_mm": avg(common, "rs_rmse"),
            "speed_ratio_vs_rs_align": float(np.median(t_rs)) / float(np.median(t_ours)),
        })
    res["summary"] = register_summary(t_ours, t_rs, res)

    def row(name: str, p: str) -> tuple[str, ...]:
        return (name, f"{res[p + 'time_ms']:.2f}", f"{res[p + 'cpu_ms']:.2f}", f"{res[p + 'mae_mm']:.2f}",
                f"{res[p + 'rmse_mm']:.1f}",
                f"{res[p + 'coverage']:.4f}", f"{res[p + 'cracks']:.0f}",
                f"{res.get('common_' + p + 'mae_mm', res.get('common_ours_mae_mm', float('nan'))):.2f}")

    rows = [row("ours (reproject_depth)", "ours_")]
    if t_rs:
        rows.append(row("rs.align (software device)", "rs_align_"))
        rows[1] = rows[1][:-1] + (f"{res['common_rs_mae_mm']:.2f}",)
    _print_table(f"depth → DSLR {res['sensor_px'][0]}x{res['sensor_px'][1]} → {res['output_px'][0]}x"
                 f"{res['output_px'][1]}, {len(seeds)} frame(s) x {repeats} runs"
                 + (f"; speed ratio {res['speed_ratio_vs_rs_align']:.2f}x (CPU time "
                    f"{res['cpu_speed_ratio_vs_rs_align']:.2f}x)" if t_rs else "; pyrealsense2 missing"),
                 rows, ("method", "median ms", "median CPU ms", "MAE mm", "RMSE mm", "coverage", "cracks",
                        "MAE mm (common px)"))
    return res


# ------------------------------------------------------------------------------------------------
# rig bench fill


def _kinect_like_holes(depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mask of typical structured-light holes: blobs (dark/specular surfaces) and bands along
    depth discontinuities (projector shadows)."""
    import cv2

    h, w = depth_m.shape
    holes = np.zeros((h, w), np.uint8)
    for _ in range(10):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(4, w // 14)), int(rng.integers(4, h // 14)))
        cv2.ellipse(holes, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    d = depth_m.astype(np.float32)
    edge = np.abs(cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3)) > 0.15 * np.maximum(d, 1e-3)
    holes |= cv2.dilate(edge.astype(np.uint8), np.ones((3, 5), np.uint8))
    return holes.astype(bool)


def fill_bench_frames(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB, depth m) frames: the real DFD indoor set when present, else analytic scenes."""
    import cv2

    from rig.core.datasets import shared_data_root
    from rig.core.imageio import read_depth_m, read_rgb

    n = 1 if quick else 3
    root = shared_data_root()
    frames: list[tuple[str, np.ndarray, np.ndarray]] = []
    indoor = root / "dfd_indoor" / "train"
    if indoor.is_dir():
        from rig.core.datasets import locate_dfd_splits, pair_dfd_split

        triplets, _ = pair_dfd_split(locate_dfd_splits(indoor)[0])
        for sid, _n2, n8, dep in triplets[::max(1, len(triplets) // n)][:n]:
            frames.append((f"dfd_indoor/{sid}", read_rgb(n8), read_depth_m(dep)))
    else:
        from rig.core.config import load_rig_config

        cfg = load_rig_config("simulated")
        dslr, _, _ = sim_rig_geometry(cfg)
        for seed in range(n):
            depth, ids = raycast_depth(analytic_scene(seed), dslr, None, return_ids=True)
            rng = np.random.default_rng(seed)
            colours = rng.integers(30, 230, (ids.max() + 2, 3))
            rgb = colours[ids + 1].astype(np.float32) + rng.normal(0, 4, colours[ids + 1].shape)
            frames.append((f"analytic/{seed}", np.clip(rgb, 0, 255).astype(np.uint8), depth.astype(np.float32)))
    if quick:
        frames = [(n_, cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
                   cv2.resize(d, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_NEAREST)) for n_, rgb, d in frames]
    return frames


def run_fill(args: argparse.Namespace) -> dict[str, Any]:
    """Reference (NYU, spsolve) vs fast colorization fill: held-out RMSE and median time.

    Per frame and hole pattern: 10 % of the measured pixels are hidden (seeded); both fills run
    ``--repeats`` times on the rest; RMSE on the hidden pixels (and on the synthetic holes where
    the real depth is known) and the median times are reported; speedup = ref / fast time.
    """
    from registration.fill import fill_colorization_fast, fill_colorization_reference

    repeats = max(1, int(getattr(args, "repeats", 5)))
    quick = bool(getattr(args, "quick", False))
    rows: list[dict[str, Any]] = []
    for name, rgb, depth in fill_bench_frames(quick):
        rng = np.random.default_rng(0)
        for pattern in ("held-out only", "held-out + sensor holes"):
            measured = depth > 0
            holes = _kinect_like_holes(depth, rng) & measured if pattern != "held-out only" else np.zeros_like(measured)
            measured &= ~holes
            held = measured & (rng.random(depth.shape) < 0.10)
            inp = measured & ~held
            d_in = np.where(inp, depth, 0.0).astype(np.float32)
            ref = fill_colorization_reference(rgb, d_in, inp)
            fast = fill_colorization_fast(rgb, d_in, inp)
            t_ref, c_ref = median_times_s(lambda: fill_colorization_reference(rgb, d_in, inp), repeats, warmup=0)
            t_fast, c_fast = median_times_s(lambda: fill_colorization_fast(rgb, d_in, inp), repeats)

            def rmse(x: np.ndarray, m: np.ndarray) -> float:
                return float(np.sqrt(np.mean((x[m] - depth[m]) ** 2)) * 1000) if m.any() else float("nan")

            rows.append({"frame": name, "pattern": pattern, "size": f"{depth.shape[1]}x{depth.shape[0]}",
                         "unknown_fraction": float(1 - inp.mean()),
                         "ref_time_s": t_ref, "fast_time_s": t_fast, "speedup": t_ref / t_fast,
                         "ref_cpu_s": c_ref, "fast_cpu_s": c_fast, "cpu_speedup": c_ref / c_fast,
                         "max_abs_diff_mm": float(np.abs(fast - ref).max() * 1000),
                         "ref_heldout_rmse_mm": rmse(ref, held), "fast_heldout_rmse_mm": rmse(fast, held),
                         "ref_hole_rmse_mm": rmse(ref, holes), "fast_hole_rmse_mm": rmse(fast, holes)})
    res: dict[str, Any] = {
        "repeats": repeats, "rows": rows,
        "median_speedup": float(np.median([r["speedup"] for r in rows])),
        "min_speedup": float(np.min([r["speedup"] for r in rows])),
        "median_cpu_speedup": float(np.median([r["cpu_speedup"] for r in rows])),
        "min_cpu_speedup": float(np.min([r["cpu_speedup"] for r in rows])),
        "ref_heldout_rmse_mm": float(np.mean([r["ref_heldout_rmse_mm"] for r in rows])),
        "fast_heldout_rmse_mm": float(np.mean([r["fast_heldout_rmse_mm"] for r in rows])),
    }
    res["summary"] = {"worst_frame_speedup": res["min_speedup"], "median_speedup": res["median_speedup"],
                      "worst_frame_cpu_speedup": res["min_cpu_speedup"], "frames": len(rows),
                      "load_average_1min": round(os.getloadavg()[0], 2)}
    _print_table(f"hole filling (colorization): reference spsolve vs fast, median of {repeats}; "
                 f"median speedup {res['median_speedup']:.1f}x (CPU time {res['median_cpu_speedup']:.1f}x)",
                 [(r["frame"][-30:], r["pattern"], r["size"], f"{r['unknown_fraction']:.1%}",
                   f"{r['ref_time_s']:.2f} / {r['ref_cpu_s']:.2f}", f"{r['fast_time_s']:.3f} / {r['fast_cpu_s']:.3f}",
                   f"{r['speedup']:.1f}x / {r['cpu_speedup']:.1f}x",
                   f"{r['ref_heldout_rmse_mm']:.2f}", f"{r['fast_heldout_rmse_mm']:.2f}",
                   f"{r['ref_hole_rmse_mm']:.1f}", f"{r['fast_hole_rmse_mm']:.1f}", f"{r['max_abs_diff_mm']:.2f}")
                  for r in rows],
                 ("frame", "holes", "size", "unknown", "ref s (wall/CPU)", "fast s (wall/CPU)", "speedup",
                  "held-out RMSE ref mm", "held-out RMSE fast mm", "holes RMSE ref", "holes RMSE fast",
                  "max |fast-ref| mm"))
    return res
