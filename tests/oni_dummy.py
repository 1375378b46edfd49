"""Record OpenNI2's Dummy device (``uri='Dummy'``) to an ``.oni``, in a fresh interpreter.

    depth, rgb = record_dummy(tmp / "x.oni", frames=3, color=True)   # the frames read while recording

Why a subprocess: OpenNI2's recorder thread asks the Dummy driver for properties it lacks (field of
view), and each failure enters that thread in Debian libOpenNI2's per-thread error buffers. Once the
recorder is closed the thread is gone, and the next unseen thread to call OpenNI2 probes it with
``pthread_kill``: after enough other threads have come and gone (a test suite, the live loop) its
stack is unmapped and the probe segfaults the process. Real sensors report those properties, and
:mod:`acquisition.openni_driver` makes every call of its own on one long-lived thread; recording the
Dummy device once per short-lived process keeps the test process clear of dead recorder threads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RECORD_TIMEOUT_S = 60  # a hang inside OpenNI2 fails the test instead of stalling it

_SCRIPT = """
import sys
import numpy as np
from acquisition.openni_driver import OpenNISensor
path, frames, color, finalise = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
if not finalise:  # what OpenNI2 itself writes (no cropping property for the Dummy device's streams)
    OpenNISensor._finalise_recording = staticmethod(lambda p: None)
depth, rgb = [], []
with OpenNISensor(320, 240, 30, uri="Dummy", record_to=path, color=color) as cam:
    for _ in range(frames):
        depth.append(cam.read_depth())
        if color:
            rgb.append(cam.read_color())
np.savez(path + ".frames.npz", depth=np.array(depth), rgb=np.array(rgb if color else []))
print("recorded")
"""


def record_dummy(path: Path, frames: int = 3, color: bool = False,
                 finalise: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Record ``frames`` reads of the Dummy device (depth, and colour with ``color``) to ``path``;
    returns the depth and colour frames read live. ``finalise=False`` skips the cropping fix."""
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(frames), str(int(color)), str(int(finalise))],
                         cwd=REPO, capture_output=True, text=True, timeout=RECORD_TIMEOUT_S)
    assert out.returncode == 0 and out.stdout.strip() == "recorded", out.stderr[-2000:]
    saved = np.load(str(path) + ".frames.npz")
    return list(saved["depth"]), list(saved["rgb"])
