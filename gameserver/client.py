"""Client SDK for the fleet's BatchGameService: numpy in, numpy views of the replies out.

    with FleetClient("127.0.0.1:50051") as fleet:
        created = fleet.create(4096, GameConfig(), autoreset=True)
        result = fleet.step(created.ids, actions)          # actions int32 [games, players]
        result.observations.codes                          # uint8 [games, players, tiles], a view

Every array a call returns is a read-only view of the reply's bytes (`np.frombuffer`, no
copy; under 64 KB, of protobuf's copy of its field): it stays valid as long as you hold it.
Bulk replies are parsed by `gameserver.wire.replies`; refused calls raise `GameFleetError`
subclasses carrying the gRPC status (InvalidArgument, NotFound, ResourceExhausted, ...).

Delta observations (`delta=True`) carry only the tiles that changed since the shard last
sent a view of each game; a game's first delta lists all its tiles. Keep the planes with an
`ObservationBuffer` (one per fixed list of ids, applied to every reply for them, in order).
One delta consumer per game: two clients asking deltas of the same game break each other.

Shared views (client and shard on one host): name a `SharedView` in `step`, `states` or
`reset` and the shard writes the observation planes, and the masks when asked, straight into
that shared-memory segment; the reply carries only rewards and flags, and the planes and
masks returned are views of the segment, valid until the next call that names it. A shard on
another host refuses with FailedPrecondition (call without a view then):

    with SharedView(created.config, 4096) as view:
        result = fleet.step(created.ids, actions, view=view)  # result.observations.codes: in view

Pipelined steps (EnvPool's send/recv): `send` starts a step and returns at once, `recv` waits
for the oldest step sent and returns its reply, so the trainer's own work (inference on the
batch it just received) runs while the shards step the others; each sent batch must be a
distinct set of games:

    fleet.send(ids_a, actions_a); fleet.send(ids_b, actions_b)
    while training:
        reply = fleet.recv()                               # batch a's, then b's, ...
        fleet.send(ids_of(reply), policy(reply.observations))

Seat play: games created with `open_seats=True` are played by several clients, one seat
each. `join` takes a seat and its token; `step_seats` moves that seat in each game and
returns once every game has stepped (all seats acted, or the game's turn deadline passed),
with that seat's view only ([games, 1, tiles] planes and rewards):

    created = fleet.create(64, config, open_seats=True, turn_deadline_ms=50)
    seat, token = fleet.join(created.ids[0])              # one (seat, token) per game
    result = fleet.step_seats(ids, moves, seats, tokens)  # moves int32 [games]
"""

from __future__ import annotations

import collections
import functools
import queue
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import numpy as np
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .engine import GameConfig, Observation
from .sharding import HashRing
from .shared_views import SharedView
from .telemetry import tracing
from .wire import codec
from .wire import replies as wire
from .wire.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    GameFleetError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
    from_status,
)
from .wire.generated import batch_pb2 as pb
from .wire.limits import channel_options
from .wire.messages import config_to_proto, write_maps, write_tensor
from .wire.replies import Created, Observations, StepReply
from .wire.security import PLAINTEXT, Credentials, SecurityError
from .wire.services import SERVICE

if TYPE_CHECKING:  # loaded when maps are sent (wire.messages.write_maps): not by every client import
    from .engine.maps import GameMap, MapBatch

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncFleetClient",
    "Created",
    "Credentials",
    "DataLoss",
    "FailedPrecondition",
    "FleetClient",
    "GameFleetError",
    "InvalidArgument",
    "NotFound",
    "ObservationBuffer",
    "Observations",
    "PermissionDenied",
    "ResourceExhausted",
    "SecurityError",
    "SharedView",
    "StepReply",
    "Topology",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]

_READERS = {
    "CreateBatchGames": wire.read_created,
    "GetBatchStates": wire.read_observations,
    "SubmitBatchActions": wire.read_step,
    "StreamSteps": wire.read_step,
    "ResetBatchGames": wire.read_observations,
    "CloseBatchGames": pb.CloseBatchGamesResponse.FromString,
    "JoinGame": pb.JoinGameResponse.FromString,
    "GetTopology": pb.Topology.FromString,
}


class Topology(NamedTuple):
    shards: tuple[str, ...]
    virtual_nodes: int

    def ring(self) -> HashRing:
        """The consistent-hash ring, to route game ids to shards directly."""
        return HashRing(self.shards, self.virtual_nodes)


class ObservationBuffer:
    """Writable full planes for a fixed list of games, kept current from full or delta replies.

    Apply every observation reply for those games (same ids, same order) as it comes; the
    planes are preallocated once and deltas are written into them in place.
    """

    def __init__(self, config: GameConfig, games: int) -> None:
        self.observation = Observation.allocate(config, games)

    def apply(self, observations: Observations) -> Observation:
        view = self.observation
        if observations.delta is not None:
            codec.apply_delta(view.codes, view.armies, observations.delta)
        else:
            view.codes[...] = observations.codes
            view.armies[...] = observations.armies
        for name in ("land", "army", "tick"):
            getattr(view, name)[...] = getattr(observations, name)
        return view


def _ids(ids: object) -> np.ndarray:
    a = np.asarray(ids)
    if a.dtype != np.uint64 and (not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0)):
        raise InvalidArgument(f"game ids must be non-negative integers, got {a.dtype}")
    return a.astype(np.uint64, copy=False)


def _create_request(
    n: int,
    config: GameConfig | None,
    seeds: object,
    autoreset: bool,
    placement_key: str,
    masks: bool,
    open_seats: bool,
    turn_deadline_ms: float,
    seat_agents: Sequence[str] = (),
    push_transitions: bool = False,
    observations: bool = True,
    maps: Sequence[GameMap] | MapBatch | None = None,
) -> pb.CreateBatchGamesRequest:
    request = pb.CreateBatchGamesRequest(
        num_games=n,
        config=None if config is None else config_to_proto(config),  # None: the shard's defaults
        autoreset=autoreset,
        placement_key=placement_key,
        include_masks=masks,
        open_seats=open_seats,
        turn_deadline_ms=turn_deadline_ms,
        seat_agents=seat_agents,
        push_transitions=push_transitions,
        skip_observations=not observations,
    )
    if seeds is not None:
        write_tensor(request.seeds, np.asarray(seeds, np.uint64))
    if maps is not None:
        _write_maps(request.maps, maps)
    return request


def _write_maps(message: pb.GameMaps, maps: Sequence[GameMap] | MapBatch) -> None:
    """GameMaps from GameMaps (one board size and player count) or a MapBatch; InvalidArgument
    before anything is sent when they cannot be stacked."""
    try:
        write_maps(message, maps)
    except ValueError as error:
        raise InvalidArgument(f"maps: {error}") from None


def _step_request(
    ids: object, actions: object, masks: bool, delta: bool, observe: bool, view: SharedView | None = None
) -> pb.SubmitBatchActionsRequest:
    request = pb.SubmitBatchActionsRequest(
        include_masks=masks, delta=delta, skip_observations=not observe, shared_view=view.name if view else ""
    )
    write_tensor(request.game_ids, _ids(ids))
    write_tensor(request.actions, actions)
    return request


def _seat_step_request(
    ids: object, actions: object, seats: object, tokens: object, masks: bool, observe: bool
) -> pb.SubmitBatchActionsRequest:
    request = _step_request(ids, actions, masks, False, observe)
    write_tensor(request.seats, np.asarray(seats, np.int32))
    write_tensor(request.seat_tokens, np.asarray(tokens, np.uint64))
    return request


def _states_request(
    ids: object, masks: bool, delta: bool, view: SharedView | None = None
) -> pb.GetBatchStatesRequest:
    request = pb.GetBatchStatesRequest(
        include_masks=masks, delta=delta, shared_view=view.name if view else ""
    )
    write_tensor(request.game_ids, _ids(ids))
    return request


def _reset_request(
    ids: object,
    seeds: object,
    masks: bool,
    view: SharedView | None = None,
    maps: Sequence[GameMap] | MapBatch | None = None,
) -> pb.ResetBatchGamesRequest:
    request = pb.ResetBatchGamesRequest(include_masks=masks, shared_view=view.name if view else "")
    write_tensor(request.game_ids, _ids(ids))
    if seeds is not None:
        write_tensor(request.seeds, np.asarray(seeds, np.uint64))
    if maps is not None:
        _write_maps(request.maps, maps)
    return request


def _close_request(ids: object) -> pb.CloseBatchGamesRequest:
    request = pb.CloseBatchGamesRequest()
    write_tensor(request.game_ids, _ids(ids))
    return request


def _topology(reply: pb.Topology) -> Topology:
    return Topology(tuple(reply.shards), reply.virtual_nodes)


def _reader(name: str, request: Any, view: SharedView | None) -> Callable[[bytes], Any]:
    """The parser of a call's reply; with a view, the planes are its rows for the call's games
    and so are the masks, when asked (checked before the call is sent: a view too small is
    refused here)."""
    if view is None:
        return _READERS[name]
    observation, masks = view.layout(int(request.game_ids.shape[0]))
    return functools.partial(
        _READERS[name], shared=observation, shared_masks=masks if request.include_masks else None
    )


def _method(channel: Any, name: str, streaming: bool = False) -> Any:
    """Requests serialized by protobuf; replies come back as bytes, parsed by the caller (`_reader`)."""
    path = f"/{SERVICE.full_name}/{name}"
    make = channel.stream_stream if streaming else channel.unary_unary
    return make(path, request_serializer=lambda m: m.SerializeToString())


def _stream_metadata(credentials: Credentials) -> tuple[tuple[str, str], ...] | None:
    """A stream carries the caller's trace context from its start (its steps' spans on the shard
    then join the caller's trace; None when tracing is off) and the fleet's token."""
    return credentials.with_metadata(tracing.outgoing_metadata() if tracing.ACTIVE else None)


class FleetClient:
    """Blocking client of one shard or router address; a context manager that closes its channel.
    `credentials`: TLS (a CA, a client certificate for mutual TLS) and the fleet's token, e.g.
    `Credentials.from_files(ca="ca.pem", token_file="token")` or `Credentials.from_env()`."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        max_message_bytes: int | None = None,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        options = channel_options() if max_message_bytes is None else channel_options(max_message_bytes)
        self.address = address
        self.timeout = timeout
        self.credentials = credentials
        self._metadata = credentials.metadata or None
        self._channel = credentials.channel(address, options)
        self._calls = {name: _method(self._channel, name) for name in _READERS if name != "StreamSteps"}
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._sent: collections.deque[tuple[Callable[[bytes], Any], grpc.Future]] = collections.deque()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_channel()

    def close_channel(self) -> None:
        self._channel.close()

    def _call(self, name: str, request: Any, view: SharedView | None = None) -> Any:
        read = _reader(name, request, view)
        try:
            if tracing.ACTIVE:  # a CLIENT span, its context sent along in the metadata
                with tracing.client_span(f"/{SERVICE.full_name}/{name}", self.address) as metadata:
                    metadata = self.credentials.with_metadata(metadata)
                    return read(self._calls[name](request, timeout=self.timeout, metadata=metadata))
            return read(self._calls[name](request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def create(
        self,
        n: int,
        config: GameConfig | None = None,
        *,
        seeds: object = None,
        autoreset: bool = False,
        placement_key: str = "",
        masks: bool = False,
        open_seats: bool = False,
        turn_deadline_ms: float = 0.0,
        seat_agents: Sequence[str] = (),
        push_transitions: bool = False,
        observations: bool = True,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> Created:
        """Start n games; their ids (uint64), effective config and first views.

        Self-play by default; with `open_seats`, clients join seats (`join`) and play them with
        `step_seats`, and a tick waits at most `turn_deadline_ms` after its first move (0: for
        every seat). `seat_agents` names a scripted agent per seat that the shard plays itself
        ("" leaves the seat to the caller); `push_transitions` has the shard send every step of
        these games to its ReplayService. `observations=False`: the reply carries ids and config
        only (`Created.observations` is None), small whatever n; read views with `states`.
        `maps` (one `engine.maps.GameMap` per game, or a MapBatch): the games start on these maps,
        as `GamePool.create(n, maps=...)` starts them; `seeds` then seed only the maps an
        autoreset draws next. A call carries ~5 bytes per tile per map: thousands of maps per
        call at most (the shard's request limit), more in several calls."""
        return self._call(
            "CreateBatchGames",
            _create_request(n, config, seeds, autoreset, placement_key, masks, open_seats, turn_deadline_ms,
                            seat_agents, push_transitions, observations, maps),
        )  # fmt: skip

    def step(
        self,
        ids: object,
        actions: object,
        *,
        masks: bool = False,
        delta: bool = False,
        observe: bool = True,
        view: SharedView | None = None,
    ) -> StepReply:
        """One tick with every seat's move: int [games, players] flat moves or [games, players, 5].
        With `view`, the shard writes the planes into that shared view (same host only)."""
        request = _step_request(ids, actions, masks, delta, observe, view)
        return self._call("SubmitBatchActions", request, view if observe else None)

    def send(
        self, ids: object, actions: object, *, masks: bool = False, delta: bool = False, observe: bool = True
    ) -> None:
        """Start a step (as `step`) and return at once; `recv` returns its reply. Several may be
        in flight, on distinct games (no shared view: the replies would share its rows)."""
        request = _step_request(ids, actions, masks, delta, observe, None)
        metadata = self.credentials.with_metadata(tracing.outgoing_metadata() if tracing.ACTIVE else None)
        future = self._calls["SubmitBatchActions"].future(request, timeout=self.timeout, metadata=metadata)
        self._sent.append((_reader("SubmitBatchActions", request, None), future))

    def recv(self) -> StepReply:
        """The reply of the oldest step `send` started and `recv` has not returned; raises its
        error (GameFleetError) if it was refused."""
        if not self._sent:
            raise RuntimeError("recv() with no step in flight: send() one first")
        read, future = self._sent.popleft()
        try:
            return read(future.result())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    @property
    def in_flight(self) -> int:
        """Steps sent and not yet received."""
        return len(self._sent)

    def join(self, game_id: int, seat: int = -1) -> tuple[int, int]:
        """Take a seat of an open-seat game (-1: any free one); returns (seat, seat token)."""
        reply = self._call("JoinGame", pb.JoinGameRequest(game_id=int(game_id), seat=seat))
        return reply.seat, reply.seat_token

    def step_seats(
        self,
        ids: object,
        actions: object,
        seats: object,
        tokens: object,
        *,
        masks: bool = False,
        observe: bool = True,
    ) -> StepReply:
        """One move per game for the seat named with its token; returns when every game has stepped."""
        return self._call(
            "SubmitBatchActions", _seat_step_request(ids, actions, seats, tokens, masks, observe)
        )

    def states(
        self, ids: object, *, masks: bool = False, delta: bool = False, view: SharedView | None = None
    ) -> Observations:
        return self._call("GetBatchStates", _states_request(ids, masks, delta, view), view)

    def reset(
        self,
        ids: object,
        seeds: object = None,
        *,
        masks: bool = False,
        view: SharedView | None = None,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> Observations:
        """New maps for these games (same ids); their first views. `maps` (one per id): the new
        episodes start on these maps (the games keep their map seeds unless `seeds` is given)."""
        return self._call("ResetBatchGames", _reset_request(ids, seeds, masks, view, maps), view)

    def close(self, ids: object) -> int:
        """End these games for good; returns how many closed."""
        return self._call("CloseBatchGames", _close_request(ids)).closed

    def topology(self) -> Topology:
        return _topology(self._call("GetTopology", pb.GetTopologyRequest()))

    def healthy(self, service: str = "") -> bool:
        """True when the server reports SERVING (the standard grpc.health.v1 check)."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects (raises Unavailable after `timeout` seconds)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(f"{self.address} not reachable within {timeout}s") from None

    def stream(self) -> StepStream:
        """A StreamSteps stream: one long-lived call, one reply per step, in order (lowest latency)."""
        method = _method(self._channel, "StreamSteps", streaming=True)
        return StepStream(functools.partial(method, metadata=_stream_metadata(self.credentials)))


class StepStream:
    """Blocking steps over one StreamSteps call; close it (or use `with`) to end the call."""

    _END = object()

    def __init__(self, method: Any) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._replies: Iterator[StepReply] = method(iter(self._requests.get, self._END))

    def __enter__(self) -> StepStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(
        self,
        ids: object,
        actions: object,
        *,
        masks: bool = False,
        delta: bool = False,
        observe: bool = True,
        view: SharedView | None = None,
    ) -> StepReply:
        request = _step_request(ids, actions, masks, delta, observe, view)
        read = _reader("StreamSteps", request, view if observe else None)
        self._requests.put(request)
        try:
            return read(next(self._replies))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def close(self) -> None:
        self._requests.put(self._END)
        self._replies.cancel()


class AsyncFleetClient:
    """The asyncio twin of FleetClient (grpc.aio); `async with` closes the channel."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        max_message_bytes: int | None = None,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        options = channel_options() if max_message_bytes is None else channel_options(max_message_bytes)
        self.address = address
        self.timeout = timeout
        self.credentials = credentials
        self._metadata = credentials.metadata or None
        self._channel = credentials.aio_channel(address, options)
        self._calls = {name: _method(self._channel, name) for name in _READERS if name != "StreamSteps"}
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncFleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_channel()

    async def close_channel(self) -> None:
        await self._channel.close()

    async def _call(self, name: str, request: Any, view: SharedView | None = None) -> Any:
        read = _reader(name, request, view)
        try:
            if tracing.ACTIVE:
                with tracing.client_span(f"/{SERVICE.full_name}/{name}", self.address) as metadata:
                    metadata = self.credentials.with_metadata(metadata)
                    return read(await self._calls[name](request, timeout=self.timeout, metadata=metadata))
            return read(await self._calls[name](request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def create(
        self,
        n: int,
        config: GameConfig | None = None,
        *,
        seeds: object = None,
        autoreset: bool = False,
        placement_key: str = "",
        masks: bool = False,
        open_seats: bool = False,
        turn_deadline_ms: float = 0.0,
        seat_agents: Sequence[str] = (),
        push_transitions: bool = False,
        observations: bool = True,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> Created:
        return await self._call(
            "CreateBatchGames",
            _create_request(n, config, seeds, autoreset, placement_key, masks, open_seats, turn_deadline_ms,
                            seat_agents, push_transitions, observations, maps),
        )  # fmt: skip

    async def step(
        self,
        ids: object,
        actions: object,
        *,
        masks: bool = False,
        delta: bool = False,
        observe: bool = True,
        view: SharedView | None = None,
    ) -> StepReply:
        request = _step_request(ids, actions, masks, delta, observe, view)
        return await self._call("SubmitBatchActions", request, view if observe else None)

    async def join(self, game_id: int, seat: int = -1) -> tuple[int, int]:
        reply = await self._call("JoinGame", pb.JoinGameRequest(game_id=int(game_id), seat=seat))
        return reply.seat, reply.seat_token

    async def step_seats(
        self,
        ids: object,
        actions: object,
        seats: object,
        tokens: object,
        *,
        masks: bool = False,
        observe: bool = True,
    ) -> StepReply:
        return await self._call(
            "SubmitBatchActions", _seat_step_request(ids, actions, seats, tokens, masks, observe)
        )

    async def states(
        self, ids: object, *, masks: bool = False, delta: bool = False, view: SharedView | None = None
    ) -> Observations:
        return await self._call("GetBatchStates", _states_request(ids, masks, delta, view), view)

    async def reset(
        self,
        ids: object,
        seeds: object = None,
        *,
        masks: bool = False,
        view: SharedView | None = None,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> Observations:
        return await self._call("ResetBatchGames", _reset_request(ids, seeds, masks, view, maps), view)

    async def close(self, ids: object) -> int:
        return (await self._call("CloseBatchGames", _close_request(ids))).closed

    async def topology(self) -> Topology:
        return _topology(await self._call("GetTopology", pb.GetTopologyRequest()))

    async def healthy(self, service: str = "") -> bool:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def stream(self) -> AsyncStepStream:
        return AsyncStepStream(
            _method(self._channel, "StreamSteps", streaming=True)(metadata=_stream_metadata(self.credentials))
        )


class AsyncStepStream:
    """Steps over one StreamSteps call (`async with` ends it)."""

    def __init__(self, call: aio.StreamStreamCall) -> None:
        self._call = call

    async def __aenter__(self) -> AsyncStepStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def step(
        self,
        ids: object,
        actions: object,
        *,
        masks: bool = False,
        delta: bool = False,
        observe: bool = True,
        view: SharedView | None = None,
    ) -> StepReply:
        request = _step_request(ids, actions, masks, delta, observe, view)
        read = _reader("StreamSteps", request, view if observe else None)
        try:
            await self._call.write(request)
            reply = await self._call.read()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if reply is aio.EOF:
            raise from_status(await self._call.code(), await self._call.details())
        return read(reply)

    async def close(self) -> None:
        await self._call.done_writing()
        self._call.cancel()
