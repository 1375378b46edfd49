"""The NYUv2 labelled set in the training-dataset layout (``rig import-nyu``).

Reads ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 / HDF5) and the official ``splits.mat`` (795 train
/ 654 test) and writes ``OUT/<split>/N8/<id>.png`` (the RGB image, all in focus), ``depth/<id>.png``
(16-bit mm) and ``valid/<id>.png`` for both splits, plus ``manifest.yaml``. Images are cropped to
the 561x427 valid-projection region (paper 1; the Eigen crop), and the manifest says so
(``nyu_cropped: true``) so that ``rig eval --crop`` does not crop them a second time. The synthetic
defocus (``rig synth --nyu ... --out out/synth/nyuv2_focus2``) then provides the N2_8 input of
the ``nyuv2_focus*`` presets through ``data.input_dir``. Ids are the 1-based NYU index ('0001').
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from rig.core.dataset import Sample, write_manifest, write_sample
from rig.core.datasets import load_nyu


def import_nyu(mat_path: Path, splits_path: Path, out: Path, limit: int | None = None,
               progress: Callable[[str, str], None] = lambda split, sid: None) -> dict[str, int]:
    """Write both official splits; returns {split: images written}. ``limit``: per split, for tests."""
    counts: dict[str, int] = {}
    for split in ("train", "test"):
        n = 0
        for sid, rgb, depth_m in load_nyu(Path(mat_path), Path(splits_path), split=split, crop=True):
            valid = np.where(depth_m > 0, 255, 0).astype(np.uint8)
            write_sample(out, split, Sample(sid, None, rgb, depth_m.astype(np.float32), valid))
            progress(split, sid)
            n += 1
            if limit is not None and n >= limit:
                break
        counts[split] = n
    write_manifest(out, {"source": f"NYUv2 labelled set {Path(mat_path).name}", "splits": counts,
                         "nyu_cropped": True, "inputs": {"N8": "RGB (all in focus)"},
                         "note": "N2_8 comes from `rig synth --nyu` (data.input_dir)"})
    return counts
