"""The classical baseline (Zhuo & Sim 2011): its parts, where it works and where it must fail.

Synthetic scenes are rendered with the rig's layered defocus (rig.core.defocus.render_defocus) through the
simulated rig's lens (35 mm f/2.8 at 36.6 µm output pixels, focus 2 m: k_cam = 6.08 px, depth of
field 1.72-2.39 m for a 1 px blur) on a random block texture, 96x144 px.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference import baseline_zhuo as zb
from rig.core import optics
from rig.core.config import load_rig_config
from rig.core.defocus import gaussian_kernel_1d, render_defocus
from rig.core.errors import RigError

H, W = 96, 144
PARAMS = zb.ZhuoParams(work_px=0)
MARGIN = 10  # px kept away from the image border and from the step between the two halves


@pytest.fixture(scope="module")
def lens():
    return load_rig_config("simulated").lens("defocused")


def tiny_config():
    """The simulated rig cut to a W x H output with the same optics per output pixel (downsample 2)."""
    return load_rig_config("simulated", {"dslr.sensor_px": [2 * W, 2 * H], "output.size_px": [W, H]})


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(30, 225, (H // 8, W // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)


def halves(left_m: float, right_m: float) -> np.ndarray:
    d = np.full((H, W), left_m)
    d[:, W // 2:] = right_m
    return d


def run(texture, lens, depth, side="far", noise=0.0, seed=1) -> zb.ZhuoResult:
    img = render_defocus(texture, depth, lens, psf="gaussian", rho=0.3)
    if noise:
        img = np.clip(img + np.random.default_rng(seed).normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    return zb.estimate_defocus(img, lens, rho=0.3, side=side, params=PARAMS)


def medians(a: np.ndarray) -> tuple[float, float]:
    inner = a[MARGIN:-MARGIN]
    return (float(np.median(inner[:, MARGIN:W // 2 - MARGIN])), float(np.median(inner[:, W // 2 + MARGIN:-MARGIN])))


# ------------------------------------------------------------------------------------ the parts
@pytest.mark.parametrize("sigma_px", [0.6, 1.2, 2.0])
def test_gradient_ratio_measures_a_known_gaussian_blur(sigma_px):
    import cv2

    rng = np.random.default_rng(3)
    img = np.kron(rng.uniform(0.2, 0.8, (10, 14)), np.ones((12, 12))).astype(np.float32)
    k = gaussian_kernel_1d(sigma_px).astype(np.float32)
    img = cv2.sepFilter2D(img, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)
    edges = zb.detect_edges(img, PARAMS)
    raw = zb.edge_sigma(img, edges, PARAMS)
    vals = raw[edges & (raw > 0)]
    assert vals.size > 200
    sigma = np.sqrt(np.maximum(vals ** 2 - zb.operator_sigma_px(PARAMS) ** 2, 0))
    assert np.median(sigma) == pytest.approx(sigma_px, rel=0.12)


def test_operator_blur_is_that_of_a_sharp_edge():
    floor = zb.operator_sigma_px(PARAMS)
    assert 0.5 < floor < 1.3  # Gaussian derivative σ 0.5 + central difference + pixel sampling
    assert zb.operator_sigma_px(zb.ZhuoParams(grad_sigma_px=1.0)) > floor


def test_joint_bilateral_removes_outliers_but_not_across_image_edges():
    guide = np.full((40, 40), 0.2, np.float32)
    guide[:, 20:] = 0.8
    values = np.where(guide < 0.5, 1.0, 3.0).astype(np.float32)
    mask = np.zeros((40, 40), bool)
    mask[::2, :] = True
    values[10, 6] = 5.0  # an outlier among its neighbours
    out = zb.joint_bilateral_sparse(values, mask, guide, sigma_s_px=3.0, sigma_r=0.1)
    assert out[10, 6] < 1.5
    assert np.allclose(out[mask & (guide > 0.5)], 3.0, atol=1e-3)  # the other side does not leak in
    assert np.all(out[~mask] == 0)


def test_matting_laplacian_is_symmetric_psd_with_constants_in_its_null_space():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (7, 9, 3))
    lap = zb.matting_laplacian(img, eps=1e-4)
    assert lap.shape == (63, 63)
    assert abs(lap - lap.T).max() < 1e-9
    assert np.abs(lap @ np.ones(63)).max() < 1e-9
    x = rng.normal(size=(20, 63))
    assert np.all(np.einsum("ki,ij,kj->k", x, lap.toarray(), x) > -1e-9)


def test_propagation_fills_a_constant_from_sparse_edges(texture):
    mask = np.zeros((H, W), bool)
    mask[::7, ::5] = True
    full = zb.propagate(np.where(mask, 1.5, 0).astype(np.float32), mask, texture, PARAMS)
    assert full.shape == (H, W)
    assert np.allclose(full, 1.5, atol=0.02)


def test_blur_to_depth_inverts_the_thin_lens_on_the_chosen_side(lens):
    for side, depth in (("far", np.array([2.5, 4.0, 9.0])), ("near", np.array([0.8, 1.2, 1.6]))):
        sigma = 0.3 * optics.blur_diameter_px(depth, lens)
        eps, back = zb.sigma_to_depth_m(sigma, lens, 0.3, side)
        assert np.allclose(back, depth, rtol=1e-5)
    # blur at (or beyond) the far asymptote k_cam is clipped: finite, far away
    eps, far = zb.sigma_to_depth_m(np.array([0.3 * 2 * optics.k_cam_px(lens)]), lens, 0.3, "far")
    assert np.isfinite(far).all() and far[0] == pytest.approx(lens.focus_m / 0.02, rel=1e-4)  # 1/(1 − 0.98)


def test_a_flat_image_has_no_edges_and_says_so(lens):
    with pytest.raises(RigError, match="no edges"):
        zb.estimate_defocus(np.full((32, 48, 3), 128, np.uint8), lens, params=PARAMS)


# ------------------------------------------------------------------------ where it works / fails
def test_works_behind_the_focal_plane(texture, lens):
    """Two planes behind focus (3 m and 6 m): the blur comes back within 15%, the order and the depths
    within 25% (a blur error costs more depth the nearer the blur is to its far asymptote k_cam)."""
    res = run(texture, lens, halves(3.0, 6.0), noise=1.0)
    b_left, b_right = medians(res.blur_px)
    true = optics.blur_diameter_px(np.array([3.0, 6.0]), lens)
    assert b_left == pytest.approx(true[0], rel=0.15) and b_right == pytest.approx(true[1], rel=0.15)
    left, right = medians(res.depth_m)
    assert left == pytest.approx(3.0, rel=0.25)
    assert right == pytest.approx(6.0, rel=0.25)
    assert right > 1.5 * left


def test_front_and_behind_the_focal_plane_are_ambiguous(texture, lens):
    """1.5 m and 3 m blur alike (ε = k_cam/3 = 2.03 px): the defocus map cannot tell them apart.
    Assuming 'far' puts both at 3 m; assuming 'near' puts both at 1.5 m."""
    true = optics.blur_diameter_px(np.array([1.5, 3.0]), lens)
    assert true[0] == pytest.approx(true[1], rel=1e-9)
    res_far = run(texture, lens, halves(1.5, 3.0), side="far")
    b_left, b_right = medians(res_far.blur_px)
    assert b_left == pytest.approx(b_right, rel=0.1)
    left, right = medians(res_far.depth_m)
    assert right == pytest.approx(3.0, rel=0.2)
    assert left == pytest.approx(right, rel=0.1)  # the near plane is put behind focus too: ~100% error
    assert abs(left - 1.5) / 1.5 > 0.6
    res_near = run(texture, lens, halves(1.5, 3.0), side="near")
    left, right = medians(res_near.depth_m)
    assert left == pytest.approx(1.5, rel=0.15)
    assert abs(right - 3.0) / 3.0 > 0.4


def test_no_signal_inside_the_depth_of_field(texture, lens):
    """Planes at 1.8 m, 2.0 m (in focus) and 2.2 m all lie in the dead zone (blur < 1 px): the
    estimates are the same, although the depths differ by up to 20%."""
    near, far = optics.dead_zone_m(lens)
    depths = (1.8, 2.0, 2.2)
    assert all(near < d < far for d in depths)
    est = []
    for d in depths:
        res = run(texture, lens, np.full((H, W), d), noise=1.0)
        est.append(float(np.median(res.depth_m[MARGIN:-MARGIN, MARGIN:-MARGIN])))
        assert np.median(res.blur_px) < 1.5
    assert max(est) / min(est) < 1.06
    # ... while outside it a 20% change of depth shows (3.0 m vs 3.6 m)
    a = float(np.median(run(texture, lens, np.full((H, W), 3.0), noise=1.0).depth_m))
    b = float(np.median(run(texture, lens, np.full((H, W), 3.6), noise=1.0).depth_m))
    assert b / a > 1.08


# ---------------------------------------------------------------------------- evaluation, CLI
def _tiny_dataset(root, texture, cfg):
    from rig.core import dataset as rds

    lens = zb.lens_for_image(cfg, W)
    for i, (a, b) in enumerate(((3.0, 8.0), (4.0, 2.8))):
        depth = halves(a, b).astype(np.float32)
        rgb = render_defocus(texture, depth, lens, psf="gaussian", rho=cfg.blur.rho)
        rds.write_sample(root, "test", rds.Sample(f"s{i}", rgb, texture, depth, np.full((H, W), 255, np.uint8)))
    rds.write_manifest(root, {"name": "tiny"})


def test_evaluate_baseline_reports_eval_metrics(tmp_path, texture):
    cfg = tiny_config()
    _tiny_dataset(tmp_path, texture, cfg)
    r = zb.evaluate_baseline(tmp_path, "test", cfg, params=PARAMS)
    assert r["n_images"] == 2 and [p["id"] for p in r["per_image"]] == ["s0", "s1"]
    for k in ("rel", "log10", "rms", "rmslog", "delta1", "delta2", "delta3"):
        assert np.isfinite(r["metrics"][k]) and np.isfinite(r["pooled"][k])
    assert r["metrics"]["rel"] < 0.3
    assert r["oracle_side"]["rel"] <= r["metrics"]["rel"] + 1e-9  # all behind focus: the oracle equals 'far'


def test_cli_baseline_zhuo_and_eval(tmp_path, texture, lens):
    from rig.cli import main
    from rig.core.imageio import read_depth_m, write_image

    cfg = tiny_config()
    assert zb.lens_for_image(cfg, W) == lens
    (tmp_path / "tiny.yaml").write_text(cfg.to_yaml())
    img = render_defocus(texture, np.full((H, W), 4.0), lens)
    write_image(tmp_path / "in" / "plane.png", img)
    rc = main(["baseline", "zhuo", "--config", str(tmp_path / "tiny.yaml"), "--input", str(tmp_path / "in"), "--out",
               str(tmp_path / "out"), "--colorize", "--work-px", "0"])
    assert rc == 0
    depth = read_depth_m(tmp_path / "out" / "plane.png")
    assert depth.shape == (H, W) and np.median(depth) == pytest.approx(4.0, rel=0.2)
    assert (tmp_path / "out" / "plane_color.png").is_file() and (tmp_path / "out" / "plane_blur_color.png").is_file()
    from rig.core.imageio import read_rgb

    assert read_rgb(tmp_path / "out" / "plane_color.png").shape[1] > W  # a colour bar in metres beside the depth
    _tiny_dataset(tmp_path / "ds", texture, cfg)
    rc = main(["baseline", "eval", "--config", str(tmp_path / "tiny.yaml"), "--data", str(tmp_path / "ds"),
               "--split", "test", "--work-px", "0", "--json", str(tmp_path / "m.json")])
    assert rc == 0 and (tmp_path / "m.json").is_file()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from rig.cli import main

    assert main(["baseline", "zhuo", "--input", str(tmp_path / "none.png"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    assert main(["baseline", "zhuo", "--input", str(tmp_path), "--out", str(tmp_path), "--lam", "0"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["baseline", "zhuo", "--input", "x", "--out", "y", "--side", "middle"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.realdata
def test_baseline_on_the_real_dfd_train_split():
    """Paper 1's indoor release (f/2.8, Nikon D200 rig): a few images, metric depth from the thin lens."""
    from tests.conftest import shared_subdir

    data = shared_subdir("dfd_indoor")
    r = zb.evaluate_baseline(data, "train", load_rig_config("nikon_d200_xtion"), limit=3)
    m = r["metrics"]
    assert r["n_images"] == 3
    assert all(np.isfinite(m[k]) for k in ("rel", "rms", "delta1"))
    # much worse than a trained network, but far from random: most pixels within a factor 1.25³
    assert m["delta3"] > 0.8 and m["rel"] < 0.6
    assert r["oracle_side"]["rel"] < m["rel"]  # part of the error is the front/behind ambiguity
