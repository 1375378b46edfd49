"""Deployment subcommands: ``rig export``, ``rig live``, ``rig replay``.

Parsers only; every handler imports torch / onnxruntime / OpenCV / device libraries when it runs.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    from inference.export import add_export_parser
    from rig.live import add_live_parser
    from rig.replay import add_replay_parser

    add_export_parser(sub)
    add_live_parser(sub)
    add_replay_parser(sub)
