"""The `gamefleet` command line: parsing, refusals, and the installed console script."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from gameserver import __version__
from gameserver.cli import build_parser, main


def test_version_prints_the_package_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"gamefleet {__version__}"


def test_dash_dash_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"gamefleet {__version__}"


def _parsers(parser: argparse.ArgumentParser, path: str = "gamefleet"):
    """(command path, parser) for the command and every subcommand, nested ones too."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_subcommand_has_a_description_and_every_flag_a_help_line():
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []
    assert [path for path, parser in _parsers(build_parser()) if not parser.description] == []


def test_help_shows_the_defaults_a_flag_has_and_no_none(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "(default: 50051)" in text and "(default: 127.0.0.1)" in text and "(default: 0)" in text
    assert "default: None" not in text and "default: False" not in text


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).with_name("gamefleet")
    done = subprocess.run([script, "version"], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == f"gamefleet {__version__}"


def test_bench_engine_options_parse():
    args = build_parser().parse_args(
        [
            "bench",
            "engine",
            "--batches",
            "1,64",
            "--seconds",
            "0.5",
            "--quick",
            "--no-peer",
            "--plot",
            "p.png",
        ]
    )
    assert (args.command, args.target) == ("bench", "engine")
    assert args.batches == [1, 64]
    assert args.seconds == 0.5
    assert args.quick and args.no_peer
    assert args.plot == Path("p.png")


def test_bench_engine_defaults_leave_sizes_to_the_mode():
    args = build_parser().parse_args(["bench", "engine"])
    assert args.batches is None and args.seconds is None
    assert not args.quick and not args.no_peer
    assert args.out == Path("benchmarks/out/engine.json")
    assert args.plot is None and args.markdown is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench"],
        ["bench", "nothing"],
        ["bench", "engine", "--batches", "0"],
        ["bench", "engine", "--batches", "1,x"],
        ["bench", "engine", "--batches", ""],
        ["bench", "engine", "--seconds", "0"],
        ["bench", "engine", "--seconds", "-1"],
        ["bench", "engine", "--seconds", "soon"],
        ["bench", "engine", "--unknown"],
    ],
    ids=repr,
)
def test_bad_command_lines_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: gamefleet" in capsys.readouterr().err
