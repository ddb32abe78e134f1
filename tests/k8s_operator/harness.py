"""The operator tests' harness: kmock made strict enough for kopf, an in-memory shard registry,
the emulated cluster as the tests see it, and the RBAC check of the operator's API calls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import json
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import kopf
import yaml
from gamefleet_operator import API_VERSION, KIND
from gamefleet_operator.autoscale import ShardLoad, ShardState
from gamefleet_operator.crd import crd
from gamefleet_operator.handlers import build_registry
from gamefleet_operator.registry import RegistryUnavailable
from gamefleet_operator.spec import Fleet

from gameserver.cli.delete_fleet import USER_AGENT as DELETE_FLEET_AGENT

GF = "gamefleet.dev/v1/gamefleets"
FLEETS_URL = "/apis/gamefleet.dev/v1/namespaces/default/gamefleets"
SCALE_PATHS = crd()["spec"]["versions"][0]["subresources"]["scale"]  # the CRD's /scale mapping
SYNC_INTERVAL = 0.3
LAST_HANDLED = "gamefleet.dev/last-handled-configuration"
# resource -> (kind, namespaced, subresources): what the operator and kopf discover
RESOURCES = {
    GF: (KIND, True, {"status", "scale"}),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/services": ("Service", True, set()),
    "v1/secrets": ("Secret", True, set()),
    "v1/events": ("Event", True, set()),
    "v1/namespaces": ("Namespace", False, set()),
    "apps/v1/statefulsets": ("StatefulSet", True, {"status"}),
    "apps/v1/deployments": ("Deployment", True, {"status"}),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True, set()),
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", True, set()),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False, set()),  # manifests/peering.yaml
    "kopf.dev/v1/kopfpeerings": ("KopfPeering", True, set()),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def merge_diff(old: Any, new: Any) -> Any:
    """The merge patch that turns `old` into `new` (None deletes a key)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old or old[key] != value:
            patch[key] = merge_diff(old.get(key), value)
    return patch


Path_ = tuple[str, ...]
APPLY_PATCH = "application/apply-patch+yaml"


def leaf_paths(obj: Any, prefix: Path_ = ()) -> set[Path_]:
    """The paths of an object's leaves; a list is one leaf (set and replaced whole)."""
    if isinstance(obj, dict) and obj:
        return set().union(*(leaf_paths(v, (*prefix, k)) for k, v in obj.items()))
    return {prefix}


def without(obj: dict[str, Any], paths: Iterable[Path_]) -> dict[str, Any]:
    """A copy of `obj` without these leaves (maps they leave empty go too)."""
    drop, below = set(), collections.defaultdict(set)
    for path in paths:
        if len(path) == 1:
            drop.add(path[0])
        elif path:
            below[path[0]].add(path[1:])
    result = {}
    for key, value in obj.items():
        if key in drop:
            continue
        if key in below and isinstance(value, dict):
            value = without(value, below[key])
            if not value:
                continue
        result[key] = copy.deepcopy(value)
    return result


def merged(base: Any, applied: Any) -> Any:
    """`applied` laid over `base`: maps merge key by key, anything else is replaced."""
    if not (isinstance(base, dict) and isinstance(applied, dict)):
        return copy.deepcopy(applied)
    return {**base, **{k: merged(base.get(k), v) for k, v in applied.items()}}


class Emulator(kmock.KubernetesEmulator):
    """kmock as kopf needs it (see shared/kmock-notes.md, trap 4): every write stamps a fresh
    resourceVersion, spec writes bump generation, generateName works, and a JSON patch is
    applied for real, with 422 when its `test` on resourceVersion fails (kopf's finalizers).

    Server-side apply (PATCH as application/apply-patch+yaml with a fieldManager), as the API
    server does it for one manager that forces: the object is created if missing; the manager's
    fields are set, and those it set before and applies no more are removed; fields other writers
    set stay. Lists are atomic (a real server merges some by key: containers by name, ...). An
    apply that changes nothing writes nothing (no new resourceVersion, no watch event)."""

    _versions = itertools.count(1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.managed: dict[tuple[Any, ...], dict[str, set[Path_]]] = {}  # object -> manager -> fields

    def _apply(self, request: Any) -> aiohttp.web.StreamResponse | None:
        """Turn a server-side apply into the create or merge patch it amounts to; a response when
        there is nothing to write."""
        applied = request.data if isinstance(request.data, dict) else json.loads(request.body)
        manager = request.params.get("fieldManager")
        if not manager:
            return aiohttp.web.json_response(
                {"kind": "Status", "code": 422, "message": "fieldManager is required for apply patch"},
                status=422,
            )
        if request.resource not in self.resources:  # a kind the cluster does not serve (no CRD)
            return aiohttp.web.json_response(
                {
                    "kind": "Status",
                    "code": 404,
                    "message": "the server could not find the requested resource",
                },
                status=404,
            )
        key = (request.resource, request.namespace, request.name)
        exists = key in self.objects and not self.objects[key].deleted
        old = self.objects[key].raw if exists else {}
        owned = self.managed.setdefault(key, {})
        fields = leaf_paths(applied) - {("apiVersion",), ("kind",)}
        new = merged(without(old, owned.get(manager, set()) - fields), applied)
        owned[manager] = fields
        if exists and new == old:
            return aiohttp.web.json_response(old)
        if exists:
            object.__setattr__(request, "data", merge_diff(old, new))
        else:
            object.__setattr__(request, "data", new)
            object.__setattr__(request, "action", kmock.action.CREATE)
        return None

    def _mark_deleted(self, request: Any) -> None:
        """A DELETE of an object with finalizers only sets deletionTimestamp, and kmock keeps the
        resourceVersion: kopf then takes that MODIFIED event for one it has seen and never runs
        the deletion handlers. Stamped here first, as any write is."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        meta = self.objects[key].get("metadata", {})
        if meta.get("finalizers") and not meta.get("deletionTimestamp"):
            self.objects[key].patch({"metadata": {"resourceVersion": str(next(self._versions))}})

    async def _scale(self, request: Any) -> aiohttp.web.StreamResponse:
        """The GameFleet's scale subresource as the API server serves it from the CRD's paths:
        GET reads them, PATCH of spec.replicas writes the spec path (`kubectl scale`, an HPA)."""
        paths = SCALE_PATHS
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return aiohttp.web.json_response({"kind": "Status", "code": 404}, status=404)
        if request.action == kmock.action.UPDATE:
            replicas = (request.data or {}).get("spec", {}).get("replicas")
            if not isinstance(replicas, int):
                return aiohttp.web.json_response({"kind": "Status", "code": 422}, status=422)
            spec = paths["specReplicasPath"].removeprefix(".spec.")
            object.__setattr__(request, "data", {"spec": {spec: replicas}})
            object.__setattr__(request, "subresource", None)
            await self._handle(request)
        obj = self.objects[key].raw
        return aiohttp.web.json_response(
            {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": request.name, "namespace": request.namespace},
                "spec": {"replicas": json_path(obj, paths["specReplicasPath"])},
                "status": {
                    "replicas": json_path(obj, paths["statusReplicasPath"]) or 0,
                    "selector": json_path(obj, paths["labelSelectorPath"]) or "",
                },
            }
        )

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.subresource == "scale":
            return await self._scale(request)
        if request.resource is not None and request.action == kmock.action.DELETE and request.name:
            self._mark_deleted(request)
        applying = request.headers.get("Content-Type", "").split(";")[0] == APPLY_PATCH
        if (
            request.resource is not None
            and request.action == kmock.action.UPDATE
            and applying
            and (response := self._apply(request)) is not None
        ):
            return response
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            data = copy.deepcopy(request.data)
            key = (request.resource, request.namespace, request.name)
            old = self.objects[key].raw if key in self.objects and not self.objects[key].deleted else {}
            if isinstance(data, list):
                try:
                    data = merge_diff(old, jsonpatch.apply_patch(old, data))
                except jsonpatch.JsonPatchTestFailed as e:
                    return aiohttp.web.json_response(
                        {"kind": "Status", "code": 422, "message": str(e)}, status=422
                    )
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            if request.action == kmock.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                if "name" not in meta and "generateName" in meta:  # kopf's Events
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
                meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta["generation"] = 1
            elif request.subresource is None and "spec" in data:
                meta["generation"] = old.get("metadata", {}).get("generation", 1) + 1
            object.__setattr__(request, "data", data)  # kmock requests are frozen attrs objects
        return await super()._handle(request)


VERBS = {
    "list": "list",
    "watch": "watch",
    "fetch": "get",
    "create": "create",
    "update": "patch",
    "delete": "delete",
}
RBAC = Path(__file__).resolve().parents[2] / "manifests" / "rbac.yaml"
NAMESPACED_RBAC = RBAC.parent / "namespaced" / "rbac.yaml"  # the operator confined to its namespaces
Rule = tuple[str, str, str]


def rbac_rules(path: Path = RBAC, kind: str = "ClusterRole") -> set[Rule]:
    """(group, resource, verb) the operator's ClusterRole in manifests/ grants (or the Role, or
    those of another file)."""
    return role_rules(next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == kind))


def role_rules(role: dict[str, Any]) -> set[Rule]:
    """(group, resource, verb) a ClusterRole or Role grants (the chart's is compared with manifests/)."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def scoped_operator_calls(requests: Iterable[Any], agent: str | None = None) -> set[tuple[str | None, Rule]]:
    """(namespace, (group, resource, verb)) of the API calls kopf and the operator made (not the
    test's own, nor `gamefleet delete-fleet`'s), or those of the client whose User-Agent is `agent`;
    namespace None: a cluster-wide call (a cluster-scoped kind, or a namespaced one in all namespaces),
    which only a ClusterRole can allow."""
    return {
        (
            r.namespace or None,
            (
                r.resource.group or "",
                r.resource.plural + (f"/{r.subresource}" if r.subresource else ""),
                VERBS[r.action.value.lower()],
            ),
        )
        for r in requests
        if r.resource is not None
        and r.resource.plural
        and (
            r.headers.get("User-Agent", "") == agent
            if agent
            else not r.headers.get("User-Agent", "").startswith(("kmock/", DELETE_FLEET_AGENT))
        )
    }


def operator_calls(requests: Iterable[Any], agent: str | None = None) -> set[Rule]:
    """(group, resource, verb) of the operator's calls (see scoped_operator_calls)."""
    return {call for _, call in scoped_operator_calls(requests, agent)}


class FakeRegistry:
    """An in-memory ShardRegistry: the test plays the shards (reports load, drains)."""

    def __init__(self) -> None:
        self.reports: dict[str, ShardLoad] = {}
        self.drains: dict[str, float] = {}
        self.purges = 0
        self.down = False
        self.linger = 0.0  # seconds a read waits for a second reader to come in beside it
        self.most_at_once = 0  # the most reads seen in flight together
        self._readers = threading.Condition()
        self._reading = 0

    def report(self, shard: str, games: int, state: ShardState = ShardState.SERVING) -> None:
        self.reports[shard] = ShardLoad(shard, games, state)

    def loads(self) -> list[ShardLoad]:
        with self._readers:
            self._reading += 1
            self.most_at_once = max(self.most_at_once, self._reading)
            self._readers.notify_all()
            self._readers.wait_for(lambda: self._reading > 1, timeout=self.linger)
        try:
            if self.down:
                raise RegistryUnavailable("redis: connection refused")
            return list(self.reports.values())
        finally:
            with self._readers:
                self._reading -= 1

    def request_drain(self, shard: str, at: float) -> None:
        self.drains[shard] = at

    def cancel_drain(self, shard: str) -> None:
        self.drains.pop(shard, None)

    def purge(self) -> int:
        if self.down:
            raise RegistryUnavailable("redis: connection refused")
        self.purges += 1
        return 3


class FakeRegistries:
    """Registries: one FakeRegistry per fleet name; remembers the passwords it was given."""

    def __init__(self) -> None:
        self.fleets: dict[str, FakeRegistry] = {}
        self.passwords: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> FakeRegistry:
        return self.fleets.setdefault(name, FakeRegistry())

    def __call__(self, fleet: Fleet, password: str | None) -> FakeRegistry:
        self.passwords[fleet.name] = password
        return self[fleet.name]


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll without blocking the loop (kmock serves from it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Cluster:
    """The emulated API as the tests use it: post and patch fleets, read children."""

    def __init__(self, kmock: Emulator, registries: FakeRegistries, liveness: str) -> None:
        self.kmock = kmock
        self.registries = registries
        self.liveness = liveness

    def get(self, resource: str, name: str) -> Any:
        key = (kmock.resource(resource), "default", name)
        return (
            self.kmock.objects[key]
            if key in self.kmock.objects and not self.kmock.objects[key].deleted
            else None
        )

    def fleet(self, name: str) -> Any:
        return self.get(GF, name)

    def status(self, name: str) -> Any:
        """The fleet's status; {} before the operator's first status write lands."""
        return (self.fleet(name) or {}).get("status", {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = (self.fleet(name) or {}).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), {})

    def replicas(self, name: str) -> int | None:
        sts = self.get("apps/v1/statefulsets", f"{name}-shard")
        return None if sts is None else sts["spec"]["replicas"]

    async def create(self, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": "default"}}
        await self.apply(body | {"spec": spec})

    async def apply(self, body: dict[str, Any]) -> None:
        """kubectl apply of a new object of the default namespace (a fleet, a Secret)."""
        group = "/api/v1" if body["apiVersion"] == "v1" else f"/apis/{body['apiVersion']}"
        plural = {"GameFleet": "gamefleets", "Secret": "secrets"}[body["kind"]]
        response = await self.kmock.post(f"{group}/namespaces/default/{plural}", json=body)
        assert response.status == 200, await response.text()

    async def patch(self, name: str, body: dict[str, Any], subresource: str = "") -> None:
        response = await self.kmock.patch(f"{FLEETS_URL}/{name}{subresource}", json=body)
        assert response.status == 200, await response.text()

    async def set_ready(self, name: str, shards: int, routers: int = 1) -> None:
        """Play the StatefulSet and Deployment controllers."""
        for resource, child, ready in (
            ("statefulsets", f"{name}-shard", shards),
            ("deployments", f"{name}-router", routers),
        ):
            url = f"/apis/apps/v1/namespaces/default/{resource}/{child}/status"
            response = await self.kmock.patch(url, json={"status": {"readyReplicas": ready}})
            assert response.status == 200, await response.text()

    def settled(self) -> bool:
        """kopf has handled every fleet's latest spec (stopping kopf mid-handler costs seconds)."""
        for key in list(self.kmock.objects):
            fleet = self.kmock.objects[key]
            if key[0] == kmock.resource(GF) and not fleet.deleted:
                handled = fleet["metadata"].get("annotations", {}).get(LAST_HANDLED, "{}")
                if json.loads(handled).get("spec") != fleet["spec"]:
                    return False
        return True

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [
            r.data
            for r in self.kmock["post /api/v1/namespaces/default/events"]
            if r.data.get("reason") == reason
        ]


_PATH = re.compile(r'((?:\.\w+)+)(?:\[\?\(@\.(\w+)=="([^"]*)"\)\]((?:\.\w+)+))?')


def json_path(obj: Any, path: str) -> Any:
    """The value of a printer column's JSONPath (`.a.b`, or `.a[?(@.k=="v")].b`); None if absent."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"unsupported JSONPath {path!r}")

    def walk(node: Any, dotted: str) -> Any:
        for key in dotted.strip(".").split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    value = walk(obj, match[1])
    if match[2]:
        chosen = [item for item in value or [] if isinstance(item, Mapping) and item[match[2]] == match[3]]
        value = walk(chosen[0], match[4]) if chosen else None
    return value


def kubectl_get(columns: list[dict[str, Any]], objects: list[Any], now: datetime) -> list[list[str]]:
    """The rows `kubectl get` prints for these objects: NAME, then each printer column
    (absent values as <none>, dates as an age in seconds)."""
    rows = [["NAME", *(c["name"].upper() for c in columns)]]
    for obj in objects:
        row = [obj["metadata"]["name"]]
        for column in columns:
            value = json_path(obj, column["jsonPath"])
            if value is None:
                row.append("<none>")
            elif column["type"] == "date":
                since = now - datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                row.append(f"{int(since.total_seconds())}s")
            elif column["type"] == "number":
                row.append(f"{value:.15g}")  # as kubectl prints a float64: 0.0 is 0
            else:
                row.append(str(value))
        rows.append(row)
    return rows


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


class OperatorProcess:
    """An operator_thread as its process looks from outside: told to stop, and then gone."""

    def __init__(self, flag: threading.Event, thread: threading.Thread, executor: Executor) -> None:
        self._flag = flag
        self._thread = thread
        self._executor = executor

    def stop(self) -> None:
        """SIGTERM: kopf stops, leaving a handler still running orphaned in its executor."""
        self._flag.set()

    async def gone(self) -> None:
        """Stopped and exited: a process's exit ends its orphaned handlers with it; in a thread
        they run on, so wait for them (a repair still under way is not the next replica's)."""
        self.stop()
        await asyncio.to_thread(self._thread.join, 15)
        await asyncio.to_thread(self._executor.shutdown, True)


@contextlib.asynccontextmanager
async def operator_thread(
    registries: FakeRegistries,
    *,
    liveness: str,
    peering: tuple[str, int] | None = None,
    peering_lifetime: int = 60,
    namespaces: list[str] | None = None,
) -> AsyncIterator[OperatorProcess]:
    """An operator process's worth of kopf in its own thread (it waits for every task of its own
    loop on exit: kmock's must not be among them), standalone or peering as (name, priority),
    cluster-wide or watching only `namespaces` (as `gamefleet operator --namespace` runs it).
    On the way out it is stopped, and must have stopped cleanly."""
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.queueing.exit_timeout = 0.2  # on exit, do not wait for workers to go idle
    settings.peering.lifetime = peering_lifetime
    # kmock 0.8 cannot list namespaces (GET /api/v1/namespaces answers 500: shared/kmock-notes.md,
    # trap 3), which kopf does with --namespace to learn which of the names exist: here it takes
    # them as given, as it does where it may not list namespaces, and reads the CRDs once
    settings.scanning.disabled = bool(namespaces)
    stop = threading.Event()
    errors: list[BaseException] = []
    name, priority = peering or (None, None)

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=build_registry(SYNC_INTERVAL),
                    settings=settings,
                    clusterwide=not namespaces,
                    namespaces=namespaces or [],
                    standalone=peering is None,
                    peering_name=name,
                    priority=priority,
                    memo=kopf.Memo(registries=registries, namespaces=namespaces or []),
                    stop_flag=stop,
                    liveness_endpoint=liveness,
                )
            )
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name=f"kopf-{priority or 'standalone'}", daemon=True)
    thread.start()
    process = OperatorProcess(stop, thread, settings.execution.executor)
    try:
        yield process
        assert not errors, f"the operator stopped on its own: {errors}"
    finally:
        await process.gone()
    assert not thread.is_alive() and not errors, errors
