"""The ``rig`` command line: one entry point, one module per command group in this package.

The stages (``acquisition``, ``registration``, ``inference``) are libraries and know nothing of the
command line: every parser and handler lives here. Each module in ``COMMAND_MODULES`` exposes
``add_commands(subparsers)`` and sets ``func`` on its parsers; heavy imports (torch, cv2, device
libraries) happen inside the handlers so ``rig --help`` stays fast. A
:class:`~rig.core.errors.RigError` becomes one line on stderr and its exit code; any other exception
becomes one line too (set ``RIG_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import ModuleType
from typing import Callable, Sequence

from rig import __version__
from rig.cli import acquisition, blur, compare, deploy, foundation, inference, registration, study
from rig.cli.base import _Parser, add_group
from rig.core.errors import RigError, Terminated

__all__ = ["COMMAND_MODULES", "add_group", "build_parser", "main"]

# Order = order in `rig --help`.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    foundation,    # optics, synth, demo, bench
    acquisition,   # devices, capture, sessions
    registration,  # calibrate, register, build-dataset, import-dfd
    inference,     # train, eval, predict, report
    study,         # depth-study run/table/ship, import-nyu
    compare,       # baseline, finetune-diw, diw-pairs, diw-eval, compare
    blur,          # camind-experiment (and `rig calibrate blur`, added by registration)
    deploy,        # export, live, replay
)


PIPED_COLUMNS = 1000  # rich's line width when stdout is not a terminal


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rig", description="Deep depth-from-defocus camera rig: capture, register, "
                     "train, predict, live. Every command takes --help.")
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated("SIGTERM")


def _sigterm_as_exception() -> Callable[[], None]:
    """While a command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so a command
    stopped by ``kill``/``systemctl stop`` ends as cleanly as on Ctrl-C. A SIGTERM that the parent set
    to be ignored, or that someone else handles, is left alone. Returns the undo."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        # the command piped or redirected: rich would wrap at 80 columns and cut paths in half
        os.environ["COLUMNS"] = str(PIPED_COLUMNS)
    func = getattr(args, "func", None)
    if func is None:
        # a group without a subcommand (e.g. `rig optics`): show its help
        target = getattr(args, "_group_parser", parser)
        target.print_help()
        return 2 if args.command else 0
    restore = _sigterm_as_exception()
    try:
        rc = func(args)
        return int(rc or 0)
    except RigError as e:
        print(f"rig: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("rig: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 — last line of defence: one line, not a traceback
        if os.environ.get("RIG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"rig: error: {type(e).__name__}: {msg} (set RIG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
