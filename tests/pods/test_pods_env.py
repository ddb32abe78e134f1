"""The test kubelet's pure parts, table-driven against Kubernetes' rules: `$(VAR)` expansion, the
container env from envFrom/env/valueFrom, command/args over the image's ENTRYPOINT/CMD, and the
image config read from the Dockerfile."""

from __future__ import annotations

import base64
import os

import pytest
from test_dockerfile import UID, stages

from .image import Image, image_config
from .kubelet import PodConfigError, container_command, container_env, expand

# (input, expected) over {"A": "a", "EMPTY": ""}: cases from k8s' expansion_test.go
EXPANSIONS = [
    ("$(A)", "a"),
    ("x$(A)y", "xay"),
    ("$(A)$(A)", "aa"),
    ("$(EMPTY)", ""),
    ("$(UNDEFINED)", "$(UNDEFINED)"),  # undefined: left as written
    ("$$(A)", "$(A)"),  # $$ escapes
    ("$$$(A)", "$a"),
    ("$$$$(A)", "$$(A)"),
    ("$(A", "$(A"),  # unclosed
    ("$A", "$A"),  # only $(...) is a reference
    ("$", "$"),
    ("a$", "a$"),
    ("$()", "$()"),
    ("$(A)$", "a$"),
    ("$(A:50051)", "$(A:50051)"),
]


@pytest.mark.parametrize(("text", "expected"), EXPANSIONS)
def test_var_expansion_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "EMPTY": ""}) == expected


POD = {
    "metadata": {"name": "f-shard-1", "namespace": "games", "labels": {"app": "x"}, "annotations": {}},
    "spec": {},
    "status": {"podIP": "10.244.1.7"},
}
CONFIGMAPS = {"cfg": {"data": {"SERVICE": "f-shards.games.svc", "PORT": "50051", "X": "from-map"}}}
SECRETS = {"pw": {"data": {"password": base64.b64encode(b"s3cret").decode()}}}


def test_env_is_envfrom_then_env_in_order_each_value_expanded_over_the_ones_before() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "pw"}, "prefix": "S_"}],
        "env": [
            {"name": "EARLY", "value": "$(LATE)"},  # defined after it: stays literal
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "ADDRESS", "value": "$(NAME).$(SERVICE):$(PORT)"},
            {"name": "X", "value": "from-env"},  # env wins over envFrom
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "PORT"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "LATE", "value": "late"},
            {"name": "LITERAL", "value": "$$(NAME)"},
        ],
    }
    env = container_env(container, POD, CONFIGMAPS, SECRETS)
    assert env == {
        "SERVICE": "f-shards.games.svc",
        "PORT": "50051",
        "X": "from-env",
        "S_password": "s3cret",
        "EARLY": "$(LATE)",
        "NAME": "f-shard-1",
        "NS": "games",
        "IP": "10.244.1.7",
        "LABEL": "x",
        "ADDRESS": "f-shard-1.f-shards.games.svc:50051",
        "PW": "s3cret",
        "KEY": "50051",
        "LATE": "late",
        "LITERAL": "$(NAME)",
    }


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}],
        [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "missing"}}}],
        [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}],
    ],
)
def test_a_missing_reference_is_a_config_error_not_an_empty_variable(env: list) -> None:
    with pytest.raises(PodConfigError):
        container_env({"env": env}, POD, CONFIGMAPS, SECRETS)


def test_command_replaces_the_entrypoint_args_replace_cmd_and_both_are_expanded(tmp_path) -> None:
    image = Image(image_config(), tmp_path)
    env = {"HOST": "0.0.0.0"}
    assert container_command({"args": ["serve", "--host", "$(HOST)"]}, image, env) == [
        *image.config.entrypoint, "serve", "--host", "0.0.0.0",
    ]  # fmt: skip
    assert container_command({}, image, env) == [*image.config.entrypoint, *image.config.cmd]
    assert container_command({"command": ["sh"]}, image, env) == ["sh"]  # CMD goes with ENTRYPOINT


def test_the_image_config_is_the_runtime_stage_of_the_dockerfile() -> None:
    config = image_config()
    runtime = stages()[-1]
    assert (config.uid, config.gid) == (UID, UID)
    assert ("WORKDIR", config.workdir) in runtime
    assert config.env["NUMBA_CACHE_DIR"] == "/tmp/numba" and config.env["PYTHONUNBUFFERED"] == "1"
    assert config.home == "/nonexistent" and config.entrypoint == ["gamefleet"]


@pytest.mark.parametrize(
    ("resources", "ref", "expected"),
    [
        ({"limits": {"cpu": "2"}}, {"resource": "limits.cpu"}, "2"),
        ({"limits": {"cpu": "500m"}}, {"resource": "limits.cpu"}, "1"),  # rounded up, never 0 threads
        ({"limits": {"cpu": "1500m"}}, {"resource": "limits.cpu", "divisor": "1m"}, "1500"),
        ({"limits": {"cpu": 3}}, {"resource": "requests.cpu"}, "3"),  # an unset request is the limit
        ({"requests": {"memory": "1Gi"}}, {"resource": "requests.memory", "divisor": "1Mi"}, "1024"),
        ({"limits": {"memory": "1G"}}, {"resource": "limits.memory", "divisor": "1Mi"}, "954"),
        ({}, {"resource": "requests.cpu"}, "0"),
    ],
)
def test_resource_field_refs_resolve_as_the_kubelet_does(resources: dict, ref: dict, expected: str) -> None:
    container = {
        "name": "c",
        "resources": resources,
        "env": [{"name": "N", "valueFrom": {"resourceFieldRef": ref}}],
    }
    assert container_env(container, POD, CONFIGMAPS, SECRETS) == {"N": expected}


def test_an_unset_limit_resolves_to_the_nodes_allocatable() -> None:
    """Here the node is this host: a NUMBA_NUM_THREADS from limits.cpu of a pod without a CPU limit
    is the CPUs the process may run on, as numba's default would be."""
    env = [{"name": "N", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]
    assert container_env({"name": "c", "env": env}, POD, CONFIGMAPS, SECRETS) == {
        "N": str(len(os.sched_getaffinity(0)))
    }
    other = [
        {"name": "N", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "x"}}}
    ]
    with pytest.raises(PodConfigError):
        container_env({"name": "c", "env": other}, POD, CONFIGMAPS, SECRETS)
