"""``rig demo`` step: register the demo session and build a small dataset from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rig.demo import DemoContext


def register_step(ctx: "DemoContext") -> list[str]:
    """Register ``ctx.artifacts['session']`` and build ``ctx.out_dir/'dataset'`` (split by scene);
    sets ``ctx.artifacts['dataset']``. A previous demo dataset there is replaced."""
    import shutil

    import numpy as np

    from rig.dataset import MANIFEST
    from registration.build import build_dataset
    from registration.register import RegisterOptions, open_session, register_session

    session_path = ctx.artifacts.get("session")
    if session_path is None:
        return ["no session from the capture step: nothing to register"]
    session = open_session(session_path)
    opts = RegisterOptions(size=tuple(session.config.output.size_px), align="flag",
                           max_fill_px=session.config.output.max_fill_px)  # type: ignore[arg-type]
    results = register_session(session_path, opts, progress=False)
    failed = [r for r in results if r.status == "failed"]
    lines = [f"{sum(r.status == 'registered' for r in results)} registered, "
             f"{sum(r.status == 'skipped' for r in results)} already done, {len(failed)} failed"]
    lines += [f"  {r.capture_id}: {r.error}" for r in failed]
    metas = [r.meta for r in results if r.meta]
    if metas:
        meas = np.mean([m["depth"]["measured_fraction"] for m in metas])
        fill = np.mean([m["depth"]["filled_fraction"] for m in metas])
        shift = max(m["alignment"].get("magnitude_px", 0.0) for m in metas)
        lines.append(f"depth in the DSLR frame: {meas:.1%} measured, {fill:.1%} filled; "
                     f"largest f/2.8↔f/8 shift {shift:.2f} px")
    out = ctx.out_dir / "dataset"
    if (out / MANIFEST).is_file():
        shutil.rmtree(out)
    manifest = build_dataset([session_path], out, test_fraction=0.25, seed=0, progress=False)
    ctx.artifacts["dataset"] = out
    sp = manifest["splits"]
    lines.append(f"dataset: {out} (train {sp['train']['count']}, test {sp['test']['count']}, split by scene)")
    return lines
