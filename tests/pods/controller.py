"""The kubelet and the workload controllers against the kmock emulator: a background thread polls the
namespace's ConfigMaps, Secrets, Services, StatefulSets and Deployments in kmock, applies what changed
to the pods `Cluster` (create, update -> rolling, scale) and deletes the pods of workloads gone; a
second thread writes each workload's status back through kmock's /status subresource and plays the
garbage collector (children whose owner, by uid, is gone are deleted: kmock has no GC).

kmock serves from the test's event loop: these threads read its objects (copies) and write over
HTTP, so the loop only has to keep running (tests wait with `await asyncio.sleep`)."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import kmock

from .cluster import Cluster, revision

RESOURCES = {  # kmock resource -> (API path prefix, plural)
    "v1/configmaps": ("/api/v1", "configmaps"),
    "v1/secrets": ("/api/v1", "secrets"),
    "v1/services": ("/api/v1", "services"),
    "apps/v1/statefulsets": ("/apis/apps/v1", "statefulsets"),
    "apps/v1/deployments": ("/apis/apps/v1", "deployments"),
}
WORKLOADS = ("StatefulSet", "Deployment")
# kmock's own prefix: the RBAC check of tests/k8s_operator's `api` fixture counts the harness's calls
# as the test's (this plays the cluster's controllers, which manifests/rbac.yaml does not cover)
USER_AGENT = "kmock/test-kubelet"


class KubeletController:
    """Runs `cluster` from what kmock holds in `cluster.namespace`; `close` stops both threads."""

    def __init__(self, api: Any, cluster: Cluster, interval: float = 0.2) -> None:
        self.api, self.cluster, self.interval = api, cluster, interval
        self.url = str(api.url).rstrip("/")
        self.seen: dict[tuple[str, str], Any] = {}  # (kind, name) -> the object as last applied
        self.written: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> status written
        self.revisions: dict[str, str] = {}  # StatefulSet -> currentRevision
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(self.sync,), name="kubelet-sync", daemon=True),
            threading.Thread(target=self._loop, args=(self.report,), name="kubelet-status", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    # -- reading kmock -------------------------------------------------------------------------------

    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(kind, name) -> a copy of each live object of the watched kinds in the namespace."""
        found = {}
        for _ in range(5):  # the loop may change the dict under us: try again
            try:
                for key in list(self.api.objects):
                    resource, namespace, name = key
                    obj = self.api.objects[key]
                    if namespace != self.cluster.namespace or obj.deleted:
                        continue
                    if any(resource == kmock.resource(r) for r in RESOURCES):
                        raw = copy.deepcopy(obj.raw)
                        found[raw["kind"], name] = raw
                return found
            except RuntimeError:
                found = {}
        return found

    def owners_alive(self) -> set[str]:
        uids = set()
        for key in list(self.api.objects):
            obj = self.api.objects[key]
            if not obj.deleted:
                uids.add(obj.raw.get("metadata", {}).get("uid"))
        return uids

    def request(self, method: str, path: str, body: Any = None) -> int:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/merge-patch+json")
        req.add_header("User-Agent", USER_AGENT)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def path(self, kind: str, name: str) -> str:
        prefix, plural = next(RESOURCES[r] for r in RESOURCES if r.endswith(kind.lower() + "s"))
        return f"{prefix}/namespaces/{self.cluster.namespace}/{plural}/{name}"

    # -- the loops -----------------------------------------------------------------------------------

    def _loop(self, step: Any) -> None:
        while not self.stop.wait(self.interval):
            try:
                step()
            except Exception as e:
                if not self.stop.is_set():  # at teardown kmock's loop no longer serves: no answer
                    self.errors.append(e)
                return

    def sync(self) -> None:
        """What changed applied to the cluster (kinds of objects first, workloads last); the pods of
        workloads that are gone deleted, and gone ConfigMaps/Secrets/Services forgotten."""
        objects = self.objects()
        changed = [obj for key, obj in objects.items() if self._spec(self.seen.get(key)) != self._spec(obj)]
        changed.sort(key=lambda obj: obj["kind"] in WORKLOADS)
        for kind, name in set(self.seen) - set(objects):
            del self.seen[kind, name]
            if kind in WORKLOADS and (kind, name) in self.cluster.workloads:
                pods = [p.name for p in self.cluster.workload_pods(kind, name)]
                del self.cluster.workloads[kind, name]
                self.written.pop((kind, name), None)
                self.cluster.delete(pods)
            else:
                store = {"ConfigMap": self.cluster.configmaps, "Secret": self.cluster.secrets,
                         "Service": self.cluster.services}.get(kind, {})  # fmt: skip
                store.pop(name, None)
        if changed:
            for obj in changed:
                self.seen[obj["kind"], obj["metadata"]["name"]] = obj
            self.cluster.apply(changed)

    @staticmethod
    def _spec(obj: dict[str, Any] | None) -> Any:
        """What the kubelet acts on: all but metadata bookkeeping and status."""
        if obj is None:
            return None
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")} | {
            "labels": obj["metadata"].get("labels")
        }

    def report(self) -> None:
        """Each workload's status (as the controllers compute it) written when it changed; children
        of an owner that is gone deleted."""
        for (kind, name), workload in list(self.cluster.workloads.items()):
            if (kind, name) not in self.seen:  # applied to the cluster directly (the operator's own)
                continue
            status = dict(workload.get("status", {}))
            status.setdefault("replicas", 0)
            status.setdefault("readyReplicas", 0)
            # against the template as it is now: a new one has no updated pod yet (the status the
            # pods' changes last wrote counted them against the template before it)
            pods = self.cluster.workload_pods(kind, name)
            status["updatedReplicas"] = sum(p.revision == revision(workload) for p in pods)
            status["observedGeneration"] = workload["metadata"].get("generation", 1)
            if kind == "StatefulSet":
                update = f"{name}-{revision(workload)}"
                replicas = workload["spec"].get("replicas", 1)
                if status["updatedReplicas"] >= replicas or name not in self.revisions:
                    self.revisions[name] = update
                status |= {"currentRevision": self.revisions[name], "updateRevision": update}
            if self.written.get((kind, name)) != status:
                code = self.request("PATCH", self.path(kind, name) + "/status", {"status": status})
                if code == 200:
                    self.written[kind, name] = status
        alive = self.owners_alive()
        for (kind, name), obj in self.objects().items():
            owners = obj["metadata"].get("ownerReferences") or []
            if owners and not any(o.get("uid") in alive for o in owners):
                self.request("DELETE", self.path(kind, name))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors
