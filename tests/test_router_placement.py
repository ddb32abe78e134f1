"""The router places new games only on shards that take them (ready: not warming up or draining),
by re-keying a placement key whose owner does not; every member stays on the ring."""

from __future__ import annotations

import pytest

from gameserver.router import fanout
from gameserver.sharding import HashRing
from gameserver.wire.errors import InvalidArgument, Unavailable
from gameserver.wire.generated import batch_pb2 as pb

RING = HashRing(["a:1", "b:1", "c:1"])


def create(key: str = "") -> bytes:
    return pb.CreateBatchGamesRequest(num_games=4, placement_key=key).SerializeToString()


def placed(raw: bytes, placeable: frozenset[str] | None) -> tuple[str, str]:
    (part,) = fanout.plan("CreateBatchGames", raw, RING, 1024, placeable).parts
    return part.shard, pb.CreateBatchGamesRequest.FromString(part.request).placement_key


@pytest.mark.parametrize("key", ["trainer-7", "k", "batch/42"])
def test_a_key_whose_owner_is_ready_keeps_its_shard_and_key(key: str) -> None:
    owner = RING.shard_of_key(key)
    assert placed(create(key), frozenset({owner})) == (owner, key)
    assert placed(create(key), None) == (owner, key)  # None: every shard takes games


@pytest.mark.parametrize("key", ["trainer-7", "k", "batch/42"])
def test_a_key_whose_owner_is_not_ready_moves_to_a_variant_a_ready_shard_owns(key: str) -> None:
    owner = RING.shard_of_key(key)
    ready = frozenset(RING.shards) - {owner}
    shard, new_key = placed(create(key), ready)
    assert shard in ready and new_key.startswith(f"{key}#") and RING.shard_of_key(new_key) == shard
    assert placed(create(key), ready) == (shard, new_key)  # deterministic: the same key, the same place


def test_keyless_creates_land_on_ready_shards_only() -> None:
    ready = frozenset({"b:1"})
    assert {placed(create(), ready)[0] for _ in range(50)} == {"b:1"}


def test_no_ready_shard_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="no shard takes new games"):
        placed(create("k"), frozenset())


def test_an_oversized_placement_key_is_refused_at_the_router() -> None:
    with pytest.raises(InvalidArgument, match="placement_key: 300 bytes"):
        placed(create("k" * 300), None)
