"""GameFleet on a real cluster: the API server's schema and CEL refuse bad fleets, the operator
creates owned children, `kubectl scale` reaches the StatefulSet, deletion garbage-collects."""

from __future__ import annotations

import os
from typing import Any

import kubernetes
import pytest

from .conftest import wait_until

GROUP, VERSION, PLURAL = "gamefleet.dev", "v1", "gamefleets"
IMAGE = os.environ.get("GAMEFLEET_E2E_IMAGE", "ghcr.io/gamefleet/gamefleet:0.1.0")


def body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GameFleet",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, **spec},
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"shards": 0}, "spec.shards"),
        ({"durability": {"mode": "log"}}, "durability snapshot/log keeps games in Redis"),
        (
            {"shards": 9, "autoscaling": {"enabled": True, "maxShards": 4}, "redis": {"address": "r:6379"}},
            "shards must lie within",
        ),
    ],
)
def test_api_server_refuses_bad_fleets(namespace: str, spec: dict[str, Any], message: str) -> None:
    api = kubernetes.client.CustomObjectsApi()
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body("bad", **spec))
    assert refused.value.status == 422 and message in str(refused.value.body)


def test_fleet_lifecycle(namespace: str, operator: None) -> None:
    custom, apps = kubernetes.client.CustomObjectsApi(), kubernetes.client.AppsV1Api()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body("e2e", shards=1))
    shards = wait_until(
        lambda: _read(apps.read_namespaced_stateful_set, "e2e-shard", namespace), what="shards"
    )
    assert shards.metadata.owner_references[0].kind == "GameFleet"
    wait_until(lambda: _conditions(custom, namespace), what="status conditions")

    custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "e2e", {"spec": {"replicas": 2}}
    )
    wait_until(
        lambda: apps.read_namespaced_stateful_set("e2e-shard", namespace).spec.replicas == 2, what="scale"
    )
    if "GAMEFLEET_E2E_IMAGE" in os.environ:
        wait_until(lambda: _conditions(custom, namespace).get("Ready") == "True", 600, "a Ready fleet")

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")
    wait_until(
        lambda: not _read(apps.read_namespaced_stateful_set, "e2e-shard", namespace),
        180,
        "garbage collection",
    )


def _read(read: Any, name: str, namespace: str) -> Any:
    try:
        return read(name, namespace)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def _conditions(custom: Any, namespace: str) -> dict[str, str]:
    fleet = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")
    return {c["type"]: c["status"] for c in fleet.get("status", {}).get("conditions", [])}
