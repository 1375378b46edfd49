"""``rig bench infer``: inference timings (median of ``--repeats`` runs, ratios measured in the same run).

Section ``torch``: for each architecture at the DFD output size (645x432; ``--quick``: 96x64) —
one deterministic pass, MC-dropout with 50 samples done efficiently (trunk once, decoder samples
batched; paper 1 §3.4) and naively (50 full passes, the same dropout masks), their ratios
(goal: 50 samples <= 8x one pass) and the largest difference between the two MC results.
Further sections (issue 6: onnxruntime engine figures) append themselves to ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

SAMPLES = 50
FULL_HW = (432, 645)
QUICK_HW = (64, 96)
NAIVE_BUDGET_S = 60.0  # naive MC repeats are capped at 1 when one repeat would take longer


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_section(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from inference.mc_dropout import mc_predict, mc_predict_naive
    from inference.model import MODELS, build_model, load_model, shipped_models

    quick = bool(getattr(args, "quick", False))
    repeats = max(1, int(getattr(args, "repeats", 5)))
    h, w = QUICK_HW if quick else FULL_HW
    torch.manual_seed(0)
    x = torch.rand(1, 3, h, w)
    out: dict[str, Any] = {"image_px": [w, h], "samples": SAMPLES, "threads": torch.get_num_threads(),
                           "repeats": repeats, "models": {}}
    for arch in (a for a in MODELS if a != "dfdnet-ens"):  # an ensemble is M dfdnet passes: same ratio
        # timings do not depend on the weights; the MC agreement check is more telling with trained ones
        shipped = [n for n in shipped_models(include_camind=False) if load_model(n).arch == arch]
        model = load_model(shipped[0]).model if shipped else build_model(arch).eval()

        def one() -> None:
            with torch.inference_mode():
                model(x)

        t_one = _median_time(one, repeats)
        t_eff = _median_time(lambda: mc_predict(model, x, samples=SAMPLES), repeats)
        naive_reps = repeats if SAMPLES * t_one <= NAIVE_BUDGET_S else 1
        t_naive = _median_time(lambda: mc_predict_naive(model, x, samples=SAMPLES), naive_reps, warmup=0)
        m_eff, v_eff = mc_predict(model, x, samples=SAMPLES, seed=1)
        m_nai, v_nai = mc_predict_naive(model, x, samples=SAMPLES, seed=1)
        out["models"][arch] = {
            "weights": f"shipped {shipped[0]}" if shipped else "random init",
            "one_pass_s": t_one, "mc_efficient_s": t_eff, "mc_naive_s": t_naive, "naive_repeats": naive_reps,
            "mc_over_one_pass": t_eff / t_one, "naive_over_efficient": t_naive / t_eff,
            "goal_mc_over_one_pass": 8.0, "meets_goal": t_eff / t_one <= 8.0,
            "max_abs_diff_mean_m": float((m_eff - m_nai).abs().max()),
            "max_abs_diff_var_m2": float((v_eff - v_nai).abs().max()),
        }
    return out


def deploy_section(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 6's figures: torch vs onnxruntime, MC-dropout in ORT, live-loop FPS (prints its own table)."""
    from rig.bench.deploy import run as run_deploy

    return run_deploy(args)


def uncertainty_section(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 14's figures: moments uncertainty, agreement with MC-50, int8 (prints its own table)."""
    from rig.bench.uncertainty import run as run_uncertainty

    return run_uncertainty(args)


SECTIONS: list[tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = [
    ("torch", torch_section), ("deploy", deploy_section), ("uncertainty", uncertainty_section)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of ``rig bench infer``: every section's figures, printed as tables."""
    from rich.console import Console
    from rich.table import Table

    from rig.bench.uncertainty import summary

    figures: dict[str, Any] = {}
    for name, section in SECTIONS:
        figures[name] = section(args)
    figures["summary"] = summary(figures)
    tf = figures["torch"]
    t = Table(title=f"MC-dropout, {tf['samples']} samples, {tf['image_px'][0]}x{tf['image_px'][1]} px, "
              f"{tf['threads']} thread(s), median of {tf['repeats']}")
    for col in ("model", "1 pass (s)", "MC efficient (s)", "MC naive (s)", "MC / 1 pass", "naive / efficient",
                "max |Δmean| (m)"):
        t.add_column(col, justify="right")
    for arch, m in tf["models"].items():
        t.add_row(arch, f"{m['one_pass_s']:.3f}", f"{m['mc_efficient_s']:.3f}",
                  f"{m['mc_naive_s']:.2f}" + ("*" if m["naive_repeats"] == 1 else ""),
                  f"{m['mc_over_one_pass']:.1f}x" + ("" if m["meets_goal"] else " (goal 8x)"),
                  f"{m['naive_over_efficient']:.1f}x", f"{m['max_abs_diff_mean_m']:.1e}")
    Console().print(t)
    if any(m["naive_repeats"] == 1 for m in tf["models"].values()):
        print(f"* naive MC timed once (one repeat would exceed {NAIVE_BUDGET_S:.0f} s)")
    print("summary: " + ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} -"
                                  for k, v in figures["summary"].items()))
    return figures
