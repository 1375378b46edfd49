"""Simulated devices' time and faults: nominal latencies, the device clock, seeded fault injection."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np


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
