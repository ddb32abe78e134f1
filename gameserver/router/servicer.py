"""BatchGameService as the fleet service: every call routed to the shards holding its games.

The router answers the shard's API to clients, so a trainer points the same FleetClient at
it. Each request is planned by fanout.py: a request whose games live on one shard is
forwarded as its own bytes and its reply returned as the shard's bytes (nothing parsed
beyond the ids, nothing re-encoded); one that spans shards is split, sent to the shards
concurrently and merged in request order.

A shard's refusal reaches the client with the shard's status and details, and the shard's
address. Every call to a shard carries a deadline (`shard_timeout_s`, shortened by the
client's own): a slow or stopped shard delays only the calls that touch it, which then end
DEADLINE_EXCEEDED naming it, while calls for other shards go on over their own channels.

A stale ring: when a call served by one shard comes back NOT_FOUND or UNAVAILABLE (the games
moved: failover, drain, a lazy move; or the shard is gone), the router polls its topology at
once and, if the ring changed, sends the call once more along the new ring. Both answers
mean the shard changed nothing, so the retry cannot apply a call twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio

from ..sharding import HashRing
from ..wire.errors import NotFound, Unavailable, abort
from ..wire.generated import batch_pb2 as pb
from ..wire.messages import parse_request
from ..wire.security import presents_token
from ..wire.services import SERVICE
from . import fanout
from .channels import ShardChannels

log = logging.getLogger(__name__)
_MERGE_OFF_LOOP_BYTES = 1 << 20  # bigger merges run on a worker thread: the loop keeps serving


class RouterServicer:
    """The router's BatchGameService: bytes in, bytes out; `ring` is swapped when membership changes."""

    def __init__(
        self,
        channels: ShardChannels,
        *,
        shard_timeout_s: float,
        max_games_per_call: int,
        fleet_token: str | None = None,
    ) -> None:
        # With a fleet token, callers without it reach only the seat methods (the server's
        # TokenCheck), and their calls go to the shards without it: the shards then allow them
        # seat play only, as if they had called the shards themselves.
        self.fleet_token = fleet_token
        self.channels = channels
        self.shard_timeout_s = shard_timeout_s
        self.max_games_per_call = max_games_per_call
        self.ring: HashRing | None = None
        self.placeable: frozenset[str] | None = None  # shards that take new games (None: all)
        self.refresh: Callable[[], Awaitable[None]] | None = None  # polls the topology now

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method of the proto's service, with no (de)serializers."""
        handlers = {}
        for method in SERVICE.methods:
            if method.client_streaming:
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(self.StreamSteps)
            elif method.name == "GetTopology":
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(self.GetTopology)
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(self._unary(method.name))
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    def _unary(self, method: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        async def behaviour(raw: bytes, context: aio.ServicerContext) -> bytes:
            try:
                return await self.route(method, raw, context.time_remaining(), self._trusted(context))
            except Exception as error:
                await abort(context, error, log)

        return behaviour

    async def StreamSteps(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Each request routed like SubmitBatchActions, a reply each, in order; a refusal ends the stream."""
        try:
            trusted = self._trusted(context)
            async for raw in requests:
                yield await self.route("SubmitBatchActions", raw, context.time_remaining(), trusted)
        except Exception as error:
            await abort(context, error, log)

    async def GetTopology(self, raw: bytes, context: aio.ServicerContext) -> bytes:
        """The router's shards and ring, so a client can route to the shards directly."""
        try:
            parse_request(pb.GetTopologyRequest, raw)
            ring = self._ring()
            return pb.Topology(shards=ring.shards, virtual_nodes=ring.virtual_nodes).SerializeToString()
        except Exception as error:
            await abort(context, error, log)

    def _trusted(self, context: aio.ServicerContext) -> bool:
        """The caller holds the fleet's token, or the fleet has none."""
        return self.fleet_token is None or presents_token(context.invocation_metadata(), self.fleet_token)

    async def route(
        self, method: str, raw: bytes, time_left: float | None = None, trusted: bool = True
    ) -> bytes:
        """Serve one request of `method` on the shards; the reply's bytes. `trusted`: the calls to
        the shards carry the fleet's token."""
        ring = self._ring()
        plan = fanout.plan(method, raw, ring, self.max_games_per_call, self.placeable)
        timeout = self.shard_timeout_s if time_left is None else min(self.shard_timeout_s, time_left)
        deadline = time.monotonic() + timeout  # the retry through a fresh ring gets what is left
        if len(plan.parts) == 1:
            try:
                return await self._call(method, plan.parts[0], timeout, trusted)
            except (NotFound, Unavailable) as error:
                if method == "CreateBatchGames" and isinstance(error, Unavailable):
                    self._stop_placing_on(plan.parts[0].shard, ring)  # then placed again, elsewhere
                else:
                    if self.refresh is None:
                        raise
                    await self.refresh()
                    if self._ring().shards == ring.shards:
                        raise
            plan = fanout.plan(method, raw, self._ring(), self.max_games_per_call, self.placeable)
            timeout = max(deadline - time.monotonic(), 0.001)
            if len(plan.parts) == 1:
                return await self._call(method, plan.parts[0], timeout, trusted)
        outcomes = await asyncio.gather(
            *(self._call(method, part, timeout, trusted) for part in plan.parts), return_exceptions=True
        )
        error = fanout.first_failure(plan.parts, outcomes)
        if error is not None:
            raise error
        if sum(len(reply) for reply in outcomes) < _MERGE_OFF_LOOP_BYTES:
            return plan.merge(outcomes)
        return await asyncio.to_thread(plan.merge, outcomes)

    def _stop_placing_on(self, shard: str, ring: HashRing) -> None:
        """A shard refused a create (draining, gone; it created nothing): no new games go to it
        until the next readiness check says it takes them again."""
        placeable = self.placeable if self.placeable is not None else frozenset(ring.shards)
        self.placeable = placeable - {shard}

    async def _call(self, method: str, part: fanout.Part, timeout: float, trusted: bool = True) -> bytes:
        try:
            return await self.channels.call(
                part.shard, method, part.request, timeout, games=part.games, planes=part.planes, token=trusted
            )
        except grpc.RpcError as error:
            raise fanout.shard_error(part.shard, error.code(), error.details() or "", timeout) from None

    def _ring(self) -> HashRing:
        if self.ring is None:
            raise Unavailable("the router knows no shards yet (its topology source lists none)")
        return self.ring
