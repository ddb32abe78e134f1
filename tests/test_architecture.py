"""The rooms of DESIGN.md ("Layout (the rooms)") as checks: the import-linter contracts in
pyproject.toml ([tool.importlinter]), no import cycles, and what importing the light rooms
(the client SDK, the envs, the operator) really loads in a fresh interpreter."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the venv's own, beside its python
# The checkout first, the operator's package beside it (operator/ has no __init__.py).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")])}
SERVER_SIDE = (
    "redis",
    "kopf",
    "kubernetes",
    "gameserver.shard",
    "gameserver.fleet",
    "gameserver.router.server",
)
CLIENT_MODULE_LIMIT = 24  # gameserver modules `import gameserver.client` may load (48 before the rooms)


def _under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


@functools.cache
def _loaded_by(*modules: str) -> list[str]:
    """sys.modules after importing `modules` in a fresh interpreter."""
    code = (
        "".join(f"import {m}\n" for m in modules) + "import json, sys\nprint(json.dumps(sorted(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), as a chain a -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, imported = work[-1]
            nxt = next(imported, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                elif nxt in on_stack:
                    low[module] = min(low[module], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    cycles = []
    for group in groups:
        a = group[0]
        b = next(m for m in sorted(graph.find_modules_directly_imported_by(a)) if m in group)
        cycles.append([a, *graph.find_shortest_chain(importer=b, imported=a)])
    return cycles


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["id"] for c in CONTRACTS])
def test_import_contract_is_kept(contract):
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract["id"]],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    broken = run.stdout[run.stdout.find("Broken contracts") :] if "Broken contracts" in run.stdout else ""
    assert run.returncode == 0, f"BROKEN: {contract['name']}\n{broken or run.stdout + run.stderr}"
    assert f"{contract['name']} KEPT" in run.stdout, run.stdout + run.stderr


def test_cycle_finder_names_a_cycle():
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]


def test_no_import_cycles():
    graph = grimp.build_graph("gameserver", "gamefleet_operator", cache_dir=None)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_client_import_loads_no_redis_operator_or_servers():
    assert _under(_loaded_by("gameserver.client"), SERVER_SIDE) == []


def test_envs_import_loads_no_redis_operator_or_servers():
    assert _under(_loaded_by("gameserver.envs"), SERVER_SIDE) == []


def test_client_import_loads_no_numba():
    """The client speaks the wire: the engine's plain types, never its kernels (numba)."""
    assert _under(_loaded_by("gameserver.client"), ("numba", "gameserver.engine.api")) == []


def test_envs_import_for_in_process_play_loads_no_grpc():
    """RemoteBackend (and the client, and gRPC) load only when a fleet is asked for."""
    assert _under(_loaded_by("gameserver.envs"), ("grpc", "gameserver.client")) == []


def test_client_import_loads_few_gameserver_modules():
    loaded = _under(_loaded_by("gameserver.client"), ("gameserver",))
    assert len(loaded) <= CLIENT_MODULE_LIMIT, f"{len(loaded)} gameserver modules: {loaded}"


def test_operator_import_loads_no_numba_or_engine():
    loaded = _loaded_by("gamefleet_operator.handlers", "gamefleet_operator.registry")
    assert _under(loaded, ("numba", "gameserver.engine")) == []


def test_the_gamefleet_command_loads_no_numba_or_engine():
    """`gamefleet operator` runs where numba cannot write its cache (the operator pod's read-only
    root): building the command's parser, every subcommand's, must not load the engine."""
    loaded = _loaded_by("gameserver.cli.main")
    assert _under(loaded, ("numba", "gameserver.engine.api", "gameserver.envs")) == []
