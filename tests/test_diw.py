"""Relative-depth annotations (DIW format and ours), Chen et al.'s ranking loss, WHDR, finetuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inference import diw
from rig.core.errors import RigError

torch.set_num_threads(1)


def test_relation_from_depths_uses_the_ratio_threshold():
    a = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 1.019])
    b = np.array([1.0, 1.03, 0.97, 1.01, 1.0, 1.0])
    assert diw.relation_from_depths(a, b, tau=0.02).tolist() == [0, -1, 1, 0, 1, 0]
    assert diw.relation_from_depths(a, b, tau=0.0).tolist() == [0, -1, 1, -1, 1, 1]


def test_make_pairs_from_depth_samples_valid_far_apart_points_with_their_true_order():
    rng = np.random.default_rng(0)
    depth = np.tile(np.linspace(1.0, 4.0, 40), (30, 1))
    valid = np.ones_like(depth, bool)
    valid[:, :5] = False
    depth[0, 10] = 0.0  # unknown
    p = diw.make_pairs_from_depth(depth, 300, rng, tau=0.02, valid=valid, min_dist_px=6, image="a.png")
    assert len(p) == 300 and p.image == "a.png"
    assert np.all(p.xa >= 5) and np.all(p.xb >= 5)
    assert np.all(np.hypot(p.xa - p.xb, p.ya - p.yb) >= 6)
    assert np.all(depth[p.ya, p.xa] > 0) and np.all(depth[p.yb, p.xb] > 0)
    assert np.array_equal(p.rel, diw.relation_from_depths(depth[p.ya, p.xa], depth[p.yb, p.xb], 0.02))
    assert {-1, 1} <= set(p.rel.tolist())  # both orders occur
    with pytest.raises(RigError):
        diw.make_pairs_from_depth(np.zeros((5, 5)), 3, rng)


DIW_TEXT = """./DIW_test/a.thumb
118,70,257,291,>,500,333
./DIW_test/b.thumb
10,20,30,40,<,500,375
./DIW_test/a.thumb
1,1,2,2,<,500,333
"""


def test_diw_release_csv_is_read_one_based_y_first():
    sets = diw.parse_diw_csv(DIW_TEXT)
    assert [s.image for s in sets] == ["./DIW_test/a.thumb", "./DIW_test/b.thumb"]
    a = sets[0]
    assert len(a) == 2
    assert (a.ya[0], a.xa[0], a.yb[0], a.xb[0], a.rel[0]) == (117, 69, 256, 290, 1)  # '>' = A farther
    assert (a.ya[1], a.xa[1], a.rel[1]) == (0, 0, -1)
    assert sets[1].rel.tolist() == [-1]
    # written back in the same format and read again: the same pairs
    again = diw.parse_diw_csv(diw.diw_csv_text(sets, {"./DIW_test/a.thumb": (500, 333)}))
    for s, t in zip(sets, again):
        assert all(np.array_equal(getattr(s, k), getattr(t, k)) for k in ("xa", "ya", "xb", "yb", "rel"))


@pytest.mark.parametrize("text, match", [("a.png\n1,2,3,4,>\nb.png\n", "two lines per image"),
                                         ("a.png\n1,2,3,4,?\n", "relation"),
                                         ("a.png\n1,2,3\n", "y_A,x_A")])
def test_bad_diw_csv_is_one_line(text, match):
    with pytest.raises(RigError, match=match) as e:
        diw.parse_diw_csv(text)
    assert "\n" not in str(e.value)


def test_pair_csv_and_json_round_trip_through_load_annotations(tmp_path):
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 5, (20, 30))
    sets = [diw.make_pairs_from_depth(depth, 25, rng, image="x/a.png"),
            diw.make_pairs_from_depth(depth, 5, rng, image="x/b.png")]
    sets[1].weight[:] = 0.5
    csv_path = diw.write_pairs_csv(tmp_path / "p.csv", sets)
    rows = [{"image": s.image, "xA": int(s.xa[k]), "yA": int(s.ya[k]), "xB": int(s.xb[k]), "yB": int(s.yb[k]),
             "relation": diw.CHAR_FROM_REL[int(s.rel[k])], "weight": float(s.weight[k])}
            for s in sets for k in range(len(s))]
    (tmp_path / "p.json").write_text(json.dumps({"pairs": rows}))
    (tmp_path / "p_diw.csv").write_text(diw.diw_csv_text(sets))
    for path in (csv_path, tmp_path / "p.json", tmp_path / "p_diw.csv"):
        got = diw.load_annotations(path)
        assert [g.image for g in got] == ["x/a.png", "x/b.png"]
        for s, g in zip(sets, got):
            assert all(np.array_equal(getattr(s, k), getattr(g, k)) for k in ("xa", "ya", "xb", "yb", "rel"))
        if path.suffix == ".json" or path.name == "p.csv":
            assert np.allclose(got[1].weight, 0.5)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RigError, match="empty"):
        diw.load_annotations(tmp_path / "empty.csv")
    (tmp_path / "bad.json").write_text("[{\"image\": \"a\"}]")
    with pytest.raises(RigError, match="needs image"):
        diw.load_annotations(tmp_path / "bad.json")


def test_whdr_counts_weighted_disagreements():
    rel = np.array([1, -1, 0, 1])
    da = np.array([2.0, 1.0, 1.0, 3.0])
    db = np.array([1.0, 2.0, 1.005, 1.0])
    assert diw.whdr(da, db, rel)["whdr"] == 0.0
    r = diw.whdr(db, da, rel)  # every order reversed; the equal pair stays equal
    assert r["whdr_neq"] == 1.0 and r["whdr_eq"] == 0.0 and r["whdr"] == pytest.approx(0.75)
    r = diw.whdr(db, da, rel, weight=np.array([1.0, 1.0, 2.0, 0.0]))
    assert r["whdr"] == pytest.approx(2 / 4)
    const = diw.whdr(np.ones(4), np.ones(4), rel)  # a constant prediction says '=' everywhere
    assert const["whdr_neq"] == 1.0 and const["whdr_eq"] == 0.0
    assert math.isnan(diw.whdr(da[:2], db[:2], rel[:2])["whdr_eq"])


def test_ranking_loss_matches_chen_et_al():
    za = torch.tensor([0.0, 2.0, -2.0, 0.3], requires_grad=True)
    zb = torch.tensor([0.0, 0.0, 0.0, 0.1])
    rel = torch.tensor([1, 1, -1, 0])
    loss = diw.ranking_loss(za, zb, rel)
    want = (math.log(2) + math.log1p(math.exp(-2)) + math.log1p(math.exp(-2)) + 0.2 ** 2) / 4
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()
    g = za.grad.numpy()
    assert g[0] < 0 and g[1] < 0  # r = +1 (A farther): descending raises z_A
    assert g[2] > 0  # r = -1: lowers z_A
    assert g[3] == pytest.approx(2 * 0.2 / 4, rel=1e-5)
    # numerically stable for large differences
    big = diw.ranking_loss(torch.tensor([-100.0]), torch.tensor([0.0]), torch.tensor([1]))
    assert float(big) == pytest.approx(100.0, rel=1e-6)


# ------------------------------------------------------------------------------- with a model
HH, WW = 64, 96


def _scene(tmp_path):
    """An image whose brightness follows depth (a ramp, 1-4 m) + pair files from its depth."""
    from rig.core.imageio import write_image

    xx = np.linspace(0, 1, WW)[None, :].repeat(HH, 0)
    depth = 1.0 + 3.0 * xx
    rgb = np.stack([xx * 200 + 20, 120 + 40 * np.sin(8 * xx), 220 - xx * 200], -1).astype(np.uint8)
    write_image(tmp_path / "img" / "ramp.png", rgb)
    rng = np.random.default_rng(0)
    train = diw.make_pairs_from_depth(depth, 200, rng, image="ramp.png", min_dist_px=8)
    val = diw.make_pairs_from_depth(depth, 100, rng, image="ramp.png", min_dist_px=8)
    diw.write_pairs_csv(tmp_path / "train.csv", [train])
    (tmp_path / "val.csv").write_text(diw.diw_csv_text([val]))
    return depth


def _model_file(tmp_path):
    from inference.model import build_model, export_fp16

    torch.manual_seed(0)
    net = build_model("d3net-lite", depth_scale_m=2.0)
    return export_fp16(net, tmp_path / "lite.pt", {"arch": "d3net-lite", "model_kwargs": {}, "input": "N2_8"})


def test_finetuning_with_the_ranking_loss_lowers_whdr(tmp_path):
    from inference.model import load_model

    _scene(tmp_path)
    model = _model_file(tmp_path)
    train = diw.load_pair_images(diw.load_annotations(tmp_path / "train.csv"), tmp_path / "img")
    val = diw.load_pair_images(diw.load_annotations(tmp_path / "val.csv"), tmp_path / "img")
    loaded, summary = diw.finetune_diw(str(model), train, steps=25, lr=1e-3, batch_images=1, val=val,
                                       log_every=0, printer=lambda *_: None)
    assert summary["val_before"]["whdr"] > 0.4  # untrained: near-constant depth
    assert summary["val_after"]["whdr"] < 0.2
    assert summary["val_after"]["whdr"] < summary["val_before"]["whdr"] - 0.3
    assert summary["loss_last"] < summary["loss_first"]
    out = diw.save_finetuned(loaded, tmp_path / "ft.pt", summary)
    again = load_model(out)
    assert again.meta["relative_depth"] is True and again.meta["finetune"]["kind"] == "diw-ranking"
    assert diw.evaluate_whdr(again.model, val)["whdr"] == pytest.approx(summary["val_after"]["whdr"], abs=0.02)


def test_wide_images_are_downsampled_with_their_points(tmp_path):
    from rig.core.imageio import write_image

    write_image(tmp_path / "big.png", np.zeros((200, 300, 3), np.uint8))
    p = diw.PairSet("big.png", [0, 299], [0, 199], [150, 10], [100, 20], [1, -1])
    (im,) = diw.load_pair_images([p], tmp_path, scale_to_width=100)
    assert im.rgb.shape == (67, 100, 3)
    assert im.pairs.xa.tolist() == [0, 99] and im.pairs.ya.tolist() == [0, 66]
    assert im.pairs.xb.tolist() == [50, 3] and im.pairs.yb.tolist() == [33, 6]
    bad = diw.PairSet("big.png", [300], [0], [0], [0], [1])
    with pytest.raises(RigError, match="outside"):
        diw.load_pair_images([bad], tmp_path)


def test_crops_keep_only_the_pairs_inside():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 3, (50, 70))
    p = diw.make_pairs_from_depth(depth, 400, rng)
    im = diw.PairImage("x", np.zeros((50, 70, 3), np.uint8), p)
    rgb, xa, ya, xb, yb, rel = diw._crop_with_pairs(im, 32, rng)
    assert rgb.shape == (32, 32, 3) and xa.size > 0
    assert all(((v >= 0) & (v < 32)).all() for v in (xa, ya, xb, yb))


def test_cli_pairs_finetune_and_eval(tmp_path, capsys):
    from rig.core import dataset as rds
    from rig.cli import main

    depth = _scene(tmp_path)
    from rig.core.imageio import read_rgb

    rgb = read_rgb(tmp_path / "img" / "ramp.png")
    for sid in ("a", "b"):
        rds.write_sample(tmp_path / "ds", "train", rds.Sample(sid, rgb, rgb, depth.astype(np.float32),
                                                              np.full(depth.shape, 255, np.uint8)))
    rds.write_manifest(tmp_path / "ds", {"name": "tiny"})
    assert main(["diw-pairs", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "p.csv"), "--n-pairs", "50"]) == 0
    sets = diw.load_annotations(tmp_path / "p.csv")
    assert [s.image for s in sets] == ["N2_8/a.png", "N2_8/b.png"] and all(len(s) == 50 for s in sets)
    model = _model_file(tmp_path)
    rc = main(["finetune-diw", "--model", str(model), "--annotations", str(tmp_path / "p.csv"), "--images",
               str(tmp_path / "ds" / "train"), "--out", str(tmp_path / "ft.pt"), "--steps", "3", "--batch", "1",
               "--val-annotations", str(tmp_path / "p.csv"), "--json", str(tmp_path / "s.json"), "--device", "cpu"])
    assert rc == 0 and (tmp_path / "ft.pt").is_file()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["steps"] == 3 and "val_after" in summary
    assert main(["diw-eval", "--model", str(tmp_path / "ft.pt"), "--annotations", str(tmp_path / "val.csv"),
                 "--images", str(tmp_path / "img"), "--device", "cpu"]) == 0
    assert "WHDR" in capsys.readouterr().out
    # an existing output is not overwritten; a missing image is one line
    assert main(["finetune-diw", "--model", str(model), "--annotations", str(tmp_path / "p.csv"), "--images",
                 str(tmp_path / "ds" / "train"), "--out", str(tmp_path / "ft.pt")]) == 2
    assert main(["diw-eval", "--model", str(model), "--annotations", str(tmp_path / "p.csv"), "--device", "cpu",
                 "--images", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("rig: error:") for e in err)


def test_sign_only_whdr_by_hand():
    """τ = 0.02 counts a correctly ordered near-equal pair as wrong; the sign-only WHDR does not."""
    from inference.diw import whdr

    rel = np.array([1, 1, -1, 0])  # +1: A farther
    da = np.array([2.01, 3.0, 1.0, 2.0])
    db = np.array([2.00, 2.0, 1.5, 2.0])  # pair 0: right order but within 2 %
    r = whdr(da, db, rel, tau=0.02)
    assert r["whdr_neq"] == pytest.approx(1 / 3)
    assert r["whdr_sign"] == pytest.approx(0.0)
    r2 = whdr(db, da, rel, tau=0.02)  # every ordinal pair reversed
    assert r2["whdr_sign"] == pytest.approx(1.0)
