"""Acquisition commands: ``rig devices``, ``rig capture``, ``rig sessions show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rig.core.errors import PartialFailure, RigError

DEFAULT_SCENES = 10
TABLE_ROWS_MAX = 40  # longer runs list only the captures that needed retries or failed


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rig.cli.base import add_group

    p = sub.add_parser("devices", help="list attached DSLRs and depth sensors, and why none is found",
                       description="Detect tethered DSLRs (gphoto2) and depth sensors (RealSense, OpenNI2); "
                       "for each driver that finds nothing, say why. The simulated rig is always available.")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("capture", help="capture paired f/2.8 + f/8 shots and a depth burst per scene",
                       description="Capture scenes into a session folder: per scene a depth burst + IR frame, "
                       "the defocused shot and the exposure-matched all-in-focus shot. Failed attempts are "
                       "retried and journaled; Ctrl-C stops cleanly; --resume continues a session.")
    p.add_argument("--config", help="rig config file or preset (required for a new session; "
                   "with --resume it must match the session's snapshot)")
    p.add_argument("--session", required=True, help="session folder (created; must not exist unless --resume)")
    p.add_argument("--scenes", type=int, help=f"number of scenes in the session (default: the session's plan, "
                   f"else {DEFAULT_SCENES})")
    p.add_argument("--resume", action="store_true", help="continue an existing session (redoes scenes without "
                   "an ok capture)")
    p.add_argument("--fault-rate", type=float, help="override faults.rate in [0, 1] (simulated devices)")
    p.add_argument("--latency-scale", type=float, help="override simulated.latency_scale in [0, 10]")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.set_defaults(func=cmd_capture)

    sessions = add_group(sub, "sessions", "inspect capture sessions")
    p = sessions.add_parser("show", help="config, captures ok/failed/retried, files and sizes of a session")
    p.add_argument("dir", help="session folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--captures", action="store_true", help="also list every capture")
    p.set_defaults(func=cmd_sessions_show)
    p = sessions.add_parser("verify", help="re-hash and decode every file of a session's captures",
                            description="Check every ok capture: each file's SHA-256 against the journal "
                            "(recorded at capture time) and a full decode of each image. Lists each damaged or "
                            "missing file with its capture id; exit 0 when all are intact, 5 otherwise.")
    p.add_argument("dir", help="session folder")
    p.set_defaults(func=cmd_sessions_verify)


# ------------------------------------------------------------------------------------------ devices
def cmd_devices(args: argparse.Namespace) -> int:
    from acquisition.devices import list_devices

    rows = list_devices()
    if args.json:
        print(json.dumps([{"kind": k, "name": n, "status": s} for k, n, s in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="devices")
    t.add_column("kind")
    t.add_column("device / driver")
    t.add_column("status")
    for kind, name, status in rows:
        style = "green" if status == "attached" else ("cyan" if name.startswith("simulated") else "yellow")
        t.add_row(kind, name, f"[{style}]{status}[/{style}]")
    Console().print(t)
    attached = sum(1 for _, _, s in rows if s == "attached")
    print(f"{attached} device(s) attached" + ("" if attached else "; `rig capture --config simulated` needs none"))
    return 0


# ------------------------------------------------------------------------------------------ capture
def _check_range(flag: str, value: float | None, lo: float, hi: float) -> None:
    if value is not None and not (lo <= value <= hi):
        raise RigError(f"{flag}: expected a number in [{lo:g}, {hi:g}], got {value:g}")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.fault_rate is not None:
        out["faults.rate"] = float(args.fault_rate)
    if args.latency_scale is not None:
        out["simulated.latency_scale"] = float(args.latency_scale)
    return out


def open_capture_session(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """(session, run config, total scenes) for ``rig capture`` — validates every flag first."""
    from rig.core.config import config_with_overrides, load_rig_config
    from rig.core.session import Session

    _check_range("--fault-rate", args.fault_rate, 0.0, 1.0)
    _check_range("--latency-scale", args.latency_scale, 0.0, 10.0)
    if args.scenes is not None and args.scenes < 1:
        raise RigError(f"--scenes: expected an integer >= 1, got {args.scenes}")
    path = Path(args.session)
    overrides = _overrides(args)
    if not args.resume:
        if args.config is None:
            raise RigError("--config is required for a new session (or pass --resume to continue one)")
        cfg = load_rig_config(args.config, overrides=overrides)
        session = Session.create(path, cfg, planned_scenes=args.scenes or DEFAULT_SCENES)
        return session, cfg, int(args.scenes or DEFAULT_SCENES)
    session = Session.open(path)
    cfg = config_with_overrides(session.config, overrides)
    if args.config is not None:
        # compare effective configs: the file + this run's overrides vs the snapshot + the same overrides
        given = load_rig_config(args.config, overrides=overrides)
        if given.snapshot_id() != cfg.snapshot_id():
            raise RigError(f"--config {args.config} differs from the session's snapshot "
                           f"({given.snapshot_id()} vs {cfg.snapshot_id()}, with the same overrides); omit "
                           "--config to resume with the session's own config")
    total = int(args.scenes or session.planned_scenes or DEFAULT_SCENES)
    return session, cfg, total


def _status_table(results: list[Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col, just in (("capture", "left"), ("scene", "left"), ("status", "left"), ("attempts", "right"),
                      ("time (s)", "right"), ("MB", "right"), ("error", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    shown = results if len(results) <= TABLE_ROWS_MAX else [r for r in results if r.status != "ok" or r.attempts > 1]
    for r in shown:
        style = "green" if r.status == "ok" and r.attempts == 1 else ("yellow" if r.status == "ok" else "red")
        t.add_row(r.capture_id, r.scene_id, f"[{style}]{r.status}[/{style}]", str(r.attempts), f"{r.elapsed_s:.2f}",
                  f"{r.bytes / 1e6:.2f}", r.error or "")
    if len(shown) < len(results):
        t.caption = f"{len(results) - len(shown)} more captures ok at the first attempt not listed"
    return t


def cmd_capture(args: argparse.Namespace) -> int:
    from rich.console import Console

    from acquisition.capture import PairCapture
    from acquisition.devices import open_rig

    session, cfg, total = open_capture_session(args)
    console = Console(stderr=False)
    with session.lock():
        if args.resume:
            for note in session.recover():
                console.print(f"[dim]resume: {note}[/dim]")
        pending = session.pending_scene_indices(total)
        if not pending:
            print(f"{session.path}: all {total} scenes already captured; nothing to do")
            return 0
        devices = open_rig(cfg)
        simulated = cfg.dslr.driver == "simulated" and cfg.depth_sensor.driver in ("simulated", "none")
        backoff = 0.5 * (cfg.simulated.latency_scale if simulated else 1.0)
        capture = PairCapture(session, devices.dslr, devices.sensor, scene_hook=devices.scene_hook(),
                              backoff_s=backoff, config=cfg)
        try:
            try:
                capture.prepare()
            except BaseException:
                if not args.resume:
                    session.discard_if_unused()  # nothing captured: leave no half-made session behind
                raise
            run = _run_with_progress(capture, pending, console, quiet=args.no_progress or not console.is_terminal)
        finally:
            capture.close()
    console.print(_status_table(run.results, f"{session.path}: this run"))
    summary = session.summary()
    print(f"session: {summary['captures_ok']} ok, {summary['captures_failed']} failed, "
          f"{summary['captures_retried']} needed retries, of {total} planned; journal {session.journal_path}")
    resume = f"rig capture --session {session.path} --resume"
    if run.interrupted:
        how = "terminated (SIGTERM)" if run.terminated else "interrupted"
        print(f"rig: {how} — {summary['captures_ok']} capture(s) saved; continue with `{resume}`", file=sys.stderr)
        return 143 if run.terminated else 130
    if run.stop_error is not None:
        raise run.stop_error
    if run.failed:
        raise PartialFailure(f"{run.failed} of {len(run.results)} capture(s) failed after "
                          f"{cfg.session.retries + 1} attempts each (see {session.journal_path}); "
                          f"`{resume}` retries them")
    return 0


def _run_with_progress(capture: Any, pending: list[int], console: Any, quiet: bool) -> Any:
    from acquisition.capture import run_scenes

    if quiet:
        def line(r: Any) -> None:
            print(f"{r.capture_id} {r.status} attempts={r.attempts} {r.elapsed_s:.2f}s"
                  + (f" ({r.error})" if r.error else ""), flush=True)
        return run_scenes(capture, pending, on_result=line)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = {"ok": 0, "failed": 0, "retried": 0}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console, transient=False) as progress:
        task = progress.add_task("capturing", total=len(pending), status="")

        def start(i: int) -> None:
            progress.update(task, description=f"scene {i}")

        def done(r: Any) -> None:
            counts["ok" if r.status == "ok" else "failed"] += 1
            counts["retried"] += int(r.status == "ok" and r.attempts > 1)
            progress.update(task, advance=1, status=f"ok {counts['ok']}  retried {counts['retried']}  "
                            f"failed {counts['failed']}")

        return run_scenes(capture, pending, on_result=done, on_start=start)


# ----------------------------------------------------------------------------------------- sessions
def cmd_sessions_show(args: argparse.Namespace) -> int:
    from rig.core.session import Session

    session = Session.open(args.dir)
    s = session.summary()
    s["captures_readable"] = len(session.completed())  # parses every ok capture's record (one-line error if bad)
    captures = []
    if args.captures or args.json:
        attempts: dict[str, int] = {}
        for e in session.journal():
            attempts[e["capture_id"]] = attempts.get(e["capture_id"], 0) + 1
        captures = [{"capture_id": cid, "scene_id": e.get("scene_id"), "status": e["status"],
                     "attempts": attempts[cid], "bytes": e.get("bytes"), "error": e.get("error")}
                    for cid, e in session.latest().items()]
    if args.json:
        print(json.dumps({**s, "captures": captures}, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    cfg = session.config
    t = Table(title=f"session {session.path}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    rows = [
        ("config", f"{cfg.name} (snapshot {s['snapshot_id']})"),
        ("dslr", f"{cfg.dslr.driver}: {cfg.dslr.model}, f/{cfg.dslr.f_number_defocused:g} + "
                 f"f/{cfg.dslr.f_number_all_in_focus:g}, focus {cfg.dslr.focus_m:g} m"),
        ("depth sensor", f"{cfg.depth_sensor.driver}: {cfg.depth_sensor.model}"),
        ("created", f"{s['created']} with {s['software']}"),
        ("planned scenes", str(s["planned_scenes"])),
        ("captures ok", str(s["captures_ok"])),
        ("  of which retried", str(s["captures_retried"])),
        ("captures failed", str(s["captures_failed"]) + (f" ({', '.join(s['failed_ids'][:10])})"
                                                         if s["failed_ids"] else "")),
        ("interrupted / pending", str(s["captures_interrupted"])),
        ("attempts journaled", f"{s['attempts']}" + (" (torn last line: repaired at the next capture)"
                                                     if s["journal_torn"] else "")),
        ("raw files", f"{s['raw_files']} ({s['raw_bytes'] / 1e6:.1f} MB)"),
        ("registered", f"{s['registered_captures']} capture(s) ({s['registered_bytes'] / 1e6:.1f} MB)"),
        ("unfinished attempts", str(len(s["unfinished_attempts"])) + (" (removed by --resume)"
                                                                      if s["unfinished_attempts"] else "")),
        ("free space", f"{s['free_mb']:.0f} MB"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console = Console()
    console.print(t)
    if args.captures:
        ct = Table(title="captures")
        for col in ("capture", "scene", "status", "attempts", "MB", "error"):
            ct.add_column(col)
        for c in captures:
            ct.add_row(c["capture_id"], str(c["scene_id"]), c["status"], str(c["attempts"]),
                       f"{(c['bytes'] or 0) / 1e6:.2f}", c["error"] or "")
        console.print(ct)
    return 0


def cmd_sessions_verify(args: argparse.Namespace) -> int:
    """`rig sessions verify DIR`: one line per damaged or missing file; exit 5 when any is found."""
    from rig.core.session import Session

    session = Session.open(args.dir)
    unhashed = sum(1 for e in session.latest().values() if e["status"] == "ok" and not e.get("sha256"))

    def report(cid: str, damages: list[Any]) -> None:
        for d in damages:
            print(f"damaged {d.line()}", flush=True)

    checked, damages = session.verify(on_capture=report)
    bad = sorted({d.capture_id for d in damages})
    note = f" ({unhashed} without recorded checksums: decoded only)" if unhashed else ""
    if bad:
        raise PartialFailure(f"{session.path}: {len(bad)} of {checked} capture(s) damaged or incomplete "
                             f"({', '.join(bad[:10])}{'…' if len(bad) > 10 else ''}); {len(damages)} file(s) listed above")
    print(f"{session.path}: all {checked} capture(s) intact{note}")
    return 0
