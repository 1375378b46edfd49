"""The virtual Kinect-like depth sensor (:class:`SimulatedDepthSensor`)."""

from __future__ import annotations

import time

import numpy as np

from acquisition.protocols import DeviceDisconnected, DeviceTimeout
from acquisition.simulated.faults import _timed
from acquisition.simulated.world import SimulatedRig
from rig.core.config import RigConfig
from rig.core.records import Intrinsics


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
