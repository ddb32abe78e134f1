"""RemoteBackend: the Gymnasium/PettingZoo adapters' Backend over a fleet, one RPC per step."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..client import FailedPrecondition, FleetClient, Observations, SharedView
from ..engine import GameConfig, Observation
from ..engine.maps import GameMap, MapBatch
from ..pool import PoolStep
from ..wire import codec
from ..wire import replies as wire

SHARE_FROM = wire.PARSE_BELOW  # bytes of planes per call from which RemoteBackend uses a shared view
_LOOPBACK = ("127.", "localhost:", "[::1]:")


def on_this_host(address: str) -> bool:
    """True for a loopback address: a shard there can write into this process's shared views."""
    return address.startswith(_LOOPBACK)


class RemoteBackend:
    """envs.Backend over a fleet: the Gymnasium/PettingZoo adapters run against a real server.

    Games are created with autoreset (the adapters expect same-step autoreset) and every
    call asks for masks; `masks` and `observe` answer from the last reply when it covered
    the same ids (the adapters ask right after create/step/reset), so one adapter step is
    one RPC. The observations handed back are read-only views of the replies.

    Shared view: when the fleet address is on this host (loopback) and a call over all of
    the backend's games would carry at least SHARE_FROM bytes of planes, the shard writes them
    into a shared-memory view instead (`shared_view=None`: so decided; True/False: always/never).
    The planes handed back then live in that view until the next such call. A shard that
    cannot open it (a router passing calls to another host) is asked again without it, once;
    then the backend stays on the wire.
    """

    def __init__(
        self,
        client: FleetClient,
        config: GameConfig,
        *,
        placement_key: str = "",
        shared_view: bool | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.placement_key = placement_key
        self._last: tuple[np.ndarray, Observations] | None = None
        self._share = on_this_host(client.address) if shared_view is None else shared_view
        self._always = shared_view is True
        self._ids: np.ndarray | None = None  # the created games: the shared view's rows
        self.view: SharedView | None = None
        self._sent: collections.deque[np.ndarray] = collections.deque()  # ids of the steps in flight

    def _remember(self, ids: np.ndarray, observations: Observations) -> Observations:
        self._last = (np.array(ids, np.uint64), observations)
        return observations

    def _cached(self, ids: np.ndarray) -> Observations:
        if self._last is not None and np.array_equal(self._last[0], ids):
            return self._last[1]
        return self._remember(ids, self._call(self.client.states, ids, masks=True))

    def _call(self, method: Callable[..., Any], ids: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        """`method(ids, ...)`, through the shared view when it pays (see the class docstring)."""
        view = self._view_for(ids)
        if view is not None:
            try:
                return method(ids, *args, view=view, **kwargs)
            except FailedPrecondition:
                self._share = False
                self._close_view()
        return method(ids, *args, **kwargs)

    def _view_for(self, ids: np.ndarray) -> SharedView | None:
        """The shared view for a call over every game of the backend (a call over some of them
        would overwrite the rows the adapter still reads), when it pays."""
        if not self._share or self._ids is None or not np.array_equal(ids, self._ids):
            return None
        planes = codec.observation_nbytes(ids.size, self.config.players, self.config.tiles)
        if planes < SHARE_FROM and not self._always:
            return None
        if self.view is None:
            self.view = SharedView(self.config, ids.size)
        return self.view

    def _close_view(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None

    def create(
        self, n: int, seeds: np.ndarray | None = None, maps: Sequence[GameMap] | MapBatch | None = None
    ) -> np.ndarray:
        """As the Backend's create; `maps` (one per game): the first episodes start on them."""
        created = self.client.create(
            n,
            self.config,
            seeds=seeds,
            autoreset=True,
            placement_key=self.placement_key,
            masks=True,
            maps=maps,
        )
        self._close_view()
        self._ids = np.array(created.ids, np.uint64)
        self._remember(created.ids, created.observations)
        return created.ids

    def reset(
        self,
        ids: np.ndarray,
        seeds: np.ndarray | None = None,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> None:
        """As the Backend's reset; `maps` (one per game): the new episodes start on them."""
        self._remember(ids, self._call(self.client.reset, ids, seeds, masks=True, maps=maps))

    def step(self, ids: np.ndarray, actions: np.ndarray) -> PoolStep:
        return self._pool_step(ids, self._call(self.client.step, ids, actions, masks=True))

    def send(self, ids: np.ndarray, actions: np.ndarray) -> None:
        """A pipelined step (FleetClient.send): on the wire, never the shared view, whose rows
        every step in flight would write."""
        self.client.send(ids, actions, masks=True)
        self._sent.append(np.array(ids, np.uint64))

    def recv(self) -> PoolStep:
        return self._pool_step(self._sent.popleft(), self.client.recv())

    def _pool_step(self, ids: np.ndarray, result: Any) -> PoolStep:
        observations = self._remember(ids, result.observations)
        final = result.final_observations
        return PoolStep(
            result.rewards,
            result.terminated,
            result.truncated,
            result.reset,
            observations.full(),
            None if final is None else final.full(),
        )

    def observe(self, ids: np.ndarray) -> Observation:
        return self._cached(ids).full()

    def masks(self, ids: np.ndarray) -> np.ndarray:
        return self._cached(ids).masks

    def release(self, ids: np.ndarray) -> None:
        self._last = None
        self.client.close(ids)
        if self._ids is not None and np.array_equal(ids, self._ids):
            self._close_view()
            self._ids = None
