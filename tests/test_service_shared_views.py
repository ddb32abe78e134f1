"""Shared views through a real shard: the planes and the masks land in the client's segment, the
reply leaves them out (masks stay on the wire for a planes-only segment, an older client's
layout), and a segment the shard cannot or must not use is refused with nothing changed."""

from __future__ import annotations

import asyncio
import os
from multiprocessing import shared_memory
from pathlib import Path

import grpc
import numpy as np
import pytest
from router_helpers import BackgroundRouter

from gameserver.agents import random_actions
from gameserver.client import AsyncFleetClient, FailedPrecondition, FleetClient, SharedView
from gameserver.engine import GameConfig, action_masks, mask_bytes
from gameserver.router import fanout
from gameserver.router.topology import StaticSource
from gameserver.sharding import HashRing
from gameserver.shared_views import MASKS_MARK, PREFIX, SharedViewCache
from gameserver.wire import codec
from gameserver.wire import replies as wire
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import write_tensor

CONFIG = GameConfig(height=9, width=7, max_ticks=6)
FIELDS = ("codes", "armies", "land", "army", "tick")


def assert_same(planes: object, wire: object) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(planes, name), getattr(wire, name), err_msg=name)


def pass_moves(games: int) -> np.ndarray:
    return np.full((games, CONFIG.players), -1, np.int32)


def random_moves(planes: object, seed: int) -> np.ndarray:
    return random_actions(
        planes.codes, planes.armies, planes.tick, CONFIG.height, CONFIG.width, seed, parallel=False
    )


def engine_masks(shard: object, ids: np.ndarray) -> np.ndarray:
    """The engine's own masks of these games, from the shard's pools (in request order)."""
    rows = np.zeros((ids.size, CONFIG.players, mask_bytes(CONFIG.tiles)), np.uint8)
    for pool in shard.server.games.pools:
        here = pool.contains(ids)
        if here.any():
            rows[here] = action_masks(pool.batch, pool.slots_of(ids[here]))
    return rows


def assert_masks(masks: np.ndarray, shard: object, fleet: object, ids: np.ndarray) -> None:
    """Bit for bit what the engine holds and what the wire carries."""
    np.testing.assert_array_equal(masks, engine_masks(shard, ids))
    np.testing.assert_array_equal(masks, fleet.states(ids, masks=True).masks)


@pytest.fixture
def games(fleet):
    created = fleet.create(5, CONFIG, seeds=np.arange(5) + 40, autoreset=True)
    yield created.ids
    fleet.close(created.ids)


def test_a_step_writes_the_planes_and_masks_into_the_view_and_the_reply_leaves_them_out(shard, fleet, games):
    with SharedView(CONFIG, 8) as view:
        result = fleet.step(games, pass_moves(5), masks=True, view=view)
        planes, masks = view.layout(5)
        assert result.observations.codes is planes.codes  # the segment itself, not a copy
        assert result.observations.masks is masks
        assert planes.tick.tolist() == [1] * 5
        assert_same(planes, fleet.states(games))  # exactly what the wire would have carried
        assert_masks(masks, shard, fleet, games)


def test_masks_in_the_view_follow_every_step_over_autoresets(shard, fleet, games):
    """Random legal moves through max_ticks and past it: each step's masks in the segment are the
    engine's and the wire's, the autoreset games' included (their new episode's masks)."""
    with SharedView(CONFIG, 5) as view:
        planes = fleet.states(games, masks=True, view=view)
        assert_masks(planes.masks, shard, fleet, games)
        resets, bits = 0, False
        for tick in range(CONFIG.max_ticks + 2):
            result = fleet.step(games, random_moves(view.observation, tick), masks=True, view=view)
            assert result.observations.masks is view.masks
            assert_masks(view.masks, shard, fleet, games)
            assert_same(view.observation, fleet.states(games))
            resets, bits = resets + int(result.reset.sum()), bits or view.masks.any()
            if result.reset.any():
                assert result.final_observations.masks is None  # final views: planes only, as before
        assert resets == 5 and bits


def test_the_view_keeps_up_over_autoresets_and_final_views_still_travel(fleet, games):
    with SharedView(CONFIG, 5) as view:
        for _ in range(CONFIG.max_ticks):
            result = fleet.step(games, pass_moves(5), view=view)
        assert result.reset.all() and view.observation.tick.tolist() == [0] * 5
        assert result.final_observations.tick.tolist() == [CONFIG.max_ticks] * 5
        assert_same(view.observation, fleet.states(games))


def test_states_reset_and_a_subset_of_the_games_use_the_views_first_rows(shard, fleet, games):
    with SharedView(CONFIG, 5) as view:
        for _ in range(3):  # generals of 2 armies: masks with bits set
            fleet.step(games, pass_moves(5))
        some = games[[3, 1]]
        observed = fleet.states(some, masks=True, view=view)
        assert observed.codes.shape == (2, CONFIG.players, CONFIG.tiles)
        assert observed.masks is view.mask_rows(2) and observed.masks.any()
        assert_same(view.rows(2), fleet.states(some))
        assert_masks(observed.masks, shard, fleet, some)
        assert fleet.states(some, view=view).masks is None  # not asked: none, whatever the segment holds
        reset = fleet.reset(some, seeds=[7, 8], masks=True, view=view)
        assert reset.tick.tolist() == [0, 0] and view.rows(2).tick.tolist() == [0, 0]
        assert reset.masks is view.mask_rows(2)
        assert_same(view.rows(2), fleet.states(some))
        assert_masks(reset.masks, shard, fleet, some)


def test_a_planes_only_view_gets_its_masks_on_the_wire_as_older_clients_do(shard, fleet, games):
    """masks=False lays the segment out as clients did before masks moved into it (no mark): the
    shard writes the planes there and still sends asked masks; an older client's reader, which
    knows nothing of masks in the segment, finds them in the reply."""
    with SharedView(CONFIG, 8, masks=False) as view:
        result = fleet.step(games, pass_moves(5), masks=True, view=view)
        assert result.observations.codes is view.rows(5).codes
        assert not np.shares_memory(result.observations.masks, view.observation.codes)
        assert_masks(result.observations.masks, shard, fleet, games)
        with grpc.insecure_channel(shard.address) as channel:
            call = channel.unary_unary("/gamefleet.v1.BatchGameService/SubmitBatchActions")
            reply = call(raw_step(games, shared_view=view.name, include_masks=True), timeout=30)
        old_reader = wire.read_step(reply, view.rows(5))  # no shared_masks: as before this change
        assert_masks(old_reader.observations.masks, shard, fleet, games)


def test_a_step_reply_through_a_view_carries_no_per_tile_data(shard, fleet, games):
    """With masks in the segment the reply's observations are empty: rewards and flags only. The
    same call into a planes-only segment carries the masks, the bytes the new layout saves."""
    masks_bytes = 5 * CONFIG.players * mask_bytes(CONFIG.tiles)
    with (
        SharedView(CONFIG, 5) as view,
        SharedView(CONFIG, 5, masks=False) as planes_only,
        grpc.insecure_channel(shard.address) as channel,
    ):
        step = channel.unary_unary("/gamefleet.v1.BatchGameService/SubmitBatchActions")
        states = channel.unary_unary("/gamefleet.v1.BatchGameService/GetBatchStates")
        lean = step(raw_step(games, shared_view=view.name, include_masks=True), timeout=30)
        parsed = pb.StepResponse.FromString(lean)
        assert parsed.HasField("observations") and parsed.observations.ByteSize() == 0
        assert not parsed.HasField("final_observations")
        assert len(lean) < 5 * (CONFIG.players * 4 + 4) + 200  # rewards and flags, nothing per tile
        wide = step(raw_step(games, shared_view=planes_only.name, include_masks=True), timeout=30)
        assert pb.StepResponse.FromString(wide).observations.masks.data.__len__() == masks_bytes
        assert len(wide) - len(lean) > masks_bytes
        request = pb.GetBatchStatesRequest(include_masks=True, shared_view=view.name)
        write_tensor(request.game_ids, games)
        assert states(request.SerializeToString(), timeout=30) == b""  # an empty Observations
        assert_masks(view.masks, shard, fleet, games)


def test_ids_of_two_pools_are_merged_into_the_view_in_request_order(shard, fleet):
    finite = fleet.create(2, CONFIG, seeds=[1, 2])
    endless = fleet.create(1, CONFIG, seeds=[3], autoreset=True)
    ids = np.array([finite.ids[0], endless.ids[0], finite.ids[1]], np.uint64)
    with SharedView(CONFIG, 3) as view:
        for tick in range(3):
            result = fleet.step(ids, random_moves(fleet.states(ids), tick), masks=True, view=view)
            assert_masks(view.masks, shard, fleet, ids)
        assert result.observations.masks is view.masks
        assert_same(view.observation, fleet.states(ids))
        assert_masks(view.masks, shard, fleet, ids)
    fleet.close(ids)


def test_stream_and_async_calls_take_a_view(fleet, shard, games):
    with SharedView(CONFIG, 5) as view:
        with fleet.stream() as stream:
            streamed = stream.step(games, pass_moves(5), masks=True, view=view).observations
            assert streamed.tick.tolist() == [1] * 5 and streamed.masks is view.masks
        assert_same(view.observation, fleet.states(games))
        assert_masks(view.masks, shard, fleet, games)

        async def play() -> list[int]:
            async with AsyncFleetClient(shard.address) as client:
                stepped = await client.step(games, pass_moves(5), masks=True, view=view)
                assert stepped.observations.masks is view.masks
                async with client.stream() as steps:
                    await steps.step(games, pass_moves(5), masks=True, view=view)
                observed = await client.states(games, masks=True, view=view)
                assert observed.masks is view.masks
                return observed.tick.tolist()

        assert asyncio.run(play()) == [3] * 5
        assert_masks(view.masks, shard, fleet, games)


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
    """A one-game view (too small for the five games), a five-game one, and a segment marked for
    masks that holds the five games' planes and all but one byte of their masks."""
    p, t = CONFIG.players, CONFIG.tiles
    size = codec.view_nbytes(5, p, t) + len(MASKS_MARK) - 1
    tight = shared_memory.SharedMemory(PREFIX + "tight" + os.urandom(4).hex(), create=True, size=size)
    tight.buf[-len(MASKS_MARK) :] = MASKS_MARK
    try:
        with SharedView(CONFIG, 1) as small, SharedView(CONFIG, 5) as big:
            yield small, big, tight
    finally:
        tight.close()
        tight.unlink()


INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
BAD_VIEWS = {
    "foreign name": (lambda *views: {"shared_view": "not-ours"}, INVALID, ["not a GameFleet view"]),
    "path in name": (lambda *views: {"shared_view": PREFIX + "../x"}, INVALID, ["not a GameFleet view"]),
    "nul in name": (lambda *views: {"shared_view": PREFIX + "a\0b"}, INVALID, ["not a GameFleet view"]),
    "long name": (lambda *views: {"shared_view": PREFIX + "a" * 300}, INVALID, ["not a GameFleet view"]),
    "no such segment": (lambda *views: {"shared_view": PREFIX + "gone"}, PRECONDITION, ["same host"]),
    "too small": (lambda small, big, tight: {"shared_view": small.name}, INVALID, ["bytes", "5 games"]),
    "too small for masks": (
        lambda small, big, tight: {"shared_view": tight.name, "include_masks": True},
        PRECONDITION,
        ["not their masks", "5 games", "nothing changed"],
    ),
    "with delta": (lambda small, big, tight: {"shared_view": big.name, "delta": True}, INVALID, ["delta"]),
}


def segment_bytes(views: tuple) -> list[bytes]:
    return [Path("/dev/shm", view.name).read_bytes() for view in views]


@pytest.mark.parametrize(("fields", "code", "words"), list(BAD_VIEWS.values()), ids=list(BAD_VIEWS))
def test_bad_shared_views_are_refused_and_change_nothing(shard, fleet, games, views, fields, code, words):
    before, segments = shard.state(), segment_bytes(views)
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
    assert segment_bytes(views) == segments
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


def test_a_router_passes_a_view_of_one_shards_games_through_masks_and_all(shard, fleet, games):
    """The router forwards a call whose games live on one shard as it is: on this host that shard
    writes planes and masks into the view, and the reply through the router carries neither."""
    router = BackgroundRouter(StaticSource([shard.address]))
    try:
        with SharedView(CONFIG, 5) as view, FleetClient(router.address, timeout=30) as routed:
            result = routed.step(games, pass_moves(5), masks=True, view=view)
            assert result.observations.codes is view.observation.codes
            assert result.observations.masks is view.masks
            assert_masks(view.masks, shard, fleet, games)
            with grpc.insecure_channel(router.address) as channel:
                call = channel.unary_unary("/gamefleet.v1.BatchGameService/SubmitBatchActions")
                reply = call(raw_step(games, shared_view=view.name, include_masks=True), timeout=30)
            assert pb.StepResponse.FromString(reply).observations.ByteSize() == 0
    finally:
        router.stop()


def test_the_shard_drops_a_removed_segment_and_sees_a_shrunk_one():
    cache = SharedViewCache()
    view = SharedView(CONFIG, 2)
    cache.views(view.name, CONFIG, 2, masks=True)
    os.truncate(f"/dev/shm/{view.name}", codec.observation_nbytes(1, CONFIG.players, CONFIG.tiles))
    with pytest.raises(ValueError, match="bytes"):
        cache.views(view.name, CONFIG, 2)  # re-checked on every call: writing past it would fault
    shrunk = cache.views(view.name, CONFIG, 1, masks=True)
    assert shrunk.observation.games == 1 and shrunk.masks is None  # its mark went with its tail
    view.close()
    with pytest.raises(ValueError, match="cannot be opened"):
        cache.views(view.name, CONFIG, 1)
    assert not cache._open
