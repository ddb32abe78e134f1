from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GameStepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEPPED: _ClassVar[GameStepStatus]
    WAITING: _ClassVar[GameStepStatus]
    FINISHED: _ClassVar[GameStepStatus]
STEPPED: GameStepStatus
WAITING: GameStepStatus
FINISHED: GameStepStatus

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class GameConfig(_message.Message):
    __slots__ = ("height", "width", "players", "mountain_density", "city_density", "min_general_distance", "max_ticks")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    MOUNTAIN_DENSITY_FIELD_NUMBER: _ClassVar[int]
    CITY_DENSITY_FIELD_NUMBER: _ClassVar[int]
    MIN_GENERAL_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_TICKS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    players: int
    mountain_density: float
    city_density: float
    min_general_distance: int
    max_ticks: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., players: _Optional[int] = ..., mountain_density: _Optional[float] = ..., city_density: _Optional[float] = ..., min_general_distance: _Optional[int] = ..., max_ticks: _Optional[int] = ...) -> None: ...

class Observations(_message.Message):
    __slots__ = ("codes", "armies", "land", "army", "tick", "masks", "delta_index", "delta_codes", "delta_armies")
    CODES_FIELD_NUMBER: _ClassVar[int]
    ARMIES_FIELD_NUMBER: _ClassVar[int]
    LAND_FIELD_NUMBER: _ClassVar[int]
    ARMY_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    DELTA_INDEX_FIELD_NUMBER: _ClassVar[int]
    DELTA_CODES_FIELD_NUMBER: _ClassVar[int]
    DELTA_ARMIES_FIELD_NUMBER: _ClassVar[int]
    codes: Tensor
    armies: Tensor
    land: Tensor
    army: Tensor
    tick: Tensor
    masks: Tensor
    delta_index: Tensor
    delta_codes: Tensor
    delta_armies: Tensor
    def __init__(self, codes: _Optional[_Union[Tensor, _Mapping]] = ..., armies: _Optional[_Union[Tensor, _Mapping]] = ..., land: _Optional[_Union[Tensor, _Mapping]] = ..., army: _Optional[_Union[Tensor, _Mapping]] = ..., tick: _Optional[_Union[Tensor, _Mapping]] = ..., masks: _Optional[_Union[Tensor, _Mapping]] = ..., delta_index: _Optional[_Union[Tensor, _Mapping]] = ..., delta_codes: _Optional[_Union[Tensor, _Mapping]] = ..., delta_armies: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class GameMaps(_message.Message):
    __slots__ = ("terrain", "armies", "generals")
    TERRAIN_FIELD_NUMBER: _ClassVar[int]
    ARMIES_FIELD_NUMBER: _ClassVar[int]
    GENERALS_FIELD_NUMBER: _ClassVar[int]
    terrain: Tensor
    armies: Tensor
    generals: Tensor
    def __init__(self, terrain: _Optional[_Union[Tensor, _Mapping]] = ..., armies: _Optional[_Union[Tensor, _Mapping]] = ..., generals: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class CreateBatchGamesRequest(_message.Message):
    __slots__ = ("num_games", "config", "seeds", "open_seats", "turn_deadline_ms", "autoreset", "placement_key", "include_masks", "seat_agents", "push_transitions", "skip_observations", "maps")
    NUM_GAMES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    OPEN_SEATS_FIELD_NUMBER: _ClassVar[int]
    TURN_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    AUTORESET_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    SEAT_AGENTS_FIELD_NUMBER: _ClassVar[int]
    PUSH_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    SKIP_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    num_games: int
    config: GameConfig
    seeds: Tensor
    open_seats: bool
    turn_deadline_ms: float
    autoreset: bool
    placement_key: str
    include_masks: bool
    seat_agents: _containers.RepeatedScalarFieldContainer[str]
    push_transitions: bool
    skip_observations: bool
    maps: GameMaps
    def __init__(self, num_games: _Optional[int] = ..., config: _Optional[_Union[GameConfig, _Mapping]] = ..., seeds: _Optional[_Union[Tensor, _Mapping]] = ..., open_seats: _Optional[bool] = ..., turn_deadline_ms: _Optional[float] = ..., autoreset: _Optional[bool] = ..., placement_key: _Optional[str] = ..., include_masks: _Optional[bool] = ..., seat_agents: _Optional[_Iterable[str]] = ..., push_transitions: _Optional[bool] = ..., skip_observations: _Optional[bool] = ..., maps: _Optional[_Union[GameMaps, _Mapping]] = ...) -> None: ...

class CreateBatchGamesResponse(_message.Message):
    __slots__ = ("game_ids", "config", "observations", "shard")
    GAME_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    game_ids: Tensor
    config: GameConfig
    observations: Observations
    shard: str
    def __init__(self, game_ids: _Optional[_Union[Tensor, _Mapping]] = ..., config: _Optional[_Union[GameConfig, _Mapping]] = ..., observations: _Optional[_Union[Observations, _Mapping]] = ..., shard: _Optional[str] = ...) -> None: ...

class GetBatchStatesRequest(_message.Message):
    __slots__ = ("game_ids", "include_masks", "delta", "shared_view")
    GAME_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SHARED_VIEW_FIELD_NUMBER: _ClassVar[int]
    game_ids: Tensor
    include_masks: bool
    delta: bool
    shared_view: str
    def __init__(self, game_ids: _Optional[_Union[Tensor, _Mapping]] = ..., include_masks: _Optional[bool] = ..., delta: _Optional[bool] = ..., shared_view: _Optional[str] = ...) -> None: ...

class SubmitBatchActionsRequest(_message.Message):
    __slots__ = ("game_ids", "actions", "seats", "seat_tokens", "include_masks", "delta", "skip_observations", "shared_view")
    GAME_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    SEAT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SKIP_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    SHARED_VIEW_FIELD_NUMBER: _ClassVar[int]
    game_ids: Tensor
    actions: Tensor
    seats: Tensor
    seat_tokens: Tensor
    include_masks: bool
    delta: bool
    skip_observations: bool
    shared_view: str
    def __init__(self, game_ids: _Optional[_Union[Tensor, _Mapping]] = ..., actions: _Optional[_Union[Tensor, _Mapping]] = ..., seats: _Optional[_Union[Tensor, _Mapping]] = ..., seat_tokens: _Optional[_Union[Tensor, _Mapping]] = ..., include_masks: _Optional[bool] = ..., delta: _Optional[bool] = ..., skip_observations: _Optional[bool] = ..., shared_view: _Optional[str] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("observations", "rewards", "terminated", "truncated", "status", "reset", "final_observations")
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    FINAL_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    observations: Observations
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    status: Tensor
    reset: Tensor
    final_observations: Observations
    def __init__(self, observations: _Optional[_Union[Observations, _Mapping]] = ..., rewards: _Optional[_Union[Tensor, _Mapping]] = ..., terminated: _Optional[_Union[Tensor, _Mapping]] = ..., truncated: _Optional[_Union[Tensor, _Mapping]] = ..., status: _Optional[_Union[Tensor, _Mapping]] = ..., reset: _Optional[_Union[Tensor, _Mapping]] = ..., final_observations: _Optional[_Union[Observations, _Mapping]] = ...) -> None: ...

class ResetBatchGamesRequest(_message.Message):
    __slots__ = ("game_ids", "seeds", "include_masks", "shared_view", "maps")
    GAME_IDS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    SHARED_VIEW_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    game_ids: Tensor
    seeds: Tensor
    include_masks: bool
    shared_view: str
    maps: GameMaps
    def __init__(self, game_ids: _Optional[_Union[Tensor, _Mapping]] = ..., seeds: _Optional[_Union[Tensor, _Mapping]] = ..., include_masks: _Optional[bool] = ..., shared_view: _Optional[str] = ..., maps: _Optional[_Union[GameMaps, _Mapping]] = ...) -> None: ...

class CloseBatchGamesRequest(_message.Message):
    __slots__ = ("game_ids",)
    GAME_IDS_FIELD_NUMBER: _ClassVar[int]
    game_ids: Tensor
    def __init__(self, game_ids: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class CloseBatchGamesResponse(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: int
    def __init__(self, closed: _Optional[int] = ...) -> None: ...

class JoinGameRequest(_message.Message):
    __slots__ = ("game_id", "seat")
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_FIELD_NUMBER: _ClassVar[int]
    game_id: int
    seat: int
    def __init__(self, game_id: _Optional[int] = ..., seat: _Optional[int] = ...) -> None: ...

class JoinGameResponse(_message.Message):
    __slots__ = ("seat", "seat_token", "config")
    SEAT_FIELD_NUMBER: _ClassVar[int]
    SEAT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    seat: int
    seat_token: int
    config: GameConfig
    def __init__(self, seat: _Optional[int] = ..., seat_token: _Optional[int] = ..., config: _Optional[_Union[GameConfig, _Mapping]] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("shards", "virtual_nodes")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODES_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedScalarFieldContainer[str]
    virtual_nodes: int
    def __init__(self, shards: _Optional[_Iterable[str]] = ..., virtual_nodes: _Optional[int] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
