"""Split a BatchGameService request by shard and merge the shards' replies in request order.

Written once for both routers of the fleet: the router process (servicer.py) and
the client that routes straight to the shards (gameserver/sharded_client.py). A plan holds
one sub-request per shard that a request touches, and the function that merges their
replies; no I/O happens here.

Pass-through: when every game of a request lives on one shard (the common case: all games
of one CreateBatchGames call share a placement key, hence a shard) the plan's one part is
the request's own bytes and its merge returns the shard's reply bytes as they are, so the
bulk observations are neither parsed nor re-encoded on the way.

Spanning shards: the game ids are grouped by shard with one argsort, each sub-request
carries its shard's rows of every per-game tensor, and the replies' rows are scattered
back into request order and framed by wire/replies.py. Two things differ from one shard's answer:
- A call asking for deltas is sent to the shards as a full-view call: a delta's flat
  indices need each game's tile count to be re-based, and a delta reply does not carry it.
  The client receives full planes (which a delta consumer applies like any full reply) and
  the shards record them as the last view sent, so the next deltas stay exact.
- Each shard applies or refuses its part whole, but the parts are independent: the router
  checks what it can before sending (ids, row counts), and a refusal only a shard can see
  (an unknown id, a move off its board) leaves the other shards' parts applied. The error
  says which shard refused and which parts succeeded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.message import Message

from ..engine import Observation
from ..sharding import HashRing, key_hashes
from ..wire import replies as wire
from ..wire.errors import FailedPrecondition, GameFleetError, InvalidArgument, Unavailable, from_status
from ..wire.generated import batch_pb2 as pb
from ..wire.messages import parse_request, read_ids, read_placement_key, read_tensor

_OBSERVATION_FIELDS = ("codes", "armies", "land", "army", "tick", "masks")
_STEP_FIELDS = ("rewards", "terminated", "truncated", "status", "reset")
# Requests that name games, and their per-game tensors (rows follow game_ids).
_BY_GAMES: dict[str, tuple[type[Message], tuple[str, ...]]] = {
    "GetBatchStates": (pb.GetBatchStatesRequest, ()),
    "SubmitBatchActions": (pb.SubmitBatchActionsRequest, ("actions", "seats", "seat_tokens")),
    "ResetBatchGames": (pb.ResetBatchGamesRequest, ("seeds",)),
    "CloseBatchGames": (pb.CloseBatchGamesRequest, ()),
}
# Per-game tensors inside a request's GameMaps (ResetBatchGames' maps): rows follow game_ids too.
_MAPS = ("maps", pb.GameMaps, ("terrain", "armies", "generals"))
_PLACEMENT_KEY = pb.CreateBatchGamesRequest.DESCRIPTOR.fields_by_name["placement_key"].number
MAX_PLACEMENT_TRIES = 256  # keys tried for a placeable owner: with 1 of 16 shards placeable, missed ~1e-7


@dataclass(frozen=True)
class Part:
    """One shard's share of a request: its serialized sub-request and the request rows it holds;
    `games` and `planes` (its reply carries observation planes) say how big its reply may be."""

    shard: str
    request: bytes
    rows: np.ndarray | None  # None: the whole request (passed through)
    games: int = 1
    planes: bool = False


@dataclass(frozen=True)
class Plan:
    """The parts of a request and how to merge their replies (given in the order of `parts`)."""

    parts: list[Part]
    merge: Callable[[Sequence[bytes]], bytes]


def plan(
    method: str,
    raw: bytes,
    ring: HashRing,
    max_games_per_call: int,
    placeable: frozenset[str] | None = None,
) -> Plan:
    """How to serve `raw` (a serialized request of `method`) over the shards of `ring`.

    Raises InvalidArgument / ResourceExhausted for a request that cannot be routed, with
    the details a shard would give.
    """
    if method == "CreateBatchGames":
        return _create(raw, ring, placeable)
    if method == "JoinGame":
        game = np.array([parse_request(pb.JoinGameRequest, raw).game_id], np.uint64)
        return _whole(ring, int(ring.shard_index_of_games(game)[0]), raw, 1, False)
    if method not in _BY_GAMES:
        raise ValueError(f"{method} is not routed by game")
    message, per_game = _BY_GAMES[method]
    request = parse_request(message, raw)
    ids = read_ids(request, "game_ids", max_games_per_call)
    owners = _owners(ring, ids)
    if owners.size == 1:
        return _whole(ring, int(owners[0]), raw, ids.size, _carries_planes(method, request))
    return _split(method, request, ids, per_game, owners, ring)


def _carries_planes(method: str, request: Message) -> bool:
    """Whether the reply to this request holds full observation planes (its bulk)."""
    if method == "CloseBatchGames" or getattr(request, "shared_view", ""):
        return False
    if method == "SubmitBatchActions" and request.skip_observations:
        return False
    return not getattr(request, "delta", False)


def _create(raw: bytes, ring: HashRing, placeable: frozenset[str] | None) -> Plan:
    """A new batch goes to the shard owning its placement key. A call without a key gets a
    random one, appended to the request (a later field wins in protobuf) so that the shard
    stamps its ids with the same key hash: batches of keyless callers spread over the ring.

    Only a `placeable` shard (ready: not warming up, not draining; None: every shard) takes new
    games: a key whose owner is not is placed under the first of `key#1`, `key#2`, ... that a
    placeable shard owns. The ring itself keeps every member, so calls for games that already
    live on a shard still reach it."""
    request = parse_request(pb.CreateBatchGamesRequest, raw)
    key = original = read_placement_key(request) or secrets.token_hex(8)
    if placeable is not None and not placeable:
        raise Unavailable("no shard takes new games now (all warming up or draining): retry")
    for attempt in range(1, MAX_PLACEMENT_TRIES + 1):
        if placeable is None or ring.shard_of_key(key) in placeable:
            break
        key = f"{original}#{attempt}"
    else:
        raise Unavailable(f"no shard that takes new games owns placement key {original!r} or its variants")
    if key != request.placement_key:
        field = wire.Body()
        field.bytes_field(_PLACEMENT_KEY, key.encode())
        raw = raw + field.to_bytes()
    return Plan([Part(ring.shard_of_key(key), raw, None, request.num_games, True)], _only)


def _whole(ring: HashRing, owner: int, raw: bytes, games: int, planes: bool) -> Plan:
    return Plan([Part(ring.shards[owner], raw, None, games, planes)], _only)


def _only(replies: Sequence[bytes]) -> bytes:
    return replies[0]


def _owners(ring: HashRing, ids: np.ndarray) -> np.ndarray:
    """The owner shard index of each id; one element when they all have one owner."""
    hashes = key_hashes(ids)
    if np.all(hashes == hashes[0]):  # one placement key: one lookup
        return ring.shard_index_of_hashes(hashes[:1])
    owners = ring.shard_index_of_hashes(hashes)
    return owners[:1] if np.all(owners == owners[0]) else owners


def _split(
    method: str,
    request: Message,
    ids: np.ndarray,
    per_game: tuple[str, ...],
    owners: np.ndarray,
    ring: HashRing,
) -> Plan:
    """A sub-request per shard: the request's other fields serialized once, then that shard's rows
    of game_ids and of every per-game tensor appended as fields (its given maps' too)."""
    if getattr(request, "shared_view", ""):
        raise FailedPrecondition(
            f"shared_view: these game_ids live on {len(np.unique(owners))} shards and a shared view "
            "is written by one; send one call per shard, or the call without shared_view"
        )
    tensors = {"game_ids": ids}
    tensors |= {name: _rows(request, name, ids.size) for name in per_game if request.HasField(name)}
    numbers = {name: request.DESCRIPTOR.fields_by_name[name].number for name in tensors}
    for name in tensors:
        request.ClearField(name)
    maps_field, maps_type, map_tensors = _MAPS
    maps: dict[str, np.ndarray] | None = None  # set (even empty) goes on to every shard: they refuse it
    if maps_field in request.DESCRIPTOR.fields_by_name and request.HasField(maps_field):
        given = getattr(request, maps_field)
        maps = {
            name: _rows(given, name, ids.size, f"{maps_field}.{name}")
            for name in map_tensors
            if given.HasField(name)
        }
        request.ClearField(maps_field)
    if getattr(request, "delta", False):
        request.delta = False  # see the module docstring: merged replies carry full planes
    planes = _carries_planes(method, request)
    base = request.SerializeToString()
    order = np.argsort(owners, kind="stable")  # rows of each shard stay in request order
    counts = np.bincount(owners, minlength=len(ring.shards))
    ends = np.cumsum(counts)
    parts = []
    for shard in np.flatnonzero(counts):
        rows = order[ends[shard] - counts[shard] : ends[shard]]
        fields = wire.Body()
        for name, array in tensors.items():
            fields.tensor(numbers[name], array[rows])
        if maps is not None:
            given = wire.Body()
            for name, array in maps.items():
                given.tensor(maps_type.DESCRIPTOR.fields_by_name[name].number, array[rows])
            fields.message(request.DESCRIPTOR.fields_by_name[maps_field].number, given)
        parts.append(Part(ring.shards[shard], base + fields.to_bytes(), rows, rows.size, planes))
    rows = [part.rows for part in parts]
    shards = [part.shard for part in parts]
    merge = _MERGES[method]
    return Plan(parts, lambda replies: merge(ids.size, rows, shards, replies))


def _rows(request: Message, name: str, games: int, label: str = "") -> np.ndarray:
    label = label or name
    array = read_tensor(getattr(request, name), label)
    if array.ndim == 0 or array.shape[0] != games:
        raise InvalidArgument(f"{label}: shape {list(array.shape)} for {games} game_ids; one row per game")
    return array


# Merging ------------------------------------------------------------------------------------


def _scatter(
    games: int, rows: Sequence[np.ndarray], shards: Sequence[str], arrays: Sequence[np.ndarray]
) -> np.ndarray:
    """Rows of each shard's array into one array of `games` rows, in request order."""
    first = arrays[0]
    for shard, array in zip(shards, arrays, strict=True):
        if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype:
            raise InvalidArgument(
                f"game_ids span games of different configs: {shards[0]} answered {first.dtype} "
                f"{list(first.shape[1:])} per game, {shard} {array.dtype} {list(array.shape[1:])} "
                "(each shard applied its part); one call takes games of one config"
            )
    out = np.empty((games, *first.shape[1:]), first.dtype)
    for r, array in zip(rows, arrays, strict=True):
        out[r] = array
    return out


def _observations(
    games: int, rows: Sequence[np.ndarray], shards: Sequence[str], parts: Sequence[wire.Observations]
) -> wire.Body:
    if any(p.codes is None for p in parts):
        raise InvalidArgument("a shard answered a delta to a full-view call")  # cannot happen: asked full
    merged = {}
    for name in _OBSERVATION_FIELDS:
        arrays = [getattr(p, name) for p in parts]
        if name == "masks" and any(a is None for a in arrays):
            merged[name] = None
        else:
            merged[name] = _scatter(games, rows, shards, arrays)
    masks = merged.pop("masks")
    return wire.observations(Observation(**merged), masks)


def _merge_observations(
    games: int, rows: Sequence[np.ndarray], shards: Sequence[str], replies: Sequence[bytes]
) -> bytes:
    return _observations(games, rows, shards, [wire.read_observations(r) for r in replies]).to_bytes()


def _merge_steps(
    games: int, rows: Sequence[np.ndarray], shards: Sequence[str], replies: Sequence[bytes]
) -> bytes:
    results = [wire.read_step(r) for r in replies]
    merged = {
        name: _scatter(games, rows, shards, [getattr(r, name) for r in results]) for name in _STEP_FIELDS
    }
    observed = final = None
    if all(r.observations is not None for r in results):
        observed = _observations(games, rows, shards, [r.observations for r in results])
    finals = [
        (r, shard, res)
        for r, shard, res in zip(rows, shards, results, strict=True)
        if res.final_observations is not None
    ]
    if finals:
        # Each shard's final views follow its own reset games; place them in the request's order.
        rank = np.cumsum(merged["reset"]) - 1
        final = _observations(
            int(rank[-1]) + 1,
            [rank[r[res.reset]] for r, _, res in finals],
            [shard for _, shard, _ in finals],
            [res.final_observations for _, _, res in finals],
        )
    return wire.step_response(**merged, observed=observed, final=final).to_bytes()


def _merge_closed(
    games: int, rows: Sequence[np.ndarray], shards: Sequence[str], replies: Sequence[bytes]
) -> bytes:
    closed = sum(pb.CloseBatchGamesResponse.FromString(r).closed for r in replies)
    return pb.CloseBatchGamesResponse(closed=closed).SerializeToString()


_MERGES = {
    "GetBatchStates": _merge_observations,
    "SubmitBatchActions": _merge_steps,
    "ResetBatchGames": _merge_observations,
    "CloseBatchGames": _merge_closed,
}


# Errors -------------------------------------------------------------------------------------


def shard_error(shard: str, code: grpc.StatusCode, details: str, timeout: float | None) -> GameFleetError:
    """A shard's refusal or failure as the fleet's error: its status, its details, and which shard."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
        details = f"shard {shard} did not answer within {timeout:g} s (it may still apply the call)"
    elif code == grpc.StatusCode.CANCELLED:  # not by the router: the shard stopped (a drain ended)
        code = grpc.StatusCode.ABORTED  # not UNAVAILABLE ("nothing changed"): the call may have run
        details = (
            f"shard {shard} stopped during the call ({details}); it may have run: read the games "
            "(they are on another shard now) before retrying it"
        )
    elif code == grpc.StatusCode.UNAVAILABLE:
        details = f"shard {shard} is unavailable: {details}"
    else:
        details = f"{details} [shard {shard}]"
    return from_status(code, details)


def first_failure(parts: Sequence[Part], outcomes: Sequence[object]) -> GameFleetError | None:
    """The error of the first failed part, naming the parts that succeeded; None if none failed."""
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if not failed:
        return None
    error = failed[0]
    if not isinstance(error, GameFleetError):
        raise error
    done = [p.shard for p, o in zip(parts, outcomes, strict=True) if not isinstance(o, BaseException)]
    if not done:
        return error
    return from_status(error.code, f"{error.details}; the parts on {', '.join(done)} succeeded")
