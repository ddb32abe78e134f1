"""What the scenario tests share: a fleet's Ready condition, a round of play through its router
Service, and the operator run as its Deployment's pods (in-cluster, through `apiserver.serve_tls`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from gamefleet_operator.render import GRPC_PORT
from k8s_operator.harness import Cluster as Api
from k8s_operator.harness import Emulator, wait_for

from gameserver.client import FleetClient
from gameserver.engine import GameConfig

from .apiserver import ApiAccess, serve_tls
from .cluster import Cluster
from .kubelet import Manifest, PodRunner

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def ready(fleets: Api, name: str, timeout: float = 120) -> None:
    await wait_for(lambda: fleets.condition(name, "Ready").get("status") == "True", timeout, f"{name} Ready")


def play(cluster: Cluster, shards: int, fleet: str = "small") -> None:
    """16 games created, stepped and closed through the fleet's Service, once its ring has `shards`."""
    (address,) = cluster.resolve(f"{fleet}.default.svc:{GRPC_PORT}")[:1]
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        cluster.wait(lambda: len(client.topology().shards) == shards, 30, "the router's ring")
        created = client.create(16, GameConfig(width=12, height=10, players=2))
        reply = client.step(created.ids, np.full((16, 2), -1))
        assert reply.observations.codes.shape[0] == 16
        assert client.close(created.ids) == 16


@asynccontextmanager
async def operator_running(
    api: Emulator, cluster: Cluster, deployment: Manifest, directory: Path
) -> AsyncIterator[ApiAccess]:
    """The operator's Deployment run in `cluster`, its pods given the API over TLS (the service-account
    token, the CA); its pods deleted on the way out."""
    async with serve_tls(api, cluster.network.gateway, directory) as access:
        cluster.api = access
        await asyncio.to_thread(cluster.apply, [deployment])
        try:
            yield access
        finally:
            await asyncio.to_thread(cluster.delete, [p.name for p in operator_pods(cluster)])


def operator_pods(cluster: Cluster) -> list[PodRunner]:
    return [
        p
        for p in list(cluster.pods.values())
        if p.labels.get("app.kubernetes.io/name") == "gamefleet-operator"
    ]


def peers(api: Emulator) -> dict[str, Any]:
    """The peering object's entries: replica (pod name) -> its priority and last heartbeat."""
    key = (api.resource(PEERINGS), None, "gamefleet")
    return dict(api.objects[key].get("status") or {}) if key in api.objects else {}


def leader(api: Emulator) -> str:
    entries = peers(api)
    return max(entries, key=lambda name: entries[name]["priority"])
