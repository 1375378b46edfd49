"""The simulated world shared by the virtual DSLR and depth sensor (:class:`SimulatedRig`)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from acquisition import sim_geometry
from acquisition.simulated.boards import board_surface
from acquisition.simulated.faults import LATENCY_S, DeviceClock, FaultInjector
from acquisition.simulated.scenes import (_GAMMA_LEVELS, _GAMMA_LUT, Scene, View, _dot3, _hash2, _srgb_to_linear,
                                          make_scene, render_view)
from rig.core.config import RigConfig
from rig.core.optics import Lens, exposure_stops
from rig.core.records import Extrinsics


PROJECTOR_BASELINE_M = 0.075  # Kinect-like projector to IR-camera distance, along the sensor's +x
DISPARITY_STEP_PX = 1.0 / 8.0  # Kinect v1 sub-pixel disparity resolution
DISPARITY_NOISE_PX = 0.06  # per-frame disparity noise σ (→ σ_z = z²·σ_d/(b·f))
DROPOUT_RATE = 0.01  # random per-frame dropouts
EDGE_DROPOUT_RATE = 0.35  # dropout probability at depth discontinuities
FULL_WELL_E = 20000.0  # electrons at ISO 100 for a linear value of 1 (photon noise)
READ_NOISE = 0.0015  # linear units


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
        """The aperture's defocused linear RGB at ``render_size`` (rig.core.defocus layered blur, cached)."""
        key = ("defocus", round(float(f_number), 4), self.cfg.dslr.focus_m)
        if key not in self._cache:
            from rig.core.defocus import render_defocus

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
            from rig.core.defocus import render_defocus

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
