"""Where the router learns its shards: DNS records named by their pods, the Redis registry's
SERVING shards, and a ring rebuilt (and logged) only when the membership changes."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
from conftest import BackgroundShard
from redis_fixture import RedisServer
from router_helpers import BackgroundRouter, RouterProcess

from gameserver.client import FleetClient, Unavailable
from gameserver.engine import GameConfig
from gameserver.fleet.store import FleetStore
from gameserver.router.topology import DnsSource, RegistrySource, StaticSource, split_host_port, watch

SERVICE_HOST = "f-shards.ns.svc"


def records(port: int, *ips: str) -> list[tuple]:
    return [
        (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
        for ip in ips
    ]


def test_dns_members_are_pod_names_where_the_reverse_record_says_so():
    names = {"10.0.0.7": "f-shard-0.f-shards.ns.svc.cluster.local", "fd00::3": "node-3.example.org"}
    asked: list[str] = []

    def reverse(ip: str) -> tuple[str, list[str], list[str]]:
        asked.append(ip)
        if ip not in names:
            raise socket.herror(1, "no PTR record")
        return names[ip], [], [ip]

    def resolve(host: str, port: int, family: int, kind: int) -> list[tuple]:
        assert (host, port, kind) == (SERVICE_HOST, 50051, socket.SOCK_STREAM)
        return records(port, "10.0.0.9", "fd00::3", "10.0.0.7", "10.0.0.9")  # A and AAAA, repeated

    source = DnsSource(f"{SERVICE_HOST}:50051", resolve=resolve, reverse=reverse)
    expected = ["10.0.0.9:50051", "[fd00::3]:50051", "f-shard-0.f-shards.ns.svc:50051"]
    assert sorted(asyncio.run(source.members())) == expected
    assert sorted(asyncio.run(source.members())) == expected
    assert sorted(asked) == ["10.0.0.7", "10.0.0.9", "fd00::3"]  # each ip named once, then remembered


def test_dns_of_a_literal_address_is_that_address():
    assert asyncio.run(DnsSource("127.0.0.1:4321").members()) == ["127.0.0.1:4321"]


@pytest.mark.parametrize("target", ["nohost", "host:", ":80", "host:http"])
def test_addresses_need_a_host_and_a_numeric_port(target):
    with pytest.raises(ValueError, match="host:port"):
        split_host_port(target)


class Scripted:
    """A topology source answering a list of memberships (an exception: a failed poll)."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)

    def describe(self) -> str:
        return "script"

    async def members(self) -> list[str]:
        if not self.answers:
            await asyncio.Event().wait()  # the script is over: hang until cancelled
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_ring_is_rebuilt_only_when_the_membership_changes(caplog):
    applied: list[list[str]] = []

    async def apply(members: list[str]) -> None:
        applied.append(members)

    source = Scripted(["b:1", "a:1"], ["a:1", "b:1", "a:1"], OSError("DNS down"), ["c:1", "a:1"], [])

    async def run() -> None:
        task = asyncio.create_task(watch(source, 0, apply))
        while source.answers:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="gameserver.router.topology"):
        asyncio.run(run())
    assert applied == [["a:1", "b:1"], ["a:1", "c:1"]]  # an empty answer after a known one: kept
    assert "DNS down" in caplog.text and "keeping ['a:1', 'b:1']" in caplog.text
    assert "lists no shards, keeping ['a:1', 'c:1']" in caplog.text
    assert "2 shards (+['c:1'] -['b:1'])" in caplog.text


@pytest.fixture
def registry(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server.url, FleetStore(server.url, "rt", ttl_s=60)


def test_the_registry_source_lists_the_serving_shards_that_heartbeat(registry):
    _, store = registry
    store.heartbeat("s-1.f-shards:50051", load=10, capacity=100)
    store.heartbeat("s-0.f-shards:50051", load=0, capacity=100)
    store.heartbeat("s-2.f-shards:50051", load=5, capacity=100, state="DRAINING")
    assert asyncio.run(RegistrySource(store).members()) == ["s-0.f-shards:50051", "s-1.f-shards:50051"]
    assert asyncio.run(RegistrySource(store, alive_within_s=-1).members()) == []


def test_gamefleet_route_follows_the_redis_registry(registry):
    url, store = registry
    shard = BackgroundShard(seed=1)
    store.heartbeat(shard.address, load=0, capacity=10)
    router = RouterProcess("--redis", url, "--fleet", "rt", "--refresh", "0.1")
    try:
        assert "over 1 shards (Redis registry of fleet rt)" in router.ready_line
        with FleetClient(router.address, timeout=10) as client:
            assert client.topology().shards == (shard.address,) and client.healthy()
            store.heartbeat("127.0.0.1:2", load=0, capacity=10)
            store.heartbeat(shard.address, load=0, capacity=10, state="DRAINING")
            assert _eventually(lambda: client.topology().shards == ("127.0.0.1:2",))
            assert _eventually(lambda: not client.healthy())  # its one shard does not answer: NOT_SERVING
            store.remove_shard("127.0.0.1:2")
            assert not client.healthy()  # no shard left
    finally:
        router.kill()
        shard.stop()


def test_an_in_process_router_over_dns_places_games_only_on_ready_shards():
    """A headless Service's DNS lists shards warming up and draining too: they stay on the ring,
    but the router is SERVING, and places new games, only while some shard is ready."""
    shard = BackgroundShard(seed=1)
    router = BackgroundRouter(DnsSource(shard.address), refresh_s=0.1)
    try:
        with FleetClient(router.address, timeout=10) as client:
            assert client.topology().shards == (shard.address,) and client.healthy()
            created = client.create(2, GameConfig())
            leaving = asyncio.run_coroutine_threadsafe(shard.server.leave(), shard.loop)  # SIGTERM
            assert _eventually(lambda: not client.healthy())  # draining: no shard takes new games
            assert client.topology().shards == (shard.address,)  # still on the ring ...
            with pytest.raises(Unavailable, match="no shard takes new games"):
                client.create(1, GameConfig())
            client.step(created.ids, np.full((2, 2), -1, np.int32))  # ... so its games still play
            client.close(created.ids)
            leaving.result(10)
    finally:
        router.stop()
        shard.stop()


def test_a_create_a_draining_shard_refuses_is_placed_again_on_a_shard_that_takes_games():
    """Between two readiness checks a shard starts draining: the creates the router still sends it
    are refused (nothing created) and placed again elsewhere; the caller sees no error."""
    staying, leaving = BackgroundShard(seed=1), BackgroundShard(seed=2)
    router = BackgroundRouter(StaticSource([staying.address, leaving.address]), refresh_s=3600)
    try:
        with FleetClient(router.address, timeout=10) as client:
            assert _eventually(client.healthy)
            before = [client.create(1, GameConfig()) for _ in range(64)]
            assert {c.shard for c in before} == {staying.address, leaving.address}  # keyless: both
            held = leaving.server.games.active_games
            drain = asyncio.run_coroutine_threadsafe(leaving.server.leave(), leaving.loop)  # SIGTERM
            with FleetClient(leaving.address, timeout=10) as direct:
                assert _eventually(lambda: not direct.healthy())  # takes no new games
            assert {client.create(1, GameConfig()).shard for _ in range(64)} == {staying.address}
            assert leaving.server.games.active_games == held
            client.close(np.concatenate([c.ids for c in before]))
            drain.result(10)  # its last game closed: it leaves
    finally:
        router.stop()
        staying.stop()
        leaving.stop()


def test_a_router_over_a_static_list_is_not_serving_while_a_listed_shard_does_not_answer(caplog):
    """Nothing takes a dead member of `--shards` off the ring, so calls for the games its share of
    the keys would hold fail: the router says NOT_SERVING (naming it) until every member answers."""
    first, second = BackgroundShard(seed=1), BackgroundShard(seed=2)
    router = BackgroundRouter(StaticSource([first.address, second.address]), refresh_s=0.1)
    try:
        with FleetClient(router.address, timeout=10) as client:
            assert _eventually(client.healthy)
            with caplog.at_level(logging.WARNING, logger="gameserver.router.server"):
                second.stop()
                assert _eventually(lambda: not client.healthy())
            assert f"shards of the static list do not answer: ['{second.address}']" in caplog.text
    finally:
        router.stop()
        first.stop()


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False
