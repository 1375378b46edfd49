"""``rig bench synth``: the fast layered defocus vs the straightforward per-layer convolution.

On a procedural 645x432 scene (textured back wall, floor ramp, slanted panel, fronto-parallel
boxes; 0.5-8 m) seen by the paper's Nikon D200 35 mm f/2.8 rig focused at 2 m, times

* fast: :func:`rig.core.defocus.render_defocus` (boxed layers, separable Gaussian, layers prepared and
  blurred on OpenCV's thread count), and the same on one thread (``fast_1_thread``);
* straightforward: :func:`rig.core.defocus.render_defocus_direct` — the same layers, extension, PSFs
  and compositing done over the whole frame for every layer, each plane blurred with the layer's
  2-D kernel by ``cv2.filter2D`` (which itself switches to a DFT for kernels of 11x11 and up);
* direct_shared_prep: the fast code's layer preparation, then whole-frame ``cv2.filter2D`` per
  layer (isolates the convolution part of the speed-up);

for the Gaussian and the disk PSF. Runs are interleaved (fast, straightforward, shared, fast, …)
so load changes hit all alike; the median of ``--repeats`` runs is reported with the output
difference between the implementations.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

CONFIG = "nikon_d200_xtion"
FOCUS_M = 2.0


def _time(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and print; returns the figures (seconds, ratios, differences in [0, 1] units)."""
    import cv2
    from rich.console import Console
    from rich.table import Table

    from rig.core import defocus
    from rig.core.config import load_rig_config
    from rig.synth import procedural_scene

    quick = bool(getattr(args, "quick", False))
    repeats = 1 if quick else max(1, int(getattr(args, "repeats", 5)))
    width, height = (160, 108) if quick else (645, 432)
    cfg = load_rig_config(CONFIG)
    lens = cfg.lens("defocused", focus_m=FOCUS_M)
    rgb8, depth = procedural_scene(width, height, seed=0)
    rgb = rgb8.astype(np.float32) / 255.0  # compare in float: no 8-bit rounding in the difference
    layers = defocus.depth_layers(depth, lens, cfg.blur.max_layer_step_px)
    occupied = int((layers.counts > 0).sum())
    kw = dict(rho=cfg.blur.rho, max_step_px=cfg.blur.max_layer_step_px)

    figures: dict[str, Any] = {
        "input": f"{width}x{height}", "config": CONFIG, "focus_m": FOCUS_M, "k_cam_px": round(float(
            defocus.optics.k_cam_px(lens)), 4), "layers": occupied, "repeats": repeats,
        "max_blur_px": round(float(layers.diameter_px[layers.counts > 0].max()), 3),
        "cv2_threads": cv2.getNumThreads(),
    }
    table = Table(width=100, title=f"rig bench synth: {width}x{height}, {CONFIG} focus {FOCUS_M:g} m, "
                  f"{occupied} layers, median of {repeats}")
    for col in ("PSF", "implementation", "median s", "speed-up", "max |diff|", "mean |diff|"):
        table.add_column(col, justify="left" if col in ("PSF", "implementation") else "right", no_wrap=True)
    for psf in ("gaussian", "disk"):
        impls: dict[str, Callable[[], np.ndarray]] = {
            "fast": lambda: defocus.render_defocus(rgb, depth, lens, psf=psf, **kw),
            "fast_1_thread": lambda: defocus.render_defocus(rgb, depth, lens, psf=psf, threads=1, **kw),
            "straightforward": lambda: defocus.render_defocus_direct(rgb, depth, lens, psf=psf, **kw),
            "direct_shared_prep": lambda: defocus.render_defocus_direct(rgb, depth, lens, psf=psf,
                                                                        shared_prep=True, **kw),
        }
        times: dict[str, list[float]] = {name: [] for name in impls}
        outs: dict[str, np.ndarray] = {}
        impls["fast"]()  # warm caches (kernels, imports) before timing
        for _ in range(repeats):
            for name, fn in impls.items():
                dt, outs[name] = _time(fn)
                times[name].append(dt)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        res: dict[str, Any] = {}
        for name in impls:
            diff = np.abs(outs[name].astype(np.float64) - outs["fast"])
            res[name] = {"median_s": round(med[name], 5), "speedup_of_fast": round(med[name] / med["fast"], 2),
                         "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
            table.add_row(psf, name, f"{med[name]:.4f}",
                          "1.0 (ref)" if name == "fast" else f"{med[name] / med['fast']:.1f}x",
                          f"{diff.max():.2e}", f"{diff.mean():.2e}")
        figures[psf] = res
    figures["speedup"] = figures["gaussian"]["straightforward"]["speedup_of_fast"]
    g = figures["gaussian"]
    figures["speedup_1_thread"] = round(g["straightforward"]["median_s"] / g["fast_1_thread"]["median_s"], 2)
    Console(width=100).print(table)
    if quick:
        Console().print("[dim]--quick: tiny input, 1 run: a smoke run, not a measurement[/dim]")
    return figures
