"""``rig demo`` step: capture a few scenes with the simulated rig into ``<out>/session``."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rig.demo import DemoContext


def capture_step(ctx: "DemoContext") -> list[str]:
    """Capture ``ctx.scenes`` simulated scenes (no device latency with ``ctx.quick``) into
    ``ctx.out_dir/session``; sets ``ctx.artifacts['session']``. A previous demo session there is
    replaced; any other existing folder is left alone (Session.create refuses it)."""
    from acquisition.capture import PairCapture, run_scenes
    from acquisition.cli import config_with_overrides
    from acquisition.devices import open_rig
    from rig.session import SESSION_FILE, Session

    cfg = ctx.config
    overrides: dict[str, object] = {"dslr.driver": "simulated", "depth_sensor.driver": "simulated"}
    if ctx.quick:
        overrides["simulated.latency_scale"] = 0.0
    cfg = config_with_overrides(cfg, overrides)
    path = ctx.out_dir / "session"
    if (path / SESSION_FILE).is_file():
        shutil.rmtree(path)
    session = Session.create(path, cfg, planned_scenes=ctx.scenes)
    devices = open_rig(cfg)
    capture = PairCapture(session, devices.dslr, devices.sensor, scene_hook=devices.scene_hook(),
                          backoff_s=0.5 * cfg.simulated.latency_scale)
    try:
        capture.prepare()
        run = run_scenes(capture, list(range(ctx.scenes)))
    finally:
        capture.close()
    if run.stop_error is not None:
        raise run.stop_error
    if run.interrupted:
        raise KeyboardInterrupt
    ctx.artifacts["session"] = path
    s = session.summary()
    mean_s = sum(r.elapsed_s for r in run.results) / max(1, len(run.results))
    return [f"{s['captures_ok']}/{ctx.scenes} scenes captured ({s['captures_failed']} failed), "
            f"{mean_s:.2f} s per capture, {s['raw_bytes'] / 1e6:.1f} MB",
            f"session: {path}  (inspect: rig sessions show {path})"]
