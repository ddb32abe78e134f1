"""BatchGameService on one shard: parse a request, run it on ShardGames, frame the reply.

Handlers are registered without (de)serializers and take and return raw bytes: requests
are parsed here, so a malformed payload is INVALID_ARGUMENT naming the problem (gRPC's own
deserializer would answer INTERNAL), and replies are framed by wire/replies.py around the
engine's arrays. Every refusal happens before any game changes (see games.py).

Placement: all games of one CreateBatchGames call carry one placement key hash in their
ids' high 32 bits. Without a `placement_key` the shard draws the hash at random from the OS
(as a router does for its key): drawn from the shard's seed, every shard of a fleet started
with one seed issued the same ids, and two games then shared one record in Redis.

In a fleet with Redis (`member` set, fleet/membership.py): a call naming games this shard does not
hold asks the member to locate them (they may have moved here: failover, a lazy move) before
it answers NOT_FOUND, and a draining shard refuses new games with UNAVAILABLE.

Seat play (open seats, JoinGame, seat tokens) goes through the SeatTable (seats.py), which
sits in front of `ShardGames.step` and steps a game once all of its seats have acted or its
turn deadline has passed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import numpy as np
from google.protobuf.message import Message

from ..engine import GameConfig, Observation, mask_bytes
from ..sharding import DEFAULT_VIRTUAL_NODES, placement_hash
from ..shared_views import NoRoomForMasks, SharedViewCache, SharedViewUnavailable, ViewRows
from ..telemetry import tracing
from ..wire import codec
from ..wire import replies as wire
from ..wire.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    abort,
)
from ..wire.generated import batch_pb2 as pb
from ..wire.messages import (
    config_from_proto,
    config_to_proto,
    parse_request,
    read_ids,
    read_maps,
    read_placement_key,
    read_seeds,
)
from ..wire.security import presents_token
from ..wire.services import SERVICE
from .games import Route, ShardGames, ShardStep, Views
from .idle import IdleGames
from .roles import read_role
from .seats import SeatTable, read_seat_moves, turn_deadline

if TYPE_CHECKING:
    from ..fleet.membership import FleetMember

log = logging.getLogger(__name__)
_REPLY_OVERHEAD = 4096  # bytes of framing and small fields in any reply
_STRANGER = "this fleet needs a token: without it, only seat calls (JoinGame, seats with seat_tokens)"


def _observations(views: Views, out: ViewRows | None = None) -> wire.Body:
    """The reply's Observations; with `out` (the call's shared view) neither the planes nor the
    masks it holds (a planes-only segment's masks still travel)."""
    if out is None:
        return wire.observations(views.observation, views.masks, views.delta)
    return wire.observations(views.observation, None if out.masks is not None else views.masks, shared=True)


def _step_reply(stepped: ShardStep, out: ViewRows | None = None) -> bytes:
    return wire.step_response(
        stepped.rewards,
        stepped.terminated,
        stepped.truncated,
        stepped.status,
        stepped.reset,
        None if stepped.views is None else _observations(stepped.views, out),
        None if stepped.final is None else wire.observations(stepped.final),
    ).to_bytes()


def _refuse(handler: Callable[..., Awaitable[bytes]]) -> Callable[..., Awaitable[bytes]]:
    """Turn a refused request into its status (a bug into INTERNAL, logged): the server keeps serving."""

    async def unary(self: BatchGameServicer, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await handler(self, raw, context)
        except Exception as error:
            await abort(context, error, log)

    return unary


class BatchGameServicer:
    """The shard's BatchGameService: every method takes and returns serialized messages."""

    def __init__(
        self,
        games: ShardGames,
        *,
        name: str,
        max_games_per_call: int,
        max_message_bytes: int,
        game_defaults: GameConfig | None = None,
        fleet_token: str | None = None,
    ) -> None:
        self.games = games
        # With a fleet token, callers without it (the server's TokenCheck lets them reach only the
        # seat methods) may only join open seats and move them with seat tokens (`_trusted`).
        # Without one, every caller is trusted: anyone who reaches the port plays any game.
        self.fleet_token = fleet_token
        # what the fields a CreateBatchGames request leaves unset take (the fleet's spec.game)
        self.game_defaults = GameConfig() if game_defaults is None else game_defaults
        self.seats = SeatTable(games)
        self.name = name
        self.max_games_per_call = max_games_per_call
        self.max_message_bytes = max_message_bytes
        self.shared_views = SharedViewCache()
        self.member: FleetMember | None = None  # in a fleet with Redis
        self.idle: IdleGames | None = None  # with --idle-close-seconds: every call touches its games
        self.closing = False  # shutting down where games cannot move: no new games (server.leave)

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method of the proto's service, bytes in and bytes out."""
        handlers = {}
        for method in SERVICE.methods:
            behaviour = getattr(self, method.name)
            if method.client_streaming:
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour)
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour)
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    @_refuse
    async def CreateBatchGames(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = parse_request(pb.CreateBatchGamesRequest, raw)
        if self.closing or (self.member is not None and self.member.draining):
            raise Unavailable(
                f"shard {self.name} is draining and takes no new games: create them on another shard"
            )
        n = request.num_games
        if n == 0:
            raise InvalidArgument("num_games must be at least 1")
        if n > self.max_games_per_call:
            raise ResourceExhausted(
                f"num_games: {n} games in one call, the limit is {self.max_games_per_call}"
            )
        deadline = turn_deadline(request)
        config = config_from_proto(request.config, self.game_defaults)
        seeds = read_seeds(request, "seeds", n)
        maps = read_maps(request, config, n)
        role = read_role(request, config, self.games.transitions)
        if not request.skip_observations:
            self._check_reply(config, n, masks=request.include_masks, finals=False)
        key = read_placement_key(request)
        key_hash = placement_hash(key) if key else secrets.randbits(32)
        effective = config_to_proto(config)
        ids, reply = await self.games.create(
            n,
            config,
            autoreset=request.autoreset,
            seeds=seeds,
            maps=maps,
            key_hash=key_hash,
            masks=request.include_masks,
            finish=lambda ids, views: (
                ids,
                wire.created_response(
                    ids, effective, None if request.skip_observations else _observations(views), self.name
                ).to_bytes(),
            ),
            role=role,
        )
        if request.open_seats:
            self.seats.open(self.games.route(ids), deadline, tuple(bool(a) for a in role.agents))
        if self.idle is not None:
            self.idle.touch(ids)
        return reply

    @_refuse
    async def GetBatchStates(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = parse_request(pb.GetBatchStatesRequest, raw)
        route = await self._route(request, reading=True)
        self._check_reply(route.config, route.ids.size, masks=request.include_masks, finals=False)
        out = self._shared_view(request, route)
        reply = await self.games.observe(
            route,
            masks=request.include_masks,
            delta=request.delta,
            finish=lambda views: _observations(views, out).to_bytes(),
            **_shared_out(out),
        )
        self.games.acknowledge_restored(route.ids)  # the client has seen where they stand
        return reply

    @_refuse
    async def SubmitBatchActions(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._step(raw, self._trusted(context))

    async def StreamSteps(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One reply per request, in order. A refused request ends the stream with its status
        (the games of that request unchanged, those of earlier requests stepped)."""
        try:
            trusted = self._trusted(context)
            async for raw in requests:
                yield await self._step(raw, trusted)
        except Exception as error:
            await abort(context, error, log)

    @_refuse
    async def ResetBatchGames(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = parse_request(pb.ResetBatchGamesRequest, raw)
        route = await self._route(request)
        seeds = read_seeds(request, "seeds", route.ids.size)
        maps = read_maps(request, route.config, route.ids.size)
        self._check_reply(route.config, route.ids.size, masks=request.include_masks, finals=False)
        out = self._shared_view(request, route)
        return await self.games.reset(
            route,
            seeds,
            maps=maps,
            masks=request.include_masks,
            finish=lambda views: _observations(views, out).to_bytes(),
            **_shared_out(out),
        )

    @_refuse
    async def CloseBatchGames(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        route = await self._route(parse_request(pb.CloseBatchGamesRequest, raw))
        return pb.CloseBatchGamesResponse(closed=await self._close(route)).SerializeToString()

    async def _close(self, route: Route) -> int:
        closed = await self.games.close(route)
        self.seats.release(route.ids)
        return closed

    async def close_idle(self, ids: np.ndarray) -> int:
        """Close those of these games still here (IdleGames' sweep: no client named them lately)."""
        ids = ids[np.isin(ids, self.games.live_ids)]
        return await self._close(self.games.route(ids)) if ids.size else 0

    @_refuse
    async def JoinGame(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = parse_request(pb.JoinGameRequest, raw)
        config = (await self._located(np.array([request.game_id], np.uint64))).config
        seat, token = self.seats.join(request.game_id, request.seat)
        return pb.JoinGameResponse(
            seat=seat, seat_token=token, config=config_to_proto(config)
        ).SerializeToString()

    @_refuse
    async def GetTopology(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        parse_request(pb.GetTopologyRequest, raw)
        return pb.Topology(shards=[self.name], virtual_nodes=DEFAULT_VIRTUAL_NODES).SerializeToString()

    def _trusted(self, context: grpc.aio.ServicerContext) -> bool:
        """The caller holds the fleet's token, or the fleet has none."""
        return self.fleet_token is None or presents_token(context.invocation_metadata(), self.fleet_token)

    async def _step(self, raw: bytes, trusted: bool = True) -> bytes:
        if not tracing.ACTIVE:
            return await self._process_actions(raw, trusted)
        with tracing.span("game.process_actions"):
            return await self._process_actions(raw, trusted)

    async def _process_actions(self, raw: bytes, trusted: bool) -> bytes:
        request = parse_request(pb.SubmitBatchActionsRequest, raw)
        seat_play = request.HasField("seats") or request.HasField("seat_tokens")
        if not trusted and not seat_play:
            raise Unauthenticated(_STRANGER)
        route = await self._route(request)
        if tracing.recording():
            tracing.annotate(_batch_attributes(route, request, seat_play, self.games.active_games))
        if seat_play:
            actions, seats, tokens = read_seat_moves(request, route.config, route.ids.size)
        elif not request.HasField("actions"):
            raise InvalidArgument("actions is missing: int32 [games, players] flat moves are required")
        else:
            actions = _actions(request.actions, route)
            self.seats.refuse_self_play(route.ids)
        observe = not request.skip_observations
        if observe:
            finals = any(entry.pool.autoreset for entry, _ in route.groups)
            self._check_reply(route.config, route.ids.size, masks=request.include_masks, finals=finals)
        if seat_play:
            if request.shared_view:
                raise InvalidArgument("shared_view: seat calls take their views on the wire (self-play only)")
            return await self.seats.submit(
                route, actions, seats, tokens, observe=observe, masks=request.include_masks
            )
        out = self._shared_view(request, route) if observe else None
        return await self.games.step(
            route,
            actions,
            observe=observe,
            masks=request.include_masks,
            delta=request.delta,
            finish=lambda stepped: _step_reply(stepped, out),
            **_shared_out(out),
        )

    def _shared_view(self, request: Message, route: Route) -> ViewRows | None:
        """The planes, and with include_masks the masks, of the shared view a request names
        (checked before any game changes; what is refused how: shared_views' docstring)."""
        name = request.shared_view
        if not name:
            return None
        if getattr(request, "delta", False):
            raise InvalidArgument("shared_view and delta exclude each other: the view is the full planes")
        try:
            return self.shared_views.views(name, route.config, route.ids.size, masks=request.include_masks)
        except (SharedViewUnavailable, NoRoomForMasks) as error:
            raise FailedPrecondition(str(error)) from None

    async def _route(self, request: Message, *, reading: bool = False) -> Route:
        """The route of the request's games; a change to restored games not yet read is refused
        (DATA_LOSS: their clients must see the tick they went back to first)."""
        route = await self._located(read_ids(request, "game_ids", self.max_games_per_call))
        if not reading:
            self.games.refuse_restored(route.ids)
        return route

    async def _located(self, ids: np.ndarray) -> Route:
        """The route of these ids; games held elsewhere are located first (see the module doc)."""
        if self.idle is not None:
            self.idle.touch(ids)
        try:
            return self.games.route(ids)
        except NotFound:
            if self.member is None:
                raise
        await self.member.locate(np.unique(ids[~np.isin(ids, self.games.live_ids)]))
        return self.games.route(ids)

    def _check_reply(self, config: GameConfig, games: int, *, masks: bool, finals: bool) -> None:
        """Refuse up front a call whose reply could pass the message limit: once the games have
        stepped, a reply too large to send would lose the step."""
        players, tiles = config.players, config.tiles
        per_game = players * (3 * tiles + 8) + 4 + (players * mask_bytes(tiles) if masks else 0)
        per_game += players * (3 * tiles + 8) + 4 if finals else 0  # every game could autoreset
        size = games * (per_game + 4 * players + 4) + _REPLY_OVERHEAD
        if size > self.max_message_bytes:
            raise ResourceExhausted(
                f"the reply for {games} games of {config.height}x{config.width}, {players} players "
                f"could reach {size} bytes, over the {self.max_message_bytes}-byte message limit: "
                "send fewer games per call (or skip_observations, or no masks)"
            )


def _shared_out(out: ViewRows | None) -> dict[str, Observation | np.ndarray | None]:
    """ShardGames' `out` and `out_masks` arguments for a call's shared view (None: none)."""
    return {} if out is None else {"out": out.observation, "out_masks": out.masks}


def _batch_attributes(
    route: Route, request: pb.SubmitBatchActionsRequest, seat_play: bool, active: int
) -> dict[str, object]:
    config = route.config
    return {
        "gamefleet.batch_games": route.ids.size,
        "gamefleet.shard_games": active,
        "gamefleet.pools": len(route.groups),
        "gamefleet.config": f"{config.height}x{config.width}, {config.players} players",
        "gamefleet.max_ticks": config.max_ticks,
        "gamefleet.seat_play": seat_play,
        "gamefleet.observe": not request.skip_observations,
        "gamefleet.delta": request.delta,
        "gamefleet.masks": request.include_masks,
    }


def _actions(tensor: pb.Tensor, route: Route) -> np.ndarray:
    """Flat moves [games, players] (or generals-bots [games, players, 5]), range-checked for the config."""
    try:
        actions = codec.decode_actions(tensor.data, tensor.dtype, tensor.shape, route.config)
    except ValueError as error:
        raise InvalidArgument(f"actions: {error}") from None
    if actions.shape[0] != route.ids.size:
        raise InvalidArgument(f"actions: {actions.shape[0]} rows for {route.ids.size} game_ids")
    return actions
