"""The router's connections to the shards: per shard, one channel on each of gRPC's stacks.

A call goes out on grpc.aio, awaited on the router's event loop, unless its reply is
expected to be large: then on the sync stack, on a worker thread of the shard's own pool.
Measured here (2 CPUs, one shard, one call at a time, medians of 3 runs): this choice against
every call on the sync stack: a one-game step through the router 1.22 against 1.28 ms, 4096
games without observations 1.98 against 2.26 ms, with deltas 4.26 against 4.45 ms, 1024 games
with full views (2.4 MB) 3.92 against 4.14 ms; router CPU per one-game call 0.6 against 0.8
ms. For a 10 MB reply (4096 full views) the sync stack is the cheaper (21 against 25 ms in one
run), hence the threshold. The expected size is the last reply size per game of the same method
and kind (with observation planes or without) times the call's games: the first call of a
kind goes on asyncio. A pool per shard keeps the shards apart: sync calls stuck on a slow
shard (until their deadline) hold that shard's threads only.
Methods take and return raw bytes (no serializers): the router forwards them untouched.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..telemetry.grpc_client import ClientCall
from ..wire.limits import channel_options
from ..wire.security import PLAINTEXT, Credentials
from ..wire.services import SERVICE

THREADS_PER_SHARD = 32  # concurrent sync calls to one shard; more wait for a thread
SYNC_FROM_BYTES = 4 << 20  # replies expected this large go on the sync stack


class _Link:
    """One shard: its channels, its threads, its methods on either stack."""

    def __init__(
        self, shard: str, options: list[tuple[str, int]], threads: int, credentials: Credentials
    ) -> None:
        self.channel = credentials.channel(shard, options)
        self.aio_channel = credentials.aio_channel(shard, options)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"shard {shard}")
        paths = {m.name: f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods if not m.client_streaming}
        self.methods = {name: self.channel.unary_unary(path) for name, path in paths.items()}
        self.aio_methods = {name: self.aio_channel.unary_unary(path) for name, path in paths.items()}

    async def close(self) -> None:
        """After the calls in flight end (each has a deadline)."""
        await asyncio.to_thread(self.executor.shutdown, wait=True)
        self.channel.close()
        await self.aio_channel.close(grace=None)


class ShardChannels:
    """Links by shard address, opened when a shard joins and closed when it leaves."""

    def __init__(
        self,
        max_message_bytes: int,
        threads_per_shard: int = THREADS_PER_SHARD,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        self.credentials = credentials  # TLS to the shards, and the fleet's token for trusted calls
        self._options = channel_options(max_message_bytes)
        self._threads = threads_per_shard
        self._links: dict[str, _Link] = {}
        self._closing: set[asyncio.Task] = set()
        self._reply_bytes_per_game: dict[tuple[str, bool], float] = {}  # by (method, planes)

    async def ready(self, shard: str, timeout: float) -> bool | None:
        """Whether the shard answers its readiness check (gRPC health, the default service)
        SERVING (not warming up, not draining): True; answers otherwise: False; does not answer
        within `timeout` (down, unreachable): None."""
        stub = health_pb2_grpc.HealthStub(self._link(shard).aio_channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return None
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def call(
        self,
        shard: str,
        method: str,
        request: bytes,
        timeout: float,
        *,
        games: int = 1,
        planes: bool = False,
        token: bool = True,
    ) -> bytes:
        """`method` of the BatchGameService on `shard`; raises grpc.RpcError as the shard's status.
        `games` and `planes` (the reply carries observation planes) pick the stack (see above);
        `token`: the call carries the fleet's token (a caller without it: seat play only)."""
        link = self._link(shard)
        with ClientCall(shard, method) as metadata:
            if token:
                metadata = self.credentials.with_metadata(metadata)
            if self.stack(method, games, planes) == "aio":
                reply = await link.aio_methods[method](request, timeout=timeout, metadata=metadata)
            else:
                call = functools.partial(link.methods[method], request, timeout=timeout, metadata=metadata)
                reply = await asyncio.get_running_loop().run_in_executor(link.executor, call)
        self._reply_bytes_per_game[method, planes] = len(reply) / max(games, 1)
        return reply

    def stack(self, method: str, games: int, planes: bool) -> str:
        """The stack for a call: sync when the last reply of this kind, per game, times `games`
        reaches SYNC_FROM_BYTES; else aio (also for a kind not seen yet)."""
        expected = self._reply_bytes_per_game.get((method, planes), 0.0) * games
        return "sync" if expected >= SYNC_FROM_BYTES else "aio"

    @property
    def links(self) -> int:
        """Shard connections open now (telemetry: the router's connection pool)."""
        return len(self._links)

    def _link(self, shard: str) -> _Link:
        link = self._links.get(shard)
        if link is None:
            link = self._links[shard] = _Link(shard, self._options, self._threads, self.credentials)
        return link

    def keep(self, shards: Iterable[str]) -> None:
        """Links to these shards (opened on first use); close the others once their calls end."""
        wanted = set(shards)
        for shard in set(self._links) - wanted:
            self._retire(shard)

    def _retire(self, shard: str) -> None:
        task = asyncio.create_task(self._links.pop(shard).close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for shard in list(self._links):
            self._retire(shard)
        await asyncio.gather(*self._closing)
