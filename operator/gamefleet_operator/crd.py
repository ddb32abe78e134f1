"""The GameFleet CustomResourceDefinition, built here once and written to manifests/crd.yaml.

The schema is the single source of the spec's bounds, enums and defaults: the API server
enforces it, and the operator validates every spec against the same dict (spec.py), so a
fleet the API server let through (an older CRD, a cluster without CEL) is still judged
by today's rules. `gamefleet operator --print-crd` prints it; a test keeps the file current.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import GROUP, KIND, PLURAL, VERSION

Schema = dict[str, Any]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME = 40  # pod names add "-shard-NNNN" and the controller-revision-hash label caps them at 63


def integer(low: int, high: int, default: int | None, description: str) -> Schema:
    schema: Schema = {"type": "integer", "minimum": low, "maximum": high, "description": description}
    return schema | ({} if default is None else {"default": default})


def number(low: float, high: float, default: float, description: str) -> Schema:
    return {"type": "number", "minimum": low, "maximum": high, "default": default, "description": description}


def boolean(default: bool, description: str) -> Schema:
    return {"type": "boolean", "default": default, "description": description}


def string(description: str, default: str | None = None, **bounds: Any) -> Schema:
    schema: Schema = {"type": "string", "description": description, **bounds}
    return schema | ({} if default is None else {"default": default})


def section(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    """An object whose defaults apply even when the user leaves it out (`default: {}`)."""
    return {"type": "object", "description": description, "default": {}, "properties": properties, **extra}


QUANTITY: Schema = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "pattern": (
        r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
        r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ),
}


def resources(pod: str, requests: dict[str, str], limits: dict[str, str], why: str = "") -> Schema:
    """A container's requests and limits, defaulted as a whole: a spec that sets the field keeps
    exactly what it sets (a default merged into it could put a limit below the user's request)."""
    quantities = {"type": "object", "additionalProperties": QUANTITY}
    shown = lambda q: ", ".join(f"{k} {v}" for k, v in q.items())  # noqa: E731
    description = (
        f"Requests and limits of {pod} (a Kubernetes ResourceRequirements). Left out: requests"
        f" {shown(requests)}, limits {shown(limits)}{why}. Set, it is used exactly as written."
    )
    return {
        "type": "object",
        "description": description,
        "default": {"requests": requests, "limits": limits},
        "properties": {"requests": quantities, "limits": quantities},
    }


# A Kubernetes LabelSelector (matchLabels and matchExpressions).
LABEL_SELECTOR: Schema = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def peer(description: str, pods: str, namespaces: str) -> Schema:
    """Who a NetworkPolicy rule admits: a NetworkPolicyPeer's podSelector and namespaceSelector."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "podSelector": LABEL_SELECTOR | {"description": pods},
            "namespaceSelector": LABEL_SELECTOR | {"description": namespaces},
        },
    }


# (rule, message): cross-field checks the schema cannot express. spec.py mirrors each one in
# Python (the operator cannot evaluate CEL), and a table test runs both on the same cases.
SPEC_RULES: tuple[tuple[str, str], ...] = (
    (
        "self.autoscaling.minShards <= self.autoscaling.maxShards",
        "autoscaling.minShards must be <= autoscaling.maxShards",
    ),
    (
        "!self.autoscaling.enabled || (self.shards >= self.autoscaling.minShards"
        " && self.shards <= self.autoscaling.maxShards)",
        "shards must lie within [autoscaling.minShards, autoscaling.maxShards] while autoscaling is enabled",
    ),
    (
        "!(self.redis.managed.enabled && has(self.redis.address))",
        "redis.address (an external Redis) and redis.managed.enabled are exclusive",
    ),
    (
        "self.durability.mode == 'off' || self.redis.managed.enabled || has(self.redis.address)",
        "durability snapshot/log keeps games in Redis: set redis.address or redis.managed.enabled",
    ),
    (
        "!self.autoscaling.enabled || self.redis.managed.enabled || has(self.redis.address)",
        "autoscaling reads shard load from the Redis registry: set redis.address or redis.managed.enabled",
    ),
    (
        "!self.telemetry.metrics.serviceMonitor || self.telemetry.metrics.enabled",
        "telemetry.metrics.serviceMonitor needs telemetry.metrics.enabled",
    ),
    (
        "!self.redis.tls || has(self.redis.address)",
        "redis.tls applies to an external Redis: set redis.address (the managed one speaks plaintext)",
    ),
)
SECRET_KEY_REF: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": string("Secret name.", minLength=1, maxLength=253),
        "key": string("Key in the Secret.", "password", minLength=1, maxLength=253),
    },
}
NAME_RULE = (f"size(self.metadata.name) <= {MAX_NAME}", f"a GameFleet name has at most {MAX_NAME} characters")

SPEC: Schema = {
    "type": "object",
    "description": "The fleet the operator keeps running.",
    "required": ["image"],
    "x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in SPEC_RULES],
    "properties": {
        "shards": integer(1, 1024, 2, "Game shards (pods of the shard StatefulSet); the scale subresource."),
        "image": string("The gamefleet image the shards and routers run.", minLength=1, maxLength=512),
        "imagePullPolicy": string(
            "Pull policy of the fleet's pods.", "IfNotPresent", enum=["Always", "IfNotPresent", "Never"]
        ),
        "resources": resources(
            "one shard pod",
            {"cpu": "1", "memory": "1Gi"},
            {"cpu": "2", "memory": "1Gi"},
            " (the engine's threads, NUMBA_NUM_THREADS, follow limits.cpu; a memory limit equal to the"
            " request keeps the pod within it, and the kubelet evicts pods over their request first)",
        ),
        "drainTimeoutSeconds": integer(
            0,
            3600,
            60,
            "How long a leaving shard may take to hand its games over before it is removed; 0: it leaves"
            " at once, its games stay in Redis for the other shards. The pod's termination grace period"
            " is preStop + this + the shard's stop grace + a margin.",
        ),
        "suspend": boolean(False, "Drain and stop every shard and router; the fleet and its Redis stay."),
        "game": section(
            "Defaults for the fields a create request leaves unset (every field of a request without a"
            " config): the shards' --game-width/--game-height/--game-players; and the shard size.",
            {
                "width": integer(4, 64, 20, "Board width."),
                "height": integer(4, 64, 20, "Board height."),
                "players": integer(2, 8, 2, "Seats per game."),
                "capacityPerShard": integer(1, 1 << 20, 4096, "Games one shard holds (utilisation's 100%)."),
            },
        ),
        "durability": section(
            "What survives a shard's loss: off (nothing), snapshot (state every N ticks), log (every step).",
            {
                "mode": string("Durability mode.", "off", enum=["off", "snapshot", "log"]),
                "snapshotEveryTicks": integer(1, 1_000_000, 100, "Ticks between snapshots of a game."),
                "ttlSeconds": integer(60, 30 * 86400, 86400, "Expiry of a game's keys in Redis."),
            },
        ),
        "redis": section(
            "The Redis for durability and the shard registry: an external address, or one the operator runs.",
            {
                "address": string("host:port of an external Redis.", pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$"),
                "database": integer(0, 15, 0, "Redis database number."),
                "tls": boolean(
                    False, "Speak TLS to the external Redis (rediss://), verified by the image's roots."
                ),
                "username": string(
                    "Redis ACL user (with passwordSecretRef; default: the default user).", maxLength=253
                ),
                "passwordSecretRef": SECRET_KEY_REF
                | {
                    "description": "Secret (in the fleet's namespace) holding the Redis password. Left out"
                    " with managed Redis: the operator generates one into Secret <fleet>-redis-auth.",
                },
                "managed": section(
                    "A single-pod Redis the operator runs for this fleet (append-only file on a volume),"
                    " with a password (passwordSecretRef, else one the operator generates).",
                    {
                        "enabled": boolean(False, "Run a Redis for this fleet."),
                        "image": string("Redis image.", "redis:7.4-alpine", minLength=1),
                        "storage": QUANTITY | {"default": "1Gi", "description": "Volume size."},
                        "storageClassName": string("StorageClass of the volume (cluster default if unset)."),
                        "resources": resources(
                            "the Redis pod",
                            {"cpu": "250m", "memory": "512Mi"},
                            {"cpu": "1", "memory": "1Gi"},
                            " (room above the request for the copy-on-write of an append-only file"
                            " rewrite; raise both with the games the fleet keeps)",
                        ),
                    },
                ),
            },
        ),
        "autoscaling": section(
            "Size the fleet to its games: utilisation = active games / (shards x capacityPerShard).",
            {
                "enabled": boolean(False, "Let the operator set spec.shards from shard load."),
                "minShards": integer(1, 1024, 1, "Fewest shards."),
                "maxShards": integer(1, 1024, 8, "Most shards."),
                "targetUtilisation": number(0.05, 1.0, 0.75, "Utilisation the autoscaler steers to."),
                "scaleDownStabilisationSeconds": integer(
                    0, 3600, 300, "Scale down only to the highest recommendation of this window."
                ),
            },
        ),
        "router": section(
            "The fleet service: routers that split each batch by shard.",
            {
                "replicas": integer(1, 64, 2, "Router pods."),
                "resources": resources(
                    "one router pod", {"cpu": "500m", "memory": "512Mi"}, {"cpu": "1", "memory": "512Mi"}
                ),
            },
        ),
        "networkPolicy": section(
            "NetworkPolicies for the fleet's pods (ingress only; enforced where the cluster's network"
            " plugin supports NetworkPolicy). Shards take gRPC (50051) from the fleet's routers, its"
            " other shards (games move between shards) and the clients; routers from the clients; the"
            " metrics port from the metrics scrapers; a managed Redis only from the fleet's shards and"
            " routers and the operator. The kubelet's probes are not subject to NetworkPolicy. Egress"
            " is not restricted.",
            {
                "enabled": boolean(
                    True,
                    "Render the NetworkPolicies (false deletes them). On, a client the `clients`"
                    " selectors do not match (an unlabelled trainer pod) can no longer reach the fleet.",
                ),
                "clients": peer(
                    "Trainers and other clients of the fleet service and the shards.",
                    "Client pods. Left out: pods labelled gamefleet.dev/client=<fleet name>; {}: every pod"
                    " of the namespaces selected.",
                    "Namespaces of the client pods. Left out: the fleet's namespace only; {}: every"
                    " namespace.",
                ),
                "metrics": peer(
                    "Who may scrape the metrics port. With neither selector (the default) the port is open"
                    " to every source, so any Prometheus can scrape it; with either, only the pods it"
                    " selects (NetworkPolicyPeer semantics: a podSelector alone means the fleet's"
                    " namespace).",
                    "Scraper pods (e.g. matchLabels app.kubernetes.io/name: prometheus).",
                    "Namespaces of the scrapers (e.g. matchLabels kubernetes.io/metadata.name: monitoring).",
                ),
                "operator": peer(
                    "The operator's pods, which read the shard registry in a managed Redis.",
                    "Left out: pods labelled app.kubernetes.io/name=gamefleet-operator (manifests/ and the"
                    " chart label the operator's pods so).",
                    "Left out: the namespace the operator runs in (its pod's namespace), or every namespace"
                    " when it runs outside the cluster.",
                ),
            },
        ),
        "security": section(
            "Who may talk to the fleet's gRPC ports (shards, routers, shard to shard). gRPC health stays"
            " open (the probes reach it on a plaintext health-only port when TLS is on).",
            {
                "tls": {
                    "type": "object",
                    "description": "TLS on every gRPC port and channel, from a kubernetes.io/tls Secret"
                    " (tls.crt, tls.key, ca.crt: cert-manager's shape; the chart's fleet.security.certManager"
                    " makes one). The certificate must name <fleet>-router.<ns>.svc and"
                    " *.<fleet>-shards.<ns>.svc.",
                    "required": ["secretName"],
                    "properties": {
                        "secretName": string(
                            "The Secret, in the fleet's namespace.", minLength=1, maxLength=253
                        ),
                        "clientAuth": boolean(
                            True, "Mutual TLS: clients must show a certificate signed by ca.crt."
                        ),
                    },
                },
                "tokenSecretRef": SECRET_KEY_REF
                | {
                    "description": "Secret holding the fleet's bearer token (key default: token): calls"
                    " without it are refused (UNAUTHENTICATED), but for health and seat play.",
                    "properties": SECRET_KEY_REF["properties"]
                    | {"key": string("Key in the Secret.", "token", minLength=1, maxLength=253)},
                },
            },
        ),
        "telemetry": section(
            "Metrics and traces of the fleet's pods.",
            {
                "metrics": section(
                    "Prometheus metrics.",
                    {
                        "enabled": boolean(True, "Serve /metrics on every pod."),
                        "port": integer(1024, 65535, 9100, "Metrics port."),
                        "serviceMonitor": boolean(False, "Create a prometheus-operator ServiceMonitor."),
                        "interval": string("Scrape interval.", "30s", pattern=r"^[0-9]+(ms|s|m)$"),
                    },
                ),
                "tracing": section(
                    "OpenTelemetry traces, exported over OTLP.",
                    {
                        "otlpEndpoint": string(
                            "OTLP/gRPC endpoint (tracing is off without one).",
                            pattern=r"^https?://[^\s]+$",
                            maxLength=512,
                        ),
                        "samplingRatio": number(0.0, 1.0, 0.1, "Share of root traces sampled."),
                    },
                ),
            },
        ),
    },
}

CONDITION: Schema = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"},
    },
}

STATUS: Schema = {
    "type": "object",
    "description": "What the operator observed.",
    "properties": {
        "shards": {"type": "integer", "description": "Shard pods the StatefulSet keeps (drain included)."},
        "readyShards": {"type": "integer"},
        "routers": {"type": "integer", "description": "Ready router pods."},
        "games": {"type": "integer", "description": "Active games the shard registry reports."},
        "capacity": {"type": "integer"},
        "utilisation": {"type": "number"},
        "selector": {
            "type": "string",
            "description": "Label selector of the shard pods (scale subresource).",
        },
        "observedGeneration": {"type": "integer"},
        "draining": {
            "type": "object",
            "description": "Leaving shards and when their drain was requested (unix seconds).",
            "additionalProperties": {"type": "number"},
        },
        "autoscaler": {
            "type": "object",
            "properties": {
                "desiredShards": {"type": "integer"},
                "reason": {"type": "string"},
                "recommendations": {
                    "type": "array",
                    "description": "Recommendations inside the scale-down stabilisation window.",
                    "items": {
                        "type": "object",
                        "properties": {"shards": {"type": "integer"}, "at": {"type": "number"}},
                    },
                },
            },
        },
        "conditions": {
            "type": "array",
            "items": CONDITION,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    },
}

PRINTER_COLUMNS = [  # kubectl get gf: Agones' DESIRED/CURRENT/READY, then games and load
    {"name": "Shards", "type": "integer", "jsonPath": ".spec.shards"},
    {"name": "Current", "type": "integer", "jsonPath": ".status.shards"},  # draining shards included
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyShards"},
    {"name": "Games", "type": "integer", "jsonPath": ".status.games"},
    {"name": "Utilisation", "type": "number", "jsonPath": ".status.utilisation"},
    {"name": "Status", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    rule, message = NAME_RULE
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["gf"],
                "categories": ["all", "gamefleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-validations": [{"rule": rule, "message": message}],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": SPEC,
                                "status": STATUS,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.shards",
                            "statusReplicasPath": ".status.shards",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    """manifests/crd.yaml, byte for byte."""
    header = (
        "# Generated from operator/gamefleet_operator/crd.py (gamefleet operator --print-crd); do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=110)
