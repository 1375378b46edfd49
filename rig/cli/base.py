"""The argparse pieces every command module shares: the one-line-error parser and command groups."""

from __future__ import annotations

import argparse
import math

from rig.core.errors import RigError


def finite_float(text: str) -> float:
    """argparse type for every ``type=float`` option: a finite number (nan and inf are refused,
    as config files already refuse them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


MC_SAMPLES_MAX = 1000  # MC-dropout samples: paper 1 uses 50; beyond 1000 the mean and σ no longer change


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def mc_samples_count(text: str) -> int:
    """--mc-samples: 0 (one deterministic pass) or 2..MC_SAMPLES_MAX."""
    n = _int(text)
    if n != 0 and not 2 <= n <= MC_SAMPLES_MAX:
        raise argparse.ArgumentTypeError(f"use 0 (one deterministic pass) or 2 to {MC_SAMPLES_MAX} samples, got {n}")
    return n


def threads_count(text: str) -> int:
    """--threads: 0 (the library's default) or a positive count."""
    n = _int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (default) or a positive number of threads, got {n}")
    return n


def port_number(text: str) -> int:
    """--port: a TCP port in [0, 65535] (0 = any free port)."""
    n = _int(text)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port in [0, 65535] (0 = any free port), got {n}")
    return n


def positive_int(text: str) -> int:
    """An integer >= 1 (queue sizes, counts)."""
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n



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
    option defaults shown in --help. Every ``type=float`` option goes through :func:`finite_float`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.register("type", float, finite_float)

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
    p.add_argument("--mc-samples", type=mc_samples_count, default=0,
                   help=f"MC-dropout samples (paper 1: 50; at most {MC_SAMPLES_MAX}); 0 = one pass")


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
