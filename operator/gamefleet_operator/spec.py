"""A GameFleet body -> a validated, fully defaulted Fleet, or SpecError with a reason.

The API server normally refuses bad specs (schema + CEL), but an operator must survive
the ones that get through (CRD not yet upgraded, CEL off, objects from before a rule):
this module applies the CRD's defaults, checks the same schema with jsonschema and the
CEL rules in Python, and says what is wrong instead of raising deep inside a handler.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jsonschema

from .crd import DNS_LABEL, MAX_NAME, SPEC, SPEC_RULES, Schema


class SpecError(ValueError):
    """The spec cannot be run; the message says what to fix."""


def with_defaults(schema: Schema, value: Any) -> Any:
    """Fill schema defaults the way the API server does (an absent field with a default gets it,
    then its own properties are defaulted)."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    filled = dict(value)
    for key, sub in schema["properties"].items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if key in filled:
            filled[key] = with_defaults(sub, filled[key])
    return filled


def _has_redis(s: Mapping[str, Any]) -> bool:
    return s["redis"]["managed"]["enabled"] or "address" in s["redis"]


# The CEL rules of crd.SPEC_RULES, in the same order, as Python over a defaulted spec.
RULE_CHECKS: tuple[Callable[[Mapping[str, Any]], bool], ...] = (
    lambda s: s["autoscaling"]["minShards"] <= s["autoscaling"]["maxShards"],
    lambda s: (
        not s["autoscaling"]["enabled"]
        or s["autoscaling"]["minShards"] <= s["shards"] <= s["autoscaling"]["maxShards"]
    ),
    lambda s: not (s["redis"]["managed"]["enabled"] and "address" in s["redis"]),
    lambda s: s["durability"]["mode"] == "off" or _has_redis(s),
    lambda s: not s["autoscaling"]["enabled"] or _has_redis(s),
    lambda s: not s["telemetry"]["metrics"]["serviceMonitor"] or s["telemetry"]["metrics"]["enabled"],
    lambda s: not s["redis"]["tls"] or "address" in s["redis"],
)
_VALIDATOR = jsonschema.Draft202012Validator(SPEC)


def rule_violations(spec: Mapping[str, Any]) -> list[str]:
    """Messages of the cross-field rules a defaulted, schema-valid spec breaks."""
    return [message for check, (_, message) in zip(RULE_CHECKS, SPEC_RULES, strict=True) if not check(spec)]


def checked_spec(name: str, raw: Any) -> dict[str, Any]:
    """The defaulted spec, or SpecError naming the first problems found."""
    if len(name) > MAX_NAME or not re.fullmatch(DNS_LABEL, name):
        raise SpecError(f"name {name!r}: a GameFleet name is a DNS label of at most {MAX_NAME} characters")
    if not isinstance(raw, dict):
        raise SpecError("spec: must be an object")
    spec = with_defaults(SPEC, raw)
    errors = sorted(_VALIDATOR.iter_errors(spec), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"spec.{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    if not problems:
        problems = rule_violations(spec)
    if problems:
        raise SpecError("; ".join(problems[:3]))
    return spec


@dataclass(frozen=True)
class Fleet:
    """One GameFleet as the operator sees it: identity plus the defaulted, valid spec."""

    name: str
    namespace: str
    spec: Mapping[str, Any]
    generation: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Fleet:
        meta = body.get("metadata", {})
        spec = checked_spec(meta.get("name", ""), body.get("spec"))
        return cls(meta["name"], meta.get("namespace") or "default", spec, int(meta.get("generation") or 0))

    @property
    def fleet_id(self) -> str:
        """The fleet's name in Redis ($GAMEFLEET_FLEET_ID): unique in the cluster, free of ':'."""
        return f"{self.namespace}.{self.name}"

    @property
    def shards(self) -> int:
        """Shards the fleet should run now (0 while suspended)."""
        return 0 if self.spec["suspend"] else self.spec["shards"]

    @property
    def games_move(self) -> bool:
        """Whether a leaving shard's games can move to the others (through Redis records): a
        Redis and a durability mode other than off. Else a restarted shard's games end."""
        return self.redis_host is not None and self.spec["durability"]["mode"] != "off"

    @property
    def redis_host(self) -> str | None:
        """host:port of the fleet's Redis, or None when it has none."""
        if self.spec["redis"]["managed"]["enabled"]:
            return f"{self.name}-redis.{self.namespace}.svc:6379"
        return self.spec["redis"].get("address")

    @property
    def redis_password_ref(self) -> Mapping[str, str] | None:
        """Where the Redis password is: spec.redis.passwordSecretRef, else for managed Redis the
        Secret the operator generates (`generated_password_secret`); None: no password."""
        redis = self.spec["redis"]
        if "passwordSecretRef" in redis:
            return redis["passwordSecretRef"]
        if redis["managed"]["enabled"]:
            return {"name": self.generated_password_secret, "key": "password"}
        return None

    @property
    def generated_password_secret(self) -> str:
        return f"{self.name}-redis-auth"

    def redis_url(self, password: str | None = None) -> str | None:
        """redis:// or rediss:// (spec.redis.tls), with the ACL user and `password` when given."""
        if self.redis_host is None:
            return None
        redis = self.spec["redis"]
        scheme = "rediss" if redis["tls"] else "redis"
        auth = ""
        if password:
            auth = f"{quote(redis.get('username', ''), safe='')}:{quote(password, safe='')}@"
        return f"{scheme}://{auth}{self.redis_host}/{redis['database']}"

    @property
    def capacity_per_shard(self) -> int:
        return self.spec["game"]["capacityPerShard"]
