"""The simulated rig: the embedded default when no hardware is attached.

A seeded procedural 3-D world (textured planes and boxes: rooms with furniture, or streets with
facades, trees and a sky backdrop) is ray-cast per pixel with vectorised NumPy for any pinhole camera,
using the rig geometry of :mod:`acquisition.sim_geometry`. On top of it:

* :class:`SimulatedDslr` (:class:`acquisition.protocols.Dslr`): offered f-numbers (1.8…22 in 1/3
  stops), shutter speeds (1/4000…30 s) and ISO (100…6400), validated before being set; a capture
  renders the all-in-focus linear image at ``min(sensor, 2 × output)`` resolution (cached per scene),
  applies :func:`rig.core.defocus.render_defocus` for the current aperture and the configured focus,
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

Parts: :mod:`.scenes` (textures, geometry, scene builder, ray casting), :mod:`.boards` (calibration
boards), :mod:`.world` (:class:`SimulatedRig`), :mod:`.dslr` (:class:`SimulatedDslr`),
:mod:`.depth_sensor` (:class:`SimulatedDepthSensor`), :mod:`.faults` (latencies, clock, faults).
Everything is re-exported here, so ``from acquisition.simulated import X`` keeps working.
"""

from __future__ import annotations

from acquisition.simulated.faults import LATENCY_S, DeviceClock, FaultInjector
from acquisition.simulated.scenes import (Texture, Vec3, Plane, Box, Surface, Scene, SURFACE_TEXTURES,
                                          make_indoor, make_outdoor, make_scene, pixel_coords, View, Render,
                                          render_view)
from acquisition.simulated.boards import BOARD_KINDS, board_object_points, board_surface
from acquisition.simulated.world import (PROJECTOR_BASELINE_M, DISPARITY_STEP_PX, DISPARITY_NOISE_PX,
                                         DROPOUT_RATE, EDGE_DROPOUT_RATE, FULL_WELL_E, READ_NOISE,
                                         SimulatedRig)
from acquisition.simulated.dslr import (F_NUMBERS, SHUTTER_CHOICES, ISO_CHOICES, CAPTURE_TARGETS,
                                        IMAGE_FORMATS, exif_app1, insert_app1, SimulatedDslr)
from acquisition.simulated.depth_sensor import SimulatedDepthSensor
from rig.core.config import RigConfig

__all__ = ["LATENCY_S", "DeviceClock", "FaultInjector", "Texture", "Vec3", "Plane", "Box", "Surface", "Scene",
           "SURFACE_TEXTURES", "make_indoor", "make_outdoor", "make_scene", "pixel_coords", "View", "Render",
           "render_view", "BOARD_KINDS", "board_object_points", "board_surface", "PROJECTOR_BASELINE_M",
           "DISPARITY_STEP_PX", "DISPARITY_NOISE_PX", "DROPOUT_RATE", "EDGE_DROPOUT_RATE", "FULL_WELL_E",
           "READ_NOISE", "SimulatedRig", "F_NUMBERS", "SHUTTER_CHOICES", "ISO_CHOICES", "CAPTURE_TARGETS",
           "IMAGE_FORMATS", "exif_app1", "insert_app1", "SimulatedDslr", "SimulatedDepthSensor",
           "open_simulated_rig"]


def open_simulated_rig(cfg: RigConfig, dslr: bool = True, depth: bool = True
                       ) -> tuple[SimulatedRig, SimulatedDslr | None, SimulatedDepthSensor | None]:
    """One world shared by a simulated DSLR and/or depth sensor."""
    rig = SimulatedRig(cfg)
    return rig, (SimulatedDslr(cfg, rig) if dslr else None), (SimulatedDepthSensor(cfg, rig) if depth else None)
