"""Given maps through the wire (CreateBatchGames / ResetBatchGames `maps`, proto GameMaps): a real
shard on 127.0.0.1 starts games on them exactly as an in-process GamePool does; maps of different
city counts share a call; a client that knows only the proto builds them as raw tensors; bad maps
are refused INVALID_ARGUMENT with nothing changed; through a router (creates passed through,
resets split by shard); and in log mode a kill -9 after acknowledged map creates, map resets and
steps recovers every game bit for bit from Redis."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from fleet_play import keys_on
from router_helpers import BackgroundRouter

from gameserver.agents import expander_actions, random_actions
from gameserver.client import FleetClient, InvalidArgument, ResourceExhausted
from gameserver.engine import GameBatch, GameConfig, generate
from gameserver.engine.config import CITY, GENERAL, MOUNTAIN
from gameserver.engine.maps import NO_STRUCTURE, GameMap, MapBatch
from gameserver.envs.adapters import LocalBackend
from gameserver.envs.remote import RemoteBackend
from gameserver.fleet.recovery import recover
from gameserver.fleet.store import FleetStore
from gameserver.local_fleet import LocalFleet
from gameserver.pool import GamePool
from gameserver.router.topology import StaticSource
from gameserver.sharded_client import ShardedClient
from gameserver.sharding import HashRing, placement_hash
from gameserver.wire import replies as wire
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import config_to_proto, write_tensor
from gameserver.wire.services import SERVICE

CONFIG = GameConfig(6, 8, city_density=0.07, min_general_distance=3, max_ticks=400)  # up to 3 cities
THREE = GameMap.from_grid("A..#....\n.3.#..x.\n...#....\n........\n..#.9...\n.#.....B")
TWO = GameMap.from_grid("A.......\n..1.....\n...##...\n.....x..\n........\n.......B")
NONE = GameMap.from_grid("B.......\n........\n...##...\n........\n........\n.......A")  # seat 1 top left
MAPS = [THREE, TWO, NONE]
VIEWS = ("codes", "armies", "land", "army", "tick")


def pool_of(shard: BackgroundShard, ids: np.ndarray) -> GamePool:
    (pool,) = [p for p in shard.server.games.pools if p.contains(ids).all()]
    return pool


def assert_same_games(
    expected: GamePool, expected_ids: np.ndarray, actual: GamePool, ids: np.ndarray
) -> None:
    a, b = expected.slots_of(expected_ids), actual.slots_of(ids)
    for name, array in expected.batch.arrays().items():
        np.testing.assert_array_equal(getattr(actual.batch, name)[b], array[a], err_msg=name)


def assert_same_views(views: object, reference: GamePool, ids: np.ndarray, masks: bool = False) -> None:
    expected = reference.observe(ids)
    for name in VIEWS:
        np.testing.assert_array_equal(getattr(views, name), getattr(expected, name), err_msg=name)
    if masks:
        np.testing.assert_array_equal(views.masks, reference.masks(ids))


def moves_for(views: object, tick: int) -> np.ndarray:
    """Seat 0 expands, seat 1 plays random legal moves (from the views the fleet sent)."""
    args = (
        np.asarray(views.codes),
        np.asarray(views.armies),
        np.asarray(views.tick),
        CONFIG.height,
        CONFIG.width,
    )
    moves = expander_actions(*args, tick)
    moves[:, 1] = random_actions(*args, tick)[:, 1]
    return moves


def unary(address: str, method: str):
    channel = grpc.insecure_channel(address)
    return channel, channel.unary_unary(f"/{SERVICE.full_name}/{method}")


def raw_maps(message: pb.GameMaps, terrain: object, armies: object, generals: object) -> None:
    """GameMaps as a client that knows only the proto writes them: no checks on this side."""
    for name, array in (("terrain", terrain), ("armies", armies), ("generals", generals)):
        if array is not None:
            write_tensor(getattr(message, name), np.asarray(array))


def test_a_remote_create_on_given_maps_equals_the_in_process_pool(shard, fleet):
    """Mixed city counts (3, 2 and none under a config of 3) in one call; every array of every game
    bit-identical to GamePool.create on the same maps and seeds, the first views too, and after
    40 ticks of the same moves."""
    seeds = np.array([11, 12, 2**64 - 1], np.uint64)
    created = fleet.create(3, CONFIG, seeds=seeds, maps=MAPS, masks=True)
    reference = GamePool(CONFIG, 4)
    ref_ids = reference.create(3, seeds, maps=MAPS)
    served = pool_of(shard, created.ids)
    assert_same_games(reference, ref_ids, served, created.ids)
    assert_same_views(created.observations, reference, ref_ids, masks=True)
    structures = served.batch.structures[served.slots_of(created.ids)]
    assert (structures[:, : CONFIG.cities] == NO_STRUCTURE).sum(axis=1).tolist() == [0, 1, 3]
    for i, game_map in enumerate(MAPS):
        assert GameMap.of_game(served.batch, served.slots_of(created.ids[i : i + 1])[0]) == game_map
    views = created.observations
    for t in range(40):
        moves = moves_for(views, t)
        views = fleet.step(created.ids, moves).observations
        reference.step(ref_ids, moves)
        assert_same_views(views, reference, ref_ids)
    assert_same_games(reference, ref_ids, served, created.ids)
    fleet.close(created.ids)


def test_a_remote_reset_onto_given_maps_equals_the_in_process_pool(shard, fleet):
    seeds = np.arange(4, dtype=np.uint64) + 500
    created = fleet.create(4, CONFIG, seeds=seeds)  # generated maps first
    reference = GamePool(CONFIG, 4)
    ref_ids = reference.create(4, seeds)
    moves = np.full((4, 2), -1, np.int32)
    for _ in range(7):
        fleet.step(created.ids, moves)
        reference.step(ref_ids, moves)
    views = fleet.reset(created.ids[[3, 1]], maps=[NONE, THREE], masks=True)  # they keep their seeds
    reference.reset(ref_ids[[3, 1]], maps=[NONE, THREE])
    assert_same_views(views, reference, ref_ids[[3, 1]], masks=True)
    fleet.reset(created.ids[:1], seeds=[77], maps=MapBatch.of([TWO]))  # a MapBatch, and new seeds
    reference.reset(ref_ids[:1], [77], maps=[TWO])
    assert_same_games(reference, ref_ids, pool_of(shard, created.ids), created.ids)
    states = fleet.states(created.ids)
    assert states.tick.tolist() == [0, 0, 7, 0]
    fleet.close(created.ids)


def test_a_client_that_knows_only_the_proto_sends_maps_as_raw_tensors(shard):
    """int64 [games, H, W] terrain and armies, int64 generals: taken, range-checked, as documented."""
    request = pb.CreateBatchGamesRequest(num_games=2, config=config_to_proto(CONFIG))
    terrain = np.stack([m.terrain for m in (TWO, THREE)]).astype(np.int64)
    armies = np.stack([m.armies for m in (TWO, THREE)]).astype(np.int64)
    armies[terrain != CITY] = 123  # read on city tiles only
    generals = np.stack([m.generals for m in (TWO, THREE)]).astype(np.int64)
    raw_maps(request.maps, terrain, armies, generals)
    channel, create = unary(shard.address, "CreateBatchGames")
    with channel:
        created = wire.read_created(create(request.SerializeToString(), timeout=30))
    served = pool_of(shard, created.ids)
    for i, game_map in enumerate((TWO, THREE)):
        assert GameMap.of_game(served.batch, served.slots_of(created.ids[i : i + 1])[0]) == game_map
    codes = created.observations.codes  # seat 0 sees its general: GENERAL + KIND_OFFSET, owner 1
    assert codes[0, 0, 0] == (GENERAL + 2) << 4 | 1
    with FleetClient(shard.address, timeout=30) as fleet:
        fleet.close(created.ids)


def _create(n: int, terrain: object, armies: object, generals: object, **fields: object) -> bytes:
    request = pb.CreateBatchGamesRequest(num_games=n, config=config_to_proto(CONFIG), **fields)
    raw_maps(request.maps, terrain, armies, generals)
    return request.SerializeToString()


def _arrays(maps: list[GameMap]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """terrain and armies [games, tiles], generals int32 [games, players]: the proto's layout."""
    batch = MapBatch.of(maps)
    n = len(batch)
    return batch.terrain.reshape(n, -1), batch.armies.reshape(n, -1), batch.generals.astype(np.int32)


GOOD = _arrays(MAPS[:2])


def _changed(index: tuple, value: int, part: int) -> tuple:
    arrays = [a.copy() for a in GOOD]
    arrays[part][index] = value
    return tuple(arrays)


CROWDED = GameMap.from_grid("A..#....\n.3.#..x.\n...#..1.\n........\n..#.9...\n.#.....B")  # 4 cities
TERRAIN, ARMIES, GENERALS = GOOD
BAD_CREATES = [
    (_changed((1, 5), 9, 0), r"maps: maps\[1\]: terrain codes"),
    (_changed((0, 0), MOUNTAIN, 0), r"maps\[0\]: the GENERAL tiles"),  # general 0's tile a mountain
    (_changed((1, 0), 1, 2), r"maps\[1\]: the GENERAL tiles must be exactly"),  # general 0 on a plain
    (_changed((0, 1), 48, 2), r"maps\[0\]: generals must be tile indices in \[0, 48\)"),
    (_changed((0, 1), 0, 2), r"maps\[0\]: generals must be distinct"),
    (_changed((0, 9), -5, 1), r"maps\[0\]: city armies must be in \[0, 2\*\*31\)"),
    ((TERRAIN, ARMIES, None), r"maps.generals is missing"),
    ((TERRAIN.astype(np.float32), ARMIES, GENERALS), r"maps: terrain must hold integers"),
    ((TERRAIN[:, :40], ARMIES, GENERALS), r"maps.terrain must be \[2, 48\] \(games, tiles\) or \[2, 6, 8\]"),
    ((TERRAIN[:1], ARMIES, GENERALS), r"maps.terrain must be \[2, 48\]"),
    ((TERRAIN, ARMIES, GENERALS[:, :1]), r"maps.generals must be \[2, 2\]"),
    (_arrays([THREE, CROWDED]), r"maps\[1\] has 4 cities, more than the config's 3"),
    (_arrays([GameMap.from_grid("A...\n....\n....\n...B")] * 2), r"maps.terrain must be \[2, 48\]"),
]


@pytest.mark.parametrize("arrays, problem", BAD_CREATES, ids=[str(i) for i in range(len(BAD_CREATES))])
def test_bad_maps_are_refused_naming_the_problem_and_nothing_changes(shard, arrays, problem):
    live = FleetClient(shard.address, timeout=30)
    kept = live.create(2, CONFIG, maps=MAPS[:2])  # a reset of these with the same bad maps
    before = shard.state()
    channel, create = unary(shard.address, "CreateBatchGames")
    _, reset = unary(shard.address, "ResetBatchGames")
    with channel, live:
        with pytest.raises(grpc.RpcError) as refused:
            create(_create(2, *arrays), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(problem, refused.value.details()), refused.value.details()
        request = pb.ResetBatchGamesRequest()
        write_tensor(request.game_ids, kept.ids)
        raw_maps(request.maps, *arrays)
        with pytest.raises(grpc.RpcError) as refused:
            reset(request.SerializeToString(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = shard.state()
        assert before.keys() == after.keys()
        for name, array in before.items():
            np.testing.assert_array_equal(after[name], array, err_msg=name)
        again = live.create(1, CONFIG, maps=[TWO])  # the shard keeps serving
        live.close(np.concatenate([kept.ids, again.ids]))


def test_the_client_refuses_maps_it_cannot_stack_and_the_shard_refuses_a_wrong_count(fleet):
    with pytest.raises(InvalidArgument, match="share a board"):
        fleet.create(2, CONFIG, maps=[THREE, GameMap.from_grid("A...\n....\n....\n...B")])
    with pytest.raises(InvalidArgument, match=r"maps.terrain must be \[3, 48\]"):
        fleet.create(3, CONFIG, maps=MAPS[:2])
    with pytest.raises(InvalidArgument, match=r"maps\[1\] has 4 cities"):
        fleet.create(2, CONFIG, maps=[THREE, CROWDED])
    ids = fleet.create(2, CONFIG).ids
    with pytest.raises(InvalidArgument, match=r"maps.terrain must be \[2, 48\]"):
        fleet.reset(ids, maps=[THREE])
    fleet.close(ids)


@pytest.fixture(scope="module")
def two_shards():
    shards = [BackgroundShard(seed=21), BackgroundShard(seed=22)]
    router = BackgroundRouter(StaticSource([s.address for s in shards]))
    try:
        yield shards, router
    finally:
        router.stop()
        for shard in shards:
            shard.stop()


def test_maps_pass_through_the_router_and_a_reset_spanning_shards_is_split(two_shards):
    shards, router = two_shards
    addresses = [s.address for s in shards]
    keys = keys_on(addresses, "maps")  # one placement key per shard
    ring = HashRing(sorted(addresses))
    references, batches = [], []
    with FleetClient(router.address, timeout=30) as fleet:
        for key, seed in zip(keys, (1, 2), strict=True):
            seeds = np.array([seed, seed + 10, seed + 20], np.uint64)
            created = fleet.create(3, CONFIG, seeds=seeds, maps=MAPS, placement_key=key)
            reference = GamePool(CONFIG, 4)
            ref_ids = reference.create(3, seeds, key_hash=placement_hash(key), maps=MAPS)
            assert_same_views(created.observations, reference, ref_ids)
            references.append((reference, ref_ids))
            batches.append(created.ids)
        assert {ring.shard_of_key(k) for k in keys} == set(addresses)
        ids = np.concatenate([batches[0][:2], batches[1][1:]])  # games on both shards
        given = [NONE, TWO, THREE, NONE]
        views = fleet.reset(ids, maps=given, masks=True)
        (ra, ra_ids), (rb, rb_ids) = references
        ra.reset(ra_ids[:2], maps=given[:2])
        rb.reset(rb_ids[1:], maps=given[2:])
        for (reference, ref_ids), batch in zip(references, batches, strict=True):
            (pool,) = [p for s in shards for p in s.server.games.pools if p.contains(batch).all()]
            assert_same_games(reference, ref_ids, pool, batch)
        expected = np.concatenate([ra.observe(ra_ids[:2]).codes, rb.observe(rb_ids[1:]).codes])
        np.testing.assert_array_equal(views.codes, expected)
        request = pb.ResetBatchGamesRequest()  # one map's generals for four games: refused by the router
        write_tensor(request.game_ids, ids)
        raw_maps(request.maps, np.tile(TERRAIN, (2, 1)), np.tile(ARMIES, (2, 1)), GENERALS[:1])
        channel, reset = unary(router.address, "ResetBatchGames")
        with channel, pytest.raises(grpc.RpcError) as refused:
            reset(request.SerializeToString(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "maps.generals: shape [1, 2] for 4 game_ids" in refused.value.details()
    with ShardedClient(router.address, timeout=30) as direct:  # the router's fanout, client side
        direct.reset(ids, maps=given[::-1])
        ra.reset(ra_ids[:2], maps=given[::-1][:2])
        rb.reset(rb_ids[1:], maps=given[::-1][2:])
        for (reference, ref_ids), batch in zip(references, batches, strict=True):
            np.testing.assert_array_equal(direct.states(batch).codes, reference.observe(ref_ids).codes)
        direct.close(np.concatenate(batches))


def test_log_mode_kill_9_after_map_creates_resets_and_steps_recovers_bit_exact(redis_server):
    """Through a router over a shard with --durability log: acknowledged creates on given maps,
    resets onto given maps and steps; then kill -9 and every game rebuilt from Redis alone."""
    with LocalFleet(1, redis_url=redis_server.url, fleet="maps", durability="log", router=True) as local:
        with FleetClient(local.router_address, timeout=30) as fleet:
            key = "maps-kill"
            seeds = np.array([3, 4, 5], np.uint64)
            created = fleet.create(3, CONFIG, seeds=seeds, maps=MAPS, placement_key=key)
            generated = fleet.create(2, CONFIG, seeds=[8, 9], placement_key=key)  # one pool, both kinds
            reference = GamePool(CONFIG, 8)
            ref_ids = np.concatenate(
                [
                    reference.create(3, seeds, key_hash=placement_hash(key), maps=MAPS),
                    reference.create(2, [8, 9], key_hash=placement_hash(key)),
                ]
            )
            ids = np.concatenate([created.ids, generated.ids])
            views = fleet.states(ids)
            for t in range(30):
                moves = moves_for(views, t)
                views = fleet.step(ids, moves).observations
                reference.step(ref_ids, moves)
                if t == 12:  # onto given maps, mid-game: only in the log until a round records them
                    fleet.reset(ids[[0, 4]], maps=[TWO, NONE])
                    reference.reset(ref_ids[[0, 4]], maps=[TWO, NONE])
                    views = fleet.states(ids)
            assert_same_views(views, reference, ref_ids)
        local.kill(0)
        store = FleetStore(redis_server.url, "maps", ttl_s=600)
        pools: list[GamePool] = []
        recovered = recover(
            store,
            lambda config, autoreset: pools.append(GamePool(config, 1)) or pools[-1],
            key_hashes=[placement_hash(key)],
        )
        (fresh,) = pools
        np.testing.assert_array_equal(recovered, np.sort(ids))
        assert_same_games(reference, ref_ids, fresh, ids)


def test_the_envs_remote_backend_starts_games_on_given_maps_as_the_local_one(shard, fleet):
    remote = RemoteBackend(fleet, CONFIG, shared_view=False)
    local = LocalBackend(CONFIG)
    seeds = np.array([5, 6], np.uint64)
    ids, local_ids = remote.create(2, seeds, maps=MAPS[:2]), local.create(2, seeds, maps=MAPS[:2])
    for name in VIEWS:
        np.testing.assert_array_equal(
            getattr(remote.observe(ids), name), getattr(local.observe(local_ids), name)
        )
    np.testing.assert_array_equal(remote.masks(ids), local.masks(local_ids))
    remote.reset(ids[:1], maps=[NONE])
    local.reset(local_ids[:1], maps=[NONE])
    np.testing.assert_array_equal(remote.observe(ids).codes, local.observe(local_ids).codes)
    remote.release(ids)


def test_map_calls_are_bounded_like_every_request():
    """Maps count against the shard's request limit (gRPC refuses a request over it before its bytes
    are read) and its games-per-call limit; a call under both is served."""
    small = BackgroundShard(max_games_per_call=64, max_games=1000)
    try:
        config = GameConfig()  # 20x20: ~2 KB of map per game
        maps = [GameMap.of_game(_generated(config, 4), i % 4) for i in range(64)]
        assert 30 * 2008 < small.server.max_request_bytes < 64 * 2008
        with FleetClient(small.address, timeout=30) as fleet:
            with pytest.raises(ResourceExhausted):
                fleet.create(64, config, maps=maps, observations=False)
            with pytest.raises(ResourceExhausted, match="the limit is 64"):
                fleet.create(65, GameConfig(6, 8), maps=[NONE] * 65, observations=False)
            assert small.server.games.active_games == 0
            created = fleet.create(30, config, maps=maps[:30], observations=False)
            assert created.ids.size == 30
    finally:
        small.stop()


def _generated(config: GameConfig, n: int) -> GameBatch:
    batch = GameBatch.allocate(config, n)
    generate(batch, np.arange(n), np.arange(n))
    return batch
