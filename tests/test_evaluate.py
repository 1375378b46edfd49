"""rig eval details: the NYUv2 crop is applied once, pooled metrics honour it."""

from __future__ import annotations

import numpy as np
import pytest

from inference.data import write_synthetic_dataset


def test_crop_not_applied_twice_and_pooled_metrics_honour_it(tmp_path):
    """A dataset already at NYUv2's crop (manifest nyu_cropped) is not cropped again; pooled metrics
    use the same crop as the per-image ones."""
    from inference.evaluate import already_cropped
    from inference.metrics import eigen_crop, pooled_metrics
    from rig.core import dataset as rds

    root = write_synthetic_dataset(tmp_path / "ds", n=2, splits=("test",))
    assert not already_cropped(root)
    man = rds.read_manifest(root)
    man["nyu_cropped"] = True
    rds.write_manifest(root, man)
    assert already_cropped(root)
    gt = np.full((48, 64), 2.0)
    pred = gt.copy()
    pred[~eigen_crop(gt.shape)] = 20.0  # wrong only outside the crop
    assert pooled_metrics([pred], [gt], crop=True)["rel"] == pytest.approx(0.0)
    assert pooled_metrics([pred], [gt])["rel"] > 0.1
