"""The end-to-end suite against a real Kubernetes cluster: opt-in, for users' CI.

Runs only with GAMEFLEET_E2E=1 and a KUBECONFIG that reaches a cluster; otherwise every test
is skipped with the reason. It installs the CRD, runs the operator in this process (so no
operator image is needed), and works in a throwaway namespace. Shard pods need a gamefleet
image the cluster can pull: set GAMEFLEET_E2E_IMAGE to also wait for Ready fleets.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
import yaml
from gamefleet_operator.handlers import build_registry
from gamefleet_operator.registry import StoreRegistries

ROOT = Path(__file__).resolve().parents[2]


def skip_reason() -> str | None:
    if os.environ.get("GAMEFLEET_E2E") != "1":
        return "the real-cluster suite is opt-in: set GAMEFLEET_E2E=1 and KUBECONFIG"
    if not os.environ.get("KUBECONFIG"):
        return "GAMEFLEET_E2E=1 but KUBECONFIG is not set"
    try:
        kubernetes.config.load_kube_config()
        kubernetes.client.VersionApi().get_code(_request_timeout=5)
    except Exception as e:  # any failure to reach the cluster is a reason to skip, said plainly
        return f"KUBECONFIG={os.environ['KUBECONFIG']} does not reach a cluster: {e}"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = [item for item in items if Path(str(item.fspath)).is_relative_to(Path(__file__).parent)]
    if here and (reason := skip_reason()):
        for item in here:
            item.add_marker(pytest.mark.skip(reason=reason))


def wait_until(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(1)
    return result


@pytest.fixture(scope="session")
def crd() -> Iterator[None]:
    api = kubernetes.client.ApiextensionsV1Api()
    body = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
    try:
        api.create_custom_resource_definition(body)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
        api.patch_custom_resource_definition(body["metadata"]["name"], body)
    wait_until(lambda: _established(api, body["metadata"]["name"]), 60, "the CRD to be established")
    yield


def _established(api: Any, name: str) -> bool:
    conditions = api.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def namespace(crd: None) -> Iterator[str]:
    name = f"gamefleet-e2e-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api()
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def operator(namespace: str) -> Iterator[None]:
    """The operator, in a thread of this process, watching only the test namespace."""
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            kopf.operator(
                registry=build_registry(2.0),
                namespaces=[namespace],
                standalone=True,
                memo=kopf.Memo(registries=StoreRegistries()),
                stop_flag=stop,
            )
        ),
        daemon=True,
    )
    thread.start()
    yield
    stop.set()
    thread.join(30)
