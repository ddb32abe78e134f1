"""Two operator replicas against one API: kopf peering elects one (the higher priority) to handle
the fleets; the other waits and takes over once the first is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from .harness import (
    GF,
    SYNC_INTERVAL,
    Cluster,
    Emulator,
    FakeRegistries,
    OperatorProcess,
    free_port,
    operator_thread,
    wait_for,
)

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
REDIS = {"redis": {"address": "redis.default.svc:6379"}}  # the registry: who reconciles, reads it


@asynccontextmanager
async def replica(priority: int) -> AsyncIterator[tuple[FakeRegistries, OperatorProcess]]:
    """One operator process's worth of kopf, peering as `gamefleet operator` does (a replica that
    dies unannounced lapses within seconds): its registries (who reconciles reads them) and process."""
    registries = FakeRegistries()
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    async with operator_thread(
        registries, liveness=liveness, peering=("gamefleet", priority), peering_lifetime=5
    ) as process:
        yield registries, process


async def test_one_replica_leads_and_the_other_takes_over_when_it_goes(api: Emulator) -> None:
    peerings = api.resource("kopf.dev/v1/clusterkopfpeerings")
    async with replica(priority=20) as (leader, leader_process), replica(priority=10) as (standby, _):
        await wait_for(lambda: (peerings, None, "gamefleet") in api.objects, what="the peering object")
        await wait_for(
            lambda: len(api.objects[peerings, None, "gamefleet"].get("status", {})) == 2,
            what="both replicas in the peering object",
        )
        cluster = Cluster(api, leader, "")
        await cluster.create("duo", {"image": IMAGE, "shards": 1, **REDIS})
        await wait_for(lambda: cluster.get("apps/v1/deployments", "duo-router") is not None, what="children")
        await asyncio.sleep(4 * SYNC_INTERVAL)  # timer rounds: only the leader's
        assert "duo" in leader.fleets and "duo" not in standby.fleets
        await leader_process.gone()
        await wait_for(
            lambda: len(api.objects[peerings, None, "gamefleet"].get("status", {})) == 1,
            timeout=30,
            what="the leader's entry gone",
        )
        response = await api.delete("/apis/apps/v1/namespaces/default/deployments/duo-router")
        assert response.status == 200
        await wait_for(
            lambda: cluster.get("apps/v1/deployments", "duo-router") is not None,
            timeout=30,
            what="the standby to repair the fleet",
        )
        assert "duo" in standby.fleets
        fleet = cluster.fleet("duo")
        assert fleet["metadata"]["finalizers"]
        await api.delete(f"/apis/{GF.rsplit('/', 1)[0]}/namespaces/default/gamefleets/duo")
        await wait_for(lambda: cluster.fleet("duo") is None, timeout=30, what="the standby's cleanup")
        assert standby.fleets["duo"].purges == 1 and leader.fleets["duo"].purges == 0  # the standby's
