"""Where the router learns its shards: a static list, the DNS of a headless Service, or Redis.

Every source answers the current member addresses; `watch` polls it and hands each new
membership (sorted, so every router builds the same ring from the same members) to the
router, which rebuilds its ring. A failed poll keeps the last membership: a DNS or Redis
hiccup must not empty a working fleet. So does an empty answer after a known membership: a
Redis that restarted without its data lists no shard until their next heartbeats, while they
serve on (a fleet of no shards serves nothing either way).

Ring members are names that survive a pod restart where the source allows: the Redis
registry holds each shard's `$GAMEFLEET_ADDRESS` (`<pod>.<service>:<port>`), and the DNS
source names each resolved address by its pod's stable DNS name (the reverse record a
StatefulSet pod behind a headless Service has) in the same form, falling back to the IP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..fleet.store import FleetStore

log = logging.getLogger(__name__)


class TopologySource(Protocol):
    def describe(self) -> str: ...

    async def members(self) -> list[str]:
        """The shard addresses now (any order, duplicates allowed)."""
        ...


def split_host_port(target: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {target!r}")
    return host.strip("[]"), int(port)


class StaticSource:
    """A fixed list (`--shards a,b,c`). Nothing takes a dead member off the ring, so a router
    over it is SERVING only while every member answers (see RouterServer)."""

    fixed = True  # the members stay on the ring whether they answer or not

    def __init__(self, shards: Sequence[str]) -> None:
        for shard in shards:
            split_host_port(shard)
        self.shards = list(shards)

    def describe(self) -> str:
        return f"static list of {len(self.shards)}"

    async def members(self) -> list[str]:
        return self.shards


class DnsSource:
    """The A/AAAA records of a name (a Kubernetes headless Service lists every ready shard pod)."""

    def __init__(
        self,
        target: str,
        *,
        resolve: Callable[..., list] = socket.getaddrinfo,
        reverse: Callable[[str], tuple[str, list[str], list[str]]] = socket.gethostbyaddr,
    ) -> None:
        self.host, self.port = split_host_port(target)
        self._resolve = resolve
        self._reverse = reverse
        self._names: dict[str, str] = {}  # ip -> member, for the ips last resolved

    def describe(self) -> str:
        return f"DNS {self.host}:{self.port}"

    async def members(self) -> list[str]:
        infos = await asyncio.to_thread(self._resolve, self.host, self.port, 0, socket.SOCK_STREAM)
        ips = sorted({info[4][0] for info in infos})
        new = [ip for ip in ips if ip not in self._names]
        names = await asyncio.gather(*(asyncio.to_thread(self._member, ip) for ip in new))
        self._names = {ip: self._names.get(ip) for ip in ips} | dict(zip(new, names, strict=True))
        return list(self._names.values())

    def _member(self, ip: str) -> str:
        """`<pod>.<service host>:<port>` when the ip's reverse record is a pod name under the
        service (stable across pod restarts), else `ip:port`."""
        try:
            name = self._reverse(ip)[0]
        except OSError:
            name = ""
        pod, _, domain = name.partition(".")
        if pod and (domain == self.host or domain.startswith(self.host + ".")):
            return f"{pod}.{self.host}:{self.port}"
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"


class RegistrySource:
    """The SERVING shards of the fleet's Redis registry that heartbeat within `alive_within_s`."""

    def __init__(self, store: FleetStore, alive_within_s: float = 30.0) -> None:
        self.store = store
        self.alive_within_s = alive_within_s

    def describe(self) -> str:
        return f"Redis registry of fleet {self.store.fleet}"

    async def members(self) -> list[str]:
        shards = await asyncio.to_thread(self.store.list_shards, self.alive_within_s)
        return [shard.address for shard in shards if shard.state == "SERVING"]


async def watch(
    source: TopologySource, interval_s: float, apply: Callable[[list[str]], Awaitable[None]]
) -> None:
    """Poll `source` every `interval_s` forever; `apply` each changed membership (sorted, distinct)."""
    current: list[str] | None = None
    while True:
        try:
            members = sorted(set(await source.members()))
        except Exception as error:  # keep the last membership; say why once per failed poll
            log.warning("topology from %s failed, keeping %s: %s", source.describe(), current, error)
        else:
            if not members and current:
                log.warning("topology from %s lists no shards, keeping %s", source.describe(), current)
            elif members != current:
                gone, added = set(current or ()) - set(members), set(members) - set(current or ())
                log.info(
                    "topology from %s: %d shards (+%s -%s)",
                    source.describe(), len(members), sorted(added), sorted(gone),
                )  # fmt: skip
                await apply(members)
                current = members
        await asyncio.sleep(interval_s)
