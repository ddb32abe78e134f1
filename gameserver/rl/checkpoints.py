"""Checkpoints of in-process games: a state snapshot every N steps, plus the actions between.

Checkpoint k holds the exact state of the tracked games after `step` steps (a codec snapshot)
and the actions of the steps since checkpoint k-1. So the newest checkpoint resumes the games
at once, and any recorded step s is reached bit-exactly from the newest checkpoint at or
before s by replaying the recorded actions through the engine (determinism is the engine's
contract; autoreset maps follow from the map seed and the game id, which snapshots keep).

Storage is the filesystem (one file per checkpoint, written atomically) or Redis through
the fleet's FleetStore (its key prefix and TTL). Retention keeps the newest `keep`.
Tracked games are a fixed set of one GamePool: games created or closed later are not covered.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import redis

from ..fleet.store import FleetStore, StoreUnavailableError
from ..pool import GamePool
from ..wire.codec import decode_snapshot

FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """The games `ids` after `step` steps; `actions` [k, games, players] are steps step-k .. step-1."""

    number: int
    step: int
    ids: np.ndarray
    autoreset: bool
    snapshot: bytes
    actions: np.ndarray

    def to_bytes(self) -> bytes:
        header = {"format": FORMAT, "number": self.number, "step": self.step, "autoreset": self.autoreset}
        out = io.BytesIO()
        np.savez(
            out,
            header=np.frombuffer(json.dumps(header).encode(), np.uint8),
            ids=self.ids,
            snapshot=np.frombuffer(self.snapshot, np.uint8),
            actions=self.actions,
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                header = json.loads(arrays["header"].tobytes())
                ids, snapshot, actions = arrays["ids"], arrays["snapshot"].tobytes(), arrays["actions"]
            if header["format"] != FORMAT:
                raise ValueError(f"format {header['format']!r} (this build reads {FORMAT})")
            if ids.dtype != np.uint64 or actions.dtype != np.int32 or actions.shape[1:2] != ids.shape:
                raise ValueError(f"arrays do not fit: ids {ids.dtype}{ids.shape}, actions {actions.shape}")
            number, step, autoreset = int(header["number"]), int(header["step"]), bool(header["autoreset"])
            return cls(number, step, ids, autoreset, snapshot, actions)
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise ValueError(f"not a usable GameFleet checkpoint: {error}") from None


class CheckpointStorage(Protocol):
    """Where checkpoints live: bytes by (name, number)."""

    def save(self, name: str, number: int, data: bytes) -> None: ...

    def load(self, name: str, number: int) -> bytes: ...

    def numbers(self, name: str) -> list[int]:
        """The stored checkpoint numbers of `name`, ascending."""
        ...

    def delete(self, name: str, number: int) -> None: ...


class FileCheckpoints:
    """`directory/<name>/<number>.ckpt`; a write goes to a temporary file renamed into place, so
    a crash mid-write never leaves a torn checkpoint under a real name."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, name: str, number: int) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"checkpoint name must be a plain file name, got {name!r}")
        return self.directory / name / f"{number:012d}.ckpt"

    def save(self, name: str, number: int, data: bytes) -> None:
        path = self._path(name, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def load(self, name: str, number: int) -> bytes:
        return self._path(name, number).read_bytes()

    def numbers(self, name: str) -> list[int]:
        folder = self._path(name, 0).parent
        return sorted(int(p.stem) for p in folder.glob("*.ckpt")) if folder.is_dir() else []

    def delete(self, name: str, number: int) -> None:
        self._path(name, number).unlink(missing_ok=True)


class RedisCheckpoints:
    """Checkpoints in the fleet's Redis: a STRING per checkpoint and a ZSET index per name, under
    the store's prefix and expiring with its TTL (refreshed by every save)."""

    def __init__(self, store: FleetStore) -> None:
        self.store = store

    def _call(self, fill: object) -> list:
        try:
            pipe = self.store.redis.pipeline(transaction=True)
            fill(pipe)
            return pipe.execute()
        except redis.RedisError as error:
            raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error

    def _keys(self, name: str, number: int) -> tuple[str, str]:
        return self.store.key("ckpt", name, number), self.store.key("ckpts", name)

    def save(self, name: str, number: int, data: bytes) -> None:
        key, index = self._keys(name, number)
        ttl = self.store.ttl_s
        self._call(
            lambda p: (p.set(key, data, ex=ttl), p.zadd(index, {number: number}), p.expire(index, ttl))
        )

    def load(self, name: str, number: int) -> bytes:
        data = self._call(lambda p: p.get(self._keys(name, number)[0]))[0]
        if data is None:
            raise FileNotFoundError(f"checkpoint {name}/{number} is not in Redis (expired or deleted)")
        return data

    def numbers(self, name: str) -> list[int]:
        return [int(n) for n in self._call(lambda p: p.zrange(self._keys(name, 0)[1], 0, -1))[0]]

    def delete(self, name: str, number: int) -> None:
        key, index = self._keys(name, number)
        self._call(lambda p: (p.delete(key), p.zrem(index, number)))


class CheckpointManager:
    """Checkpoints `ids` of `pool` every `every` steps, keeping the newest `keep`.

    Call `record(actions)` after each `pool.step(ids, actions)`. Checkpoint 0 (the state when
    the manager starts) is written at once; `save()` writes one off schedule (e.g. at exit).
    A name holds one run: steps count from the manager's start, so a run resumed from
    checkpoints records under a new name.
    """

    def __init__(
        self, storage: CheckpointStorage, name: str, pool: GamePool, ids: object, *, every: int, keep: int
    ) -> None:
        if every < 1 or keep < 1:
            raise ValueError(f"every and keep must be >= 1, got every={every}, keep={keep}")
        self.storage, self.name, self.pool = storage, name, pool
        self.ids = np.array(ids, np.uint64)
        pool.slots_of(self.ids)  # unknown ids fail here, not at the first checkpoint
        if storage.numbers(name):
            raise ValueError(f"checkpoints named {name!r} exist already: record this run under a new name")
        self.every, self.keep = every, keep
        self.step = 0
        self.number = 0
        self._segment = np.empty((every, self.ids.size, pool.config.players), np.int32)
        self._filled = 0
        self.save()

    def record(self, actions: object) -> Checkpoint | None:
        """Note the actions just played; returns the checkpoint when this step completed one."""
        actions = np.asarray(actions)
        if actions.shape != self._segment.shape[1:]:
            raise ValueError(f"actions must be {list(self._segment.shape[1:])}, got {list(actions.shape)}")
        self._segment[self._filled] = actions
        self._filled += 1
        self.step += 1
        return self.save() if self._filled == self.every else None

    def save(self) -> Checkpoint:
        checkpoint = Checkpoint(
            number=self.number,
            step=self.step,
            ids=self.ids,
            autoreset=self.pool.autoreset,
            snapshot=self.pool.snapshot(self.ids),
            actions=self._segment[: self._filled].copy(),
        )
        self.storage.save(self.name, self.number, checkpoint.to_bytes())
        for old in self.storage.numbers(self.name)[: -self.keep]:
            self.storage.delete(self.name, old)
        self.number += 1
        self._filled = 0
        return checkpoint


def load_checkpoints(storage: CheckpointStorage, name: str) -> list[Checkpoint]:
    """Every stored checkpoint of `name`, oldest first."""
    return [Checkpoint.from_bytes(storage.load(name, n)) for n in storage.numbers(name)]


def resume(storage: CheckpointStorage, name: str, step: int | None = None) -> tuple[GamePool, np.ndarray]:
    """A new pool holding the tracked games as they were after `step` steps (None: the newest
    checkpoint), and their ids: the newest snapshot at or before `step`, then the recorded
    actions replayed through the engine."""
    checkpoints = load_checkpoints(storage, name)
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoints named {name!r}")
    step = checkpoints[-1].step if step is None else step
    bases = [c for c in checkpoints if c.step <= step]
    if not bases or step > checkpoints[-1].step:
        held = f"{checkpoints[0].step}..{checkpoints[-1].step}"
        raise ValueError(f"step {step} is not covered by the checkpoints of {name!r} (steps {held})")
    base = bases[-1]
    later = [c.actions for c in checkpoints if c.number > base.number]
    actions = np.concatenate([np.zeros((0, *base.actions.shape[1:]), np.int32), *later])[: step - base.step]
    snapshot = decode_snapshot(base.snapshot)
    pool = GamePool(snapshot.config, max(base.ids.size, 1), autoreset=base.autoreset)
    pool.adopt(base.ids, snapshot)
    for row in actions:
        pool.step(base.ids, row, observe=False)
    return pool, base.ids
