"""The simulated rig: the embedded default when no hardware is attached.

A seeded procedural 3-D world (textured planes and boxes: rooms with furniture, or streets with
facades, trees and a sky backdrop) is ray-cast per pixel with vectorised NumPy for any pinhole camera,
using the rig geometry of :mod:`acquisition.sim_geometry`. On top of it:

* :class:`SimulatedDslr` (:class:`acquisition.protocols.Dslr`): offered f-numbers (1.8…22 in 1/3
  stops), shutter speeds (1/4000…30 s) and ISO (100…6400), validated before being set; a capture
  renders the all-in-focus linear image at ``min(sensor, 2 × output)`` resolution (cached per scene),
  applies :func:`rig.defocus.render_defocus` for the current aperture and the configured focus,
  exposure (gain = 2^(stops − metered stops)), photon + read noise, and writes a JPEG with a real
  EXIF block (FNumber, ExposureTime, ISOSpeedRatings, FocalLength, DateTimeOriginal, Model).
* :class:`SimulatedDepthSensor` (:class:`acquisition.protocols.DepthSensor`): Kinect-like depth —
  disparity noise and 1/8-px disparity quantisation (depth step ∝ z²), holes where the projector
  (75 mm baseline) cannot see the surface, random dropouts and dropouts at depth edges, nothing
  outside [min_m, max_m] or on the sky; an IR view (texture in grey + projector speckle).
* :class:`SimulatedRig`: the world shared by both, the current scene, ground truth depth in the
  DSLR frame, calibration-board renders, fault injection and a clock accounting the simulated
  devices' own time (for ``rig bench capture``).

Latency: each operation takes its nominal time (:data:`LATENCY_S` × ``simulated.latency_scale``),
or its compute time when that is longer. Faults (``faults.rate`` over ``faults.kinds``, seeded):
each DSLR capture fails with probability ``rate`` — busy (before the trigger), timeout (after
blocking), disconnect (the camera stays closed until ``open()``), truncated (the downloaded file is
cut short: the caller's decode check must catch it); each depth frame fails with ``rate /
burst_frames`` (timeout or disconnect), so a burst fails with ≈ ``rate``.

Frames: the world is y-down (gravity +y), z forward at yaw 0. The DSLR is at the world origin,
pitched down by the scene's ``pitch_deg``; the depth sensor's pose in the DSLR frame is
``sim_geometry.depth_to_dslr(cfg)``. All depths are z-depths along the viewing camera's axis (m).
"""

from __future__ import annotations

import math
import struct
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from acquisition import sim_geometry
from acquisition.protocols import DeviceBusy, DeviceDisconnected, DeviceTimeout, Setting, ShotFile
from rig.config import RigConfig
from rig.errors import DeviceError
from rig.imageio import atomic_write_bytes
from rig.optics import Lens, exposure_stops
from rig.records import Extrinsics, Intrinsics

# ---------------------------------------------------------------------------------- device timing
# Nominal device latencies (seconds, multiplied by cfg.simulated.latency_scale).
LATENCY_S: dict[str, float] = {
    "open": 0.5,  # USB/PTP session open
    "set": 0.05,  # one camera setting
    "trigger": 0.30,  # shutter + in-camera processing (the exposure itself is added)
    "download": 0.20,  # file transfer over USB
    "timeout": 2.0,  # how long a timed-out operation blocks before failing
    "start": 0.3,  # depth stream start
    "frame": 1.0 / 30.0,  # one depth/IR frame at 30 fps
}

F_NUMBERS: tuple[float, ...] = (1.8, 2.0, 2.2, 2.5, 2.8, 3.2, 3.5, 4.0, 4.5, 5.0, 5.6, 6.3, 7.1, 8.0, 9.0,
                                10.0, 11.0, 13.0, 14.0, 16.0, 18.0, 20.0, 22.0)
SHUTTER_CHOICES: tuple[str, ...] = (
    "1/4000", "1/3200", "1/2500", "1/2000", "1/1600", "1/1250", "1/1000", "1/800", "1/640", "1/500",
    "1/400", "1/320", "1/250", "1/200", "1/160", "1/125", "1/100", "1/80", "1/60", "1/50", "1/40", "1/30",
    "1/25", "1/20", "1/15", "1/13", "1/10", "1/8", "1/6", "1/5", "1/4", "0.3", "0.4", "0.5", "0.6", "0.8",
    "1", "1.3", "1.6", "2", "2.5", "3.2", "4", "5", "6", "8", "10", "13", "15", "20", "25", "30")
ISO_CHOICES: tuple[int, ...] = (100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000, 1250, 1600, 2000,
                                2500, 3200, 4000, 5000, 6400)
CAPTURE_TARGETS: tuple[str, ...] = ("Internal RAM", "Memory card")
IMAGE_FORMATS: tuple[str, ...] = ("JPEG Fine",)  # the simulated camera writes JPEG only

PROJECTOR_BASELINE_M = 0.075  # Kinect-like projector to IR-camera distance, along the sensor's +x
DISPARITY_STEP_PX = 1.0 / 8.0  # Kinect v1 sub-pixel disparity resolution
DISPARITY_NOISE_PX = 0.06  # per-frame disparity noise σ (→ σ_z = z²·σ_d/(b·f))
DROPOUT_RATE = 0.01  # random per-frame dropouts
EDGE_DROPOUT_RATE = 0.35  # dropout probability at depth discontinuities
FULL_WELL_E = 20000.0  # electrons at ISO 100 for a linear value of 1 (photon noise)
READ_NOISE = 0.0015  # linear units


class DeviceClock:
    """Accumulates the simulated devices' own time (wall seconds spent inside device operations)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.device_s = 0.0
        self.nominal_s = 0.0  # the nominal latencies alone (what a real device would take)
        self.ops: dict[str, float] = {}

    def add(self, op: str, seconds: float) -> None:
        with self._lock:
            self.device_s += seconds
            self.ops[op] = self.ops.get(op, 0.0) + seconds

    def add_nominal(self, seconds: float) -> None:
        with self._lock:
            self.nominal_s += seconds


class FaultInjector:
    """Seeded random faults: each eligible operation fails with probability ``rate``.

    The fault kind is drawn among the configured ``kinds`` the operation can produce.
    """

    def __init__(self, rate: float, kinds: Sequence[str], seed: int) -> None:
        self.rate = float(rate)
        self.kinds = tuple(kinds)
        self.rng = np.random.default_rng(seed)
        self.injected: dict[str, int] = {}

    def draw(self, possible: Sequence[str], rate: float | None = None) -> str | None:
        """A fault kind for this operation, or None (no fault)."""
        r = self.rate if rate is None else rate
        if r <= 0:
            return None
        u = self.rng.random()
        allowed = [k for k in self.kinds if k in possible]
        if not allowed or u >= r:
            return None
        kind = allowed[int(self.rng.integers(len(allowed)))]
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind


# --------------------------------------------------------------------------------------- textures
def _hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Integer hash of lattice coordinates -> int64 in [0, 2^31)."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ np.int64(seed * 83492791 + 1)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return h & 0x7FFFFFFF


class _Noise:
    """Seeded 2-D value noise (bilinear on a 256² random lattice, smoothstep), fractal sums."""

    def __init__(self, seed: int) -> None:
        self.flat = np.random.default_rng(seed).random(256 * 256, dtype=np.float32)  # 256x256 lattice

    def value(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xf, yf = np.floor(x), np.floor(y)
        fx, fy = (x - xf).astype(np.float32), (y - yf).astype(np.float32)
        xi, yi = xf.astype(np.int32) & 255, (yf.astype(np.int32) & 255) << 8
        x1, y1 = (xi + 1) & 255, (yi + 256) & 0xFF00
        t = self.flat
        sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        t00, t01 = t.take(yi + xi), t.take(yi + x1)
        t10, t11 = t.take(y1 + xi), t.take(y1 + x1)
        a = t00 + (t01 - t00) * sx
        b = t10 + (t11 - t10) * sx
        return a + (b - a) * sy

    def fractal(self, x: np.ndarray, y: np.ndarray, octaves: int = 4) -> np.ndarray:
        total = np.zeros(x.shape, np.float32)
        amp, norm, f = 1.0, 0.0, 1.0
        for o in range(octaves):
            total += amp * self.value(x * f + 17.0 * o, y * f - 31.0 * o)
            norm += amp
            amp *= 0.5
            f *= 2.0
        return total / norm


# 3x5 glyphs for the lettering texture: random bit patterns with most cells filled look like text.
def _letters(u: np.ndarray, v: np.ndarray, scale_m: float, seed: int) -> np.ndarray:
    """1 where ink, 0 where paper: rows of 3x5-pixel pseudo-glyphs, words separated by blanks."""
    unit = scale_m / 7.0
    gx = np.floor(u / unit).astype(np.int64)
    gy = np.floor(v / unit).astype(np.int64)
    col, sub_x = np.divmod(gx, 4)  # 3 glyph columns + 1 spacing
    row, sub_y = np.divmod(gy, 7)  # 5 glyph rows + 2 line spacing
    h = _hash2(col, row, seed)
    bits = (h >> 3) & 0x7FFF
    blank = (h % 6 == 0) | (_hash2(row, row, seed + 1) % 4 == 0)  # spaces, empty lines
    inside = (sub_x < 3) & (sub_y < 5)
    bit = (bits >> np.clip(sub_y * 3 + sub_x, 0, 14)) & 1
    return (inside & ~blank & (bit == 1)).astype(np.float32)


@dataclass(frozen=True)
class Texture:
    """A procedural albedo pattern on a surface's (u, v) coordinates in metres."""

    kind: str  # noise | stripes | checker | letters | bricks | foliage | sky
    scale_m: float
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    seed: int
    angle_rad: float = 0.0

    def albedo(self, uv: np.ndarray, noise: _Noise) -> np.ndarray:
        """uv (N, 2) metres -> (N, 3) float32 albedo in [0, 1]."""
        u, v = uv[:, 0], uv[:, 1]
        if self.angle_rad:
            c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
            u, v = c * u - s * v, s * u + c * v
        sc = self.scale_m
        fine = noise.fractal(u / (sc * 0.25), v / (sc * 0.25), 2)
        if self.kind == "noise":
            t = noise.fractal(u / sc, v / sc, 4)
            t = np.clip((t - 0.5) * 2.2 + 0.5, 0, 1) * 0.75 + 0.25 * fine
        elif self.kind == "stripes":
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u / sc + 2.0 * noise.fractal(u / (4 * sc), v / (4 * sc), 2))
            t = 0.8 * t + 0.2 * fine
        elif self.kind == "checker":
            t = ((np.floor(u / sc) + np.floor(v / sc)) % 2).astype(np.float32)
            t = 0.85 * t + 0.15 * fine
        elif self.kind == "letters":
            t = 0.9 * _letters(u, v, sc, self.seed) + 0.1 * fine
        elif self.kind == "bricks":
            bw, bh = sc, sc * 0.45
            row = np.floor(v / bh)
            uu = u + (row % 2) * 0.5 * bw
            col = np.floor(uu / bw)
            fu, fv = uu / bw - col, v / bh - row
            mortar = (fu < 0.06) | (fv < 0.12)
            shade = (_hash2(col.astype(np.int64), row.astype(np.int64), self.seed) % 1000) / 1000.0
            t = np.where(mortar, 1.0, 0.25 * shade + 0.55 * fine).astype(np.float32)
        elif self.kind == "foliage":
            t = noise.fractal(u / sc, v / sc, 6)
            t = np.clip((t - 0.45) * 3.0, 0, 1)
        elif self.kind == "sky":  # v is height above the horizon in metres on the backdrop
            clouds = np.clip((noise.fractal(u / sc, v / (0.4 * sc), 5) - 0.5) * 3.0, 0, 1)
            t = clouds
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        t = np.asarray(t, np.float32)[:, None]
        a, b = np.asarray(self.color_a, np.float32), np.asarray(self.color_b, np.float32)
        return np.clip(a + (b - a) * t, 0.0, 1.0)


# --------------------------------------------------------------------------------------- geometry
_EPS_T = 1e-4

Vec3 = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z components, each (N,) float32 (struct of arrays)


def _dot3(a: Vec3, v: Sequence[float]) -> np.ndarray:
    """a · v for SoA vectors a and a constant 3-vector v (zero components skipped)."""
    out: np.ndarray | None = None
    for comp, w in zip(a, v):
        if float(w) == 0.0:
            continue
        term = comp * np.float32(w)
        if out is None:
            out = term
        else:
            out += term
    return out if out is not None else np.zeros(a[0].shape, np.float32)


def _take3(a: Vec3, idx: np.ndarray) -> Vec3:
    return a[0][idx], a[1][idx], a[2][idx]


@dataclass(frozen=True)
class Plane:
    """A plane through ``origin`` spanned by unit axes u, v (normal u × v), bounded by |a| ≤ half_u,
    |b| ≤ half_v in those axes (inf = unbounded). ``sky`` surfaces return no depth-sensor signal."""

    origin: tuple[float, float, float]
    u_axis: tuple[float, float, float]
    v_axis: tuple[float, float, float]
    half_u: float
    half_v: float
    texture: Any
    sky: bool = False
    name: str = "plane"

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(np.asarray(self.u_axis, np.float64), np.asarray(self.v_axis, np.float64))
        return n / np.linalg.norm(n)

    def intersect(self, o: np.ndarray, d: Vec3, dd: np.ndarray) -> np.ndarray:
        """Ray parameter t (N,) of the hit, inf where missed; rays o + t·d, o (3,), d SoA."""
        n = self.normal
        c = np.asarray(self.origin, np.float64)
        denom = _dot3(d, n)
        num = np.float32((c - o) @ n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / denom
        ok = t > _EPS_T  # False for NaN / -inf
        if math.isfinite(self.half_u) or math.isfinite(self.half_v):
            rel_o = o - c
            tt = np.where(ok, t, np.float32(0))
            for axis, half in ((self.u_axis, self.half_u), (self.v_axis, self.half_v)):
                if math.isfinite(half):
                    a = np.float32(rel_o @ np.asarray(axis)) + tt * _dot3(d, axis)
                    ok &= np.abs(a) <= half
        return np.where(ok, t, np.float32(np.inf))

    def surface(self, p: Vec3) -> tuple[np.ndarray, Vec3]:
        """Hit points (SoA, M) -> (uv (M, 2) metres, unit normals SoA)."""
        c = np.asarray(self.origin, np.float32)
        rel = (p[0] - c[0], p[1] - c[1], p[2] - c[2])
        uv = np.stack([_dot3(rel, self.u_axis), _dot3(rel, self.v_axis)], 1)
        n = self.normal.astype(np.float32)
        m = p[0].shape
        return uv, (np.full(m, n[0], np.float32), np.full(m, n[1], np.float32), np.full(m, n[2], np.float32))


@dataclass(frozen=True)
class Box:
    """A box with centre, half sizes (x, y, z) in its own frame, rotated by ``yaw_rad`` about +y."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw_rad: float
    texture: Any
    sky: bool = False
    name: str = "box"

    def _rot(self) -> np.ndarray:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)  # box -> world

    def intersect(self, o: np.ndarray, d: Vec3, dd: np.ndarray) -> np.ndarray:
        """Slab test in the box frame, only for the rays passing the bounding sphere."""
        c = np.asarray(self.center, np.float64)
        h = np.asarray(self.half_size, np.float64)
        oc = c - o
        b = _dot3(d, oc)  # |d|·|oc|·cos
        with np.errstate(divide="ignore", invalid="ignore"):
            dist2 = np.float32(oc @ oc) - b * b / dd
        cand = np.flatnonzero((dist2 <= np.float32(h @ h)) & (b > 0))
        out = np.full(d[0].shape, np.inf, np.float32)
        if cand.size == 0:
            return out
        r = self._rot()
        ol = (o - c) @ r  # world -> box: R^T x
        ds = _take3(d, cand)
        tmin = np.full(cand.size, -np.inf, np.float32)
        tmax = np.full(cand.size, np.inf, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = np.float32(1.0) / _dot3(ds, r[:, k])
                t1 = np.float32(-h[k] - ol[k]) * inv
                t2 = np.float32(h[k] - ol[k]) * inv
                tmin = np.fmax(tmin, np.minimum(t1, t2))  # fmax/fmin skip NaN (0·inf: ray in a slab face)
                tmax = np.fmin(tmax, np.maximum(t1, t2))
        hit = (tmax >= tmin) & (tmin > _EPS_T)
        out[cand[hit]] = tmin[hit]
        return out

    def surface(self, p: Vec3) -> tuple[np.ndarray, Vec3]:
        r = self._rot()
        c = np.asarray(self.center, np.float32)
        rel = (p[0] - c[0], p[1] - c[1], p[2] - c[2])
        pl = np.stack([_dot3(rel, r[:, k]) for k in range(3)], 1)  # box frame
        h = np.asarray(self.half_size, np.float32)
        face = np.argmax(np.abs(pl) / h, axis=1)
        sign = np.sign(np.take_along_axis(pl, face[:, None], 1))[:, 0].astype(np.float32)
        # face axes: x-face -> (z, y), y-face -> (x, z), z-face -> (x, y); offset so faces differ
        ua = np.where(face == 0, pl[:, 2], pl[:, 0])
        va = np.where(face == 1, pl[:, 2], pl[:, 1])
        uv = np.stack([ua + np.float32(3.1) * face, va], 1).astype(np.float32)
        n_world = [np.zeros(face.shape, np.float32) for _ in range(3)]
        for k in range(3):  # normal = R[:, face] · sign
            sel = face == k
            for j in range(3):
                n_world[j][sel] = sign[sel] * np.float32(r[j, k])
        return uv, (n_world[0], n_world[1], n_world[2])


Surface = Any  # Plane | Box | a board plane


@dataclass
class Scene:
    """One procedural scene: its surfaces, the DSLR's pitch, and its depth range (m)."""

    index: int
    kind: str  # indoor | outdoor
    objects: list[Any]
    pitch_deg: float
    near_m: float
    far_m: float
    seed: int
    light_dir: tuple[float, float, float] = (-0.4, -0.8, -0.45)
    ambient: float = 0.45
    _noise: dict[int, _Noise] = field(default_factory=dict, repr=False)

    @property
    def scene_id(self) -> str:
        return f"sim-{self.kind}-s{self.seed}-{self.index:05d}"

    def describe(self) -> dict[str, Any]:
        return {"scene_id": self.scene_id, "kind": self.kind, "index": self.index, "seed": self.seed,
                "objects": len(self.objects), "pitch_deg": round(self.pitch_deg, 3),
                "depth_range_m": [self.near_m, self.far_m]}

    def noise(self, seed: int) -> _Noise:
        if seed not in self._noise:
            self._noise[seed] = _Noise(seed)
        return self._noise[seed]

    def cast(self, o: np.ndarray, d: Vec3, extra: Sequence[Any] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hit of rays o + t·d (o (3,), d SoA (N,)): (t (N,) float32, inf = none; object index
        (N,) int16, -1 = none)."""
        o = np.asarray(o, np.float64)
        dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        best = np.full(d[0].shape, np.inf, np.float32)
        idx = np.full(d[0].shape, -1, np.int16)
        for k, obj in enumerate(list(self.objects) + list(extra)):
            t = obj.intersect(o, d, dd)
            closer = t < best
            np.copyto(best, t, where=closer)
            idx[closer] = k
        return best, idx

    def shade(self, p: Vec3, idx: np.ndarray, extra: Sequence[Any] = ()) -> np.ndarray:
        """Display-referred colour (N, 3) float32 in [0, 1] of hit points p (SoA) on objects idx."""
        objs = list(self.objects) + list(extra)
        out = np.zeros((idx.shape[0], 3), np.float32)
        light = np.asarray(self.light_dir, np.float64)
        light /= np.linalg.norm(light)
        for k in np.unique(idx):
            if k < 0:
                continue
            sel = np.flatnonzero(idx == k)
            obj = objs[int(k)]
            uv, nrm = obj.surface(_take3(p, sel))
            alb = obj.texture.albedo(uv, self.noise(obj.texture.seed))
            if obj.sky:
                out[sel] = alb
                continue
            lam = np.abs(_dot3(nrm, light))  # two-sided: a surface seen from behind is still lit
            out[sel] = alb * (np.float32(self.ambient) + np.float32(1.0 - self.ambient) * lam)[:, None]
        return out


# ---------------------------------------------------------------------------------- scene builder
def _rand_color(rng: np.random.Generator, lo: float = 0.1, hi: float = 0.9) -> tuple[float, float, float]:
    return tuple(float(x) for x in rng.uniform(lo, hi, 3))  # type: ignore[return-value]


def _texture(rng: np.random.Generator, kinds: Sequence[str], scale: tuple[float, float]) -> Texture:
    kind = str(rng.choice(kinds))
    a = _rand_color(rng, 0.05, 0.45)
    b = _rand_color(rng, 0.55, 0.95)
    if kind == "letters":
        a, b = _rand_color(rng, 0.85, 0.98), _rand_color(rng, 0.02, 0.2)  # paper, ink
    return Texture(kind, float(rng.uniform(*scale)), a, b, int(rng.integers(2**31 - 1)),
                   float(rng.uniform(-0.6, 0.6)) if kind in ("stripes", "letters", "checker") else 0.0)


def _yplane(y: float, tex: Texture, name: str) -> Plane:  # floor/ground (normal -y, i.e. facing up)
    return Plane((0.0, y, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), math.inf, math.inf, tex, name=name)


def _zplane(z: float, tex: Texture, name: str, sky: bool = False, half_u: float = math.inf,
            half_v: float = math.inf, x: float = 0.0, y: float = 0.0) -> Plane:
    return Plane((x, y, z), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), half_u, half_v, tex, sky=sky, name=name)


def _xplane(x: float, tex: Texture, name: str) -> Plane:
    return Plane((x, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), math.inf, math.inf, tex, name=name)


SURFACE_TEXTURES = ("noise", "stripes", "checker", "letters", "bricks")


def _in_view_x(rng: np.random.Generator, z: float, spread: float = 0.42) -> float:
    """A lateral position that keeps an object at depth z inside (or at the edge of) the DSLR's view
    (the 35 mm lens sees about ±0.34·z)."""
    return float(rng.uniform(-spread, spread) * z)


def make_indoor(rng: np.random.Generator, index: int, seed: int, near_m: float, far_m: float) -> Scene:
    """A room: floor, ceiling, side walls, back wall (≈ 3.5–5.5 m), a poster, 3–6 pieces of
    furniture (cabinets, shelves, crates) from ~1 m."""
    cam_h = float(rng.uniform(1.0, 1.6))  # camera height above the floor (floor at y = +cam_h)
    ceil_h = float(rng.uniform(2.4, 3.0))
    back = float(np.clip(rng.uniform(3.5, 5.5), near_m + 0.8, far_m))
    left, right = -float(rng.uniform(1.2, 2.5)), float(rng.uniform(1.2, 2.5))
    objs: list[Surface] = [
        _yplane(cam_h, _texture(rng, ("checker", "stripes", "noise"), (0.1, 0.4)), "floor"),
        _yplane(cam_h - ceil_h, _texture(rng, ("noise", "stripes"), (0.2, 0.6)), "ceiling"),
        _zplane(back, _texture(rng, ("bricks", "stripes", "noise", "letters"), (0.08, 0.3)), "back wall"),
        _xplane(left, _texture(rng, ("stripes", "noise", "bricks"), (0.08, 0.3)), "left wall"),
        _xplane(right, _texture(rng, ("stripes", "noise", "bricks"), (0.08, 0.3)), "right wall"),
    ]
    for k in range(int(rng.integers(1, 3))):  # posters on the back wall
        objs.append(_zplane(back - 0.01 * (k + 1), _texture(rng, ("letters", "checker"), (0.04, 0.12)),
                            f"poster {k}", half_u=float(rng.uniform(0.2, 0.6)), half_v=float(rng.uniform(0.2, 0.5)),
                            x=_in_view_x(rng, back, 0.3), y=float(rng.uniform(-0.4, 0.6))))
    z_lo = max(near_m + 0.4, 0.9)
    for b in range(int(rng.integers(3, 7))):
        z = float(rng.uniform(z_lo, max(z_lo + 0.2, back - 0.5)))
        hx, hz = float(min(0.3, rng.uniform(0.04, 0.15) * z)), float(rng.uniform(0.08, 0.3))
        hy = float(rng.uniform(0.25, 0.9))  # 0.5–1.8 m tall: near ones reach into the view
        x = float(np.clip(_in_view_x(rng, z), left + hx, right - hx))
        objs.append(Box((x, cam_h - hy, z + hz), (hx, hy, hz), float(rng.uniform(-0.7, 0.7)),
                        _texture(rng, SURFACE_TEXTURES, (0.03, 0.15)), name=f"furniture {b}"))
    return Scene(index=index, kind="indoor", objects=objs, pitch_deg=float(rng.uniform(4.0, 12.0)),
                 near_m=near_m, far_m=far_m, seed=seed)


def make_outdoor(rng: np.random.Generator, index: int, seed: int, near_m: float, far_m: float) -> Scene:
    """Ground to the far limit, a sky backdrop at the far limit (distant land below eye level),
    facades in the back half of the range, trees and boxes (crates, bins, cars) in front."""
    cam_h = float(rng.uniform(1.2, 1.8))
    sky = Texture("sky", float(rng.uniform(3.0, 8.0)), (0.45, 0.62, 0.9), (0.95, 0.96, 0.98),
                  int(rng.integers(2**31 - 1)))
    land = Texture("foliage", float(rng.uniform(0.1, 0.4)), (0.12, 0.2, 0.1), (0.4, 0.5, 0.3),
                   int(rng.integers(2**31 - 1)))
    objs: list[Surface] = [
        _yplane(cam_h, _texture(rng, ("noise", "checker", "stripes", "bricks"), (0.1, 0.5)), "ground"),
        # backdrop at the far limit: sky above eye level, distant land between eye level and the ground
        _zplane(far_m, sky, "sky", sky=True, half_v=1e3, y=-1e3),
        _zplane(far_m, land, "distant land", half_v=cam_h / 2 + 0.05, y=cam_h / 2),
    ]
    for f in range(int(rng.integers(1, 4))):  # facades in the back half of the range
        z = float(rng.uniform(0.5, 0.9) * far_m)
        hx, hy = float(rng.uniform(0.5, 2.5)), float(rng.uniform(2.0, 6.0))
        objs.append(Box((_in_view_x(rng, z, 0.5), cam_h - hy, z + 1.0), (hx, hy, 1.0), float(rng.uniform(-0.4, 0.4)),
                        _texture(rng, ("bricks", "stripes", "letters", "checker"), (0.1, 0.4)), name=f"facade {f}"))
    z_lo = max(near_m + 0.4, 0.9)
    for t in range(int(rng.integers(1, 4))):  # trees: trunk + canopy
        z = float(rng.uniform(max(z_lo, 2.0), 0.8 * far_m))
        x = _in_view_x(rng, z, 0.45)
        trunk_h = float(rng.uniform(1.8, 3.5))
        bark = Texture("stripes", 0.03, (0.2, 0.13, 0.08), (0.45, 0.32, 0.2), int(rng.integers(2**31 - 1)), 1.5)
        leaves = Texture("foliage", float(rng.uniform(0.04, 0.12)), (0.05, 0.18, 0.04), (0.35, 0.6, 0.2),
                         int(rng.integers(2**31 - 1)))
        objs.append(Box((x, cam_h - trunk_h / 2, z), (0.1, trunk_h / 2, 0.1), 0.0, bark, name=f"trunk {t}"))
        r = float(rng.uniform(0.5, 1.2))
        objs.append(Box((x, cam_h - trunk_h - r * 0.7, z), (r, r * 0.8, r), float(rng.uniform(0, 1.5)), leaves,
                        name=f"canopy {t}"))
    for b in range(int(rng.integers(2, 5))):  # crates, bins, cars
        z = float(rng.uniform(z_lo, 0.7 * far_m))
        hx = float(min(0.9, rng.uniform(0.05, 0.2) * z))
        hy, hz = float(min(0.8, rng.uniform(0.08, 0.25) * z)), float(rng.uniform(0.1, 0.6))
        objs.append(Box((_in_view_x(rng, z), cam_h - hy, z + hz), (hx, hy, hz), float(rng.uniform(-1, 1)),
                        _texture(rng, SURFACE_TEXTURES, (0.03, 0.2)), name=f"box {b}"))
    return Scene(index=index, kind="outdoor", objects=objs, pitch_deg=float(rng.uniform(1.0, 6.0)),
                 near_m=near_m, far_m=far_m, seed=seed, light_dir=(-0.3, -0.9, 0.3), ambient=0.5)


def make_scene(cfg: RigConfig, index: int) -> Scene:
    """The scene number ``index`` of the config's seeded sequence (deterministic)."""
    seed = int(cfg.simulated.seed)
    rng = np.random.default_rng([seed, int(index)])
    kind = cfg.simulated.scenes
    if kind == "mixed":
        kind = "indoor" if rng.random() < 0.5 else "outdoor"
    near_m, far_m = (float(x) for x in cfg.simulated.depth_range_m)
    build = make_indoor if kind == "indoor" else make_outdoor
    return build(rng, int(index), seed, near_m, far_m)


# ------------------------------------------------------------------------------------- rendering
def pixel_coords(k: Intrinsics, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (x (W·s,), y (H·s,)) float32 of pixel (sub-)samples; ray = (x, y, 1)."""
    s = int(supersample)
    off = (np.arange(s, dtype=np.float64) + 0.5) / s - 0.5
    us = (np.arange(k.width, dtype=np.float64)[:, None] + off[None, :]).ravel()
    vs = (np.arange(k.height, dtype=np.float64)[:, None] + off[None, :]).ravel()
    return ((us - k.cx) / k.fx).astype(np.float32), ((vs - k.cy) / k.fy).astype(np.float32)


@dataclass(frozen=True)
class View:
    """A pinhole camera in the world: intrinsics, optical centre (3,) and rotation camera -> world."""

    intrinsics: Intrinsics
    origin_w: np.ndarray
    rot_cw: np.ndarray

    def rays_w(self, supersample: int = 1) -> tuple[Vec3, tuple[int, int]]:
        """World ray directions (SoA, row-major over (H·s, W·s)), scaled so the camera z is 1."""
        x, y = pixel_coords(self.intrinsics, supersample)
        r = self.rot_cw
        comps = []
        for j in range(3):
            row = (np.float32(r[j, 1]) * y + np.float32(r[j, 2]))[:, None] + (np.float32(r[j, 0]) * x)[None, :]
            comps.append(row.ravel())
        return (comps[0], comps[1], comps[2]), (y.size, x.size)


@dataclass
class Render:
    """A rendered view: colour (H, W, 3) float32 display-referred [0, 1], z-depth (H, W) float32 m
    (inf = nothing hit), object index (H, W) int16 (-1 none), hit points (SoA of (H, W), world m)."""

    rgb: np.ndarray
    depth_m: np.ndarray
    obj: np.ndarray
    points_w: Vec3


def render_view(scene: Scene, view: View, supersample: int = 1, extra: Sequence[Any] = (),
                shade: bool = True) -> Render:
    """Ray-cast the scene for a view. With supersample s > 1 the colour is the mean of s×s samples
    per pixel and depth/object/points are those of one central sample."""
    d, (hs, ws) = view.rays_w(supersample)
    t, idx = scene.cast(view.origin_w, d, extra)
    tt = np.minimum(t, np.float32(1e4))  # rays into nothing end far away (cannot happen with a backdrop)
    o = view.origin_w.astype(np.float32)
    p = (o[0] + d[0] * tt, o[1] + d[1] * tt, o[2] + d[2] * tt)
    rgb = scene.shade(p, idx, extra) if shade else np.zeros((idx.shape[0], 3), np.float32)
    s = int(supersample)
    h, w = view.intrinsics.height, view.intrinsics.width
    if s > 1:
        rgb = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        pick = (slice(None), s // 2, slice(None), s // 2)
        depth = t.reshape(h, s, w, s)[pick]
        obj = idx.reshape(h, s, w, s)[pick]
        pts = tuple(np.ascontiguousarray(c.reshape(h, s, w, s)[pick]) for c in p)
    else:
        rgb, depth, obj = rgb.reshape(h, w, 3), t.reshape(h, w), idx.reshape(h, w)
        pts = tuple(c.reshape(h, w) for c in p)
    return Render(rgb=np.ascontiguousarray(rgb, np.float32), depth_m=np.ascontiguousarray(depth),
                  obj=np.ascontiguousarray(obj), points_w=pts)  # type: ignore[arg-type]


_GAMMA_LEVELS = 4096
_GAMMA_LUT = np.clip(np.rint(np.power(np.arange(_GAMMA_LEVELS) / (_GAMMA_LEVELS - 1), 1.0 / 2.2) * 255.0),
                     0, 255).astype(np.uint8)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0.0, 1.0), np.float32(2.2)).astype(np.float32)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0.0, 1.0), np.float32(1.0 / 2.2)).astype(np.float32)


# ---------------------------------------------------------------------------------------- boards
BOARD_KINDS = ("chessboard", "acircles")


def board_object_points(board_kind: str, pattern_size: tuple[int, int], square_m: float) -> np.ndarray:
    """OpenCV's object points (N, 3) float32 in the board frame (z = 0), in detector order.

    chessboard: inner corners (cols, rows) at (i·s, j·s); acircles (asymmetric circle grid,
    ``cv2.CALIB_CB_ASYMMETRIC_GRID``): centres at ((2i + j mod 2)·s, j·s) for row j, column i.
    """
    cols, rows = int(pattern_size[0]), int(pattern_size[1])
    if board_kind == "chessboard":
        return np.array([[i * square_m, j * square_m, 0.0] for j in range(rows) for i in range(cols)], np.float32)
    if board_kind == "acircles":
        return np.array([[(2 * i + j % 2) * square_m, j * square_m, 0.0] for j in range(rows) for i in range(cols)],
                        np.float32)
    raise ValueError(f"board_kind must be one of {BOARD_KINDS}, got {board_kind!r}")


class _BoardTexture:
    """Black-on-white chessboard / asymmetric circle pattern in board coordinates (m)."""

    def __init__(self, board_kind: str, pattern_size: tuple[int, int], square_m: float) -> None:
        self.kind, self.size, self.s = board_kind, (int(pattern_size[0]), int(pattern_size[1])), float(square_m)
        self.seed = 0

    def albedo(self, uv: np.ndarray, noise: _Noise) -> np.ndarray:
        x, y = uv[:, 0], uv[:, 1]
        s = self.s
        cols, rows = self.size
        if self.kind == "chessboard":
            a, b = np.floor(x / s), np.floor(y / s)
            inside = (a >= -1) & (a <= cols - 1) & (b >= -1) & (b <= rows - 1)
            black = inside & ((a + b) % 2 == 0)
        else:
            j = np.rint(y / s)
            i = np.rint((x / s - (j % 2)) / 2.0)
            cx, cy = (2 * i + j % 2) * s, j * s
            valid = (j >= 0) & (j < rows) & (i >= 0) & (i < cols)
            black = valid & ((x - cx) ** 2 + (y - cy) ** 2 <= (0.35 * s) ** 2)
        v = np.where(black, 0.06, 0.92).astype(np.float32)
        return np.repeat(v[:, None], 3, axis=1)


def board_surface(board_kind: str, pattern_size: tuple[int, int], square_m: float,
                  pose_board_to_world: np.ndarray) -> Plane:
    """The board as a bounded plane in the world (a white margin of one square around the pattern)."""
    if board_kind not in BOARD_KINDS:
        raise ValueError(f"board_kind must be one of {BOARD_KINDS}, got {board_kind!r}")
    cols, rows = int(pattern_size[0]), int(pattern_size[1])
    s = float(square_m)
    if board_kind == "chessboard":
        x0, x1, y0, y1 = -2 * s, (cols + 1) * s, -2 * s, (rows + 1) * s
    else:
        x0, x1, y0, y1 = -1.5 * s, (2 * cols) * s + 0.5 * s, -1.5 * s, (rows + 0.5) * s
    m = np.asarray(pose_board_to_world, np.float64)
    centre_b = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    r = m[:3, :3]
    centre_w = r @ centre_b + m[:3, 3]
    # u/v axes along board x/y; board coordinates = (a, b) + centre offset, handled by the texture shim
    tex = _OffsetTexture(_BoardTexture(board_kind, (cols, rows), s), (float(centre_b[0]), float(centre_b[1])))
    return Plane(tuple(float(c) for c in centre_w), tuple(float(c) for c in r[:, 0]),  # type: ignore[arg-type]
                 tuple(float(c) for c in r[:, 1]), (x1 - x0) / 2, (y1 - y0) / 2, tex, name="board")  # type: ignore


@dataclass(frozen=True)
class _OffsetTexture:
    inner: Any
    offset: tuple[float, float]

    @property
    def seed(self) -> int:
        return 0

    def albedo(self, uv: np.ndarray, noise: _Noise) -> np.ndarray:
        return self.inner.albedo(uv + np.asarray(self.offset, np.float32), noise)


# ------------------------------------------------------------------------------------------ JPEG/EXIF
def _rational(x: float) -> tuple[int, int]:
    f = Fraction(float(x)).limit_denominator(100000)
    return f.numerator, f.denominator


def exif_app1(make: str, model: str, f_number: float, exposure_s: float, iso: int, focal_mm: float,
              datetime_original: str) -> bytes:
    """A minimal EXIF APP1 segment (little-endian TIFF: IFD0 Make/Model + Exif IFD)."""
    def ascii_(s: str) -> bytes:
        return s.encode("ascii", "replace") + b"\x00"

    ifd0 = [(0x010F, 2, ascii_(make)), (0x0110, 2, ascii_(model)), (0x8769, 4, None)]
    exif = [(0x829A, 5, struct.pack("<II", *_rational(exposure_s))),
            (0x829D, 5, struct.pack("<II", *_rational(f_number))),
            (0x8827, 3, struct.pack("<H", int(min(iso, 65535)))),
            (0x9003, 2, ascii_(datetime_original)),
            (0x920A, 5, struct.pack("<II", *_rational(focal_mm)))]
    type_size = {2: 1, 3: 2, 4: 4, 5: 8}

    def ifd_size(entries: list) -> int:
        return 2 + 12 * len(entries) + 4

    def data_size(entries: list) -> int:
        return sum(len(v) + (len(v) & 1) for _, _, v in entries if v is not None and len(v) > 4)

    ifd0_off = 8
    exif_off = ifd0_off + ifd_size(ifd0) + data_size(ifd0)

    def build(entries: list, off: int, exif_ptr: int | None) -> bytes:
        head = struct.pack("<H", len(entries))
        data = b""
        data_off = off + ifd_size(entries)
        for tag, typ, val in entries:
            if val is None:  # the Exif IFD pointer
                head += struct.pack("<HHII", tag, 4, 1, exif_ptr or 0)
                continue
            count = len(val) // type_size[typ]
            if len(val) <= 4:
                head += struct.pack("<HHI", tag, typ, count) + val.ljust(4, b"\x00")
            else:
                head += struct.pack("<HHII", tag, typ, count, data_off + len(data))
                data += val + (b"\x00" if len(val) & 1 else b"")
        return head + struct.pack("<I", 0) + data

    tiff = b"II*\x00" + struct.pack("<I", ifd0_off) + build(ifd0, ifd0_off, exif_off) + build(exif, exif_off, None)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def insert_app1(jpeg: bytes, app1: bytes) -> bytes:
    """Insert an APP1 segment after SOI and a leading JFIF APP0, if any."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + app1 + jpeg[pos:]


# ------------------------------------------------------------------------------------------- the rig
class SimulatedRig:
    """The simulated world shared by the virtual DSLR and depth sensor.

    ``set_scene(i)`` moves the rig to scene i (the operator's job on a real rig). Renders are cached
    per scene: the DSLR's all-in-focus linear image and depth at ``render_size`` (min(sensor,
    2 × output)), each aperture's defocused image, and the depth sensor's geometry.
    """

    def __init__(self, cfg: RigConfig, fault_seed_offset: int = 0) -> None:
        self.cfg = cfg
        self.clock = DeviceClock()
        self.faults = FaultInjector(cfg.faults.rate, cfg.faults.kinds, seed=cfg.simulated.seed * 7919 + 17
                                    + fault_seed_offset)
        self.scene_index = 0
        self._scene: Scene | None = None
        self._cache: dict[Any, Any] = {}
        sw, sh = cfg.dslr.sensor_px
        ow, oh = cfg.output.size_px
        self.render_size = (min(sw, 2 * ow), min(sh, 2 * oh))
        self.dslr_k = sim_geometry.dslr_intrinsics(cfg)
        self.depth_k = sim_geometry.depth_intrinsics(cfg)
        self.depth_to_dslr: Extrinsics = sim_geometry.depth_to_dslr(cfg)

    # -- scene -----------------------------------------------------------------------------------
    def set_scene(self, index: int) -> Scene:
        """Move to scene ``index`` (deterministic from the config's seed)."""
        if self._scene is None or self.scene_index != int(index):
            self.scene_index = int(index)
            self._scene = make_scene(self.cfg, self.scene_index)
            self._cache.clear()
        return self._scene  # type: ignore[return-value]

    @property
    def scene(self) -> Scene:
        return self._scene if self._scene is not None else self.set_scene(self.scene_index)

    def sleep(self, op: str, extra_s: float = 0.0, spent_s: float = 0.0) -> None:
        """Wait the remainder of an operation's nominal latency (× latency_scale) after ``spent_s``."""
        nominal = (LATENCY_S.get(op, 0.0) + extra_s) * self.cfg.simulated.latency_scale
        self.clock.add_nominal(nominal)
        rest = nominal - spent_s
        if rest > 0:
            time.sleep(rest)

    # -- views -----------------------------------------------------------------------------------
    def _cam_rot(self) -> np.ndarray:
        """DSLR -> world rotation (pitch down by the scene's pitch: a rotation about x)."""
        a = math.radians(self.scene.pitch_deg)
        c, s = math.cos(a), math.sin(a)
        # camera looks down: its +z tilts toward world +y (down)
        return np.array([[1, 0, 0], [0, c, s], [0, -s, c]], np.float64)

    def dslr_view(self, width: int | None = None, height: int | None = None) -> View:
        k = self.dslr_k if width is None else self.dslr_k.scaled(int(width), int(height or 0))
        return View(k, np.zeros(3), self._cam_rot())

    def pose_dslr_to_world(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self._cam_rot()
        return m

    def depth_view(self) -> View:
        e = self.depth_to_dslr.matrix()
        r_cw = self._cam_rot()
        return View(self.depth_k, r_cw @ e[:3, 3], r_cw @ e[:3, :3])

    def projector_origin_w(self) -> np.ndarray:
        v = self.depth_view()
        return v.origin_w + v.rot_cw @ np.array([PROJECTOR_BASELINE_M, 0.0, 0.0])

    # -- DSLR renders ----------------------------------------------------------------------------
    def aif_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """All-in-focus linear RGB (H, W, 3) float32 and z-depth (H, W) m at ``render_size``."""
        key = ("aif",)
        if key not in self._cache:
            w, h = self.render_size
            r = render_view(self.scene, self.dslr_view(w, h))
            depth = np.clip(r.depth_m, self.scene.near_m, self.scene.far_m).astype(np.float32)
            self._cache[key] = (_srgb_to_linear(r.rgb), depth)
        return self._cache[key]

    def render_lens(self, f_number: float) -> Lens:
        """The thin lens at render resolution (pixel pitch × sensor/render downsampling)."""
        ds = self.cfg.dslr.sensor_px[0] / self.render_size[0]
        return Lens(focal_mm=self.cfg.dslr.focal_mm, f_number=float(f_number), pixel_um=self.cfg.dslr.pixel_um,
                    focus_m=self.cfg.dslr.focus_m, downsample=ds)

    def defocused_linear(self, f_number: float) -> np.ndarray:
        """The aperture's defocused linear RGB at ``render_size`` (rig.defocus layered blur, cached)."""
        key = ("defocus", round(float(f_number), 4), self.cfg.dslr.focus_m)
        if key not in self._cache:
            from rig.defocus import render_defocus

            rgb, depth = self.aif_linear()
            # the config's layer step is in output px; keep the same number of layers at render size
            step = self.cfg.blur.max_layer_step_px * self.render_size[0] / self.cfg.output.size_px[0]
            self._cache[key] = render_defocus(rgb, depth, self.render_lens(f_number), psf=self.cfg.blur.psf,
                                              rho=self.cfg.blur.rho, max_step_px=step)
        return self._cache[key]

    def prerender(self) -> None:
        """Render everything the current scene's capture needs (both apertures, the depth sensor's
        geometry, the ground truth) now, so device operations cost their nominal latency only."""
        d = self.cfg.dslr
        for n in (d.f_number_defocused, d.f_number_all_in_focus):
            self.defocused_linear(n)
        self.sensor_geometry()
        self.ground_truth_depth_dslr(True)

    def ground_truth_depth_dslr(self, output_size: bool = True) -> np.ndarray:
        """True z-depth (H, W) float32 m in the DSLR frame at the output size (or sensor size);
        the sky is at the far limit."""
        key = ("truth", output_size)
        if key not in self._cache:
            if output_size:
                w, h = self.cfg.output.size_px
            else:
                w, h = self.cfg.dslr.sensor_px
            r = render_view(self.scene, self.dslr_view(w, h), shade=False)
            self._cache[key] = np.clip(r.depth_m, self.scene.near_m, self.scene.far_m).astype(np.float32)
        return self._cache[key]

    def expose(self, linear: np.ndarray, f_number: float, shutter_s: float, iso: int,
               rng: np.random.Generator) -> np.ndarray:
        """Exposure relative to the metered one, photon + read noise, gamma -> uint8 (H, W, 3)."""
        d = self.cfg.dslr
        gain = 2.0 ** (exposure_stops(shutter_s, f_number, iso) - exposure_stops(d.shutter_s, d.f_number_defocused,
                                                                                   d.iso))
        img = linear * np.float32(gain)
        if self.cfg.simulated.noise:
            electrons_per_unit = FULL_WELL_E * 100.0 / float(iso)
            var = img * np.float32(1.0 / electrons_per_unit)
            var += np.float32(READ_NOISE ** 2)
            np.maximum(var, np.float32(READ_NOISE ** 2), out=var)
            noise = rng.standard_normal(img.shape, dtype=np.float32)
            noise *= np.sqrt(var, out=var)
            img = img + noise
        # gamma through a 4096-entry table (linear -> sRGB-like 8 bit)
        idx = np.clip(img * np.float32(_GAMMA_LEVELS - 1) + np.float32(0.5), 0, _GAMMA_LEVELS - 1).astype(np.uint16)
        return _GAMMA_LUT.take(idx)

    # -- depth sensor renders --------------------------------------------------------------------
    def sensor_geometry(self) -> dict[str, np.ndarray]:
        """Cached per scene: true z in the sensor frame, projector shadow, sky, edges, IR base (H, W)."""
        key = ("sensor",)
        if key not in self._cache:
            view = self.depth_view()
            r = render_view(self.scene, view)
            objs = self.scene.objects
            sky = np.zeros(r.obj.shape, bool)
            for k, o in enumerate(objs):
                if o.sky:
                    sky |= r.obj == k
            # projector shadow: the segment projector -> surface point hits something first
            q = self.projector_origin_w()
            rel = tuple((c.ravel() - np.float32(q[j])).astype(np.float32) for j, c in enumerate(r.points_w))
            t, _ = self.scene.cast(q, rel)  # type: ignore[arg-type]
            shadow = (t < 1.0 - 2e-3).reshape(r.obj.shape) & ~sky
            z = np.minimum(r.depth_m, np.float32(1e4)).astype(np.float32)
            gy, gx = np.gradient(z)
            edge = (np.hypot(gx, gy) > 0.05 * np.maximum(z, 0.1)) & ~sky
            grey = (r.rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
            # projector speckle: fixed pseudo-random dots in the projector's angular coordinates
            ps = [_dot3(rel, view.rot_cw[:, k]) for k in range(3)]  # world -> sensor axes
            with np.errstate(divide="ignore", invalid="ignore"):
                ax = np.nan_to_num(ps[0] / ps[2]) * 500.0
                ay = np.nan_to_num(ps[1] / ps[2]) * 500.0
            dots = (_hash2(np.floor(ax).astype(np.int64), np.floor(ay).astype(np.int64), 99) % 5 == 0)
            speckle = dots.reshape(z.shape).astype(np.float32)
            falloff = np.clip((1.2 / np.maximum(z, 0.3)) ** 2, 0.05, 1.0)
            ir = 0.35 * grey + 0.65 * speckle * falloff
            ir[shadow | sky] = 0.25 * grey[shadow | sky]
            self._cache[key] = {"z": z, "shadow": shadow, "sky": sky, "edge": edge, "ir": ir.astype(np.float32),
                                "grey": grey}
        return self._cache[key]

    def depth_frame_raw(self, rng: np.random.Generator) -> np.ndarray:
        """One noisy Kinect-like depth frame (H, W) uint16 in units of depth_scale_m, 0 = none."""
        g = self.sensor_geometry()
        ds = self.cfg.depth_sensor
        z = g["z"]
        bf = PROJECTOR_BASELINE_M * self.depth_k.fx  # disparity (px) = b·f / z
        valid = ~(g["shadow"] | g["sky"]) & (z > 0)
        if self.cfg.simulated.noise:
            disp = bf / np.maximum(z, 1e-3)
            disp = disp + DISPARITY_NOISE_PX * rng.standard_normal(z.shape, dtype=np.float32)
            disp = np.maximum(np.rint(disp / DISPARITY_STEP_PX) * DISPARITY_STEP_PX, DISPARITY_STEP_PX)
            zq = (bf / disp).astype(np.float32)
            valid &= rng.random(z.shape, dtype=np.float32) >= DROPOUT_RATE
            valid &= ~(g["edge"] & (rng.random(z.shape, dtype=np.float32) < EDGE_DROPOUT_RATE))
        else:
            zq = z
        valid &= (zq >= ds.min_m) & (zq <= ds.max_m)
        raw = np.where(valid, np.rint(zq / ds.depth_scale_m), 0)
        return np.clip(raw, 0, 65535).astype(np.uint16)

    def ir_frame(self, rng: np.random.Generator, speckle: bool = True) -> np.ndarray:
        """IR view (H, W) uint8: the scene's texture in grey + the projector speckle."""
        g = self.sensor_geometry()
        ir = g["ir"] if speckle else 0.8 * g["grey"]
        if self.cfg.simulated.noise:
            ir = ir + 0.02 * rng.standard_normal(ir.shape, dtype=np.float32)
        return np.clip(np.rint(ir * 255.0), 0, 255).astype(np.uint8)

    # -- calibration boards ----------------------------------------------------------------------
    def render_board_views(self, board_kind: str, pattern_size: tuple[int, int], square_m: float,
                           pose_board_to_dslr: np.ndarray | Extrinsics, supersample: int = 2,
                           defocus: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A calibration board placed in the current scene, seen by both cameras.

        board_kind: 'chessboard' (pattern_size = inner corners (cols, rows), square side square_m) or
        'acircles' (OpenCV asymmetric circle grid, (cols, rows), spacing square_m, circle diameter
        0.7·square_m). Board frame: origin at the first corner/centre of
        :func:`board_object_points`, x along the columns, y along the rows, z into the board.
        pose_board_to_dslr: 4x4 (or Extrinsics) with X_dslr = R·X_board + t.
        Returns (DSLR grey (sensor H, W) uint8 — at f/N all-in-focus when ``defocus`` —, IR grey (H, W)
        uint8 as the depth sensor's IR camera sees it with the projector covered, i.e. no speckle).
        Both are anti-aliased with ``supersample``² samples per pixel.
        """
        m = pose_board_to_dslr.matrix() if isinstance(pose_board_to_dslr, Extrinsics) else np.asarray(
            pose_board_to_dslr, np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"pose_board_to_dslr must be 4x4, got {m.shape}")
        board = board_surface(board_kind, pattern_size, square_m, self.pose_dslr_to_world() @ m)
        rng = np.random.default_rng([self.cfg.simulated.seed, self.scene_index, int(seed), 7])
        w, h = self.render_size
        r = render_view(self.scene, self.dslr_view(w, h), supersample=supersample, extra=[board])
        lin = _srgb_to_linear(r.rgb)
        if defocus:
            from rig.defocus import render_defocus

            depth = np.clip(r.depth_m, self.scene.near_m, self.scene.far_m)
            step = self.cfg.blur.max_layer_step_px * w / self.cfg.output.size_px[0]
            lin = render_defocus(lin, depth, self.render_lens(self.cfg.dslr.f_number_all_in_focus),
                                 psf=self.cfg.blur.psf, rho=self.cfg.blur.rho, max_step_px=step)
        d = self.cfg.dslr
        rgb = self.expose(lin, d.f_number_defocused, d.shutter_s, d.iso, rng)
        grey = _to_grey_u8(rgb)
        if (w, h) != tuple(d.sensor_px):
            import cv2

            grey = cv2.resize(grey, tuple(d.sensor_px), interpolation=cv2.INTER_LINEAR)
        ri = render_view(self.scene, self.depth_view(), supersample=supersample, extra=[board])
        ir = ri.rgb @ np.array([0.299, 0.587, 0.114], np.float32) * 0.8
        if self.cfg.simulated.noise:
            ir = ir + 0.01 * rng.standard_normal(ir.shape, dtype=np.float32)
        return grey, np.clip(np.rint(ir * 255.0), 0, 255).astype(np.uint8)


def _to_grey_u8(rgb: np.ndarray) -> np.ndarray:
    g = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------- device wrappers
def _timed(op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Account the wall time of a device method to the rig's clock (also when it raises)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                self.rig.clock.add(op, time.perf_counter() - t0)
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper
    return deco


class SimulatedDslr:
    """A virtual tethered DSLR (:class:`acquisition.protocols.Dslr`) viewing the simulated world."""

    def __init__(self, cfg: RigConfig, rig: SimulatedRig | None = None) -> None:
        self.cfg = cfg
        self.rig = rig if rig is not None else SimulatedRig(cfg)
        self.model = cfg.dslr.model
        self._open = False
        self._f_number = F_NUMBERS[0]
        self._shutter = "1/100"
        self._iso = 100
        self._target = CAPTURE_TARGETS[0]
        self._format = IMAGE_FORMATS[0]
        self._shots = 0
        self._rng = np.random.default_rng([cfg.simulated.seed, 11])

    # -- connection ------------------------------------------------------------------------------
    @_timed("dslr.open")
    def open(self) -> None:
        self.rig.sleep("open")
        self._open = True

    def close(self) -> None:
        self._open = False

    def _check(self) -> None:
        if not self._open:
            raise DeviceDisconnected(f"{self.model}: not connected (open the camera first)")

    # -- settings --------------------------------------------------------------------------------
    def settings(self) -> dict[str, Setting]:
        self._check()
        return {
            "aperture": Setting("aperture", f"f/{self._f_number:g}", tuple(f"f/{n:g}" for n in F_NUMBERS)),
            "shutter": Setting("shutter", self._shutter, SHUTTER_CHOICES),
            "iso": Setting("iso", str(self._iso), tuple(str(i) for i in ISO_CHOICES)),
            "capturetarget": Setting("capturetarget", self._target, CAPTURE_TARGETS),
            "imageformat": Setting("imageformat", self._format, IMAGE_FORMATS),
            "focallength": Setting("focallength", f"{self.cfg.dslr.focal_mm:g}", (), readonly=True),
        }

    def _set(self, op: str) -> None:
        self._check()
        self.rig.sleep("set")

    @_timed("dslr.set")
    def set_aperture(self, f_number: float) -> float:
        from acquisition.gphoto2_driver import choose_f_number, parse_f_number

        choice, _ = choose_f_number(f_number, self.settings()["aperture"].choices, self.model)
        self._set("aperture")
        self._f_number = float(parse_f_number(choice) or f_number)
        return self._f_number

    @_timed("dslr.set")
    def set_shutter(self, shutter_s: float) -> float:
        from acquisition.gphoto2_driver import choose_shutter

        choice, value = choose_shutter(shutter_s, SHUTTER_CHOICES, self.model)
        self._set("shutter")
        self._shutter = choice
        return value

    @_timed("dslr.set")
    def set_iso(self, iso: int) -> int:
        from acquisition.gphoto2_driver import choose_iso

        choice, value = choose_iso(int(iso), tuple(str(i) for i in ISO_CHOICES), self.model)
        self._set("iso")
        self._iso = int(value)
        return self._iso

    @_timed("dslr.set")
    def set_capture_target(self, target: str) -> str:
        from acquisition.gphoto2_driver import choose_capture_target

        choice = choose_capture_target(target, CAPTURE_TARGETS, self.model)
        self._set("capturetarget")
        self._target = choice
        return choice

    @_timed("dslr.set")
    def set_image_format(self, fmt: str) -> str:
        from acquisition.gphoto2_driver import choose_image_format

        choice = choose_image_format(fmt, IMAGE_FORMATS, self.model)
        self._set("imageformat")
        self._format = choice
        return choice

    @property
    def shutter_s(self) -> float:
        from acquisition.gphoto2_driver import parse_shutter_s

        return float(parse_shutter_s(self._shutter) or 0.01)

    # -- capture ---------------------------------------------------------------------------------
    @_timed("dslr.capture")
    def capture(self, dest: Path) -> ShotFile:
        """Render the current scene through the current aperture/shutter/ISO, 'download' to ``dest``.

        Faults (cfg.faults): busy (before the trigger), timeout (after blocking), disconnect (mid
        transfer; the camera stays disconnected until ``open``), truncated (the file written to
        ``dest`` is cut short — the caller's decode check must catch it).
        """
        import cv2

        self._check()
        fault = self.rig.faults.draw(("busy", "timeout", "disconnect", "truncated"))
        if fault == "busy":
            raise DeviceBusy(f"{self.model}: PTP device busy (simulated)")
        if fault == "timeout":
            self.rig.sleep("timeout")
            raise DeviceTimeout(f"{self.model}: capture timed out (simulated)")
        t0 = time.perf_counter()
        shutter_s = self.shutter_s
        lin = self.rig.defocused_linear(self._f_number)
        rgb = self.rig.expose(lin, self._f_number, shutter_s, self._iso, self._rng)
        if tuple(rgb.shape[1::-1]) != tuple(self.cfg.dslr.sensor_px):
            rgb = cv2.resize(rgb, tuple(self.cfg.dslr.sensor_px), interpolation=cv2.INTER_LINEAR)
        self.rig.sleep("trigger", extra_s=shutter_s, spent_s=time.perf_counter() - t0)
        if fault == "disconnect":
            self._open = False
            raise DeviceDisconnected(f"{self.model}: USB disconnected during capture (simulated)")
        t1 = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise DeviceError(f"{self.model}: JPEG encoding failed")
        now = time.localtime()
        dto = time.strftime("%Y:%m:%d %H:%M:%S", now)
        exif = {"FNumber": float(self._f_number), "ExposureTime": float(shutter_s), "ISOSpeedRatings": int(self._iso),
                "FocalLength": float(self.cfg.dslr.focal_mm), "DateTimeOriginal": dto, "Model": self.model}
        data = insert_app1(buf.tobytes(), exif_app1("Deep-DFD", self.model, self._f_number, shutter_s, self._iso,
                                                    self.cfg.dslr.focal_mm, dto))
        if fault == "truncated":
            cut = float(self.rig.faults.rng.uniform(0.2, 0.95))
            data = data[: int(len(data) * cut)]
        dest = Path(dest)
        atomic_write_bytes(dest, data)
        self._shots += 1
        self.rig.sleep("download", spent_s=time.perf_counter() - t1)
        return ShotFile(path=dest, f_number=float(self._f_number), shutter_s=float(shutter_s), iso=int(self._iso),
                        exif=exif)

    # -- simulated-only extras -------------------------------------------------------------------
    def ground_truth_depth_dslr(self, output_size: bool = True) -> np.ndarray:
        """True depth in the DSLR frame for the current scene (see :class:`SimulatedRig`)."""
        return self.rig.ground_truth_depth_dslr(output_size)


class SimulatedDepthSensor:
    """A virtual Kinect-like depth sensor (:class:`acquisition.protocols.DepthSensor`).

    Faults: a frame read may time out or the sensor may disconnect (stays stopped until ``start``);
    the per-frame probability is ``faults.rate / burst_frames`` so a whole burst fails with ≈ rate.
    """

    def __init__(self, cfg: RigConfig, rig: SimulatedRig | None = None) -> None:
        self.cfg = cfg
        self.rig = rig if rig is not None else SimulatedRig(cfg, fault_seed_offset=1)
        self.model = cfg.depth_sensor.model
        self._running = False
        self._frames = 0
        self._rng = np.random.default_rng([cfg.simulated.seed, 23])

    @_timed("depth.start")
    def start(self) -> None:
        self.rig.sleep("start")
        self._running = True

    def stop(self) -> None:
        self._running = False

    def _check(self) -> None:
        if not self._running:
            raise DeviceDisconnected(f"{self.model}: depth stream not running (start the sensor first)")

    def intrinsics(self) -> Intrinsics:
        return self.rig.depth_k

    def depth_scale_m(self) -> float:
        return float(self.cfg.depth_sensor.depth_scale_m)

    def _fault(self) -> None:
        rate = self.rig.faults.rate / max(1, self.cfg.depth_sensor.burst_frames)
        fault = self.rig.faults.draw(("timeout", "disconnect"), rate=rate)
        if fault == "timeout":
            self.rig.sleep("timeout")
            raise DeviceTimeout(f"{self.model}: no depth frame within the timeout (simulated)")
        if fault == "disconnect":
            self._running = False
            raise DeviceDisconnected(f"{self.model}: USB disconnected (simulated)")

    @_timed("depth.frame")
    def read_depth(self) -> np.ndarray:
        self._check()
        self._fault()
        t0 = time.perf_counter()
        frame = self.rig.depth_frame_raw(self._rng)
        self._frames += 1
        self.rig.sleep("frame", spent_s=time.perf_counter() - t0)
        return frame

    @_timed("depth.ir")
    def read_ir(self) -> np.ndarray | None:
        self._check()
        t0 = time.perf_counter()
        ir = self.rig.ir_frame(self._rng)
        self.rig.sleep("frame", spent_s=time.perf_counter() - t0)
        return ir


def open_simulated_rig(cfg: RigConfig, dslr: bool = True, depth: bool = True
                       ) -> tuple[SimulatedRig, SimulatedDslr | None, SimulatedDepthSensor | None]:
    """One world shared by a simulated DSLR and/or depth sensor."""
    rig = SimulatedRig(cfg)
    return rig, (SimulatedDslr(cfg, rig) if dslr else None), (SimulatedDepthSensor(cfg, rig) if depth else None)
