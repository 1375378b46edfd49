"""Figures shared by the CLI and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rig.core import optics
from rig.core.config import RigConfig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_blur_vs_depth(cfg: RigConfig, out: Path, max_depth_m: float = 10.0) -> Path:
    """Blur-circle diameter (output px) vs depth for each focus preset (paper 1 Fig. 4)."""
    plt = _pyplot()
    depth_m = np.linspace(max(0.05, cfg.dslr.focal_mm * 1e-3 * 4), max_depth_m, 800)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for focus_m in cfg.focus_presets_m:
        lens = cfg.lens("defocused", focus_m=focus_m)
        ax.plot(depth_m, optics.blur_diameter_px(depth_m, lens), label=f"focus {focus_m:g} m")
        near, far = optics.dead_zone_m(lens)
        ax.axvspan(near, min(far, max_depth_m), alpha=0.08)
    ax.set_xlabel("depth (m)")
    ax.set_ylabel("blur-circle diameter ε (output px)")
    ax.set_title(f"{cfg.name}: f={cfg.dslr.focal_mm:g} mm, N={cfg.dslr.f_number_defocused:g}, "
                 f"{cfg.dslr.pixel_um:g} µm × {cfg.downsample:.2f}")
    ax.set_xlim(0, max_depth_m)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(title="shaded: ε < 1 px")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
