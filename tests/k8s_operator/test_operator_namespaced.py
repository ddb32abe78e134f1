"""The namespaced install (`gamefleet operator --namespace NS`, the chart's operator.namespaces,
manifests/namespaced/): the operator runs a fleet of its namespace through its whole life against
the emulator, peering in a KopfPeering of that namespace, and every call it makes is one
manifests/namespaced/rbac.yaml grants: in the watched namespace by its Role, cluster-wide only by
its small ClusterRole (no Secret, no workload)."""

from __future__ import annotations

import pytest

from .harness import (
    GF,
    NAMESPACED_RBAC,
    Cluster,
    Emulator,
    FakeRegistries,
    free_port,
    operator_thread,
    rbac_rules,
    scoped_operator_calls,
    wait_for,
)

pytestmark = pytest.mark.asyncio

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
WATCHED = "default"  # the namespace the harness's Cluster works in
NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"
SPEC = {
    "image": IMAGE,
    "shards": 1,
    "redis": {"managed": {"enabled": True}, "passwordSecretRef": {"name": "redis-auth"}},
    "telemetry": {"metrics": {"serviceMonitor": True}},
}


async def test_a_namespaced_operator_runs_a_fleet_with_only_its_namespaces_role(
    api: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "gamefleet-system")  # the downward API, as in its Deployment
    registries = FakeRegistries()
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    async with operator_thread(
        registries, liveness=liveness, peering=("gamefleet", 10), namespaces=[WATCHED]
    ):
        await wait_for(lambda: len(api[api.action.WATCH, api.resource(GF)]) >= 1, what="kopf's watch")
        cluster = Cluster(api, registries, liveness)
        await cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "redis-auth"},
                "data": {"password": "cHc="},
            }
        )
        await cluster.create("nu", SPEC)
        for resource, name in [
            ("apps/v1/statefulsets", "nu-shard"),
            ("apps/v1/deployments", "nu-router"),
            ("apps/v1/statefulsets", "nu-redis"),
            ("monitoring.coreos.com/v1/servicemonitors", "nu"),
            (NETWORK_POLICIES, "nu-redis"),
        ]:
            await wait_for(lambda r=resource, n=name: cluster.get(r, n) is not None, what=name)
        assert registries.passwords["nu"] == "pw"  # the Secret of its namespace, read with its Role
        redis_policy = cluster.get(NETWORK_POLICIES, "nu-redis")
        operator_peer = redis_policy["spec"]["ingress"][0]["from"][1]
        assert operator_peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "gamefleet-system"}
        }  # where it runs, as its pod's environment says
        await cluster.set_ready("nu", 1)
        await wait_for(lambda: cluster.condition("nu", "Ready").get("status") == "True", what="Ready")
        await cluster.patch("nu", {"spec": {"networkPolicy": {"enabled": False}}})  # pruned: get, delete
        await wait_for(lambda: cluster.get(NETWORK_POLICIES, "nu-shard") is None, what="policies removed")
        await api.delete(f"/apis/{GF.rsplit('/', 1)[0]}/namespaces/{WATCHED}/gamefleets/nu")
        await wait_for(lambda: cluster.fleet("nu") is None, what="the cleanup finalizer")
        assert registries["nu"].purges == 1
    calls = scoped_operator_calls(api)
    assert {namespace for namespace, _ in calls} <= {None, WATCHED}  # nothing of another namespace
    role = rbac_rules(NAMESPACED_RBAC, "Role")
    cluster_role = rbac_rules(NAMESPACED_RBAC, "ClusterRole")
    namespaced = {call for namespace, call in calls if namespace == WATCHED}
    cluster_wide = {call for namespace, call in calls if namespace is None}
    assert namespaced - role == set(), "the Role must grant every call in the watched namespace"
    assert cluster_wide - cluster_role == set(), "only the ClusterRole's reads may be cluster-wide"
    # and these calls were made, where a cluster-wide operator makes them cluster-wide
    assert {
        ("kopf.dev", "kopfpeerings", "patch"),
        ("", "secrets", "get"),
        ("", "events", "create"),
    } <= namespaced
    assert ("gamefleet.dev", "gamefleets", "watch") in namespaced
    assert not [call for call in cluster_wide if call[1] == "clusterkopfpeerings"]
    # (the ClusterRole's reads, CRDs and namespaces, kopf makes only with its scanning on, which the
    # harness turns off for kmock; test_operator_manifests checks that Role is all they add)
