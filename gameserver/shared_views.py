"""Observation planes in shared memory, for clients on the same host as their shard.

Over gRPC a 4096-game step reply is 10 MB, and moving it through loopback costs several
times what the engine takes to step those games. A client on the same host can instead
create a shared-memory segment laid out as one packed observation buffer (codec layout),
name it in its requests, and let the shard's fused step+observe kernel write straight
into it: the reply then carries only rewards and flags, and the client's arrays are the
very bytes the engine wrote. Request/reply ordering is the synchronisation: the shard
writes before it replies, and writes again only when the client asks for the next step.

Names carry a fixed prefix so a shard opens nothing but GameFleet segments. A shard on
another host cannot open the segment and refuses the call (FAILED_PRECONDITION), so a
client falls back to bytes on the wire.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import mmap
import os
import secrets
from collections import OrderedDict
from multiprocessing import shared_memory

from . import codec
from .engine import GameConfig, Observation

PREFIX = "gamefleet-view-"
_OPEN_LIMIT = 64  # segments a shard keeps mapped (least recently used closed first)


class SharedView:
    """A client-owned segment for `games` games of `config`; `observation` views it."""

    def __init__(self, config: GameConfig, games: int) -> None:
        self.config = config
        self.games = games
        size = codec.observation_nbytes(games, config.players, config.tiles)
        self._shm = shared_memory.SharedMemory(name=PREFIX + secrets.token_hex(8), create=True, size=size)
        self.observation = codec.unpack_observation(self._shm.buf, games, config.players, config.tiles)

    @property
    def name(self) -> str:
        return self._shm.name

    def close(self) -> None:
        """Unmap and remove the segment (a shard's mapping lives on until it drops it)."""
        self.observation = None  # type: ignore[assignment]  # views must go before the buffer
        self._shm.close()
        self._shm.unlink()

    def __enter__(self) -> SharedView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedViewError(ValueError):
    """A named segment that is not a GameFleet view, cannot be opened here, or has the wrong size."""


class SharedViewCache:
    """The segments a shard has mapped, by name; opening checks the name and the exact size.

    Segments are mapped with shm_open + mmap rather than SharedMemory, whose resource
    tracker would unlink the client's segment when the shard exits.
    """

    def __init__(self) -> None:
        self._open: OrderedDict[str, tuple[mmap.mmap, Observation]] = OrderedDict()

    def views(self, name: str, config: GameConfig, games: int) -> Observation:
        if not name.startswith(PREFIX) or "/" in name:
            raise SharedViewError(
                f"shared_view {name!r} is not a GameFleet view (names start with {PREFIX!r})"
            )
        size = codec.observation_nbytes(games, config.players, config.tiles)
        entry = self._open.get(name)
        if entry is None or len(entry[0]) < size:
            entry = self._map(name, size, config, games)
        self._open.move_to_end(name)
        segment, views = entry
        if views.games != games:
            views = codec.unpack_observation(memoryview(segment)[:size], games, config.players, config.tiles)
        return views

    def _map(self, name: str, size: int, config: GameConfig, games: int) -> tuple[mmap.mmap, Observation]:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except OSError as error:
            raise SharedViewError(f"shared_view {name!r} cannot be opened on this host: {error}") from None
        try:
            length = os.fstat(fd).st_size
            if length < size:
                raise SharedViewError(f"shared_view {name!r} holds {length} bytes, {games} games need {size}")
            segment = mmap.mmap(fd, length)
        finally:
            os.close(fd)
        entry = (
            segment,
            codec.unpack_observation(memoryview(segment)[:size], games, config.players, config.tiles),
        )
        self._drop(name)
        self._open[name] = entry
        while len(self._open) > _OPEN_LIMIT:
            self._drop(next(iter(self._open)))
        return entry

    def _drop(self, name: str) -> None:
        entry = self._open.pop(name, None)
        if entry is None:
            return
        segment = entry[0]
        del entry  # the views first: a mapping with live views cannot close
        with contextlib.suppress(BufferError):  # a call in flight still holds views: unmapped with them
            segment.close()
