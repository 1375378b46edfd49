"""The procedural 3-D world: textures, planes and boxes, seeded indoor/outdoor scenes, per-pixel ray casting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rig.core.config import RigConfig
from rig.core.records import Intrinsics


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
