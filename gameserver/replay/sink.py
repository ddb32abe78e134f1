"""A shard's link to a ReplayService: the transitions of its recording games, pushed in the background.

Games that were created with `push_transitions` hand every step to `push`, which builds the
step's items (game-major, every seat) and queues them for a TransitionPusher per board size,
whose thread merges queued steps into Insert calls. A slow service slows those games down
(the queue is bounded: back-pressure, like a rate limiter's); a failed one never fails a
step: its transitions are dropped and counted, the failure is logged, and the next push
after RECONNECT_AFTER_S tries a new connection in the background.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..engine import GameConfig
from ..wire.errors import FailedPrecondition, GameFleetError, Unavailable
from ..wire.security import PLAINTEXT, Credentials
from .client import TransitionPusher
from .transitions import CapturedPlanes, Planes, StepFlags

log = logging.getLogger(__name__)
RECONNECT_AFTER_S = 1.0


class TransitionSink:
    """Pushers to the ReplayService at `address`, one per board size (tiles), made on first use."""

    def __init__(
        self, address: str, *, timeout_s: float = 10.0, credentials: Credentials = PLAINTEXT
    ) -> None:
        self.address = address
        self.credentials = credentials  # the shard's own: TLS and the fleet's token
        self.timeout_s = timeout_s
        self.pushed_steps = 0
        self.dropped = 0  # transitions lost while the service was failing
        self._pushers: dict[int, TransitionPusher | None] = {}  # None: failed, reconnecting
        self._retry_at: dict[int, float] = {}
        self._lock = threading.Lock()

    def connect(self, config: GameConfig) -> None:
        """Make sure this board's transitions have a pusher (blocking: run it off the event loop).

        FailedPrecondition when the service stores another board size, Unavailable when it cannot
        be reached (raised at game creation: the games are not created)."""
        with self._lock:
            if self._pushers.get(config.tiles) is not None:
                return
        pusher = self._open(config)
        with self._lock:
            old, self._pushers[config.tiles] = self._pushers.get(config.tiles), pusher
        if old is not None:  # another call connected meanwhile
            old.close()

    def push(
        self,
        config: GameConfig,
        ids: np.ndarray,
        before: CapturedPlanes,
        actions: np.ndarray,
        step: StepFlags,
        after: Planes,
        final: Planes | None,
    ) -> None:
        """Queue one step of these games (every seat); never raises on the service's account."""
        with self._lock:
            pusher = self._pushers.get(config.tiles)
        if pusher is not None:
            try:
                pusher.push(ids, before, actions, step, after, final)
                self.pushed_steps += 1
                return
            except Exception as error:  # the pusher's thread failed to send
                log.warning("replay service %s failed (%s): dropping transitions", self.address, error)
                with self._lock:
                    if self._pushers.get(config.tiles) is pusher:
                        self._pushers[config.tiles] = None
                        self._retry_at[config.tiles] = time.monotonic() + RECONNECT_AFTER_S
                threading.Thread(target=_close_quietly, args=(pusher,), daemon=True).start()
        self.dropped += ids.size * actions.shape[1]
        self._maybe_reconnect(config)

    def close(self) -> None:
        """Send what is queued and close every connection (at shard shutdown)."""
        with self._lock:
            pushers, self._pushers = [p for p in self._pushers.values() if p is not None], {}
        for pusher in pushers:
            _close_quietly(pusher)

    def _open(self, config: GameConfig) -> TransitionPusher:
        try:
            return TransitionPusher(
                self.address, config, timeout=self.timeout_s, credentials=self.credentials
            )
        except GameFleetError as error:
            raise Unavailable(f"the shard's replay service {self.address}: {error}") from None
        except ValueError as error:  # another board size
            raise FailedPrecondition(f"push_transitions: {error}") from None

    def _maybe_reconnect(self, config: GameConfig) -> None:
        with self._lock:
            due = self._retry_at.get(config.tiles, 0.0)
            if self._pushers.get(config.tiles) is not None or time.monotonic() < due:
                return
            self._retry_at[config.tiles] = time.monotonic() + RECONNECT_AFTER_S  # one attempt at a time
        threading.Thread(target=self._reconnect, args=(config,), daemon=True).start()

    def _reconnect(self, config: GameConfig) -> None:
        try:
            self.connect(config)
            log.warning("replay service %s is back: pushing transitions again", self.address)
        except Exception as error:
            log.debug("replay service %s still failing: %s", self.address, error)


def _close_quietly(pusher: Any) -> None:
    try:
        pusher.close()
    except Exception as error:
        log.debug("closing a failed pusher: %s", error)
