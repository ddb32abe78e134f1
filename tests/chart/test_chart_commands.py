"""The commands the chart's pods run, run here against a real shard: the `helm test` hook's
health check and the load-test Job's wait and load (its flags are the real CLI's)."""

from __future__ import annotations

import json

from gameserver.cli import main

from .helm import FULLNAME, NAMESPACE, find, rendered

FLEET = f"gamefleet.{NAMESPACE}.svc:50051"


def aimed_at(args: list[str], address: str, **flags: str) -> list[str]:
    """The pod's args with the fleet address replaced by a local one, and some flags changed."""
    args = [a.replace(FLEET, address) for a in args]
    for flag, value in flags.items():
        args = [f"--{flag}={value}" if a.startswith(f"--{flag}=") else a for a in args]
    return args


def test_helm_test_hook_passes_against_a_serving_fleet(shard) -> None:
    container = find(rendered("loadtest"), "Pod", f"{FULLNAME}-test-fleet-health")["spec"]["containers"][0]
    assert container["command"][0] == "gamefleet"
    assert main([*container["command"][1:], *aimed_at(container["args"], shard.address)]) == 0


def test_loadtest_job_waits_then_reports_json_on_stdout(serve_process, capsys) -> None:
    """Against a `gamefleet serve` process, as in the cluster: the load test's own kernels
    compile in this process without stalling the shard."""
    address = serve_process.address
    pod = find(rendered("loadtest"), "Job", f"{FULLNAME}-loadtest-1")["spec"]["template"]["spec"]
    wait = pod["initContainers"][0]
    assert main([*wait["command"][1:], *aimed_at(wait["args"], address)]) == 0
    load = pod["containers"][0]
    # 5 requests per agent: a few seconds once the kernels are compiled, however long that takes
    args = [*aimed_at(load["args"], address, duration="120", agents="2"), "--max-requests=5"]
    assert main([*load["command"][1:], *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 10 and report["errors"]["total"] == 0
