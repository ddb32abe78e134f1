"""A cluster of real pods from rendered manifests: ConfigMaps and Secrets feed the pods' env,
StatefulSets and Deployments become pods run by the test kubelet, Services become DNS. Services,
ConfigMaps and Secrets are those of one namespace; a workload of another (the operator's, in
gamefleet-system) runs its pods in that namespace on the same pod network, as a cluster's is flat.

DNS is one hosts file every pod mounts as /etc/hosts, rewritten in place on every pod change (same
inode, so the bind mounts see it): a StatefulSet pod behind its governing headless Service gets
`<pod>.<svc>.<ns>.svc.cluster.local` (first on its line: the reverse record); every Service name
(`<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `...cluster.local`) maps to its selected pods that are
ready, or to every running pod with publishNotReadyAddresses. A ClusterIP Service has no virtual IP
here: its name resolves to its ready endpoints (the tests connect to them through `resolve`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from test_dockerfile import IMAGE

from .apiserver import ApiAccess
from .image import Image, redis_image
from .kubelet import Manifest, PodNetwork, PodRunner, Termination

SUFFIX = "svc.cluster.local"


def repository(reference: str) -> str:
    """`ghcr.io/gamefleet/gamefleet:0.1.0` -> `ghcr.io/gamefleet/gamefleet`: any tag runs this tree."""
    name, _, tag = reference.rpartition(":")
    return name if name and "/" not in tag else reference


REVISION_LABEL = "controller-revision-hash"  # StatefulSet pods
TEMPLATE_HASH_LABEL = "pod-template-hash"  # Deployment (ReplicaSet) pods


def revision(workload: Manifest) -> str:
    """The pod template's hash: what tells an updated pod from an old one."""
    return hashlib.sha256(json.dumps(workload["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]


def ordinal(pod: str) -> int:
    return int(pod.rsplit("-", 1)[1])


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Cluster:
    """Runs the pods of applied workloads; `wait` blocks on conditions (pod status changes)."""

    def __init__(
        self,
        image: Image,
        namespace: str = "default",
        *,
        seed_numba_cache: bool = True,
        restart_backoff: float = 10.0,
        images: dict[str, Image] | None = None,
        api: ApiAccess | None = None,
    ) -> None:
        self.image, self.namespace, self.seed_numba_cache = image, namespace, seed_numba_cache
        self.images = {repository(IMAGE): image, "redis": redis_image()} | (images or {})
        self.restart_backoff = restart_backoff
        self.api = api  # what pods get to reach the API server (their service-account token)
        self.dir = Path(tempfile.mkdtemp(prefix="cluster.", dir=image.root.parent))
        os.chmod(self.dir, 0o755)
        self.hosts_file = self.dir / "hosts"
        self.hosts_file.write_text("127.0.0.1\tlocalhost\n")
        os.chmod(self.hosts_file, 0o644)
        self.network = PodNetwork()
        self.configmaps: dict[str, Manifest] = {}
        self.secrets: dict[str, Manifest] = {}
        self.services: dict[str, Manifest] = {}
        # names served from outside this namespace (another namespace's Service): name -> IP
        self.external: dict[str, str] = {}
        self.workloads: dict[tuple[str, str], Manifest] = {}  # (kind, name) -> StatefulSet/Deployment
        self.pods: dict[str, PodRunner] = {}
        self.gone: list[PodRunner] = []
        self.changed = threading.Condition()
        self._serial = itertools.count(1)
        self.events: list[tuple[float, str, str]] = []  # (monotonic, "created"/"ready"/"deleted", pod)

    # -- objects -------------------------------------------------------------------------------------

    def apply(self, manifests: Iterable[Manifest]) -> None:
        """Stores ConfigMaps/Secrets/Services (pods created from now on see them), then reconciles each
        workload (others kinds are ignored)."""
        workloads = []
        for m in manifests:
            name, kind = m["metadata"]["name"], m["kind"]
            if kind == "ConfigMap":
                self.configmaps[name] = m
            elif kind == "Secret":
                self.secrets[name] = m
            elif kind == "Service":
                self.services[name] = m
            elif kind in ("StatefulSet", "Deployment"):
                old = self.workloads.get((kind, name), {})
                self.workloads[kind, name] = copy.deepcopy(m) | {"status": old.get("status", {})}
                workloads.append(m)
        self._write_hosts()
        for workload in workloads:
            self.reconcile(workload["kind"], workload["metadata"]["name"])

    def workload_pods(self, kind: str, name: str) -> list[PodRunner]:
        selector = self.workloads[kind, name]["spec"]["selector"]["matchLabels"]
        return [p for p in list(self.pods.values()) if selects(selector, p.labels)]

    def reconcile(self, kind: str, name: str) -> None:
        """The workload's pods to its spec, synchronously (a controller would, over several syncs):
        StatefulSet: missing ordinals created, the highest removed first (OrderedReady: one at a time,
        each Ready before the next), then RollingUpdate from the highest ordinal down to `partition`,
        each updated pod Ready before the next goes (OnDelete: none). Deployment: the newest pods removed
        first, RollingUpdate one pod at a time (surge a new pod and wait for it to be Ready, or with
        maxSurge 0 remove an old one first), Recreate all at once. New pods get the template as it is."""
        workload = self.workloads[kind, name]
        spec = workload["spec"]
        replicas = spec.get("replicas", 1)
        pods = self.workload_pods(kind, name)
        if kind == "StatefulSet":
            ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
            wanted = [f"{name}-{i}" for i in range(replicas)]
            extra = sorted((p.name for p in pods if p.name not in wanted), key=ordinal, reverse=True)
            self._scale_down(extra, one_by_one=ordered)
            names = {p.name for p in pods}
            self._start([self._pod(workload, n) for n in wanted if n not in names], one_by_one=ordered)
            strategy = spec.get("updateStrategy", {"type": "RollingUpdate"})
            if strategy["type"] == "RollingUpdate":
                partition = strategy.get("rollingUpdate", {}).get("partition", 0)
                for pod_name in wanted[partition:][::-1]:
                    if self.pods[pod_name].revision != revision(workload):
                        self.delete([pod_name])
                        self._start([self._pod(workload, pod_name)], one_by_one=True)
            return
        self._scale_down([p.name for p in pods[replicas:]][::-1], one_by_one=False)
        self._start([self._pod(workload) for _ in range(max(0, replicas - len(pods)))])
        old = [p.name for p in self.workload_pods(kind, name) if p.revision != revision(workload)]
        strategy = spec.get("strategy", {"type": "RollingUpdate"})
        if strategy["type"] == "Recreate":
            self.delete(old)
            self._start([self._pod(workload) for _ in old])
            return
        surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%") not in (0, "0", "0%")
        for pod_name in old:
            if surge:
                self._start([self._pod(workload)], one_by_one=True)
            self.delete([pod_name])
            if not surge:
                self._start([self._pod(workload)], one_by_one=True)

    def scale(self, kind: str, name: str, replicas: int) -> None:
        """`kubectl scale`: the workload's replicas, then its pods to match."""
        self.workloads[kind, name]["spec"]["replicas"] = replicas
        self.reconcile(kind, name)

    def _scale_down(self, names: list[str], one_by_one: bool) -> None:
        for batch in ([n] for n in names) if one_by_one else [names]:
            if batch:
                self.delete(batch)

    def _start(self, pods: list[PodRunner], one_by_one: bool = False) -> None:
        self.events.extend((time.monotonic(), "created", p.name) for p in pods)
        if one_by_one:
            for pod in pods:
                pod.start()
                self.wait_ready([pod.name], timeout=120)
            return
        with ThreadPoolExecutor(max(1, len(pods))) as pool:
            list(pool.map(PodRunner.start, pods))

    def image_for(self, container: Manifest) -> Image:
        """The image a container names, by repository (the tag is not checked); none: the project's."""
        if "image" not in container:
            return self.image
        if repository(container["image"]) not in self.images:
            raise NotImplementedError(f"no image for {container['image']!r}: {sorted(self.images)}")
        return self.images[repository(container["image"])]

    def _claims(self, workload: Manifest, pod: str) -> dict[str, Path]:
        """The StatefulSet's volumeClaimTemplates as directories `<claim>-<pod>`, kept across pods."""
        claims = {}
        for template in workload["spec"].get("volumeClaimTemplates") or []:
            claim = f"{template['metadata']['name']}-{pod}"
            path = self.dir / "claims" / claim
            if not path.exists():
                path.mkdir(parents=True)
                os.chmod(path, 0o777)
            claims[claim] = path
        return claims

    def _pod(self, workload: Manifest, name: str | None = None) -> PodRunner:
        """A pod of the workload's template as it is now, labelled with its revision as the controllers
        do; a StatefulSet's with its ordinal's name, claims and DNS subdomain."""
        template = copy.deepcopy(workload["spec"]["template"])
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        owner, subdomain = workload["metadata"]["name"], None
        if workload["kind"] == "StatefulSet":
            assert name is not None
            labels |= {
                REVISION_LABEL: f"{owner}-{revision(workload)}",
                "statefulset.kubernetes.io/pod-name": name,
            }
            subdomain = workload["spec"]["serviceName"]
        else:
            labels[TEMPLATE_HASH_LABEL] = revision(workload)
            name = f"{owner}-{revision(workload)}-{next(self._serial):05x}"
        claims = self._claims(workload, name)
        for claim in workload["spec"].get("volumeClaimTemplates") or []:  # as the StatefulSet controller
            volume = claim["metadata"]["name"]
            template["spec"].setdefault("volumes", []).append(
                {"name": volume, "persistentVolumeClaim": {"claimName": f"{volume}-{name}"}}
            )
        namespace = workload["metadata"].get("namespace", self.namespace)  # one pod network for all
        return self._runner(template, name, namespace, subdomain=subdomain, claims=claims)

    def _runner(
        self, template: Manifest, name: str, namespace: str, *, subdomain: str | None = None,
        claims: dict[str, Path] | None = None,
    ) -> PodRunner:  # fmt: skip
        pod = PodRunner(
            template, name, namespace,
            image=self.image_for(template["spec"]["containers"][0]), network=self.network, workdir=self.dir,
            hosts_file=self.hosts_file, configmaps=self.configmaps, secrets=self.secrets, subdomain=subdomain,
            seed_numba_cache=self.seed_numba_cache, restart_backoff=self.restart_backoff, claims=claims,
            api=self.api, on_change=self._pod_changed,
        )  # fmt: skip
        self.pods[name] = pod
        return pod

    def run(self, manifest: Manifest, timeout: float) -> PodRunner:
        """A bare Pod (a helm test) or a Job (a helm hook) run to its end, a Job's pod retried up to its
        backoffLimit: the last pod, Succeeded or Failed."""
        job = manifest["kind"] == "Job"
        meta = manifest["metadata"]
        template = manifest["spec"]["template"] if job else {"metadata": meta, "spec": manifest["spec"]}
        for _ in range(manifest["spec"].get("backoffLimit", 6) + 1 if job else 1):
            name = f"{meta['name']}-{next(self._serial):05x}" if job else meta["name"]
            pod = self._runner(copy.deepcopy(template), name, meta.get("namespace", self.namespace))
            self._start([pod])
            self.wait(lambda p=pod: p.status.phase in ("Succeeded", "Failed"), timeout, f"{name} to end")
            if pod.status.phase == "Succeeded":
                break
        return pod

    # -- status --------------------------------------------------------------------------------------

    def _pod_changed(self, pod: PodRunner) -> None:
        self._write_hosts()
        if pod.status.ready:
            self.events.append((time.monotonic(), "ready", pod.name))
        for (kind, name), workload in list(self.workloads.items()):
            if selects(workload["spec"]["selector"]["matchLabels"], pod.labels):
                pods = self.workload_pods(kind, name)
                workload.setdefault("status", {}).update(
                    replicas=len(pods),
                    readyReplicas=sum(p.status.ready for p in pods),
                    updatedReplicas=sum(p.revision == revision(workload) for p in pods),
                )
        with self.changed:
            self.changed.notify_all()

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `condition()`: re-checked on every pod change, and every 0.1 s for what no pod status
        announces (a line in a log, a file)."""
        deadline = time.monotonic() + timeout
        while not condition():  # not under the lock: a condition may make calls to the pods
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout}s\n{self.describe()}")
            with self.changed:
                self.changed.wait(0.1)

    def wait_ready(self, names: Iterable[str], timeout: float = 60.0) -> None:
        names = list(names)
        self.wait(lambda: all(self.pods[n].status.ready for n in names), timeout, f"{names} ready")

    def describe(self) -> str:
        """Each pod's status and its log's tail: what a failed wait shows."""
        lines = []
        for pod in list(self.pods.values()):
            lines.append(f"--- {pod.name} {pod.ip} {pod.status}")
            lines += pod.log().splitlines()[-15:]
        return "\n".join(lines)

    # -- DNS -----------------------------------------------------------------------------------------

    def endpoints(self, service: str) -> list[PodRunner]:
        svc = self.services[service]
        publish = svc["spec"].get("publishNotReadyAddresses", False)
        return [
            p
            for p in list(self.pods.values())
            if selects(svc["spec"].get("selector"), p.labels)
            and p.ip
            and p.status.phase == "Running"
            and (p.status.ready or publish)
        ]

    def hosts(self) -> str:
        """/etc/hosts for every pod: each pod's own names on a line of its own first, then one line
        per (Service, endpoint). gRPC resolves with c-ares, which merges hosts lines sharing a name:
        with a headless Service's name on every shard's own line, shard-1's name would resolve to
        shard-0 too (the first line wins). c-ares matches a line by its IP before its names, so a
        Service line joins only its own pod's entry; glibc still finds every endpoint of a Service,
        and each IP's own line first (the reverse record)."""
        ns = self.namespace
        own, services = [], []
        for pod in list(self.pods.values()):
            if pod.ip and pod.status.phase == "Running":
                sub = pod.manifest["spec"].get("subdomain")
                fqdn = [f"{pod.name}.{sub}.{ns}.{SUFFIX}", f"{pod.name}.{sub}.{ns}.svc"] if sub else []
                own.append((pod.ip, [*fqdn, pod.name]))
        for service in list(self.services):
            names = [f"{service}.{ns}.{SUFFIX}", f"{service}.{ns}.svc", f"{service}.{ns}", service]
            services += [(pod.ip, names) for pod in self.endpoints(service)]
        external = [(ip, [name]) for name, ip in sorted(self.external.items())]
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        entries = [*sorted(own), *sorted(services), *external]
        lines += [f"{ip}\t{' '.join(aliases)}" for ip, aliases in entries]
        return "\n".join(lines) + "\n"

    def add_external(self, ip: str, *names: str) -> None:
        """`names` resolve to `ip` in every pod (a Service of another namespace, outside the cluster)."""
        self.external |= dict.fromkeys(names, ip)
        self._write_hosts()

    def _write_hosts(self) -> None:
        """In place (the pods bind-mount this inode): write, then cut what is left of the old text."""
        text = self.hosts().encode()
        with self.changed:
            fd = os.open(self.hosts_file, os.O_WRONLY)
            try:
                os.pwrite(fd, text, 0)
                os.ftruncate(fd, len(text))
            finally:
                os.close(fd)

    def resolve(self, name: str) -> list[str]:
        """What a pod's resolver answers for `name` (the tests' process has the host's resolver)."""
        host = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        found = []
        for line in self.hosts().splitlines():
            ip, *aliases = line.split()
            if host in aliases:
                found.append(ip)
        return found

    # -- deletion ------------------------------------------------------------------------------------

    def delete(self, names: Iterable[str], grace: float | None = None) -> dict[str, Termination]:
        """Deletes pods in parallel, as the API does; returns how each ended."""
        pods = [self.pods[n] for n in names]
        self.events.extend((time.monotonic(), "deleted", p.name) for p in pods)
        with ThreadPoolExecutor(max(1, len(pods))) as pool:
            ended = dict(zip([p.name for p in pods], pool.map(lambda p: p.delete(grace), pods), strict=True))
        for pod in pods:
            if self.pods.get(pod.name) is pod:  # a delete racing this one (the controller's) took it
                self.gone.append(self.pods.pop(pod.name))
        self._write_hosts()
        return ended

    def close(self) -> None:
        """Every pod killed (grace 1 s), the network gone, the files removed."""
        try:
            self.delete(list(self.pods), grace=1)
        finally:
            self.network.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
