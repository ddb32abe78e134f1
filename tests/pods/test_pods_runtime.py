"""The test kubelet runs a container as the image and the pod spec say: a probe process reports what
it sees from inside (its gameserver, user, privileges, filesystem, env, network, names), and pods
show the kubelet's probe, config-error and termination rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dockerfile import ROOT, UID

from .cluster import Cluster
from .image import Image
from .kubelet import PodConfigError, PodNetwork

REPORT = r"""
import errno, json, os, socket, sys
import gameserver, gamefleet_operator

def write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as error:
        return errno.errorcode[error.errno]
    return "ok"

status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
report = {
    "gameserver": gameserver.__file__,
    "operator": gamefleet_operator.__file__,
    "sys_path": sys.path,
    "executable": sys.executable,
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "cwd": os.getcwd(), "hostname": socket.gethostname(),
    "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
    "env": dict(os.environ),
    "write": {p: write(p) for p in ("/etc/probe", "/probe", "/var/tmp/probe", sys.argv[1], "/tmp/probe")},
    "numba_cache": sorted(os.listdir(os.environ["NUMBA_CACHE_DIR"])),
    "resolve": {
        name: sorted({i[4][0] for i in socket.getaddrinfo(name, 1, 0, socket.SOCK_STREAM)})
        for name in ("report", "report.default.svc", "report.default.svc.cluster.local")
    },
    "interfaces": [name for _, name in socket.if_nameindex()],
}
print("REPORT " + json.dumps(report), flush=True)
import time
time.sleep(300)
"""


def deployment(name: str, container: dict[str, Any], **pod: Any) -> dict[str, Any]:
    labels = {"app": name}
    spec = {"containers": [{"name": "c", **container}], "terminationGracePeriodSeconds": 5, **pod}
    template = {"metadata": {"labels": labels}, "spec": spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
    }


SERVICE = "report.default.svc"


def one_pod(cluster: Cluster, name: str) -> Any:
    (pod,) = cluster.workload_pods("Deployment", name)
    return pod


@pytest.fixture(scope="module")
def report(image: Image) -> Iterator[dict[str, Any]]:
    """One pod of the fleet's shape (restricted security context, /tmp emptyDir, env from a ConfigMap,
    a Secret and fieldRefs) that reports what it sees."""
    container = {
        "command": ["python", "-c", REPORT, str(ROOT / "probe")],
        "envFrom": [{"configMapRef": {"name": "report-config"}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "report-secret", "key": "password"}}},
            {"name": "ADDRESS", "value": "$(POD_NAME).$(SERVICE):50051"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID},
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    with Cluster(image) as cluster:
        cluster.apply(
            [
                {"kind": "ConfigMap", "metadata": {"name": "report-config"}, "data": {"SERVICE": SERVICE}},
                {"kind": "Secret", "metadata": {"name": "report-secret"}, "stringData": {"password": "pw"}},
                {"kind": "Service", "metadata": {"name": "report"}, "spec": {"selector": {"app": "report"}}},
                deployment("report", container, **pod_spec),
            ]
        )  # fmt: skip
        pod = one_pod(cluster, "report")
        cluster.wait(lambda: "REPORT " in pod.log() or pod.process.poll() is not None, 30, "the report")
        line = next((x for x in pod.log().splitlines() if x.startswith("REPORT ")), None)
        assert line is not None, pod.log()
        yield json.loads(line.removeprefix("REPORT ")) | {"pod": pod.name, "ip": pod.ip}


def test_the_pod_runs_the_installed_wheel_never_the_source_tree(report: dict, image: Image) -> None:
    for module in ("gameserver", "operator"):
        assert report[module].startswith(str(image.venv) + "/"), report[module]
    assert str(ROOT) not in report["sys_path"] and str(ROOT / "operator") not in report["sys_path"]
    assert report["executable"] == str(image.venv / "bin" / "python")


def test_the_pod_runs_as_the_images_user_without_privileges(report: dict) -> None:
    assert (report["uid"], report["gid"], report["groups"]) == (UID, UID, [])
    assert report["no_new_privs"] == "1" and int(report["cap_eff"], 16) == 0


def test_the_root_filesystem_is_read_only_and_the_emptydir_is_writable(report: dict) -> None:
    writes = report["write"]
    assert writes.pop("/tmp/probe") == "ok"
    # a checkout under /tmp is not even there: the /tmp emptyDir covers it
    source_tree = "ENOENT" if ROOT.is_relative_to("/tmp") else "EROFS"
    assert writes.pop(str(ROOT / "probe")) == source_tree
    assert writes == dict.fromkeys(writes, "EROFS")  # /etc, /, /var/tmp
    assert report["numba_cache"]  # NUMBA_CACHE_DIR=/tmp/numba: the emptyDir, seeded


def test_the_environment_is_the_dockerfiles_then_the_pods(report: dict) -> None:
    env = report["env"]
    assert env["NUMBA_CACHE_DIR"] == "/tmp/numba" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/nonexistent" and env["HOSTNAME"] == report["pod"]
    assert env["POD_NAME"] == report["pod"] and env["POD_NAMESPACE"] == "default"
    assert env["POD_IP"] == report["ip"] and env["PASSWORD"] == "pw"
    assert env["ADDRESS"] == f"{report['pod']}.report.default.svc:50051"
    assert report["cwd"] == "/tmp" and report["hostname"] == report["pod"]


def test_the_pod_has_its_own_network_and_resolves_service_names(report: dict) -> None:
    assert sorted(report["interfaces"]) == ["eth0", "lo"]
    assert report["resolve"] == {name: [report["ip"]] for name in report["resolve"]}


def test_a_container_without_its_configmap_is_never_started(cluster: Cluster) -> None:
    container = {"command": ["true"], "envFrom": [{"configMapRef": {"name": "absent"}}]}
    with pytest.raises(PodConfigError, match="absent"):
        cluster.apply([deployment("broken", container)])
    assert one_pod(cluster, "broken").process is None


def test_run_as_non_root_refuses_uid_0(cluster: Cluster) -> None:
    pod = {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}
    with pytest.raises(PodConfigError, match="runAsNonRoot"):
        cluster.apply([deployment("rootful", {"command": ["true"]}, **pod)])


SERVE = r"""
import signal, socket, sys, time
def stop(*_):
    print("SIGTERM", open("/tmp/pre-stop").read(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(float(sys.argv[1]))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
while True:
    s.accept()[0].close()
"""


@pytest.mark.slow
def test_readiness_then_pre_stop_in_the_pod_then_sigterm(cluster: Cluster) -> None:
    container = {
        "command": ["python", "-c", SERVE, "1.5"],
        "env": [
            {"name": "MESSAGE", "value": "pre-stop saw $(HOSTNAME_ALIAS)"},
            {"name": "HOSTNAME_ALIAS", "value": "x"},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
        "lifecycle": {
            "preStop": {"exec": {"command": ["sh", "-c", 'echo "$MESSAGE $(id -u)" > /tmp/pre-stop']}}
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    cluster.apply([deployment("web", container, volumes=[{"name": "tmp", "emptyDir": {}}])])
    pod = one_pod(cluster, "web")
    assert not pod.status.ready
    cluster.wait_ready([pod.name], timeout=20)
    ended = cluster.delete([pod.name])[pod.name]
    assert ended.pre_stop_exit == 0 and not ended.killed and ended.exit_code == 0
    assert f"SIGTERM pre-stop saw $(HOSTNAME_ALIAS) {UID}" in pod.log()
    assert ended.pre_stop_done_at <= ended.sigterm_at <= ended.exited_at


@pytest.mark.slow
def test_a_process_that_ignores_sigterm_is_killed_when_the_grace_period_ends(cluster: Cluster) -> None:
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
    ignore += "time.sleep(60)"
    cluster.apply(
        [deployment("stubborn", {"command": ["python", "-c", ignore]}, terminationGracePeriodSeconds=1)]
    )
    pod = one_pod(cluster, "stubborn")
    cluster.wait(lambda: "up" in pod.log(), 20, "the process")
    ended = cluster.delete([pod.name])[pod.name]
    assert ended.killed and ended.exit_code == 137
    assert 1.0 <= ended.duration < 2.0
    assert os.path.exists(f"/proc/{pod.process.pid}") is False


@pytest.mark.slow
def test_an_exited_or_unhealthy_container_is_restarted_in_the_same_pod(image: Image) -> None:
    crash = {"command": ["python", "-c", "raise SystemExit(3)"]}
    unhealthy = {  # nothing listens on 8080: one failed liveness probe and the kubelet kills it
        "command": ["sleep", "60"],
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
    }
    with Cluster(image, restart_backoff=0.2) as cluster:
        cluster.apply(
            [deployment("crash", crash), deployment("unhealthy", unhealthy, terminationGracePeriodSeconds=1)]
        )
        crashing, killed = one_pod(cluster, "crash"), one_pod(cluster, "unhealthy")
        ip = killed.ip
        cluster.wait(lambda: crashing.status.restarts >= 2 and killed.status.restarts >= 1, 20, "restarts")
        assert crashing.status.exit_codes[:2] == [3, 3]
        assert killed.status.exit_codes[0] == 143 and killed.ip == ip  # SIGTERM; the pod (and IP) stays


def test_dns_lists_ready_pods_and_with_publish_not_ready_addresses_every_running_pod(
    cluster: Cluster,
) -> None:
    """The harness's stand-in for endpoints and CoreDNS: a ClusterIP name resolves to ready pods only;
    a headless Service publishing not-ready addresses to every running pod, each under its own
    `<pod>.<service>` name (first, so the reverse lookup gives it)."""
    labels = {"app": "db"}
    never = {"command": ["sleep", "60"]}
    probe = {"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}
    stateful = {
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "serviceName": "db-pods",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", **never, **probe}]},
            },
        },
    }
    headless = {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels}
    cluster.apply(
        [
            {"kind": "Service", "metadata": {"name": "db-pods"}, "spec": headless},
            {"kind": "Service", "metadata": {"name": "db"}, "spec": {"selector": labels}},
            stateful,
        ]
    )
    pods = [cluster.pods["db-0"], cluster.pods["db-1"]]
    assert sorted(cluster.resolve("db-pods.default.svc")) == sorted(p.ip for p in pods)
    assert cluster.resolve("db.default.svc") == [] and not any(p.status.ready for p in pods)
    for pod in pods:
        line = next(x.split() for x in cluster.hosts().splitlines() if x.startswith(pod.ip + "\t"))
        assert line[1] == f"{pod.name}.db-pods.default.svc.cluster.local"
    assert cluster.workloads["StatefulSet", "db"]["status"] == {
        "replicas": 2,
        "readyReplicas": 0,
        "updatedReplicas": 2,
    }

    cluster.scale("StatefulSet", "db", 1)  # the highest ordinal goes, and its names with it
    assert list(cluster.pods) == ["db-0"] and pods[1].status.termination is not None
    assert cluster.resolve("db-pods.default.svc") == [pods[0].ip] and pods[1].ip not in cluster.hosts()


def test_the_network_of_a_killed_test_process_is_removed_by_the_next_one(image: Image) -> None:
    tests = ROOT / "tests"
    code = (
        f"import sys; sys.path[:0] = [{str(tests)!r}]; from pods.kubelet import PodNetwork; "
        "n = PodNetwork(); print(n.n, n.attach()[0], flush=True); import time; time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT) as child:
        n, netns = child.stdout.readline().split()
        child.kill()
    assert os.path.exists(f"/run/netns/{netns}")
    PodNetwork().close()
    assert not os.path.exists(f"/run/netns/{netns}") and not os.path.exists(f"/sys/class/net/gfv{n}x2")


def test_the_gateway_keeps_its_address_when_pods_come_and_go() -> None:
    """Every pod's ARP entry for the gateway (the tests' Redis, the probes) stays right: the bridge's
    MAC does not follow the veth of a pod that went (a Linux bridge's default)."""
    network = PodNetwork()
    try:
        mac = Path(f"/sys/class/net/{network.bridge}/address")
        first, _ = network.attach()
        second, _ = network.attach()
        before = mac.read_text()
        network.detach(first)
        network.detach(second)
        assert mac.read_text() == before
    finally:
        network.close()
