"""The router's connections to the shards: one grpc.aio channel per shard, shared by every call.

A channel multiplexes concurrent calls over one HTTP/2 connection, so a call waiting on a
slow shard holds nothing that calls to other shards need. Methods are called with raw
bytes both ways (no serializers): the router forwards requests and replies untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from grpc import aio

from .limits import channel_options
from .shard import SERVICE


class ShardChannels:
    """Channels by shard address, opened when a shard joins and closed (gracefully) when it leaves."""

    def __init__(self, max_message_bytes: int, close_grace_s: float = 30.0) -> None:
        self._options = channel_options(max_message_bytes)
        self._close_grace_s = close_grace_s
        self._channels: dict[str, aio.Channel] = {}
        self._methods: dict[tuple[str, str], aio.UnaryUnaryMultiCallable] = {}
        self._closing: set[asyncio.Task] = set()

    def method(self, shard: str, name: str) -> aio.UnaryUnaryMultiCallable:
        """`name` of the BatchGameService on `shard`, bytes in and bytes out."""
        call = self._methods.get((shard, name))
        if call is None:
            call = self._channel(shard).unary_unary(f"/{SERVICE.full_name}/{name}")
            self._methods[shard, name] = call
        return call

    def _channel(self, shard: str) -> aio.Channel:
        channel = self._channels.get(shard)
        if channel is None:
            channel = self._channels[shard] = aio.insecure_channel(shard, options=self._options)
            channel.get_state(try_to_connect=True)  # connect now, not on the first call
        return channel

    def keep(self, shards: Iterable[str]) -> None:
        """Open channels to these shards, close the others once their calls finish (or the grace ends)."""
        wanted = set(shards)
        for shard in wanted:
            self._channel(shard)
        for shard in set(self._channels) - wanted:
            self._retire(shard)

    def _retire(self, shard: str) -> None:
        channel = self._channels.pop(shard)
        self._methods = {key: call for key, call in self._methods.items() if key[0] != shard}
        task = asyncio.create_task(channel.close(self._close_grace_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for shard in list(self._channels):
            self._retire(shard)
        await asyncio.gather(*self._closing)
