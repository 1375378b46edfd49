"""Registration: calibration, depth -> DSLR reprojection, hole filling, resampling, dataset building."""
