"""`effnet` subcommands of issue 5 (compound scaling search and study): search, study."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `effnet` parser."""
