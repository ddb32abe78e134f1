"""Closing games nobody touches: a client that lost a create's reply (a timeout, a crash) cannot
name the games it made, and without this they would hold their slots until the shard stops.

Touches are kept per placement key (a key's games are made in one create and played by one
trainer): a call on any game of a key touches the key, and a sweep closes every game of the keys
no call touched for `idle_s` seconds. Cheap where it runs: one dict write per key a call names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from ..sharding import key_hashes

log = logging.getLogger(__name__)


class IdleGames:
    """`close(ids)` ends games as CloseBatchGames does; `live()` lists the shard's game ids."""

    def __init__(
        self,
        idle_s: float,
        close: Callable[[np.ndarray], Awaitable[int]],
        live: Callable[[], np.ndarray],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not idle_s > 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s!r}")
        self.idle_s = idle_s
        self.closed = 0  # games closed for being idle (a metric)
        self._close, self._live, self._clock = close, live, clock
        self._touched: dict[int, float] = {}

    def touch(self, ids: np.ndarray) -> None:
        now = self._clock()
        for key in np.unique(key_hashes(ids)).tolist():
            self._touched[key] = now

    async def sweep(self) -> int:
        """Close the games of every key untouched for `idle_s`; how many closed."""
        live = self._live()
        keys = key_hashes(live)
        held = set(np.unique(keys).tolist())
        now = self._clock()
        for key in [k for k in self._touched if k not in held]:  # closed by their clients
            del self._touched[key]
        for key in held - self._touched.keys():  # moved here (failover, a drain): from first sight
            self._touched[key] = now
        idle = [k for k, at in self._touched.items() if now - at >= self.idle_s]
        ids = live[np.isin(keys, idle)]
        for key in idle:
            del self._touched[key]
        if not ids.size:
            return 0
        closed = await self._close(ids)
        self.closed += closed
        log.info(
            "closed %d games no call touched for %g s (%d placement keys)", closed, self.idle_s, len(idle)
        )
        return closed

    async def run(self) -> None:
        """Sweep every quarter of `idle_s` (at most every minute) until cancelled."""
        while True:
            await asyncio.sleep(min(self.idle_s / 4, 60.0))
            try:
                await self.sweep()
            except Exception:  # a game closed meanwhile, a bug: the next sweep tries again
                log.exception("closing idle games failed")
