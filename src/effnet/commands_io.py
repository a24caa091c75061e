"""`effnet` subcommands of issue 3 (weights): convert, export, predict, eval."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
