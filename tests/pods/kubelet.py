"""A test kubelet: runs one pod's container as a real process the way a node would.

- env as the kubelet builds it (envFrom, then env in order; configMapKeyRef/secretKeyRef/fieldRef/
  resourceFieldRef, an unset limit being this host's CPUs or memory, a node's allocatable;
  `$(VAR)` expanded in env values, command and args), over the image's ENV and HOME;
- the image's USER (or the pod's runAsUser), no new privileges, no capabilities;
- its own network namespace on the cluster's bridge (its own IP, so every pod binds 0.0.0.0:50051);
- its own mount namespace: the volumes (emptyDir: a fresh directory) at their mountPaths, the cluster's
  hosts file as /etc/hosts, and with readOnlyRootFilesystem everything else remounted read-only;
- the service-account token (unless automountServiceAccountToken is false) at
  /var/run/secrets/kubernetes.io/serviceaccount with the API's CA, and KUBERNETES_SERVICE_HOST/PORT in
  the env, when the cluster serves an API (`apiserver.ApiAccess`);
- startup/readiness/liveness probes (gRPC health, TCP, HTTP GET) at their periods and thresholds, restarts
  (restartPolicy Always, OnFailure) with the kubelet's back-off, Succeeded/Failed once it ends for good;
- deletion: preStop exec inside the pod, SIGTERM, SIGKILL when terminationGracePeriodSeconds is spent.

Deviations from a node, each for a reason: no PID namespace (the process is not PID 1, signals go to it
directly); no cgroups (resources are not enforced); DNS is a hosts file the cluster rewrites, not a
DNS server; the first readiness probe runs as soon as the startup probe succeeds (a kubelet waits
for the readiness worker's next tick); the numba kernels come precompiled in the pod's
NUMBA_CACHE_DIR volume when it has one (`seed_numba_cache`), where a real pod compiles them at start
(~30 s of CPU per shard); and where this host keeps the interpreter under a private directory (pyenv
under /root), the pod's mount namespace shows only the interpreter there (prelude.expose).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .apiserver import MOUNT, ApiAccess
from .image import Image

log = logging.getLogger(__name__)

PRELUDE = Path(__file__).with_name("prelude.py")
Manifest = dict[str, Any]


class PodConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError: the container is never started."""


# --- $(VAR) expansion: k8s.io/kubernetes third_party/forked/golang/expansion --------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """`$(VAR)` -> its value when VAR is defined, else left as written; `$$` -> `$`; any other `$` stays."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                read, advance = "$", 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, advance = "$(", 1
                else:
                    name = rest[1:close]
                    read, advance = env.get(name, f"$({name})"), close + 1
            else:
                read, advance = "$" + rest[0], 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# --- env ----------------------------------------------------------------------------------------------


def secret_data(secret: Manifest) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return data | dict(secret.get("stringData") or {})


def field_ref(path: str, pod: Manifest) -> str:
    meta, status, spec = pod["metadata"], pod.get("status", {}), pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    if path in simple:
        return simple[path]
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return (meta.get(source) or {}).get(path[len(prefix) + 2 : -2], "")
    raise PodConfigError(f"unsupported fieldRef {path!r}")


QUANTITY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity, exactly (suffixes binary and decimal; no exponent form)."""
    text = str(value).strip()
    unit = next((u for u in sorted(QUANTITY_UNITS, key=len, reverse=True) if text.endswith(u)), "")
    return Fraction(text.removesuffix(unit) if unit else text) * QUANTITY_UNITS.get(unit, 1)


def resource_field_ref(ref: Mapping[str, Any], container: Manifest) -> str:
    """A resourceFieldRef as the kubelet resolves it: the container's limit or request over the
    divisor, rounded up; an unset limit is the node's allocatable (here: this host's CPUs, memory),
    an unset request the limit (the API server's defaulting) or else 0."""
    if ref.get("containerName", container["name"]) != container["name"]:
        raise PodConfigError(f"resourceFieldRef of another container {ref['containerName']!r}")
    kind, _, resource = ref["resource"].partition(".")
    if kind not in ("limits", "requests") or resource not in ("cpu", "memory"):
        raise PodConfigError(f"unsupported resourceFieldRef {ref['resource']!r}")
    resources = container.get("resources") or {}
    host = {
        "cpu": len(os.sched_getaffinity(0)),
        "memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }
    limit = (resources.get("limits") or {}).get(resource)
    value = (resources.get("requests") or {}).get(resource, limit) if kind == "requests" else limit
    amount = quantity(value) if value is not None else Fraction(host[resource] if kind == "limits" else 0)
    return str(math.ceil(amount / quantity(ref.get("divisor", 1))))


def _lookup(kind: str, store: Mapping[str, Manifest], ref: Mapping[str, Any]) -> dict[str, str] | None:
    obj = store.get(ref["name"])
    if obj is None:
        if ref.get("optional"):
            return None
        raise PodConfigError(f"{kind} {ref['name']!r} not found")
    return secret_data(obj) if kind == "secret" else dict(obj.get("data") or {})


def container_env(
    container: Manifest, pod: Manifest, configmaps: Mapping[str, Manifest], secrets: Mapping[str, Manifest]
) -> dict[str, str]:
    """The container's own variables as the kubelet makes them (kubelet_pods.go makeEnvironmentVariables):
    envFrom sources in order, then env in order, each value expanded over the variables before it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in source:
                data = _lookup(kind, configmaps if kind == "configmap" else secrets, source[key])
                env |= {prefix + k: v for k, v in (data or {}).items()}
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(source["fieldRef"]["fieldPath"], pod)
        elif "resourceFieldRef" in source:
            env[name] = resource_field_ref(source["resourceFieldRef"], container)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = (
                ("configmap", source["configMapKeyRef"])
                if "configMapKeyRef" in source
                else ("secret", source["secretKeyRef"])
            )
            data = _lookup(kind, configmaps if kind == "configmap" else secrets, ref)
            if data is not None and ref["key"] in data:
                env[name] = data[ref["key"]]
            elif not ref.get("optional"):
                raise PodConfigError(f"{kind} {ref['name']!r} has no key {ref['key']!r}")
        else:
            raise PodConfigError(f"unsupported valueFrom {sorted(source)}")
    return env


def container_command(container: Manifest, image: Image, env: Mapping[str, str]) -> list[str]:
    """command replaces ENTRYPOINT, args replace CMD (a command alone drops CMD); $(VAR) expanded."""
    if "command" in container:
        command, args = container["command"], container.get("args", [])
    else:
        command, args = image.config.entrypoint, container.get("args", image.config.cmd)
    return [expand(word, env) for word in [*command, *args]]


# --- network ------------------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, ["ip", *args], done.stdout, done.stderr.strip())


OWNERS = Path("/run/gamefleet-pods")  # gfpodsN -> pid of the test process whose bridge it is


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def owners_locked() -> Iterator[None]:
    """Held while bridges are taken or given back, by every test process on the host."""
    OWNERS.mkdir(parents=True, exist_ok=True)
    with open(OWNERS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_stale_networks() -> None:
    """The bridges and network namespaces of test processes that died without closing their cluster."""
    for owner in OWNERS.glob("gfpods*"):
        if _alive(int(owner.read_text() or 0)):
            continue
        remove_networks(int(owner.name.removeprefix("gfpods")))
        owner.unlink(missing_ok=True)


def remove_networks(n: int) -> None:
    """Bridge gfpodsN, its veths and its pods' network namespaces."""
    for veth in Path("/sys/class/net").glob(f"gfv{n}x*"):
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", veth.name)
    netns = Path("/run/netns")
    for name in sorted(os.listdir(netns)) if netns.is_dir() else []:
        if name.startswith(f"gfpod-{n}-"):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", name)
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("link", "del", f"gfpods{n}")


class PodNetwork:
    """A bridge with its own 10.244.N.0/24 (N unique on the host, so xdist workers coexist); each pod a
    network namespace with a veth on the bridge. The host (the tests, the probes) has .1."""

    def __init__(self) -> None:
        with owners_locked():
            remove_stale_networks()
            for n in range(1, 250):
                bridge = f"gfpods{n}"
                try:
                    # its own MAC: a bridge without one takes its lowest port's, and changes it when
                    # that pod's veth goes; the other pods' ARP entries for the gateway then point
                    # nowhere, and their Redis (on the gateway) drops out for seconds
                    _ip("link", "add", bridge, "address", f"02:00:0a:f4:{n:02x}:01", "type", "bridge")
                except subprocess.CalledProcessError:
                    continue
                break
            else:
                raise RuntimeError("no free gfpodsN bridge")
            (OWNERS / bridge).write_text(str(os.getpid()))
        self.n, self.bridge = n, bridge
        self.gateway = f"10.244.{n}.1"
        _ip("addr", "add", f"{self.gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        self._hosts = itertools.count(2)
        self._lock = threading.Lock()

    def attach(self) -> tuple[str, str]:
        """A new network namespace on the bridge: (its name, the pod IP)."""
        with self._lock:
            k = next(self._hosts)
        if k > 254:
            raise RuntimeError("pod IPs exhausted")
        netns, ip, veth = f"gfpod-{self.n}-{k}", f"10.244.{self.n}.{k}", f"gfv{self.n}x{k}"
        try:
            _ip("netns", "add", netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        except subprocess.CalledProcessError:
            self.detach(netns)
            raise
        return netns, ip

    def detach(self, netns: str) -> None:
        """Deletes the veth pair (at once: a namespace's devices go asynchronously), then the namespace."""
        n, k = netns.removeprefix("gfpod-").split("-")
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", f"gfv{n}x{k}")
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", netns)

    def close(self) -> None:
        """The bridge and every pod network of it (also those of pods that failed to start). Under
        the lock: another process may take bridge N once it is gone, and must find N's file its own."""
        with owners_locked():
            remove_networks(self.n)
            (OWNERS / self.bridge).unlink(missing_ok=True)


# --- probes -------------------------------------------------------------------------------------------


def probe_once(probe: Manifest, ip: str, ports: Mapping[str, int]) -> bool:
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        target = f"{ip}:{probe['grpc']['port']}"
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout
                )
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        try:
            url = f"http://{ip}:{port}{get.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return 200 <= reply.status < 400
        except OSError:  # HTTPError (4xx, 5xx) too
            return False
    if "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        port = ports[port] if isinstance(port, str) else port
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
        except OSError:
            return False
        return True
    raise NotImplementedError(f"probe {sorted(probe)}")


# --- the pod ------------------------------------------------------------------------------------------


@dataclass
class Termination:
    """How one container instance ended: the grace it had and when each step happened (monotonic)."""

    grace: float
    deleted_at: float
    pre_stop_exit: int | None = None
    pre_stop_done_at: float | None = None
    sigterm_at: float | None = None
    sigkill_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None

    @property
    def duration(self) -> float:
        assert self.exited_at is not None
        return self.exited_at - self.deleted_at

    @property
    def killed(self) -> bool:
        return self.sigkill_at is not None


@dataclass
class PodStatus:
    phase: str = "Pending"
    started: bool = False
    ready: bool = False
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    termination: Termination | None = None


def exit_code(returncode: int) -> int:
    """As a container runtime reports it: 128 + signal for a process a signal ended."""
    return 128 - returncode if returncode < 0 else returncode


class PodRunner:
    """One pod (one container) of a pod template, run for real. `on_change` is called on every status
    change (the cluster rewrites DNS and wakes its waiters)."""

    def __init__(
        self,
        template: Manifest,
        name: str,
        namespace: str,
        *,
        image: Image,
        network: PodNetwork,
        workdir: Path,
        hosts_file: Path,
        configmaps: Mapping[str, Manifest] | None = None,
        secrets: Mapping[str, Manifest] | None = None,
        hostname: str | None = None,
        subdomain: str | None = None,
        seed_numba_cache: bool = True,
        restart_backoff: float = 10.0,
        claims: Mapping[str, Path] | None = None,
        api: ApiAccess | None = None,
        on_change: Callable[[PodRunner], None] = lambda pod: None,
    ) -> None:
        spec = template["spec"]
        if len(spec["containers"]) != 1 or spec.get("initContainers"):
            raise NotImplementedError("one container, no init containers")
        self.name, self.namespace = name, namespace
        self.container: Manifest = spec["containers"][0]
        self.labels = dict(template.get("metadata", {}).get("labels") or {})
        self.manifest: Manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}-{id(self):x}",
                "labels": self.labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
            },
            "spec": {**spec, "hostname": hostname or name, **({"subdomain": subdomain} if subdomain else {})},
            "status": {},
        }
        self.image, self.network, self.hosts_file = image, network, hosts_file
        self.configmaps, self.secrets = configmaps or {}, secrets or {}
        self.seed_numba_cache = seed_numba_cache
        self.claims = claims or {}  # claimName -> its volume's directory (kept when the pod goes)
        self.api = api if spec.get("automountServiceAccountToken", True) else None
        self.restart_backoff = restart_backoff  # the kubelet's first back-off; doubles up to 300 s
        self.on_change = on_change
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=workdir))
        os.chmod(self.dir, 0o755)
        self.status = PodStatus()
        self.ip = ""
        self.netns = ""
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.log_path = self.dir / "container.log"

    # -- what the pod is ----------------------------------------------------------------------------

    @property
    def revision(self) -> str:
        """The controller's revision label (StatefulSet) or template hash (Deployment)."""
        value = self.labels.get("controller-revision-hash") or self.labels.get("pod-template-hash", "")
        return value.rsplit("-", 1)[-1]

    @property
    def grace(self) -> float:
        return self.manifest["spec"].get("terminationGracePeriodSeconds", 30)

    @property
    def ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if "name" in p}

    def security(self) -> tuple[int, int, list[int], bool, bool]:
        """(uid, gid, groups, readOnlyRoot, noNewPrivs): the container's securityContext over the pod's
        over the image's USER."""
        pod = self.manifest["spec"].get("securityContext") or {}
        own = self.container.get("securityContext") or {}
        merged = pod | own
        uid = merged.get("runAsUser", self.image.config.uid)
        gid = merged.get("runAsGroup", self.image.config.gid)
        if merged.get("runAsNonRoot") and uid == 0:
            raise PodConfigError("container has runAsNonRoot and image will run as root")
        groups = [*pod.get("supplementalGroups", []), *([pod["fsGroup"]] if "fsGroup" in pod else [])]
        no_new_privs = own.get("allowPrivilegeEscalation") is False
        return uid, gid, groups, bool(own.get("readOnlyRootFilesystem")), no_new_privs

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- start --------------------------------------------------------------------------------------

    def _volumes(self) -> list[dict[str, Any]]:
        """The container's mounts: emptyDir volumes as fresh directories (mode 0777, as a kubelet makes
        them), claims as their directories."""
        sources: dict[str, Path] = {}
        for volume in self.manifest["spec"].get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                sources[volume["name"]] = self.claims[volume["persistentVolumeClaim"]["claimName"]]
                continue
            if "emptyDir" not in volume:
                raise NotImplementedError(f"volume {volume['name']}: emptyDir or a claim")
            path = self.dir / "volumes" / volume["name"]
            path.mkdir(parents=True)
            os.chmod(path, 0o777)
            sources[volume["name"]] = path
        return [
            {
                "source": str(sources[m["name"]] / m.get("subPath", "")),
                "target": m["mountPath"],
                "readOnly": bool(m.get("readOnly")),
                "volume": True,
            }
            for m in self.container.get("volumeMounts") or []
        ]

    def _seed_numba(self, mounts: list[dict[str, Any]], uid: int, gid: int) -> None:
        cache = self.env.get("NUMBA_CACHE_DIR")
        seed = self.image.numba_seed
        if not (self.seed_numba_cache and cache and seed.is_dir()):
            return
        for m in mounts:
            relative = os.path.relpath(cache, m["target"])
            if not m["readOnly"] and not relative.startswith(".."):
                target = Path(m["source"]) / relative
                if not target.exists():
                    shutil.copytree(seed, target)
                    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(target)], check=True)
                return

    def _service_account(self) -> list[dict[str, Any]]:
        """The token volume a kubelet mounts (read-only) into a pod that does not opt out."""
        if self.api is None:
            return []
        directory = self.dir / "serviceaccount"
        directory.mkdir()
        for name, text in self.api.files(self.namespace).items():
            (directory / name).write_text(text)
            os.chmod(directory / name, 0o644)
        return [{"source": str(directory), "target": MOUNT, "readOnly": True, "volume": True}]

    def _files(self) -> list[dict[str, Any]]:
        resolv = self.dir / "resolv.conf"
        search = f"{self.namespace}.svc.cluster.local svc.cluster.local cluster.local"
        # no DNS server: names outside the hosts file fail at once (connection refused on 127.0.0.1)
        resolv.write_text(f"nameserver 127.0.0.1\nsearch {search}\noptions attempts:1 timeout:1\n")
        hostname = self.dir / "hostname"
        hostname.write_text(self.name + "\n")
        for path in (resolv, hostname):
            os.chmod(path, 0o644)
        return [
            {"source": str(self.hosts_file), "target": "/etc/hosts", "file": True},
            {"source": str(resolv), "target": "/etc/resolv.conf", "file": True},
            {"source": str(hostname), "target": "/etc/hostname", "file": True},
        ]

    def start(self) -> None:
        """Sets the pod up (network, volumes, env) and starts its container and its probes."""
        self.netns, self.ip = self.network.attach()
        node = self.network.gateway  # the host, as the pods see it: their "node"
        self.manifest["status"] |= {"podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": node}
        try:
            uid, gid, groups, read_only, no_new_privs = self.security()
            own = container_env(self.container, self.manifest, self.configmaps, self.secrets)
            services = self.api.env() if self.api else {}
            self.env = self.image.environment() | services | {"HOSTNAME": self.name} | own
            command = container_command(self.container, self.image, own)
            mounts = [*self._volumes(), *self._service_account()]
            self._seed_numba(mounts, uid, gid)
            dependencies = [
                {"source": str(source), "target": str(target), "readOnly": True}
                for source, target in self.image.dependencies
            ]  # first: a volume mounted over a source's parent (/tmp) would hide it
        except PodConfigError:
            self.network.detach(self.netns)
            self.netns = ""
            raise
        spec: dict[str, Any] = {
            "mounts": [*dependencies, *mounts, *self._files()],
            "readOnlyRoot": read_only,
            "hostname": self.name,
            "workdir": self.container.get("workingDir", self.image.config.workdir),
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "noNewPrivs": no_new_privs,
            "env": self.env,
            "command": command,
        }
        hidden = self.image.hidden_python_parent
        if hidden is not None:
            stage = self.dir / "python-stage"
            stage.mkdir()
            spec["expose"] = {
                "python_home": str(self.image.python_home),
                "hidden": str(hidden),
                "stage": str(stage),
            }
        self._spec = spec
        (self.dir / "spec.json").write_text(json.dumps(spec))
        self._start_container()
        self._set(phase="Running")
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{self.name}", daemon=True)
        self._thread.start()

    def _start_container(self) -> None:
        command = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--uts"]
        command += ["--propagation", "private", "--", sys.executable, "-I", "-S", str(PRELUDE)]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [*command, str(self.dir / "spec.json")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def exec(self, command: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        """`kubectl exec`: the command in the running container's namespaces, user and environment."""
        assert self.process is not None
        spec = self._spec | {"enter": self.process.pid, "command": command}
        path = self.dir / f"exec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        # started on the host (this interpreter and the prelude may live where the pod cannot see,
        # under /tmp), the prelude joins the container's namespaces itself
        return subprocess.run(
            [sys.executable, "-I", "-S", str(PRELUDE), str(path)],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    # -- the kubelet's loop: probes, restarts --------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        with self._lock:
            changed = any(getattr(self.status, k) != v for k, v in changes.items())
            for k, v in changes.items():
                setattr(self.status, k, v)
        if changed:
            self.manifest["status"]["phase"] = self.status.phase
            self.on_change(self)

    def _run(self) -> None:
        """Probe on schedule; restart an exited or unhealthy container with back-off."""
        backoff = self.restart_backoff
        while not self._stop.is_set():
            healthy = self._probe_container()
            if self._stop.is_set():
                return
            assert self.process is not None
            if healthy is False:  # startup or liveness failed: the kubelet kills the container
                self._kill_container(self.grace)
            code = exit_code(self.process.wait())
            self.status.exit_codes.append(code)
            policy = self.manifest["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):  # a pod of a Job, a test
                self._set(ready=False, started=False, phase="Succeeded" if code == 0 else "Failed")
                return
            self._set(ready=False, started=False, restarts=self.status.restarts + 1)
            log.info("%s: container exited %s, restarting in %.0fs", self.name, code, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 300.0)
            self._start_container()

    def _probe_container(self) -> bool | None:
        """Runs the probes of one container instance until it exits (None), fails startup or liveness
        (False), or the pod stops (None)."""
        c = self.container
        probes = {kind: c.get(kind) for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        started_at = time.monotonic()
        due = {kind: started_at + p.get("initialDelaySeconds", 0) for kind, p in probes.items() if p}
        counts = {kind: [0, 0] for kind in due}  # successes, failures in a row
        if not probes["startupProbe"]:
            self._set(started=True)
        if not probes["readinessProbe"]:
            self._set(ready=self.status.started)
        while not self._stop.is_set():
            assert self.process is not None
            if self.process.poll() is not None:
                return None
            now = time.monotonic()
            for kind in sorted(due, key=due.get):
                if due[kind] > now or (kind != "startupProbe" and not self.status.started):
                    continue
                if kind == "startupProbe" and self.status.started:
                    continue
                probe = probes[kind]
                ok = probe_once(probe, self.ip, self.ports)
                count = counts[kind]
                count[:] = [count[0] + 1, 0] if ok else [0, count[1] + 1]
                due[kind] = time.monotonic() + probe.get("periodSeconds", 10)
                if kind == "startupProbe":
                    if ok:
                        self._set(started=True)
                        for other in ("readinessProbe", "livenessProbe"):  # see the module docstring
                            if other in due:
                                due[other] = min(due[other], time.monotonic())
                        if not probes["readinessProbe"]:
                            self._set(ready=True)
                    elif count[1] >= probe.get("failureThreshold", 3):
                        return False
                elif kind == "readinessProbe":
                    if ok and count[0] >= probe.get("successThreshold", 1):
                        self._set(ready=not self.terminating)
                    elif not ok and count[1] >= probe.get("failureThreshold", 3):
                        self._set(ready=False)
                elif not ok and count[1] >= probe.get("failureThreshold", 3):
                    return False
            wait = min(due.values(), default=time.monotonic() + 0.5) - time.monotonic()
            self._stop.wait(max(0.0, min(wait, 0.2)))
        return None

    # -- termination --------------------------------------------------------------------------------

    @property
    def terminating(self) -> bool:
        return self.status.termination is not None

    def _kill_container(self, grace: float) -> Termination:
        """preStop exec, SIGTERM, SIGKILL when the grace period is spent (kuberuntime killContainer)."""
        assert self.process is not None
        record = Termination(grace=grace, deleted_at=time.monotonic())
        deadline = record.deleted_at + grace
        pre_stop = (self.container.get("lifecycle") or {}).get("preStop")
        if pre_stop and self.process.poll() is None:
            if "exec" not in pre_stop:
                raise NotImplementedError(f"preStop {sorted(pre_stop)}")
            try:
                done = self.exec(pre_stop["exec"]["command"], timeout=max(0.1, deadline - time.monotonic()))
                record.pre_stop_exit = done.returncode
            except subprocess.TimeoutExpired:
                record.pre_stop_exit = None
            record.pre_stop_done_at = time.monotonic()
        # a preStop that used the whole grace still leaves SIGTERM two seconds (kubelet's minimum)
        remaining = max(deadline - time.monotonic(), 2.0 if pre_stop else 0.0)
        if self.process.poll() is None:
            record.sigterm_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(remaining)
            except subprocess.TimeoutExpired:
                record.sigkill_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        record.exited_at = time.monotonic()
        record.exit_code = exit_code(self.process.returncode)
        return record

    def delete(self, grace: float | None = None) -> Termination:
        """Deletes the pod: not ready at once (endpoints drop it), then the container is killed with the
        pod's grace period (or `grace`, as `kubectl delete --grace-period`), then the sandbox goes."""
        record = Termination(grace=self.grace if grace is None else grace, deleted_at=time.monotonic())
        self.status.termination = record
        self._set(ready=False)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.process is not None:
            final = self._kill_container(record.grace)
            final.deleted_at = record.deleted_at
            self.status.termination = final
            self.status.exit_codes.append(final.exit_code)
        if self.netns:
            self.network.detach(self.netns)
        self._set(phase="Succeeded" if self.status.termination.exit_code == 0 else "Failed", started=False)
        return self.status.termination

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
