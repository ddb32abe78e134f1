"""Flags the server subcommands share (serve, route)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def add_reflection_argument(parser: argparse.ArgumentParser) -> None:
    """--reflection: gRPC server reflection, off unless asked for ($GAMEFLEET_REFLECTION=1): it maps
    the whole API for anyone who reaches the port. `gamefleet up` turns it on for local tools."""
    parser.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("GAMEFLEET_REFLECTION") == "1",
        help="serve gRPC reflection (default: $GAMEFLEET_REFLECTION=1, else off)",
    )


def _seconds(minimum_exclusive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if not (value > 0 if minimum_exclusive else value >= 0):
            raise argparse.ArgumentTypeError(f"must be {'> 0' if minimum_exclusive else '>= 0'}, got {text}")
        return value

    return parse


def add_redis_timing_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--redis-timeout, --redis-breaker: what a hung or unreachable Redis may cost one call."""
    env = os.environ.get
    parser.add_argument(
        "--redis-timeout", type=_seconds(True), default=env("GAMEFLEET_REDIS_TIMEOUT_SECONDS") or 2.0,
        help="the most one Redis command may take, connect, send and reply (s; "
        "default: $GAMEFLEET_REDIS_TIMEOUT_SECONDS, else 2)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-breaker", type=_seconds(False), default=env("GAMEFLEET_REDIS_BREAKER_SECONDS") or 1.0,
        help="after a Redis command that got no answer, seconds the next ones fail at once without "
        "trying Redis (0: off; default: $GAMEFLEET_REDIS_BREAKER_SECONDS, else 1)",
    )  # fmt: skip
