"""Geometry of the simulated rig, derived from the rig config (shared by the simulated devices,
the calibration tests and the registration tests).

DSLR: ideal pinhole at sensor resolution, fx = focal_mm / pixel_mm, centred. Depth sensor: pinhole
with the configured horizontal FOV. Extrinsics depth -> DSLR: X_dslr = R·X_depth + t, R = Rz·Ry·Rx
from ``simulated.sensor_rotation_deg`` (x, y, z), t = ``simulated.sensor_offset_mm`` / 1000.
"""

from __future__ import annotations

import numpy as np

from rig.core.config import RigConfig
from rig.core.records import Extrinsics, Intrinsics


def dslr_intrinsics(cfg: RigConfig, output_size: bool = False) -> Intrinsics:
    """The virtual DSLR at sensor resolution (or scaled to the output size)."""
    w, h = cfg.dslr.sensor_px
    f_px = cfg.dslr.focal_mm / (cfg.dslr.pixel_um * 1e-3)
    k = Intrinsics(width=w, height=h, fx=f_px, fy=f_px, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0)
    return k.scaled(*cfg.output.size_px) if output_size else k


def depth_intrinsics(cfg: RigConfig) -> Intrinsics:
    """The virtual depth (IR) camera."""
    w, h = cfg.depth_sensor.size_px
    return Intrinsics.from_hfov(w, h, cfg.depth_sensor.hfov_deg)


def rotation_xyz_deg(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rz·Ry·Rx for angles in degrees."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def depth_to_dslr(cfg: RigConfig) -> Extrinsics:
    """The known transform from the depth sensor's frame to the DSLR's frame."""
    m = np.eye(4)
    m[:3, :3] = rotation_xyz_deg(*cfg.simulated.sensor_rotation_deg)
    m[:3, 3] = np.asarray(cfg.simulated.sensor_offset_mm, dtype=np.float64) / 1000.0
    return Extrinsics.from_matrix(m)
