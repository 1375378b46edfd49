"""Image files: 8-bit RGB, 16-bit depth PNG in millimetres (0 = unknown), atomic writes.

RAW files (:data:`RAW_EXTS`: Nikon NEF, Adobe DNG) are read through rawpy (LibRaw): demosaiced
with the camera's white balance to 8-bit sRGB, orientation applied.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from rig.core.errors import RigError

DEPTH_MAX_MM = 65535
RAW_EXTS: tuple[str, ...] = (".nef", ".dng")


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    ``sync=False`` skips the fsync: readers still never see a partial file, and durability is left
    to a later fsync of the file and its folder (batched syncs of the live recorder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; sessions are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def encode_image(path: Path, image: np.ndarray) -> bytes:
    """Encode by the extension of ``path``; RGB arrays (H, W, 3) are written as RGB."""
    import cv2

    ext = Path(path).suffix.lower() or ".png"
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params: list[int] = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise RigError(f"{path}: cannot encode image of shape {image.shape} dtype {image.dtype}")
    return buf.tobytes()


def write_image(path: Path, image: np.ndarray) -> Path:
    """Atomically write an RGB uint8 (H, W, 3) or grey (H, W) uint8/uint16 image."""
    atomic_write_bytes(Path(path), encode_image(Path(path), image))
    return Path(path)


def read_raw_rgb(path: Path) -> np.ndarray:
    """A camera RAW file (NEF, DNG) -> (H, W, 3) uint8 sRGB via rawpy/LibRaw (camera white balance).
    Raises RigError (one line) for a missing or undecodable file or when rawpy is not installed."""
    try:
        import rawpy
    except ImportError:
        raise RigError(f"{path}: reading RAW files needs rawpy (pip install rawpy)") from None
    if not Path(path).is_file():
        raise RigError(f"{path}: missing or not a decodable image")
    try:
        with rawpy.imread(str(path)) as raw:
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8)
    except Exception as e:  # noqa: BLE001 — LibRaw's errors (truncated, unsupported) are user errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RigError(f"{path}: not a decodable RAW image ({msg})") from None
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB (RAW files through :func:`read_raw_rgb`). Raises RigError (one line)
    for a missing or undecodable file."""
    import cv2

    if Path(path).suffix.lower() in RAW_EXTS:
        return read_raw_rgb(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RigError(f"{path}: missing or not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def depth_m_to_mm_u16(depth_m: np.ndarray) -> np.ndarray:
    """float metres (NaN/≤0 = unknown) -> uint16 millimetres with 0 = unknown, clipped to 65.535 m."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mm = np.rint(np.clip(d, 0.0, DEPTH_MAX_MM / 1000.0) * 1000.0)
    return mm.astype(np.uint16)


def write_depth_mm(path: Path, depth_m: np.ndarray) -> Path:
    """Write float depth (H, W) in metres as a 16-bit PNG in millimetres (0 = unknown)."""
    if Path(path).suffix.lower() != ".png":
        raise RigError(f"{path}: depth must be written as .png (16-bit millimetres)")
    return write_image(Path(path), depth_m_to_mm_u16(depth_m))


def read_depth_m(path: Path) -> np.ndarray:
    """16-bit PNG in mm -> float32 (H, W) metres, 0 where unknown."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise RigError(f"{path}: missing or not a decodable depth PNG")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise RigError(f"{path}: expected a single-channel 16-bit PNG (depth in mm), got {img.dtype} {img.shape}")
    return img.astype(np.float32) / 1000.0
