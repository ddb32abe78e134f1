"""Observation planes and masks in shared memory, for clients on the same host as their shard.

Over gRPC a 4096-game step reply is 10 MB, and moving it through loopback costs several
times what the engine takes to step those games. A client on the same host can instead
create a shared-memory segment, name it in its requests (`shared_view`), and let the shard's
fused step+observe kernel write straight into it: the reply then carries only rewards and
flags, and the client's arrays are the very bytes the engine wrote. Request/reply ordering is
the synchronisation: the shard writes before it replies, and writes again only when a call
names the segment again.

Layout: a call for n games uses the first bytes of the segment laid out for n games
(`SharedView.rows(n)`, `SharedView.mask_rows(n)`), so one segment serves any batch up to its
size: one packed observation buffer (codec layout), then, when the call asks for masks
(include_masks), their masks uint8 [n, players, mask bytes] at the next 8-byte boundary
(`codec.view_nbytes`), written by the mask kernel straight into the segment right after the
step. A segment that holds masks says so: its last 8 bytes are MASKS_MARK.

Older clients: their segments hold the planes only and end without the mark (MASKS_MARK
starts with 0xFF, which no observation code is, so the planes' last bytes never read as one).
For such a segment the shard writes the planes and sends asked masks in the reply, as before:
old clients keep working unchanged. The mark, not the size, decides, because the size cannot:
an older client's segment for 8 games holds the planes and masks of 5, and that client reads
its masks from the reply only. A marked segment too small for the call's masks is refused
(NoRoomForMasks, FAILED_PRECONDITION on the wire) before any game changes: the client asked
for masks in the segment and would otherwise not find them there. `SharedView(..., masks=False)`
makes a planes-only segment (masks, when asked, on the wire).

Names are "gamefleet-view-" and 1 to 64 letters, digits, '_' or '-', so a shard opens
nothing but GameFleet segments. A shard on another host cannot open the segment and
refuses the call (SharedViewUnavailable, FAILED_PRECONDITION on the wire), so a client
falls back to the wire.

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
from typing import NamedTuple

import numpy as np

from .engine import GameConfig, Observation
from .wire import codec

PREFIX = "gamefleet-view-"
_NAME = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_-]{1,64}")
OPEN_LIMIT = 16  # segments a shard keeps mapped (least recently used closed first)
MASKS_MARK = b"\xffmasks01"  # the last 8 bytes of a segment that holds masks after the planes


class ViewRows(NamedTuple):
    """The planes of a call's games in a segment, and their masks (None: not in the segment)."""

    observation: Observation
    masks: np.ndarray | None


def _layout(buffer: memoryview, games: int, config: GameConfig, masks: bool) -> ViewRows:
    p, t = config.players, config.tiles
    observation = codec.unpack_observation(buffer[: codec.observation_nbytes(games, p, t)], games, p, t)
    return ViewRows(observation, codec.unpack_masks(buffer, games, p, t) if masks else None)


def _marked(segment: mmap.mmap) -> bool:
    return len(segment) >= len(MASKS_MARK) and segment[-len(MASKS_MARK) :] == MASKS_MARK


class SharedView:
    """A client-owned segment for up to `games` games of `config`: `observation` views the planes
    of all of them, `masks` their masks (None with masks=False: a planes-only segment, whose
    calls get asked masks on the wire).

    Registered with multiprocessing's resource tracker, as SharedMemory does, so the segment
    is removed even if the client dies without closing it.
    """

    def __init__(self, config: GameConfig, games: int, *, masks: bool = True) -> None:
        if games < 1:
            raise ValueError(f"a shared view holds at least 1 game, got {games}")
        self.config = config
        self.games = games
        self.holds_masks = masks
        self.name = PREFIX + secrets.token_hex(8)
        p, t = config.players, config.tiles
        size = (
            codec.view_nbytes(games, p, t) + len(MASKS_MARK)
            if masks
            else codec.observation_nbytes(games, p, t)
        )
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
        if masks:
            self._segment[-len(MASKS_MARK) :] = MASKS_MARK
        self._rows = _layout(memoryview(self._segment), games, config, masks)
        self.observation, self.masks = self._rows

    def layout(self, games: int) -> ViewRows:
        """The planes and masks a call for `games` games writes (the segment's first bytes, laid out
        for them); masks None in a planes-only segment."""
        if not 1 <= games <= self.games:
            raise ValueError(f"shared view {self.name} holds 1 to {self.games} games, not {games}")
        if self._rows.observation.games != games:
            self._rows = _layout(memoryview(self._segment), games, self.config, self.holds_masks)
        return self._rows

    def rows(self, games: int) -> Observation:
        """The planes a call for `games` games wrote (the segment's first bytes, laid out for them)."""
        return self.layout(games).observation

    def mask_rows(self, games: int) -> np.ndarray | None:
        """The masks a call for `games` games with include_masks wrote (after its planes); None in a
        planes-only segment (masks=False)."""
        return self.layout(games).masks

    def close(self) -> None:
        """Remove the segment. Arrays still held keep their mapping alive until they go."""
        if self._segment is None:
            return
        self.observation = self.masks = self._rows = None  # type: ignore[assignment]
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
    """A segment name that is not a GameFleet view, or a segment too small for the call's planes."""


class SharedViewUnavailable(SharedViewError):
    """No such segment on this host (the client is elsewhere, or removed it)."""


class NoRoomForMasks(SharedViewError):
    """A segment marked for masks (MASKS_MARK) that holds the call's planes but not their masks."""


@dataclass
class _Mapped:
    fd: int
    segment: mmap.mmap
    views: ViewRows | None = None  # laid out for the last call's games
    key: tuple[int, int, int, bool] = (0, 0, 0, False)  # games, players, tiles, masks of `views`


class SharedViewCache:
    """The segments a shard has mapped, by name; every lookup checks the name and the size.

    Segments are mapped with shm_open + mmap rather than SharedMemory, whose resource
    tracker would unlink the client's segment when the shard exits. The descriptor stays
    open beside the mapping, to see the segment's current size and whether it was removed.
    """

    def __init__(self) -> None:
        self._open: OrderedDict[str, _Mapped] = OrderedDict()

    def views(self, name: str, config: GameConfig, games: int, masks: bool = False) -> ViewRows:
        """Writable planes for `games` games of `config` in segment `name` (request order), and with
        `masks` (the call asks for them) their masks when the segment is marked for them (None:
        a planes-only segment, the masks go in the reply). Raises before any write: see the
        module docstring for what is refused how."""
        if not _NAME.fullmatch(name):
            raise SharedViewError(
                f"shared_view {name[:80]!r} is not a GameFleet view name "
                f"({PREFIX!r} and 1-64 letters, digits, '_' or '-')"
            )
        p, t = config.players, config.tiles
        size = codec.observation_nbytes(games, p, t)
        entry = self._open.get(name)
        if entry is not None:
            stat = os.fstat(entry.fd)
            if stat.st_nlink == 0 or stat.st_size != len(entry.segment):  # removed, or resized
                self._drop(name)
                entry = None
        if entry is None:
            entry = self._map(name)
        length = len(entry.segment)
        if length < size:
            raise SharedViewError(
                f"shared_view {name!r} holds {length} bytes; {games} games of "
                f"{config.height}x{config.width}, {p} players need {size}"
            )
        in_view = masks and _marked(entry.segment)
        if in_view and length < codec.view_nbytes(games, p, t) + len(MASKS_MARK):
            raise NoRoomForMasks(
                f"shared_view {name!r} holds {length} bytes: the planes of {games} games of "
                f"{config.height}x{config.width}, {p} players, but not their masks, which need "
                f"{codec.view_nbytes(games, p, t) + len(MASKS_MARK)} with the mark; nothing changed. "
                f"Make the view for at least {games} games, or send the call without it"
            )
        self._open.move_to_end(name)
        key = (games, p, t, in_view)
        if entry.views is None or entry.key != key:
            entry.views, entry.key = _layout(memoryview(entry.segment), games, config, in_view), key
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
