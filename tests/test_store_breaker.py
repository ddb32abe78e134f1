"""What a hung or unreachable Redis costs: one socket timeout, after which the store's calls
fail at once (the circuit breaker) until Redis is tried again and answers."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from gameserver.fleet.breaker import CircuitBreaker, CircuitOpenError
from gameserver.fleet.store import FleetStore, StoreUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_opens_the_breaker_then_one_probe_at_a_time_tries_again():
    clock = Clock()
    breaker = CircuitBreaker(2.0, clock=clock)
    breaker.before()  # closed
    breaker.failed(redis.TimeoutError("Timeout reading from socket"))
    assert breaker.is_open and breaker.opened == 1
    with pytest.raises(CircuitOpenError, match=r"circuit open: redis failed \(TimeoutError.*again in 2.0 s"):
        breaker.before()
    clock.now += 2.0
    breaker.before()  # the probe
    with pytest.raises(CircuitOpenError):  # the others wait for its outcome
        breaker.before()
    breaker.failed(redis.ConnectionError("refused"))  # the probe failed: open for another 2 s
    with pytest.raises(CircuitOpenError, match=r"again in 2\.0 s"):
        breaker.before()
    clock.now += 2.0
    breaker.before()
    breaker.succeeded()
    assert not breaker.is_open and breaker.opened == 1  # one outage
    breaker.before()
    breaker.before()


def test_an_error_reply_or_a_refusal_of_its_own_leaves_the_breaker_as_it_is():
    breaker = CircuitBreaker(5.0, clock=Clock())
    breaker.failed(redis.ResponseError("WRONGTYPE"))  # Redis answered
    assert not breaker.is_open
    breaker.failed(redis.TimeoutError("t"))
    with pytest.raises(CircuitOpenError) as refused:
        breaker.before()
    breaker.failed(refused.value)
    assert breaker.opened == 1


def test_an_error_reply_to_the_probe_closes_the_breaker():
    """A probe that Redis answers with an error (a fenced write) found Redis there: closed again,
    or no command would ever try it again."""
    clock = Clock()
    breaker = CircuitBreaker(1.0, clock=clock)
    breaker.failed(redis.ConnectionError("refused"))
    clock.now += 1.0
    breaker.before()  # the probe
    breaker.failed(redis.ResponseError("NOHOLDER no holder of this shard in Redis"))
    assert not breaker.is_open
    breaker.before()


def test_open_s_zero_turns_it_off_and_a_negative_one_is_refused():
    breaker = CircuitBreaker(0.0)
    breaker.failed(redis.TimeoutError("t"))
    breaker.before()
    with pytest.raises(ValueError, match="open_s must be >= 0"):
        CircuitBreaker(-1)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        FleetStore("redis://127.0.0.1:1/0", "f", ttl_s=1, timeout_s=0)


def test_a_frozen_redis_costs_one_timeout_then_calls_fail_at_once_until_it_answers(redis_server):
    store = FleetStore(redis_server.url, "frozen", ttl_s=300, timeout_s=0.3, breaker_s=60)
    clock = Clock()
    store.breaker = CircuitBreaker(60, clock=clock)  # the test moves time on
    store.heartbeat("s:1", load=0, capacity=10)
    store.hold("s:1")
    appender = store.appender("s:1")
    appender.append("step", np.array([1, 2], np.uint64), np.array([3, 4], np.int16))
    redis_server.freeze()
    try:
        with pytest.raises(StoreUnavailableError, match="Timeout"):
            store.list_shards(30)
        for call in (
            lambda: store.list_shards(30),
            lambda: appender.append("step", np.array([1, 2], np.uint64), np.array([5, 6], np.int16)),
            lambda: store.put_games("s:1", np.array([5], np.uint64), np.zeros((1, 40), np.uint8)),
        ):
            with pytest.raises(StoreUnavailableError, match="circuit open: redis failed"):
                call()
    finally:
        redis_server.thaw()
    clock.now += 60
    assert [s.address for s in store.list_shards(30)] == ["s:1"]  # the probe: closed again
    entry = appender.append("step", np.array([1, 2], np.uint64), np.array([7, 8], np.int16))
    assert [e.data.tolist() for e in store.read_log("s:1", (0, 0))][-1] == [7, 8]
    assert entry == next(iter(reversed(list(store.read_log("s:1", (0, 0)))))).id
    assert store.breaker.opened == 1
