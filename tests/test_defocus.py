"""Properties of the layered synthetic defocus (rig.core.defocus), on small images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rig.core import defocus, optics
from rig.core.optics import Lens

# A lens with strong blur at small sizes: k_cam ≈ 19 px at focus 1 m (35 mm f/2, 30 µm output px).
LENS = Lens(focal_mm=35.0, f_number=2.0, pixel_um=30.0, focus_m=1.0)


def _planes_depth(h: int, w: int) -> np.ndarray:
    """Three fronto-parallel planes and a ramp, 0.5-6 m."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.full((h, w), 6.0)
    d[h // 2:] = (1.0 / (1.0 / 6.0 + (1.0 / 0.7 - 1.0 / 6.0) * (yy[h // 2:] - h // 2) / (h / 2)))
    d[h // 5:h // 2, w // 6:w // 2] = 2.5
    d[h // 3:(4 * h) // 5, (3 * w) // 5:(9 * w) // 10] = 0.5
    return d


def _rng_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _lens_for_blur(diameter_px: float, depth_m: float = 3.0) -> Lens:
    """A lens focused at 1 m whose blur at ``depth_m`` is exactly ``diameter_px``."""
    lens = Lens(focal_mm=35.0, f_number=2.0, pixel_um=30.0, focus_m=1.0)
    eps = float(optics.blur_diameter_px(depth_m, lens))
    return Lens(focal_mm=35.0, f_number=2.0, pixel_um=30.0 * eps / diameter_px, focus_m=1.0)


# ------------------------------------------------------------------------------------- layering
def test_layer_spacing_follows_the_blur_curve_on_both_sides():
    depth = np.linspace(0.4, 12.0, 4000).reshape(40, 100)
    step = 0.5
    layers = defocus.depth_layers(depth, LENS, step)
    s = layers.signed_blur_px
    assert np.allclose(np.diff(s), step)  # adjacent layers differ by max_step_px of blur
    assert s.min() < 0 < s.max() and np.any(np.isclose(s, 0.0))  # both sides, a sharp layer
    true_eps = optics.blur_diameter_px(depth, LENS)
    assert np.abs(true_eps - layers.diameter_px[layers.index]).max() <= step / 2 + 1e-5
    # the depth boundaries are the blur curve's: not a fixed metric step, wider far away
    edges = layers.edges_m
    assert np.all(np.diff(edges[np.isfinite(edges)]) > 0)
    widths = np.diff(edges[np.isfinite(edges)])
    assert widths[-1] > 10 * widths[0]
    for k in (0, len(layers) // 2, len(layers) - 1):
        sel = layers.index == k
        assert np.all(depth[sel] >= edges[k] * (1 - 1e-6)) and np.all(depth[sel] < edges[k + 1] * (1 + 1e-6))


def test_unknown_depth_takes_the_nearest_known_value():
    depth = _planes_depth(40, 60)
    holes = depth.copy()
    holes[5:9, 5:50] = 0.0
    holes[30:33, 10:20] = np.nan
    filled = defocus.fill_depth(holes)
    assert np.all(filled > 0)
    assert np.allclose(filled[depth == holes], depth[depth == holes])
    img = _rng_image(40, 60)
    expect = defocus.render_defocus(img, filled, LENS)
    assert np.allclose(defocus.render_defocus(img, holes, LENS), expect)
    valid = np.ones_like(depth, bool)
    valid[5:9, 5:50] = False
    assert np.allclose(defocus.render_defocus(img, depth, LENS, valid=valid),
                       defocus.render_defocus(img, defocus.fill_depth(depth, valid), LENS))
    with pytest.raises(ValueError, match="no valid pixel"):
        defocus.render_defocus(img, np.zeros((40, 60)), LENS)


# ------------------------------------------------------------------------------------ energy
@pytest.mark.parametrize("psf", ["gaussian", "disk"])
def test_flat_image_stays_flat_including_borders(psf):
    depth = _planes_depth(48, 72)
    flat = np.full((48, 72, 3), (0.2, 0.5, 0.9), np.float32)
    out = defocus.render_defocus(flat, depth, LENS, psf=psf)
    assert np.abs(out - flat).max() < 1e-5
    flat8 = np.full((48, 72, 3), (13, 128, 250), np.uint8)
    assert np.array_equal(defocus.render_defocus(flat8, depth, LENS, psf=psf), flat8)


def test_dtypes_and_shapes_are_kept():
    depth = _planes_depth(20, 30)
    img = _rng_image(20, 30)
    for a in (img, img.astype(np.float64), (img * 255).astype(np.uint8), img[..., 0]):
        out = defocus.render_defocus(a, depth, LENS)
        assert out.dtype == a.dtype and out.shape == a.shape
    with pytest.raises(ValueError, match="sizes differ"):
        defocus.render_defocus(img, depth[:10], LENS)


# --------------------------------------------------------------------------------------- PSFs
def test_fronto_parallel_plane_is_one_gaussian_convolution():
    eps = 12.0
    lens = _lens_for_blur(eps)
    img = _rng_image(40, 56, seed=1)
    out = defocus.render_defocus(img, np.full((40, 56), 3.0), lens, psf="gaussian", rho=0.3)
    # independent reference: SciPy's Gaussian of the same σ (our kernel's variance is exactly σ²)
    sigma = 0.3 * eps
    ref = np.stack([ndimage.gaussian_filter(img[..., c], sigma, mode="mirror", truncate=3.0) for c in range(3)], -1)
    assert np.abs(out - ref).max() < 2e-3
    # and exactly our kernel applied once
    k = defocus.gaussian_kernel_1d(0.3 * eps)
    once = np.stack([ndimage.convolve1d(ndimage.convolve1d(img[..., c], k, axis=0, mode="mirror"), k, axis=1,
                                        mode="mirror") for c in range(3)], -1)
    assert np.abs(out - once).max() < 1e-5


def test_fronto_parallel_plane_is_one_disk_convolution():
    eps = 9.0
    lens = _lens_for_blur(eps)
    img = _rng_image(36, 44, seed=2)
    out = defocus.render_defocus(img, np.full((36, 44), 3.0), lens, psf="disk")
    k = defocus.disk_kernel(eps)
    ref = np.stack([ndimage.correlate(img[..., c], k, mode="mirror") for c in range(3)], -1)
    assert np.abs(out - ref).max() < 1e-5


def test_disk_kernel_is_a_uniform_disk_of_the_diameter():
    for eps in (3.0, 8.0, 15.5):
        k = defocus.disk_kernel(eps)
        assert abs(k.sum() - 1.0) < 1e-12 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        area_px = 1.0 / k.max()  # interior weight = 1 / area
        assert area_px == pytest.approx(np.pi * eps * eps / 4, rel=0.03)
        r = k.shape[0] // 2
        assert r == int(np.ceil(eps / 2 + 0.5)) - 1
    assert defocus.disk_kernel(0.8).shape == (1, 1)


def _edge_profile(diameter_px: float, psf: str) -> np.ndarray:
    """Row profile of a vertical black|white edge on a plane blurred by ``diameter_px``."""
    img = np.zeros((30, 120, 3), np.float32)
    img[:, 60:] = 1.0
    out = defocus.render_defocus(img, np.full((30, 120), 3.0), _lens_for_blur(diameter_px), psf=psf)
    return out[15, :, 0].astype(np.float64)


def _crossing(profile: np.ndarray, level: float) -> float:
    """Sub-pixel x where the increasing profile first reaches ``level``."""
    i = int(np.argmax(profile >= level))
    return i - 1 + (level - profile[i - 1]) / (profile[i] - profile[i - 1])


@pytest.mark.parametrize("eps", [6.0, 14.0])
def test_step_edge_spreads_by_the_thin_lens_diameter(eps):
    disk = _edge_profile(eps, "disk")
    ramp = np.flatnonzero((disk > 1e-6) & (disk < 1 - 1e-6))
    assert ramp.size == pytest.approx(eps, abs=1.01)  # support width of the disk's edge = ε
    gauss = _edge_profile(eps, "gaussian")
    width_10_90 = _crossing(gauss, 0.9) - _crossing(gauss, 0.1)
    assert width_10_90 == pytest.approx(2 * 1.2816 * 0.3 * eps, rel=0.06)
    assert _crossing(disk, 0.5) == pytest.approx(59.5, abs=0.05)  # no shift
    assert width_10_90 < ramp.size  # ρ = 0.3: the Gaussian is the narrower PSF


def test_disk_and_gaussian_differ_but_agree_on_energy():
    img = _rng_image(30, 40, seed=3)
    lens = _lens_for_blur(10.0)
    depth = np.full((30, 40), 3.0)
    g = defocus.render_defocus(img, depth, lens, psf="gaussian")
    d = defocus.render_defocus(img, depth, lens, psf="disk")
    assert np.abs(g - d).max() > 0.02
    assert abs(float(g.mean()) - float(d.mean())) < 0.01


# ---------------------------------------------------------------------------------- occlusion
def _two_planes(near_m: float, far_m: float, focus_m: float, near_value: float = 1.0,
                far_value: float = 0.3) -> tuple[np.ndarray, np.ndarray, Lens]:
    img = np.full((24, 100, 3), far_value, np.float32)
    img[:, :50] = near_value
    depth = np.full((24, 100), far_m)
    depth[:, :50] = near_m
    return img, depth, Lens(focal_mm=35.0, f_number=2.0, pixel_um=30.0, focus_m=focus_m)


def test_near_blurred_object_spreads_over_a_sharp_far_background():
    img, depth, lens = _two_planes(0.6, 3.0, focus_m=3.0)  # far sharp, near ε ≈ 25 px
    eps = float(optics.blur_diameter_px(0.6, lens))
    sigma = 0.3 * eps
    out = defocus.render_defocus(img, depth, lens)[12, :, 0]
    # the near colour bleeds onto the far side: the edge looks like the blurred step of the near plane
    expect = 0.3 + 0.7 * ndimage.gaussian_filter1d((np.arange(100) < 50).astype(float), sigma, mode="nearest")
    assert out[50 + int(sigma)] > 0.3 + 0.05
    assert np.abs(out[30:70] - expect[30:70]).max() < 0.03
    # and the far layer behind the blurred edge is seen through it (layer extension): no dark seam
    assert out[20:80].min() >= 0.3 - 1e-4


def test_sharp_near_object_is_not_blurred_over_by_the_far_background():
    img, depth, lens = _two_planes(1.0, 6.0, focus_m=1.0)  # near sharp, far ε ≈ 20 px
    assert float(optics.blur_diameter_px(6.0, lens)) > 15
    out = defocus.render_defocus(img, depth, lens)[12, :, 0]
    assert np.allclose(out[:50], 1.0, atol=1e-6)  # the near edge stays sharp
    assert np.allclose(out[50:], 0.3, atol=1e-4)  # no near colour leaks into the blurred background
    assert out[50] < 0.3 + 1e-4  # not even right at the edge


def test_blurred_background_is_not_darkened_at_occlusion_edges():
    """A far textured plane cut by a sharp near object keeps its mean level next to the cut."""
    rng = np.random.default_rng(4)
    img = np.repeat(rng.random((1, 100, 3)).astype(np.float32) * 0.4 + 0.4, 30, axis=0)
    depth = np.full((30, 100), 6.0)
    depth[:, 40:60] = 1.0  # sharp bar in front
    img[:, 40:60] = 0.0  # black bar: any leak or darkening lowers the background
    lens = Lens(focal_mm=35.0, f_number=2.0, pixel_um=30.0, focus_m=1.0)
    out = defocus.render_defocus(img, depth, lens)
    ref = defocus.render_defocus(img[:, :40], depth[:, :40], lens)  # the background alone, no bar
    assert np.allclose(out[:, 40:60], 0.0, atol=1e-6)
    assert np.abs(out[:, 30:40] - ref[:, 30:40]).max() < 0.05
    assert out[:, 34:40].mean() > 0.4


# -------------------------------------------------------------------------- implementations agree
@pytest.mark.parametrize("psf", ["gaussian", "disk"])
def test_fast_equals_straightforward(psf):
    img = _rng_image(48, 64, seed=5)
    depth = _planes_depth(48, 64)
    fast = defocus.render_defocus(img, depth, LENS, psf=psf)
    assert np.abs(fast - defocus.render_defocus_direct(img, depth, LENS, psf=psf)).max() < 1e-5
    assert np.abs(fast - defocus.render_defocus_direct(img, depth, LENS, psf=psf, shared_prep=True)).max() < 1e-5
    assert np.abs(fast - img).max() > 0.1  # it did blur
    assert np.array_equal(fast, defocus.render_defocus(img, depth, LENS, psf=psf, threads=1))
    assert np.array_equal(fast, defocus.render_defocus(img, depth, LENS, psf=psf, threads=3))


@pytest.mark.parametrize("psf", ["gaussian", "disk"])
def test_torch_equals_numpy(psf):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    img = _rng_image(32, 48, seed=6)
    depth = _planes_depth(32, 48)
    fast = defocus.render_defocus(img, depth, LENS, psf=psf)
    out = defocus.render_defocus_torch(img, depth, LENS, psf=psf, device="cpu")
    assert out.dtype == img.dtype and np.abs(out - fast).max() < 1e-5
    img8 = (img * 255).astype(np.uint8)
    diff = defocus.render_defocus_torch(img8, depth, LENS, psf=psf).astype(int) - defocus.render_defocus(img8, depth, LENS, psf=psf)
    assert np.abs(diff).max() <= 1
