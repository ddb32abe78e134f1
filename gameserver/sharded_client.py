"""A client that routes to the shards itself: the router's ring, without the router's hop.

    with ShardedClient("fleet:50050") as fleet:      # asks the router for its topology once
        created = fleet.create(4096, config)          # to the shard owning the placement key
        result = fleet.step(created.ids, actions)     # to that shard (split, merged if ids span shards)

It is a FleetClient (same methods, same replies) whose calls are planned by the router's
own fanout module, so an id goes to the same shard either way, and a request spanning
shards is split and merged exactly as the router does it (sub-calls sent concurrently).
Streams (`stream()`), health and the topology itself still go through the router.

When the fleet's membership changes, `refresh()` fetches the topology again; a call whose
games all live on one shard and that shard answers NOT_FOUND or UNAVAILABLE (nothing
applied, so a retry is safe: the games moved, or the shard is gone) refreshes and, if the
ring changed, retries once by itself.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from .client import (
    PLAINTEXT,
    Credentials,
    FleetClient,
    GameFleetError,
    NotFound,
    SharedView,
    Topology,
    Unavailable,
    _reader,
)
from .router import fanout
from .wire.limits import MAX_GAMES_PER_CALL, channel_options
from .wire.services import SERVICE

FANOUT_THREADS = 8  # sub-calls of one call spanning shards in flight at once


class ShardedClient(FleetClient):
    """FleetClient of a whole fleet that sends each call straight to the shards holding its games."""

    def __init__(
        self,
        router_address: str,
        *,
        timeout: float | None = None,
        max_message_bytes: int | None = None,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        super().__init__(
            router_address, timeout=timeout, max_message_bytes=max_message_bytes, credentials=credentials
        )
        self._options = channel_options() if max_message_bytes is None else channel_options(max_message_bytes)
        self._shards: dict[str, grpc.Channel] = {}
        self._methods: dict[tuple[str, str], grpc.UnaryUnaryMultiCallable] = {}
        self._fanout = ThreadPoolExecutor(FANOUT_THREADS, thread_name_prefix="fanout")
        self.refresh()

    def refresh(self) -> Topology:
        """Fetch the router's topology; open channels to new shards, close those of departed ones."""
        topology = self.topology()
        self.ring = topology.ring()
        for shard in set(self._shards) - set(topology.shards):
            self._shards.pop(shard).close()
            self._methods = {key: call for key, call in self._methods.items() if key[0] != shard}
        for shard in set(topology.shards) - set(self._shards):
            self._shards[shard] = self.credentials.channel(shard, self._options)
        return topology

    def close_channel(self) -> None:
        for channel in self._shards.values():
            channel.close()
        self._shards.clear()
        self._fanout.shutdown()
        super().close_channel()

    def _call(self, name: str, request: Any, view: SharedView | None = None) -> Any:
        if name == "GetTopology":
            return super()._call(name, request)
        read = _reader(name, request, view)
        return read(self._route(name, request.SerializeToString(), retry=True))

    def _send(self, name: str, part: fanout.Part) -> bytes | GameFleetError:
        """The shard's reply, or its refusal as the fleet's error (returned: the caller picks which)."""
        try:
            return self._method(part.shard, name)(part.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            return fanout.shard_error(part.shard, error.code(), error.details() or "", self.timeout)

    def _method(self, shard: str, name: str) -> grpc.UnaryUnaryMultiCallable:
        """`name` on `shard`, bytes in and bytes out (a multicallable per shard and method, reused)."""
        call = self._methods.get((shard, name))
        if call is None:
            call = self._methods[shard, name] = self._shards[shard].unary_unary(
                f"/{SERVICE.full_name}/{name}"
            )
        return call

    def _route(self, name: str, raw: bytes, *, retry: bool) -> bytes:
        ring = self.ring
        plan = fanout.plan(name, raw, ring, MAX_GAMES_PER_CALL)
        send = functools.partial(self._send, name)
        # Blocking calls (on threads when several): grpc's futures take far more CPU to receive big replies.
        parts = plan.parts
        outcomes = [send(parts[0])] if len(parts) == 1 else list(self._fanout.map(send, parts))
        error = fanout.first_failure(plan.parts, outcomes)
        if error is None:
            return plan.merge(outcomes)
        if (
            retry
            and len(plan.parts) == 1
            and isinstance(error, NotFound | Unavailable)
            and self.refresh().shards != ring.shards
        ):
            return self._route(name, raw, retry=False)
        raise error
