"""``rig demo``: the whole pipeline on the simulated rig, no hardware. Grows with each stage.

Each step is ``module:function`` taking a :class:`DemoContext`; a step whose stage is not built is
reported as skipped. Steps put what they produce into ``ctx.artifacts`` for the later steps.
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.config import RigConfig, load_rig_config

STEPS: tuple[tuple[str, str], ...] = (
    ("optics", "rig.demo_steps:optics_step"),
    ("synthetic defocus", "rig.demo_steps:synth_step"),
    ("capture", "acquisition.demo:capture_step"),
    ("register + dataset", "registration.demo:register_step"),
    ("predict + report", "inference.demo:predict_step"),
    ("live loop", "rig.live:demo_step"),
)


@dataclass
class DemoContext:
    out_dir: Path
    config: RigConfig
    scenes: int
    quick: bool
    artifacts: dict[str, Any] = field(default_factory=dict)


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out_dir=out, config=load_rig_config("simulated"), scenes=max(1, args.scenes),
                      quick=bool(args.quick))
    for title, target in STEPS:
        module, _, func = target.partition(":")
        try:
            step = getattr(importlib.import_module(module), func)
        except (ModuleNotFoundError, AttributeError):
            console.print(f"[dim]- {title}: not built yet, skipped[/dim]")
            continue
        t0 = time.perf_counter()
        console.print(f"[bold]▶ {title}[/bold]")
        lines = step(ctx) or []
        for line in lines:
            console.print(f"    {line}")
        console.print(f"  [green]✓[/green] {title} ({time.perf_counter() - t0:.1f} s)")
    console.print(f"[bold green]demo done[/bold green]: outputs in {out.resolve()}")
    return 0
