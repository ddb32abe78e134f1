"""render(fleet): what each spec turns into, one rule per test, tables where cases repeat."""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

# the Pod Security "restricted" check the chart's tests keep (one table of the profile's rules)
from chart.pods import pod_templates as workload_pods
from chart.pods import restricted_violations
from gamefleet_operator.crd import SPEC
from gamefleet_operator.render import (
    CONFIG_HASH_ANNOTATION,
    GRPC_PORT,
    PRESTOP_SECONDS,
    REDIS_PORT,
    SHUTDOWN_MARGIN_SECONDS,
    STOP_GRACE_SECONDS,
    config_data,
    config_hash,
    optional_children,
    render,
    selector_string,
    termination_grace_seconds,
)
from gamefleet_operator.spec import Fleet

from gameserver.cli import build_parser
from gameserver.cli.serve import drain_timeout, fleet_options, game_defaults
from gameserver.engine import GameConfig

from .netpol import Pod, admitted, pod_of, selects

IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))


def fleet(name: str = "f", **spec: Any) -> Fleet:
    return Fleet.from_body(
        {"metadata": {"name": name, "namespace": "games"}, "spec": {"image": IMAGE, **spec}}
    )


def by_kind(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [m["metadata"]["name"] for m in found])
    return found[0]


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest)["env"]}


MANAGED = {"redis": {"managed": {"enabled": True}}}
REDIS_POLICY = ("NetworkPolicy", "f-redis")


@pytest.mark.parametrize(
    ("spec", "children"),
    [
        (
            {},
            [
                ("ConfigMap", "f-config"),
                ("NetworkPolicy", "f-shard"),
                ("NetworkPolicy", "f-router"),
                ("Service", "f-shards"),
                ("StatefulSet", "f-shard"),
                ("PodDisruptionBudget", "f-shard"),
                ("Deployment", "f-router"),
                ("Service", "f"),
            ],
        ),
        (
            MANAGED,
            [
                ("ConfigMap", "f-config"),
                ("NetworkPolicy", "f-shard"),
                ("NetworkPolicy", "f-router"),
                ("NetworkPolicy", "f-redis"),
                ("Service", "f-redis"),
                ("StatefulSet", "f-redis"),
                "...",
            ],
        ),
        ({"telemetry": {"metrics": {"serviceMonitor": True}}}, ["...", ("ServiceMonitor", "f")]),
        (
            {"networkPolicy": {"enabled": False}},
            [
                ("ConfigMap", "f-config"),
                ("Service", "f-shards"),
                ("StatefulSet", "f-shard"),
                ("PodDisruptionBudget", "f-shard"),
                ("Deployment", "f-router"),
                ("Service", "f"),
            ],
        ),
    ],
    ids=["plain", "managed redis", "service monitor", "no network policies"],
)
def test_children_in_apply_order(spec: dict[str, Any], children: list[Any]) -> None:
    """ConfigMap first (pods read it), the NetworkPolicies before any pod they guard exists, Redis
    before the shards that use it, extras last."""
    rendered = [(m["kind"], m["metadata"]["name"]) for m in render(fleet(**spec))]
    if children[-1] == "...":
        assert rendered[: len(children) - 1] == children[:-1]
    elif children[0] == "...":
        assert rendered[-(len(children) - 1) :] == children[1:]
    else:
        assert rendered == children


def test_every_child_is_labelled_and_namespaced() -> None:
    for manifest in render(fleet(**MANAGED, telemetry={"metrics": {"serviceMonitor": True}})):
        assert manifest["metadata"]["namespace"] == "games"
        assert manifest["metadata"]["labels"]["gamefleet.dev/fleet"] == "f"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gamefleet-operator"


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_workload_selectors_match_their_pod_labels(kind: str) -> None:
    for manifest in render(fleet(**MANAGED)):
        if manifest["kind"] == kind:
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            assert manifest["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_services_select_the_right_component() -> None:
    manifests = render(fleet(**MANAGED))
    pods = {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["labels"]
        for m in manifests
        if m["kind"] in ("StatefulSet", "Deployment")
    }
    for service, workload in [("f-shards", "f-shard"), ("f", "f-router"), ("f-redis", "f-redis")]:
        selector = by_kind(manifests, "Service", service)["spec"]["selector"]
        assert selector.items() <= pods[workload].items(), service
    assert by_kind(manifests, "Service", "f-shards")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize(
    ("spec", "override", "replicas"),
    [({"shards": 3}, None, 3), ({"shards": 3}, 5, 5), ({"shards": 3, "suspend": True}, None, 0)],
    ids=["spec.shards", "draining override", "suspended"],
)
def test_shard_replicas(spec: dict[str, Any], override: int | None, replicas: int) -> None:
    assert by_kind(render(fleet(**spec), override), "StatefulSet")["spec"]["replicas"] == replicas


def test_shards_are_a_stateful_set_with_stable_names() -> None:
    shards = by_kind(render(fleet()), "StatefulSet", "f-shard")
    assert shards["spec"]["serviceName"] == "f-shards"
    assert shards["spec"]["podManagementPolicy"] == "Parallel"
    assert env(shards)["GAMEFLEET_SHARD"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env(shards)["GAMEFLEET_ADDRESS"] == f"$(GAMEFLEET_SHARD).$(GAMEFLEET_SHARD_SERVICE):{GRPC_PORT}"


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_probes_use_grpc_health_checking(kind: str) -> None:
    """Readiness on the default service (NOT_SERVING while a shard drains); liveness on the one the
    servers keep SERVING while they run, so a draining shard is not restarted."""
    from gameserver.wire.services import LIVENESS_SERVICE

    pod = container(by_kind(render(fleet()), kind))
    for probe in ("startupProbe", "readinessProbe"):
        assert pod[probe]["grpc"] == {"port": GRPC_PORT}, probe
    assert pod["livenessProbe"]["grpc"] == {"port": GRPC_PORT, "service": LIVENESS_SERVICE}


def pod_environment(manifests: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet gives it: ConfigMap envFrom, then env (refs to
    fields and Secrets stand in as placeholders; nothing the flags read comes from them)."""
    maps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    environment: dict[str, str] = {}
    for source in container(workload).get("envFrom", []):
        environment |= maps[source["configMapRef"]["name"]]
    for variable in container(workload).get("env", []):
        environment[variable["name"]] = variable.get("value", f"<{variable['name']}>")
    return environment


def shard_process_args(
    monkeypatch: pytest.MonkeyPatch, manifests: list[dict[str, Any]]
) -> tuple[dict[str, Any], argparse.Namespace]:
    """The shard StatefulSet and what `gamefleet serve` makes of its pod's args and environment."""
    shards = by_kind(manifests, "StatefulSet", "f-shard")
    for name in [n for n in os.environ if n.startswith(("GAMEFLEET_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in pod_environment(manifests, shards).items():
        monkeypatch.setenv(name, value)
    pod = container(shards)
    assert pod["command"] == ["gamefleet"]
    return shards, build_parser().parse_args(pod["args"])  # defaults read from the environment now


DRAIN_MAXIMUM = SPEC["properties"]["drainTimeoutSeconds"]["maximum"]


@pytest.mark.parametrize("drain", [0, 5, 60, DRAIN_MAXIMUM])
def test_the_pods_grace_covers_the_shards_whole_shutdown(monkeypatch: pytest.MonkeyPatch, drain: int) -> None:
    """From the rendered StatefulSet alone: SIGKILL comes after preStop + the drain the process will
    use (its args over its env) + the stop grace it gives in-flight calls + a margin for the flush."""
    manifests = render(fleet(drainTimeoutSeconds=drain, durability={"mode": "log"}, **MANAGED))
    shards, args = shard_process_args(monkeypatch, manifests)
    pod_spec = shards["spec"]["template"]["spec"]
    pre_stop = container(shards)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert fleet_options(args) is not None  # the process starts (drain 0 included: no crash loop)
    assert drain_timeout(args) == drain
    margin = pod_spec["terminationGracePeriodSeconds"] - (int(pre_stop[1]) + drain_timeout(args) + args.grace)
    assert margin >= 5, pod_spec["terminationGracePeriodSeconds"]  # the final flush to Redis, exit
    assert 0 < args.grace <= 10  # a short fixed grace for in-flight calls, not the drain again


def test_the_shutdown_budget_is_its_named_terms() -> None:
    f = fleet(drainTimeoutSeconds=60)
    assert termination_grace_seconds(f) == PRESTOP_SECONDS + 60 + STOP_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS
    pod = container(by_kind(render(f), "StatefulSet"))
    assert pod["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}


def test_spec_game_reaches_the_shards_as_their_default_game(monkeypatch: pytest.MonkeyPatch) -> None:
    """spec.game -> the ConfigMap -> `gamefleet serve`'s --game-* defaults -> the GameConfig that
    fills the fields a create request leaves unset."""
    manifests = render(fleet(game={"width": 30, "height": 10, "players": 4}))
    _, args = shard_process_args(monkeypatch, manifests)
    assert (args.game_width, args.game_height, args.game_players) == (30, 10, 4)
    assert game_defaults(args) == GameConfig(width=30, height=10, players=4)


def test_shard_command_line() -> None:
    pod = container(
        by_kind(render(fleet(game={"capacityPerShard": 777}, drainTimeoutSeconds=45)), "StatefulSet")
    )
    assert pod["command"] == ["gamefleet"]
    assert pod["args"] == [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "50051",
        "--max-games",
        "777",
        "--drain-timeout",
        "45",
        "--grace",
        str(STOP_GRACE_SECONDS),
    ]
    assert pod["envFrom"] == [{"configMapRef": {"name": "f-config"}}]


def example_pods() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every pod template render() emits for the example fleets and a managed-Redis fleet."""
    bodies = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    bodies.append(
        {"metadata": {"name": "managed", "namespace": "games"}, "spec": {"image": IMAGE, **MANAGED}}
    )
    return [
        (f"{b['metadata']['name']}/{where}", meta, pod)
        for b in bodies
        for where, meta, pod in workload_pods(render(Fleet.from_body(b)))
    ]


@pytest.mark.parametrize(("where", "meta", "pod"), example_pods(), ids=[w for w, _, _ in example_pods()])
def test_every_pod_passes_pod_security_restricted(
    where: str, meta: dict[str, Any], pod: dict[str, Any]
) -> None:
    """runAsNonRoot, seccomp RuntimeDefault, no escalation, drop ALL, no host namespaces/paths/ports."""
    assert restricted_violations(pod, meta) == []


def test_managed_redis_claims_go_with_the_stateful_set() -> None:
    """Deleted (fleet gone, its keys purged; or managed Redis off): the claim goes too. Scaled: kept."""
    redis = by_kind(render(fleet(**MANAGED)), "StatefulSet", "f-redis")
    assert redis["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


@pytest.mark.parametrize(
    ("spec", "expected", "absent"),
    [
        ({}, {"GAMEFLEET_DURABILITY": "off", "OTEL_SDK_DISABLED": "true"}, ["GAMEFLEET_REDIS_URL"]),
        (
            {"durability": {"mode": "log"}, "redis": {"address": "redis.db:6380", "database": 3}},
            {"GAMEFLEET_DURABILITY": "log", "GAMEFLEET_REDIS_URL": "redis://redis.db:6380/3"},
            [],
        ),
        (MANAGED, {"GAMEFLEET_REDIS_URL": "redis://f-redis.games.svc:6379/0"}, []),
        (
            {"telemetry": {"tracing": {"otlpEndpoint": "http://otel:4317", "samplingRatio": 0.25}}},
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.25",
            },
            ["OTEL_SDK_DISABLED"],
        ),
        ({"telemetry": {"metrics": {"enabled": False}}}, {}, ["GAMEFLEET_METRICS_PORT"]),
        (
            {"game": {"width": 30, "height": 10, "players": 4}},
            {"GAMEFLEET_GAME_WIDTH": "30", "GAMEFLEET_GAME_HEIGHT": "10", "GAMEFLEET_GAME_PLAYERS": "4"},
            [],
        ),
    ],
    ids=["defaults", "external redis", "managed redis", "tracing", "no metrics", "game"],
)
def test_config_map_environment(spec: dict[str, Any], expected: dict[str, str], absent: list[str]) -> None:
    data = config_data(fleet(**spec))
    assert expected.items() <= data.items()
    assert not set(absent) & set(data)
    assert data["GAMEFLEET_FLEET"] == "f" and data["GAMEFLEET_FLEET_ID"] == "games.f"
    assert data["GAMEFLEET_SHARD_SERVICE"] == "f-shards.games.svc"


def test_redis_password_comes_from_the_secret_everywhere() -> None:
    ref = {"name": "redis-auth", "key": "pw"}
    manifests = render(fleet(redis={"managed": {"enabled": True}, "passwordSecretRef": ref}))
    secret = {"secretKeyRef": ref}
    for kind, name in [("StatefulSet", "f-shard"), ("Deployment", "f-router")]:
        assert env(by_kind(manifests, kind, name))["GAMEFLEET_REDIS_PASSWORD"] == secret
    redis = by_kind(manifests, "StatefulSet", "f-redis")
    assert env(redis)["REDIS_PASSWORD"] == secret
    assert container(redis)["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert "password" not in str(config_data(fleet(redis={"address": "r:1", "passwordSecretRef": ref})))


def test_config_hash_rolls_pods_on_config_changes_only() -> None:
    assert config_hash(fleet(shards=2)) == config_hash(fleet(shards=9))
    assert config_hash(fleet()) != config_hash(
        fleet(durability={"mode": "snapshot"}, redis={"address": "r:1"})
    )
    shards = by_kind(render(fleet()), "StatefulSet")
    assert shards["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == config_hash(
        fleet()
    )


def template_annotation(f: Fleet, kind: str) -> str:
    return by_kind(render(f), kind)["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]


@pytest.mark.parametrize(
    "change",
    [{"game": {"width": 30}}, {"drainTimeoutSeconds": 7}, {"game": {"capacityPerShard": 64}}],
)
def test_a_setting_only_shards_read_rolls_the_shards_and_not_the_routers(change: dict[str, Any]) -> None:
    """A game-size edit must not cut every trainer's connection to the routers (they never read it)."""
    before, after = fleet(), fleet(**change)
    assert template_annotation(before, "StatefulSet") != template_annotation(after, "StatefulSet")
    assert template_annotation(before, "Deployment") == template_annotation(after, "Deployment")


def test_a_setting_the_routers_read_rolls_them() -> None:
    before, after = fleet(), fleet(redis={"address": "r:1"})
    assert template_annotation(before, "Deployment") != template_annotation(after, "Deployment")


def test_the_router_pods_grace_covers_the_calls_it_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the rendered Deployment: SIGKILL comes after preStop + `route --grace`, and that grace
    covers a forwarded call's whole budget (--shard-timeout): a router never cancels a call that
    may have run on its shard (its caller could not tell whether it did)."""
    manifests = render(fleet())
    routers = by_kind(manifests, "Deployment", "f-router")
    for name in [n for n in os.environ if n.startswith(("GAMEFLEET_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in pod_environment(manifests, routers).items():
        monkeypatch.setenv(name, value)
    pod = container(routers)
    args = build_parser().parse_args(pod["args"])
    pre_stop = pod["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop == ["sleep", str(PRESTOP_SECONDS)]
    assert args.grace >= args.shard_timeout
    grace = routers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace - (int(pre_stop[1]) + args.grace) >= 5


def test_router_and_fleet_service() -> None:
    manifests = render(fleet(router={"replicas": 3}))
    router = by_kind(manifests, "Deployment", "f-router")
    assert router["spec"]["replicas"] == 3
    assert container(router)["args"][:1] == ["route"]
    assert by_kind(manifests, "Service", "f")["spec"]["ports"][0] == {
        "name": "grpc",
        "port": GRPC_PORT,
        "targetPort": "grpc",
    }
    assert by_kind(render(fleet(suspend=True)), "Deployment")["spec"]["replicas"] == 0


def test_disruption_budget_lets_one_shard_go_at_a_time() -> None:
    manifests = render(fleet())
    budget = by_kind(manifests, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == by_kind(manifests, "StatefulSet")["spec"]["selector"]


def test_service_monitor_scrapes_the_metrics_ports() -> None:
    manifests = render(
        fleet(telemetry={"metrics": {"serviceMonitor": True, "interval": "10s", "port": 9200}})
    )
    monitor = by_kind(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "10s", "path": "/metrics"}]
    assert monitor["spec"]["selector"] == {"matchLabels": {"gamefleet.dev/fleet": "f"}}
    for name in ("f", "f-shards"):
        ports = {p["name"]: p["port"] for p in by_kind(manifests, "Service", name)["spec"]["ports"]}
        assert ports == {"grpc": GRPC_PORT, "metrics": 9200}


def test_managed_redis_keeps_its_data_on_a_volume() -> None:
    redis = by_kind(
        render(fleet(redis={"managed": {"enabled": True, "storage": "5Gi", "storageClassName": "ssd"}})),
        "StatefulSet",
        "f-redis",
    )
    claim = redis["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "5Gi" and claim["storageClassName"] == "ssd"
    assert "--appendonly" in container(redis)["command"]


def test_render_is_pure() -> None:
    f = fleet(**MANAGED)
    before = copy.deepcopy(dict(f.spec))
    assert render(f) == render(f)
    assert dict(f.spec) == before
    assert selector_string(f) == "gamefleet.dev/fleet=f,app.kubernetes.io/component=shard"


@pytest.mark.parametrize(
    ("spec", "pruned"),
    [
        (
            {},
            {("ServiceMonitor", "f"), ("Service", "f-redis"), ("StatefulSet", "f-redis"), REDIS_POLICY},
        ),
        (
            {"telemetry": {"metrics": {"serviceMonitor": True}}},
            {("Service", "f-redis"), ("StatefulSet", "f-redis"), REDIS_POLICY},
        ),
        ({"redis": {"managed": {"enabled": True}}}, {("ServiceMonitor", "f")}),
        (
            {"redis": {"managed": {"enabled": True}}, "telemetry": {"metrics": {"serviceMonitor": True}}},
            set(),
        ),
        (
            {"redis": {"managed": {"enabled": True}}, "networkPolicy": {"enabled": False}},
            {
                ("ServiceMonitor", "f"),
                ("NetworkPolicy", "f-shard"),
                ("NetworkPolicy", "f-router"),
                REDIS_POLICY,
            },
        ),
    ],
    ids=["plain", "monitored", "managed redis", "all", "no network policies"],
)
def test_optional_children_are_the_ones_the_spec_leaves_out(spec: dict[str, Any], pruned: set) -> None:
    """What the operator deletes when the spec drops it: never a child render() emits now."""
    children = optional_children(fleet(**spec))
    assert {(m["kind"], m["metadata"]["name"]) for m in children} == pruned
    rendered = {(m["kind"], m["metadata"]["name"]) for m in render(fleet(**spec))}
    assert not rendered & pruned


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_no_fleet_pod_mounts_a_service_account_token(example: Path) -> None:
    """Shards, routers and the managed Redis never call the Kubernetes API: a token in them would
    only be something to steal."""
    body = yaml.safe_load(example.read_text())
    for manifest in render(Fleet.from_body(body)):
        if manifest["kind"] in ("StatefulSet", "Deployment"):
            pod = manifest["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, manifest["metadata"]["name"]


# --- least privilege: resources, NetworkPolicies -------------------------------------------------

UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}


def quantity(value: str | int) -> float:
    text = str(value)
    unit = next((u for u in UNITS if text.endswith(u)), "")
    return float(text.removesuffix(unit) or 0) * UNITS.get(unit, 1)


# component -> the workload (kind, name suffix) whose pods it is
COMPONENTS = {
    "shard": ("StatefulSet", "shard"),
    "router": ("Deployment", "router"),
    "redis": ("StatefulSet", "redis"),
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_fleet_pod_has_cpu_and_memory_requests_and_limits_by_default(component: str) -> None:
    """Shards, routers and the managed Redis: a spec that says nothing still schedules on what the
    pod needs and stops a runaway at its limit; the limits never below the requests."""
    kind, suffix = COMPONENTS[component]
    resources = container(by_kind(render(fleet(**MANAGED)), kind, f"f-{suffix}"))["resources"]
    for what in ("requests", "limits"):
        assert set(resources[what]) == {"cpu", "memory"}, (what, resources)
    for unit in ("cpu", "memory"):
        assert quantity(resources["limits"][unit]) >= quantity(resources["requests"][unit]) > 0, resources
    assert quantity(resources["limits"]["memory"]) >= 256 * 2**20  # room for Python, numba, Redis


@pytest.mark.parametrize(
    ("spec", "component", "given"),
    [
        ({"resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}, "shard", ["resources"]),
        (
            {"router": {"resources": {"limits": {"cpu": 4, "memory": "2Gi"}}}},
            "router",
            ["router", "resources"],
        ),
        (
            {"redis": {"managed": {"enabled": True, "resources": {"requests": {"memory": "8Gi"}}}}},
            "redis",
            ["redis", "managed", "resources"],
        ),
    ],
)
def test_resources_a_spec_sets_are_kept_as_written(
    spec: dict[str, Any], component: str, given: list[str]
) -> None:
    """No default is merged into what the user wrote: a default limit could sit below their request."""
    kind, suffix = COMPONENTS[component]
    written = spec
    for key in given:
        written = written[key]
    assert container(by_kind(render(fleet(**spec)), kind, f"f-{suffix}"))["resources"] == written


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_the_engine_threads_follow_the_cpu_limit(kind: str) -> None:
    """numba starts a thread per CPU it sees (the node's): under a CPU limit the surplus would be
    throttled in every parallel kernel, so NUMBA_NUM_THREADS is the limit, rounded up."""
    assert env(by_kind(render(fleet()), kind))["NUMBA_NUM_THREADS"] == {
        "resourceFieldRef": {"resource": "limits.cpu"}
    }


def fleet_pods(manifests: list[dict[str, Any]], name: str = "f") -> dict[str, Pod]:
    """component -> its pods, of the components rendered."""
    rendered = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    return {
        component: pod_of(manifests, kind, f"{name}-{suffix}")
        for component, (kind, suffix) in COMPONENTS.items()
        if (kind, f"{name}-{suffix}") in rendered
    }


def test_each_network_policy_guards_its_components_pods_for_ingress_only() -> None:
    manifests = render(fleet(**MANAGED))
    workloads = [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]
    for component, (kind, suffix) in COMPONENTS.items():
        policy = by_kind(manifests, "NetworkPolicy", f"f-{suffix}")
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (DNS, Redis, OTLP) stays open
        guarded = [
            w["metadata"]["name"]
            for w in workloads
            if selects(policy["spec"]["podSelector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert guarded == [by_kind(manifests, kind, f"f-{suffix}")["metadata"]["name"]], component


OPERATOR_NS = "gamefleet-system"
OPERATOR = Pod(OPERATOR_NS, {"app.kubernetes.io/name": "gamefleet-operator"})
CLIENT = Pod("games", {"gamefleet.dev/client": "f"})
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
OTHER_FLEET = fleet_pods(render(fleet("g", **MANAGED)), "g")


@pytest.mark.parametrize(
    ("source", "target", "port", "expected"),
    [
        ("router", "shard", GRPC_PORT, True),  # the fan-out
        ("shard", "shard", GRPC_PORT, True),  # a game moves to another shard
        ("client", "router", GRPC_PORT, True),  # a trainer labelled gamefleet.dev/client=f
        ("client", "shard", GRPC_PORT, True),  # ... routing to the shards itself
        (Pod("games", {}), "router", GRPC_PORT, False),  # an unlabelled pod of the namespace
        (Pod("games", {"gamefleet.dev/client": "g"}), "router", GRPC_PORT, False),  # another fleet's client
        (Pod("elsewhere", {"gamefleet.dev/client": "f"}), "router", GRPC_PORT, False),  # another namespace
        ("redis", "shard", GRPC_PORT, False),
        ("g-shard", "shard", GRPC_PORT, False),  # another fleet's shard
        ("prometheus", "shard", 9100, True),  # metrics: open to any scraper by default
        ("prometheus", "router", 9100, True),
        ("prometheus", "shard", GRPC_PORT, False),
        ("client", "shard", 9101, False),  # a port nobody opened
        ("shard", "redis", REDIS_PORT, True),
        ("router", "redis", REDIS_PORT, True),  # the registry: where the shards are
        ("operator", "redis", REDIS_PORT, True),  # the registry: load, drains, cleanup
        (Pod("games", {"app.kubernetes.io/name": "gamefleet-operator"}), "redis", REDIS_PORT, False),
        (Pod(OPERATOR_NS, {}), "redis", REDIS_PORT, False),  # another pod of the operator's namespace
        ("client", "redis", REDIS_PORT, False),
        ("g-shard", "redis", REDIS_PORT, False),
        ("prometheus", "redis", REDIS_PORT, False),
    ],
)  # fmt: skip
def test_who_may_connect_to_whom_by_default(source: Any, target: str, port: int, expected: bool) -> None:
    manifests = render(fleet(**MANAGED), operator_namespace=OPERATOR_NS)
    pods = fleet_pods(manifests) | {
        "client": CLIENT,
        "prometheus": PROMETHEUS,
        "operator": OPERATOR,
        "g-shard": OTHER_FLEET["shard"],
    }
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    source_pod = pods[source] if isinstance(source, str) else source
    assert admitted(policies, source_pod, pods[target], port) is expected


@pytest.mark.parametrize(
    ("policy", "source", "target", "port", "expected"),
    [
        # clients in namespaces labelled team=rl, any pod of them
        ({"clients": {"namespaceSelector": {"matchLabels": {"team": "rl"}}, "podSelector": {}}},
         Pod("trainers", {}, {"team": "rl"}), "router", GRPC_PORT, True),
        ({"clients": {"namespaceSelector": {"matchLabels": {"team": "rl"}}, "podSelector": {}}},
         Pod("games", {"gamefleet.dev/client": "f"}), "router", GRPC_PORT, False),
        # clients by a label of the user's choosing, in the fleet's namespace
        ({"clients": {"podSelector": {"matchLabels": {"role": "trainer"}}}},
         Pod("games", {"role": "trainer"}), "shard", GRPC_PORT, True),
        ({"clients": {"podSelector": {"matchLabels": {"role": "trainer"}}}},
         Pod("other", {"role": "trainer"}), "shard", GRPC_PORT, False),
        # the metrics port only for the monitoring namespace's scrapers
        ({"metrics": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}},
         PROMETHEUS, "shard", 9100, True),
        ({"metrics": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}},
         Pod("games", {"gamefleet.dev/client": "f"}), "shard", 9100, False),
        # an operator whose pods are labelled otherwise, in a namespace of the user's choosing
        ({"operator": {"podSelector": {"matchLabels": {"app": "gf-op"}},
                       "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}},
         Pod("ops", {"app": "gf-op"}), "redis", REDIS_PORT, True),
        ({"operator": {"podSelector": {"matchLabels": {"app": "gf-op"}},
                       "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}},
         OPERATOR, "redis", REDIS_PORT, False),
    ],
    ids=["client-namespace", "client-namespace-only", "client-label", "client-label-other-namespace",
         "metrics-scrapers", "metrics-others", "operator-custom", "operator-default-not-any-more"],
)  # fmt: skip
def test_the_spec_chooses_clients_scrapers_and_the_operator(
    policy: dict[str, Any], source: Pod, target: str, port: int, expected: bool
) -> None:
    manifests = render(fleet(networkPolicy=policy, **MANAGED), operator_namespace=OPERATOR_NS)
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert admitted(policies, source, fleet_pods(manifests)[target], port) is expected


def test_the_operator_outside_a_cluster_is_admitted_from_any_namespace_by_its_labels() -> None:
    """Where the operator does not know its namespace (run from a workstation, which reaches no
    in-cluster Redis anyway), its pods' labels are what the Redis policy goes by."""
    manifests = render(fleet(**MANAGED))
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    redis = fleet_pods(manifests)["redis"]
    assert admitted(policies, Pod("anywhere", OPERATOR.labels), redis, REDIS_PORT)
    assert not admitted(policies, Pod("anywhere", {}), redis, REDIS_PORT)


def test_metrics_off_opens_no_metrics_port() -> None:
    manifests = render(fleet(telemetry={"metrics": {"enabled": False}}))
    policy = by_kind(manifests, "NetworkPolicy", "f-shard")
    assert [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]] == [GRPC_PORT]
    assert not admitted([policy], PROMETHEUS, fleet_pods(manifests)["shard"], 9100)


def test_network_policies_off_render_none() -> None:
    manifests = render(fleet(networkPolicy={"enabled": False}, **MANAGED))
    assert not [m for m in manifests if m["kind"] == "NetworkPolicy"]
