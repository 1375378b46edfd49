"""Foundation steps of ``rig demo``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rig.demo import DemoContext


def optics_step(ctx: "DemoContext") -> list[str]:
    """Blur-vs-depth plot for the simulated rig's focus presets."""
    from rig import optics
    from rig.plots import plot_blur_vs_depth

    out = plot_blur_vs_depth(ctx.config, ctx.out_dir / "optics" / "blur_vs_depth.png")
    lens = ctx.config.lens()
    near, far = optics.dead_zone_m(lens)
    ctx.artifacts["blur_plot"] = out
    return [f"k_cam = {optics.k_cam_px(lens):.2f} px at focus {lens.focus_m:g} m; dead zone {near:.2f}-{far:.2f} m",
            f"plot: {out}"]
