"""The argparse pieces every command module shares: the one-line-error parser and command groups."""

from __future__ import annotations

import argparse


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
