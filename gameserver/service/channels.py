"""The router's connections to the shards: one channel per shard, shared by every call.

Calls go out on gRPC's sync stack, each on a worker thread of its shard's own pool, and
the router's event loop awaits them. Two reasons:
- Receiving a large reply costs about half the CPU on the sync stack that it costs on
  grpc.aio (a 10 MB observation batch: ~11 ms against ~22 ms per call here), and the
  router's pass-through path is exactly receiving and re-sending such replies.
- A pool per shard isolates the shards: calls stuck on a slow shard (until their
  deadline) hold that shard's threads only, never those that calls to other shards need.
Methods take and return raw bytes (no serializers): the router forwards them untouched.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc

from ..telemetry.grpc_client import ClientCall
from .limits import channel_options
from .shard import SERVICE

THREADS_PER_SHARD = 32  # concurrent calls to one shard; more wait for a thread


class _Link:
    """One shard: its channel, its threads, its methods."""

    def __init__(self, shard: str, options: list[tuple[str, int]], threads: int) -> None:
        self.channel = grpc.insecure_channel(shard, options=options)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"shard {shard}")
        self.methods = {
            method.name: self.channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")
            for method in SERVICE.methods
            if not method.client_streaming
        }

    def close(self) -> None:
        """After the calls in flight end (each has a deadline)."""
        self.executor.shutdown(wait=True)
        self.channel.close()


class ShardChannels:
    """Links by shard address, opened when a shard joins and closed when it leaves."""

    def __init__(self, max_message_bytes: int, threads_per_shard: int = THREADS_PER_SHARD) -> None:
        self._options = channel_options(max_message_bytes)
        self._threads = threads_per_shard
        self._links: dict[str, _Link] = {}
        self._closing: set[asyncio.Task] = set()

    async def call(self, shard: str, method: str, request: bytes, timeout: float) -> bytes:
        """`method` of the BatchGameService on `shard`; raises grpc.RpcError as the shard's status."""
        link = self._link(shard)
        with ClientCall(shard, method) as metadata:
            call = functools.partial(link.methods[method], request, timeout=timeout, metadata=metadata)
            return await asyncio.get_running_loop().run_in_executor(link.executor, call)

    @property
    def links(self) -> int:
        """Shard connections open now (telemetry: the router's connection pool)."""
        return len(self._links)

    def _link(self, shard: str) -> _Link:
        link = self._links.get(shard)
        if link is None:
            link = self._links[shard] = _Link(shard, self._options, self._threads)
        return link

    def keep(self, shards: Iterable[str]) -> None:
        """Links to these shards (opened on first use); close the others once their calls end."""
        wanted = set(shards)
        for shard in set(self._links) - wanted:
            self._retire(shard)

    def _retire(self, shard: str) -> None:
        task = asyncio.create_task(asyncio.to_thread(self._links.pop(shard).close))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for shard in list(self._links):
            self._retire(shard)
        await asyncio.gather(*self._closing)
