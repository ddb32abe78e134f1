"""Fixtures of the pod-level tests: the image (the wheel installed once per content, shared by
sessions and xdist workers), a cluster of real pods, torn down however the test ends, and the
operator in the loop: kmock as the API (`api`), the operator in a thread against it (`fleets`,
in-memory shard registries) and the kubelet running what it renders (`kubelet`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from k8s_operator.conftest import api, kmock_options, kubeconfig  # noqa: F401 - fixtures
from k8s_operator.harness import GF, Emulator, FakeRegistries, free_port, operator_thread, wait_for
from k8s_operator.harness import Cluster as Api

from .cluster import Cluster
from .controller import KubeletController
from .image import Image, installed_image

TOOLS = ("ip", "unshare", "nsenter", "mount")  # iproute2 and util-linux


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    if os.geteuid() != 0:
        pytest.skip("pods need root: network and mount namespaces (CI runs as root)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"the pod tests need {missing} (apt-get install iproute2 util-linux)"
    namespaces = subprocess.run(
        ["unshare", "--mount", "--net", "--uts", "true"], capture_output=True, text=True
    )
    assert namespaces.returncode == 0, (
        f"root without namespaces (a container without --privileged?): {namespaces}"
    )
    return installed_image(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def cluster(image: Image) -> Iterator[Cluster]:
    with Cluster(image) as running:
        yield running
        print(running.describe())  # pytest shows it when the test failed


@pytest.fixture
def registries() -> Any:
    """What the operator reads shard load from: in memory here; a module with Redis fleets overrides
    it with the real StoreRegistries."""
    return FakeRegistries()


@pytest_asyncio.fixture
async def fleets(api: Emulator, registries: Any) -> AsyncIterator[Api]:  # noqa: F811
    """The operator against kmock, as tests/k8s_operator/conftest.py's `cluster` fixture."""
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    async with operator_thread(registries, liveness=liveness):
        await wait_for(lambda: len(api[api.action.WATCH, api.resource(GF)]) >= 1, what="kopf's watch")
        yield Api(api, registries, liveness)


@pytest.fixture
def kubelet(api: Emulator, cluster: Cluster) -> Iterator[KubeletController]:  # noqa: F811
    controller = KubeletController(api, cluster)
    yield controller
    controller.close()
