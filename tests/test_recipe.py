"""Depth-study recipes: synthetic pretraining pools, one fold end to end (tiny), resume, table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.data import write_synthetic_dataset
from inference.pretrain import RenderJitter, procedural_renders, scaled_depth_renders
from inference.recipe import (RECIPES, Budget, ablation_rows, bf16_supported, load_images, lr_at, photometric_jitter,
                              random_batch, run_fold, train_recipe)
from rig.cli import main
from rig.core.config import load_rig_config

REPO = Path(__file__).resolve().parent.parent


def _lens():
    cfg = load_rig_config("nikon_d200_xtion")
    return cfg, cfg.lens("defocused")


def test_scaled_depth_renders_label_the_scaled_depth_and_blur_follows_it():
    cfg, lens = _lens()
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    depth = np.full((40, 60), 1.0, np.float32)
    pool = scaled_depth_renders([rgb], [depth], lens, cfg.blur.psf, cfg.blur.rho, cfg.blur.max_layer_step_px,
                                per_image=6, seed=1, jitter=RenderJitter((0.5, 4.0), 0.0, 0.0))
    assert len(pool) == 6
    for img, d, s in zip(pool.rgb, pool.depth_m, pool.scale):
        np.testing.assert_allclose(d, np.clip(depth * s, 0.3, 12.0))
        assert img.shape == rgb.shape and img.dtype == np.uint8
    # renders nearer the focus distance (1.687 m) are sharper: more high-frequency energy left
    def detail(im):
        g = im.astype(np.float32).mean(2)
        return float(np.abs(np.diff(g, axis=1)).mean())
    dist = [abs(1 / (s * 1.0) - 1 / lens.focus_m) for s in pool.scale]
    order = np.argsort(dist)
    assert detail(pool.rgb[order[0]]) > detail(pool.rgb[order[-1]])


def test_procedural_renders_are_deterministic():
    cfg, lens = _lens()
    a = procedural_renders(2, (64, 48), lens, cfg.blur.psf, cfg.blur.rho, cfg.blur.max_layer_step_px, seed=3)
    b = procedural_renders(2, (64, 48), lens, cfg.blur.psf, cfg.blur.rho, cfg.blur.max_layer_step_px, seed=3)
    assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a.rgb, b.rgb))


def test_lr_schedule_phases():
    assert lr_at(0, 10, 20, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 10, 20, 1.0) == pytest.approx(0.6)  # finetuning restarts lower
    assert lr_at(0, 0, 20, 1.0) == pytest.approx(1.0)
    assert lr_at(19, 0, 20, 1.0) < 0.01


@pytest.mark.slow
def test_run_fold_end_to_end_resume_and_table(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    budget = Budget(steps=4, batch=2, crop_px=32, synth_per_image=1, procedural=1, ckpt_every=2)
    out = tmp_path / "study" / "dfd_log_pre" / "f1"
    res = run_fold(root, RECIPES["dfd_log_pre"], budget, 1, 3, "N2_8", out)
    meta = res["meta"]
    assert not set(meta["train_ids"]) & set(meta["val_ids"]) and meta["val_ids"]
    assert meta["pretrain_steps"] == 2
    for tta in ("plain", "flip"):
        ev = res["eval"][tta]
        assert np.isfinite(ev["rel"]) and 0 <= ev["delta1"] <= 1 and np.isfinite(ev["ause_ratio"])
    assert json.loads((out / "result.json").read_text())["meta"]["fold"] == 1
    # the checkpoint resumes: a run with a larger budget continues from step 4
    st_steps = []
    run_fold(root, RECIPES["dfd_log_pre"], Budget(steps=6, batch=2, crop_px=32, synth_per_image=1,
                                                   procedural=1, ckpt_every=2), 1, 3, "N2_8", out,
             log=st_steps.append)
    assert any("resumed at step 4" in s for s in st_steps)
    rows = ablation_rows(tmp_path / "study")
    assert {r["tta"] for r in rows} == {"plain", "flip"} and rows[0]["recipe"] == "dfd_log_pre"
    # the CLI tabulates and ships the run; the shipped file predicts with a σ
    assert main(["depth-study", "table", str(tmp_path / "study")]) == 0
    assert main(["depth-study", "ship", str(out / "model.pt"), "--out", str(tmp_path / "m.pt")]) == 0
    from inference.model import load_model
    from inference.predict import predict_image

    loaded = load_model(tmp_path / "m.pt")
    imgs = load_images(root, "train", meta["val_ids"][:1], "N2_8")
    p = predict_image(loaded.model, imgs.rgb[0])
    assert p.std_m is not None and p.std_m.shape == p.depth_m.shape and (p.std_m > 0).all()


@pytest.mark.slow
@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_training_keeps_fp32_weights_and_learns(tmp_path):
    """--precision bf16: autocast + channels_last while training; the saved model is plain fp32 and
    its losses follow the fp32 run's on the same batches."""
    import torch

    root = write_synthetic_dataset(tmp_path / "ds", n=3, size_hw=(48, 64), spacing_s=300.0)
    from rig.core import dataset as rds

    imgs = load_images(root, "train", rds.list_samples(root, "train"), "N2_8")
    losses = {}
    for prec in ("fp32", "bf16"):
        budget = Budget(steps=16, batch=2, crop_px=32, lr=2e-3, ckpt_every=16, precision=prec)
        model, meta = train_recipe(RECIPES["dfd_log"], budget, imgs, "N2_8", tmp_path / prec)
        assert meta["budget"]["precision"] == prec
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(p.is_contiguous() for p in model.parameters())
        st = torch.load(tmp_path / prec / "last.pt", weights_only=True)
        losses[prec] = st["losses"]
    # same seed, same initial weights, same batches: bf16 only rounds, so the first loss matches fp32's
    # closely and the whole trajectory stays close
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=0.03)
    assert np.mean(losses["bf16"]) == pytest.approx(np.mean(losses["fp32"]), rel=0.25)
    with pytest.raises(Exception, match="precision"):
        train_recipe(RECIPES["dfd_log"], Budget(steps=1, precision="fp8"), imgs, "N2_8", tmp_path / "x")


def test_cli_rejects_bad_study_input(tmp_path, capsys):
    assert main(["depth-study", "run", "--data", str(tmp_path), "--recipe", "dfd_log", "--fold", "0",
                 "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    root = write_synthetic_dataset(tmp_path / "ds", n=6)
    assert main(["depth-study", "run", "--data", str(root), "--recipe", "nope", "--fold", "0",
                 "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert main(["depth-study", "run", "--data", str(root), "--recipe", "dfd_log", "--fold", "x",
                 "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as e:  # non-finite numbers are refused by the parser itself
        main(["depth-study", "run", "--data", str(root), "--recipe", "dfd_log", "--fold", "0",
              "--steps", "1", "--lr", "nan", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    # every other capture within 120 s of the held-out fold: nothing left to train on
    assert main(["depth-study", "run", "--data", str(root), "--recipe", "dfd_log", "--fold", "0",
                 "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("rig: error:") == 4 and "expected a finite number" in err


@pytest.mark.parametrize("device,msg", [("cuda", "no CUDA GPU"), ("tpu", "not a torch device"),
                                        ("meta", "cpu or cuda")])
def test_study_device_is_checked_in_one_line(tmp_path, capsys, device, msg):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    assert main(["depth-study", "run", "--data", str(root), "--recipe", "dfd_log", "--fold", "0", "--steps", "1",
                 "--device", device, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_gpu_study_script_tiny_mode_on_the_cpu(tmp_path):
    """scripts/gpu_study.sh (the one-call device study) end to end on the CPU with 2 steps per run."""
    import os
    import subprocess
    import sys

    from inference.model import load_model

    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "PRECISION": "fp32", "THREADS": "1",
           "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
           "STUDY_ARGS": "--batch 2 --crop 32 --synth-per-image 1 --procedural 1"}
    r = subprocess.run(["bash", str(repo / "scripts" / "gpu_study.sh"), str(root), "2"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["dfd-n2.8.pt", "dfd-n8.pt", "log.txt", "results.json",
                                                      "table.txt"]
    runs = json.loads((out / "results.json").read_text())
    assert sorted(runs) == ["final_n28", "final_n8", "study/dfd_log_pre/f0", "study/dfd_log_pre/f1",
                            "study/dfd_log_pre/f2"]
    assert all(r["meta"]["budget"]["steps"] == 2 and r["meta"]["device"] == "cpu" for r in runs.values())
    assert all("eval" in runs[f"study/dfd_log_pre/f{k}"] for k in range(3))
    assert "dfd_log_pre" in (out / "table.txt").read_text()
    n8 = load_model(out / "dfd-n8.pt")
    assert n8.meta["input"] == "N8" and n8.model.flip_tta


def test_scale_invariant_laplace_loss_hand_values_and_invariance():
    """dfd_si_pre's loss: per image sqrt(mean g² - 0.85 mean(g)²) on log depth, invalid pixels ignored;
    a global scale error is mostly forgiven (15 % of it counts), the Laplace NLL is log_l1_laplace_loss's."""
    import math

    import torch

    from inference.losses import log_l1_laplace_loss, log_si_laplace_loss

    depth = torch.tensor([2.0, 4.0, 1.0, 8.0]).reshape(1, 1, 2, 2)
    valid = torch.tensor([True, True, True, False]).reshape(1, 1, 2, 2)
    g = [math.log(2.0), 0.0, -math.log(2.0)]       # prediction 4, 4, 0.5 against 2, 4, 1
    mu = torch.log(torch.tensor([4.0, 4.0, 0.5, 99.0])).reshape(1, 1, 2, 2)
    log_b = torch.zeros_like(mu)
    si, nll = log_si_laplace_loss(mu, log_b, depth, valid)
    mean_sq, mean = sum(x * x for x in g) / 3, sum(g) / 3
    assert float(si) == pytest.approx(math.sqrt(mean_sq - 0.85 * mean ** 2), rel=1e-5)
    assert float(nll) == pytest.approx(float(log_l1_laplace_loss(mu, log_b, depth, valid)[1]))
    # a prediction off by a constant factor costs sqrt(0.15)·|log factor|, not |log factor|
    si_scaled, _ = log_si_laplace_loss(torch.log(depth * 3.0), log_b, depth, valid)
    assert float(si_scaled) == pytest.approx(math.sqrt(0.15) * math.log(3.0), rel=1e-4)
    # per image: a second, perfect image halves the mean; gradients reach μ
    mu2 = torch.cat([torch.log(depth * 3.0), torch.log(depth)]).requires_grad_()
    si2, _ = log_si_laplace_loss(mu2, torch.zeros_like(mu2), torch.cat([depth, depth]), torch.cat([valid, valid]))
    assert float(si2.detach()) == pytest.approx(float(si_scaled.detach()) / 2, rel=1e-3)
    si2.backward()
    assert mu2.grad is not None and float(mu2.grad[0].abs().sum()) > 0


def test_si_recipe_trains_and_evaluates(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    budget = Budget(steps=3, batch=2, crop_px=32, synth_per_image=1, procedural=1, ckpt_every=3)
    res = run_fold(root, RECIPES["dfd_si_pre"], budget, 0, 3, "N2_8", tmp_path / "si" / "f0")
    assert res["meta"]["recipe"]["loss"] == "si_laplace" and res["meta"]["pretrain_steps"] == 2
    assert np.isfinite(res["eval"]["flip"]["rel"]) and np.isfinite(res["meta"]["final_train_loss"])


def test_photometric_jitter_keeps_every_edge_where_it_was():
    """The jitter is one monotone intensity map per channel: values stay in [0, 1], every pixel's
    rank within its channel is kept (no pixel moves, so the blur is the same), and the images change."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.05, 0.95, (3, 16, 20)).astype(np.float32)
    changed = 0
    for _ in range(20):
        y = photometric_jitter(x, rng)
        assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0.0 and y.max() <= 1.0
        for c in range(3):
            a, b = x[c].ravel(), y[c].ravel()
            order = np.argsort(a)
            assert np.all(np.diff(b[order]) >= -1e-7)  # monotone non-decreasing map of each channel
        changed += int(np.abs(y - x).max() > 0.02)
    assert changed == 20


def test_photometric_batches_differ_only_in_intensity():
    """random_batch(photometric=True): same first crop as the plain batch, other intensities; labels untouched."""
    rng_img = np.random.default_rng(0)
    rgbs = [rng_img.integers(0, 256, (40, 50, 3), dtype=np.uint8)]
    depths = [rng_img.uniform(1, 5, (40, 50)).astype(np.float32)]
    valids = [np.ones((40, 50), bool)]
    x0, y0, _ = random_batch(rgbs, depths, valids, np.random.default_rng(7), 1, 24)
    x1, y1, _ = random_batch(rgbs, depths, valids, np.random.default_rng(7), 1, 24, photometric=True)
    np.testing.assert_array_equal(y0, y1)
    assert not np.allclose(x0, x1)
    assert np.corrcoef(x0.ravel(), x1.ravel())[0, 1] > 0.8


def test_photometric_recipe_trains(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    budget = Budget(steps=2, batch=2, crop_px=32, synth_per_image=1, procedural=1, ckpt_every=2)
    res = run_fold(root, RECIPES["dfd_log_pre_photo"], budget, 0, 3, "N2_8", tmp_path / "ph" / "f0")
    assert res["meta"]["recipe"]["photometric"] is True
    assert np.isfinite(res["eval"]["flip"]["rel"])


def test_ensemble_depth_std_hand_values():
    from inference.recipe import ensemble_depth_std

    d, s = ensemble_depth_std([np.full((2, 2), 1.0), np.full((2, 2), 4.0)], [np.full((2, 2), 0.3)] * 2)
    assert d == pytest.approx(np.full((2, 2), 2.0))                  # geometric mean of 1 and 4
    assert s == pytest.approx(np.full((2, 2), np.sqrt(0.09 + 2.25)))  # mean σ² + var {1, 4}


def test_ensemble_of_two_seeds_scores_each_fold_and_tabulates(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    study = tmp_path / "study"
    for seed in (0, 1):
        budget = Budget(steps=2, batch=2, crop_px=32, synth_per_image=1, procedural=1, ckpt_every=2, seed=seed)
        run_fold(root, RECIPES["dfd_log"], budget, 1, 3, "N2_8", study / f"s{seed}" / "f1")
    assert main(["depth-study", "ensemble", str(study / "s0"), str(study / "s1"), "--data", str(root),
                 "--out", str(study / "ens")]) == 0
    res = json.loads((study / "ens" / "f1" / "result.json").read_text())
    assert res["meta"]["budget"]["steps"] == 4 and len(res["meta"]["members"]) == 2
    single = json.loads((study / "s0" / "f1" / "result.json").read_text())
    assert res["eval"]["flip"]["ids"] == single["eval"]["flip"]["ids"]
    assert res["eval"]["flip"]["rel"] != single["eval"]["flip"]["rel"]
    assert {r["recipe"] for r in ablation_rows(study)} == {"s0", "s1", "ens"}
    capsys.readouterr()
    # members of different folds are refused in one line
    run_fold(root, RECIPES["dfd_log"], Budget(steps=1, batch=2, crop_px=32, ckpt_every=1), 0, 3, "N2_8",
             study / "other" / "f1")
    assert main(["depth-study", "ensemble", str(study / "s0"), str(study / "other"), "--data", str(root),
                 "--out", str(study / "bad")]) == 2
    assert "same fold" in capsys.readouterr().err


def test_camind_cameras_are_the_rig_lens_at_other_apertures(tmp_path):
    from inference.camind_study import TRAIN_F_NUMBERS, camera_sets_for, rig_constants

    root = write_synthetic_dataset(tmp_path / "ds", n=2, size_hw=(32, 48))
    from rig.core import dataset as rds

    imgs = load_images(root, "train", rds.list_samples(root, "train"), "N2_8")
    sets = camera_sets_for(imgs, Budget(steps=1, synth_per_image=8, procedural=4))
    assert [s.name for s in sets] == [f"f/{n:g}" for n in TRAIN_F_NUMBERS]
    k_rig, gamma, focus_m, rho, width = rig_constants()
    assert (k_rig, gamma, focus_m, width) == (pytest.approx(7.23, abs=0.01), 0.0, 1.687, 645)
    # k_cam ∝ 1/N: the real f/2.8 camera lies between the training cameras and is not one of them
    assert [s.k_cam_px * n for s, n in zip(sets, TRAIN_F_NUMBERS)] == pytest.approx([k_rig * 2.8] * 4)
    assert min(s.k_cam_px for s in sets) < k_rig < max(s.k_cam_px for s in sets) and 2.8 not in TRAIN_F_NUMBERS
    for s in sets:  # 2 renders per image and camera + 1 procedural scene, RGB in [0, 1]
        assert s.rgb.shape == (5, 32, 48, 3) and s.depth_m.shape == (5, 32, 48)
        assert 0.0 <= s.rgb.min() and s.rgb.max() <= 1.0 and (s.depth_m > 0).all()


@pytest.mark.slow
def test_camind_recipe_end_to_end_writes_a_camind_file_rig_predict_reads(tmp_path, capsys):
    from inference.camind import load_camind, predict_camind

    root = write_synthetic_dataset(tmp_path / "ds", n=9, size_hw=(48, 64), spacing_s=300.0)
    budget = Budget(steps=2, batch=2, crop_px=32, synth_per_image=4, procedural=4, ckpt_every=2)
    out = tmp_path / "study" / "camind_dslr" / "f0"
    res = run_fold(root, RECIPES["camind_dslr"], budget, 0, 3, "N2_8", out)
    meta = res["meta"]
    assert meta["train_f_numbers"] == [1.4, 2.0, 4.0, 5.6] and meta["focus_m"] == 1.687
    assert not set(meta["train_ids"]) & set(meta["val_ids"])
    for tta in ("plain", "flip"):  # depth is scored; a camind model has no σ, so NaN (not a crash)
        ev = res["eval"][tta]
        assert np.isfinite(ev["rel"]) and np.isnan(ev["ause_ratio"]) and np.isnan(ev["spearman"])
    model, m2 = load_camind(out / "model.pt")
    assert model.blur_net.levels == 6 and m2["eval_k_cam_px"] == pytest.approx(7.23, abs=0.01)
    # the score used the rig's k_cam scaled to the 64 px wide images: the same depth as predict_camind
    imgs = load_images(root, "train", meta["val_ids"][:1], "N2_8")
    k = m2["eval_k_cam_px"] * 64 / 645
    d = predict_camind(model, imgs.rgb[0], k, 0.0)
    from inference.metrics import depth_metrics

    assert depth_metrics(d, imgs.depth_m[0], imgs.valid[0])["rel"] == pytest.approx(
        res["eval"]["plain"]["per_image_rel"][0], rel=1e-5)
    rows = ablation_rows(tmp_path / "study")
    assert rows[0]["recipe"] == "camind_dslr" and np.isnan(rows[0]["ause_ratio"][0])
    assert main(["depth-study", "table", str(tmp_path / "study")]) == 0
    # the run folder's model.pt is what `rig predict` takes, with k_cam from the rig config
    pred = tmp_path / "pred"
    sample = sorted((root / "train" / "N2_8").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["predict", "--model", str(out / "model.pt"), "--config", "nikon_d200_xtion",
                 "--input", str(sample), "--out", str(pred)]) == 0
    assert "k_cam 7.23" in capsys.readouterr().out
    # `depth-study ship` keeps it a camind file (fp16 weights), read back with the same depth
    assert main(["depth-study", "ship", str(out / "model.pt"), "--out", str(tmp_path / "c.pt")]) == 0
    shipped, _ = load_camind(tmp_path / "c.pt")
    np.testing.assert_allclose(predict_camind(shipped, imgs.rgb[0], k, 0.0), d, rtol=0.05)
    assert main(["depth-study", "ship", str(out / "model.pt"), "--out", str(tmp_path / "c2.pt"), "--flip-tta"]) == 2
    # the camind recipe reads defocus: an f/8 input is refused in one line
    assert main(["depth-study", "run", "--data", str(root), "--recipe", "camind_dslr", "--fold", "0",
                 "--input", "N8", "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--input must be N2_8" in capsys.readouterr().err
    # paper 2's "no k_cam" row: the same network with the blur uncorrected
    run_fold(root, RECIPES["camind_dslr_nok"], Budget(steps=1, batch=2, crop_px=32, synth_per_image=4, procedural=4),
             0, 3, "N2_8", tmp_path / "study" / "camind_dslr_nok" / "f0")
    nok, _ = load_camind(tmp_path / "study" / "camind_dslr_nok" / "f0" / "model.pt")
    assert not nok.use_k_cam and model.use_k_cam
    # k_cam fitted on the fold's own training captures, the held-out ones scored at it
    kfit = tmp_path / "study" / "camind_dslr_kfit"
    capsys.readouterr()
    assert main(["depth-study", "fit-kcam", str(tmp_path / "study" / "camind_dslr"), "--data", str(root),
                 "--out", str(kfit)]) == 0
    assert f"fitted on {len(meta['train_ids'])} training captures" in capsys.readouterr().out
    r = json.loads((kfit / "f0" / "result.json").read_text())
    fit = r["meta"]["k_cam_fit"]
    losses = {float(k): v for k, v in fit["loss_by_factor"].items()}
    assert len(losses) == 9 and losses[fit["factor"]] == min(losses.values())
    assert fit["images"] == len(meta["train_ids"]) and r["meta"]["val_ids"] == meta["val_ids"]
    k_fit = fit["k_cam_px"] * 64 / 645
    assert depth_metrics(predict_camind(model, imgs.rgb[0], k_fit, 0.0), imgs.depth_m[0], imgs.valid[0])["rel"] == \
        pytest.approx(r["eval"]["plain"]["per_image_rel"][0], rel=1e-5)
    assert {row["recipe"] for row in ablation_rows(tmp_path / "study")} >= {"camind_dslr", "camind_dslr_kfit"}
    # `rig calibrate k-cam` fits a camera's k_cam for the model and writes it into the camera's config
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "rig" / "nikon_d200_xtion.yaml").read_text())
    cfg["output"]["size_px"] = [64, 48]
    cfg_path = tmp_path / "cam.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["calibrate", "k-cam", "--model", str(out / "model.pt"), "--config", str(cfg_path), "--data",
                 str(root), "--write"]) == 0
    text = capsys.readouterr().out
    assert "thin-lens" in text and "wrote blur.k_cam_px" in text
    written = yaml.safe_load(cfg_path.read_text())["blur"]["k_cam_px"]
    assert f"k_cam_px {written:.5f}" in text
    # bad input: a dfdnet model, images of another width
    assert main(["calibrate", "k-cam", "--model", "dfd-n2.8", "--config", str(cfg_path), "--data", str(root)]) == 2
    assert main(["calibrate", "k-cam", "--model", str(out / "model.pt"), "--config", "nikon_d200_xtion",
                 "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "not a camera-independent" in err and "px wide" in err and "Traceback" not in err


def test_blur_reading_script_scores_a_model_against_always_far(tmp_path):
    """scripts/blur_reading.py runs end to end on a (random) dfdnet file and prints the procedural
    figures beside the always-'far' base rate of the same pixels."""
    import subprocess
    import sys

    import torch

    from inference.model import build_model

    path = tmp_path / "m.pt"
    torch.save({"arch": "dfdnet", "state_dict": build_model("dfdnet").state_dict(), "meta": {}}, path)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "blur_reading.py"), str(path), "--scenes", "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "blur-space Spearman" in r.stdout and "always 'far'" in r.stdout and "pred/true: 0-1 m:" in r.stdout
    bad = tmp_path / "junk.pt"
    bad.write_text("not a model")
    for args in ([str(bad)], [str(path), "--held-out", str(tmp_path / "none")]):
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "blur_reading.py"), *args, "--scenes", "1"],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("blur_reading: error:")
