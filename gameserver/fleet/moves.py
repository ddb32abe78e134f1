"""Shard-to-shard calls that move games: the ShardMoves service of proto/gamefleet/v1/moves.proto.

The games themselves travel through Redis (records + log, durability.py); these calls only
say when, on the shard's own port:

  HandOver(key_hashes)         the holder records those keys' games, drops them and answers how
                               many; the caller then recovers them from their records
  Adopt(owner, key_hashes)     the callee recovers owner's games of those keys from Redis

Bad input is INVALID_ARGUMENT and changes nothing; a shard that cannot take games (draining,
durability off) answers FAILED_PRECONDITION / UNAVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from grpc import aio

from ..wire.errors import InvalidArgument, abort
from ..wire.generated import moves_pb2 as mpb
from ..wire.messages import parse_request
from ..wire.security import PLAINTEXT, Credentials
from ..wire.services import MOVES_SERVICE

TIMEOUT_S = 60.0  # recording and recovering thousands of games takes well under this
log = logging.getLogger(__name__)

HandOver = Callable[[np.ndarray], Awaitable[int]]
Adopt = Callable[[str, np.ndarray], Awaitable[int]]
_credentials = PLAINTEXT  # the shard's own: TLS and the fleet token for the shards it calls


def use(credentials: Credentials) -> None:
    """The credentials this process's calls to other shards present (the shard server sets its own)."""
    global _credentials
    _credentials = credentials


def handler(hand_over: HandOver, adopt: Adopt) -> grpc.GenericRpcHandler:
    """The service over the member's two behaviours (each returns how many games moved)."""

    async def hand_over_call(raw: bytes, context: aio.ServicerContext) -> bytes:
        try:
            request = parse_request(mpb.HandOverRequest, raw)
            moved = await hand_over(np.array(request.key_hashes, np.uint64))
            return mpb.MovedGames(games=moved).SerializeToString()
        except Exception as error:
            await abort(context, error, log)

    async def adopt_call(raw: bytes, context: aio.ServicerContext) -> bytes:
        try:
            request = parse_request(mpb.AdoptRequest, raw)
            if not request.owner:
                raise InvalidArgument("owner must be a shard name")
            moved = await adopt(request.owner, np.array(request.key_hashes, np.uint64))
            return mpb.MovedGames(games=moved).SerializeToString()
        except Exception as error:
            await abort(context, error, log)

    return grpc.method_handlers_generic_handler(
        MOVES_SERVICE.full_name,
        {
            "HandOver": grpc.unary_unary_rpc_method_handler(hand_over_call),
            "Adopt": grpc.unary_unary_rpc_method_handler(adopt_call),
        },
    )


async def hand_over(shard: str, key_hashes: list[int], timeout: float = TIMEOUT_S) -> int:
    """Ask `shard` to record and drop its games of these keys; how many it dropped. Raises
    grpc.RpcError as the shard answered."""
    return await _call(shard, "HandOver", mpb.HandOverRequest(key_hashes=key_hashes), timeout)


async def adopt(shard: str, owner: str, key_hashes: list[int], timeout: float = TIMEOUT_S) -> int:
    """Ask `shard` to recover `owner`'s games of these keys from Redis; how many it took."""
    return await _call(shard, "Adopt", mpb.AdoptRequest(owner=owner, key_hashes=key_hashes), timeout)


async def _call(shard: str, method: str, request: object, timeout: float) -> int:
    async with _credentials.aio_channel(shard) as channel:
        reply = await channel.unary_unary(
            f"/{MOVES_SERVICE.full_name}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=mpb.MovedGames.FromString,
        )(request, timeout=timeout, metadata=_credentials.metadata or None)
    return int(reply.games)
