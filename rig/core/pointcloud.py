"""Coloured point clouds (PLY) in metres and Open3D's ``camera_intrinsic.json``.

Depth maps are back-projected through the pinhole intrinsics of the image they belong to (the
DSLR's, scaled to the depth map's size): for pixel (u, v) with depth z > 0 metres,
X = (u - cx)·z / fx, Y = (v - cy)·z / fy, Z = z (camera frame: x right, y down, z forward).

``camera_intrinsic.json`` is Open3D's ``PinholeCameraIntrinsic`` file
(``{"width", "height", "intrinsic_matrix": 9 floats, column-major}``), written without Open3D, so
``open3d.io.read_pinhole_camera_intrinsic`` + ``PointCloud.create_from_depth_image`` (depth PNG in
mm: ``depth_scale=1000``) work directly on what the rig writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rig.core.config import RigConfig
from rig.core.errors import RigError
from rig.core.imageio import atomic_write_bytes
from rig.core.records import Intrinsics

O3D_INTRINSIC_NAME = "camera_intrinsic.json"


def dslr_intrinsics_at(cfg: RigConfig, width: int, height: int) -> Intrinsics:
    """The config's DSLR as an ideal centred pinhole (fx = focal_mm / pixel pitch), scaled from
    ``dslr.sensor_px`` to a ``width`` x ``height`` image."""
    w, h = cfg.dslr.sensor_px
    f_px = cfg.dslr.focal_mm / (cfg.dslr.pixel_um * 1e-3)
    k = Intrinsics(width=w, height=h, fx=f_px, fy=f_px, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0)
    return k if (w, h) == (width, height) else k.scaled(int(width), int(height))


def backproject_m(depth_m: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) depth in metres -> (N, 3) float32 points in metres and the (H, W) bool mask of the
    pixels used (finite depth > 0), in row-major pixel order."""
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise RigError(f"point cloud: expected a (H, W) depth map, got shape {d.shape}")
    h, w = d.shape
    if (w, h) != (k.width, k.height):
        k = k.scaled(w, h)
    ok = np.isfinite(d) & (d > 0)
    v, u = np.nonzero(ok)
    z = d[v, u]
    pts = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
    return pts.astype(np.float32), ok


def ply_bytes(points_m: np.ndarray, colors_rgb: np.ndarray | None = None) -> bytes:
    """Binary little-endian PLY: float x, y, z (metres) and, with colours, uchar red, green, blue."""
    pts = np.ascontiguousarray(points_m, dtype="<f4").reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors_rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(pts), dtype=fields)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors_rgb is not None:
        c = np.asarray(colors_rgb, dtype=np.uint8).reshape(-1, 3)
        if len(c) != len(pts):
            raise RigError(f"point cloud: {len(c)} colours for {len(pts)} points")
        rec["red"], rec["green"], rec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in fields)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment deep-dfd-rig point cloud, metres\n"
              f"element vertex {len(pts)}\n{props}end_header\n")
    return header.encode("ascii") + rec.tobytes()


def point_cloud_bytes(depth_m: np.ndarray, rgb: np.ndarray | None, k: Intrinsics) -> bytes:
    """Back-project ``depth_m`` (H, W, metres) through ``k`` into PLY bytes coloured by ``rgb``
    ((H, W, 3) uint8, resized to the depth map when it differs)."""
    pts, ok = backproject_m(depth_m, k)
    colors = None
    if rgb is not None:
        img = np.asarray(rgb)
        if img.shape[:2] != ok.shape:
            import cv2

            img = cv2.resize(img, (ok.shape[1], ok.shape[0]), interpolation=cv2.INTER_AREA)
        colors = img[..., :3][ok]
    return ply_bytes(pts, colors)


def write_point_cloud(path: Path, depth_m: np.ndarray, rgb: np.ndarray | None, k: Intrinsics) -> Path:
    """:func:`point_cloud_bytes` written atomically to ``path``; returns ``path``."""
    atomic_write_bytes(Path(path), point_cloud_bytes(depth_m, rgb, k))
    return Path(path)


def o3d_intrinsic_dict(k: Intrinsics) -> dict[str, object]:
    """Open3D ``PinholeCameraIntrinsic`` JSON: width, height, 3x3 K as 9 floats, column-major."""
    mat = np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])
    return {"width": int(k.width), "height": int(k.height),
            "intrinsic_matrix": [float(x) for x in mat.flatten(order="F")]}


def write_o3d_intrinsics(path: Path, k: Intrinsics) -> Path:
    """Write ``camera_intrinsic.json`` (see :func:`o3d_intrinsic_dict`) atomically; returns ``path``."""
    atomic_write_bytes(Path(path), (json.dumps(o3d_intrinsic_dict(k), indent=2) + "\n").encode())
    return Path(path)
