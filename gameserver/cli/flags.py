"""Flags the server subcommands share (serve, route)."""

from __future__ import annotations

import argparse
import os


def add_reflection_argument(parser: argparse.ArgumentParser) -> None:
    """--reflection: gRPC server reflection, off unless asked for ($GAMEFLEET_REFLECTION=1): it maps
    the whole API for anyone who reaches the port. `gamefleet up` turns it on for local tools."""
    parser.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("GAMEFLEET_REFLECTION") == "1",
        help="serve gRPC reflection (default: $GAMEFLEET_REFLECTION=1, else off)",
    )
