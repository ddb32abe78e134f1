"""Shared views through a real shard: the planes land in the client's segment, the reply leaves
them out, and a segment the shard cannot or must not use is refused with nothing changed."""

from __future__ import annotations

import asyncio
import os

import grpc
import numpy as np
import pytest

from gameserver.client import AsyncFleetClient, FailedPrecondition, SharedView
from gameserver.engine import GameConfig
from gameserver.router import fanout
from gameserver.sharding import HashRing
from gameserver.shared_views import PREFIX, SharedViewCache
from gameserver.wire import codec
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import write_tensor

CONFIG = GameConfig(height=9, width=7, max_ticks=6)
FIELDS = ("codes", "armies", "land", "army", "tick")


def assert_same(planes: object, wire: object) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(planes, name), getattr(wire, name), err_msg=name)


def pass_moves(games: int) -> np.ndarray:
    return np.full((games, CONFIG.players), -1, np.int32)


@pytest.fixture
def games(fleet):
    created = fleet.create(5, CONFIG, seeds=np.arange(5) + 40, autoreset=True)
    yield created.ids
    fleet.close(created.ids)


def test_a_step_writes_the_planes_into_the_view_and_the_reply_leaves_them_out(fleet, games):
    with SharedView(CONFIG, 8) as view:
        result = fleet.step(games, pass_moves(5), masks=True, view=view)
        planes = view.rows(5)
        assert result.observations.codes is planes.codes  # the segment itself, not a copy
        assert result.observations.masks.shape[:2] == (5, CONFIG.players)  # masks still on the wire
        assert planes.tick.tolist() == [1] * 5
        assert_same(planes, fleet.states(games))  # exactly what the wire would have carried
        np.testing.assert_array_equal(result.observations.masks, fleet.states(games, masks=True).masks)


def test_the_view_keeps_up_over_autoresets_and_final_views_still_travel(fleet, games):
    with SharedView(CONFIG, 5) as view:
        for _ in range(CONFIG.max_ticks):
            result = fleet.step(games, pass_moves(5), view=view)
        assert result.reset.all() and view.observation.tick.tolist() == [0] * 5
        assert result.final_observations.tick.tolist() == [CONFIG.max_ticks] * 5
        assert_same(view.observation, fleet.states(games))


def test_states_reset_and_a_subset_of_the_games_use_the_views_first_rows(fleet, games):
    with SharedView(CONFIG, 5) as view:
        fleet.step(games, pass_moves(5))
        some = games[[3, 1]]
        observed = fleet.states(some, view=view)
        assert observed.codes.shape == (2, CONFIG.players, CONFIG.tiles)
        assert_same(view.rows(2), fleet.states(some))
        reset = fleet.reset(some, seeds=[7, 8], view=view)
        assert reset.tick.tolist() == [0, 0] and view.rows(2).tick.tolist() == [0, 0]
        assert_same(view.rows(2), fleet.states(some))


def test_ids_of_two_pools_are_merged_into_the_view_in_request_order(fleet):
    finite = fleet.create(2, CONFIG, seeds=[1, 2])
    endless = fleet.create(1, CONFIG, seeds=[3], autoreset=True)
    ids = np.array([finite.ids[0], endless.ids[0], finite.ids[1]], np.uint64)
    with SharedView(CONFIG, 3) as view:
        fleet.step(ids, pass_moves(3), view=view)
        assert_same(view.observation, fleet.states(ids))
    fleet.close(ids)


def test_stream_and_async_calls_take_a_view(fleet, shard, games):
    with SharedView(CONFIG, 5) as view:
        with fleet.stream() as stream:
            assert stream.step(games, pass_moves(5), view=view).observations.tick.tolist() == [1] * 5
        assert_same(view.observation, fleet.states(games))

        async def play() -> list[int]:
            async with AsyncFleetClient(shard.address) as client:
                await client.step(games, pass_moves(5), view=view)
                async with client.stream() as steps:
                    await steps.step(games, pass_moves(5), view=view)
                return (await client.states(games, view=view)).tick.tolist()

        assert asyncio.run(play()) == [3] * 5


def test_a_view_too_small_for_the_call_is_refused_by_the_client(fleet, games):
    with SharedView(CONFIG, 2) as view, pytest.raises(ValueError, match="1 to 2 games"):
        fleet.step(games, pass_moves(5), view=view)


def raw_step(ids: np.ndarray, **fields: object) -> bytes:
    request = pb.SubmitBatchActionsRequest(**fields)
    write_tensor(request.game_ids, ids)
    write_tensor(request.actions, pass_moves(ids.size))
    return request.SerializeToString()


@pytest.fixture
def views():
    """A one-game view (too small for the five games) and a five-game one."""
    with SharedView(CONFIG, 1) as small, SharedView(CONFIG, 5) as big:
        yield small, big


INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
BAD_VIEWS = {
    "foreign name": (lambda small, big: {"shared_view": "not-ours"}, INVALID, ["not a GameFleet view"]),
    "path in name": (lambda small, big: {"shared_view": PREFIX + "../x"}, INVALID, ["not a GameFleet view"]),
    "nul in name": (lambda small, big: {"shared_view": PREFIX + "a\0b"}, INVALID, ["not a GameFleet view"]),
    "long name": (lambda small, big: {"shared_view": PREFIX + "a" * 300}, INVALID, ["not a GameFleet view"]),
    "no such segment": (lambda small, big: {"shared_view": PREFIX + "gone"}, PRECONDITION, ["same host"]),
    "too small": (lambda small, big: {"shared_view": small.name}, INVALID, ["bytes", "5 games"]),
    "with delta": (lambda small, big: {"shared_view": big.name, "delta": True}, INVALID, ["delta"]),
}


@pytest.mark.parametrize(("fields", "code", "words"), list(BAD_VIEWS.values()), ids=list(BAD_VIEWS))
def test_bad_shared_views_are_refused_and_change_nothing(shard, fleet, games, views, fields, code, words):
    before, segments = shard.state(), [view.observation.codes.copy() for view in views]
    with grpc.insecure_channel(shard.address) as channel:
        call = channel.unary_unary("/gamefleet.v1.BatchGameService/SubmitBatchActions")
        with pytest.raises(grpc.RpcError) as refused:
            call(raw_step(games, **fields(*views)), timeout=30)
    assert refused.value.code() == code, refused.value.details()
    for word in words:
        assert word in refused.value.details()
    after = shard.state()
    for key, array in before.items():
        np.testing.assert_array_equal(array, after[key], err_msg=key)
    for view, segment in zip(views, segments, strict=True):
        np.testing.assert_array_equal(view.observation.codes, segment)
    assert fleet.states(games).tick.shape == (5,)  # still serving


def test_a_seat_call_naming_a_view_is_refused(fleet):
    created = fleet.create(1, CONFIG, open_seats=True)
    seat, token = fleet.join(created.ids[0], 0)
    with SharedView(CONFIG, 1) as view, grpc.insecure_channel(fleet.address) as channel:
        request = pb.SubmitBatchActionsRequest(shared_view=view.name)
        write_tensor(request.game_ids, created.ids)
        write_tensor(request.actions, np.array([-1], np.int32))
        write_tensor(request.seats, np.array([seat], np.int32))
        write_tensor(request.seat_tokens, np.array([token], np.uint64))
        call = channel.unary_unary("/gamefleet.v1.BatchGameService/SubmitBatchActions")
        with pytest.raises(grpc.RpcError) as refused:
            call(request.SerializeToString(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "seat" in refused.value.details()
    assert fleet.states(created.ids).tick.tolist() == [0]
    fleet.close(created.ids)


def test_a_router_refuses_a_view_over_games_of_several_shards():
    ring = HashRing(("a:1", "b:2"), 160)
    ids = np.array([(k << 32) | 1 for k in range(64)], np.uint64)  # 64 placement hashes: both shards
    with pytest.raises(FailedPrecondition, match="shards"):
        fanout.plan("SubmitBatchActions", raw_step(ids, shared_view=PREFIX + "x"), ring, 4096)
    fanout.plan("SubmitBatchActions", raw_step(ids), ring, 4096)  # without a view it splits


def test_the_shard_drops_a_removed_segment_and_sees_a_shrunk_one():
    cache = SharedViewCache()
    view = SharedView(CONFIG, 2)
    cache.views(view.name, CONFIG, 2)
    os.truncate(f"/dev/shm/{view.name}", codec.observation_nbytes(1, CONFIG.players, CONFIG.tiles))
    with pytest.raises(ValueError, match="bytes"):
        cache.views(view.name, CONFIG, 2)  # re-checked on every call: writing past it would fault
    assert cache.views(view.name, CONFIG, 1).games == 1
    view.close()
    with pytest.raises(ValueError, match="cannot be opened"):
        cache.views(view.name, CONFIG, 1)
    assert not cache._open
