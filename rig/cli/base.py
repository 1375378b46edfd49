"""The argparse pieces every command module shares: the one-line-error parser and command groups."""

from __future__ import annotations

import argparse

from rig.core.errors import RigError


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line + exit 2 (argparse's default prints usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with its own subcommands (``rig optics blur``); bare ``rig optics`` prints help."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(_group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=_Parser)


UNCERTAINTY_CHOICES = ("none", "mc", "moments")


def add_uncertainty_args(p: argparse.ArgumentParser) -> None:
    """``--uncertainty none|mc|moments`` and ``--mc-samples N`` (paper 1: 50)."""
    p.add_argument("--uncertainty", choices=UNCERTAINTY_CHOICES, default=None,
                   help="none (one pass), mc (MC-dropout, --mc-samples samples, default 50) or moments "
                   "(sampling-free MC-dropout: dropout moments propagated through the decoder, one pass); "
                   "default: mc when --mc-samples is given, else none")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples (paper 1: 50); 0 = one pass")


def resolve_uncertainty(args: argparse.Namespace) -> tuple[str, int]:
    """(mode, MC samples) from ``--uncertainty`` / ``--mc-samples``; mode '' = none."""
    mode, k = args.uncertainty, int(args.mc_samples)
    if mode is None:
        mode = "mc" if k else "none"
    if mode == "mc":
        k = k or 50
        if k < 2:
            raise RigError("--mc-samples: use at least 2 samples with --uncertainty mc")
        return "mc", k
    if k:
        raise RigError(f"--mc-samples: only with --uncertainty mc (got --uncertainty {mode})")
    return ("" if mode == "none" else mode), 0
