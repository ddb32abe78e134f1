"""Observation planes in shared memory, for clients on the same host as their shard.

Over gRPC a 4096-game step reply is 10 MB, and moving it through loopback costs several
times what the engine takes to step those games. A client on the same host can instead
create a shared-memory segment laid out as one packed observation buffer (codec layout),
name it in its requests (`shared_view`), and let the shard's fused step+observe kernel
write straight into it: the reply then carries only rewards, flags and masks, and the
client's arrays are the very bytes the engine wrote. Request/reply ordering is the
synchronisation: the shard writes before it replies, and writes again only when a call
names the segment again. A call for n games uses the first bytes of the segment laid out
for n games (`SharedView.rows(n)`), so one segment serves any batch up to its size.

Names are "gamefleet-view-" and 1 to 64 letters, digits, '_' or '-', so a shard opens
nothing but GameFleet segments. A shard on another host cannot open the segment and
refuses the call (SharedViewUnavailable, FAILED_PRECONDITION on the wire), so a client
falls back to planes on the wire.

Trust: the segment's owner is a local process. The shard checks the segment's size on
every call (a segment shrunk after mapping would fault the shard on write) and drops its
mapping once the owner has removed the segment.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import mmap
import os
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing import resource_tracker

from .engine import GameConfig, Observation
from .wire import codec

PREFIX = "gamefleet-view-"
_NAME = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_-]{1,64}")
OPEN_LIMIT = 16  # segments a shard keeps mapped (least recently used closed first)


def _layout(buffer: memoryview, games: int, config: GameConfig) -> Observation:
    return codec.unpack_observation(
        buffer[: codec.observation_nbytes(games, config.players, config.tiles)],
        games,
        config.players,
        config.tiles,
    )


class SharedView:
    """A client-owned segment for up to `games` games of `config`; `observation` views all of it.

    Registered with multiprocessing's resource tracker, as SharedMemory does, so the segment
    is removed even if the client dies without closing it.
    """

    def __init__(self, config: GameConfig, games: int) -> None:
        if games < 1:
            raise ValueError(f"a shared view holds at least 1 game, got {games}")
        self.config = config
        self.games = games
        self.name = PREFIX + secrets.token_hex(8)
        size = codec.observation_nbytes(games, config.players, config.tiles)
        fd = _posixshmem.shm_open("/" + self.name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)
            self._segment: mmap.mmap | None = mmap.mmap(fd, size)
        except BaseException:
            _posixshmem.shm_unlink("/" + self.name)
            raise
        finally:
            os.close(fd)
        resource_tracker.register("/" + self.name, "shared_memory")
        self.observation = _layout(memoryview(self._segment), games, config)
        self._rows = self.observation

    def rows(self, games: int) -> Observation:
        """The planes a call for `games` games wrote (the segment's first bytes, laid out for them)."""
        if not 1 <= games <= self.games:
            raise ValueError(f"shared view {self.name} holds 1 to {self.games} games, not {games}")
        if self._rows.games != games:
            self._rows = _layout(memoryview(self._segment), games, self.config)
        return self._rows

    def close(self) -> None:
        """Remove the segment. Arrays still held keep their mapping alive until they go."""
        if self._segment is None:
            return
        self.observation = self._rows = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError):  # views still held: unmapped with the last of them
            self._segment.close()
        self._segment = None
        with contextlib.suppress(FileNotFoundError):  # removed by someone else already
            _posixshmem.shm_unlink("/" + self.name)
        resource_tracker.unregister("/" + self.name, "shared_memory")

    def __enter__(self) -> SharedView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedViewError(ValueError):
    """A segment name that is not a GameFleet view, or a segment too small for the call's games."""


class SharedViewUnavailable(SharedViewError):
    """No such segment on this host (the client is elsewhere, or removed it)."""


@dataclass
class _Mapped:
    fd: int
    segment: mmap.mmap
    views: Observation | None = None  # laid out for the last call's games


class SharedViewCache:
    """The segments a shard has mapped, by name; every lookup checks the name and the size.

    Segments are mapped with shm_open + mmap rather than SharedMemory, whose resource
    tracker would unlink the client's segment when the shard exits. The descriptor stays
    open beside the mapping, to see the segment's current size and whether it was removed.
    """

    def __init__(self) -> None:
        self._open: OrderedDict[str, _Mapped] = OrderedDict()

    def views(self, name: str, config: GameConfig, games: int) -> Observation:
        """Writable planes for `games` games of `config` in segment `name` (request order)."""
        if not _NAME.fullmatch(name):
            raise SharedViewError(
                f"shared_view {name[:80]!r} is not a GameFleet view name "
                f"({PREFIX!r} and 1-64 letters, digits, '_' or '-')"
            )
        size = codec.observation_nbytes(games, config.players, config.tiles)
        entry = self._open.get(name)
        if entry is not None:
            stat = os.fstat(entry.fd)
            if stat.st_nlink == 0 or stat.st_size != len(entry.segment):  # removed, or resized
                self._drop(name)
                entry = None
        if entry is None:
            entry = self._map(name)
        if len(entry.segment) < size:
            raise SharedViewError(
                f"shared_view {name!r} holds {len(entry.segment)} bytes; {games} games of "
                f"{config.height}x{config.width}, {config.players} players need {size}"
            )
        self._open.move_to_end(name)
        views = entry.views
        if views is None or views.games != games or views.codes.shape[1:] != (config.players, config.tiles):
            entry.views = _layout(memoryview(entry.segment), games, config)
        return entry.views

    def close(self) -> None:
        for name in list(self._open):
            self._drop(name)

    def _map(self, name: str) -> _Mapped:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except OSError as error:
            raise SharedViewUnavailable(
                f"shared_view {name!r} cannot be opened on this shard's host ({error.strerror}); "
                "shared views work only for clients on the same host: send the call without one"
            ) from None
        try:
            length = os.fstat(fd).st_size
            if length == 0:
                raise SharedViewError(f"shared_view {name!r} is empty")
            segment = mmap.mmap(fd, length)
        except BaseException:
            os.close(fd)
            raise
        entry = _Mapped(fd, segment)
        self._open[name] = entry
        while len(self._open) > OPEN_LIMIT:
            self._drop(next(iter(self._open)))
        return entry

    def _drop(self, name: str) -> None:
        entry = self._open.pop(name)
        os.close(entry.fd)
        segment = entry.segment
        entry.views = None  # the views first: a mapping with live views cannot close
        with contextlib.suppress(BufferError):  # a call in flight still holds views: unmapped with them
            segment.close()
