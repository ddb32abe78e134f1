"""A circuit breaker for one Redis: a hung or unreachable Redis costs a call one socket timeout,
not one per command, and the calls after it fail at once until Redis is tried again.

Closed: every command goes to Redis. A command that times out or cannot connect opens the
breaker for `open_s`: commands then fail at once (StoreUnavailableError, "circuit open").
Once `open_s` has passed, one command goes through (half-open) while the others still fail
at once: its success closes the breaker, its failure opens it for another `open_s`.
An error reply (Redis answered) counts as an answer: it closes the breaker after a probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

# What says Redis did not answer (an error reply says it did).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class CircuitOpenError(redis.ConnectionError):
    """Refused without trying Redis: it failed less than `open_s` ago."""


class CircuitBreaker:
    """Thread-safe; `open_s` 0 turns it off (every command tries Redis)."""

    def __init__(self, open_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not open_s >= 0:
            raise ValueError(f"open_s must be >= 0, got {open_s!r}")
        self.open_s = open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._retry_at = 0.0  # while open: when the next command may try Redis
        self._open = False
        self._probing = False  # half-open: one command is trying Redis
        self._last_error = ""
        self.opened = 0  # times it opened (a metric)

    @property
    def is_open(self) -> bool:
        return self._open

    def before(self) -> None:
        """Raise CircuitOpenError if the command must not try Redis now."""
        if not self._open:  # the hot path: one attribute read
            return
        with self._lock:
            if not self._open:
                return
            now = self._clock()
            if now >= self._retry_at and not self._probing:
                self._probing = True
                return
            wait = max(0.0, self._retry_at - now)
            raise CircuitOpenError(
                f"circuit open: redis failed ({self._last_error}); tried again in {wait:.1f} s"
            )

    def succeeded(self) -> None:
        if self._open:
            with self._lock:
                self._open = self._probing = False

    def failed(self, error: BaseException) -> None:
        """Open on a command Redis did not answer; an error reply is an answer (it closes a probe)."""
        if isinstance(error, CircuitOpenError) or self.open_s == 0:
            return
        if not isinstance(error, UNREACHABLE):
            self.succeeded()
            return
        with self._lock:
            if not self._open:
                self.opened += 1
            self._open, self._probing = True, False
            self._retry_at = self._clock() + self.open_s
            self._last_error = f"{type(error).__name__}: {error}"
