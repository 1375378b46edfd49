"""Part of ``rig bench infer`` (issue 14): sampling-free uncertainty and int8, and the ``summary`` object.

* **moments vs one pass** — onnxruntime CPU: the moments graph (FILE.moments.onnx) vs the depth graph,
  interleaved, ``args.threads`` threads; also torch eager.
* **moments vs MC-50** — on the model's validation images (DFD indoor under the shared data folder;
  ``--quick`` or without data: random images): per-image Spearman of the σ maps (torch), and the
  sparsification AUSE of each against the absolute depth error.
* **int8 vs fp32** — the depth graph statically quantised (:mod:`inference.quantize`) vs fp32 on
  onnxruntime, interleaved; the mean abs-rel error of each on the validation images, and its change.

:func:`summary` collects the issue's ratios from every section's figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MC_SAMPLES = 50
VAL_IMAGES = 11
QUICK_VAL_IMAGES = 2


def _val_images(meta: dict[str, Any], size_wh: tuple[int, int], quick: bool) -> tuple[list[Any], str]:
    """[(id, rgb uint8, depth m or None)] and where they came from."""
    from inference.export import _random_rgb
    from inference.quantize import dfd_images

    from inference.quantize import CALIBRATION_IMAGES

    ids = list(meta.get("val_ids") or [])
    kind = str(meta.get("input", "N2_8"))
    imgs = [] if quick or not ids else dfd_images(size_wh, ids=ids, kind=kind)
    if imgs:
        return imgs, f"{len(imgs)} validation images of the model (DFD indoor)"
    if not quick and not ids:
        # a shipped model trained on every capture has no held-out images: real training images still
        # tell whether moments σ follows MC σ and what int8 changes (not the model's accuracy); the
        # int8 calibration images (the first ones) are left out
        rest = dfd_images(size_wh, kind=kind)[CALIBRATION_IMAGES:]
        if rest:
            step = max(1, len(rest) // VAL_IMAGES)
            imgs = rest[::step][:VAL_IMAGES]
            return imgs, (f"{len(imgs)} DFD indoor training images of the model (it has no held-out ids; "
                          "in-sample, so the rel figures compare fp32 with int8, not the model with the data)")
    w, h = size_wh
    n = QUICK_VAL_IMAGES
    rnd = [(f"random{i}", (_random_rgb(h, w, 50 + i)[0].transpose(1, 2, 0) * 255).astype(np.uint8), None)
           for i in range(n)]
    return rnd, f"{n} random images (quick run or no validation data)"


def _agreement(net: Any, images: list[Any]) -> dict[str, Any]:
    """Per-image Spearman of moments σ vs MC-50 σ, and AUSE of each (when ground truth exists)."""
    import torch

    from inference.cv import ause, spearman
    from inference.mc_dropout import mc_predict
    from inference.moments import moments_predict

    rhos, a_mom, a_mc = [], [], []
    for _, rgb, gt in images:
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)[None]
        m_mean, m_var = moments_predict(net, x)
        c_mean, c_var = mc_predict(net, x, samples=MC_SAMPLES, seed=0)
        s_mom, s_mc = m_var.clamp_min(0).sqrt()[0, 0].numpy(), c_var.clamp_min(0).sqrt()[0, 0].numpy()
        rhos.append(spearman(s_mom, s_mc))
        if gt is not None:
            ok = gt > 0
            a_mom.append(ause(np.abs(m_mean[0, 0].numpy() - gt)[ok], s_mom[ok])["ause"])
            a_mc.append(ause(np.abs(c_mean[0, 0].numpy() - gt)[ok], s_mc[ok])["ause"])
    out: dict[str, Any] = {"spearman_per_image": rhos, "spearman_mean": float(np.mean(rhos))}
    if a_mom:
        out.update(ause_moments_m=float(np.mean(a_mom)), ause_mc50_m=float(np.mean(a_mc)),
                   ause_moments_over_mc50=float(np.mean(a_mom) / np.mean(a_mc)))
    return out


def _rel(pred: np.ndarray, gt: np.ndarray) -> float:
    ok = gt > 0
    return float(np.mean(np.abs(pred[ok] - gt[ok]) / gt[ok]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from inference.engine import DepthEngine, EngineConfig
    from inference.export import export_model, load_net
    from inference.moments import moments_predict
    from inference.quantize import calibration_inputs, int8_path, quantize_int8
    from rig.bench.deploy import _paired_s, bench_settings

    quick, repeats, threads, model_ref, (w, h) = bench_settings(args)
    torch.set_num_threads(threads)
    net, meta, source = load_net(str(model_ref))
    images, note = _val_images(meta, (w, h), quick)
    out: dict[str, Any] = {"model": str(model_ref), "arch": getattr(net, "arch", ""), "image_px": [w, h],
                           "threads": threads, "repeats": repeats, "images": note,
                           "load_average_1min_start": round(os.getloadavg()[0], 2)}
    img = images[0][1]
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)[None]

    def torch_one() -> None:
        with torch.inference_mode():
            net(x)

    _, _, out["torch_moments_over_one_pass"] = _paired_s(torch_one, lambda: moments_predict(net, x), repeats)
    with tempfile.TemporaryDirectory(prefix="rig-bench-unc-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_model(net, path, height=h, width=w, source=source, model_meta=meta, check=False)
        cfg = EngineConfig(providers=("cpu",), threads=threads, warmup=2)
        eng = DepthEngine(path, cfg, warm_size=(w, h), moments=True)
        t_one, t_mom, ratio = _paired_s(lambda: eng.predict(img), lambda: eng.predict_moments(img), repeats)
        out["moments"] = {"one_pass_s": t_one, "moments_s": t_mom, "ratio": ratio, "goal": 1.5}
        out["agreement"] = _agreement(net, images)
        # int8: calibration on training images, timing and accuracy against the fp32 graph
        xs, cal_note = calibration_inputs((w, h), meta, 4 if quick else 16)
        quantize_int8(path, int8_path(path), xs)
        eng8 = DepthEngine(int8_path(path), cfg, warm_size=(w, h))
        t32, t8, slower = _paired_s(lambda: eng.predict(img), lambda: eng8.predict(img), repeats)
        int8: dict[str, Any] = {"calibration": cal_note, "fp32_s": t32, "int8_s": t8, "speedup": 1.0 / slower}
        with_gt = [(rgb, gt) for _, rgb, gt in images if gt is not None]
        if with_gt:
            r32 = float(np.mean([_rel(eng.predict(rgb), gt) for rgb, gt in with_gt]))
            r8 = float(np.mean([_rel(eng8.predict(rgb), gt) for rgb, gt in with_gt]))
            int8.update(rel_fp32=r32, rel_int8=r8, rel_change=(r8 - r32) / r32)
        else:
            diffs = [float(np.mean(np.abs(eng8.predict(rgb) - eng.predict(rgb)) / eng.predict(rgb)))
                     for _, rgb, _ in images]
            int8.update(rel_vs_fp32_output=float(np.mean(diffs)), rel_change=float(np.mean(diffs)),
                        note="no ground truth: rel_change is the int8 output's mean relative change")
        out["int8"] = int8
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    _print(out)
    return out


def summary(figures: dict[str, Any]) -> dict[str, float | None]:
    """The issue's checkable ratios (plain numbers; None when a section did not measure it)."""
    dep, unc = figures.get("deploy", {}), figures.get("uncertainty", {})
    by_t = dep.get("torch_vs_ort", {}).get("by_threads", {})
    live = dep.get("live_loop", {}).get("by_threads", {})

    def get(d: dict[str, Any], *keys: str) -> float | None:
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return float(d)

    return {"ort_over_torch_1thread": get(by_t, "1", "speedup"),
            "ort_over_torch_2threads": get(by_t, "2", "speedup"),
            "mc50_over_one_pass": get(dep, "mc_dropout", "ratio"),
            "moments_over_one_pass": get(unc, "moments", "ratio"),
            "moments_vs_mc50_spearman": get(unc, "agreement", "spearman_mean"),
            "live_over_model_2threads": get(live, "2", "ratio"),
            "int8_over_fp32": get(unc, "int8", "speedup"),
            "int8_rel_change": get(unc, "int8", "rel_change")}


def _print(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    w, h = f["image_px"]
    t = Table(title=f"uncertainty and int8: {f['arch']} ({f['model']}), {w}x{h}, {f['threads']} thread(s), "
              f"median of {f['repeats']} interleaved runs",
              caption=f"{f['images']}; 1-min load average {f['load_average_1min_start']} -> "
                      f"{f['load_average_1min_end']}")
    for col in ("measurement", "value", "goal"):
        t.add_column(col, justify="right")
    m, a, q = f["moments"], f["agreement"], f["int8"]
    t.add_row("moments vs one pass (onnxruntime)", f"{m['ratio']:.2f}x ({m['moments_s'] * 1e3:.0f} vs "
              f"{m['one_pass_s'] * 1e3:.0f} ms)", "<= 1.5x")
    t.add_row("moments vs one pass (torch)", f"{f['torch_moments_over_one_pass']:.2f}x", "")
    t.add_row(f"σ Spearman moments vs MC-{MC_SAMPLES} (mean per image)", f"{a['spearman_mean']:.3f}", ">= 0.8")
    if "ause_moments_m" in a:
        t.add_row("AUSE moments / MC-50", f"{a['ause_moments_m']:.4f} / {a['ause_mc50_m']:.4f} m "
                  f"({a['ause_moments_over_mc50']:.2f})", "within 10 %")
    t.add_row("int8 vs fp32 speed (onnxruntime)", f"{q['speedup']:.2f}x", ">= 1.5x")
    t.add_row("int8 rel change", f"{q['rel_change']:+.2%}", "within 2 %")
    Console().print(t)
