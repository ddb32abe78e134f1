"""Installs that fit: the base install (engine, client, envs, a shard without Redis' extra) carries
no operator, fleet or telemetry dependency, and the code runs without them. A fresh interpreter
whose imports of the extras' packages fail (a meta-path finder raising ImportError, as if they were
not installed) plays the envs in process and a game on a real shard through the client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib

from conftest import ROOT, BackgroundShard

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FLEET, TELEMETRY, OPERATOR = ("redis",), ("opentelemetry",), ("kopf", "kubernetes", "jsonschema", "yaml")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")])}


def _run_without(packages: tuple[str, ...], code: str) -> str:
    """Run `code` in a fresh interpreter where importing any of `packages` fails; its stdout."""
    blocker = f"""
        import importlib.abc, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {packages!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not installed)")

        sys.meta_path.insert(0, NotInstalled())
    """
    script = textwrap.dedent(blocker) + textwrap.dedent(code)
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=;! ]", r, maxsplit=1)[0] for r in requirements}


def test_the_base_install_holds_no_operator_fleet_or_telemetry_dependency():
    base = _names(PYPROJECT["dependencies"])
    assert base.isdisjoint({"redis", "kopf", "kubernetes", "jsonschema", "pyyaml"})
    assert not any(name.startswith("opentelemetry") for name in base)
    extras = PYPROJECT["optional-dependencies"]
    assert {"redis"} <= _names(extras["fleet"]) and {"kopf", "kubernetes"} <= _names(extras["operator"])
    assert all(name.startswith("opentelemetry") for name in _names(extras["telemetry"]))
    assert extras["all"] == ["gamefleet[fleet,telemetry,operator,render]"]


def test_the_client_and_the_envs_play_with_only_the_base_install():
    shard = BackgroundShard(seed=1)
    try:
        out = _run_without(
            FLEET + TELEMETRY + OPERATOR,
            f"""
            import numpy as np
            from gameserver.client import FleetClient
            from gameserver.engine import GameConfig
            from gameserver.envs import GeneralsVectorEnv

            env = GeneralsVectorEnv(4, GameConfig(8, 8))
            env.reset(seed=0)
            for _ in range(5):
                env.step(env.action_space.sample())
            with FleetClient({shard.address!r}, timeout=30) as fleet:
                created = fleet.create(2, GameConfig(8, 8))
                fleet.step(created.ids, np.full((2, 2), -1, np.int32))
                fleet.close(created.ids)
            print("played", sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "opentelemetry")))
            """,
        )
    finally:
        shard.stop()
    assert out.strip().splitlines()[-1] == "played []"


def test_shards_routers_and_local_fleets_need_only_the_fleet_extra():
    out = _run_without(
        TELEMETRY + OPERATOR,
        """
        import gameserver.cli.main, gameserver.local_fleet, gameserver.replay.service
        import gameserver.router.server, gameserver.shard.server
        from gameserver.telemetry import tracing

        print("tracing available:", tracing.AVAILABLE)
        """,
    )
    assert out.strip().splitlines()[-1] == "tracing available: False"
