"""Differential test: our engine against generals-bots 2.5.0 (the reference), tick by tick.

200 generated 20x20 two-player maps are rebuilt in generals-bots (`Game(Grid(s), agents)`) and
both engines play the same 500 ticks of random actions. Our games are stepped together, in ONE
batched `step` call per tick over scattered slots (how the engine is used); the peer's games
one by one. Every tick, for every game still running, we compare: armies and ownership of every
tile, winner / termination / rewards, and both players' observations decoded into generals-bots'
Observation fields (boards and scalars). A game is no longer compared after it ends:
generals-bots keeps applying moves to a finished game, ours freezes it (checked separately).

The actions mix aimed play (the largest army marches on the enemy general, so many games end by
capture), random legal moves, and every kind of illegal move: passes, sources and destinations
off the board, sources the player does not own, moves into mountains, moves of an army of 1.
A coverage test asserts the play really fought, so the comparison cannot pass on idle games.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest
from generals.core.action import compute_valid_move_mask
from peer_adapter import (
    OBS_PLANES,
    OBS_SCALARS,
    PEER_AGENTS,
    STATE_PLANES,
    first_difference,
    our_planes,
    our_scalars,
    our_state,
    peer_game,
    peer_planes,
    peer_scalars,
    peer_state,
)

from gameserver.engine import GameBatch, GameConfig, Observation, action_masks, generate, observe, step
from gameserver.engine import config as C
from gameserver.engine.actions import from_generals_bots

H = W = 20
HW = H * W
N_GAMES = 200
TICKS = 500
CAPACITY = 331  # more slots than games: the games sit on scattered, unsorted slots
SEED = 20_261_125

# Per (game, player, tick): aimed move with the game's aggression probability, else a random
# legal move up to LEGAL_UNTIL, else one of the illegal kinds below (uniformly).
LEGAL_UNTIL = 0.8
AIMED, RANDOM_LEGAL = -2, -1  # action kinds; the illegal ones are indices into ILLEGAL_KINDS
ILLEGAL_KINDS = (
    "pass",
    "source off board",
    "destination off board",
    "unowned source",
    "into mountain",
    "army of 1",
    "garbage",
)

ALL_PLANES = (*STATE_PLANES, *(f"p0 obs {n}" for n in OBS_PLANES), *(f"p1 obs {n}" for n in OBS_PLANES))
ALL_SCALARS = (*(f"p0 obs {n}" for n in OBS_SCALARS), *(f"p1 obs {n}" for n in OBS_SCALARS))

_DR = np.array(C.DIRECTION_ROWS)
_DC = np.array(C.DIRECTION_COLS)


def _neighbours() -> np.ndarray:
    """int64[HW, 4]: the tile each direction leads to, -1 off the board."""
    r, c = np.divmod(np.arange(HW), W)
    nr, nc = r[:, None] + _DR, c[:, None] + _DC
    return np.where((nr >= 0) & (nr < H) & (nc >= 0) & (nc < W), nr * W + nc, -1)


NEIGHBOURS = _neighbours()


def _toward(terrain: np.ndarray, target: int) -> np.ndarray:
    """int64[HW]: the direction that gets one step closer to `target` over plain/general tiles, -1 if none."""
    open_ = (terrain == C.PLAIN) | (terrain == C.GENERAL)
    dist = np.full(HW, -1)
    dist[target] = 0
    queue = deque([target])
    while queue:
        t = queue.popleft()
        for n in NEIGHBOURS[t]:
            if n >= 0 and dist[n] < 0 and open_[n]:
                dist[n] = dist[t] + 1
                queue.append(n)
    nd = np.where(NEIGHBOURS >= 0, dist[NEIGHBOURS], -1)
    nd = np.where(nd >= 0, nd, 1 << 30)
    best = nd.argmin(axis=1)
    ok = (dist > 0) & (nd.min(axis=1) < (1 << 30))
    return np.where(ok, best, -1)


def _pick(rng, cand):
    """Index of a random True entry along the last axis of cand, and whether there was one."""
    keys = np.where(cand, rng.random(cand.shape, np.float32), np.float32(-1))
    return keys.argmax(axis=-1), keys.max(axis=-1) >= 0


def choose_actions(rng, armies, owner, terrain, toward, aggression):
    """generals-bots actions int64[B, 2, 5] for the B games (rows of armies/owner/terrain [B, HW]).

    Returns the actions and the legal-move table bool[B, 2, HW, 4] they were drawn against.
    """
    b = armies.shape[0]
    own = owner[:, None, :] == np.arange(1, 3)[None, :, None]  # [B, 2, HW]
    arm = armies[:, None, :]
    nb = NEIGHBOURS[None]  # [1, HW, 4]
    dest_terrain = np.where(nb >= 0, np.take_along_axis(terrain[:, :, None], np.maximum(nb, 0), axis=1), -1)
    on_board = np.broadcast_to(nb >= 0, dest_terrain.shape)
    into_mountain = dest_terrain == C.MOUNTAIN
    dest_ok = on_board & ~into_mountain  # [B, HW, 4]
    movable = own & (arm > 1)
    legal = movable[..., None] & dest_ok[:, None]  # [B, 2, HW, 4]

    roll = rng.random((b, 2))
    kind = np.where(roll < aggression[:, None], AIMED, np.where(roll < LEGAL_UNTIL, RANDOM_LEGAL, 0))
    illegal = kind == 0
    kind[illegal] = rng.integers(0, len(ILLEGAL_KINDS), illegal.sum())

    # A random tile that fits the kind, then a random direction that fits it from there.
    # kind: (tile condition [B, 2, HW], direction condition [B, HW, 4]); aimed moves and passes
    # fall back to / carry a random legal move.
    illegal_kind = {name: k for k, name in enumerate(ILLEGAL_KINDS)}
    rules = {
        AIMED: (movable, dest_ok),
        RANDOM_LEGAL: (movable, dest_ok),
        illegal_kind["pass"]: (movable, dest_ok),
        illegal_kind["destination off board"]: (own, ~on_board),
        illegal_kind["unowned source"]: (~own, dest_ok),
        illegal_kind["into mountain"]: (movable, into_mountain),
        illegal_kind["army of 1"]: (own & (arm == 1), dest_ok),
    }
    tile_cand = np.zeros((b, 2, HW), bool)
    dir_cand = np.zeros((b, 2, HW, 4), bool)
    for k, (tiles, dirs) in rules.items():
        g, p = np.nonzero(kind == k)
        dir_cand[g, p] = dirs[g]
        tile_cand[g, p] = tiles[g, p] & dirs[g].any(axis=-1)
    tile, have = _pick(rng, tile_cand)
    gi, pi = np.indices((b, 2))
    direction, _ = _pick(rng, dir_cand[gi, pi, tile])
    split = (rng.random((b, 2)) < np.where(kind == RANDOM_LEGAL, 0.3, 0.5)).astype(np.int64)
    acts = np.stack([np.zeros_like(tile), tile // W, tile % W, direction, split], axis=-1)

    # Aimed: the largest army that has a way toward the enemy general takes one step along it.
    enemy = toward[:, ::-1]  # [B, 2, HW]: direction toward the other seat's general
    score = np.where(movable & (enemy >= 0), arm, -1)
    src = score.argmax(axis=2)
    aimed = (kind == AIMED) & (score.max(axis=2) > 0)
    d = np.take_along_axis(enemy, src[..., None], axis=2)[..., 0]
    aimed_act = np.stack(
        [
            np.zeros_like(src),
            src // W,
            src % W,
            np.maximum(d, 0),
            (rng.random((b, 2)) < 0.1).astype(np.int64),
        ],
        axis=-1,
    )
    acts = np.where(aimed[..., None], aimed_act, acts)
    have |= aimed

    # Garbage (and any kind with no candidate): random coordinates around the board, pass flag 0.
    garbage = ~have | (kind == illegal_kind["garbage"])
    n = garbage.sum()
    acts[garbage] = np.stack(
        [
            np.zeros(n, np.int64),
            rng.integers(-2, H + 2, n),
            rng.integers(-2, W + 2, n),
            rng.integers(0, 4, n),
            rng.integers(0, 2, n),
        ],
        axis=-1,
    )
    # Pass: the flag set, on coordinates that would otherwise be a legal move where there is one.
    acts[kind == illegal_kind["pass"], 0] = 1
    # Source off the board (its destination may be on it).
    off = kind == illegal_kind["source off board"]
    n = off.sum()
    side = rng.integers(0, 4, n)
    along = rng.integers(0, H, n)
    acts[off, 1] = np.choose(side, [np.full(n, -1), np.full(n, H), along, along])
    acts[off, 2] = np.choose(side, [along, along, np.full(n, -1), np.full(n, W)])
    acts[off, 3] = np.choose(side, [np.full(n, 1), np.full(n, 0), np.full(n, 3), np.full(n, 2)])
    return acts, legal


@dataclass
class Coverage:
    """What the random play did, measured on our engine's state (equal to the peer's while compared)."""

    general_captures: int = 0
    player_captures: int = 0  # tiles taken from the other player
    neutral_captures: int = 0
    city_captures: int = 0
    repelled_attacks: int = 0  # legal attack into an enemy tile that stayed the enemy's
    ties: int = 0  # legal attack into a tile with army that left it with 0, its owner unchanged
    collisions: int = 0  # both moves legal and one enters the other's source, or both the same tile
    legal_moves: int = 0
    illegal_moves: int = 0
    truncated: int = 0
    compared_ticks: int = 0
    mask_checks: int = 0


@dataclass
class Run:
    mismatches: list[str] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    frozen_violations: list[str] = field(default_factory=list)


def _mismatch(run, i, slot, seed, tick, acts, what):
    run.mismatches.append(
        f"game {i} (slot {slot}, seed {seed}) tick {tick}: {what}; "
        f"actions this tick [pass,row,col,dir,split]: p0 {acts[i, 0].tolist()} p1 {acts[i, 1].tolist()}"
    )


@pytest.fixture(scope="module")
def run() -> Run:
    """Play all games once; every test below checks one aspect of the same run."""
    cfg = GameConfig(H, W, 2, max_ticks=TICKS)
    rng = np.random.default_rng(SEED)
    batch = GameBatch.allocate(cfg, CAPACITY)
    slots = rng.choice(CAPACITY, N_GAMES, replace=False)
    seeds = rng.integers(0, 2**63, N_GAMES, dtype=np.uint64)
    generate(batch, slots, seeds)
    aggression = rng.uniform(0.1, 0.5, N_GAMES)

    out = Run()
    cov = out.coverage
    peers = [peer_game(batch.terrain[s], batch.armies[s], batch.generals[s], H, W) for s in slots]
    toward = np.stack(
        [np.stack([_toward(batch.terrain[s], int(batch.generals[s, p])) for p in range(2)]) for s in slots]
    )
    compared = np.ones(N_GAMES, bool)  # still running in both engines and not diverged
    frozen: dict[int, tuple] = {}

    def compare(tick, obs, acts, result=None):
        ours_board = np.concatenate(
            [our_state(batch.armies[slots], batch.owner[slots], batch.terrain[slots], H, W)]
            + [our_planes(obs.codes[:, p], obs.armies[:, p], p, H, W) for p in range(2)],
            axis=1,
        )
        for i in np.flatnonzero(compared):
            game = peers[i]
            if result is None:
                peer_obs = {a: game.agent_observation(a) for a in PEER_AGENTS}
            else:
                peer_obs, _ = game.step({a: acts[i, p] for p, a in enumerate(PEER_AGENTS)})
            theirs = np.concatenate([peer_state(game)] + [peer_planes(peer_obs[a]) for a in PEER_AGENTS])
            if not np.array_equal(ours_board[i], theirs):
                _mismatch(
                    out,
                    i,
                    slots[i],
                    seeds[i],
                    tick,
                    acts,
                    first_difference(ours_board[i], theirs, ALL_PLANES),
                )
                compared[i] = False
                continue
            ours_sc = np.concatenate(
                [our_scalars(obs.land[i], obs.army[i], obs.tick[i], p) for p in range(2)]
            )
            theirs_sc = np.concatenate([peer_scalars(peer_obs[a]) for a in PEER_AGENTS])
            if not np.array_equal(ours_sc, theirs_sc):
                _mismatch(
                    out, i, slots[i], seeds[i], tick, acts, first_difference(ours_sc, theirs_sc, ALL_SCALARS)
                )
                compared[i] = False
                continue
            s = slots[i]
            done = game.is_done()
            peer_winner = -1 if game.winner is None else PEER_AGENTS.index(game.winner)
            want_status = C.TERMINATED if done else (C.TRUNCATED if tick >= TICKS else C.RUNNING)
            got_end = (int(batch.status[s]), int(batch.winner[s]), int(batch.tick[s]))
            if got_end != (want_status, peer_winner, tick):
                _mismatch(
                    out,
                    i,
                    s,
                    seeds[i],
                    tick,
                    acts,
                    f"(status, winner, tick) ours {got_end} vs expected {(want_status, peer_winner, tick)}",
                )
                compared[i] = False
                continue
            if result is not None:
                want_rewards = np.zeros(2, np.float32)
                if done:
                    want_rewards[peer_winner], want_rewards[1 - peer_winner] = 1.0, -1.0
                got = (result.rewards[i].tolist(), bool(result.terminated[i]), bool(result.truncated[i]))
                want = (want_rewards.tolist(), done, want_status == C.TRUNCATED)
                if got != want:
                    _mismatch(
                        out,
                        i,
                        s,
                        seeds[i],
                        tick,
                        acts,
                        f"(rewards, terminated, truncated) ours {got} vs {want}",
                    )
                    compared[i] = False
                    continue
            if done or want_status == C.TRUNCATED:
                cov.general_captures += done
                cov.truncated += not done
                compared[i] = False
                frozen[i] = (
                    tick,
                    *(getattr(batch, n)[s].copy() for n in ("armies", "owner", "status", "winner")),
                )
            cov.compared_ticks += 1

    # Tick 0: the generated start, seen through observe().
    zero = np.zeros((N_GAMES, 2, 5), np.int64)
    compare(0, observe(batch, slots), zero)

    obs = Observation.allocate(cfg, N_GAMES)
    for tick in range(1, TICKS + 1):
        rows = (batch.armies[slots], batch.owner[slots], batch.terrain[slots])
        acts, legal = choose_actions(rng, *rows, toward, aggression)
        flat = from_generals_bots(acts, H, W)
        running_before = compared.copy()
        result = step(batch, slots, flat, out=obs)  # every game, finished ones included, in one call
        compare(tick, obs, acts, result)
        _count(cov, acts, legal, rows, (batch.armies[slots], batch.owner[slots]), running_before & compared)

        if tick % 50 == 0:  # the fused observation equals a separate observe()
            again = observe(batch, slots)
            for name in ("codes", "armies", "land", "army", "tick"):
                if not np.array_equal(getattr(again, name), getattr(obs, name)):
                    out.mismatches.append(f"tick {tick}: step(out=...) and observe() disagree on {name}")
        if tick % 25 == 0:  # action masks equal generals-bots' compute_valid_move_mask
            masks = np.unpackbits(action_masks(batch, slots), axis=2, bitorder="little")[:, :, : HW * 4]
            for i in np.flatnonzero(compared):
                for p, a in enumerate(PEER_AGENTS):
                    want = compute_valid_move_mask(peers[i].agent_observation(a)).reshape(HW * 4)
                    cov.mask_checks += 1
                    if not np.array_equal(masks[i, p].astype(bool), want):
                        bit = int(np.flatnonzero(masks[i, p].astype(bool) != want)[0])
                        out.mismatches.append(
                            f"game {i} (slot {slots[i]}) tick {tick} action mask of p{p}: tile "
                            f"{divmod(bit // 4, W)} direction {bit % 4}: ours {bool(masks[i, p, bit])} "
                            f"vs generals-bots {bool(want[bit])}"
                        )

    for i, (tick, *arrays) in frozen.items():
        s = slots[i]
        now = (int(batch.tick[s]), *(getattr(batch, n)[s] for n in ("armies", "owner", "status", "winner")))
        if now[0] != tick or not all(np.array_equal(a, b) for a, b in zip(now[1:], arrays, strict=True)):
            out.frozen_violations.append(
                f"game {i} (slot {s}) finished at tick {tick} but changed later (tick now {now[0]})"
            )
    return out


def _count(cov, acts, legal, before, after, compared):
    """Tally what happened this tick in the games that were compared through it."""
    armies, owner, terrain = before
    armies_after, owner_after = after
    b = np.arange(acts.shape[0])
    on = (
        (acts[..., 0] == 0)
        & (acts[..., 1] >= 0)
        & (acts[..., 1] < H)
        & (acts[..., 2] >= 0)
        & (acts[..., 2] < W)
    )
    src = np.where(on, acts[..., 1] * W + acts[..., 2], 0)
    is_legal = on & legal[b[:, None], np.arange(2)[None], src, acts[..., 3]]
    dst = np.where(is_legal, NEIGHBOURS[src, acts[..., 3]], -1)
    cov.legal_moves += int(is_legal[compared].sum())
    cov.illegal_moves += int((~is_legal)[compared].sum())
    both = is_legal.all(axis=1) & compared
    meet = (dst[:, 0] == src[:, 1]) | (dst[:, 1] == src[:, 0]) | (dst[:, 0] == dst[:, 1])
    cov.collisions += int((both & meet).sum())
    for p in range(2):
        g = np.flatnonzero(is_legal[:, p] & compared)
        t = dst[g, p]
        enemy = owner[g, t] == 2 - p
        cov.repelled_attacks += int((enemy & (owner_after[g, t] == 2 - p)).sum())
        foreign = (owner[g, t] != p + 1) & (armies[g, t] > 0)
        cov.ties += int((foreign & (owner_after[g, t] == owner[g, t]) & (armies_after[g, t] == 0)).sum())
    was, now = owner[compared], owner_after[compared]
    cov.player_captures += int(((was > 0) & (now > 0) & (was != now)).sum())
    cov.neutral_captures += int(((was == 0) & (now > 0) & (terrain[compared] == C.PLAIN)).sum())
    cov.city_captures += int(((was == 0) & (now > 0) & (terrain[compared] == C.CITY)).sum())


def test_every_tick_matches_generals_bots(run):
    shown = "\n".join(run.mismatches[:10])
    assert not run.mismatches, (
        f"{len(run.mismatches)} mismatches against generals-bots 2.5.0; first:\n{shown}"
    )


def test_finished_games_stay_frozen_while_the_batch_steps_on(run):
    assert not run.frozen_violations, "\n".join(run.frozen_violations[:10])


def test_random_play_fights_and_ends_games_by_capture(run):
    cov = run.coverage
    report = f"coverage: {cov}"
    assert cov.general_captures >= N_GAMES // 10, report  # many games end by capture...
    assert cov.truncated >= N_GAMES // 10, report  # ...and many run the full 500 ticks
    assert cov.general_captures + cov.truncated == N_GAMES, report  # every game compared to its end
    assert cov.compared_ticks >= N_GAMES * TICKS // 2, report
    assert cov.player_captures >= 2000, report
    assert cov.neutral_captures >= 5000, report
    assert cov.city_captures >= 30, report
    assert cov.repelled_attacks >= 1000, report
    assert cov.ties >= 20, report
    assert cov.collisions >= 200, report
    assert cov.illegal_moves >= 0.15 * (cov.legal_moves + cov.illegal_moves), report
    assert cov.mask_checks >= 2 * N_GAMES, report
