"""Samples-per-insert rate limiting: keeps a learner and its actors in a fixed ratio.

Without it, a fast learner overfits a small buffer (it samples each experience too often) and
a slow one lets actors churn the buffer (experiences leave unsampled). The rule, as Reverb's
SampleToInsertRatio states it, on the item counts so far:

    diff = samples_per_insert * inserted - sampled
    sampling is permitted when inserted >= min_size_to_sample and diff >= min_diff
    inserting is permitted when inserted < min_size_to_sample or diff <= max_diff
    min_diff = samples_per_insert * min_size_to_sample - error_buffer
    max_diff = samples_per_insert * min_size_to_sample + error_buffer

A call is admitted on the counts before it, so a batch may overshoot the band by its own
size; in exchange no batch size can deadlock (a blocked side always leaves the other side
permitted). Without `samples_per_insert` only the minimum size applies.
"""

from __future__ import annotations

import threading


class RateLimitTimeout(TimeoutError):
    """A call waited longer than its timeout for the rate limiter to permit it."""

    status_code = "DEADLINE_EXCEEDED"


class RateLimiter:
    """The counts and the rule above; callers hold `condition` while they check and record."""

    def __init__(
        self,
        samples_per_insert: float | None = None,
        min_size_to_sample: int = 1,
        error_buffer: float | None = None,
    ) -> None:
        if isinstance(min_size_to_sample, bool) or not isinstance(min_size_to_sample, int):
            raise ValueError(f"min_size_to_sample must be an int, got {min_size_to_sample!r}")
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample must be >= 1, got {min_size_to_sample}")
        if samples_per_insert is not None and not samples_per_insert > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {samples_per_insert!r}")
        if samples_per_insert is None and error_buffer is not None:
            raise ValueError("error_buffer needs samples_per_insert")
        self.samples_per_insert = samples_per_insert
        self.min_size_to_sample = min_size_to_sample
        if samples_per_insert is not None:
            # Default: the band's lower edge at 0, so sampling keeps at most spi x inserts.
            error_buffer = samples_per_insert * min_size_to_sample if error_buffer is None else error_buffer
            if not error_buffer >= 0:
                raise ValueError(f"error_buffer must be >= 0, got {error_buffer!r}")
        self.error_buffer = error_buffer
        self.inserted = 0
        self.sampled = 0
        self.condition = threading.Condition()

    @property
    def diff(self) -> float:
        return (self.samples_per_insert or 0.0) * self.inserted - self.sampled

    @property
    def min_diff(self) -> float:
        spi = self.samples_per_insert
        return -float("inf") if spi is None else spi * self.min_size_to_sample - self.error_buffer

    @property
    def max_diff(self) -> float:
        spi = self.samples_per_insert
        return float("inf") if spi is None else spi * self.min_size_to_sample + self.error_buffer

    def can_insert(self) -> bool:
        return self.inserted < self.min_size_to_sample or self.diff <= self.max_diff

    def can_sample(self) -> bool:
        return self.inserted >= self.min_size_to_sample and self.diff >= self.min_diff

    def wait_insert(self, timeout: float | None) -> None:
        """Block (holding `condition`) until an insert is permitted; RateLimitTimeout after `timeout` s."""
        self._wait(self.can_insert, "insert", timeout)

    def wait_sample(self, timeout: float | None) -> None:
        self._wait(self.can_sample, "sample", timeout)

    def record(self, *, inserted: int = 0, sampled: int = 0) -> None:
        """Count items done (holding `condition`) and wake the callers waiting on the other side."""
        self.inserted += inserted
        self.sampled += sampled
        self.condition.notify_all()

    def _wait(self, permitted: object, what: str, timeout: float | None) -> None:
        if not self.condition.wait_for(permitted, timeout):
            raise RateLimitTimeout(
                f"rate limiter: {what} not permitted within {timeout} s (inserted {self.inserted}, "
                f"sampled {self.sampled}, samples_per_insert {self.samples_per_insert}, "
                f"min_size_to_sample {self.min_size_to_sample}, error_buffer {self.error_buffer})"
            )

    def settings(self) -> dict[str, float | int | None]:
        return {
            "samples_per_insert": self.samples_per_insert,
            "min_size_to_sample": self.min_size_to_sample,
            "error_buffer": self.error_buffer,
        }
