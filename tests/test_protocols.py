import warnings

import numpy as np
import pytest

from acquisition.protocols import fuse_depth_burst


def test_fuse_ignores_zeros_hand_computed():
    f = [np.array([[0, 10], [3, 0]], np.uint16), np.array([[0, 12], [5, 0]], np.uint16),
         np.array([[0, 11], [0, 7]], np.uint16)]
    assert fuse_depth_burst(f).tolist() == [[0, 11], [4, 7]]


def test_fuse_matches_nanmedian():
    rng = np.random.default_rng(1)
    st = rng.integers(1, 9000, (6, 40, 50)).astype(np.uint16)
    st[rng.random(st.shape) < 0.4] = 0
    ref = st.astype(np.float64)
    ref[st == 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nan_to_num(np.rint(np.nanmedian(ref, axis=0)), nan=0).astype(np.uint16)
    out = fuse_depth_burst(st)
    assert out.dtype == np.uint16 and np.array_equal(out, ref)


def test_fuse_rejects_empty():
    with pytest.raises(ValueError):
        fuse_depth_burst(np.zeros((0, 4, 4), np.uint16))
