"""FleetStore against a real redis-server: records, the action log, TTLs, the shard registry."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gameserver.engine import GameBatch, GameConfig
from gameserver.fleet.durability import Durability
from gameserver.fleet.records import decode_records, encode_records
from gameserver.fleet.store import FleetStore
from gameserver.pool import GamePool, IdSource
from gameserver.wire import codec

CONFIG = GameConfig(height=10, width=12, players=3, max_ticks=50)


@pytest.fixture
def store(redis_server):
    store = FleetStore(redis_server.url, "fleet-1", ttl_s=300)
    store.hold("shard-a")
    return store


def played_pool(games: int = 6, key_hash: int = 7) -> tuple[GamePool, np.ndarray]:
    pool = GamePool(CONFIG, games, seed=3)
    ids = pool.create(games, key_hash=key_hash)
    rng = np.random.default_rng(0)
    for _ in range(10):
        pool.step(ids, rng.integers(-1, CONFIG.num_actions, (games, CONFIG.players)))
    return pool, ids


def rows_of(pool: GamePool, ids: np.ndarray) -> GameBatch:
    slots = pool.slots_of(ids)
    return GameBatch(pool.config, **{name: a[slots] for name, a in pool.batch.arrays().items()})


def test_records_hold_codecs_own_one_game_snapshots():
    pool, ids = played_pool()
    records = encode_records(rows_of(pool, ids), "shard-a", (12, 3), True, False)
    for row, game_id in zip(records, ids, strict=True):
        assert row.tobytes().endswith(pool.snapshot([game_id]))


def test_snapshot_round_trip_through_redis(store):
    pool, ids = played_pool()
    store.put_games("shard-a", ids, encode_records(rows_of(pool, ids), "shard-a", (12, 3), True, True))
    stored = store.load_games(key_hashes=[7])
    order = np.argsort(stored.ids)
    np.testing.assert_array_equal(stored.ids[order], ids)
    assert set(stored.owner) == {"shard-a"}
    assert stored.autoreset.all() and stored.logged.all()
    np.testing.assert_array_equal(stored.position, np.tile([12, 3], (ids.size, 1)))
    [(rows, snapshot)] = stored.groups
    expected = codec.decode_snapshot(pool.snapshot(stored.ids[rows]))
    assert snapshot.config == CONFIG
    for name, array in expected.arrays.items():
        np.testing.assert_array_equal(snapshot.arrays[name], array, err_msg=name)


def test_records_of_several_configs_and_single_ids_load_together(store):
    pool, ids = played_pool()
    other = GamePool(GameConfig(height=6, width=6), 4, id_source=IdSource(100))
    other_ids = other.create(3, key_hash=7)
    for p, i in ((pool, ids), (other, other_ids)):
        store.put_games("shard-a", i, encode_records(rows_of(p, i), "shard-a", (1, 0), False, True))
    stored = store.load_games(game_ids=[int(ids[2]), int(other_ids[0]), 12345])
    assert sorted(stored.ids.tolist()) == sorted([int(ids[2]), int(other_ids[0])])
    assert {snapshot.config for _, snapshot in stored.groups} == {CONFIG, other.config}


def test_a_corrupted_record_is_refused_naming_the_game(store):
    pool, ids = played_pool(2)
    records = encode_records(rows_of(pool, ids), "shard-a", (1, 0), False, True)
    records[1, -1] ^= 0xFF
    with pytest.raises(ValueError, match=f"game {ids[1]}: .*checksum"):
        decode_records(ids.tolist(), [r.tobytes() for r in records])


def test_log_entries_read_back_in_order_after_a_position(store):
    appender = store.appender("shard-a")
    ids = np.array([5, 9], np.uint64)
    first = appender.append("step", ids, np.array([[1, -1], [3, 4]], np.int32))
    appender.append("reset", ids, np.array([11, 12], np.uint64))
    appender.append("close", ids[:1])
    entries = list(store.read_log("shard-a", first))
    assert [e.kind for e in entries] == ["reset", "close"]
    np.testing.assert_array_equal(entries[0].data, [11, 12])
    assert entries[1].data is None
    np.testing.assert_array_equal(entries[1].ids, [5])
    step = next(store.read_log("shard-a", (0, 0)))
    np.testing.assert_array_equal(step.data, [1, -1, 3, 4])
    assert store.trim_log("shard-a", entries[0].id) == 1
    assert store.log_length("shard-a") == 2
    appender.close()


def test_every_key_has_a_ttl(store):
    durability = Durability(store, "shard-a", "log", snapshot_every=2, heartbeat_s=0.05)
    pool = durability.wrap(GamePool(CONFIG, 8))
    ids = pool.create(6, key_hash=7)
    for _ in range(5):
        pool.step(ids, np.full((6, CONFIG.players), -1))
    pool.release(ids[:2])
    pool.flush()
    time.sleep(0.15)  # a heartbeat
    client = store.redis
    keys = list(client.scan_iter(match="gamefleet:fleet-1:*"))
    kinds = {key.decode().split(":")[2] for key in keys}
    assert kinds == {"snap", "log", "keys", "owners", "shards", "heartbeats", "holder", "generation"}
    for key in keys:
        assert 0 < client.ttl(key) <= 300, key
    durability.close()


def test_registry_lists_live_shards_and_forgets_silent_ones(store):
    store.heartbeat("10.0.0.1:50051", load=12, capacity=100)
    store.heartbeat("10.0.0.2:50051", load=3, capacity=100, state="DRAINING")
    shards = store.list_shards(alive_within_s=5)
    assert [(s.address, s.load, s.capacity, s.state) for s in shards] == [
        ("10.0.0.1:50051", 12, 100, "SERVING"),
        ("10.0.0.2:50051", 3, 100, "DRAINING"),
    ]
    time.sleep(0.3)
    store.heartbeat("10.0.0.1:50051", load=13, capacity=100, dead_after_s=0.2)
    assert [s.address for s in store.list_shards(alive_within_s=0.2)] == ["10.0.0.1:50051"]
    assert [s.address for s in store.list_shards(alive_within_s=60)] == ["10.0.0.1:50051"]  # expired
    store.remove_shard("10.0.0.1:50051")
    assert store.list_shards(alive_within_s=60) == []


def test_a_shard_heartbeats_its_load_until_it_closes(store):
    durability = Durability(store, "10.0.0.3:50051", "off", heartbeat_s=0.05, capacity=64)
    pool = durability.wrap(GamePool(CONFIG, 8))
    pool.create(5)
    time.sleep(0.2)
    [shard] = store.list_shards(alive_within_s=5)
    assert (shard.address, shard.load, shard.capacity) == ("10.0.0.3:50051", 5, 64)
    durability.close()
    assert store.list_shards(alive_within_s=5) == []


def test_a_client_that_retries_commands_is_refused(redis_server):
    with pytest.raises(ValueError, match="retry"):
        FleetStore(redis.Redis(port=redis_server.port), "fleet-1", ttl_s=60)  # redis-py retries by default
    quiet = redis.Redis(port=redis_server.port, retry=Retry(NoBackoff(), 0))
    FleetStore(quiet, "fleet-1", ttl_s=60).heartbeat("x", 0, 0)
    with pytest.raises(ValueError, match="fleet"):
        FleetStore(redis_server.url, "a:b", ttl_s=60)
