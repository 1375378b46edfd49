"""The ``rig`` command line: one entry point, subcommands contributed by each stage.

Each stage module listed in ``COMMAND_MODULES`` exposes ``add_commands(subparsers)`` and sets
``func`` on its parsers; heavy imports (torch, cv2, device libraries) happen inside the handlers so
``rig --help`` stays fast. A :class:`~rig.errors.RigError` becomes one line on stderr and its exit
code; any other exception becomes one line too (set ``RIG_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Sequence

from rig import __version__
from rig.errors import RigError

# Order = order in `rig --help`. A module that fails to import is reported, not fatal.
COMMAND_MODULES: tuple[str, ...] = (
    "rig.commands",
    "acquisition.cli",
    "registration.cli",
    "inference.cli",
    "inference.cli_compare",
    "rig.blur_cli",
    "rig.deploy_cli",
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line + exit 2 (argparse's default prints usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rig", description="Deep depth-from-defocus camera rig: capture, register, "
                     "train, predict, live. Every command takes --help.")
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # stage not built yet
            raise
        add: Callable[[argparse._SubParsersAction], None] | None = getattr(module, "add_commands", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # a group without a subcommand (e.g. `rig optics`): show its help
        target = getattr(args, "_group_parser", parser)
        target.print_help()
        return 2 if args.command else 0
    try:
        rc = func(args)
        return int(rc or 0)
    except RigError as e:
        print(f"rig: error: {e}", file=sys.stderr)
        return e.exit_code
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


def add_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with its own subcommands (``rig optics blur``); bare ``rig optics`` prints help."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(_group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=_Parser)


if __name__ == "__main__":
    sys.exit(main())
