"""The managed-Redis example fleet (four durable shards, two routers, the fleet's own redis-server)
run as real pods: all reach Ready, shards register in the fleet's Redis (behind the password the
operator generates) and the routers route over that registry, a FleetClient plays through the
router Service, and every pod stops within grace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from gamefleet_operator.handlers import generated_password
from gamefleet_operator.render import GRPC_PORT, REDIS_PORT, render, termination_grace_seconds
from gamefleet_operator.spec import Fleet

from gameserver.client import FleetClient
from gameserver.engine import GameConfig

from .cluster import Cluster
from .kubelet import secret_data

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "managed-redis.yaml"


@pytest.mark.slow
def test_the_managed_redis_fleet_registers_in_its_redis_plays_and_stops_within_grace(
    cluster: Cluster,
) -> None:
    fleet = Fleet.from_body(yaml.safe_load(EXAMPLE.read_text()))
    password = generated_password(fleet)  # what the operator creates once, before the children
    cluster.apply([password, *render(fleet)])
    shards = [f"durable-shard-{i}" for i in range(4)]
    routers = [p.name for p in cluster.workload_pods("Deployment", "durable-router")]
    cluster.wait_ready(["durable-redis-0", *shards, *routers], timeout=90)
    assert cluster.workloads["Deployment", "durable-router"]["status"]["readyReplicas"] == 2

    (redis_ip,) = cluster.resolve("durable-redis.default.svc")
    with pytest.raises(redis.AuthenticationError):  # no password, no entry
        redis.Redis(host=redis_ip, port=REDIS_PORT, socket_timeout=5).dbsize()
    store = redis.Redis(
        host=redis_ip, port=REDIS_PORT, socket_timeout=5, password=secret_data(password)["password"]
    )
    members = [f"{s}.durable-shards.default.svc:{GRPC_PORT}" for s in shards]
    for address in cluster.resolve("durable.default.svc"):
        with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
            cluster.wait(lambda c=client: sorted(c.topology().shards) == members, 30, "the ring from Redis")
            created = client.create(32, GameConfig(width=12, height=10, players=2))
            for _ in range(3):
                client.step(created.ids, np.full((32, 2), -1))
            assert client.close(created.ids) == 32
    assert store.dbsize() > 0  # the registry, at least
    store.close()

    ended = cluster.delete([*shards, *routers])
    for name in shards:
        assert not ended[name].killed and ended[name].exit_code == 0, (ended[name], cluster.pods)
        assert ended[name].duration < termination_grace_seconds(fleet)
    for name in routers:
        assert not ended[name].killed and ended[name].exit_code == 0, ended[name]
    (redis_end,) = cluster.delete(["durable-redis-0"]).values()
    assert redis_end.exit_code == 0 and not redis_end.killed
