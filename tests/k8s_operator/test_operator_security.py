"""spec.security and the Redis credentials as the operator renders them: the Secrets mounted read-only,
the variables gameserver/wire/security.py reads, probes on the plaintext health port, rediss://."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from gamefleet_operator.render import HEALTH_PORT, config_data, render
from gamefleet_operator.spec import SpecError

from gameserver.cli import build_parser
from gameserver.cli.flags import credentials

from .test_operator_render import by_kind, container, fleet

SECURITY = {"tls": {"secretName": "f-tls"}, "tokenSecretRef": {"name": "f-token"}}


def test_tls_and_token_secrets_are_mounted_read_only_and_named_in_the_environment():
    f = fleet(security=SECURITY)
    manifests = render(f, 2)
    data = config_data(f)
    assert data["GAMEFLEET_TLS_CERT"] == "/etc/gamefleet/tls/tls.crt"
    assert data["GAMEFLEET_TLS_CA"] == "/etc/gamefleet/tls/ca.crt"
    assert data["GAMEFLEET_TLS_CLIENT_AUTH"] == "1"
    assert data["GAMEFLEET_TLS_SERVER_NAME"] == "f-shards.games.svc"
    assert data["GAMEFLEET_TOKEN_FILE"] == "/etc/gamefleet/token/token"
    assert data["GAMEFLEET_HEALTH_PORT"] == str(HEALTH_PORT)
    for kind, name in (("StatefulSet", "f-shard"), ("Deployment", "f-router")):
        workload = by_kind(manifests, kind, name)
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        assert volumes == {
            "tls": {"secretName": "f-tls"},
            "token": {"secretName": "f-token", "items": [{"key": "token", "path": "token"}]},
        }
        mounts = {m["name"]: m for m in container(workload)["volumeMounts"]}
        assert mounts["tls"]["readOnly"] and mounts["token"]["readOnly"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container(workload)[probe]["grpc"]["port"] == HEALTH_PORT  # the kubelet speaks no TLS


def test_without_spec_security_the_fleet_is_as_before():
    f = fleet()
    assert not any(
        k.startswith(("GAMEFLEET_TLS", "GAMEFLEET_TOKEN", "GAMEFLEET_HEALTH")) for k in config_data(f)
    )
    shard = container(by_kind(render(f, 1), "StatefulSet", "f-shard"))
    assert shard["readinessProbe"]["grpc"]["port"] == 50051


def test_the_pods_environment_gives_the_processes_their_credentials(tmp_path):
    """What `gamefleet serve` makes of the rendered variables (files in place of the volumes)."""
    files = {"cert": "tls.crt", "key": "tls.key", "ca": "ca.crt", "token": "token"}
    for name in files.values():
        (tmp_path / name).write_text("t0ken" if name == "token" else "PEM")
    data = config_data(fleet(security=SECURITY | {"tls": {"secretName": "f-tls", "clientAuth": False}}))
    environment = {k: v.replace("/etc/gamefleet/tls", str(tmp_path)) for k, v in data.items()}
    environment["GAMEFLEET_TOKEN_FILE"] = str(tmp_path / "token")
    with mock.patch.dict(os.environ, environment):
        args = build_parser().parse_args(["serve"])
        made = credentials(args, "serve")
    assert (made.cert, made.ca, made.token, made.client_auth) == (b"PEM", b"PEM", "t0ken", False)
    assert made.server_name == "f-shards.games.svc"
    assert args.health_port == HEALTH_PORT


def test_redis_tls_and_username_make_a_rediss_url_with_the_acl_user():
    ref = {"name": "r", "key": "pw"}
    f = fleet(
        redis={"address": "redis.example:6380", "tls": True, "username": "fleet", "passwordSecretRef": ref}
    )
    assert config_data(f)["GAMEFLEET_REDIS_URL"] == "rediss://redis.example:6380/0"
    assert config_data(f)["GAMEFLEET_REDIS_USERNAME"] == "fleet"
    assert f.redis_url("p@ss") == "rediss://fleet:p%40ss@redis.example:6380/0"  # the operator's registry
    with pytest.raises(SpecError, match=r"redis\.tls applies to an external Redis"):
        fleet(redis={"tls": True, "managed": {"enabled": True}})
