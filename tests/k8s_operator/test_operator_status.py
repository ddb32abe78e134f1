"""A fleet's status and conditions from what the operator observed."""

from __future__ import annotations

from typing import Any

import pytest
from gamefleet_operator.autoscale import Decision, DrainPlan, Recommendation, ShardLoad
from gamefleet_operator.spec import Fleet
from gamefleet_operator.status import Observed, conditions, degraded_status, fleet_status

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def fleet(**spec: Any) -> Fleet:
    body = {"metadata": {"name": "f", "namespace": "g", "generation": 7}, "spec": {"image": "i", **spec}}
    return Fleet.from_body(body)


def reasons(status: dict[str, Any]) -> tuple[str, str, str]:
    by_type = {c["type"]: c for c in status["conditions"]}
    return tuple(
        f"{by_type[t]['status'][0]}:{by_type[t]['reason']}" for t in ("Ready", "Progressing", "Degraded")
    )


@pytest.mark.parametrize(
    ("case", "spec", "seen", "plan", "expected"),
    [
        (
            "all ready",
            {},
            Observed(2, 2, 1),
            DrainPlan(2, (), ()),
            ("T:FleetReady", "F:Stable", "F:AsExpected"),
        ),
        (
            "starting",
            {},
            Observed(2, 0, 0),
            DrainPlan(2, (), ()),
            ("F:ShardsNotReady", "T:Scaling", "F:AsExpected"),
        ),
        (
            "no router",
            {},
            Observed(2, 2, 0),
            DrainPlan(2, (), ()),
            ("F:RouterNotReady", "F:Stable", "F:AsExpected"),
        ),
        (
            "draining",
            {"shards": 1},
            Observed(2, 2, 1),
            DrainPlan(2, ("f-shard-1",), (), {"f-shard-1": 1.0}),
            ("T:FleetReady", "T:Draining", "F:AsExpected"),
        ),
        (
            "registry down",
            {"redis": {"address": "r:1"}},
            Observed(2, 2, 1, (), "redis: refused"),
            DrainPlan(2, (), ()),
            ("T:FleetReady", "F:Stable", "T:RegistryUnavailable"),
        ),
        (
            "drain timed out",
            {"shards": 1},
            Observed(2, 1, 1),
            DrainPlan(1, (), (), gone=("f-shard-1",), timed_out=("f-shard-1",)),
            ("T:FleetReady", "F:Stable", "T:DrainTimedOut"),
        ),
        (
            "shards rolling to a new template",
            {"shards": 2},
            Observed(2, 2, 1, updated=1),
            DrainPlan(2, (), ()),
            ("T:FleetReady", "T:RollingShards", "F:AsExpected"),
        ),
        (
            "suspended",
            {"suspend": True},
            Observed(0, 0, 0),
            DrainPlan(0, (), ()),
            ("F:Suspended", "F:Stable", "F:AsExpected"),
        ),
    ],
)
def test_conditions_from_observations(case, spec, seen, plan, expected) -> None:
    assert reasons(fleet_status(fleet(**spec), seen, plan, None, [], {}, 0.0, T0)) == expected, case


def test_numbers_and_selector() -> None:
    seen = Observed(3, 3, 2, (ShardLoad("f-shard-0", 1000), ShardLoad("f-shard-1", 2072)))
    status = fleet_status(fleet(shards=3), seen, DrainPlan(3, (), ()), None, [], {}, 0.0, T0)
    assert status["games"] == 3072 and status["capacity"] == 3 * 4096
    assert status["utilisation"] == 0.25
    assert status["selector"] == "gamefleet.dev/fleet=f,app.kubernetes.io/component=shard"
    assert status["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = conditions([], 1, T0, {"Ready": (False, "ShardsNotReady", "")})
    same = conditions(first, 2, T1, {"Ready": (False, "ShardsNotReady", "1/2")})
    flipped = conditions(same, 2, T1, {"Ready": (True, "FleetReady", "")})
    assert [c["lastTransitionTime"] for c in (*first, *same, *flipped)] == [T0, T0, T1]


def test_finished_drains_are_removed_from_the_status() -> None:
    previous = {"draining": {"f-shard-2": 1.0, "f-shard-1": 1.0}}
    plan = DrainPlan(2, ("f-shard-1",), (), {"f-shard-1": 1.0})
    status = fleet_status(fleet(shards=1), Observed(2, 2, 1), plan, None, [], previous, 0.0, T0)
    assert status["draining"] == {"f-shard-2": None, "f-shard-1": 1.0}  # None deletes it (merge patch)


def test_autoscaler_decision_is_reported_with_its_window() -> None:
    decision = Decision(4, "scale up: ...", (Recommendation(4, 10.0),))
    status = fleet_status(fleet(), Observed(2, 2, 1), DrainPlan(4, (), ()), decision, [], {}, 10.0, T0)
    assert status["autoscaler"] == {
        "desiredShards": 4,
        "reason": "scale up: ...",
        "recommendations": [{"shards": 4, "at": 10.0}],
    }


def test_invalid_spec_status() -> None:
    status = degraded_status("InvalidSpec", "spec.shards: 0 is less than 1", 3, {}, T0)
    assert status["observedGeneration"] == 3
    assert reasons(status) == ("F:InvalidSpec", "F:InvalidSpec", "T:InvalidSpec")
    assert {c["message"] for c in status["conditions"]} == {"spec.shards: 0 is less than 1"}


@pytest.mark.parametrize(
    ("spec", "warned"),
    [
        ({"shards": 2}, True),
        ({"shards": 2, "redis": {"address": "r:1"}, "durability": {"mode": "log"}}, False),
    ],
    ids=["games cannot move", "games move through Redis"],
)
def test_a_roll_says_whether_the_shards_games_survive_it(spec: dict, warned: bool) -> None:
    seen = Observed(2, 2, 1, updated=1)
    status = fleet_status(fleet(**spec), seen, DrainPlan(2, (), ()), None, [], {}, 0.0, T0)
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["message"].startswith("1/2 shards updated")
    assert ("their games cannot move" in progressing["message"]) is warned
