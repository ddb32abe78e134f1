"""The example fleets as a platform engineer sees them: `kubectl apply -f manifests/examples/`,
the shards report load, then `kubectl get gf` (the CRD's printer columns over the status the
operator wrote) and each fleet's status and children."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from gamefleet_operator.crd import PRINTER_COLUMNS

from .harness import Cluster, kubectl_get, table, wait_for

pytestmark = pytest.mark.asyncio

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
PASSWORD = "s3cr3t"


async def apply_examples(cluster: Cluster) -> dict[str, dict]:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gamefleet-redis"}}
    await cluster.apply(secret | {"data": {"password": base64.b64encode(PASSWORD.encode()).decode()}})
    fleets = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        await cluster.apply(body)
        fleets[body["metadata"]["name"]] = body
    return fleets


async def test_kubectl_get_gf_shows_the_example_fleets_as_agones_users_expect(cluster: Cluster) -> None:
    fleets = await apply_examples(cluster)
    assert set(fleets) == {"small", "autoscaled", "durable"}
    # the shards' heartbeats: the autoscaled fleet is over its 70% target at 2 x 8192 games
    autoscaled = cluster.registries["autoscaled"]
    autoscaled.report("autoscaled-shard-0", 6000)
    autoscaled.report("autoscaled-shard-1", 6000)
    durable = cluster.registries["durable"]
    for i in range(4):
        durable.report(f"durable-shard-{i}", 1000)
    await wait_for(lambda: cluster.replicas("autoscaled") == 3, what="the autoscaler to add a shard")
    for name, shards, routers in (("small", 2, 1), ("autoscaled", 3, 2), ("durable", 4, 2)):
        await wait_for(lambda n=name, s=shards: cluster.replicas(n) == s, what=f"{name} replicas")
        await cluster.set_ready(name, shards, routers)
    expected = [
        ["NAME", "SHARDS", "CURRENT", "READY", "GAMES", "UTILISATION", "STATUS"],
        ["small", "2", "2", "2", "0", "0", "FleetReady"],  # no Redis: no load reports
        ["autoscaled", "3", "3", "3", "12000", "0.4883", "FleetReady"],  # 12000 / (3 x 8192)
        ["durable", "4", "4", "4", "4000", "0.2441", "FleetReady"],  # 4000 / (4 x 4096)
    ]

    def get_gf() -> list[list[str]]:
        objects = [cluster.fleet(name) for name in ("small", "autoscaled", "durable")]
        return kubectl_get(PRINTER_COLUMNS, objects, datetime.now(UTC))

    # handlers write status concurrently (the update after autoscaling, the timer): it settles
    await wait_for(lambda: [row[:-1] for row in get_gf()] == expected, what="kubectl get gf to settle")
    rows = get_gf()
    print("\n$ kubectl get gf\n" + table(rows))
    assert all(row[-1].endswith("s") and int(row[-1][:-1]) < 60 for row in rows[1:])

    steady = "steady: 12000 games, utilisation 0.49"  # the timer's rounds after scaling up
    await wait_for(lambda: cluster.status("autoscaled").get("autoscaler", {}).get("reason") == steady)
    status = cluster.fleet("autoscaled")["status"]
    assert status["capacity"] == 3 * 8192 and status["routers"] == 2
    assert status["autoscaler"]["desiredShards"] == 3
    assert status["selector"] == "gamefleet.dev/fleet=autoscaled,app.kubernetes.io/component=shard"
    by_type = {c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in status["conditions"]}
    generation = cluster.fleet("autoscaled")["metadata"]["generation"]
    assert by_type == {
        "Ready": ("True", "FleetReady", generation),
        "Progressing": ("False", "Stable", generation),
        "Degraded": ("False", "AsExpected", generation),
    }
    passwords = cluster.registries.passwords
    assert passwords["autoscaled"] == PASSWORD
    # durable's managed Redis has no passwordSecretRef: the operator generated one, into a Secret
    # that Redis and the pods read (and that is made once: the same password on every reconcile)
    generated = cluster.get("v1/secrets", "durable-redis-auth")
    assert generated["metadata"]["ownerReferences"][0]["name"] == "durable"
    assert base64.b64decode(generated["data"]["password"]).decode() == passwords["durable"]
    assert len(passwords["durable"]) >= 32
    redis = cluster.get("apps/v1/statefulsets", "durable-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert redis["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "durable-redis-auth", "key": "password"}
    await wait_for(lambda: cluster.events("Autoscaled"), what="the Autoscaled event")
    message = cluster.events("Autoscaled")[0]["message"]
    assert message.startswith("2 -> 3 shards: scale up"), message


async def test_managed_redis_and_service_monitor_are_owned_children(cluster: Cluster) -> None:
    body = yaml.safe_load((EXAMPLES / "managed-redis.yaml").read_text())
    await cluster.apply(body)
    monitor = lambda: cluster.get("monitoring.coreos.com/v1/servicemonitors", "durable")  # noqa: E731
    await wait_for(lambda: monitor() is not None, what="the ServiceMonitor, applied last")
    uid = cluster.fleet("durable")["metadata"]["uid"]
    for resource, name in [
        ("apps/v1/statefulsets", "durable-redis"),
        ("v1/services", "durable-redis"),
        ("monitoring.coreos.com/v1/servicemonitors", "durable"),
    ]:
        child = cluster.get(resource, name)
        assert child is not None, (resource, name)
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    assert monitor()["spec"]["endpoints"][0]["interval"] == "15s"
    config = cluster.get("v1/configmaps", "durable-config")["data"]
    assert config["GAMEFLEET_REDIS_URL"] == "redis://durable-redis.default.svc:6379/0"
    assert config["GAMEFLEET_DURABILITY"] == "log"
    small = yaml.safe_load((EXAMPLES / "small.yaml").read_text())
    await cluster.apply(small)  # no ServiceMonitor, no Redis unless asked
    await wait_for(lambda: cluster.replicas("small") == 2)
    assert cluster.get("monitoring.coreos.com/v1/servicemonitors", "small") is None
    assert cluster.get("apps/v1/statefulsets", "small-redis") is None
