"""The chart as `helm install`, `helm test` and `helm uninstall` run it, on real pods: its operator
Deployment (in-cluster, two replicas) reconciles the chart's fleet (`fleet.enabled`, the default
fleet values) to Ready and a client plays through the fleet Service; the chart's test pod passes;
the pre-delete hook Job deletes the fleet and waits for the operator's cleanup."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart.helm import CHART, helm
from k8s_operator.harness import Cluster as Api
from k8s_operator.harness import Emulator, wait_for

from .cluster import Cluster
from .controller import KubeletController
from .operated import operator_pods, operator_running, play, ready

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

# the fleet and the operator; the bundled Prometheus, Grafana and Jaeger are other images
VALUES = {"fleet": {"enabled": True}, "prometheus": {"enabled": False}, "grafana": {"enabled": False},
          "jaeger": {"enabled": False}}  # fmt: skip


def rendered() -> list[dict[str, Any]]:
    out = helm("template", "gf", str(CHART), "--namespace", "default", values=VALUES)
    return [o for o in yaml.safe_load_all(out) if o]


def one(objects: list[dict[str, Any]], kind: str, hook: str | None = None) -> dict[str, Any]:
    """The object of `kind` that is (or, hook None, is not) a helm hook of that kind."""
    (found,) = [
        o for o in objects
        if o["kind"] == kind and (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == hook
    ]  # fmt: skip
    return found


async def test_the_chart_installs_its_fleet_which_plays_passes_helm_test_and_uninstalls_clean(
    api: Emulator, cluster: Cluster, kubelet: KubeletController, tmp_path: Path
) -> None:
    objects = rendered()
    fleet = one(objects, "GameFleet")
    async with operator_running(api, cluster, one(objects, "Deployment"), tmp_path):
        await wait_for(lambda: len(operator_pods(cluster)) == 2, 120, "the chart's two operator pods")
        fleets = Api(api, None, "")
        await fleets.apply(fleet)
        name = fleet["metadata"]["name"]
        await ready(fleets, name)
        await asyncio.to_thread(play, cluster, fleet["spec"]["shards"], name)

        test_pod = await asyncio.to_thread(cluster.run, one(objects, "Pod", hook="test"), 120)
        assert test_pod.status.phase == "Succeeded", test_pod.log()

        uninstall = await asyncio.to_thread(cluster.run, one(objects, "Job", hook="pre-delete"), 240)
        assert uninstall.status.phase == "Succeeded", uninstall.log()
        assert fleets.fleet(name) is None, "the hook returns once the operator's cleanup is done"
        await wait_for(
            lambda: not [p for p in cluster.pods if p.startswith(f"{name}-")], 90, "the fleet's pods"
        )
