"""The `gamefleet` command: main.py builds the parser, one module per subcommand beside it."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
