"""The argparse pieces every command module shares: the one-line-error parser and command groups."""

from __future__ import annotations

import argparse

from rig.core.errors import RigError


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its help text already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text or d is None or d is False or d is True or d == argparse.SUPPRESS
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line + exit 2 (argparse's default prints usage first), and
    option defaults shown in --help."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with its own subcommands (``rig optics blur``); bare ``rig optics`` prints help."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(_group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=_Parser)


UNCERTAINTY_CHOICES = ("none", "mc", "moments", "aleatoric")


def add_uncertainty_args(p: argparse.ArgumentParser) -> None:
    """``--uncertainty none|mc|moments|aleatoric`` and ``--mc-samples N`` (paper 1: 50)."""
    p.add_argument("--uncertainty", choices=UNCERTAINTY_CHOICES, default=None,
                   help="none (one pass, no σ), mc (MC-dropout, --mc-samples samples, default 50), moments "
                   "(sampling-free MC-dropout: dropout moments propagated through the decoder, one pass) or "
                   "aleatoric (the σ head of dfdnet models, one pass); default: mc when --mc-samples is "
                   "given, else the model's own σ (aleatoric for dfdnet models, none otherwise)")
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples (paper 1: 50); 0 = one pass")


def resolve_uncertainty(args: argparse.Namespace) -> tuple[str, int]:
    """(mode, MC samples) from ``--uncertainty`` / ``--mc-samples``; mode '' = the model's own σ."""
    mode, k = args.uncertainty, int(args.mc_samples)
    if mode is None:
        mode = "mc" if k else ""
    if mode == "mc":
        k = k or 50
        if k < 2:
            raise RigError("--mc-samples: use at least 2 samples with --uncertainty mc")
        return "mc", k
    if k:
        raise RigError(f"--mc-samples: only with --uncertainty mc (got --uncertainty {mode})")
    return mode, 0
