"""Shard-to-shard calls that move games: HandOver and Adopt (an internal service, not the API).

The games themselves travel through Redis (records + log, durability.py); these calls only
say when. Both take JSON (a few key hashes and a shard name: control, not the hot path)
and answer JSON, on the shard's own port:

  HandOver {"key_hashes": [...]}            the holder records those keys' games, drops them,
                                            and answers {"ids": n}; the caller recovers them
  Adopt    {"owner": s, "key_hashes": [...]} the callee recovers owner's games of those keys
                                            from Redis and answers {"ids": n}

Bad input is INVALID_ARGUMENT and changes nothing; a shard that cannot take games (draining,
durability off) answers FAILED_PRECONDITION / UNAVAILABLE.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from grpc import aio

from .errors import InvalidArgument
from .shard import _abort

SERVICE = "gamefleet.internal.v1.ShardMigration"
TIMEOUT_S = 60.0  # recording and recovering thousands of games takes well under this


def _key_hashes(request: dict) -> np.ndarray:
    hashes = request.get("key_hashes")
    if not isinstance(hashes, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and 0 <= h < 1 << 32 for h in hashes
    ):
        raise InvalidArgument("key_hashes must be a list of 32-bit unsigned integers")
    return np.array(hashes, np.uint64)


def _parse(raw: bytes) -> dict:
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"request is not JSON: {error}") from None
    if not isinstance(request, dict):
        raise InvalidArgument("request must be a JSON object")
    return request


HandOver = Callable[[np.ndarray], Awaitable[int]]
Adopt = Callable[[str, np.ndarray], Awaitable[int]]


def handler(hand_over: HandOver, adopt: Adopt) -> grpc.GenericRpcHandler:
    """The service over the member's two behaviours (each returns how many games moved)."""

    async def hand_over_call(raw: bytes, context: aio.ServicerContext) -> bytes:
        try:
            moved = await hand_over(_key_hashes(_parse(raw)))
            return json.dumps({"ids": moved}).encode()
        except Exception as error:
            await _abort(context, error)

    async def adopt_call(raw: bytes, context: aio.ServicerContext) -> bytes:
        try:
            request = _parse(raw)
            owner = request.get("owner")
            if not isinstance(owner, str) or not owner:
                raise InvalidArgument("owner must be a shard name")
            moved = await adopt(owner, _key_hashes(request))
            return json.dumps({"ids": moved}).encode()
        except Exception as error:
            await _abort(context, error)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "HandOver": grpc.unary_unary_rpc_method_handler(hand_over_call),
            "Adopt": grpc.unary_unary_rpc_method_handler(adopt_call),
        },
    )


async def call(shard: str, method: str, request: dict, timeout: float = TIMEOUT_S) -> int:
    """`method` on `shard`; how many games moved. Raises grpc.RpcError as the shard answered."""
    async with aio.insecure_channel(shard) as channel:
        reply = await channel.unary_unary(f"/{SERVICE}/{method}")(
            json.dumps(request).encode(), timeout=timeout
        )
    return int(json.loads(reply)["ids"])
