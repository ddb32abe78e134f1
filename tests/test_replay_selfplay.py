"""`gamefleet selfplay`: in process and on a shard, pushing transitions and saving replays that
replay through the engine to the very ending the self-play saw."""

import json

import numpy as np
import pytest

from gameserver.cli import main
from gameserver.engine import GameConfig
from gameserver.engine.config import RUNNING, TERMINATED
from gameserver.replay.buffer import ReplayBuffer
from gameserver.replay.rate_limiter import RateLimiter
from gameserver.replay.service import ReplayServer
from gameserver.replay.transitions import transition_spec
from gameserver.rl.replay_files import import_replay, replay_game

ARGS = ["selfplay", "--games", "8", "--size", "6", "--max-ticks", "100", "--agents", "expander",
        "--seconds", "60", "--max-steps", "200"]  # fmt: skip


def check_replays(folder, count):
    """Every saved replay ends as its episode did: the same winner, at its last recorded tick."""
    files = sorted(folder.glob("replay-*.json"))
    assert len(files) == count
    winners = []
    for path in files:
        replay = json.loads(path.read_text())
        final = replay_game(import_replay(replay))
        extra = replay["gamefleet"]
        assert final.status[0] != RUNNING and final.tick[0] == extra["ticks"], path.name
        assert final.winner[0] == extra["winner"], path.name
        assert (final.status[0] == TERMINATED) == (extra["winner"] >= 0)
        winners.append(extra["winner"])
    assert max(winners) >= 0, "no episode ended in a capture: the winner check proved nothing"
    assert len({json.loads(p.read_text())["id"] for p in files}) > 1


def test_selfplay_in_process_pushes_transitions_and_saves_replays(tmp_path):
    buffer = ReplayBuffer(transition_spec(GameConfig(6, 6)), 10_000)
    report_path = tmp_path / "report.json"
    with ReplayServer(buffer) as server:
        argv = [*ARGS, "--replay-address", server.address, "--seats", "0", "--replays", str(tmp_path / "r"),
                "--max-replays", "12", "--json", str(report_path)]  # fmt: skip
        assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["where"] == "in process" and report["games"] == 8
    assert report["steps"] == 200 * 8 and report["episodes"] >= 12
    assert report["transitions"] == buffer.size == 200 * 8  # seat 0 only
    assert set(np.unique(buffer._columns["player"][: buffer.size]).tolist()) == {0}
    assert report["replays"] == 12
    check_replays(tmp_path / "r", 12)


def test_selfplay_without_a_learner_under_a_rate_limit_stops_with_a_message_not_a_traceback(capsys):
    limiter = RateLimiter(samples_per_insert=4, error_buffer=100)
    buffer = ReplayBuffer(transition_spec(GameConfig(6, 6)), 10_000, rate_limiter=limiter)
    with ReplayServer(buffer, max_wait_s=0.2) as server, pytest.raises(SystemExit) as stop:
        main([*ARGS, "--replay-address", server.address])
    message = str(stop.value.code)
    assert message.startswith(f"gamefleet selfplay: the replay service at {server.address} stopped taking")
    assert "--samples-per-insert" in message and "sample(256)" in message and "not permitted" in message


def test_selfplay_on_a_shard_saves_replays_of_the_games_it_played_there(shard, tmp_path):
    argv = [*ARGS, "--address", shard.address, "--replays", str(tmp_path / "r"), "--max-replays", "6",
            "--json", str(tmp_path / "report.json")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["where"] == shard.address and report["steps"] == 1600 and report["transitions"] == 0
    check_replays(tmp_path / "r", 6)


def test_selfplay_refuses_unknown_agents():
    with pytest.raises(ValueError, match="unknown agents"):
        main([*ARGS, "--agents", "oracle"])
