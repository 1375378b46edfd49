"""Issue 7's cross-camera experiment (rig.camind_exp) and resumable camind training.

The blur calibration of the experiment's test cameras runs on simulated captures with known k_cam;
the end-to-end test runs the real CLI for a few steps and hands its model to `rig predict`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference.camind import CamIndDFD, CameraSet, train_camind
from rig import camind_exp


def _toy_set(name: str, k_cam: float, seed: int = 0) -> CameraSet:
    rng = np.random.default_rng(seed)
    rgb = rng.random((3, 24, 32, 3)).astype(np.float32)
    depth = rng.uniform(1.0, 4.0, (3, 24, 32)).astype(np.float32)
    return CameraSet(name, rgb, depth, k_cam)


def test_resume_mid_run_draws_the_same_batches(tmp_path: Path) -> None:
    """Kill at step 3 of 6 (checkpoint every 3), resume: same losses and weights as one run."""
    train = [_toy_set("a", 3.0)]
    torch.manual_seed(0)
    one = CamIndDFD(base=4)
    l_one = train_camind(one, train, 1.0, 6, (16, 16), batch=2)

    class Stop(Exception):
        pass

    ck = tmp_path / "k.ckpt"
    torch.manual_seed(0)
    killed = CamIndDFD(base=4)
    calls = []

    def log(msg: str) -> None:
        calls.append(msg)
        if msg.startswith("step 4/"):
            raise Stop

    with pytest.raises(Stop):
        train_camind(killed, train, 1.0, 6, (16, 16), batch=2, checkpoint=str(ck), checkpoint_every=3, log=log)
    assert int(torch.load(ck, weights_only=True)["step"]) == 3
    torch.manual_seed(0)
    again = CamIndDFD(base=4)
    l_again = train_camind(again, train, 1.0, 6, (16, 16), batch=2, checkpoint=str(ck), checkpoint_every=3)
    assert l_again == pytest.approx(l_one, rel=1e-4, abs=1e-6)
    for a, b in zip(one.state_dict().values(), again.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def test_experiment_cameras_are_calibrated_within_3_percent() -> None:
    for n in camind_exp.TEST_F:
        k, gamma = camind_exp.calibrate_camera(n)
        assert k == pytest.approx(camind_exp.true_k_cam_px(n), rel=0.03), n
        assert 0.0 <= gamma < 0.5


def test_board_too_close_is_flagged_and_under_read() -> None:
    """At paper 2's s1/2 this fast lens blurs the circles into their neighbours' cells."""
    from acquisition import sim_geometry
    from registration.blur_calibration import calibrate_blur

    sp = 0.014
    sharp, blurred = camind_exp.board_captures(2.8, distance_m=0.5, spacing_m=sp)
    cfg = camind_exp.exp_config(2.8)
    cal = calibrate_blur(sharp, blurred, (4, 11), sp, sim_geometry.dslr_intrinsics(cfg), camind_exp.FOCUS_M,
                         cfg.blur.rho, cfg.output.size_px[0])
    assert cal.blur_too_large
    assert cal.k_cam_px < 0.95 * camind_exp.true_k_cam_px(2.8)
    ok = calibrate_blur(*camind_exp.board_captures(2.8), (4, 11), camind_exp.BOARD_SPACING_M,
                        sim_geometry.dslr_intrinsics(cfg), camind_exp.FOCUS_M, cfg.blur.rho, cfg.output.size_px[0])
    assert not ok.blur_too_large


def test_camera_sets_blur_more_at_wider_apertures() -> None:
    scenes = camind_exp.simulated_scenes(1, 5)
    lin, depth = scenes[0]
    assert lin.shape == (150, 200, 3) and depth.shape == (150, 200)
    wide, narrow = camind_exp.camera_set(scenes, 2.0), camind_exp.camera_set(scenes, 5.6)
    assert wide.k_cam_px == pytest.approx(camind_exp.true_k_cam_px(2.0))
    assert wide.k_cam_px / narrow.k_cam_px == pytest.approx(5.6 / 2.0)  # k_cam ∝ 1/N
    sharp = np.power(lin, 1 / 2.2)

    def grad_energy(img: np.ndarray) -> float:
        g = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_RGB2GRAY)
        return float(np.mean(np.abs(np.diff(g, axis=1))))

    assert grad_energy(wide.rgb[0]) < grad_energy(narrow.rgb[0]) < grad_energy(sharp)


def test_real_scenes_split_by_capture_time() -> None:
    root = camind_exp.real_dfd_root()
    if root is None:
        pytest.skip("real DFD data (../shared/data/dfd_indoor/train) not present")
    train, test = camind_exp.real_scenes(root)
    assert len(train) + len(test) == 81 and len(test) == 20
    lin, depth = test[0]
    assert lin.shape == (150, 200, 3) and 0.0 <= lin.min() and lin.max() <= 1.0
    depths = np.stack([d for _, d in train + test])
    assert 0.5 <= depths.min() and depths.max() <= 10.0 and 1.5 < np.median(depths) < 4.0


def _rig(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from rig.cli import main

    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args, flag", [(["--steps", "0"], "--steps"), (["--k-cam-errors", "0.9,x"], "--k-cam-errors"),
                                        (["--k-cam-errors", "-1"], "--k-cam-errors")])
def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture, args: list[str], flag: str) -> None:
    rc, out, err = _rig(capsys, "camind-experiment", *args)
    assert rc == 2 and flag in err and "Traceback" not in err + out and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_experiment_cli_end_to_end_and_its_model_predicts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save = tmp_path / "camind"
    rc, out, _ = _rig(capsys, "camind-experiment", "--steps", "3", "--train-scenes", "1", "--test-scenes", "1",
                      "--no-real", "--workers", "1", "--batch", "2", "--crop", "32", "--base", "4",
                      "--k-cam-errors", "0.9", "--save-dir", str(save), "--out", str(tmp_path / "t.md"))
    assert rc == 0
    table = (tmp_path / "t.md").read_text()
    for row in ("| no k_cam | f/2.8 |", "| gt k_cam | f/5.6 |", "| est k_cam | f/2.8 |", "| est k_cam | f/5.6 |",
                "| gt k_cam | f/4 (seen) |", "| k_cam ×0.9 | f/5.6 |"):
        assert row in table
    assert (save / "camind_gt.pt").is_file() and (save / "camind_nok.pt").is_file()
    img = tmp_path / "shot.png"
    cv2.imwrite(str(img), (np.random.default_rng(0).random((150, 200, 3)) * 255).astype(np.uint8))
    rc, out, _ = _rig(capsys, "predict", "--model", str(save / "camind_gt.pt"), "--input", str(img),
                      "--out", str(tmp_path / "pred"), "--k-cam-px", "9.4")
    assert rc == 0 and "k_cam 9.4" in out
    depth = cv2.imread(str(tmp_path / "pred" / "shot.png"), cv2.IMREAD_UNCHANGED)
    assert depth.shape == (150, 200) and depth.dtype == np.uint16 and depth.min() > 0
