"""Calibration boards in the simulated world: object points and board textures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from acquisition.simulated.scenes import Plane, _Noise


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
