"""Depth sensor → DSLR reprojection with a z-buffer and per-pixel footprint splatting.

Conventions (see :mod:`rig.core.records`): OpenCV pixel centres — pixel (u, v) has its centre at the
integer coordinates (u, v) and covers [u − ½, u + ½] × [v − ½, v + ½]. Intrinsics of the target
must already be the ones *at the output size* (``Intrinsics.scaled``). ``Extrinsics`` maps the
sensor frame to the DSLR frame: X_dslr = R·X_sensor + t (metres). Depth is the z coordinate in
metres (0 = unknown) — in the sensor frame on input and **in the DSLR frame** on output (unlike
librealsense's ``rs.align``, which copies the sensor's z unchanged into the colour frame).

Method (the same footprint idea as librealsense's ``align``): each valid sensor pixel is lifted to
3-D through its undistorted ray, moved into the DSLR frame and projected; its square footprint is
mapped to an axis-aligned box in the target (local Jacobian of the rotated ray field times z/z′),
and every target pixel whose centre lies inside the box (grown by ``grow_px``) receives the point's
DSLR-frame depth. Overlaps are resolved by a z-buffer — the nearest surface wins — so a finer target
has no cracks, occluded target pixels keep the occluder's depth, and target pixels nothing lands on
(unseen, or hidden from the sensor) stay 0.

Speed notes (NumPy 2.4 / OpenCV on the 640x480 → 645x432 case, see ``rig bench register``; the
time goes to memory traffic more than to arithmetic):

* the culled sensor window is processed in strips of ~48 k points, so that a strip's float32
  temporaries stay in the L2 cache; most steps write into buffers they no longer need;
* without distortion the rays are separable: Z′ and the projections come from z·x, z·y and z
  with scalar coefficients (no per-pixel tables to stream), constant footprint tables are scalars;
* the z-buffer is a scatter-min (``np.minimum.at``, ~1.5 ns a write) into two padded planes —
  boxes 1 or 2 px tall — at each box's top row (two writes, top-left and top-right); the planes'
  rows are set to +inf band by band just before a strip writes there, and one pass of minima
  over each cell and the one above it (second plane) combines them; boxes over 2 px (rare when
  the target is < 2x finer) add their other cells at the end;
* invalid points carry +inf and boxes around the origin: no masks in the gap closing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rig.core.records import Extrinsics, Intrinsics

_MAX_BOX_PX = 16  # footprints larger than this (degenerate geometry, z′ ≪ z) are clipped


def _has_distortion(k: Intrinsics) -> bool:
    return any(abs(c) > 0.0 for c in k.dist)


def pixel_rays(k: Intrinsics) -> np.ndarray:
    """Undistorted normalised rays (x, y) of every pixel centre: (H, W, 2) float64, z = 1."""
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    if not _has_distortion(k):
        return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy], axis=-1)
    import cv2

    pts = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, k.matrix(), np.asarray(k.dist, dtype=np.float64), None, None,
                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12))
    return und.reshape(k.height, k.width, 2)


def distort_normalised(x: np.ndarray, y: np.ndarray, dist: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's distortion model (k1, k2, p1, p2[, k3[, k4, k5, k6]]) applied to normalised coords."""
    d = list(dist) + [0.0] * max(0, 8 - len(dist))
    k1, k2, p1, p2, k3, k4, k5, k6 = d[:8]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


@dataclass(frozen=True, eq=False)  # hashed by identity: instances are cached per geometry
class ReprojectionTables:
    """Everything about a (sensor, DSLR, extrinsics) geometry that does not depend on the depth.

    With a = R·[x, y, 1] the rotated ray of a sensor pixel, a point at sensor depth z lands at
    Z′ = z·a_z + t_z and u′ = (z·b_u + c_u)/Z′, v′ = (z·b_v + c_v)/Z′ (undistorted target), where
    b_u = fx′·a_x + cx′·a_z, c_u = fx′·t_x + cx′·t_z (same for v). Its footprint half-size in target
    pixels is (half_u, half_v)·z/Z′. Per-pixel tables are (Hs, Ws) float32.
    Without distortion (either camera) the rays are separable, x = ray_x[column], y = ray_y[row]
    ((1, Ws) and (Hs, 1) float32), and Z′ − t_z, z·b_u, z·b_v are k_z, k_u, k_v · (z·x, z·y, z).
    """

    a_x: np.ndarray
    a_y: np.ndarray
    a_z: np.ndarray
    b_u: np.ndarray
    b_v: np.ndarray
    half_u: np.ndarray
    half_v: np.ndarray
    t: tuple[float, float, float]
    c_u: float
    c_v: float
    min_a_z: float
    ray_x: np.ndarray | None = None
    ray_y: np.ndarray | None = None
    k_z: tuple[float, float, float] = (0.0, 0.0, 1.0)
    k_u: tuple[float, float, float] = (0.0, 0.0, 0.0)
    k_v: tuple[float, float, float] = (0.0, 0.0, 0.0)


@lru_cache(maxsize=8)
def reprojection_tables(src: Intrinsics, dst: Intrinsics, src_to_dst: Extrinsics) -> ReprojectionTables:
    """Precompute (and cache) the ray tables for a geometry; see :class:`ReprojectionTables`."""
    rays = pixel_rays(src)
    r = np.asarray(src_to_dst.rotation, dtype=np.float64)
    t = np.asarray(src_to_dst.translation_m, dtype=np.float64)
    ray3 = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], axis=-1)
    a = ray3 @ r.T  # (H, W, 3) rotated rays
    a_x, a_y, a_z = a[..., 0], a[..., 1], a[..., 2]
    # footprint of one sensor pixel in target pixels at z′ = z: bounding box of the rotated square
    dax_du = np.gradient(a_x, axis=1) if src.width > 1 else np.full_like(a_x, 1.0 / src.fx)
    dax_dv = np.gradient(a_x, axis=0) if src.height > 1 else np.zeros_like(a_x)
    day_du = np.gradient(a_y, axis=1) if src.width > 1 else np.zeros_like(a_y)
    day_dv = np.gradient(a_y, axis=0) if src.height > 1 else np.full_like(a_y, 1.0 / src.fy)
    half_u = 0.5 * dst.fx * (np.abs(dax_du) + np.abs(dax_dv))
    half_v = 0.5 * dst.fy * (np.abs(day_du) + np.abs(day_dv))
    f32 = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
    separable = {}
    if not _has_distortion(src) and not _has_distortion(dst):
        ku, kv = dst.fx * r[0] + dst.cx * r[2], dst.fy * r[1] + dst.cy * r[2]  # rows of K′·R
        separable = dict(ray_x=f32(rays[:1, :, 0]), ray_y=f32(rays[:, :1, 1]), k_z=tuple(float(c) for c in r[2]),
                         k_u=tuple(float(c) for c in ku), k_v=tuple(float(c) for c in kv))
    return ReprojectionTables(
        a_x=f32(a_x), a_y=f32(a_y), a_z=f32(a_z),
        b_u=f32(dst.fx * a_x + dst.cx * a_z), b_v=f32(dst.fy * a_y + dst.cy * a_z),
        half_u=f32(half_u), half_v=f32(half_v),
        t=(float(t[0]), float(t[1]), float(t[2])),
        c_u=float(dst.fx * t[0] + dst.cx * t[2]), c_v=float(dst.fy * t[1] + dst.cy * t[2]),
        min_a_z=float(a_z.min()), **separable)


def sensor_window(src: Intrinsics, dst: Intrinsics, src_to_dst: Extrinsics,
                  min_depth_m: float) -> tuple[int, int, int, int]:
    """Rows/columns (r0, r1, c0, c1) of the sensor image that can land in the target (culling).

    A point seen by a target pixel at target depth d ∈ [min_depth_m, ∞) projects into the sensor
    on the segment between its projections at d and at infinity; the bounding box of those
    segments for samples along the target's border, grown by the largest footprint, holds every
    sensor pixel that can touch the target. min_depth_m <= 1 cm gives the whole sensor image.
    """
    if not min_depth_m > 0.01:
        return (0, src.height, 0, src.width)
    q = 2.0 ** (math.floor(math.log2(min_depth_m) * 8.0) / 8.0)  # rounded down: conservative
    return _sensor_window(src, dst, src_to_dst, q)


@lru_cache(maxsize=256)
def _sensor_window(src: Intrinsics, dst: Intrinsics, src_to_dst: Extrinsics,
                   min_depth_m: float) -> tuple[int, int, int, int]:
    full = (0, src.height, 0, src.width)
    n = 24
    xs = np.linspace(-0.5, dst.width - 0.5, n)
    ys = np.linspace(-0.5, dst.height - 0.5, n)
    border = np.concatenate([np.stack([xs, np.full(n, -0.5)], 1), np.stack([xs, np.full(n, dst.height - 0.5)], 1),
                             np.stack([np.full(n, -0.5), ys], 1), np.stack([np.full(n, dst.width - 0.5), ys], 1)])
    if _has_distortion(dst):
        import cv2

        rays = cv2.undistortPoints(border.reshape(-1, 1, 2), dst.matrix(),
                                   np.asarray(dst.dist, np.float64)).reshape(-1, 2)
    else:
        rays = np.stack([(border[:, 0] - dst.cx) / dst.fx, (border[:, 1] - dst.cy) / dst.fy], 1)
    r = np.asarray(src_to_dst.rotation, dtype=np.float64)
    t = np.asarray(src_to_dst.translation_m, dtype=np.float64)
    d3 = np.concatenate([rays, np.ones((len(rays), 1))], 1)  # target-frame directions, z = 1
    pts = [(d3 * depth - t) @ r for depth in min_depth_m * np.array([1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0])]
    pts.append(d3 @ r * 1e6)  # ~infinity; X_src = Rᵀ(X_dst − t)
    p = np.concatenate(pts)
    if np.any(p[:, 2] <= 1e-6):
        return full
    uv = project_points(p, src)
    if not np.all(np.isfinite(uv)):
        return full
    margin = int(np.ceil(_MAX_BOX_PX / 2 * max(src.fx / dst.fx, src.fy / dst.fy))) + 2
    c0 = max(int(np.floor(uv[:, 0].min())) - margin, 0)
    c1 = min(int(np.ceil(uv[:, 0].max())) + margin + 1, src.width)
    r0 = max(int(np.floor(uv[:, 1].min())) - margin, 0)
    r1 = min(int(np.ceil(uv[:, 1].max())) + margin + 1, src.height)
    if r1 <= r0 or c1 <= c0:
        return (0, 0, 0, 0)
    return r0, r1, c0, c1


def _min_positive(depth: np.ndarray) -> float:
    """Smallest positive value of a depth map (uint16 raw or float), inf when none."""
    if depth.dtype == np.uint16:
        m = int((depth - np.uint16(1)).min()) + 1  # 0 wraps to 65535: the min of the non-zeros
        if m == 65536:  # all zero, or all 65535
            return 65535.0 if np.any(depth) else float("inf")
        return float(m)
    d = np.where(depth > 0, depth, np.inf)
    return float(np.nanmin(d)) if d.size else float("inf")


_PAD = _MAX_BOX_PX + 2  # the z-buffer planes are padded so that no footprint box needs clipping
_STRIP_PX = 48_000  # points per strip: a strip's temporaries stay in the CPU's L2 cache
_F32 = np.float32


@dataclass(frozen=True)
class _WindowTables:
    """The tables of :class:`ReprojectionTables` inside a sensor window, contiguous: per-pixel
    (h, w) float32 arrays, (1, w) / (h, 1) ray vectors, or float32 scalars for constant tables."""

    a_z: Any
    b_u: Any
    b_v: Any
    half_u: Any
    half_v: Any
    a_x: Any
    a_y: Any
    ray_x: Any
    ray_y: Any
    max_half: float  # the largest footprint factor max(half_u, half_v)

    def rows(self, r: int, e: int) -> "_WindowTables":
        """Rows r:e of the window (scalars and the column vector ray_x stay as they are)."""
        cut = {k: (v[r:e] if np.ndim(v) == 2 and (k != "ray_x") else v) for k, v in vars(self).items()}
        return _WindowTables(**cut)


@lru_cache(maxsize=32)
def _window_tables(tab: ReprojectionTables, win: tuple[int, int, int, int]) -> _WindowTables:
    """The tables inside a sensor window (see :class:`_WindowTables`): separable rays when the
    sensor has no distortion, constant footprint tables as scalars — less memory to stream."""
    r0, r1, c0, c1 = win
    cut = lambda t: np.ascontiguousarray(t[r0:r1, c0:c1])  # noqa: E731
    half_u, half_v = cut(tab.half_u), cut(tab.half_v)
    max_half = float(max(half_u.max(), half_v.max()))
    half_u, half_v = (h.reshape(-1)[0] if h.min() == h.max() else h for h in (half_u, half_v))
    if tab.ray_x is not None and tab.ray_y is not None:
        return _WindowTables(None, None, None, half_u, half_v, None, None, np.ascontiguousarray(tab.ray_x[:, c0:c1]),
                             np.ascontiguousarray(tab.ray_y[r0:r1]), max_half)
    return _WindowTables(cut(tab.a_z), cut(tab.b_u), cut(tab.b_v), half_u, half_v, cut(tab.a_x), cut(tab.a_y),
                         None, None, max_half)


def reproject_depth(depth: np.ndarray, src: Intrinsics, dst: Intrinsics, src_to_dst: Extrinsics, *,
                    depth_scale_m: float = 0.001, grow_px: float = 0.05,
                    close_cracks_px: float = 1.0, min_depth_m: float = 1e-3) -> np.ndarray:
    """Reproject a sensor depth map into another camera (the DSLR at output size).

    depth: (Hs, Ws) float metres, or uint16 raw units times ``depth_scale_m``; 0/NaN = unknown.
    src, dst: intrinsics of the sensor and of the target (its size sets the output size).
    src_to_dst: X_dst = R·X_src + t. grow_px: each footprint box is grown by this much on every
    side before sampling target pixel centres (0.5 ≈ the rounding rs.align uses; at least 1e-6).
    close_cracks_px: gaps between neighbouring footprints narrower than this (target px) are
    closed — steep slopes and depth quantisation open them; wider gaps are disocclusions.
    Returns (Hd, Wd) float32 depth in metres **in the target frame**, 0 where unknown (unseen,
    occluded from the sensor, or behind the target camera).
    """
    if depth.ndim != 2 or depth.shape != (src.height, src.width):
        raise ValueError(f"depth shape {depth.shape} does not match the sensor intrinsics "
                         f"{src.width}x{src.height}")
    tab = reprojection_tables(src, dst, src_to_dst)
    scale_m = depth_scale_m if depth.dtype == np.uint16 else 1.0
    zmin = _min_positive(depth) * scale_m
    r0, r1, c0, c1 = (0, 0, 0, 0)
    if np.isfinite(zmin):
        # smallest possible target-frame depth of any point (|a| >= a_z, |Δz| <= |t|)
        r0, r1, c0, c1 = sensor_window(src, dst, src_to_dst, zmin * tab.min_a_z - math.hypot(*tab.t))
    if r1 <= r0 or c1 <= c0:
        return np.zeros((dst.height, dst.width), np.float32)
    return _splat(depth[r0:r1, c0:c1], scale_m, tab, (r0, r1, c0, c1), dst, max(grow_px, 1e-6), close_cracks_px,
                  min_depth_m)


def _depth_strip_m(raw: np.ndarray, scale_m: float) -> np.ndarray:
    """Sensor depth rows as float32 metres, NaN/inf -> 0 (raw: uint16 units of scale_m, or metres)."""
    if raw.dtype == np.uint16:
        z = raw.astype(np.float32)
        z *= _F32(scale_m)
        return z
    return np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _footprint_edges(z: np.ndarray, wt: _WindowTables, tab: ReprojectionTables, dst: Intrinsics, grow_px: float,
                     min_depth_m: float) -> tuple[np.ndarray, ...]:
    """Target-frame depth z′ (m, +inf for invalid points) and footprint box edges x0, x1, y0, y1
    (target px), all float32 (h, w) like the sensor depth rows ``z`` (m, float32, overwritten)
    and their tables ``wt``. Every edge is finite.

    Invalid points (z or z′ <= min_depth_m) get boxes of ±grow_px (> 0) around (0, 0): closing
    a gap towards one never reaches pixel 0, and what they write (+inf) is nothing.
    """
    import cv2

    lim = _F32(_MAX_BOX_PX / 2)
    if wt.ray_x is not None:  # separable rays: (z·x, z·y, z) times the rows of R and K′·R
        zx = np.multiply(z, wt.ray_x)
        zy = np.multiply(z, wt.ray_y)
        zp = cv2.scaleAdd(z, tab.k_z[2], cv2.addWeighted(zx, tab.k_z[0], zy, tab.k_z[1], tab.t[2]))
        u = cv2.scaleAdd(z, tab.k_u[2], cv2.addWeighted(zx, tab.k_u[0], zy, tab.k_u[1], tab.c_u))
        v = cv2.addWeighted(zx, tab.k_v[0], zy, tab.k_v[1], tab.c_v, dst=zy)
        cv2.scaleAdd(z, tab.k_v[2], v, dst=v)
    else:
        zp = np.multiply(z, wt.a_z)
        zp += _F32(tab.t[2])  # depth in the target frame
    valid = cv2.threshold(cv2.min(z, zp), min_depth_m, 1.0, cv2.THRESH_BINARY)[1]  # 1 valid, 0 invalid
    cv2.max(zp, max(min_depth_m, 1e-30), dst=zp)  # > 0 everywhere
    inv = cv2.divide(valid, zp)  # 1/z′ where valid, 0 where invalid
    cv2.divide(zp, valid, dst=zp)  # +inf where invalid (OpenCV divides floats as IEEE 754 does)
    if wt.ray_x is not None:
        u *= inv  # u′ = (z·b_u + c_u)/z′
        v *= inv
        scale = np.multiply(z, inv, out=valid)  # z / z′: the footprint grows when the target camera is nearer
    elif _has_distortion(dst):
        scale = np.multiply(z, inv)
        xd, yd = distort_normalised(wt.a_x * scale + _F32(tab.t[0]) * inv, wt.a_y * scale + _F32(tab.t[1]) * inv,
                                    dst.dist)
        u = np.asarray((_F32(dst.fx) * xd + _F32(dst.cx)) * valid, dtype=np.float32)
        v = np.asarray((_F32(dst.fy) * yd + _F32(dst.cy)) * valid, dtype=np.float32)
    else:
        scale = np.multiply(z, inv, out=valid)
        u = cv2.scaleAdd(inv, tab.c_u, np.multiply(wt.b_u, scale))
        v = cv2.scaleAdd(inv, tab.c_v, np.multiply(wt.b_v, scale))
    # footprints are capped at _MAX_BOX_PX and every box must fit the padded z-buffer: far-away
    # points are clamped into the padding, where their writes are cropped away
    np.clip(u, -lim, _F32(dst.width - 1) + lim, out=u)
    np.clip(v, -lim, _F32(dst.height - 1) + lim, out=v)
    cv2.min(scale, (float(lim) - grow_px) / max(wt.max_half, 1e-6), dst=scale)
    hu, hv = (_scaled_plus(half, scale, grow_px, out) for half, out in ((wt.half_u, inv), (wt.half_v, scale)))
    x0 = np.subtract(u, hu, out=z)  # z is no longer needed
    x1 = np.add(u, hu, out=u)
    y0 = np.subtract(v, hv, out=hu)
    y1 = np.add(v, hv, out=v)
    return zp, x0, x1, y0, y1


def _scaled_plus(a: Any, x: np.ndarray, b: float, out: np.ndarray) -> np.ndarray:
    """a·x + b into ``out`` (may be ``x``); a: a float32 scalar or an array like x."""
    import cv2

    if np.ndim(a) == 0:
        return cv2.addWeighted(x, float(a), x, 0.0, b, dst=out)
    np.multiply(a, x, out=out)
    out += _F32(b)
    return out


def _splat(raw: np.ndarray, scale_m: float, tab: ReprojectionTables, win: tuple[int, int, int, int],
           dst: Intrinsics, grow_px: float, close_cracks_px: float, min_depth_m: float) -> np.ndarray:
    """Z-buffer the footprint boxes of the sensor window ``raw`` (depth in units of ``scale_m``)
    into the target: (Hd, Wd) float32 depth in metres, 0 = nothing landed.

    The window is processed in strips of rows small enough to stay in cache; each strip computes
    one row more than it keeps, whose near edges close the gaps below its last row.
    """
    w_out, h_out = dst.width, dst.height
    zbuf = _ZBuffer(np.empty((2, h_out + 2 * _PAD, w_out + 2 * _PAD), dtype=np.float32))
    wt = _window_tables(tab, win)
    bigs: list[tuple[np.ndarray, ...]] = []  # boxes over 2 px wide or tall, written last
    rows, cols = raw.shape
    step = max(1, _STRIP_PX // max(cols, 1))
    for r in range(0, rows, step):
        n = min(step, rows - r)
        e = min(r + step + 1, rows)
        zp, x0, x1, y0, y1 = _footprint_edges(_depth_strip_m(raw[r:e], scale_m), wt.rows(r, e), tab, dst, grow_px,
                                              min_depth_m)
        if close_cracks_px > 0:
            _close_gaps(x0[:n], x1[:n], close_cracks_px, axis=1)
            _close_gaps(y0, y1, close_cracks_px, axis=0)
        big = _scatter_boxes(zbuf, zp[:n], x0[:n], x1[:n], y0[:n], y1[:n])
        if big is not None:
            bigs.append(big)
    if bigs:
        _splat_big_boxes(zbuf.planes, *(np.concatenate(b) for b in zip(*bigs)))
    zbuf.cover(_PAD - 1, _PAD + h_out)  # the rows the combination reads
    return _combine_planes(zbuf.planes, h_out, w_out)


@dataclass
class _ZBuffer:
    """The padded z-buffer planes (2, Hp, Wp) float32 of 1 and 2 px tall boxes, set to +inf
    lazily, band by band just before a strip writes there (still in cache when it does)."""

    planes: np.ndarray
    lo: int = 0  # rows [lo, hi) hold +inf or written depths
    hi: int = 0

    def cover(self, r0: int, r1: int) -> None:
        """Make padded rows [r0, r1) ready for writing (+inf where not yet written)."""
        if self.hi <= self.lo:
            self.lo = self.hi = r0
        if r0 < self.lo:
            self.planes[:, r0:self.lo] = np.inf
            self.lo = r0
        if r1 > self.hi:
            self.planes[:, self.hi:r1] = np.inf
            self.hi = r1


def _scatter_boxes(zbuf: _ZBuffer, zp: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray,
                   y1: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Scatter-min each box's z′ (m) into the z-buffer planes of 1 and 2 px tall boxes, at its top
    row: the top-left cell, and the top-right one when the box is 2 px wide.

    The edges (target px, float32 (h, w), overwritten) select the target pixel centres c with
    edge0 <= c <= edge1; empty boxes write +inf. Boxes over 2 px wide or tall are returned
    (see :func:`_splat_big_boxes`) for their other cells. Index arithmetic is done in float32
    (exact below 2^24).
    """
    import cv2

    planes = zbuf.planes
    _, hp, wp = planes.shape
    plane = hp * wp
    np.ceil(x0, out=x0)
    np.floor(x1, out=x1)
    np.ceil(y0, out=y0)
    np.floor(y1, out=y1)
    zbuf.cover(int(y0.min()) + _PAD, max(int(y0.max()), int(y1.max())) + _PAD + 1)
    dw = np.subtract(x1, x0, out=x1)  # box width − 1 (< 0: empty, e.g. a target coarser than the sensor)
    dh = np.subtract(y1, y0, out=y1)
    zz = zp.ravel()
    if min(float(dw.min()), float(dh.min())) < 0:
        nonempty = cv2.threshold(cv2.min(dw, dh), -0.5, 1.0, cv2.THRESH_BINARY)[1]
        zz = cv2.divide(zp, nonempty, dst=nonempty).ravel()  # +inf for empty boxes (and invalid points)
    big = None
    wide_x, wide_y = float(dw.max()) >= 2, float(dh.max()) >= 2
    if wide_x or wide_y:
        big = np.flatnonzero((dw.ravel() >= 2) | (dh.ravel() >= 2) if wide_x and wide_y
                             else (dw if wide_x else dh).ravel() >= 2)
        big_dw, big_dh = dw.ravel()[big], dh.ravel()[big]
    if planes.size < 2 ** 24:  # flat indices in float32: exact
        idx = cv2.addWeighted(y0, float(wp), x0, 1.0, float(_PAD * wp + _PAD), dst=y0)
        as_int = np.int32
    else:
        idx = y0.astype(np.float64) * wp + x0 + (_PAD * wp + _PAD)
        as_int = np.int64
    idx += cv2.threshold(dh, 0.5, float(plane), cv2.THRESH_BINARY, dst=dh)[1]  # the plane of 2 px tall boxes
    idx = idx.ravel()
    z_buf = planes.reshape(-1)
    np.minimum.at(z_buf, idx.astype(as_int), zz)  # the top-left cell
    idx += cv2.threshold(dw, 0.5, 1.0, cv2.THRESH_BINARY, dst=dw)[1].ravel()
    np.minimum.at(z_buf, idx.astype(as_int), zz)  # the top-right cell (= top-left if 1 px wide)
    if big is None:
        return None
    return idx[big].astype(np.intp), big_dw, big_dh, zz[big]


def _splat_big_boxes(planes: np.ndarray, top_right: np.ndarray, dw: np.ndarray, dh: np.ndarray,
                     zz: np.ndarray) -> None:
    """All cells of the (few) boxes over 2 px wide or tall, scatter-min'ed into the plane of 1 px
    tall boxes of ``planes`` (2, Hp, Wp). top_right: flat indices of the top-right cell of their
    top-left 2x2, in either plane; dw, dh: box size − 1 (px); zz: their z′ (m)."""
    _, hp, wp = planes.shape
    bw = dw.astype(np.intp)[:, None, None]
    bh = dh.astype(np.intp)[:, None, None]
    top_left = (top_right % (hp * wp))[:, None, None] - (bw >= 1)
    cols = np.minimum(bw, np.arange(int(bw.max()) + 1))  # (k, 1, W): the last column repeats
    rows = np.minimum(bh, np.arange(int(bh.max()) + 1)[:, None])  # (k, H, 1)
    cells = top_left + cols + rows * wp
    np.minimum.at(planes.reshape(-1)[:hp * wp], cells.reshape(-1), np.repeat(zz, cells[0].size))


def _combine_planes(planes: np.ndarray, h_out: int, w_out: int) -> np.ndarray:
    """(Hd, Wd) depth (0 = nothing landed) from the padded z-buffer planes (2, Hp, Wp) of 1 and
    2 px tall boxes: a cell takes the minimum of the first plane's cell and of the second's cell
    and the one above it; in strips of rows."""
    import cv2

    out = np.empty((h_out, w_out), np.float32)
    step = max(1, _STRIP_PX // max(w_out, 1))
    big = float(np.finfo(np.float32).max)
    for r in range(0, h_out, step):
        e = min(r + step, h_out)
        q = planes[:, _PAD - 1 + r:_PAD + e, _PAD:_PAD + w_out]  # one extra row above
        o = out[r:e]
        cv2.min(q[1, 1:], q[1, :-1], dst=o)
        cv2.min(o, q[0, 1:], dst=o)
        cv2.threshold(o, big, 0.0, cv2.THRESH_TOZERO_INV, dst=o)  # inf -> 0
    return out


def _close_gaps(lo: np.ndarray, hi: np.ndarray, max_gap_px: float, axis: int) -> None:
    """Stretch each footprint's far edge to its next neighbour's near edge when the gap is small.

    Neighbouring sensor pixels on one surface but at slightly different depths (steep slopes,
    depth quantisation) project with sub-pixel gaps between their footprints, through which a
    farther surface would show or a crack would open. A gap in (0, ``max_gap_px``) target pixels
    is closed from the near side; larger gaps are disocclusions and stay open. In place, (H, W)
    float32 edges in target px along ``axis`` (1: x, 0: y).
    """
    import cv2

    h, w = lo.shape
    step = 1 if axis == 1 else w
    if lo.shape[axis] < 2:
        return
    lo_f, hi_f = lo.reshape(-1), hi.reshape(-1)  # rows are contiguous: neighbours are `step` apart
    cur = hi_f[:-step]
    gap = np.subtract(lo_f[step:], cur)
    if axis == 1:
        gap[w - 1::w] = 0.0  # a row's last pixel and the next row's first are no neighbours
    cv2.threshold(gap, 0.0, 0.0, cv2.THRESH_TOZERO, dst=gap)  # gap if gap > 0 else 0
    below = float(np.nextafter(np.float32(max_gap_px), np.float32(0)))
    cv2.threshold(gap, below, 0.0, cv2.THRESH_TOZERO_INV, dst=gap)  # ... and < max_gap_px
    cur += gap


def reproject_depth_reference(depth_m: np.ndarray, src: Intrinsics, dst: Intrinsics,
                              src_to_dst: Extrinsics, grow_px: float = 0.25) -> np.ndarray:
    """Plain-loop version of :func:`reproject_depth` (exact corner projection per pixel).

    For tests on tiny images only: projects the four corners of each sensor pixel's footprint,
    takes their bounding box and writes the DSLR-frame depth with a z-buffer.
    """
    out = np.zeros((dst.height, dst.width), dtype=np.float64)
    rays = pixel_rays(src)
    r = np.asarray(src_to_dst.rotation)
    t = np.asarray(src_to_dst.translation_m)
    for v in range(src.height):
        for u in range(src.width):
            z = float(depth_m[v, u])
            if not z > 0:
                continue
            x, y = rays[v, u]
            p = r @ np.array([x * z, y * z, z]) + t
            if p[2] <= 1e-3:
                continue
            # corners of the footprint, deprojected at the pixel's depth (rays of u±½, v±½)
            corners = []
            for cu, cv_ in ((u - 0.5, v - 0.5), (u + 0.5, v - 0.5), (u - 0.5, v + 0.5), (u + 0.5, v + 0.5)):
                cx_n = x + (cu - u) * _ray_step(rays, u, v, 0)
                cy_n = y + (cv_ - v) * _ray_step(rays, u, v, 1)
                q = r @ np.array([cx_n * z, cy_n * z, z]) + t
                xn, yn = q[0] / q[2], q[1] / q[2]
                if _has_distortion(dst):
                    xn, yn = distort_normalised(np.array(xn), np.array(yn), dst.dist)
                corners.append((dst.fx * float(xn) + dst.cx, dst.fy * float(yn) + dst.cy))
            cs = np.array(corners)
            x0 = max(int(np.ceil(cs[:, 0].min() - grow_px)), 0)
            x1 = min(int(np.floor(cs[:, 0].max() + grow_px)), dst.width - 1)
            y0 = max(int(np.ceil(cs[:, 1].min() - grow_px)), 0)
            y1 = min(int(np.floor(cs[:, 1].max() + grow_px)), dst.height - 1)
            for yy in range(y0, y1 + 1):
                for xx in range(x0, x1 + 1):
                    if out[yy, xx] == 0 or p[2] < out[yy, xx]:
                        out[yy, xx] = p[2]
    return out.astype(np.float32)


def _ray_step(rays: np.ndarray, u: int, v: int, axis: int) -> float:
    """d(ray component)/d(pixel) along u (axis 0 → x) or v (axis 1 → y), central difference."""
    comp = rays[..., axis]
    if axis == 0:
        lo, hi = max(u - 1, 0), min(u + 1, comp.shape[1] - 1)
        return float((comp[v, hi] - comp[v, lo]) / max(hi - lo, 1))
    lo, hi = max(v - 1, 0), min(v + 1, comp.shape[0] - 1)
    return float((comp[hi, u] - comp[lo, u]) / max(hi - lo, 1))


def project_points(points_m: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Project (N, 3) camera-frame points to (N, 2) pixel coordinates (OpenCV centres)."""
    p = np.asarray(points_m, dtype=np.float64)
    xn, yn = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    if _has_distortion(k):
        xn, yn = distort_normalised(xn, yn, k.dist)
    return np.stack([k.fx * xn + k.cx, k.fy * yn + k.cy], axis=-1)


def coverage(depth_m: np.ndarray) -> float:
    """Fraction of pixels with a depth (> 0)."""
    return float(np.count_nonzero(depth_m > 0)) / float(depth_m.size)
