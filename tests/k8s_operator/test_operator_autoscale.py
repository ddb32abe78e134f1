"""The autoscaling policy and the drain order, one row per rule (Agones-style table tests)."""

from __future__ import annotations

import pytest
from gamefleet_operator.autoscale import (
    Decision,
    Policy,
    Recommendation,
    ShardLoad,
    ShardState,
    desired_shards,
    drain_order,
)

POLICY = Policy(
    min_shards=2, max_shards=10, target_utilisation=0.5, stabilisation_seconds=300, capacity_per_shard=100
)
NOW = 10_000.0
SERVING, DRAINING, DRAINED = ShardState.SERVING, ShardState.DRAINING, ShardState.DRAINED


def loads(*games: int) -> list[ShardLoad]:
    return [ShardLoad(f"f-shard-{i}", g) for i, g in enumerate(games)]


def ago(*pairs: tuple[int, float]) -> list[Recommendation]:
    """Recommendations (shards, seconds before NOW)."""
    return [Recommendation(shards, NOW - age) for shards, age in pairs]


@pytest.mark.parametrize(
    ("rule", "current", "reported", "history", "shards", "reason"),
    [
        ("no load reported: hold", 4, [], [], 4, "holding"),
        ("at target: steady", 4, loads(50, 50, 50, 50), [], 4, "steady"),
        ("over target: scale up at once", 2, loads(100, 100), [], 4, "scale up"),
        ("scale up rounds up", 2, loads(100, 101), [], 5, "scale up"),
        ("scale up clamps to max", 4, loads(400, 400, 400, 400), [], 10, "scale up"),
        ("below min: up to min", 1, loads(0), [], 2, "scale up"),
        ("idle after the window: down to min", 6, loads(0, 0, 0, 0, 0, 0), ago((6, 301)), 2, "scale down"),
        ("dip inside the window: hold", 6, loads(10, 10, 10, 10, 10, 10), ago((6, 60)), 6, "holding"),
        ("down to the window's highest", 8, loads(*[10] * 8), ago((5, 200), (3, 100)), 5, "scale down"),
        ("no window: down at once", 6, loads(*[10] * 6), [], 2, "scale down"),
        (
            "draining shards' games still count",
            4,
            [*loads(100, 100), ShardLoad("f-shard-3", 100, DRAINING)],
            [],
            6,
            "scale up",
        ),
        ("max lowered below current: down to max", 12, loads(*[10] * 12), ago((12, 10)), 10, "scale down"),
    ],
)
def test_desired_shards(rule, current, reported, history, shards, reason) -> None:
    policy = POLICY if "no window" not in rule else Policy(2, 10, 0.5, 0, 100)
    decision = desired_shards(current, reported, policy, history, NOW)
    assert (decision.shards, decision.reason.split(":")[0].split(" to")[0]) == (shards, reason), rule


def test_never_below_what_active_games_need() -> None:
    """At a target of 100% the games' own need is the floor, whatever the window says."""
    full = Policy(1, 10, 1.0, 0, 100)
    assert desired_shards(8, loads(100, 100, 100, 1), full, [], NOW).shards == 4
    assert desired_shards(3, loads(100, 100, 100, 1), full, [], NOW).shards == 4


def test_history_keeps_only_the_window_and_adds_this_round() -> None:
    decision = desired_shards(4, loads(50, 50, 50, 50), POLICY, ago((9, 400), (6, 10)), NOW)
    assert decision.history == (Recommendation(6, NOW - 10), Recommendation(4, NOW))


def test_history_stays_small_under_steady_load() -> None:
    history: tuple[Recommendation, ...] = ()
    for t in range(100):
        history = desired_shards(4, loads(50, 50, 50, 50), POLICY, history, NOW + t).history
    assert history == (Recommendation(4, NOW + 90),)  # re-stamped every tenth of the 300 s window


def test_a_steady_recommendation_keeps_its_time_for_a_tenth_of_the_window() -> None:
    """So the fleet's status, which carries the window, is not rewritten at every sync."""
    first = desired_shards(4, loads(50, 50, 50, 50), POLICY, (), NOW)
    again = desired_shards(4, loads(50, 50, 50, 50), POLICY, first.history, NOW + 29)
    later = desired_shards(4, loads(50, 50, 50, 50), POLICY, first.history, NOW + 30)
    assert again.history == first.history == (Recommendation(4, NOW),)
    assert later.history == (Recommendation(4, NOW + 30),)


def test_scale_down_then_stabilised_history_decays() -> None:
    """A load spike then quiet: the fleet stays up for the window, then comes down in one step."""
    history: tuple[Recommendation, ...] = ()
    current, trace = 2, []
    for t, games in [(0, 400), (100, 20), (200, 20), (299, 20), (301, 20), (400, 20)]:
        decision: Decision = desired_shards(current, loads(*[games // current] * current), POLICY, history, t)
        current, history = decision.shards, decision.history
        trace.append(current)
    assert trace == [8, 8, 8, 8, 2, 2]


@pytest.mark.parametrize(
    ("rule", "current", "desired", "states", "requested", "replicas", "drain", "resume", "timed_out"),
    [
        ("scale up: replicas at once", 2, 4, {}, {}, 4, (), (), ()),
        ("steady: nothing to do", 3, 3, {}, {}, 3, (), (), ()),
        ("scale down: highest ordinals drain first", 4, 2, {}, {}, 4, ("f-shard-3", "f-shard-2"), (), ()),
        (
            "top shard drained: it goes",
            4,
            2,
            {3: DRAINED},
            {"f-shard-3": 0, "f-shard-2": 0},
            3,
            ("f-shard-2",),
            (),
            (),
        ),
        (
            "lower shard drained first: nothing goes",
            4,
            2,
            {2: DRAINED},
            {"f-shard-3": 0, "f-shard-2": 0},
            4,
            ("f-shard-3", "f-shard-2"),
            (),
            (),
        ),
        (
            "all leaving drained: down to desired",
            4,
            2,
            {2: DRAINED, 3: DRAINED},
            {"f-shard-3": 0},
            2,
            (),
            (),
            (),
        ),
        ("still draining: waits", 3, 2, {2: DRAINING}, {"f-shard-2": 0}, 3, ("f-shard-2",), (), ()),
        (
            "drain timed out: removed anyway",
            3,
            2,
            {2: DRAINING},
            {"f-shard-2": -120},
            2,
            (),
            (),
            ("f-shard-2",),
        ),
        (
            "scaled back up: drains cancelled",
            4,
            4,
            {3: DRAINING},
            {"f-shard-3": 0},
            4,
            (),
            ("f-shard-3",),
            (),
        ),
        ("suspend: every shard drains", 2, 0, {}, {}, 2, ("f-shard-1", "f-shard-0"), (), ()),
    ],
)
def test_drain_order(rule, current, desired, states, requested, replicas, drain, resume, timed_out) -> None:
    names = [f"f-shard-{i}" for i in range(current)]
    reported = [ShardLoad(names[i], 0 if state is DRAINED else 5, state) for i, state in states.items()]
    asked = {name: NOW + offset for name, offset in requested.items()}
    plan = drain_order(names, desired, reported, asked, NOW, timeout=60)
    assert (plan.replicas, plan.drain, plan.resume, plan.timed_out) == (replicas, drain, resume, timed_out), (
        rule
    )
    assert set(plan.requested) == set(plan.drain)
    assert plan.gone == tuple(reversed(names[replicas:]))  # their drain requests get cleared


def test_drain_requests_keep_their_first_time() -> None:
    names = ["f-shard-0", "f-shard-1", "f-shard-2"]
    plan = drain_order(names, 1, [], {"f-shard-2": NOW - 10}, NOW, timeout=60)
    assert plan.requested == {"f-shard-2": NOW - 10, "f-shard-1": NOW}
