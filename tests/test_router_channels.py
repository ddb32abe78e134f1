"""The router's shard links: a call goes on grpc.aio unless its reply is expected to be large,
then on the sync stack; either way the reply is the shard's bytes."""

from __future__ import annotations

import asyncio

import numpy as np

from gameserver.client import FleetClient
from gameserver.engine import GameConfig
from gameserver.router import channels
from gameserver.router.channels import ShardChannels
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.limits import MAX_MESSAGE_BYTES
from gameserver.wire.messages import write_tensor

GAMES = 64  # full 20x20 views of 2 players: ~150 KB, over the threshold set below


def _states_request(ids: np.ndarray) -> bytes:
    request = pb.GetBatchStatesRequest()
    write_tensor(request.game_ids, ids)
    return request.SerializeToString()


def test_large_replies_go_on_the_sync_stack_once_one_was_seen(shard, monkeypatch):
    monkeypatch.setattr(channels, "SYNC_FROM_BYTES", 64 << 10)
    with FleetClient(shard.address, timeout=30) as client:
        ids = client.create(GAMES, GameConfig(), seeds=np.arange(GAMES)).ids
    request = _states_request(ids)
    sync_calls = []

    async def scenario() -> tuple[bytes, bytes]:
        links = ShardChannels(MAX_MESSAGE_BYTES)
        try:
            link = links._link(shard.address)
            blocking = link.methods["GetBatchStates"]
            link.methods["GetBatchStates"] = lambda *a, **k: sync_calls.append(1) or blocking(*a, **k)
            assert links.stack("GetBatchStates", GAMES, planes=True) == "aio"  # nothing seen yet
            first = await links.call(shard.address, "GetBatchStates", request, 10, games=GAMES, planes=True)
            assert sync_calls == []
            assert links.stack("GetBatchStates", GAMES, planes=True) == "sync"
            assert links.stack("GetBatchStates", 8, planes=True) == "aio"  # a smaller reply of that kind
            assert links.stack("GetBatchStates", GAMES, planes=False) == "aio"  # another kind
            assert links.stack("SubmitBatchActions", GAMES, planes=True) == "aio"  # another method
            second = await links.call(shard.address, "GetBatchStates", request, 10, games=GAMES, planes=True)
            assert sync_calls == [1]
            return first, second
        finally:
            await links.close()

    first, second = asyncio.run(scenario())
    assert first == second and len(first) > channels.SYNC_FROM_BYTES  # the shard's bytes either way
    with FleetClient(shard.address, timeout=30) as client:
        client.close(ids)
