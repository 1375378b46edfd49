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


def synth_step(ctx: "DemoContext") -> list[str]:
    """Synthetic defocus of a procedural scene at the simulated lens, focused at 2 m and 8 m.

    Writes ``<out>/synth/``: aif.png (all-in-focus), depth.png (colourised, near = blue),
    depth_mm.png (16-bit), defocus_focus2m.png, defocus_focus8m.png.
    """
    import time

    from rig import defocus, optics
    from rig.imageio import write_depth_mm, write_image
    from rig.synth import colourise_depth, procedural_scene

    cfg = ctx.config
    width, height = (322, 216) if ctx.quick else cfg.output.size_px
    near_m, far_m = cfg.simulated.depth_range_m
    rgb, depth = procedural_scene(width, height, seed=cfg.simulated.seed, near_m=near_m, far_m=far_m)
    out = ctx.out_dir / "synth"
    write_image(out / "aif.png", rgb)
    write_image(out / "depth.png", colourise_depth(depth, near_m, far_m))
    write_depth_mm(out / "depth_mm.png", depth)
    lines = [f"procedural scene {width}x{height}, depth {float(depth.min()):.2f}-{float(depth.max()):.2f} m, "
             f"{cfg.blur.psf} PSF ρ={cfg.blur.rho:g}, layers every {cfg.blur.max_layer_step_px:g} px of blur"]
    for focus_m in (2.0, 8.0):
        lens = cfg.lens("defocused", focus_m=focus_m)
        t0 = time.perf_counter()
        img = defocus.render_defocus(rgb, depth, lens, psf=cfg.blur.psf, rho=cfg.blur.rho,
                                     max_step_px=cfg.blur.max_layer_step_px)
        dt = time.perf_counter() - t0
        path = write_image(out / f"defocus_focus{focus_m:g}m.png", img)
        eps = optics.blur_diameter_px(depth, lens)
        n_layers = int((defocus.depth_layers(depth, lens, cfg.blur.max_layer_step_px).counts > 0).sum())
        lines.append(f"focus {focus_m:g} m: blur 0-{float(eps.max()):.1f} px (k_cam {optics.k_cam_px(lens):.2f} px), "
                     f"{n_layers} layers, {dt * 1000:.0f} ms -> {path.name}")
    ctx.artifacts["synth_dir"] = out
    lines.append(f"images: {out}")
    return lines
