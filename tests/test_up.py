"""`gamefleet up`: real shard processes on 127.0.0.1, self-play through the client, a report, no leftovers."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gameserver.client import FleetClient, Unavailable
from gameserver.engine import GameConfig
from gameserver.local_fleet import FleetStartError, LocalFleet
from gameserver.rl.selfplay import run_selfplay


def test_gamefleet_up_plays_and_reports(tmp_path):
    report_path = tmp_path / "up.json"
    done = subprocess.run(
        [sys.executable, "-m", "gameserver.cli", "up", "--shards", "2", "--games", "32", "--seconds", "3",
         "--size", "10", "--max-ticks", "60", "--json", str(report_path)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "GAMEFLEET_PROGRESS_SECONDS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # not a terminal (a log, `| tee`): plain progress lines, and the result on one unwrapped line
    assert re.search(r"^self-play \[ *\d+\.\d s\] [\d,]+ steps/s", done.stdout, re.MULTILINE), done.stdout
    (result,) = [line for line in done.stdout.splitlines() if "truncated)" in line]
    assert "steps/s" in result and "games/s" in result and "wins by seat: 0 (expander) " in result
    assert ", 1 (random) " in result and len(result) > 80
    report = json.loads(report_path.read_text())
    assert report["shards"] == 2 and report["games"] == 64
    assert report["steps"] > 64 * 60  # every game got through at least one whole episode's worth of ticks
    assert report["episodes"] >= 64  # episodes end (by capture or at 60 ticks) and restart in place
    assert report["steps_per_s"] > 0 and report["games_per_s"] > 0
    assert report["setup_seconds"] > 0 and "agents ready in" in done.stdout


def test_local_fleet_serves_then_stops_every_process():
    with LocalFleet(2) as fleet:
        assert len(set(fleet.addresses)) == 2
        for address in fleet.addresses:
            with FleetClient(address, timeout=10) as client:
                assert client.healthy()
        processes = list(fleet._processes)
    assert all(p.poll() is not None for p in processes)


def test_selfplay_counts_every_step_and_episode():
    with LocalFleet(1) as fleet:
        config = GameConfig(8, 8, max_ticks=20)
        report = run_selfplay(fleet.addresses, 8, config, 1.5, agents=["expander"], min_steps=8 * 20)
    assert report.steps % 8 == 0 and report.steps >= 8 * 20
    assert report.episodes >= 8
    assert sum(report.wins) + report.truncations == pytest.approx(report.episodes, abs=0)
    assert np.all(np.array(report.wins) >= 0)


def test_a_shard_that_cannot_start_is_reported_and_nothing_is_left_running():
    fleet = LocalFleet(1, extra_args=["--max-games", "not-a-number"], timeout=60)
    with pytest.raises(FleetStartError, match="exited"):
        fleet.start()
    assert fleet._processes == []


def test_a_worker_that_fails_before_play_is_reported_not_waited_for():
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1"):  # raised, not a hang at the start line
        run_selfplay(["127.0.0.1:1"], 1, GameConfig(), 1.0, agents=["random"])


def test_unknown_agents_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="unknown agents"):
        run_selfplay(["127.0.0.1:1"], 1, GameConfig(), 1.0, agents=["oracle"])
