"""The Dockerfile (no Docker engine runs here, so its structure is what is checked): two
python:3.11-slim stages, a non-root numeric USER last, entrypoint `gamefleet`, a build
context of only what the build copies (and enough to build the package), and one image
reference, ghcr.io/gamefleet/gamefleet:<pyproject version>, everywhere in the repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from gamefleet_operator import render

from gameserver import __version__
from gameserver.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/gamefleet/gamefleet:{VERSION}"
UID = 10001


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_two_slim_python_stages_the_last_one_runs_as_a_numeric_non_root_user() -> None:
    args = dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)
    build, runtime = stages()
    assert build[0][1].split() == ["${PYTHON_IMAGE}", "AS", "build"]
    assert runtime[0][1] == "${PYTHON_IMAGE}"
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    users = [i for i, (name, _) in enumerate(runtime) if name == "USER"]
    assert users, "the runtime stage must set USER"
    assert runtime[users[-1]][1] == f"{UID}:{UID}"
    assert all(name not in ("RUN", "COPY", "ADD") for name, _ in runtime[users[-1] :])


def test_entrypoint_is_the_gamefleet_command_and_roles_are_its_subcommands() -> None:
    runtime = dict(stages()[-1])
    assert json.loads(runtime["ENTRYPOINT"]) == ["gamefleet"]
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {"operator", "serve", "route", "health", "loadtest"} <= set(subcommands)
    assert "50051" in runtime["EXPOSE"].split()


def test_the_runtime_stage_copies_nothing_but_the_build_stages_wheels() -> None:
    build, runtime = stages()
    assert [name for name, _ in runtime if name in ("COPY", "ADD")] == []
    (install,) = [a for name, a in runtime if name == "RUN" and "pip install" in a]
    assert "--mount=type=bind,from=build,source=/wheels" in install and "--no-index" in install
    assert "pip wheel" in dict(build)["RUN"]


def test_pods_run_as_the_images_user() -> None:
    operator = yaml.safe_load((ROOT / "manifests" / "operator.yaml").read_text())
    assert operator["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID
    assert render._POD_SECURITY["runAsUser"] == UID


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent folder wins."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negated
    return result


def repository_files() -> list[str]:
    """The checkout's files as git sees them: tracked, or new and not git-ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [name for name in listed if (ROOT / name).is_file()]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context() -> list[str]:
    """The files `docker build .` sends (of those git sees; caches are checked apart)."""
    return sorted(name for name in repository_files() if not ignored(name, dockerignore()))


def test_the_build_context_is_only_what_the_build_copies() -> None:
    files = context()
    allowed = ("pyproject.toml", "README.md", "gameserver/", "operator/gamefleet_operator/")
    assert [f for f in files if not f.startswith(allowed)] == []
    assert "gameserver/cli/main.py" in files and "operator/gamefleet_operator/handlers.py" in files
    caches = [
        ".venv/bin/python",
        "gameserver/__pycache__/pool.cpython-311.pyc",
        "gameserver/engine/__pycache__/kernels.step-120.py311.nbi",
        "gameserver/engine/__pycache__/kernels.step-120.py311.1.nbc",
        "operator/gamefleet_operator/__pycache__/crd.cpython-311.pyc",
        "gamefleet.egg-info/PKG-INFO",
    ]  # git-ignored, so not among `files`, but on disk and so in Docker's context unless ignored
    assert [c for c in caches if not ignored(c, dockerignore())] == []
    copied = [a.split()[:-1] for name, a in stages()[0] if name == "COPY"]
    for source in (s for sources in copied for s in sources):
        assert any(f == source.rstrip("/") or f.startswith(source) for f in files), source


def test_the_ignore_rules_are_read_as_docker_reads_them() -> None:
    patterns = ["*", "!gameserver", "!operator/gamefleet_operator", "**/__pycache__"]
    assert ignored("tests/test_cli.py", patterns) and ignored("operator/README.md", patterns)
    assert not ignored("gameserver/engine/rules.py", patterns)
    assert not ignored("operator/gamefleet_operator/crd.py", patterns)
    assert ignored("gameserver/__pycache__/cli.cpython-311.pyc", patterns)


@pytest.mark.slow
def test_the_context_alone_builds_the_complete_package(tmp_path: Path) -> None:
    """What the build stage's `pip wheel .` gets is enough: both packages, the generated gRPC
    modules and the console script (built here without dependencies, offline)."""
    source = tmp_path / "src"
    for name in context():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("gamefleet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "gameserver/cli/main.py",
        "gameserver/wire/generated/batch_pb2.py",
        "gameserver/wire/generated/moves_pb2.py",
        "gameserver/bench/engine.py",
        "gamefleet_operator/handlers.py",
    ):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gamefleet = gameserver.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_one_image_reference_everywhere() -> None:
    """manifests/, the examples, the chart, READMEs and tests name the same image, the
    version in pyproject.toml, which the package and the chart carry too."""
    assert __version__ == VERSION
    chart = yaml.safe_load((ROOT / "charts" / "gamefleet" / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == VERSION
    values = yaml.safe_load((ROOT / "charts" / "gamefleet" / "values.yaml").read_text())
    assert f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}" == IMAGE
    references: dict[str, set[str]] = {}
    for name in repository_files():
        text = (ROOT / name).read_bytes().decode(errors="ignore")
        if tags := set(re.findall(r"ghcr\.io/gamefleet/gamefleet:([\w.\-]+)", text)):
            references[name] = tags
    assert "manifests/operator.yaml" in references and "Dockerfile" in references
    assert {name: tags for name, tags in references.items() if tags != {VERSION}} == {}
