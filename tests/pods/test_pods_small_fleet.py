"""The small example fleet (two shards, one router, no Redis) run as real pods from the operator's
rendered manifests: every pod reaches Ready through its own probes, a FleetClient plays through the
router Service's name, and deleted pods end within their grace periods."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from gamefleet_operator.render import GRPC_PORT, render, termination_grace_seconds
from gamefleet_operator.spec import Fleet

from gameserver.client import FleetClient
from gameserver.engine import GameConfig

from .cluster import Cluster, repository
from .kubelet import PodRunner

SMALL = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "small.yaml"


@pytest.mark.slow
def test_the_small_fleet_runs_plays_through_its_router_service_and_stops_within_grace(
    cluster: Cluster,
) -> None:
    fleet = Fleet.from_body(yaml.safe_load(SMALL.read_text()))
    cluster.apply(render(fleet))
    shards = ["small-shard-0", "small-shard-1"]
    (router,) = [p.name for p in cluster.workload_pods("Deployment", "small-router")]
    cluster.wait_ready([*shards, router], timeout=90)
    assert cluster.workloads["StatefulSet", "small-shard"]["status"]["readyReplicas"] == 2
    for name in [*shards, router]:  # the image's `gamefleet` script, as its USER
        pid = cluster.pods[name].process.pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1].decode() == str(cluster.image.venv / "bin" / "gamefleet"), argv
        uids = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
        assert uids.split()[1:] == ["10001"] * 4

    # the router found both shards by the headless Service's DNS, under their stable pod names
    (address,) = cluster.resolve(f"small.default.svc:{GRPC_PORT}")
    with FleetClient(f"{address}:{GRPC_PORT}", timeout=30) as client:
        cluster.wait(lambda: len(client.topology().shards) == 2, 30, "the router's ring")
        assert sorted(client.topology().shards) == [
            f"{s}.small-shards.default.svc:{GRPC_PORT}" for s in shards
        ]
        config = GameConfig(width=12, height=10, players=2)
        created = client.create(64, config)
        for _ in range(5):
            reply = client.step(created.ids, np.full((64, 2), -1))
        assert reply.observations.codes.shape[0] == 64
        assert client.close(created.ids) == 64

    ended = cluster.delete([*shards, router])
    for name in shards:
        assert ended[name].pre_stop_exit == 0  # preStop `sleep 5` ran inside the pod
        assert not ended[name].killed and ended[name].exit_code == 0, ended[name]
        assert ended[name].duration < termination_grace_seconds(fleet)
    assert not ended[router].killed and ended[router].exit_code == 0, ended[router]


def environ(pod: PodRunner) -> dict[str, str]:
    raw = Path(f"/proc/{pod.process.pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if entry)


@pytest.mark.slow
def test_a_new_image_and_game_config_roll_the_shards_highest_first_and_surge_the_router(
    cluster: Cluster,
) -> None:
    """The StatefulSet and Deployment controllers' rolling updates, as the harness plays them: each
    shard replaced after the one above it is Ready again, a new router Ready before the old one goes
    (the image rolls the routers; the game size alone would not: they never read it)."""
    body = yaml.safe_load(SMALL.read_text())
    cluster.apply(render(Fleet.from_body(body)))
    (old_router,) = [p.name for p in cluster.workload_pods("Deployment", "small-router")]
    cluster.wait_ready(["small-shard-0", "small-shard-1", old_router], timeout=90)
    assert environ(cluster.pods["small-shard-0"])["GAMEFLEET_GAME_WIDTH"] == "20"

    body["spec"]["game"]["width"] = 24
    body["spec"]["image"] = f"{repository(body['spec']['image'])}:next"
    start = time.monotonic()
    cluster.apply(render(Fleet.from_body(body)))
    events = [(verb, pod) for at, verb, pod in cluster.events if at >= start]
    (new_router,) = [p.name for p in cluster.workload_pods("Deployment", "small-router")]
    first = [e for e in dict.fromkeys(events) if e[1] != new_router and e[1] != old_router]
    assert first == [
        ("deleted", "small-shard-1"),
        ("created", "small-shard-1"),
        ("ready", "small-shard-1"),
        ("deleted", "small-shard-0"),
        ("created", "small-shard-0"),
        ("ready", "small-shard-0"),
    ]
    assert events.index(("ready", new_router)) < events.index(("deleted", old_router))
    for pod in cluster.pods.values():
        assert environ(pod)["GAMEFLEET_GAME_WIDTH"] == "24" and pod.status.ready
    status = cluster.workloads["StatefulSet", "small-shard"]["status"]
    assert status == {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
