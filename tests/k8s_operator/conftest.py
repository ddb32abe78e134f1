"""Operator test fixtures: a kubeconfig pointing at the kmock emulator, and the operator
running for real (kopf in its own thread) against it with an in-memory shard registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import kubernetes.config.kube_config
import pytest
import pytest_asyncio

from .harness import (
    GF,
    RESOURCES,
    Cluster,
    Emulator,
    FakeRegistries,
    free_port,
    operator_calls,
    operator_thread,
    rbac_rules,
    wait_for,
)


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return kmock_options | {"cls": Emulator}


@pytest.fixture
def kubeconfig(kmock: Emulator, tmp_path, monkeypatch) -> Any:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: kmock, cluster: {{server: '{kmock.url}'}}}}]
users: [{{name: u, user: {{token: dummy}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: u, namespace: default}}}}]
current-context: kmock
"""
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # the kubernetes client read $KUBECONFIG once, at import
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture
def api(kmock: Emulator, kubeconfig: Any) -> Iterator[Emulator]:
    """The emulator serving every resource the operator discovers; on the way out, every API
    call an operator made to it must be one manifests/rbac.yaml grants."""
    for resource, (kind, namespaced, subresources) in RESOURCES.items():
        kmock.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources=subresources,
        )
    yield kmock
    assert operator_calls(kmock) <= rbac_rules(), "manifests/rbac.yaml must allow every call"


@pytest_asyncio.fixture
async def cluster(api: Emulator) -> AsyncIterator[Cluster]:
    """The operator running against the emulator (kopf in its own thread), with fake registries."""
    registries = FakeRegistries()
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    async with operator_thread(registries, liveness=liveness):
        await wait_for(lambda: len(api[api.action.WATCH, api.resource(GF)]) >= 1, what="kopf's watch")
        cluster = Cluster(api, registries, liveness)
        yield cluster
        await wait_for(cluster.settled, what="kopf to finish handling")
