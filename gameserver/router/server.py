"""A router process: the fleet service in a grpc.aio server, with health checking (and reflection on
request: `--reflection`, which `gamefleet up` turns on).

Health is SERVING once at least one shard of the topology is ready (NOT_SERVING while none
is), so a load balancer sends trainers only to routers that can place games. Over a static list
(`--shards`), which nothing updates when a shard dies, it also needs every listed shard to answer:
a member that does not (down, a wrong address) keeps its share of the ring, and calls for its
games would fail, so the router says NOT_SERVING and logs which shards it cannot reach. The ring is
rebuilt whenever the topology source reports a new membership; a request always uses the ring
it started with. Every member stays on the ring (calls for its games still reach it), but only
the ready ones take new games: each refresh asks every member's readiness (gRPC health), so a
shard still warming up or draining (a DNS topology lists it all the same) gets no new games.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..sharding import DEFAULT_VIRTUAL_NODES, HashRing
from ..telemetry import collectors, metrics
from ..telemetry.grpc_server import interceptors
from ..wire.admission import RequestLimits
from ..wire.limits import MAX_GAMES_PER_CALL, MAX_MESSAGE_BYTES, channel_options
from ..wire.reflection import enable_reflection
from ..wire.security import PLAINTEXT, Credentials, health_port
from ..wire.services import LIVENESS_SERVICE, SERVICE
from .channels import ShardChannels
from .servicer import RouterServicer
from .topology import TopologySource, watch

log = logging.getLogger(__name__)
READY_PREFIX = "gamefleet router serving on "
SHARD_TIMEOUT_S = 30.0
REFRESH_S = 5.0
READINESS_TIMEOUT_S = 2.0  # a shard slower than this to answer its health check takes no new games


class RouterServer:
    """A router on host:port (port 0 picks a free one; `address` tells which after `start`)."""

    def __init__(
        self,
        source: TopologySource,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shard_timeout_s: float = SHARD_TIMEOUT_S,
        refresh_s: float = REFRESH_S,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        max_games_per_call: int = MAX_GAMES_PER_CALL,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        requests: RequestLimits | None = None,
        reflection: bool = False,
        credentials: Credentials = PLAINTEXT,
        health_port: int | None = None,
    ) -> None:
        self.health_port = health_port  # a plaintext port serving only health (probes where TLS is on)
        self._health_server: aio.Server | None = None
        self.source = source
        self.credentials = credentials  # TLS and the fleet's token: its port and its shard channels
        self.reflection = reflection  # off unless asked: it maps the API for anyone who reaches the port
        self.host, self.port = host, port
        self.refresh_s = refresh_s
        self.virtual_nodes = virtual_nodes
        self.max_message_bytes = max_message_bytes
        # memory (wire/admission.py): the receive limit (gRPC core) and the cap on large calls
        requests = requests or RequestLimits()
        self.max_request_bytes = requests.receive_bytes(max_games_per_call, 0, max_message_bytes)
        self.large_calls = requests.gate()
        collectors.watch_large_calls(self.large_calls)
        self.channels = ShardChannels(max_message_bytes, credentials=credentials)
        collectors.watch_channels(self.channels)
        self.servicer = RouterServicer(
            self.channels,
            shard_timeout_s=shard_timeout_s,
            max_games_per_call=max_games_per_call,
            fleet_token=credentials.token,
        )
        self.health = health.aio.HealthServicer()
        self._server: aio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        self._first_topology = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._missing: list[str] = []  # static members that did not answer the last readiness check
        self.servicer.refresh = self.refresh

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, topology_wait_s: float = 10.0) -> None:
        """Serve; the first topology poll is awaited (up to `topology_wait_s`) so a router started
        over live shards reports SERVING at once."""
        server = aio.server(
            options=channel_options(self.max_message_bytes, self.max_request_bytes),
            interceptors=[*interceptors(), *self.credentials.server_interceptors(seat_play=True)],
        )
        self.port = self.credentials.add_port(server, self.address)
        server.add_generic_rpc_handlers((self.large_calls.wrap(self.servicer.handler()),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.reflection:
            names = (SERVICE.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
            enable_reflection(server, names)
        await self._set_health(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._watch = asyncio.create_task(watch(self.source, self.refresh_s, self._apply))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_topology.wait(), topology_wait_s)
        self._probe = asyncio.create_task(self._probe_readiness())
        await server.start()
        self._server = server
        if self.health_port is not None:
            address = f"{self.host}:{self.health_port}"
            self._health_server, self.health_port = await health_port(self.health, address)

    async def refresh(self) -> None:
        """Poll the topology now (a call found the ring stale); calls failing together share one poll."""
        if self._refreshing.locked():
            async with self._refreshing:
                return
        async with self._refreshing:
            try:
                members = sorted(set(await self.source.members()))
            except Exception as error:
                log.warning("topology refresh from %s failed: %s", self.source.describe(), error)
                return
            ring = self.servicer.ring
            if members and (ring is None or list(ring.shards) != members):
                await self._apply(members)

    async def _apply(self, shards: list[str]) -> None:
        self.servicer.ring = HashRing(shards, self.virtual_nodes) if shards else None
        self.channels.keep(shards)
        await self._check_readiness()
        self._first_topology.set()

    async def _check_readiness(self) -> None:
        """Which members take new games now; SERVING while any does."""
        ring = self.servicer.ring
        shards = list(ring.shards) if ring is not None else []
        timeout = min(self.refresh_s, READINESS_TIMEOUT_S)
        ready = await asyncio.gather(*(self.channels.ready(shard, timeout) for shard in shards))
        placeable = frozenset(shard for shard, ok in zip(shards, ready, strict=True) if ok)
        if placeable != self.servicer.placeable:
            log.info("shards taking new games: %d of %d %s", len(placeable), len(shards), sorted(placeable))
        self.servicer.placeable = placeable
        missing = []  # members of a static list that do not answer: their games cannot be served
        if getattr(self.source, "fixed", False):
            missing = [shard for shard, ok in zip(shards, ready, strict=True) if ok is None]
        if missing and missing != self._missing:
            log.warning("NOT_SERVING: shards of the static list do not answer: %s", missing)
        self._missing = missing
        await self._set_health(bool(placeable) and not missing)

    async def _probe_readiness(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self._check_readiness()
            except Exception:  # a bug here must not end the probing
                log.exception("readiness probe failed")

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE.full_name):
            await self.health.set(service, status)
        metrics.serving("router", serving)

    async def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within `grace`, close the channels."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        metrics.serving("router", False)
        await self._server.stop(grace)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(None)
        for task in (self._watch, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.channels.close()

    async def serve_until_signal(self, grace: float = 5.0) -> None:
        """Start, print the address, run until SIGINT/SIGTERM, then stop gracefully."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ring = self.servicer.ring
        shards = f"{len(ring.shards)} shards" if ring else "no shards yet"
        print(f"{READY_PREFIX}{self.address} over {shards} ({self.source.describe()})", flush=True)
        await stop.wait()
        await self.stop(grace)
