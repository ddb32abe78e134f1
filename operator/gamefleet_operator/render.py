"""render(fleet) -> the Kubernetes objects of one fleet. Pure: no API calls, no clock, no randomness.

Children and their names (fleet `f`):
  f-config   ConfigMap    environment shared by shards and routers (GAMEFLEET_*, OTEL_*)
  f-shard    StatefulSet  the shards: pod f-shard-<ordinal> is ring member f-shard-<ordinal>
  f-shards   Service      headless; gives each shard a stable DNS name
  f-router   Deployment   `gamefleet route`, the fleet service's pods
  f          Service      what clients connect to (port 50051)
  f-shard    PodDisruptionBudget  one shard away at a time
  f          ServiceMonitor       when telemetry.metrics.serviceMonitor
  f-redis    StatefulSet + Service  when redis.managed.enabled
  f-shard, f-router (f-redis)  NetworkPolicy  when networkPolicy.enabled (the default): who may
             connect to the shards, the routers (and the managed Redis); applied before the pods

Shutdown budget of a shard pod (`termination_grace_seconds`), in order:
  PRESTOP_SECONDS          preStop sleeps: endpoints and routers drop the pod
  drainTimeoutSeconds      SIGTERM: `serve --drain-timeout`: the shard stops taking games and hands
                           them over through Redis (0: it leaves at once, its games stay in Redis)
  STOP_GRACE_SECONDS       `serve --grace`: in-flight calls finish, the server stops
  SHUTDOWN_MARGIN_SECONDS  the final flush of changed games to Redis, leaving the registry, exit
terminationGracePeriodSeconds is their sum and the flags come from the same constants, so
SIGKILL only lands on a shard whose flush overran the margin.

A router pod's (`router_termination_grace_seconds`): PRESTOP_SECONDS, then
ROUTER_STOP_GRACE_SECONDS for the calls it forwarded: at least `route --shard-timeout` (a
call's whole budget, its retry through a fresh ring included), because a call the router cancels
may have run on its shard and its caller cannot tell; then ROUTER_EXIT_MARGIN_SECONDS.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

# Liveness probes ask for the health service the servers keep SERVING while they run, draining or
# not (the default service turns NOT_SERVING while a shard drains: readiness, not liveness).
from gameserver.wire.services import LIVENESS_SERVICE

from .spec import Fleet

GRPC_PORT = 50051
HEALTH_PORT = 50052  # plaintext, gRPC health only: the kubelet's probes when spec.security.tls is set
REDIS_PORT = 6379
TLS_DIR = "/etc/gamefleet/tls"
TOKEN_DIR = "/etc/gamefleet/token"
PRESTOP_SECONDS = 5
STOP_GRACE_SECONDS = 5  # after the drain: in-flight calls get this long (`serve --grace`)
SHUTDOWN_MARGIN_SECONDS = 10  # after the server stopped: the final flush to Redis, process exit
PRE_STOP = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}
ROUTER_SHARD_TIMEOUT_SECONDS = 30  # `route --shard-timeout`: a forwarded call's whole budget
ROUTER_STOP_GRACE_SECONDS = ROUTER_SHARD_TIMEOUT_SECONDS + 5  # `route --grace`: forwarded calls end
ROUTER_EXIT_MARGIN_SECONDS = 5
# ConfigMap keys only `gamefleet serve` reads: a change of them rolls the shards, not the routers
# (a game-size edit must not cut the trainers' connections to every router)
SHARD_ONLY_CONFIG = frozenset(
    {
        "GAMEFLEET_DURABILITY",
        "GAMEFLEET_SNAPSHOT_EVERY_TICKS",
        "GAMEFLEET_KEY_TTL_SECONDS",
        "GAMEFLEET_GAME_WIDTH",
        "GAMEFLEET_GAME_HEIGHT",
        "GAMEFLEET_GAME_PLAYERS",
        "GAMEFLEET_CAPACITY_PER_SHARD",
        "GAMEFLEET_DRAIN_TIMEOUT_SECONDS",
    }
)
FLEET_LABEL = "gamefleet.dev/fleet"
COMPONENT_LABEL = "app.kubernetes.io/component"
CONFIG_HASH_ANNOTATION = "gamefleet.dev/config-hash"
TEMPLATE_HASH_ANNOTATION = "gamefleet.dev/template-hash"  # on the shard StatefulSet: a change rolls its pods
CLIENT_LABEL = "gamefleet.dev/client"  # value: the fleet's name; the clients the NetworkPolicies admit
# the labels manifests/ and the chart put on the operator's pods: whom a managed Redis admits
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "gamefleet-operator"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace

Manifest = dict[str, Any]


def shard_set_name(fleet: Fleet) -> str:
    return f"{fleet.name}-shard"


def shard_names(fleet: Fleet, count: int) -> list[str]:
    """Ring members in ordinal order: the StatefulSet's pod names."""
    return [f"{shard_set_name(fleet)}-{i}" for i in range(count)]


def selector(fleet: Fleet, component: str) -> dict[str, str]:
    return {FLEET_LABEL: fleet.name, COMPONENT_LABEL: component}


def selector_string(fleet: Fleet) -> str:
    """The shard pods' selector as a string: status.selector, for the scale subresource and HPAs."""
    return ",".join(f"{k}={v}" for k, v in selector(fleet, "shard").items())


def labels(fleet: Fleet, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gamefleet",
        "app.kubernetes.io/instance": fleet.name,
        "app.kubernetes.io/managed-by": "gamefleet-operator",
        **selector(fleet, component),
    }


def _meta(fleet: Fleet, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": fleet.namespace, "labels": labels(fleet, component)}


def config_data(fleet: Fleet) -> dict[str, str]:
    """Environment every fleet pod gets from the ConfigMap (the process side of the contract)."""
    s = fleet.spec
    data = {
        "GAMEFLEET_FLEET": fleet.name,
        "GAMEFLEET_FLEET_ID": fleet.fleet_id,
        "GAMEFLEET_NAMESPACE": fleet.namespace,
        "GAMEFLEET_SHARD_SERVICE": f"{fleet.name}-shards.{fleet.namespace}.svc",
        "GAMEFLEET_DURABILITY": s["durability"]["mode"],
        "GAMEFLEET_SNAPSHOT_EVERY_TICKS": str(s["durability"]["snapshotEveryTicks"]),
        "GAMEFLEET_KEY_TTL_SECONDS": str(s["durability"]["ttlSeconds"]),
        "GAMEFLEET_GAME_WIDTH": str(s["game"]["width"]),
        "GAMEFLEET_GAME_HEIGHT": str(s["game"]["height"]),
        "GAMEFLEET_GAME_PLAYERS": str(s["game"]["players"]),
        "GAMEFLEET_CAPACITY_PER_SHARD": str(fleet.capacity_per_shard),
        "GAMEFLEET_DRAIN_TIMEOUT_SECONDS": str(s["drainTimeoutSeconds"]),
    }
    if fleet.redis_host:
        data["GAMEFLEET_REDIS_URL"] = fleet.redis_url()
        if "username" in s["redis"]:
            data["GAMEFLEET_REDIS_USERNAME"] = s["redis"]["username"]
    data |= _security_env(fleet)
    metrics = s["telemetry"]["metrics"]
    if metrics["enabled"]:
        data["GAMEFLEET_METRICS_PORT"] = str(metrics["port"])
    tracing = s["telemetry"]["tracing"]
    if "otlpEndpoint" in tracing:
        data |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": tracing["otlpEndpoint"],
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(tracing["samplingRatio"]),
        }
    else:
        data["OTEL_SDK_DISABLED"] = "true"
    return data


def _security_env(fleet: Fleet) -> dict[str, str]:
    """Where the mounted Secrets are (gameserver/wire/security.py reads these variables)."""
    security, data = fleet.spec["security"], {}
    if "tls" in security:
        data |= {
            "GAMEFLEET_TLS_CERT": f"{TLS_DIR}/tls.crt",
            "GAMEFLEET_TLS_KEY": f"{TLS_DIR}/tls.key",
            "GAMEFLEET_TLS_CA": f"{TLS_DIR}/ca.crt",
            "GAMEFLEET_TLS_CLIENT_AUTH": "1" if security["tls"]["clientAuth"] else "0",
            # shards are dialled by pod address (registry) or IP (DNS): checked against one name
            "GAMEFLEET_TLS_SERVER_NAME": f"{fleet.name}-shards.{fleet.namespace}.svc",
            "GAMEFLEET_HEALTH_PORT": str(HEALTH_PORT),
        }
    if "tokenSecretRef" in security:
        data["GAMEFLEET_TOKEN_FILE"] = f"{TOKEN_DIR}/token"
    return data


def _security_volumes(fleet: Fleet) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Secrets of spec.security as read-only volumes (the root filesystem is read-only), and
    their mounts."""
    security, volumes, mounts = fleet.spec["security"], [], []
    if "tls" in security:
        volumes.append({"name": "tls", "secret": {"secretName": security["tls"]["secretName"]}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if ref := security.get("tokenSecretRef"):
        items = [{"key": ref["key"], "path": "token"}]
        volumes.append({"name": "token", "secret": {"secretName": ref["name"], "items": items}})
        mounts.append({"name": "token", "mountPath": TOKEN_DIR, "readOnly": True})
    return volumes, mounts


def config_hash(fleet: Fleet, component: str = "shard") -> str:
    """Changes whenever the ConfigMap's keys that `component` reads do: in the pod templates, so a
    config change rolls the pods that read it (routers skip SHARD_ONLY_CONFIG)."""
    data = config_data(fleet)
    if component != "shard":
        data = {key: value for key, value in data.items() if key not in SHARD_ONLY_CONFIG}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_map(fleet: Fleet) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(fleet, f"{fleet.name}-config", "config"),
        "data": config_data(fleet),
    }


def _password_env(fleet: Fleet, name: str) -> list[dict[str, Any]]:
    ref = fleet.redis_password_ref
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}]


def _grpc_probe(fleet: Fleet, period: int, failures: int, service: str = "") -> dict[str, Any]:
    port = HEALTH_PORT if "tls" in fleet.spec["security"] else GRPC_PORT  # the kubelet speaks no TLS
    check = {"port": port} | ({"service": service} if service else {})
    return {"grpc": check, "periodSeconds": period, "failureThreshold": failures}


def _ports(fleet: Fleet) -> list[dict[str, Any]]:
    ports = [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    metrics = fleet.spec["telemetry"]["metrics"]
    if metrics["enabled"]:
        ports.append({"name": "metrics", "containerPort": metrics["port"], "protocol": "TCP"})
    return ports


def _service_ports(fleet: Fleet) -> list[dict[str, Any]]:
    return [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]} for p in _ports(fleet)]


_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
# The redis image's `redis` user; fsGroup makes the volume writable for it. Restricted as the fleet's pods.
_REDIS_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 999,
    "fsGroup": 999,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# whenDeleted: Delete. The StatefulSet goes when the fleet is deleted (its finalizer has already
# purged the fleet's keys) or managed Redis is turned off (the shards no longer use it): a claim
# left behind holds only data nobody reads, and a later fleet of the same name would replay that
# stale append-only file. whenScaled: Retain: replicas is always 1; a manual scale to 0 (a pause)
# must keep the data for when it comes back. (Kubernetes >= 1.27; older clusters ignore the field.)
_REDIS_CLAIM_RETENTION = {"whenDeleted": "Delete", "whenScaled": "Retain"}


def _fleet_container(fleet: Fleet, role: str, args: list[str], resources: dict[str, Any]) -> dict[str, Any]:
    """A gamefleet container (shard or router): the shared env, gRPC probes, a writable /tmp."""
    return {
        "name": role,
        "image": fleet.spec["image"],
        "imagePullPolicy": fleet.spec["imagePullPolicy"],
        "command": ["gamefleet"],
        "args": args,
        "ports": _ports(fleet),
        "envFrom": [{"configMapRef": {"name": f"{fleet.name}-config"}}],
        "env": [
            {"name": "OTEL_SERVICE_NAME", "value": f"gamefleet-{role}"},
            {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba"},
            # as many engine threads as the CPU limit (rounded up; no limit: the node's CPUs): more
            # threads than the CFS quota would be throttled in every parallel kernel
            {"name": "NUMBA_NUM_THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            *_password_env(fleet, "GAMEFLEET_REDIS_PASSWORD"),
        ],
        "resources": resources,
        "startupProbe": _grpc_probe(fleet, 2, 60),  # numba compiles the kernels at start
        "readinessProbe": _grpc_probe(fleet, 5, 2),
        "livenessProbe": _grpc_probe(fleet, 10, 3, LIVENESS_SERVICE),
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *_security_volumes(fleet)[1]],
    }


def _pod_template(fleet: Fleet, component: str, container: dict[str, Any], grace: int) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": labels(fleet, component),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(fleet, component)},
        },
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": grace,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,  # fleet pods never call the Kubernetes API
            "securityContext": _POD_SECURITY,
            "volumes": [{"name": "tmp", "emptyDir": {}}, *_security_volumes(fleet)[0]],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": selector(fleet, component)},
                            },
                        }
                    ]
                }
            },
        },
    }


def termination_grace_seconds(fleet: Fleet) -> int:
    """preStop + the drain + the stop grace + a margin for the final flush: the shard's whole
    shutdown fits before SIGKILL (the module docstring's budget)."""
    drain = fleet.spec["drainTimeoutSeconds"]
    return PRESTOP_SECONDS + drain + STOP_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS


def shard_args(fleet: Fleet) -> list[str]:
    """`gamefleet serve`'s flags; the drain and stop grace explicit, from the grace budget's terms."""
    return [
        "serve",
        *("--host", "0.0.0.0", "--port", str(GRPC_PORT)),
        *("--max-games", str(fleet.capacity_per_shard)),
        *("--drain-timeout", str(fleet.spec["drainTimeoutSeconds"])),
        *("--grace", str(STOP_GRACE_SECONDS)),
    ]


def shard_stateful_set(fleet: Fleet, replicas: int) -> Manifest:
    args = shard_args(fleet)
    container = _fleet_container(fleet, "shard", args, fleet.spec["resources"])
    container["env"] = [
        {"name": "GAMEFLEET_SHARD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GAMEFLEET_ADDRESS", "value": f"$(GAMEFLEET_SHARD).$(GAMEFLEET_SHARD_SERVICE):{GRPC_PORT}"},
        *container["env"],
    ]
    container["lifecycle"] = PRE_STOP
    template = _pod_template(fleet, "shard", container, termination_grace_seconds(fleet))
    meta = _meta(fleet, shard_set_name(fleet), "shard")
    meta["annotations"] = {TEMPLATE_HASH_ANNOTATION: template_hash(template)}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "serviceName": f"{fleet.name}-shards",
            "podManagementPolicy": "Parallel",  # ordinals stay stable; pods need not start one by one
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector(fleet, "shard")},
            "template": template,
        },
    }


def template_hash(template: Manifest) -> str:
    """Changes exactly when the shard pods' template does (whatever the API server defaults in)."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def shard_service(fleet: Fleet) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(fleet, f"{fleet.name}-shards", "shard"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # a draining shard is still reachable for handover
            "selector": selector(fleet, "shard"),
            "ports": _service_ports(fleet),
        },
    }


def router_termination_grace_seconds() -> int:
    """preStop + the grace of the calls the router forwarded + a margin (the module docstring)."""
    return PRESTOP_SECONDS + ROUTER_STOP_GRACE_SECONDS + ROUTER_EXIT_MARGIN_SECONDS


def router_deployment(fleet: Fleet) -> Manifest:
    args = [
        "route",
        *("--host", "0.0.0.0", "--port", str(GRPC_PORT)),
        *("--shard-timeout", str(ROUTER_SHARD_TIMEOUT_SECONDS)),
        *("--grace", str(ROUTER_STOP_GRACE_SECONDS)),
    ]
    container = _fleet_container(fleet, "router", args, fleet.spec["router"]["resources"])
    container["lifecycle"] = PRE_STOP
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(fleet, f"{fleet.name}-router", "router"),
        "spec": {
            "replicas": 0 if fleet.spec["suspend"] else fleet.spec["router"]["replicas"],
            "selector": {"matchLabels": selector(fleet, "router")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": _pod_template(fleet, "router", container, router_termination_grace_seconds()),
        },
    }


def fleet_service(fleet: Fleet) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(fleet, fleet.name, "router"),
        "spec": {"type": "ClusterIP", "selector": selector(fleet, "router"), "ports": _service_ports(fleet)},
    }


def disruption_budget(fleet: Fleet) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(fleet, shard_set_name(fleet), "shard"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(fleet, "shard")},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",  # a crash-looping shard must not block node drains
        },
    }


def service_monitor(fleet: Fleet) -> Manifest:
    metrics = fleet.spec["telemetry"]["metrics"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(fleet, fleet.name, "metrics"),
        "spec": {
            "selector": {"matchLabels": {FLEET_LABEL: fleet.name}},
            "namespaceSelector": {"matchNames": [fleet.namespace]},
            "endpoints": [{"port": "metrics", "interval": metrics["interval"], "path": "/metrics"}],
        },
    }


def redis_stateful_set(fleet: Fleet) -> Manifest:
    managed = fleet.spec["redis"]["managed"]
    command = ["redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec"]
    password = _password_env(fleet, "REDIS_PASSWORD")
    if password:
        command += ["--requirepass", "$(REDIS_PASSWORD)"]
    probe = {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 5}
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": managed["storage"]}},
    }
    if "storageClassName" in managed:
        claim_spec["storageClassName"] = managed["storageClassName"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(fleet, f"{fleet.name}-redis", "redis"),
        "spec": {
            "replicas": 1,
            "serviceName": f"{fleet.name}-redis",
            "selector": {"matchLabels": selector(fleet, "redis")},
            "template": {
                "metadata": {"labels": labels(fleet, "redis")},
                "spec": {
                    "securityContext": _REDIS_POD_SECURITY,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "redis",
                            "image": managed["image"],
                            "command": command,
                            "env": password,
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                            "resources": copy.deepcopy(managed["resources"]),
                            "readinessProbe": probe,
                            "livenessProbe": probe | {"periodSeconds": 10},
                            "securityContext": _CONTAINER_SECURITY,
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim_spec}],
            "persistentVolumeClaimRetentionPolicy": _REDIS_CLAIM_RETENTION,
        },
    }


def redis_service(fleet: Fleet) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(fleet, f"{fleet.name}-redis", "redis"),
        "spec": {
            "selector": selector(fleet, "redis"),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _pods(fleet: Fleet, *components: str) -> dict[str, Any]:
    """A NetworkPolicyPeer: the fleet's pods of these components (its own namespace)."""
    return {
        "podSelector": {
            "matchLabels": {FLEET_LABEL: fleet.name},
            "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In", "values": list(components)}],
        }
    }


def client_peer(fleet: Fleet) -> dict[str, Any]:
    """The clients (trainers) as a NetworkPolicyPeer: spec.networkPolicy.clients, by default the
    pods labelled gamefleet.dev/client=<fleet> in the fleet's namespace."""
    given = fleet.spec["networkPolicy"].get("clients", {})
    peer = {
        "podSelector": copy.deepcopy(given.get("podSelector", {"matchLabels": {CLIENT_LABEL: fleet.name}}))
    }
    if "namespaceSelector" in given:
        peer["namespaceSelector"] = copy.deepcopy(given["namespaceSelector"])
    return peer


def operator_peer(fleet: Fleet, operator_namespace: str | None) -> dict[str, Any]:
    """The operator's pods as a NetworkPolicyPeer: spec.networkPolicy.operator, by default the pods
    labelled as manifests/ and the chart label the operator's, in the namespace it runs in (any
    namespace when that is unknown: an operator outside the cluster)."""
    given = fleet.spec["networkPolicy"].get("operator", {})
    namespaces = {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}} if operator_namespace else {}
    return {
        "namespaceSelector": copy.deepcopy(given.get("namespaceSelector", namespaces)),
        "podSelector": copy.deepcopy(given.get("podSelector", {"matchLabels": OPERATOR_POD_LABELS})),
    }


def _metrics_rules(fleet: Fleet) -> list[dict[str, Any]]:
    """The metrics port's ingress rule: from spec.networkPolicy.metrics, or from anywhere."""
    metrics = fleet.spec["telemetry"]["metrics"]
    if not metrics["enabled"]:
        return []
    rule: dict[str, Any] = {"ports": [_tcp(metrics["port"])]}
    if scrapers := fleet.spec["networkPolicy"].get("metrics"):
        rule["from"] = [copy.deepcopy(dict(scrapers))]
    return [rule]


def _network_policy(fleet: Fleet, name: str, component: str, ingress: list[dict[str, Any]]) -> Manifest:
    """Ingress to the component's pods only by these rules (egress stays open)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(fleet, name, component),
        "spec": {
            "podSelector": {"matchLabels": selector(fleet, component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def shard_network_policy(fleet: Fleet) -> Manifest:
    """gRPC from the routers, the other shards (a game moves from shard to shard) and the clients
    (who may route to the shards themselves); metrics from the scrapers."""
    peers = [_pods(fleet, "router", "shard"), client_peer(fleet)]
    grpc = {"ports": [_tcp(GRPC_PORT)], "from": peers}
    return _network_policy(fleet, shard_set_name(fleet), "shard", [grpc, *_metrics_rules(fleet)])


def router_network_policy(fleet: Fleet) -> Manifest:
    grpc = {"ports": [_tcp(GRPC_PORT)], "from": [client_peer(fleet)]}
    return _network_policy(fleet, f"{fleet.name}-router", "router", [grpc, *_metrics_rules(fleet)])


def redis_network_policy(fleet: Fleet, operator_namespace: str | None) -> Manifest:
    """The managed Redis: the fleet's shards and routers (state, the registry) and the operator
    (the registry: load, drains, the cleanup), nobody else."""
    peers = [_pods(fleet, "router", "shard"), operator_peer(fleet, operator_namespace)]
    return _network_policy(
        fleet, f"{fleet.name}-redis", "redis", [{"ports": [_tcp(REDIS_PORT)], "from": peers}]
    )


def network_policies(fleet: Fleet, operator_namespace: str | None = None) -> list[Manifest]:
    if not fleet.spec["networkPolicy"]["enabled"]:
        return []
    policies = [shard_network_policy(fleet), router_network_policy(fleet)]
    if fleet.spec["redis"]["managed"]["enabled"]:
        policies.append(redis_network_policy(fleet, operator_namespace))
    return policies


def render(
    fleet: Fleet, shard_replicas: int | None = None, *, operator_namespace: str | None = None
) -> list[Manifest]:
    """Every child of the fleet, in apply order (the NetworkPolicies before the pods they guard).
    `shard_replicas` overrides the StatefulSet's replicas while leaving shards drain (see
    autoscale.drain_order); default: fleet.shards. `operator_namespace`: where the operator's pods
    run, whom a managed Redis's NetworkPolicy admits (None: unknown)."""
    manifests = [config_map(fleet), *network_policies(fleet, operator_namespace)]
    if fleet.spec["redis"]["managed"]["enabled"]:
        manifests += [redis_service(fleet), redis_stateful_set(fleet)]
    manifests += [
        shard_service(fleet),
        shard_stateful_set(fleet, fleet.shards if shard_replicas is None else shard_replicas),
        disruption_budget(fleet),
        router_deployment(fleet),
        fleet_service(fleet),
    ]
    if fleet.spec["telemetry"]["metrics"]["serviceMonitor"]:
        manifests.append(service_monitor(fleet))
    return manifests


def optional_children(fleet: Fleet) -> list[Manifest]:
    """Children render() emits for this fleet only with an option on (ServiceMonitor, managed
    Redis, NetworkPolicies): those the current spec does not render are deleted."""
    spec = copy.deepcopy(dict(fleet.spec))
    spec["telemetry"]["metrics"]["serviceMonitor"] = True
    spec["redis"]["managed"]["enabled"] = True
    spec["networkPolicy"]["enabled"] = True
    everything = render(dataclasses.replace(fleet, spec=spec))
    rendered = {(m["kind"], m["metadata"]["name"]) for m in render(fleet)}
    return [m for m in everything if (m["kind"], m["metadata"]["name"]) not in rendered]
