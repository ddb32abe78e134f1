"""The `gamefleet` command.

A subcommand is an `add_parser(subparsers)` function, one small module each beside this one
(`version` lives here): it adds its parser and sets `run` (parsed args -> exit code). A new
subcommand is one more entry in COMMANDS. Heavy imports (numba, grpc, the peer, matplotlib)
happen inside `run`, so `gamefleet --help` and `gamefleet version` stay instant.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from . import bench, delete_fleet, health, loadtest, operator, replay, route, selfplay, serve, up


def _run_version(args: argparse.Namespace) -> int:
    print(f"gamefleet {__version__}")
    return 0


def _add_version(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "version",
        help="print the GameFleet version",
        description="Print the GameFleet version (also --version).",
    )
    parser.set_defaults(run=_run_version)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], object], ...] = (
    bench.add_parser,
    delete_fleet.add_parser,
    health.add_parser,
    loadtest.add_parser,
    operator.add_parser,
    replay.add_parser,
    route.add_parser,
    selfplay.add_parser,
    serve.add_parser,
    up.add_parser,
    _add_version,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help: descriptions as written (the modules' docstrings), and each flag's default where it
    has one its help line does not already state (not None, not a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if any(action.default is none for none in (None, False, argparse.SUPPRESS)) or "default" in text:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every parser of the command (subcommands' too: argparse makes them of the same class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gamefleet", description="GameFleet: batched generals.io game servers for RL")
    parser.add_argument("--version", action="version", version=f"gamefleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gamefleet` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["gamefleet", *argv])
    return args.run(args)
