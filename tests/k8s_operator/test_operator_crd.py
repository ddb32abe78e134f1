"""The GameFleet CRD: the file is current, the chart ships the same bytes, example fleets pass
its schema, bad fleets fail it, and its CEL rules (evaluated with cel-python) agree with the
operator's Python mirror of them on every case."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from gamefleet_operator.crd import NAME_RULE, SPEC_RULES, crd, crd_yaml
from gamefleet_operator.render import render
from gamefleet_operator.spec import RULE_CHECKS, SPEC, Fleet, SpecError, checked_spec, with_defaults
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
IMAGE = "ghcr.io/gamefleet/gamefleet:0.1.0"
REDIS = {"address": "redis:6379"}


def test_manifest_is_generated_from_the_code() -> None:
    assert (ROOT / "manifests" / "crd.yaml").read_text() == crd_yaml(), "run: gamefleet operator --print-crd"


def test_chart_ships_the_same_crd_bytes() -> None:
    """The chart's crds/ are manifests/' CRDs byte for byte: the GameFleet's and kopf peering's."""
    crds = ROOT / "charts" / "gamefleet" / "crds"
    shipped = {"gamefleet-crd.yaml": "crd.yaml", "kopf-peering.yaml": "peering.yaml"}
    assert sorted(p.name for p in crds.glob("*.yaml")) == sorted(shipped)
    for chart, manifest in shipped.items():
        assert (crds / chart).read_bytes() == (ROOT / "manifests" / manifest).read_bytes(), chart


def resolve(path: str) -> dict[str, Any]:
    """The schema node a printer column / scale path (.spec.shards) points at."""
    node = SCHEMA
    for part in path.strip(".").split(".")[:2]:
        node = node["properties"][part.split("[")[0]]
    return node


def test_scale_subresource_and_printer_columns_point_at_schema_fields() -> None:
    version = crd()["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert resolve(scale["specReplicasPath"])["type"] == "integer"
    assert resolve(scale["statusReplicasPath"])["type"] == "integer"
    assert resolve(scale["labelSelectorPath"])["type"] == "string"
    for column in version["additionalPrinterColumns"]:
        if not column["jsonPath"].startswith(".metadata"):
            assert resolve(column["jsonPath"]), column
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Shards",
        "Current",
        "Ready",
        "Games",
        "Utilisation",
        "Status",
        "Age",
    ]


def test_every_default_passes_its_own_schema() -> None:
    spec = with_defaults(SPEC, {"image": IMAGE})
    jsonschema.Draft202012Validator(SPEC).validate(spec)
    assert spec["shards"] == 2 and spec["durability"]["mode"] == "off"
    assert spec["telemetry"]["metrics"]["port"] == 9100  # nested sections default from `default: {}`


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_fleets_pass_the_schema_and_the_operator(path: Path) -> None:
    fleet = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(fleet | {"spec": with_defaults(SPEC, fleet["spec"])})
    assert cel_violations(fleet) == []
    Fleet.from_body(fleet)


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("image", {}),
        ("shards", {"image": IMAGE, "shards": 0}),
        ("shards", {"image": IMAGE, "shards": 5000}),
        ("durability.mode", {"image": IMAGE, "durability": {"mode": "sometimes"}}),
        ("autoscaling.targetUtilisation", {"image": IMAGE, "autoscaling": {"targetUtilisation": 1.5}}),
        ("game.players", {"image": IMAGE, "game": {"players": 9}}),
        ("game.width", {"image": IMAGE, "game": {"width": 65}}),
        ("redis.address", {"image": IMAGE, "redis": {"address": "no port here"}}),
        ("resources.requests.cpu", {"image": IMAGE, "resources": {"requests": {"cpu": "lots"}}}),
        (
            "telemetry.tracing.otlpEndpoint",
            {"image": IMAGE, "telemetry": {"tracing": {"otlpEndpoint": "collector"}}},
        ),
        ("imagePullPolicy", {"image": IMAGE, "imagePullPolicy": "Sometimes"}),
    ],
)
def test_schema_refuses_bad_fields(field: str, spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SPEC).validate(with_defaults(SPEC, spec))
    with pytest.raises(SpecError, match=field.split(".")[-1]):
        checked_spec("fleet", spec)


def cel_violations(fleet: dict[str, Any]) -> list[str]:
    """Messages of the CRD's CEL rules the (defaulted) fleet breaks, evaluated by cel-python."""
    env = celpy.Environment()
    spec = with_defaults(SPEC, fleet["spec"])
    broken = []
    for (rule, message), scope in [*((r, "spec") for r in SPEC_RULES), (NAME_RULE, "root")]:
        target = spec if scope == "spec" else fleet
        if not env.program(env.compile(rule)).evaluate({"self": celpy.json_to_cel(target)}):
            broken.append(message)
    return broken


def fleet_with(spec: dict[str, Any], name: str = "f") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"image": IMAGE, **spec}}


AUTO = {"enabled": True, "minShards": 2, "maxShards": 4}
CEL_CASES = [
    ("plain fleet", {}, []),
    ("min > max", {"autoscaling": {"minShards": 5, "maxShards": 3}}, [0]),
    ("min > max even while disabled", {"autoscaling": {"enabled": False, "minShards": 9}}, [0]),
    ("autoscaled, shards in range", {"shards": 3, "autoscaling": AUTO, "redis": REDIS}, []),
    ("autoscaled, shards below min", {"shards": 1, "autoscaling": AUTO, "redis": REDIS}, [1]),
    ("autoscaled, shards above max", {"shards": 5, "autoscaling": AUTO, "redis": REDIS}, [1]),
    ("not autoscaled: shards free", {"shards": 50, "autoscaling": {"maxShards": 4}}, []),
    ("managed and external redis", {"redis": {"address": "r:6379", "managed": {"enabled": True}}}, [2]),
    ("managed redis alone", {"redis": {"managed": {"enabled": True}}}, []),
    ("snapshot without redis", {"durability": {"mode": "snapshot"}}, [3]),
    ("log with managed redis", {"durability": {"mode": "log"}, "redis": {"managed": {"enabled": True}}}, []),
    ("log with external redis", {"durability": {"mode": "log"}, "redis": REDIS}, []),
    ("autoscaling without redis", {"shards": 2, "autoscaling": AUTO}, [4]),
    (
        "serviceMonitor without metrics",
        {"telemetry": {"metrics": {"enabled": False, "serviceMonitor": True}}},
        [5],
    ),
    ("serviceMonitor with metrics", {"telemetry": {"metrics": {"serviceMonitor": True}}}, []),
    (
        "two rules at once",
        {"durability": {"mode": "log"}, "autoscaling": {**AUTO, "minShards": 9}},
        [0, 1, 3, 4],
    ),
]


@pytest.mark.parametrize(("case", "spec", "broken"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_cel_rules_and_their_python_mirror_agree(case: str, spec: dict[str, Any], broken: list[int]) -> None:
    expected = [SPEC_RULES[i][1] for i in broken]
    assert cel_violations(fleet_with(spec)) == expected, case
    defaulted = with_defaults(SPEC, fleet_with(spec)["spec"])
    assert [SPEC_RULES[i][1] for i, check in enumerate(RULE_CHECKS) if not check(defaulted)] == expected
    if expected:
        with pytest.raises(SpecError, match=re.escape(expected[0])):
            checked_spec("f", fleet_with(spec)["spec"])


@pytest.mark.parametrize(
    ("name", "ok"), [("a" * 40, True), ("a" * 41, False), ("Fleet", False), ("my-fleet", True)]
)
def test_fleet_names(name: str, ok: bool) -> None:
    if len(name) > 40:
        assert cel_violations(fleet_with({}, name)) == [NAME_RULE[1]]
    if ok:
        checked_spec(name, {"image": IMAGE})
    else:
        with pytest.raises(SpecError, match="DNS label"):
            checked_spec(name, {"image": IMAGE})


def test_defaults_do_not_leak_between_fleets() -> None:
    first = with_defaults(SPEC, {"image": IMAGE})
    first["resources"]["requests"]["cpu"] = "9"
    assert with_defaults(SPEC, {"image": IMAGE})["resources"]["requests"]["cpu"] == "1"
    spec = {"image": IMAGE, "game": {"width": 30}}
    with_defaults(SPEC, copy.deepcopy(spec))
    assert spec == {"image": IMAGE, "game": {"width": 30}}


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["shards", "image", "game", "durability", "redis", "autoscaling", "router", "telemetry", "suspend"]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4), st.booleans())
def test_any_spec_is_run_or_refused_with_a_reason(spec: dict[str, Any], with_image: bool) -> None:
    """Garbage never raises anything but SpecError, and whatever passes renders."""
    body = fleet_with({}) | {"spec": spec | ({"image": IMAGE} if with_image else {})}
    try:
        fleet = Fleet.from_body(body)
    except SpecError as e:
        assert str(e)
        return
    assert render(fleet)
