"""Game configuration and the engine's numeric constants.

A `GameConfig` is shared by every game of a batch (and of a pool): all games of one batch
have the same board size and player count, which is what lets the kernels work on plain
2-D arrays without per-game shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Terrain codes stored in `GameBatch.terrain`.
PLAIN = 0
MOUNTAIN = 1
CITY = 2
GENERAL = 3

# Observation tile kinds (high nibble of an observation code byte).
FOG = 0
FOG_OBSTACLE = 1  # a mountain or city seen through fog: the player only knows "something blocks"
KIND_OFFSET = 2  # visible kind = terrain + KIND_OFFSET (PLAIN=2, MOUNTAIN=3, CITY=4, GENERAL=5)

# Game status codes stored in `GameBatch.status`.
RUNNING = 0
TERMINATED = 1  # one side is left
TRUNCATED = 2  # the tick limit was reached

# Directions, as in generals-bots: UP, DOWN, LEFT, RIGHT.
DIRECTION_ROWS = (-1, 1, 0, 0)
DIRECTION_COLS = (0, 0, -1, 1)

PASS = -1  # the flat action that does nothing

MAX_SIDE = 64  # a board row must fit in one 64-bit word (fog is computed on bit rows)
MAX_PLAYERS = 8
CITY_ARMY_MIN = 40
CITY_ARMY_MAX = 50  # inclusive
LAND_GROWTH_INTERVAL = 50  # +1 on every owned tile every 50 ticks
STRUCTURE_GROWTH_INTERVAL = 2  # +1 on owned generals and cities every 2 ticks
MAX_TICK_LIMIT = 1_000_000


@dataclass(frozen=True)
class GameConfig:
    """The rules' parameters for a batch of games.

    `min_general_distance` is a Manhattan distance; None picks (height + width) // (players + 2),
    at least 3, which is 10 on a 20x20 two-player board (generals-bots' uniform generator uses
    max(height, width) // 2, the same number there).
    `max_ticks` truncates a game (a tick is a half-turn, as in generals-bots).
    """

    height: int = 20
    width: int = 20
    players: int = 2
    mountain_density: float = 0.20
    city_density: float = 0.05
    min_general_distance: int | None = None
    max_ticks: int = 10_000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        for name in ("height", "width", "players", "max_ticks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GameConfig.{name} must be an int, got {type(value).__name__}")
        if not 4 <= self.height <= MAX_SIDE:
            raise ValueError(f"GameConfig.height must be in [4, {MAX_SIDE}], got {self.height}")
        if not 4 <= self.width <= MAX_SIDE:
            raise ValueError(f"GameConfig.width must be in [4, {MAX_SIDE}], got {self.width}")
        if not 2 <= self.players <= MAX_PLAYERS:
            raise ValueError(f"GameConfig.players must be in [2, {MAX_PLAYERS}], got {self.players}")
        if not 1 <= self.max_ticks <= MAX_TICK_LIMIT:
            raise ValueError(f"GameConfig.max_ticks must be in [1, {MAX_TICK_LIMIT}], got {self.max_ticks}")
        for name in ("mountain_density", "city_density"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 0.5:
                raise ValueError(f"GameConfig.{name} must be a number in [0, 0.5], got {value!r}")
        if self.mountains + self.cities + self.players > self.tiles // 2:
            raise ValueError(
                "GameConfig: mountains + cities + generals must cover at most half of the board "
                f"({self.mountains} + {self.cities} + {self.players} > {self.tiles // 2})"
            )
        d, most = self.min_general_distance, self.height + self.width
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= most):
            raise ValueError(f"GameConfig.min_general_distance must be an int in [1, {most}], got {d!r}")

    @property
    def tiles(self) -> int:
        return self.height * self.width

    @property
    def mountains(self) -> int:
        """Mountains placed on every map (an exact count, so every map is alike in difficulty)."""
        return round(self.mountain_density * self.tiles)

    @property
    def cities(self) -> int:
        return round(self.city_density * self.tiles)

    @property
    def structures(self) -> int:
        """Tiles that grow every 2 ticks when owned: cities plus generals."""
        return self.cities + self.players

    @property
    def general_distance(self) -> int:
        if self.min_general_distance is not None:
            return self.min_general_distance
        return max(3, (self.height + self.width) // (self.players + 2))

    @property
    def num_actions(self) -> int:
        """Size of the flat action space per player: tiles x 4 directions x split flag."""
        return self.tiles * 8

    def to_dict(self) -> dict:
        return asdict(self)
