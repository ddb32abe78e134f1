"""Fixtures of the pod-level tests: the image (the wheel installed once per content, shared by
sessions and xdist workers) and a cluster of real pods, torn down however the test ends."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from .cluster import Cluster
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
