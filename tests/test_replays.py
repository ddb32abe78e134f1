"""generals.io replays: export finished games, import them, replay through the engine to the same end."""

import json

import numpy as np
import pytest

from gameserver.agents import expander_actions, random_actions
from gameserver.engine import GameBatch, GameConfig, generate, observe, step
from gameserver.engine.config import CITY, GENERAL, MOUNTAIN, RUNNING
from gameserver.rl.replay_files import dumps, export_replay, import_replay, replay_game


def play_to_the_end(config: GameConfig, seed: int) -> tuple[GameBatch, GameBatch, np.ndarray]:
    """A whole game, expander against random plus some random flat actions (off-board and
    illegal ones too): its first state, final state and every tick's actions."""
    first = GameBatch.allocate(config, 1)
    generate(first, np.zeros(1, np.int64), np.array([seed], np.uint64))
    game = GameBatch.allocate(config, 1)
    for name, array in first.arrays().items():
        getattr(game, name)[...] = array
    slots, rng, played = np.zeros(1, np.int64), np.random.default_rng(seed), []
    while game.status[0] == RUNNING:
        obs = observe(game, slots)
        h, w = config.height, config.width
        actions = expander_actions(obs.codes, obs.armies, obs.tick, h, w, seed)
        actions[:, 1] = random_actions(obs.codes, obs.armies, obs.tick, h, w, seed + 1)[:, 1]
        noise = rng.random(actions.shape) < 0.1
        actions[noise] = rng.integers(-1, config.num_actions, int(noise.sum()))
        step(game, slots, actions)
        played.append(actions[0].copy())
    return first, game, np.array(played, np.int32)


@pytest.mark.parametrize(
    "config, seed",
    [(GameConfig(8, 8, max_ticks=300), 1), (GameConfig(10, 12, players=3, max_ticks=120), 5),
     (GameConfig(6, 6, max_ticks=40, mountain_density=0.0, city_density=0.1), 9)],
)  # fmt: skip
def test_export_import_replay_reaches_the_identical_final_state(config, seed):
    first, final, actions = play_to_the_end(config, seed)
    text = dumps(export_replay(first, 0, actions, game_id="g1"))
    replay = import_replay(text)
    assert replay.config == config
    for name, array in first.arrays().items():
        np.testing.assert_array_equal(getattr(replay.initial, name), array, err_msg=name)
    replayed = replay_game(replay)
    for name, array in final.arrays().items():
        np.testing.assert_array_equal(getattr(replayed, name), array, err_msg=name)


def test_export_follows_the_generals_io_layout():
    config = GameConfig(8, 8, max_ticks=300)
    first, _, actions = play_to_the_end(config, 2)
    replay = json.loads(dumps(export_replay(first, 0, actions, usernames=["a", "b"])))
    assert (replay["mapWidth"], replay["mapHeight"], replay["usernames"]) == (8, 8, ["a", "b"])
    terrain = first.terrain[0]
    assert sorted(replay["mountains"]) == np.flatnonzero(terrain == MOUNTAIN).tolist()
    assert sorted(replay["cities"]) == np.flatnonzero(terrain == CITY).tolist()
    assert replay["generals"] == first.generals[0].tolist()
    assert all(np.isin(replay["generals"], np.flatnonzero(terrain == GENERAL)))
    assert replay["cityArmies"] == first.armies[0, replay["cities"]].tolist()
    assert all(40 <= army <= 50 for army in replay["cityArmies"])
    moves = np.array(replay["moves"])
    assert moves.shape[1] == 5 and moves.shape[0] > 0
    player, start, end, is50, turn = moves.T
    assert set(player.tolist()) <= {0, 1} and set(is50.tolist()) <= {0, 1}
    assert np.all(np.isin(np.abs(end - start), [1, 8]))  # a neighbour: same row, or one row on
    assert np.all(np.diff(turn) >= 0) and turn.max() < len(actions)
    flat = actions[turn, player]
    assert np.array_equal(flat >> 3, start) and np.array_equal(flat & 1, is50)
    assert replay["gamefleet"]["ticks"] == len(actions)


def test_a_replay_without_the_gamefleet_entry_imports_with_a_derived_config():
    """Another tool's replay: 4x4, one mountain, one city, two moves."""
    moves = [[0, 0, 1, 0, 24], [1, 15, 11, 1, 24]]
    imported = import_replay(
        small(cities=[5], cityArmies=[44], mountains=[10], usernames=["x", "y"], moves=moves)
    )
    assert (imported.config.height, imported.config.width, imported.config.players) == (4, 4, 2)
    assert (imported.config.mountains, imported.config.cities) == (1, 1)
    assert imported.actions.shape == (25, 2)
    assert imported.actions[24].tolist() == [(0 * 4 + 3) * 2, (15 * 4 + 0) * 2 + 1]
    assert (imported.actions[:24] == -1).all()
    final = replay_game(imported)
    assert final.tick[0] == 25 and final.owner[0, 1] == 1  # the general's army (13 by then) moved right
    assert final.armies[0, 5] == 44 and final.terrain[0, 10] == MOUNTAIN


def small(**changes):
    """A valid 4x4 replay (generals in opposite corners, nothing else) with some entries changed."""
    replay = {"mapWidth": 4, "mapHeight": 4, "generals": [0, 15], "cities": [], "cityArmies": [],
              "mountains": [], "moves": []}  # fmt: skip
    return {**replay, **changes}


BAD = {
    "not JSON": "{",
    "missing map size": {k: v for k, v in small().items() if k != "mapWidth"},
    "tile off the map": small(generals=[0, 16]),
    "cities without armies": small(cities=[5]),
    "negative city army": small(cities=[5], cityArmies=[-1]),
    "shared tile": small(cities=[0], cityArmies=[40]),
    "move to a far tile": small(moves=[[0, 0, 2, 0, 1]]),
    "move across the row end": small(moves=[[0, 3, 4, 0, 1]]),
    "two moves in one turn": small(moves=[[0, 0, 1, 0, 1], [0, 0, 4, 0, 1]]),
    "unknown player": small(moves=[[2, 0, 1, 0, 1]]),
    "float moves": small(moves=[[0, 0, 1.5, 0, 1]]),
    "ragged moves": small(moves=[[0, 0, 1, 0]]),
    "config that does not fit": small(gamefleet={"config": {"height": 5, "width": 4}}),
    "config with unknown fields": small(gamefleet={"config": {"height": 4, "width": 4, "fog": 1}}),
    "moves past the tick count": small(moves=[[0, 0, 1, 0, 5]], gamefleet={"ticks": 3}),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_replays_are_refused_naming_the_problem(case):
    with pytest.raises(ValueError):
        import_replay(BAD[case])


def test_export_refuses_a_game_that_already_started():
    config = GameConfig(8, 8)
    _, final, actions = play_to_the_end(GameConfig(8, 8, max_ticks=20), 3)
    with pytest.raises(ValueError, match="first state"):
        export_replay(final, 0, actions)
    with pytest.raises(ValueError, match="ticks"):
        export_replay(GameBatch.allocate(config, 1), 0, np.zeros((3, 3), np.int32))
