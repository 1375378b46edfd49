"""Typed records passed between stages, and the on-disk names of a capture.

Pixel convention everywhere: OpenCV's — pixel (u, v) has its centre at integer coordinates, the
top-left pixel's centre is (0, 0). Scaling an image by s maps a coordinate x to (x + 0.5)·s − 0.5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# --- files inside a session's raw/<capture-id>/ folder -------------------------------------------
DEFOCUSED_NAME = "defocused.jpg"  # the f/2.8 shot, as the DSLR wrote it (full sensor resolution)
ALL_IN_FOCUS_NAME = "all_in_focus.jpg"  # the f/8 shot
DEPTH_FRAME_NAME = "depth_{:03d}.png"  # raw burst frames, uint16 in millimetres, 0 = no measurement
DEPTH_FUSED_NAME = "depth_fused.png"  # per-pixel median of the burst ignoring zeros, uint16 mm
IR_NAME = "ir.png"  # IR frame (uint8/uint16) when the sensor has one
CAPTURE_META_NAME = "capture.yaml"  # a serialised Capture (written last, before the journal line)
TRUTH_DIR = "truth"  # simulated rig only: ground truth for tests (depth_dslr.png at output size)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera + OpenCV distortion (k1, k2, p1, p2, k3). Sizes and focal lengths in px."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """3x3 K as float64."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera resampled to ``width`` x ``height`` (pixel-centre convention above)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                          cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5, dist=self.dist)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dist"] = list(self.dist)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Intrinsics":
        return Intrinsics(width=int(d["width"]), height=int(d["height"]), fx=float(d["fx"]), fy=float(d["fy"]),
                          cx=float(d["cx"]), cy=float(d["cy"]), dist=tuple(float(x) for x in d.get("dist", ())))

    @staticmethod
    def from_hfov(width: int, height: int, hfov_deg: float) -> "Intrinsics":
        """Ideal centred pinhole with the given horizontal field of view."""
        fx = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
        return Intrinsics(width=width, height=height, fx=float(fx), fy=float(fx),
                          cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


@dataclass(frozen=True)
class Extrinsics:
    """Rigid transform taking points in frame A to frame B: X_b = R·X_a + t (t in metres)."""

    rotation: tuple[tuple[float, float, float], ...]  # 3x3 row-major
    translation_m: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous transform."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.rotation, dtype=np.float64)
        m[:3, 3] = np.asarray(self.translation_m, dtype=np.float64)
        return m

    @staticmethod
    def from_matrix(m: np.ndarray) -> "Extrinsics":
        m = np.asarray(m, dtype=np.float64)
        return Extrinsics(rotation=tuple(tuple(float(x) for x in row) for row in m[:3, :3]),
                          translation_m=tuple(float(x) for x in m[:3, 3]))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"rotation": [list(r) for r in self.rotation], "translation_m": list(self.translation_m)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Extrinsics":
        return Extrinsics(rotation=tuple(tuple(float(x) for x in r) for r in d["rotation"]),
                          translation_m=tuple(float(x) for x in d["translation_m"]))  # type: ignore[arg-type]


@dataclass
class DslrShot:
    """One DSLR exposure as saved: settings read back from the camera and from the file's EXIF."""

    file: str  # path relative to the capture folder
    f_number: float
    shutter_s: float
    iso: int
    exif: dict[str, Any] = field(default_factory=dict)  # FNumber, ExposureTime, ISO, FocalLength, DateTimeOriginal…
    t_monotonic_s: float = 0.0
    t_wall: str = ""  # ISO 8601 UTC


@dataclass
class DepthBurst:
    """N depth frames (files, uint16 in mm) + the fused frame, with the sensor's geometry."""

    files: list[str]
    fused_file: str
    intrinsics: Intrinsics  # of the depth (IR) camera
    depth_scale_m: float  # metres per raw unit as the sensor reports it (files are always mm)
    ir_file: str | None = None
    t_monotonic_s: float = 0.0
    t_wall: str = ""


@dataclass
class Capture:
    """Everything captured for one scene (serialised to raw/<id>/capture.yaml)."""

    capture_id: str
    scene_id: str
    defocused: DslrShot
    all_in_focus: DslrShot
    depth: DepthBurst | None
    config_snapshot_id: str
    dslr_intrinsics: Intrinsics | None = None  # nominal (from the lens model) or calibrated
    depth_to_dslr: Extrinsics | None = None  # sensor -> DSLR, known for the simulated rig
    focus_m: float | None = None
    t_monotonic_s: float = 0.0
    t_wall: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RegisteredFrame:
    """A training sample in the DSLR frame at output size.

    defocused_rgb, all_in_focus_rgb: (H, W, 3) uint8; depth_m: (H, W) float32, 0 = unknown;
    valid: (H, W) uint8 — VALID_MEASURED, VALID_FILLED or VALID_UNKNOWN.
    """

    frame_id: str
    defocused_rgb: np.ndarray
    all_in_focus_rgb: np.ndarray
    depth_m: np.ndarray
    valid: np.ndarray
    intrinsics: Intrinsics


VALID_UNKNOWN = 0
VALID_MEASURED = 255
VALID_FILLED = 128


def _shot_to_dict(s: DslrShot) -> dict[str, Any]:
    return {"file": s.file, "f_number": float(s.f_number), "shutter_s": float(s.shutter_s), "iso": int(s.iso),
            "exif": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in s.exif.items()},
            "t_monotonic_s": float(s.t_monotonic_s), "t_wall": s.t_wall}


def _shot_from_dict(d: dict[str, Any]) -> DslrShot:
    return DslrShot(file=str(d["file"]), f_number=float(d["f_number"]), shutter_s=float(d["shutter_s"]),
                    iso=int(d["iso"]), exif=dict(d.get("exif") or {}), t_monotonic_s=float(d.get("t_monotonic_s", 0.0)),
                    t_wall=str(d.get("t_wall", "")))


def capture_to_dict(c: Capture) -> dict[str, Any]:
    """Plain-YAML form of a Capture (inverse: :func:`capture_from_dict`)."""
    depth = None
    if c.depth is not None:
        depth = {"files": list(c.depth.files), "fused_file": c.depth.fused_file,
                 "intrinsics": c.depth.intrinsics.to_dict(), "depth_scale_m": float(c.depth.depth_scale_m),
                 "ir_file": c.depth.ir_file, "t_monotonic_s": float(c.depth.t_monotonic_s), "t_wall": c.depth.t_wall}
    return {
        "capture_id": c.capture_id, "scene_id": c.scene_id,
        "defocused": _shot_to_dict(c.defocused), "all_in_focus": _shot_to_dict(c.all_in_focus),
        "depth": depth, "config_snapshot_id": c.config_snapshot_id,
        "dslr_intrinsics": c.dslr_intrinsics.to_dict() if c.dslr_intrinsics else None,
        "depth_to_dslr": c.depth_to_dslr.to_dict() if c.depth_to_dslr else None,
        "focus_m": c.focus_m, "t_monotonic_s": float(c.t_monotonic_s), "t_wall": c.t_wall,
        "extra": dict(c.extra),
    }


def capture_from_dict(d: dict[str, Any]) -> Capture:
    """Parse :func:`capture_to_dict` output; KeyError/TypeError/ValueError on a malformed mapping."""
    dep = d.get("depth")
    depth = None
    if dep:
        depth = DepthBurst(files=[str(x) for x in dep["files"]], fused_file=str(dep["fused_file"]),
                           intrinsics=Intrinsics.from_dict(dep["intrinsics"]),
                           depth_scale_m=float(dep["depth_scale_m"]), ir_file=dep.get("ir_file"),
                           t_monotonic_s=float(dep.get("t_monotonic_s", 0.0)), t_wall=str(dep.get("t_wall", "")))
    return Capture(
        capture_id=str(d["capture_id"]), scene_id=str(d["scene_id"]),
        defocused=_shot_from_dict(d["defocused"]), all_in_focus=_shot_from_dict(d["all_in_focus"]),
        depth=depth, config_snapshot_id=str(d.get("config_snapshot_id", "")),
        dslr_intrinsics=Intrinsics.from_dict(d["dslr_intrinsics"]) if d.get("dslr_intrinsics") else None,
        depth_to_dslr=Extrinsics.from_dict(d["depth_to_dslr"]) if d.get("depth_to_dslr") else None,
        focus_m=None if d.get("focus_m") is None else float(d["focus_m"]),
        t_monotonic_s=float(d.get("t_monotonic_s", 0.0)), t_wall=str(d.get("t_wall", "")),
        extra=dict(d.get("extra") or {}),
    )
