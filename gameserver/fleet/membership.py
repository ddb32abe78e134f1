"""A shard's membership of a fleet with Redis: the registry, the ring it implies, and the games
that move when the ring changes.

Names: a shard is known by its advertised address (`--advertise`, $GAMEFLEET_ADDRESS). That
one string is its registry entry, the owner in its games' records, its log stream and its
ring member, so the ring a router builds from the registry names the shards the records name.
The operator's drain requests name the pod (`--shard-name`, $GAMEFLEET_SHARD).

The ring: the SERVING shards that heartbeat within `dead_after_s`, sorted, exactly what the
router's RegistrySource lists, so shards and routers agree on every key's owner once they
have read the same registry.

Games move only through Redis (each game's record + its owner's log, durability.py); the
shard-to-shard calls (moves.py) only say when. A move is always: the holder records the
games and drops them, then the new owner recovers them from Redis. Who moves what:
- failover: a shard silent for `dead_after_s` leaves orphans. Every survivor recovers the
  keys the ring now gives it (recovery.keys_assigned), one survivor at a time per dead shard
  (a lease in Redis), so no key is taken twice. It fences the dead shard first (fencing.py):
  were it only frozen, none of its writes lands after, and it forfeits its games when it wakes.
  Nobody fails over until the fleet's generation is `dead_after_s` old and the survivor has
  reached Redis for that long: after Redis lost its data or was away, every live shard has
  heartbeat and recorded its games again by then, so a live shard is never taken for dead.
- drain (the operator's drain hash, or SIGTERM): the shard heartbeats DRAINING (routers drop it
  from their rings; its readiness is NOT_SERVING), refuses new games, and pushes each key's
  games to the key's owner on the ring without it (hand off, then Adopt on the owner). It
  reports DRAINING with its remaining load; load 0 = drained.
- lazily, when a shard joins (scale-up, a shard back): nothing moves at the join. A game
  moves on the first call that reaches its owner on the new ring: that shard does not hold
  the game, finds its record in Redis, asks the holder to hand it over (HandOver) and
  recovers it, then serves the call. Games nobody calls stay where they are.
- restart: a shard that comes back under the same address first recovers the games its
  previous process still owns (before it logs anything, so nothing of theirs is trimmed).

A call for games this shard does not hold (`locate`): NOT_FOUND only when Redis has no record
of them (never created, or closed), no shard is handing games over (UNAVAILABLE then) and Redis
did not lose the fleet's data lately (DATA_LOSS then). Otherwise the games come here if the ring
names this shard, and the answer is UNAVAILABLE (retryable: nothing changed) naming where they
belong if it does not, so a caller with an outdated ring refreshes it and retries.

Restored games: a recovery that could not vouch for a game's tick (its record was not
`complete`: snapshot mode, or on-redis-error degrade) and did not come from a holder that
recorded it as it stood (a hand-over, a drain, a clean exit) marks it restored; its changes
answer DATA_LOSS naming the tick until a read (GetBatchStates) acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from ..pool import GamePool, IdSource, UnknownGameError
from ..sharding import HashRing, key_hashes
from ..wire.errors import DataLoss, FailedPrecondition, GameFleetError, NotFound, Unavailable
from ..wire.services import DURABILITY_HEALTH, SERVICE
from . import fencing, moves
from .durability import Durability
from .recovery import keys_assigned, recover_games
from .store import FleetStore, StoreUnavailableError

log = logging.getLogger(__name__)
_STATUS = {True: health_pb2.HealthCheckResponse.SERVING, False: health_pb2.HealthCheckResponse.NOT_SERVING}
CLAIM_TTL_S = 60.0  # a recovery holds its lease at most this long (a crashed holder's lapses)
_SHOWN = 8


class HeldGames(Protocol):
    """What a member needs of the games its shard holds (the shard's ShardGames)."""

    @property
    def active_games(self) -> int: ...

    @property
    def live_ids(self) -> np.ndarray: ...

    async def adopt(self, recovered: Sequence[GamePool]) -> np.ndarray: ...

    async def hand_off(self, key_hashes: np.ndarray) -> np.ndarray: ...

    async def forfeit(self) -> np.ndarray: ...

    async def record_all(self) -> None: ...

    def mark_restored(self, ids: np.ndarray, ticks: np.ndarray) -> None: ...


class FleetMember:
    """One shard's part in the fleet; `join` before serving, `leave` on SIGTERM."""

    def __init__(
        self,
        store: FleetStore,
        durability: Durability,
        games: HeldGames,
        *,
        pod: str,
        dead_after_s: float,
        health: HealthServicer,
    ) -> None:
        self.store = store
        self.durability = durability
        self.games = games
        self.name = durability.shard
        self.pod = pod
        self.dead_after_s = dead_after_s
        self.tick_s = durability.heartbeat_s
        self.ring: HashRing | None = None
        self.alive: set[str] = set()
        self.draining_elsewhere: set[str] = set()
        self.draining = False
        self.superseded = False  # another process serves under this shard's name: this one stopped
        self._health = health
        self._durable = True  # last reported: nothing acknowledged is missing from Redis
        self._drain: asyncio.Task | None = None
        self._leaving = False
        self._locate_lock = asyncio.Lock()
        self._moving: dict[str, asyncio.Lock] = {}  # per owner: the lease is re-entrant for this shard
        self._loop: asyncio.Task | None = None
        self._reached_since: float | None = None  # monotonic: every tick since reached Redis

    @property
    def moves_games(self) -> bool:
        """Games can move only through records: not in durability mode off."""
        return self.durability.mode != "off"

    def handler(self) -> grpc.GenericRpcHandler:
        return moves.handler(self._hand_over, self._adopt)

    async def join(self) -> None:
        """Take back this address's games from Redis (waiting for Redis if need be), read the
        registry, then watch it."""
        while self.moves_games:
            try:
                await asyncio.to_thread(self.durability.hold)
                await self._take_back("its previous process")
                break
            except (StoreUnavailableError, Unavailable) as error:
                log.warning("shard %s: waiting for Redis to recover its games: %s", self.name, error)
                await asyncio.sleep(self.tick_s)
        with contextlib.suppress(StoreUnavailableError):
            await self._refresh()
            self._reached_since = time.monotonic()
        await self._health.set(DURABILITY_HEALTH, _STATUS[True])
        self._loop = asyncio.create_task(self._run())

    async def _take_back(self, whose: str) -> None:
        """Recover the games Redis still records under this shard's name (holding its slot)."""
        async with self._claim(self.name):
            clean = await asyncio.to_thread(self.store.take_clean, self.name)
            mine = await asyncio.to_thread(self.store.key_hashes_of, self.name)
            if mine:
                count = await self._recover(self.name, mine, handed_over=clean)
                log.info("shard %s: recovered %d games of %s", self.name, count, whose)

    async def _set_serving(self, serving: bool) -> None:
        """Readiness: NOT_SERVING while draining."""
        for service in ("", SERVICE.full_name):
            await self._health.set(service, _STATUS[serving])

    async def _report_durability(self) -> None:
        """Say when acknowledged changes are not all in Redis (degrade mode), and when they are again."""
        durable = not self.durability.degraded
        if durable != self._durable:
            self._durable = durable
            await self._health.set(DURABILITY_HEALTH, _STATUS[durable])
            if durable:
                log.warning("shard %s: durable again: every acknowledged change is in Redis", self.name)
            else:
                log.warning(
                    "shard %s: DEGRADED: serving without Redis; %d calls acknowledged without a log entry",
                    self.name, self.durability.unlogged_steps,
                )  # fmt: skip

    async def leave(self, timeout_s: float) -> None:
        """SIGTERM: drain within `timeout_s` (what is left stays in Redis for the survivors).
        `timeout_s` 0 (drainTimeoutSeconds: 0) or durability off: go at once, moving nothing."""
        self._leaving = True
        if timeout_s <= 0 or not self.moves_games:  # clients see the shard go; survivors recover
            self.draining = True
            self.durability.state = "DRAINING"
            await self._set_serving(False)
        else:
            if self._drain is None:
                self._drain = asyncio.create_task(self._drain_games())
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._drain), timeout_s)
        for task in (self._drain, self._loop):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # The watch ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.superseded:
            await asyncio.sleep(self.tick_s)
            try:
                await self._tick()
            except StoreUnavailableError as error:
                self._reached_since = None
                log.debug("shard %s: registry unreachable: %s", self.name, error)
            except Exception:  # a bug here must not end the watch
                log.exception("shard %s: fleet watch failed", self.name)

    async def _tick(self) -> None:
        if self.durability.fenced:
            await self._forfeit()
            return
        await self._report_durability()
        await self._refresh()
        if self._reached_since is None:
            self._reached_since = time.monotonic()
        if self.moves_games and self.durability.degraded:  # Redis is back (or lost its data)
            await self.games.record_all()
        requested = await asyncio.to_thread(self.store.drain_requested, self.pod)
        if requested and not self.draining:
            log.info("shard %s: drain requested by the operator", self.name)
            self._drain = asyncio.create_task(self._drain_games())
        elif not requested and self.draining and not self._leaving:
            log.info("shard %s: drain cancelled, serving again", self.name)
            self._drain.cancel()
            self._drain = None
            self.draining = False
            self.durability.state = "SERVING"
            await self._set_serving(True)
        if not self.draining and self.moves_games:
            owners = await asyncio.to_thread(self.store.owners)
            for dead in [o for o in owners if o not in self.alive and o != self.name]:
                await self._take_over(dead)

    def _unrecorded(self, ids: np.ndarray) -> GameFleetError:
        """What to answer for games Redis has no record of: NOT_FOUND (never created, or closed),
        unless Redis lost the fleet's data within the records' TTL (DATA_LOSS: they may have
        existed) or a shard is handing games over now (UNAVAILABLE: their records may be on the way)."""
        age, generation = self.durability.generation_age(), self.durability.generation
        if generation is not None and generation.lost and age is not None and age < self.store.ttl_s:
            return DataLoss(
                f"no record of games {ids[:_SHOWN].tolist()}: Redis lost the fleet's data {age:.0f} s ago, "
                "and games created before then whose shard did not record them again are gone (or "
                "they were closed, or never created)"
            )
        if self.draining_elsewhere:
            return Unavailable(
                f"no record of games {ids[:_SHOWN].tolist()} yet: shards {sorted(self.draining_elsewhere)} "
                "are handing their games over now: retry"
            )
        return NotFound(UnknownGameError(ids).message)

    async def _refresh(self) -> None:
        shards = await asyncio.to_thread(self.store.list_shards, self.dead_after_s)
        self.alive = {s.address for s in shards}
        draining = {s.address for s in shards if s.state == "DRAINING"}
        self.draining_elsewhere = draining - {self.name}
        serving = [s.address for s in shards if s.state == "SERVING"]
        if self.ring is None or list(self.ring.shards) != serving:
            self.ring = HashRing(serving) if serving else None

    async def _take_over(self, dead: str) -> None:
        """Failover: recover the dead shard's keys that the ring gives this shard."""
        ring = self.ring
        if ring is None or self.name not in ring.shards or self._too_soon_to_fail_over():
            return
        try:
            async with self._claim(dead, wait_s=0):
                mine = await asyncio.to_thread(keys_assigned, self.store, dead, ring, self.name)
                if mine:
                    await asyncio.to_thread(self.store.fence, dead, self.name)
                    count = await self._recover(dead, mine)
                    log.warning("shard %s: took over %d games of dead shard %s", self.name, count, dead)
        except Unavailable:
            return  # another survivor holds the lease: next tick

    def _too_soon_to_fail_over(self) -> str | None:
        """Why a silent shard cannot be taken for dead yet (None: it can): the fleet's data in
        Redis, or this shard's view of it, is younger than `dead_after_s`."""
        age = self.durability.generation_age()
        if age is None or age < self.dead_after_s:
            return "Redis began the fleet's data less than --dead-after ago"
        reached = self._reached_since
        if reached is None or time.monotonic() - reached < self.dead_after_s:
            return f"shard {self.name} has reached Redis for less than --dead-after"
        return None

    async def _forfeit(self) -> None:
        """Fenced: drop every game (another shard took them over), then hold the slot anew and
        take back what Redis still records as this shard's. Another process serving under this
        name: stop serving (two processes must not write as one shard)."""
        reason = self.durability.fenced
        dropped = await self.games.forfeit()
        log.error("shard %s: fenced (%s): dropped its %d games", self.name, reason, dropped.size)
        held = await asyncio.to_thread(self.store.holder_token, self.name)
        if held is not None and not held.startswith(fencing.FENCED):
            log.error("shard %s: another process holds this shard's name: serving nothing", self.name)
            self.draining = self.superseded = True
            self.durability.state = "DRAINING"
            await self._set_serving(False)
            return
        await asyncio.to_thread(self.durability.hold, renew=True)
        await self._take_back("its own not yet taken over")

    # Moving games -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _claim(self, owner: str, wait_s: float = 10.0) -> AsyncIterator[None]:
        """The lease on moving `owner`'s games out of Redis (one shard at a time, and within this
        shard one task at a time: a failover and a call's lazy move must not both adopt them)."""
        name, deadline = f"recover:{owner}", time.monotonic() + wait_s
        busy = f"another shard is moving the games of {owner} now: retry"
        local = self._moving.setdefault(owner, asyncio.Lock())
        try:
            await asyncio.wait_for(local.acquire(), max(wait_s, 0.001))
        except TimeoutError:
            raise Unavailable(busy) from None
        try:
            while not await asyncio.to_thread(self.store.claim, name, self.name, CLAIM_TTL_S):
                if time.monotonic() >= deadline:
                    raise Unavailable(busy)
                await asyncio.sleep(0.05)
            try:
                yield
            finally:
                with contextlib.suppress(StoreUnavailableError):
                    await asyncio.to_thread(self.store.release_claim, name, self.name)
        finally:
            local.release()

    async def _recover(self, owner: str, keys: list[int], *, handed_over: bool = False) -> int:
        """Rebuild `owner`'s games of these keys from Redis and take them in (hold its lease).
        Unless `owner` recorded them as they stood (`handed_over`: a drain, a hand-over, a clean
        exit), games whose records were not complete are marked restored (DATA_LOSS until read)."""
        scratch: list[GamePool] = []

        def into(config: object, autoreset: bool) -> GamePool:
            scratch.append(GamePool(config, 1, autoreset=autoreset, id_source=IdSource()))
            return scratch[-1]

        found = await asyncio.to_thread(
            recover_games, self.store, into, key_hashes=keys, owner=owner, writer=self.name
        )
        for pool in scratch:  # here already (an earlier move of them wrote no record yet)
            pool.release(pool.ids[np.isin(pool.ids, self.games.live_ids)])
        ids = await self.games.adopt(scratch)
        inexact = np.isin(found.inexact, ids)
        if inexact.any() and not handed_over:
            self.games.mark_restored(found.inexact[inexact], found.inexact_ticks[inexact])
            log.warning(
                "shard %s: %d games of %s restored at ticks their clients may have passed (DATA_LOSS "
                "until read)", self.name, int(inexact.sum()), owner,
            )  # fmt: skip
        if owner != self.name:  # our own keys stay ours: the adopt just recorded them again
            await asyncio.to_thread(self.store.forget_key_hashes, owner, keys)
        return int(ids.size)

    async def _hand_over(self, keys: np.ndarray) -> int:
        """HandOver: another shard owns these keys now; record their games and drop them."""
        if not self.moves_games:
            raise FailedPrecondition(f"shard {self.name} runs durability off: its games cannot move")
        return int((await self.games.hand_off(keys)).size)

    async def _adopt(self, owner: str, keys: np.ndarray) -> int:
        """Adopt: a draining shard handed these keys' games to this one."""
        if self.draining or not self.moves_games:
            raise Unavailable(f"shard {self.name} does not take games now (draining or durability off)")
        async with self._claim(owner):
            return await self._recover(owner, [int(k) for k in keys.tolist()], handed_over=True)

    async def _drain_games(self) -> None:
        """DRAINING until every game is on another shard (or, durability off, closed)."""
        self.draining = True
        self.durability.state = "DRAINING"
        await self._set_serving(False)
        while self.games.active_games:
            targets = None
            if self.moves_games:
                with contextlib.suppress(StoreUnavailableError):
                    await self._refresh()
                ring = self.ring
                others = [s for s in ring.shards if s != self.name] if ring is not None else []
                targets = HashRing(others) if others else None
            if targets is None and self._leaving and self.moves_games:
                log.warning(
                    "shard %s: no other shard serves: its %d games stay recorded in Redis for whoever "
                    "takes them (its own restart, or a survivor once it is gone)",
                    self.name, self.games.active_games,
                )  # fmt: skip
                return
            if targets is not None:
                keys = np.unique(key_hashes(self.games.live_ids))
                owners = targets.shard_index_of_hashes(keys)
                for index in np.unique(owners).tolist():
                    await self._push(targets.shards[index], keys[owners == index])
            if self.games.active_games:
                await asyncio.sleep(self.tick_s)
        log.info("shard %s: drained", self.name)

    async def _push(self, target: str, keys: np.ndarray) -> None:
        try:
            moved = await self.games.hand_off(keys)
        except StoreUnavailableError as error:
            log.warning("shard %s: drain waits for Redis: %s", self.name, error)
            return
        if not moved.size:
            return
        try:
            await moves.adopt(target, self.name, keys.tolist())
            log.info("shard %s: handed %d games to %s", self.name, moved.size, target)
        except grpc.RpcError as error:  # take them back from Redis; the next round tries again
            log.warning("shard %s: %s did not adopt: %s", self.name, target, error.details())
            async with self._claim(self.name):
                await self._recover(self.name, keys.tolist(), handed_over=True)

    async def locate(self, missing: np.ndarray) -> None:
        """Bring here the games of a call that this shard does not hold, if the ring names it
        their owner; raise NotFound for games Redis has no record of, Unavailable otherwise."""
        if not self.moves_games:
            raise NotFound(UnknownGameError(missing).message)
        async with self._locate_lock:
            missing = missing[~np.isin(missing, self.games.live_ids)]  # a failover may have come first
            if not missing.size:
                return
            owners = np.array(await asyncio.to_thread(self.store.owners_of_games, missing), dtype=object)
            unknown = missing[owners == None]  # noqa: E711 (elementwise)
            if unknown.size:
                raise self._unrecorded(unknown)
            if self.draining:
                raise Unavailable(
                    f"shard {self.name} is draining; its games are moving to other shards: retry"
                )
            ring = self.ring
            keys = key_hashes(missing)
            placed = np.array(ring.shards)[ring.shard_index_of_hashes(keys)] if ring is not None else None
            if placed is None or np.any(placed != self.name):
                where = sorted(set(placed[placed != self.name].tolist())) if placed is not None else []
                raise Unavailable(
                    f"games {missing[:_SHOWN].tolist()} are not this shard's ({self.name}) on the fleet's "
                    f"ring (they belong to {where or 'no serving shard'}): retry with a fresh topology"
                )
            dead = [o for o in set(owners.tolist()) if o != self.name and o not in self.alive]
            if dead and (why := self._too_soon_to_fail_over()):
                raise Unavailable(
                    f"games {missing[:_SHOWN].tolist()} are recorded by {sorted(dead)}: {why}; retry"
                )
            for owner in sorted(set(owners.tolist())):
                mine = np.unique(keys[owners == owner]).tolist()
                async with self._claim(owner):
                    if owner in dead:
                        await asyncio.to_thread(self.store.fence, owner, self.name)
                    elif owner != self.name:
                        try:
                            await moves.hand_over(owner, mine)
                        except grpc.RpcError as error:
                            raise Unavailable(
                                f"shard {owner} holds games {missing[:_SHOWN].tolist()} and did not hand "
                                f"them over: {error.code().name}: {error.details()}: retry"
                            ) from None
                    live = owner not in dead and owner != self.name  # it handed them over, as they stood
                    count = await self._recover(owner, mine, handed_over=live)
                log.info("shard %s: %d games of %s moved here on first use", self.name, count, owner)
