"""Seat play against a real shard: clients holding one seat each play exactly what self-play plays,
deadlines pass for silent seats (not earlier), and every refusal changes no game."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from test_service_e2e import SHORT, moves, twin_pool

from gameserver.client import Aborted, AsyncFleetClient, FleetClient, GameFleetError, NotFound, StepReply
from gameserver.engine import GameConfig
from gameserver.pool import GamePool
from gameserver.wire.generated import batch_pb2 as pb

SMALL = GameConfig(height=8, width=8)
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def second(shard) -> Iterator[FleetClient]:
    """A second client with its own channel: the other seat's player."""
    with FleetClient(shard.address, timeout=30) as client:
        yield client


def joined(client: FleetClient, ids: np.ndarray, seats: object = -1) -> tuple[np.ndarray, np.ndarray]:
    """Join one seat of every game (a seat per game, or -1 for any); (seats, tokens) arrays."""
    wanted = np.broadcast_to(np.asarray(seats), ids.shape)
    pairs = [client.join(game, int(seat)) for game, seat in zip(ids, wanted, strict=True)]
    return np.array([s for s, _ in pairs], np.int32), np.array([t for _, t in pairs], np.uint64)


def seat_columns(actions: np.ndarray, seats: np.ndarray) -> np.ndarray:
    return actions[np.arange(seats.size), seats]


def generals_bots(moves: np.ndarray, width: int) -> np.ndarray:
    """Flat moves as generals-bots moves [..., 5] = [pass, row, col, direction, split]."""
    tile = moves >> 3
    return np.stack([moves < 0, tile // width, tile % width, (moves >> 1) & 3, moves & 1], -1).astype(
        np.int32
    )


def server_pool(shard, ids: np.ndarray) -> GamePool:
    return shard.server.games.route(ids).groups[0][0].pool


def assert_seat_rows(result: StepReply, seats: np.ndarray, local, masks: np.ndarray | None = None) -> None:
    """A seat call's reply is its seat's rows of the self-play step (every player's counts)."""
    rows = np.arange(seats.size)
    np.testing.assert_array_equal(result.rewards[:, 0], local.rewards[rows, seats])
    for name in ("terminated", "truncated", "reset"):
        np.testing.assert_array_equal(getattr(result, name), getattr(local, name), err_msg=name)
    assert (result.status == pb.STEPPED).all()
    seen, expected = result.observations, local.observation
    np.testing.assert_array_equal(seen.codes[:, 0], expected.codes[rows, seats])
    np.testing.assert_array_equal(seen.armies[:, 0], expected.armies[rows, seats])
    for name in ("land", "army", "tick"):
        np.testing.assert_array_equal(getattr(seen, name), getattr(expected, name), err_msg=name)
    if masks is not None:
        np.testing.assert_array_equal(seen.masks[:, 0], masks[rows, seats])
    if local.reset.any():
        reset = np.flatnonzero(local.reset)
        final = local.final_observation
        np.testing.assert_array_equal(
            result.final_observations.codes[:, 0], final.codes[np.arange(reset.size), seats[reset]]
        )
        np.testing.assert_array_equal(result.final_observations.tick, final.tick)
    else:
        assert result.final_observations is None


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def test_two_seat_clients_in_lockstep_play_exactly_self_play(shard, fleet, second):
    seeds = np.arange(40, 56, dtype=np.uint64)
    created = fleet.create(16, SHORT, seeds=seeds, autoreset=True, open_seats=True)
    ids = created.ids
    pool = twin_pool(ids, SHORT, seeds, autoreset=True)
    mine = joined(fleet, ids, np.arange(16) % 2)  # seat 0 in even games, seat 1 in odd ones
    theirs = joined(second, ids)  # the free seat of each
    assert (mine[0] + theirs[0] == 1).all()
    players = ((fleet, *mine), (second, *theirs))
    view = created.observations
    resets = 0
    with ThreadPoolExecutor(2) as threads:
        for tick in range(90):  # past two truncations: autoreset and final views are covered
            actions = moves(view, SHORT, tick)
            mine_moves, theirs_moves = (seat_columns(actions, seats) for _, seats, _ in players)
            calls = [
                threads.submit(client.step_seats, ids, chosen, seats, tokens, masks=True)
                for (client, seats, tokens), chosen in zip(
                    players, (mine_moves, generals_bots(theirs_moves, SHORT.width)), strict=True
                )
            ]
            replies = [call.result(30) for call in calls]
            local = pool.step(ids, actions)
            masks = pool.masks(ids)
            for (_, seats, _), reply in zip(players, replies, strict=True):
                assert_seat_rows(reply, seats, local, masks)
            resets += local.reset.any()
            view = local.observation
    assert resets >= 2
    assert server_pool(shard, ids).snapshot(ids) == pool.snapshot(ids)  # every game array bit-identical
    fleet.close(ids)


def test_a_silent_seat_passes_once_the_deadline_has_run(shard, fleet, second):
    seeds = np.array([3, 4], np.uint64)
    ids = fleet.create(2, SMALL, seeds=seeds, open_seats=True, turn_deadline_ms=150).ids
    pool = twin_pool(ids, SMALL, seeds, autoreset=False)
    seats, tokens = joined(fleet, ids, 0)
    silent = joined(second, ids, 1)
    actions = moves(pool.observe(ids), SMALL, 0)
    start = time.monotonic()
    reply = fleet.step_seats(ids, actions[:, 0], seats, tokens)
    waited = time.monotonic() - start
    assert 0.150 <= waited < 2.0, waited
    actions[:, 1] = -1  # the silent seat passed
    assert_seat_rows(reply, seats, pool.step(ids, actions))
    # The deadline runs from a tick's first move: a late seat that completes the tick steps it at once.
    with ThreadPoolExecutor(1) as thread:
        early = thread.submit(second.step_seats, ids, [-1, -1], *silent)
        wait_for(lambda: shard.server.seats.waiting_calls == 1)
        start = time.monotonic()
        reply = fleet.step_seats(ids, [-1, -1], seats, tokens)
        assert time.monotonic() - start < 0.150
        assert early.result(10).observations.tick.tolist() == reply.observations.tick.tolist() == [2, 2]
    pool.step(ids, np.full((2, 2), -1))
    assert server_pool(shard, ids).snapshot(ids) == pool.snapshot(ids)
    fleet.close(ids)


@pytest.fixture
def table(shard, fleet, second) -> Iterator[tuple[np.ndarray, tuple, tuple]]:
    """Two open-seat games (no deadline) with both seats joined: ids, (seats, tokens) of each client."""
    ids = fleet.create(2, SMALL, seeds=[5, 6], open_seats=True).ids
    yield ids, joined(fleet, ids, 0), joined(second, ids, 1)
    fleet.close(ids[np.isin(ids, shard.server.games.live_ids)])


def refused(shard, call: Callable[[], object], code: grpc.StatusCode, *words: str) -> None:
    """The call fails with `code` (details naming `words`) and every game is as it was."""
    before = shard.state()
    with pytest.raises(GameFleetError) as error:
        call()
    assert error.value.code == code, error.value
    for word in words:
        assert word in error.value.details, error.value.details
    after = shard.state()
    for name, array in before.items():
        np.testing.assert_array_equal(array, after[name], err_msg=name)


def test_refused_seat_calls_change_no_game(shard, fleet, second, table):
    ids, (seats, tokens), (other_seats, other_tokens) = table
    game, bad = str(ids[1]), tokens.copy()
    bad[1] ^= np.uint64(1)
    self_play = fleet.create(2, SMALL).ids
    cases = [
        (lambda: fleet.step_seats(ids, [0, 0], seats, bad), Code.PERMISSION_DENIED, [game, "seat 0"]),
        (lambda: fleet.step_seats(ids, [0, 0], other_seats, tokens), Code.PERMISSION_DENIED, ["seat 1"]),
        (lambda: fleet.step_seats(ids, [600, -1], seats, tokens), Code.INVALID_ARGUMENT, ["actions"]),
        (lambda: fleet.step_seats(ids, [-1, -1], [0, 2], tokens), Code.INVALID_ARGUMENT, ["seats"]),
        (lambda: fleet.join(ids[0], 1), Code.ALREADY_EXISTS, [str(ids[0]), "seat 1"]),
        (lambda: second.join(ids[0]), Code.RESOURCE_EXHAUSTED, [str(ids[0]), "full"]),
        (lambda: fleet.join(ids[0], 2), Code.INVALID_ARGUMENT, ["seats 0..1"]),
        (lambda: fleet.join(12345), Code.NOT_FOUND, ["12345"]),
        (lambda: fleet.step(ids, np.full((2, 2), -1)), Code.FAILED_PRECONDITION, ["open seats"]),
        (lambda: fleet.join(self_play[0]), Code.FAILED_PRECONDITION, ["self-play", str(self_play[0])]),
        (
            lambda: fleet.step_seats(self_play, [-1, -1], seats, tokens),
            Code.FAILED_PRECONDITION,
            ["self-play"],
        ),
    ]
    for call, code, words in cases:
        refused(shard, call, code, *words)
    # None of them recorded a move: one move per seat steps both games once.
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(second.step_seats, ids, [-1, -1], other_seats, other_tokens)
        wait_for(lambda: shard.server.seats.waiting_calls == 1)
        again = lambda: second.step_seats(ids, [-1, -1], other_seats, other_tokens)  # noqa: E731
        refused(shard, again, Code.FAILED_PRECONDITION, "already acted")
        assert fleet.step_seats(ids, [-1, -1], seats, tokens).observations.tick.tolist() == [1, 1]
        assert waiting.result(10).observations.tick.tolist() == [1, 1]
    assert fleet.states(self_play).tick.tolist() == [0, 0]
    fleet.close(self_play)
    assert fleet.healthy()


def test_nobody_plays_an_unjoined_seat(shard, fleet):
    """A free seat's token is 0 in the table: 0 must not pass for it."""
    ids = fleet.create(1, SMALL, open_seats=True, turn_deadline_ms=50).ids
    fleet.join(ids[0], 0)
    play_free_seat = lambda: fleet.step_seats(ids, [-1], [1], np.zeros(1, np.uint64))  # noqa: E731
    refused(shard, play_free_seat, Code.PERMISSION_DENIED, str(ids[0]), "seat 1", "not joined")
    fleet.close(ids)


def test_closing_a_game_fails_the_call_waiting_on_it(shard, fleet, second, table):
    ids, (seats, tokens), (other_seats, other_tokens) = table
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(fleet.step_seats, ids, [-1, -1], seats, tokens)  # the other seat is silent
        wait_for(lambda: shard.server.seats.waiting_calls == 1)
        before = shard.state()
        assert fleet.close(ids[:1]) == 1
        with pytest.raises(Aborted, match=str(ids[0])):
            waiting.result(10)
    after = shard.state()
    assert before.pop("ids").size == after["ids"].size + 1
    for name, array in before.items():  # closing frees a slot: no game array changed
        np.testing.assert_array_equal(array, after[name], err_msg=name)
    with pytest.raises(NotFound):  # the closed game's seats went with it
        fleet.join(ids[0])
    # The failed call took back its move in the game still open: that seat plays it again.
    assert fleet.states(ids[1:]).tick.tolist() == [0]
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(second.step_seats, ids[1:], [-1], other_seats[1:], other_tokens[1:])
        assert fleet.step_seats(ids[1:], [-1], seats[1:], tokens[1:]).observations.tick.tolist() == [1]
        assert waiting.result(10).observations.tick.tolist() == [1]


def test_a_call_that_times_out_takes_its_moves_back(shard, second, table):
    ids, (seats, tokens), (other_seats, other_tokens) = table
    with FleetClient(shard.address, timeout=0.2) as hasty:
        with pytest.raises(GameFleetError) as error:
            hasty.step_seats(ids, [-1, -1], seats, tokens)
        assert error.value.code == Code.DEADLINE_EXCEEDED
        wait_for(lambda: shard.server.seats.waiting_calls == 0)
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(second.step_seats, ids, [-1, -1], other_seats, other_tokens)
        wait_for(lambda: shard.server.seats.waiting_calls == 1)
        time.sleep(0.05)
        assert not waiting.done()  # the timed-out seat's moves no longer count
        with FleetClient(shard.address, timeout=10) as retry:
            assert retry.step_seats(ids, [-1, -1], seats, tokens).observations.tick.tolist() == [1, 1]
        assert waiting.result(10).observations.tick.tolist() == [1, 1]


def test_async_seat_clients_across_two_pools(shard):
    """Seat calls from asyncio tasks; one call's games live in two pools (autoreset or not)."""

    async def play() -> list[list[int]]:
        async with AsyncFleetClient(shard.address) as one, AsyncFleetClient(shard.address) as two:
            finite = (await one.create(2, SMALL, open_seats=True, turn_deadline_ms=5000)).ids
            endless = (await one.create(1, SMALL, autoreset=True, open_seats=True)).ids
            ids = np.r_[finite, endless]
            held = [[await client.join(game) for game in ids] for client in (one, two)]
            ticks = []
            for observe in (True, True, False):
                replies = await asyncio.gather(
                    *(
                        client.step_seats(ids, [-1] * 3, *zip(*seats, strict=True), observe=observe)
                        for client, seats in zip((one, two), held, strict=True)
                    )
                )
                assert (replies[0].observations is None) == (not observe)
                ticks.append((await one.states(ids)).tick.tolist())
            await one.close(ids)
            return ticks

    assert asyncio.run(play()) == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
