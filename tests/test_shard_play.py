"""The shard's own part in some games: seats it plays with scripted agents, and transitions it
pushes to its ReplayService (CreateBatchGames seat_agents / push_transitions)."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BackgroundShard, ServeProcess

from gameserver.agents import play_seats, random_actions
from gameserver.cli import main
from gameserver.client import FleetClient
from gameserver.engine import GameConfig
from gameserver.engine.config import PASS
from gameserver.pool import GamePool
from gameserver.replay.buffer import ReplayBuffer
from gameserver.replay.client import ReplayClient
from gameserver.replay.service import ReplayServer
from gameserver.replay.transitions import transition_spec
from gameserver.wire.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)

CONFIG = GameConfig(8, 8, max_ticks=40)
BOARD6 = GameConfig(6, 6, max_ticks=20)


def test_shard_plays_its_seats_exactly_as_the_agent_does_in_process(shard, fleet):
    seeds = np.arange(1, 17, dtype=np.uint64)
    created = fleet.create(16, CONFIG, seeds=seeds, seat_agents=["", "expander"])
    pool = GamePool(CONFIG, 16)
    ids = pool.create(16, seeds)
    view = pool.observe(ids)
    np.testing.assert_array_equal(created.observations.codes, view.codes)
    shard_moves = 0
    for tick in range(30):
        sent = np.full((16, 2), PASS, np.int32)
        sent[:, 0] = random_actions(view.codes, view.armies, view.tick, 8, 8, tick)[:, 0]
        reply = fleet.step(created.ids, sent)
        played = sent.copy()  # what the shard does: its expander (seeded by the shard's seed) on seat 1
        play_seats(("", "expander"), view.codes, view.armies, view.tick, 8, 8, 7, played)
        shard_moves += np.count_nonzero(played[:, 1] != PASS)
        view = pool.step(ids, played).observation
        np.testing.assert_array_equal(reply.observations.codes, view.codes)
        np.testing.assert_array_equal(reply.observations.armies, view.armies)
    assert shard_moves > 16 * 30 * 0.8  # the seat was played, not passed
    fleet.close(created.ids)


def test_a_client_in_an_open_seat_game_plays_against_the_shard(shard, fleet):
    seeds = np.arange(1, 5, dtype=np.uint64)
    created = fleet.create(4, CONFIG, seeds=seeds, open_seats=True, seat_agents=["", "expander"])
    with pytest.raises(AlreadyExists, match="played by the shard"):
        fleet.join(int(created.ids[0]), 1)
    joined = [fleet.join(int(game)) for game in created.ids]  # any free seat: only seat 0 is
    assert [seat for seat, _ in joined] == [0, 0, 0, 0]
    tokens = np.array([token for _, token in joined], np.uint64)
    pool = GamePool(CONFIG, 4)
    ids = pool.create(4, seeds)
    view = pool.observe(ids)
    for tick in range(20):  # turn deadline 0 waits for every seat, but never for the shard's
        mine = random_actions(view.codes, view.armies, view.tick, 8, 8, tick)[:, 0]
        reply = fleet.step_seats(created.ids, mine, np.zeros(4, np.int32), tokens)
        played = np.stack([mine, np.full(4, PASS, np.int32)], axis=1)
        play_seats(("", "expander"), view.codes, view.armies, view.tick, 8, 8, 7, played)
        view = pool.step(ids, played).observation
        np.testing.assert_array_equal(reply.observations.codes, view.codes[:, :1])
    with pytest.raises(PermissionDenied):  # nobody acts for the shard's seat
        fleet.step_seats(created.ids[:1], [PASS], [1], np.zeros(1, np.uint64))
    fleet.close(created.ids)


@pytest.fixture
def replay_shard():
    buffer = ReplayBuffer(transition_spec(BOARD6), 100_000)
    with ReplayServer(buffer) as replay:
        shard = BackgroundShard(seed=3, replay_address=replay.address)
        try:
            yield shard, replay
        finally:
            shard.stop()


def test_shard_pushes_every_seat_of_every_step_with_the_moves_played(replay_shard):
    shard, replay = replay_shard
    steps, games = 40, 8
    sent_log, views, replies = [], [], []
    with FleetClient(shard.address, timeout=30) as client:
        created = client.create(
            games, BOARD6, autoreset=True, seat_agents=["", "random"], push_transitions=True
        )
        view = created.observations
        for tick in range(steps):
            sent = np.full((games, 2), PASS, np.int32)
            sent[:, 0] = random_actions(view.codes, view.armies, view.tick, 6, 6, tick)[:, 0]
            reply = client.step(created.ids, sent)
            sent_log.append(sent)
            views.append(view)
            replies.append(reply)
            view = reply.observations
    shard.stop()  # sends what is queued
    buffer = replay.buffer
    assert buffer.size == steps * games * 2
    stored = {
        name: column[: buffer.size].reshape(steps, games, 2, -1) for name, column in buffer._columns.items()
    }
    np.testing.assert_array_equal(stored["action"][:, :, 0, 0], np.stack(sent_log)[:, :, 0])
    np.testing.assert_array_equal(stored["player"][..., 0], np.tile([0, 1], (steps, games, 1)))
    np.testing.assert_array_equal(stored["game_id"][:, :, 0, 0], np.tile(created.ids, (steps, 1)))
    for tick, (sent, view) in enumerate(zip(sent_log, views, strict=True)):  # seat 1: the shard's agent
        played = sent.copy()
        play_seats(("", "random"), view.codes, view.armies, view.tick, 6, 6, 3, played)
        np.testing.assert_array_equal(stored["action"][tick, :, :, 0], played)
        np.testing.assert_array_equal(stored["obs_codes"][tick], view.codes)
    assert np.mean(stored["action"][:, :, 1] != PASS) > 0.5
    for tick, reply in enumerate(replies):  # "next": what the trainer was shown (the last view at a reset)
        kept = ~reply.reset
        np.testing.assert_array_equal(stored["next_codes"][tick][kept], reply.observations.codes[kept])
        if reply.reset.any():
            np.testing.assert_array_equal(stored["next_codes"][tick][~kept], reply.final_observations.codes)
        done = stored["done"][tick, :, :, 0] | stored["truncated"][tick, :, :, 0]
        np.testing.assert_array_equal(done, np.repeat(reply.reset[:, None], 2, axis=1))
    assert np.stack([r.reset for r in replies]).sum() >= games  # episodes of 20 ticks ended in the run


def test_a_failing_replay_service_never_fails_a_step_and_pushing_resumes(tmp_path):
    buffer = ReplayBuffer(transition_spec(BOARD6), 100_000)
    replay = ReplayServer(buffer).start()
    port = replay.port
    shard = BackgroundShard(seed=3, replay_address=replay.address)
    try:
        with FleetClient(shard.address, timeout=30) as client:
            created = client.create(4, BOARD6, autoreset=True, push_transitions=True)
            moves = np.full((4, 2), PASS, np.int32)
            client.step(created.ids, moves)
            replay.stop(0)
            sink = shard.server.transitions
            deadline = time.monotonic() + 20
            while sink.dropped == 0:  # the pusher's failed send shows at a later push
                assert time.monotonic() < deadline, "transitions were never dropped"
                client.step(created.ids, moves)  # every step succeeds meanwhile
            back = ReplayServer(ReplayBuffer(transition_spec(BOARD6), 1000), port=port).start()
            try:
                while back.buffer.size == 0:
                    assert time.monotonic() < deadline + 20, "pushing never resumed"
                    client.step(created.ids, moves)
                    time.sleep(0.05)
            finally:
                shard.stop()
                back.stop(0)
    finally:
        shard.stop()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"seat_agents": ["expander"]}, InvalidArgument, "one name per seat"),
        ({"seat_agents": ["", "oracle"]}, InvalidArgument, "unknown agents"),
        ({"push_transitions": True}, FailedPrecondition, "no replay service"),
    ],
)
def test_bad_roles_are_refused_and_change_nothing(shard, fleet, options, error, message):
    before = shard.state()
    with pytest.raises(error, match=message):
        fleet.create(3, CONFIG, **options)
    after = shard.state()
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def refuse_push(replay_address, config, error, message):
    """A shard pushing to `replay_address` refuses push_transitions games of `config`, creating none."""
    shard = BackgroundShard(replay_address=replay_address)
    try:
        with FleetClient(shard.address, timeout=30) as client, pytest.raises(error, match=message):
            client.create(2, config, push_transitions=True)
        assert shard.server.games.active_games == 0
    finally:
        shard.stop()


def test_push_to_another_board_or_an_absent_service_is_refused():
    with ReplayServer(ReplayBuffer(transition_spec(BOARD6), 10)) as replay:
        refuse_push(replay.address, CONFIG, FailedPrecondition, "same board")
    refuse_push(replay.address, BOARD6, Unavailable, "replay service")  # stopped: nothing listens there


def test_selfplay_with_a_shard_process_that_plays_a_seat_and_pushes_to_a_replay_process(tmp_path):
    """Real processes: `gamefleet replay serve`, `gamefleet serve --replay-address` and
    `gamefleet selfplay --shard-agents ,expander --shard-pushes` (the trainer plays seat 0)."""
    command = [sys.executable, "-m", "gameserver.cli", "replay", "serve", "--port", "0", "--height", "6",
               "--width", "6", "--capacity", "100000"]  # fmt: skip
    replay = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    shard = None
    try:
        address = replay.stdout.readline().split()[-1]
        shard = ServeProcess("--replay-address", address)
        argv = ["selfplay", "--address", shard.address, "--games", "8", "--size", "6", "--max-ticks", "30",
                "--agents", "random", "--shard-agents", ",expander", "--shard-pushes", "--seconds", "60",
                "--max-steps", "50", "--json", str(tmp_path / "report.json")]  # fmt: skip
        assert main(argv) == 0
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["steps"] == 50 * 8 and report["shard_transitions"] == 50 * 8 * 2
        assert shard.terminate() == 0  # a graceful stop sends what the shard still had queued
        with ReplayClient(address, timeout=10) as client:
            assert client.info()["size"] == 50 * 8 * 2
            batch = client.sample(400)
        players, actions = batch.fields["player"], batch.fields["action"]
        assert set(players.tolist()) == {0, 1}
        assert np.mean(actions[players == 1] != PASS) > 0.5  # the shard's expander played seat 1
    finally:
        for process in (replay, shard.process if shard else None):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_selfplay_refuses_shard_options_without_a_fleet_or_with_replays(shard, tmp_path):
    with pytest.raises(SystemExit, match="need a fleet"):
        main(["selfplay", "--shard-agents", ",expander", "--max-steps", "1"])
    with pytest.raises(SystemExit, match="not with --shard-agents"):
        main(
            [
                "selfplay",
                "--address",
                shard.address,
                "--shard-agents",
                ",expander",
                "--replays",
                str(tmp_path),
            ]
        )
    with pytest.raises(SystemExit, match="no replay service"):
        main(["selfplay", "--address", shard.address, "--shard-pushes", "--max-steps", "1"])
