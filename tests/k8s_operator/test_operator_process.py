"""`gamefleet operator` as a process, the way its Deployment runs it: against the kmock API
emulator (through $KUBECONFIG) and a real redis-server, where the test plays the shards by
heartbeating through gameserver.fleet.store.FleetStore. Autoscaling, the drain contract, the
liveness probe, the metrics endpoint, the cleanup finalizer and SIGTERM, all for real."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis_fixture import RedisServer

from gameserver.fleet.store import FleetStore

from .harness import FLEETS_URL, GF, Cluster, Emulator, FakeRegistries, free_port, wait_for

pytestmark = pytest.mark.asyncio

FLEET = "omega"
CAPACITY = 100


def heartbeat(store: FleetStore, loads: dict[int, int], state: str = "SERVING") -> None:
    """What shard pods do: each reports its games under its address (pod name first)."""
    for ordinal, games in loads.items():
        address = f"{FLEET}-shard-{ordinal}.{FLEET}-shards.default.svc:50051"
        store.heartbeat(address, load=games, capacity=CAPACITY, state=state)


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(sample name, its labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


async def test_gamefleet_operator_process_scales_drains_reports_and_cleans_up(
    api: Emulator, kubeconfig: Path, tmp_path: Path
) -> None:
    liveness, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(kubeconfig)
    log = (tmp_path / "operator.log").open("wb")
    command = [sys.executable, "-m", "gameserver.cli", "operator", "--liveness-port", str(liveness),
               "--metrics-port", str(metrics), "--sync-interval", "0.3"]  # fmt: skip
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
    cluster = Cluster(api, FakeRegistries(), f"http://127.0.0.1:{liveness}/healthz")
    try:
        with RedisServer(tmp_path) as redis_server:
            watches = lambda: api[api.action.WATCH, api.resource(GF)]  # noqa: E731
            await wait_for(lambda: len(watches()) >= 1, 60, "the operator's watch")
            store = FleetStore(redis_server.url, f"default.{FLEET}", ttl_s=600)
            await run_fleet(cluster, store, redis_server.port)
            families = await scrape(f"http://127.0.0.1:{metrics}/metrics")
            desired = key("gamefleet_operator_fleet_shards", namespace="default", fleet=FLEET, kind="desired")
            assert families[desired] == 1
            assert families[key("gamefleet_operator_reconciles_total", handler="apply_fleet")] >= 1
            assert families[key("gamefleet_operator_reconciles_total", handler="sync_fleet")] >= 5
            assert families[key("gamefleet_operator_reconcile_seconds_count", handler="sync_fleet")] >= 5
            errors = key("gamefleet_operator_reconcile_errors_total", handler="sync_fleet")
            assert families.get(errors, 0) == 0
            async with aiohttp.ClientSession() as session, session.get(cluster.liveness) as response:
                assert response.status == 200

            assert store.redis.keys(f"{store.prefix}*")
            await api.delete(f"{FLEETS_URL}/{FLEET}")
            await wait_for(lambda: cluster.replicas(FLEET) is None, 20, "the shards stopped first")
            assert cluster.fleet(FLEET) is not None  # live shards would write their keys back
            for ordinal in range(6):  # what stopping shards do
                store.remove_shard(f"{FLEET}-shard-{ordinal}.{FLEET}-shards.default.svc:50051")
            await wait_for(lambda: cluster.fleet(FLEET) is None, 20, "the finalizer to let the fleet go")
            assert store.redis.keys(f"{store.prefix}*") == []  # every key of the fleet, gone
            await wait_for(lambda: cluster.events("CleanedUp"), what="the CleanedUp event")
            families = await scrape(f"http://127.0.0.1:{metrics}/metrics")
            assert desired not in families  # a deleted fleet's series go
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        print((tmp_path / "operator.log").read_text()[-3000:])


async def run_fleet(cluster: Cluster, store: FleetStore, redis_port: int) -> None:
    """Create an autoscaled fleet, load it up, then let it drain down to its minimum."""
    spec: dict[str, Any] = {
        "image": "ghcr.io/gamefleet/gamefleet:0.1.0",
        "shards": 2,
        "game": {"capacityPerShard": CAPACITY},
        "redis": {"address": f"127.0.0.1:{redis_port}"},
        "autoscaling": {"enabled": True, "minShards": 1, "maxShards": 6, "targetUtilisation": 0.5,
                        "scaleDownStabilisationSeconds": 0},
    }  # fmt: skip
    await cluster.create(FLEET, spec)
    await wait_for(lambda: cluster.replicas(FLEET) == 2, 20, "the shard StatefulSet")
    heartbeat(store, {0: 150, 1: 150})  # 300 games at 50 per shard: 6 shards
    # the timer resizes the StatefulSet in its round; kopf writes spec.shards when the round ends
    await wait_for(lambda: cluster.fleet(FLEET)["spec"]["shards"] == 6, 20, "the autoscaler: 6 shards")
    await wait_for(lambda: cluster.replicas(FLEET) == 6, 20, "scale-up to 6 shards")

    heartbeat(store, dict.fromkeys(range(6), 5))  # 30 games: 1 shard; 5 leave, highest first
    drains = store.key("drain")
    await wait_for(lambda: len(store.redis.hkeys(drains)) == 5, 20, "drain requests in Redis")
    leaving = sorted(k.decode() for k in store.redis.hkeys(drains))
    assert leaving == [f"{FLEET}-shard-{i}" for i in range(1, 6)]
    await asyncio.sleep(1.0)
    assert cluster.replicas(FLEET) == 6  # nobody drained yet
    heartbeat(store, dict.fromkeys(range(1, 6), 0), state="DRAINING")  # handed their games over
    await wait_for(lambda: cluster.replicas(FLEET) == 1, 20, "the drained shards removed")
    assert len(store.redis.hkeys(drains)) == 5  # kept while their pods shut down
    await cluster.set_ready(FLEET, 1)
    await wait_for(lambda: cluster.condition(FLEET, "Ready").get("status") == "True", 20, "Ready")
