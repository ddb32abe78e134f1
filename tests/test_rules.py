"""The rules of generals.io, one test per rule, on hand-made boards (see boards.py for the notation).

Two-player semantics are those of generals-bots 2.5.0 `generals/core/game.py` (Game.step,
compute_agent_order, _global_game_update, agent_observation); the differential test replays
random games through both engines, these tests pin each rule down on a board small enough to
check by hand. FFA (3+ players) follows the engine's documented generalisation.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from boards import DOWN, LEFT, PASS, RIGHT, UP, board, canonical, move, render
from generals.core.action import compute_valid_move_mask
from generals.core.grid import Grid
from generals.core.observation import Observation as PeerObservation
from peer_adapter import grid_string

from gameserver.engine import GameBatch, GameConfig, Observation, action_masks, generate, observe, step
from gameserver.engine import config as C
from gameserver.engine.actions import flat_action, from_generals_bots


def play(batch: GameBatch, *moves, slot: int = 0):
    """Step game `slot` once; moves[p] is (row, col, direction[, split]) or None for a pass."""
    cfg = batch.config
    moves = moves + (None,) * (cfg.players - len(moves))
    acts = np.array([[PASS if m is None else move(*m, width=cfg.width) for m in moves]], np.int64)
    return step(batch, np.array([slot]), acts)


def assert_board(batch: GameBatch, expected: str, slot: int = 0) -> None:
    got, want = render(batch, slot), canonical(expected)
    assert got == want, f"board after the step:\n{got}\n\nexpected:\n{want}"


# --------------------------------------------------------------------------------------------
# One mover: how a move changes the board. (name, board before, p0's move, p1's move, board after)
# --------------------------------------------------------------------------------------------

SINGLE_MOVES = [
    (
        "move_leaves_1_behind",
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT),
        None,
        "A1 a4 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_by_second_seat_leaves_1_behind",
        "A . . . .\n. . # . .\n. . . . .\n. . . . B7",
        None,
        (3, 4, UP),
        "A . . . .\n. . # . .\n. . . . b6\n. . . . B1",
    ),
    (
        "move_into_own_tile_adds_armies",
        "A5 a3 . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT),
        None,
        "A1 a7 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_moves_half_rounded_down_odd",
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT, 1),
        None,
        "A3 a2 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_moves_half_even",
        "A8 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, DOWN, 1),
        None,
        "A4 . . . .\na4 . # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_of_army_3_moves_1",
        "A3 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT, 1),
        None,
        "A2 a1 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_of_army_2_moves_1",
        "A2 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT, 1),
        None,
        "A1 a1 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_of_army_1_is_a_noop",
        "A1 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT, 1),
        None,
        "A1 . . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_of_army_1_is_a_noop",
        "A1 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT),
        None,
        "A1 . . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_off_the_board_up_is_a_noop",
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, UP),
        None,
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_off_the_board_left_is_a_noop",
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, LEFT),
        None,
        "A5 . . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_off_the_board_right_is_a_noop",
        "A . . . a9\n. . # . .\n. . . . .\n. . . . B",
        (0, 4, RIGHT),
        None,
        "A . . . a9\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_off_the_board_down_is_a_noop",
        "A . . . .\n. . # . .\n. . . . .\na9 . . . B",
        (3, 0, DOWN),
        None,
        "A . . . .\n. . # . .\n. . . . .\na9 . . . B",
    ),
    (
        "move_from_a_neutral_tile_is_a_noop",
        "A . . . .\n. .5 # . .\n. . . . .\n. . . . B",
        (1, 1, DOWN),
        None,
        "A . . . .\n. .5 # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_from_an_opponent_tile_is_a_noop",
        "A . . . .\n. b9 # . .\n. . . . .\n. . . . B",
        (1, 1, DOWN),
        None,
        "A . . . .\n. b9 # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_from_the_opponent_general_is_a_noop",
        "A . . . .\n. . # . .\n. . . . .\n. . . . B9",
        (3, 4, UP),
        None,
        "A . . . .\n. . # . .\n. . . . .\n. . . . B9",
    ),
    (
        "move_from_a_neutral_city_is_a_noop",
        "A . . . .\n. *45 # . .\n. . . . .\n. . . . B",
        (1, 1, DOWN),
        None,
        "A . . . .\n. *45 # . .\n. . . . .\n. . . . B",
    ),
    (
        "move_into_a_mountain_is_a_noop",
        "A . . . .\n. a5 # . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a5 # . .\n. . . . .\n. . . . B",
    ),
    (
        "split_into_a_mountain_is_a_noop",
        "A . . . .\n. a5 # . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT, 1),
        None,
        "A . . . .\n. a5 # . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_a_smaller_army_captures_with_the_difference",
        "A . . . .\n. a6 b3 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 a2 . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_an_equal_army_is_a_tie_the_defender_keeps_the_tile_with_0",
        "A . . . .\n. a4 b3 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 b0 . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_a_larger_army_leaves_the_defender_the_difference",
        "A . . . .\n. a3 b5 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 b3 . .\n. . . . .\n. . . . B",
    ),
    (
        "split_attack_captures_with_half",
        "A . . . .\n. a9 b3 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT, 1),
        None,
        "A . . . .\n. a5 a1 . .\n. . . . .\n. . . . B",
    ),
    (
        "second_seat_attack_on_a_smaller_army_captures",
        "A . . . .\n. a2 b8 . .\n. . . . .\n. . . . B",
        None,
        (1, 2, LEFT),
        "A . . . .\n. b5 b1 . .\n. . . . .\n. . . . B",
    ),
    (
        "capture_of_a_neutral_plain_tile",
        "A2 . . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT),
        None,
        "A1 a1 . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_a_neutral_tile_with_army_tie_leaves_it_neutral",
        "A4 .3 . . .\n. . # . .\n. . . . .\n. . . . B",
        (0, 0, RIGHT),
        None,
        "A1 . . . .\n. . # . .\n. . . . .\n. . . . B",
    ),
    (
        "capture_of_a_neutral_city",
        "A . . . .\n. a50 *45 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 *a4 . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_a_neutral_city_with_equal_army_leaves_it_neutral_with_0",
        "A . . . .\n. a46 *45 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 *0 . .\n. . . . .\n. . . . B",
    ),
    (
        "attack_on_a_neutral_city_with_less_army_wears_it_down",
        "A . . . .\n. a10 *45 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 *36 . .\n. . . . .\n. . . . B",
    ),
    (
        "capture_of_an_opponent_city",
        "A . . . .\n. a9 *b3 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 *a5 . .\n. . . . .\n. . . . B",
    ),
    (
        "move_into_own_city_adds_armies",
        "A . . . .\n. a10 *a5 . .\n. . . . .\n. . . . B",
        (1, 1, RIGHT),
        None,
        "A . . . .\n. a1 *a14 . .\n. . . . .\n. . . . B",
    ),
    (
        "move_out_of_own_city_leaves_1",
        "A . . . .\n. . *a7 . .\n. . . . .\n. . . . B",
        (1, 2, DOWN),
        None,
        "A . . . .\n. . *a1 . .\n. . a6 . .\n. . . . B",
    ),
    (
        "attack_on_a_general_too_small_to_capture_it",
        "A . . . .\n. . # . .\n. . . . a5\n. . . . B9",
        (2, 4, DOWN),
        None,
        "A . . . .\n. . # . .\n. . . . a1\n. . . . B5",
    ),
    (
        "attack_on_a_general_with_equal_army_keeps_it_with_0",
        "A . . . .\n. . # . .\n. . . . a10\n. . . . B9",
        (2, 4, DOWN),
        None,
        "A . . . .\n. . # . .\n. . . . a1\n. . . . B0",
    ),
]


@pytest.mark.parametrize(
    ("before", "p0", "p1", "after"), [c[1:] for c in SINGLE_MOVES], ids=[c[0] for c in SINGLE_MOVES]
)
def test_single_move_rules(before, p0, p1, after):
    batch = board(before)
    result = play(batch, p0, p1)
    assert_board(batch, after)
    assert batch.tick[0] == 1 and batch.status[0] == C.RUNNING
    assert result.rewards.tolist() == [[0.0, 0.0]]
    assert not result.terminated[0] and not result.truncated[0]


# --------------------------------------------------------------------------------------------
# Two movers in one tick: move order (generals-bots compute_agent_order). Each board is chosen
# so that the other order would give a different result (noted in the case).
# --------------------------------------------------------------------------------------------

ORDER_CASES = [
    # p1 enters the tile p0 leaves: p1 first (7 into a10 -> a3, then p0 moves 2 down).
    # Seat order would give p0 9 down, then b6 on p0's old tile.
    (
        "mover_into_the_tile_the_other_leaves_goes_first",
        ". . . . .\n. a10 b8 . .\n. . . . .\nA . . . B",
        (1, 1, DOWN),
        (1, 2, LEFT),
        ". . . . .\n. a1 b1 . .\n. a2 . . .\nA . . . B",
        None,
    ),
    # Both enter the other's source: the first in seat order (p0) goes first.
    # p0: 9 into b20 -> b11; p1 splits 11 -> 5 into a1 -> b4. p1 first would tie at a0, b10.
    (
        "both_entering_each_others_source_go_in_seat_order",
        ". . . . .\n. a10 b20 . .\n. . . . .\nA . . . B",
        (1, 1, RIGHT),
        (1, 2, LEFT, 1),
        ". . . . .\n. b4 b6 . .\n. . . . .\nA . . . B",
        None,
    ),
    # p1 moves into its own tile: first. b2 + 2 = b4, then p0's 4 ties it: b0.
    # Seat order would give a2 then a tie at a0.
    (
        "mover_into_own_tile_goes_first",
        ". . . . .\n. a5 b2 b3 .\n. . . . .\nA . . . B",
        (1, 1, RIGHT),
        (1, 3, LEFT),
        ". . . . .\n. a1 b0 b1 .\n. . . . .\nA . . . B",
        None,
    ),
    # Both capture a general; larger moving army first. Army counts as source army - 1 even
    # for a split: p0 (10 -> moves 5, rank 9) goes before p1 (8 -> moves 7, rank 7) and wins.
    (
        "larger_army_goes_first_counting_source_army_minus_1_even_when_splitting",
        "A6 b8 . . .\n. . . . .\n. . . . a10\n. . . . B4",
        (2, 4, DOWN, 1),
        (0, 1, LEFT),
        "A6 a8 . . .\n. . . . .\n. . . . a5\n. . . . Ba1",
        0,
    ),
    (
        "larger_army_goes_first_even_from_the_second_seat",
        "A6 b12 . . .\n. . . . .\n. . . . a8\n. . . . B4",
        (2, 4, DOWN),
        (0, 1, LEFT),
        "Ab5 b1 . . .\n. . . . .\n. . . . b8\n. . . . B4",
        1,
    ),
    (
        "equal_armies_go_in_seat_order",
        "A4 b8 . . .\n. . . . .\n. . . . a8\n. . . . B4",
        (2, 4, DOWN),
        (0, 1, LEFT),
        "A4 a8 . . .\n. . . . .\n. . . . a1\n. . . . Ba3",
        0,
    ),
    # p1 attacks the general p0 is leaving: p1 first, 7 into A10 -> A3; p0 then moves 2 out.
    # Seat order would leave A1 and p1 would capture it.
    (
        "attack_on_a_general_that_is_moving_out_goes_first",
        "A10 b8 . . .\n. . . . .\n. . . . .\n. . . . B",
        (0, 0, DOWN),
        (0, 1, LEFT),
        "A1 b1 . . .\na2 . . . .\n. . . . .\n. . . . B",
        None,
    ),
    # Two moves into the same neutral tile, equal rank: seat order; p0 takes it (4), p1's 4 ties.
    (
        "two_moves_into_one_neutral_tile_equal_armies_seat_order",
        ". . . . .\na5 . b5 . .\n. . . . .\nA . . . B",
        (1, 0, RIGHT),
        (1, 2, LEFT),
        ". . . . .\na1 a0 b1 . .\n. . . . .\nA . . . B",
        None,
    ),
    # A pass makes the other move alone.
    (
        "a_pass_lets_the_other_move_alone",
        ". . . . .\na5 b3 . . .\n. . . . .\nA . . . B",
        (1, 0, RIGHT),
        None,
        ". . . . .\na1 a1 . . .\n. . . . .\nA . . . B",
        None,
    ),
]


@pytest.mark.parametrize(
    ("before", "p0", "p1", "after", "winner"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES]
)
def test_move_order_priority(before, p0, p1, after, winner):
    batch = board(before)
    result = play(batch, p0, p1)
    assert_board(batch, after)
    if winner is None:
        assert batch.status[0] == C.RUNNING and batch.winner[0] == -1
        assert result.rewards.tolist() == [[0.0, 0.0]]
    else:
        assert batch.status[0] == C.TERMINATED and batch.winner[0] == winner
        expected = [-1.0, -1.0]
        expected[winner] = 1.0
        assert result.rewards.tolist() == [expected]


# --------------------------------------------------------------------------------------------
# General capture ends the game
# --------------------------------------------------------------------------------------------

CAPTURE_BEFORE = """
A     a3    .     .     .
.     b4    *b5   #     .
b2    .     .     a10   .
.     .     b2    B3    *
"""
# Tick 1 -> 2 would grow generals and owned cities, but the tick that ends the game skips growth
# (generals-bots: the global update runs only when the game is not done).
CAPTURE_AFTER = """
A     a3    .     .     .
.     a4    *a5   #     .
a2    .     .     a1    .
.     .     a2    Ba6   *
"""


def test_capture_of_the_general_ends_the_game_and_hands_all_land_to_the_winner():
    batch = board(CAPTURE_BEFORE, tick=1)
    result = play(batch, (2, 3, DOWN), (1, 1, UP))  # p0 first (larger army); p1's move is skipped
    assert_board(batch, CAPTURE_AFTER)
    assert result.rewards.tolist() == [[1.0, -1.0]]
    assert result.terminated.tolist() == [True] and result.truncated.tolist() == [False]
    assert (batch.status[0], batch.winner[0], batch.tick[0]) == (C.TERMINATED, 0, 2)
    assert batch.alive[0].tolist() == [True, False]


def test_actions_after_the_end_are_ignored_and_the_game_stays_frozen():
    batch = board(CAPTURE_BEFORE, tick=1)
    play(batch, (2, 3, DOWN), None)
    frozen = {k: v.copy() for k, v in batch.arrays().items()}
    for _ in range(3):
        result = play(batch, (1, 1, UP), (1, 1, DOWN))  # p0 owns (1,1) now: a legal move if running
        assert result.rewards.tolist() == [[0.0, 0.0]]
        assert result.terminated.tolist() == [True] and result.truncated.tolist() == [False]
    for name, array in batch.arrays().items():
        np.testing.assert_array_equal(array, frozen[name], err_msg=name)


def test_second_seat_captures_the_first_seats_general():
    batch = board("A2 b9 . .\n. a3 . .\n. . . .\n. . . B")
    result = play(batch, (1, 1, DOWN), (0, 1, LEFT))  # p1 larger: first; takes A with 8 - 2 = 6
    assert_board(batch, "Ab6 b1 . .\n. b3 . .\n. . . .\n. . . B")
    assert result.rewards.tolist() == [[-1.0, 1.0]]
    assert (batch.status[0], batch.winner[0]) == (C.TERMINATED, 1)


# --------------------------------------------------------------------------------------------
# Growth
# --------------------------------------------------------------------------------------------

GROWTH_BOARD = """
A     a3    *a5   .4    .
*     .     #     .     .
.     *b7   b2    .     B
"""


def test_owned_generals_and_cities_grow_by_1_every_2_ticks_neutral_cities_do_not():
    batch = board(GROWTH_BOARD + ". . . . .")
    play(batch)
    assert_board(batch, GROWTH_BOARD + ". . . . .")  # tick 1: nothing
    play(batch)
    assert_board(batch, "A2 a3 *a6 .4 .\n* . # . .\n. *b8 b2 . B2\n. . . . .")  # tick 2
    play(batch)
    assert_board(batch, "A2 a3 *a6 .4 .\n* . # . .\n. *b8 b2 . B2\n. . . . .")  # tick 3
    play(batch)
    assert_board(batch, "A3 a3 *a7 .4 .\n* . # . .\n. *b9 b2 . B3\n. . . . .")  # tick 4
    assert batch.tick[0] == 4


@pytest.mark.parametrize("tick", [49, 99, 149])
def test_all_owned_land_grows_by_1_every_50_ticks(tick):
    batch = board(GROWTH_BOARD + ". . . . .", tick=tick)
    play(batch)  # -> a multiple of 50 (also even): land +1, generals and owned cities +2
    assert_board(batch, "A3 a4 *a7 .4 .\n* . # . .\n. *b9 b3 . B3\n. . . . .")
    play(batch)  # odd tick: nothing
    assert_board(batch, "A3 a4 *a7 .4 .\n* . # . .\n. *b9 b3 . B3\n. . . . .")


def test_growth_happens_after_the_moves_of_the_tick():
    batch = board("A3 . . .\n. . . .\n. . . .\n. . . B", tick=1)
    play(batch, (0, 0, RIGHT))  # moves 2 out of A3, then A1 grows to A2 at tick 2
    assert_board(batch, "A2 a2 . .\n. . . .\n. . . .\n. . . B2")


# --------------------------------------------------------------------------------------------
# Truncation
# --------------------------------------------------------------------------------------------


def test_game_is_truncated_at_max_ticks_and_then_frozen():
    batch = board("A5 . . .\n. . . .\n. . . .\n. . . B5", max_ticks=3)
    for tick in (1, 2):
        result = play(batch)
        assert not result.truncated[0] and batch.status[0] == C.RUNNING and batch.tick[0] == tick
    result = play(batch)
    assert result.truncated.tolist() == [True] and result.terminated.tolist() == [False]
    assert result.rewards.tolist() == [[0.0, 0.0]]
    assert (batch.status[0], batch.winner[0], batch.tick[0]) == (C.TRUNCATED, -1, 3)
    before = render(batch)
    result = play(batch, (0, 0, RIGHT), (3, 3, UP))
    assert render(batch) == before and batch.tick[0] == 3 and result.truncated[0]


def test_capture_on_the_last_tick_is_a_termination_not_a_truncation():
    batch = board("A . . .\n. . . .\n. . . a9\n. . . B", max_ticks=1)
    result = play(batch, (2, 3, DOWN))
    assert result.terminated.tolist() == [True] and result.truncated.tolist() == [False]
    assert (batch.status[0], batch.winner[0]) == (C.TERMINATED, 0)


# --------------------------------------------------------------------------------------------
# FFA: 3 to 8 players
# --------------------------------------------------------------------------------------------

FFA3 = """
A     .     .     .     .
.     .     .     .     .
.     c3    .     a9    C2
a9    .     .     c4    .
B     .     .     .     *c45
"""


def test_ffa_captured_players_land_goes_to_the_capturer_and_the_game_goes_on():
    batch = board(FFA3)
    # p0 (rank 8) goes before p2 (rank 3) and takes C; p2 is then out and its move is skipped.
    result = play(batch, (2, 3, RIGHT), None, (3, 3, LEFT))
    assert_board(
        batch,
        """
    A     .     .     .     .
    .     .     .     .     .
    .     a3    .     a1    *a6
    a9    .     .     a4    .
    B     .     .     .     *a45
    """,
    )  # the captured general is a city of p0 now
    assert result.rewards.tolist() == [[0.0, 0.0, -1.0]]
    assert result.terminated.tolist() == [False]
    assert (batch.status[0], batch.winner[0]) == (C.RUNNING, -1)
    assert batch.alive[0].tolist() == [True, True, False]

    result = play(batch, None, None, (3, 3, LEFT))  # tick 2: the eliminated seat's action does nothing
    assert result.rewards.tolist() == [[0.0, 0.0, 0.0]]
    assert_board(
        batch,
        """
    A2    .     .     .     .
    .     .     .     .     .
    .     a3    .     a1    *a7
    a9    .     .     a4    .
    B2    .     .     .     *a46
    """,
    )  # and the captured general grows as p0's city

    result = play(batch, (3, 0, DOWN))  # p0 takes B: one side left
    assert result.rewards.tolist() == [[1.0, -1.0, 0.0]]
    assert (batch.status[0], batch.winner[0]) == (C.TERMINATED, 0)
    assert batch.alive[0].tolist() == [True, False, False]
    assert set(np.unique(batch.owner[0]).tolist()) == {0, 1}


def test_ffa_a_capturer_hands_on_everything_it_captured():
    batch = board("A . . b5 B2\n. . . . .\nc9 . . . .\nC . . . a9")
    play(batch, (3, 4, UP))  # tick 1: a8 at (2,4)
    play(batch, (2, 4, UP))  # tick 2: a7 at (1,4); generals grow: A2 B3 C2
    result = play(batch, (1, 4, UP))  # tick 3: 6 into B3: p1 is out, its land is p0's
    assert result.rewards.tolist() == [[0.0, -1.0, 0.0]]
    assert batch.owner[0, 3] == 1 and batch.owner[0, 4] == 1
    play(batch, None, None, (2, 0, UP))  # tick 4: c8 at (1,0); A3
    result = play(batch, None, None, (1, 0, UP))  # tick 5: 7 into A3: p0 is out, p2 wins
    assert result.rewards.tolist() == [[-1.0, 0.0, 1.0]]
    assert (batch.status[0], batch.winner[0]) == (C.TERMINATED, 2)
    assert set(np.unique(batch.owner[0]).tolist()) == {0, 3}
    assert batch.owner[0, 3] == 3 and batch.owner[0, 4] == 3  # p1's old tile and general, via p0


def test_ffa_two_eliminations_in_one_tick_and_rewards_only_at_that_tick():
    batch = board("A2 b9 . . B2\n. . . . .\n. . . . a9\nD2 c9 . . C2")
    result = play(batch, (2, 4, UP))  # tick 1: a8 next to B
    assert result.rewards.tolist() == [[0, 0, 0, 0]]
    result = play(batch, (1, 4, UP), None, (3, 1, LEFT), None)  # tick 2: p0 takes B, p2 takes D
    assert result.rewards.tolist() == [[0.0, -1.0, 0.0, -1.0]]
    assert batch.alive[0].tolist() == [True, False, True, False]
    assert (batch.status[0], batch.winner[0]) == (C.RUNNING, -1)
    assert_board(batch, "A3 a9 . . *a6\n. . . . a1\n. . . . a1\n*c7 c1 . . C3")  # grown at tick 2
    result = play(batch)
    assert result.rewards.tolist() == [[0, 0, 0, 0]]


def test_ffa_move_order_mover_into_a_leaving_tile_first_then_seat_order():
    # p2 enters the tile p0 leaves, so p2 goes first (7 into a10 -> a3), then p0 (moves 2 down),
    # then p1, whose 2 tie p0's 2: a0. Seat order for all would give a9/a7 and c6 on (1,1);
    # p2, p1, p0 would leave b0.
    batch = board(". . . . .\n. a10 c8 . .\n. . . . .\n. b3 . . .\nA . B . C")
    play(batch, (1, 1, DOWN), (3, 1, UP), (1, 2, LEFT))
    assert_board(batch, ". . . . .\n. a1 c1 . .\n. a0 . . .\n. b1 . . .\nA . B . C")


FFA_RANK_CASES = [
    # p1 passes; p0 (rank 5) and p2 (rank 8) race for each other's general: p2 first, p0 is out.
    (
        "larger_army_first_among_movers",
        "A2 . . .\nc9 . . .\n. . . a6\nB . . C2",
        "*c6 . . .\nc1 . . .\n. . . c6\nB . . C2",
        [-1.0, 0.0, 0.0],
        [False, True, True],
    ),
    # equal ranks: seat order among the movers (a pass does not reset the order): p0 first.
    (
        "equal_armies_in_seat_order_among_movers",
        "A2 . . .\nc6 . . .\n. . . a6\nB . . C2",
        "A2 . . .\na6 . . .\n. . . a1\nB . . *a3",
        [0.0, 0.0, -1.0],
        [True, True, False],
    ),
]


@pytest.mark.parametrize(
    ("before", "after", "rewards", "alive"),
    [c[1:] for c in FFA_RANK_CASES],
    ids=[c[0] for c in FFA_RANK_CASES],
)
def test_ffa_move_order_by_army_with_a_passing_player(before, after, rewards, alive):
    batch = board(before)
    result = play(batch, (2, 3, DOWN), None, (1, 0, UP))
    assert_board(batch, after)
    assert result.rewards.tolist() == [rewards]
    assert batch.alive[0].tolist() == alive and batch.status[0] == C.RUNNING


def test_ffa_observation_codes_name_every_owner():
    batch = board("A3 b2 . .\nc4 d5 . .\n. . . .\nB . C D")
    obs = observe(batch, [0])
    assert [view_token(obs, p, 0) for p in range(4)] == ["A3"] * 4  # everyone borders A
    assert [view_token(obs, 0, t) for t in (1, 4, 5)] == ["b2", "c4", "d5"]
    assert view_token(obs, 0, 15) == "?"  # D, far from p0
    assert view_token(obs, 3, 15) == "D1"
    assert obs.land[0].tolist() == [1, 2, 2, 2] and obs.army[0].tolist() == [3, 3, 5, 6]


# --------------------------------------------------------------------------------------------
# Fog of war
# --------------------------------------------------------------------------------------------


def view_token(obs: Observation, player: int, tile: int, game: int = 0) -> str:
    """One tile of a player's view: '?' fog, '~' fog obstacle, else board notation (owner's letter)."""
    code, army = int(obs.codes[game, player, tile]), int(obs.armies[game, player, tile])
    kind, own = code >> 4, code & 15
    owner = chr(ord("a") + own - 1) if own else ""
    if kind in (C.FOG, C.FOG_OBSTACLE):
        token = "?" if kind == C.FOG else "~"
        return token if own == 0 and army == 0 else f"{token}LEAK({own},{army})"
    terrain = kind - C.KIND_OFFSET
    if terrain == C.MOUNTAIN:
        return "#" if own == 0 and army == 0 else f"#LEAK({own},{army})"
    if terrain == C.CITY:
        return f"*{owner}{army}"
    if terrain == C.GENERAL:
        return f"{owner.upper() or '?'}{army}"
    return f"{owner}{army}" if own else (f".{army}" if army else ".")


def view(obs: Observation, player: int, height: int, width: int) -> str:
    rows = [[view_token(obs, player, r * width + c) for c in range(width)] for r in range(height)]
    return "\n".join(" ".join(f"{tok:<5}" for tok in row).rstrip() for row in rows)


def canonical_view(text: str) -> str:
    rows = [line.split() for line in text.strip().splitlines()]
    return "\n".join(" ".join(f"{tok:<5}" for tok in row).rstrip() for row in rows)


FOG_BOARD = """
A     .     #     .     .     .
.     .     .     *     .     .
.     .     a     .     #     .
.     .     .     .     .     *
#     .     .     .     B7    b5
*     .     .     .     .     .
"""
FOG_VIEW_P0 = """
A1    .     ~     ?     ?     ?
.     .     .     *40   ?     ?
?     .     a1    .     ~     ?
?     .     .     .     ?     ~
~     ?     ?     ?     ?     ?
~     ?     ?     ?     ?     ?
"""
FOG_VIEW_P1 = """
?     ?     ~     ?     ?     ?
?     ?     ?     ~     ?     ?
?     ?     ?     ?     ~     ?
?     ?     ?     .     .     *40
~     ?     ?     .     B7    b5
~     ?     ?     .     .     .
"""


def test_fog_a_tile_is_visible_when_the_player_owns_a_tile_in_its_3x3_neighbourhood():
    batch = board(FOG_BOARD)
    obs = observe(batch, [0])
    assert view(obs, 0, 6, 6) == canonical_view(FOG_VIEW_P0)
    assert view(obs, 1, 6, 6) == canonical_view(FOG_VIEW_P1)
    # land and army totals are global (as in generals-bots), the same rows for every viewer
    assert obs.land[0].tolist() == [2, 2] and obs.army[0].tolist() == [2, 12] and obs.tick[0] == 0


def test_fog_mountains_and_cities_show_as_obstacles_generals_as_plain_fog():
    batch = board(FOG_BOARD)
    obs = observe(batch, [0])
    codes = obs.codes[0, 0]
    width = 6
    assert codes[0 * width + 2] == C.FOG_OBSTACLE << 4  # mountain in fog
    assert codes[5 * width + 0] == C.FOG_OBSTACLE << 4  # city in fog
    assert codes[4 * width + 4] == C.FOG << 4  # enemy general in fog: indistinguishable from plain
    assert codes[4 * width + 2] == C.FOG << 4  # plain in fog
    assert obs.armies[0, 0, 4 * width + 4] == 0 and obs.armies[0, 0, 4 * width + 5] == 0  # armies hidden


def test_fog_every_tile_on_random_boards_of_every_shape():
    rng = np.random.default_rng(7)
    for height, width, players in [
        (4, 4, 2),
        (5, 9, 3),
        (20, 20, 2),
        (13, 64, 4),
        (64, 7, 2),
        (64, 64, 8),
        (31, 33, 5),
    ]:
        cfg = GameConfig(
            height, width, players, mountain_density=0.0, city_density=0.0, min_general_distance=1
        )
        games = 70  # above the engine's serial/parallel threshold, so both paths are covered below
        batch = GameBatch.allocate(cfg, games)
        tiles = cfg.tiles
        batch.terrain[:] = rng.choice(
            [C.PLAIN, C.MOUNTAIN, C.CITY, C.GENERAL], (games, tiles), p=[0.6, 0.2, 0.1, 0.1]
        )
        sparse = rng.random((games, 1)) < 0.5  # half the games: few owned tiles, so fog is everywhere
        owned = rng.random((games, tiles)) < np.where(sparse, 0.03, 0.3)
        batch.owner[:] = np.where(
            owned & (batch.terrain != C.MOUNTAIN), rng.integers(1, players + 1, (games, tiles)), 0
        )
        batch.armies[:] = np.where(batch.terrain != C.MOUNTAIN, rng.integers(0, 80_000, (games, tiles)), 0)
        for slots in (np.arange(games), np.arange(3)):
            obs = observe(batch, slots)
            want_codes, want_armies = reference_views(batch, slots)
            assert np.array_equal(obs.codes, want_codes), (
                f"codes differ at {height}x{width}, {len(slots)} games"
            )
            assert np.array_equal(obs.armies, want_armies), f"armies differ at {height}x{width}"
            for p in range(players):
                mine = batch.owner[slots] == p + 1
                assert obs.land[:, p].tolist() == mine.sum(axis=1).tolist()
                assert obs.army[:, p].tolist() == (batch.armies[slots] * mine).sum(axis=1).tolist()


def reference_views(batch: GameBatch, slots: np.ndarray):
    """Brute-force observations: 3x3 dilation, obstacle/fog codes, saturated armies."""
    cfg = batch.config
    h, w = cfg.height, cfg.width
    codes = np.zeros((len(slots), cfg.players, cfg.tiles), np.uint8)
    armies = np.zeros((len(slots), cfg.players, cfg.tiles), np.uint16)
    for i, g in enumerate(slots):
        terrain = batch.terrain[g].astype(np.int64)
        seen_code = ((terrain + C.KIND_OFFSET) << 4) | batch.owner[g]
        fog_code = np.where((terrain == C.MOUNTAIN) | (terrain == C.CITY), C.FOG_OBSTACLE << 4, C.FOG << 4)
        for p in range(cfg.players):
            mine = np.pad((batch.owner[g] == p + 1).reshape(h, w), 1)
            visible = np.zeros((h, w), bool)
            for dr in range(3):
                for dc in range(3):
                    visible |= mine[dr : dr + h, dc : dc + w]
            visible = visible.reshape(-1)
            codes[i, p] = np.where(visible, seen_code, fog_code)
            armies[i, p] = np.where(visible, np.minimum(batch.armies[g], 65535), 0)
    return codes, armies


def test_observed_armies_saturate_at_65535_but_totals_are_exact():
    batch = board("A70000 a3 . .\n. . . .\n. . . .\n. . . B")
    obs = observe(batch, [0])
    assert obs.armies[0, 0, 0] == 65535 and obs.armies[0, 0, 1] == 3
    assert obs.army[0].tolist() == [70003, 1]
    assert batch.armies[0, 0] == 70000


def test_fused_step_observation_equals_a_separate_observe():
    batch = board(FOG_BOARD)
    out = Observation.allocate(batch.config, 1)
    acts = np.array([[move(2, 2, UP, width=6), move(4, 4, LEFT, width=6)]])
    step(batch, [0], acts, out=out)
    again = observe(batch, [0])
    for name in ("codes", "armies", "land", "army", "tick"):
        assert np.array_equal(getattr(out, name), getattr(again, name)), name
    assert out.tick[0] == 1


# --------------------------------------------------------------------------------------------
# Action masks
# --------------------------------------------------------------------------------------------


def test_action_masks_match_generals_bots_compute_valid_move_mask_on_random_states():
    rng = np.random.default_rng(11)
    for height, width, players in [(4, 4, 2), (20, 20, 2), (7, 19, 3), (16, 5, 4), (33, 64, 2)]:
        cfg = GameConfig(
            height, width, players, mountain_density=0.0, city_density=0.0, min_general_distance=1
        )
        games = 80
        batch = GameBatch.allocate(cfg, games)
        tiles = cfg.tiles
        batch.terrain[:] = rng.choice(
            [C.PLAIN, C.MOUNTAIN, C.CITY, C.GENERAL], (games, tiles), p=[0.6, 0.25, 0.1, 0.05]
        )
        owned = (rng.random((games, tiles)) < 0.4) & (batch.terrain != C.MOUNTAIN)
        batch.owner[:] = np.where(owned, rng.integers(1, players + 1, (games, tiles)), 0)
        batch.armies[:] = np.where(batch.terrain != C.MOUNTAIN, rng.integers(0, 4, (games, tiles)), 0)
        slots = rng.permutation(games)
        masks = action_masks(batch, slots)
        assert masks.shape == (games, players, (tiles * 4 + 7) // 8) and masks.dtype == np.uint8
        bits = np.unpackbits(masks, axis=2, bitorder="little")
        assert not bits[:, :, tiles * 4 :].any(), "padding bits must be 0"
        obs = observe(batch, slots)
        for i in range(games):
            for p in range(players):
                want = compute_valid_move_mask(peer_observation(obs, i, p, height, width)).reshape(-1)
                got = bits[i, p, : tiles * 4].astype(bool)
                if not np.array_equal(got, want):
                    bit = int(np.flatnonzero(got != want)[0])
                    pytest.fail(
                        f"{height}x{width} game slot {slots[i]} player {p}: tile "
                        f"{divmod(bit // 4, width)} dir {bit % 4}: ours {got[bit]}, generals-bots {want[bit]}"
                    )


def peer_observation(obs: Observation, i: int, p: int, height: int, width: int) -> PeerObservation:
    """generals-bots' Observation of what player p sees in game i of our observation."""
    kind = (obs.codes[i, p] >> 4).reshape(height, width)
    own = (obs.codes[i, p] & 15).reshape(height, width)
    visible = kind >= C.KIND_OFFSET
    return PeerObservation(
        armies=obs.armies[i, p].reshape(height, width).astype(int),
        generals=kind == C.KIND_OFFSET + C.GENERAL,
        cities=kind == C.KIND_OFFSET + C.CITY,
        mountains=kind == C.KIND_OFFSET + C.MOUNTAIN,
        neutral_cells=visible & (own == 0) & (kind != C.KIND_OFFSET + C.MOUNTAIN),
        owned_cells=own == p + 1,
        opponent_cells=visible & (own != 0) & (own != p + 1),
        fog_cells=kind == C.FOG,
        structures_in_fog=kind == C.FOG_OBSTACLE,
        owned_land_count=int(obs.land[i, p]),
        owned_army_count=int(obs.army[i, p]),
        opponent_land_count=0,
        opponent_army_count=0,
        timestep=int(obs.tick[i]),
    )


# --------------------------------------------------------------------------------------------
# Action encoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gb_action", "expected"),
    [
        ([1, 2, 3, 1, 0], PASS),  # pass flag
        ([1, -5, 99, 0, 1], PASS),  # pass flag with nonsense coordinates
        ([0, 2, 3, RIGHT, 0], ((2 * 6 + 3) * 4 + RIGHT) * 2),
        ([0, 2, 3, UP, 1], ((2 * 6 + 3) * 4 + UP) * 2 + 1),
        ([0, 0, 0, DOWN, 1], ((0 * 6 + 0) * 4 + DOWN) * 2 + 1),
        ([0, 4, 5, LEFT, 0], ((4 * 6 + 5) * 4 + LEFT) * 2),
        ([0, -1, 3, DOWN, 0], PASS),  # source off the board
        ([0, 5, 3, UP, 0], PASS),  # source off the board (height 5)
        ([0, 0, 3, UP, 0], PASS),  # destination off the board
        ([0, 2, 5, RIGHT, 0], PASS),  # destination off the board
    ],
)
def test_generals_bots_actions_convert_to_flat_indices(gb_action, expected):
    assert from_generals_bots(np.array([gb_action]), 5, 6).tolist() == [expected]
    if expected != PASS:
        _, r, c, d, s = gb_action
        assert flat_action(r, c, d, s, 6) == expected


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def random_flat_actions(rng, batch: GameBatch, slots: np.ndarray) -> np.ndarray:
    """Per game and player: a random legal move (70%), a random flat index, or a pass."""
    cfg = batch.config
    bits = np.unpackbits(action_masks(batch, slots), axis=2, bitorder="little")[:, :, : cfg.tiles * 4]
    keys = np.where(bits.astype(bool), rng.random(bits.shape), -1.0)
    legal = keys.argmax(axis=2) * 2 + rng.integers(0, 2, keys.shape[:2])
    legal = np.where(keys.max(axis=2) >= 0, legal, PASS)
    wild = rng.integers(-1, cfg.num_actions, keys.shape[:2])
    return np.where(rng.random(keys.shape[:2]) < 0.7, legal, wild)


def test_same_seed_and_actions_give_bit_identical_games_whatever_the_batching():
    cfg = GameConfig(12, 14, 2, max_ticks=200)
    n = 96
    seeds = np.arange(n, dtype=np.uint64) * 1_000_003 + 17
    # A: one batch of 96 (parallel kernels); B: scattered slots of a larger batch, stepped in
    # groups of 7 (serial kernels), in reverse order.
    a = GameBatch.allocate(cfg, n)
    a_slots = np.arange(n)
    b = GameBatch.allocate(cfg, 3 * n)
    b_slots = np.random.default_rng(3).choice(3 * n, n, replace=False)
    generate(a, a_slots, seeds)
    for k in range(n - 1, -1, -7):
        lo = max(0, k - 6)
        generate(b, b_slots[lo : k + 1], seeds[lo : k + 1])
    rng = np.random.default_rng(5)
    out_a = Observation.allocate(cfg, n)
    for _ in range(200):
        acts = random_flat_actions(rng, a, a_slots)
        res_a = step(a, a_slots, acts, out=out_a)
        rewards_b = np.zeros_like(res_a.rewards)
        for lo in range(0, n, 7):
            rewards_b[lo : lo + 7] = step(b, b_slots[lo : lo + 7], acts[lo : lo + 7]).rewards
        assert np.array_equal(res_a.rewards, rewards_b)
    out_b = observe(b, b_slots)
    for name in (
        "armies",
        "owner",
        "terrain",
        "generals",
        "structures",
        "alive",
        "tick",
        "winner",
        "status",
        "seed",
    ):
        assert np.array_equal(getattr(a, name)[a_slots], getattr(b, name)[b_slots]), name
    for name in ("codes", "armies", "land", "army", "tick"):
        assert np.array_equal(getattr(out_a, name), getattr(out_b, name)), name
    assert (a.status != C.RUNNING).all(), "every game should have ended or been truncated"


def test_replaying_a_game_from_its_seed_and_action_log_reproduces_it():
    cfg = GameConfig(20, 20, 2)
    batch = GameBatch.allocate(cfg, 8)
    slots = np.arange(8)
    generate(batch, slots, np.arange(8) + 1000)
    rng = np.random.default_rng(9)
    log = []
    for _ in range(150):
        acts = random_flat_actions(rng, batch, slots)
        log.append(acts)
        step(batch, slots, acts)
    replay = GameBatch.allocate(cfg, 8)
    generate(replay, slots, np.arange(8) + 1000)
    for acts in log:
        step(replay, slots, acts)
    for name, array in batch.arrays().items():
        assert np.array_equal(array, getattr(replay, name)), name


# --------------------------------------------------------------------------------------------
# Map generation
# --------------------------------------------------------------------------------------------

MAP_CONFIGS = [
    (GameConfig(), 400),
    (GameConfig(20, 20, 2, mountain_density=0.3, city_density=0.1), 200),
    (GameConfig(8, 8, 2), 200),
    (GameConfig(12, 30, 3), 150),
    (GameConfig(24, 24, 4, mountain_density=0.25, city_density=0.08), 150),
    (GameConfig(40, 64, 8), 40),
]


def connected_generals(terrain: np.ndarray, generals: np.ndarray, height: int, width: int) -> bool:
    """BFS from general 0 over tiles that are neither mountain nor city."""
    open_ = (terrain == C.PLAIN) | (terrain == C.GENERAL)
    seen = {int(generals[0])}
    queue = deque(seen)
    while queue:
        t = queue.popleft()
        r, c = divmod(t, width)
        for dr, dc in zip(C.DIRECTION_ROWS, C.DIRECTION_COLS, strict=True):
            nr, nc = r + dr, c + dc
            n = nr * width + nc
            if 0 <= nr < height and 0 <= nc < width and n not in seen and open_[n]:
                seen.add(n)
                queue.append(n)
    return all(int(g) in seen for g in generals)


@pytest.mark.parametrize(
    ("cfg", "n"), MAP_CONFIGS, ids=[f"{c.height}x{c.width}x{c.players}p" for c, _ in MAP_CONFIGS]
)
def test_generated_maps_have_the_promised_properties(cfg, n):
    batch = GameBatch.allocate(cfg, n + 5)
    slots = np.random.default_rng(1).choice(n + 5, n, replace=False)
    seeds = np.arange(n, dtype=np.uint64) * 7_919 + 3
    generate(batch, slots, seeds)
    city_armies = []
    for slot, seed in zip(slots, seeds, strict=True):
        terrain, owner, armies = batch.terrain[slot], batch.owner[slot], batch.armies[slot]
        generals = batch.generals[slot].astype(np.int64)
        where = f"seed {seed}"
        assert (terrain == C.MOUNTAIN).sum() == cfg.mountains, where
        assert (terrain == C.CITY).sum() == cfg.cities, where
        assert (terrain == C.GENERAL).sum() == cfg.players, where
        assert sorted(np.flatnonzero(terrain == C.GENERAL).tolist()) == sorted(generals.tolist()), where
        assert owner[generals].tolist() == list(range(1, cfg.players + 1)), where
        assert (armies[generals] == 1).all(), where
        others = np.ones(cfg.tiles, bool)
        others[generals] = False
        assert (owner[others] == 0).all(), where
        cities = terrain == C.CITY
        assert ((armies[cities] >= 40) & (armies[cities] <= 50)).all(), where
        assert (armies[~cities & others] == 0).all(), where
        city_armies.extend(armies[cities].tolist())
        structures = batch.structures[slot].astype(np.int64)
        assert len(set(structures.tolist())) == cfg.structures, where
        assert set(structures.tolist()) == set(np.flatnonzero(cities).tolist()) | set(generals.tolist()), (
            where
        )
        r, c = np.divmod(generals, cfg.width)
        dist = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])
        assert dist[~np.eye(cfg.players, dtype=bool)].min() >= cfg.general_distance, where
        assert connected_generals(terrain, generals, cfg.height, cfg.width), where
        assert batch.alive[slot].all() and batch.tick[slot] == 0 and batch.winner[slot] == -1, where
        assert batch.status[slot] == C.RUNNING and batch.seed[slot] == seed, where
        if cfg.players == 2:  # generals-bots accepts it (its Grid checks connectivity itself)
            Grid(grid_string(terrain, armies, generals, cfg.height, cfg.width))
    if cfg.cities * n >= 1000:
        assert set(city_armies) == set(range(40, 51)), "every city army 40..50 should occur"


def test_same_seed_gives_the_same_map_whatever_the_slot_or_batch():
    cfg = GameConfig()
    seeds = np.arange(100, dtype=np.uint64) + 2**40
    a = GameBatch.allocate(cfg, 100)
    generate(a, np.arange(100), seeds)
    b = GameBatch.allocate(cfg, 250)
    b_slots = np.arange(100) * 2 + 17
    generate(b, b_slots[::-1], seeds[::-1])
    c = GameBatch.allocate(cfg, 1)
    for name in (
        "armies",
        "owner",
        "terrain",
        "generals",
        "structures",
        "alive",
        "tick",
        "winner",
        "status",
        "seed",
    ):
        assert np.array_equal(getattr(a, name), getattr(b, name)[b_slots]), name
    for i in (0, 37, 99):
        generate(c, [0], seeds[i : i + 1].astype(np.int64))  # the same seed as another integer dtype
        assert np.array_equal(c.terrain[0], a.terrain[i]) and np.array_equal(c.armies[0], a.armies[i])


def test_different_seeds_give_different_maps():
    cfg = GameConfig()
    n = 500
    batch = GameBatch.allocate(cfg, n)
    generate(batch, np.arange(n), np.arange(n))
    maps = {(batch.terrain[g].tobytes(), batch.generals[g].tobytes()) for g in range(n)}
    assert len(maps) == n
    general_tiles = {batch.generals[g].tobytes() for g in range(n)}
    assert len(general_tiles) > n * 0.9


def test_generate_resets_a_played_slot_to_a_fresh_game():
    cfg = GameConfig()
    fresh = GameBatch.allocate(cfg, 1)
    generate(fresh, [0], [42])
    used = GameBatch.allocate(cfg, 1)
    generate(used, [0], [7])
    rng = np.random.default_rng(0)
    for _ in range(60):
        step(used, [0], random_flat_actions(rng, used, np.array([0])))
    used.status[0], used.winner[0], used.alive[0, 1], used.tick[0] = C.TERMINATED, 1, False, 77
    generate(used, [0], [42])
    for name, array in fresh.arrays().items():
        assert np.array_equal(array, getattr(used, name)), name


def test_impossible_map_constraints_raise_value_error_and_change_no_game():
    cfg = GameConfig(4, 4, 2, mountain_density=0.0, city_density=0.0, min_general_distance=7)  # 6 is the most
    batch = GameBatch.allocate(cfg, 3)
    before = {k: v.copy() for k, v in batch.arrays().items()}
    with pytest.raises(ValueError, match="could not generate"):
        generate(batch, [0, 1, 2], [1, 2, 3])
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), name


# --------------------------------------------------------------------------------------------
# Bad input: ValueError, and no game changes
# --------------------------------------------------------------------------------------------


@pytest.fixture
def three_games():
    cfg = GameConfig(6, 7, 2)
    batch = GameBatch.allocate(cfg, 5)
    generate(batch, [0, 2, 4], [5, 6, 7])
    for s in (0, 2, 4):  # give every general a movable army
        batch.armies[s, batch.generals[s]] = 9
    return batch


def _legal(batch, slot):
    """A legal move of player 0 in `slot` (its general's army out, to an open neighbour)."""
    bits = np.unpackbits(action_masks(batch, [slot])[0, 0], bitorder="little")
    return int(np.flatnonzero(bits)[0]) * 2


BAD_STEPS = {
    "actions with a column too many": lambda b: ([0, 2, 4], np.full((3, 3), PASS)),
    "actions with a row too many": lambda b: ([0, 2, 4], np.full((4, 2), PASS)),
    "actions 1-D": lambda b: ([0, 2, 4], np.full(6, PASS)),
    "actions 3-D": lambda b: ([0, 2, 4], np.full((3, 2, 1), PASS)),
    "actions float": lambda b: ([0, 2, 4], np.full((3, 2), -1.0)),
    "actions bool": lambda b: ([0, 2, 4], np.zeros((3, 2), bool)),
    "actions strings": lambda b: ([0, 2, 4], np.full((3, 2), "-1")),
    "action -2": lambda b: ([0, 2, 4], np.array([[_legal(b, 0), PASS], [PASS, PASS], [-2, PASS]])),
    "action equal to tiles*8": lambda b: (
        [0, 2, 4],
        np.array([[_legal(b, 0), PASS], [PASS, 6 * 7 * 8], [PASS, PASS]]),
    ),
    "action huge": lambda b: ([0, 2, 4], np.array([[_legal(b, 0), PASS], [PASS, 2**40], [PASS, PASS]])),
    "action uint64 top bit": lambda b: (
        [0, 2, 4],
        np.array([[_legal(b, 0), 0], [0, 2**63], [0, 0]], np.uint64),
    ),
    "slot out of range": lambda b: ([0, 2, 5], np.array([[_legal(b, 0), PASS], [PASS, PASS], [PASS, PASS]])),
    "negative slot": lambda b: ([0, 2, -1], np.array([[_legal(b, 0), PASS], [PASS, PASS], [PASS, PASS]])),
    "duplicate slots": lambda b: ([0, 2, 0], np.array([[_legal(b, 0), PASS], [PASS, PASS], [PASS, PASS]])),
    "duplicate unsorted slots": lambda b: (
        [4, 0, 4],
        np.array([[PASS, PASS], [_legal(b, 0), PASS], [PASS, PASS]]),
    ),
    "float slots": lambda b: (
        np.array([0.0, 2.0, 4.0]),
        np.array([[_legal(b, 0), PASS], [PASS, PASS], [PASS, PASS]]),
    ),
    "2-D slots": lambda b: (
        np.array([[0, 2, 4]]),
        np.array([[_legal(b, 0), PASS], [PASS, PASS], [PASS, PASS]]),
    ),
}


@pytest.mark.parametrize("case", list(BAD_STEPS), ids=list(BAD_STEPS))
def test_bad_step_input_raises_value_error_and_changes_no_game(three_games, case):
    batch = three_games
    slots, actions = BAD_STEPS[case](batch)
    before = {k: v.copy() for k, v in batch.arrays().items()}
    with pytest.raises(ValueError):
        step(batch, slots, actions)
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), f"{case}: {name} changed"
    # the same batch still steps a good request (the legal move really was legal)
    good = np.array([[_legal(batch, 0), PASS], [PASS, PASS], [PASS, PASS]])
    step(batch, [0, 2, 4], good)
    assert not np.array_equal(batch.armies, before["armies"])


BAD_OUTPUTS = {
    "codes of the wrong dtype": lambda o: setattr(o, "codes", o.codes.astype(np.int16)),
    "armies of the wrong shape": lambda o: setattr(o, "armies", o.armies[:, :1]),
    "land of the wrong shape": lambda o: setattr(o, "land", np.zeros((3, 3), np.int32)),
    "tick of the wrong dtype": lambda o: setattr(o, "tick", o.tick.astype(np.int64)),
    "non-contiguous codes": lambda o: setattr(o, "codes", np.zeros((3, 2, 84), np.uint8)[:, :, ::2]),
    "buffer for another number of games": lambda o: None,
}


@pytest.mark.parametrize("case", list(BAD_OUTPUTS), ids=list(BAD_OUTPUTS))
def test_bad_output_buffer_raises_value_error_and_changes_no_game(three_games, case):
    batch = three_games
    games = 2 if case == "buffer for another number of games" else 3
    out = Observation.allocate(batch.config, games)
    BAD_OUTPUTS[case](out)
    before = {k: v.copy() for k, v in batch.arrays().items()}
    good = np.array([[_legal(batch, 0), PASS], [PASS, PASS], [PASS, PASS]])
    with pytest.raises(ValueError):
        step(batch, [0, 2, 4], good, out=out)
    with pytest.raises(ValueError):
        observe(batch, [0, 2, 4], out=out)
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), f"{case}: {name} changed"


BAD_SLOTS = {
    "out of range": [0, 5],
    "negative": [-1],
    "float": np.array([0.0]),
    "2-D": np.array([[0, 2]]),
}


@pytest.mark.parametrize("case", list(BAD_SLOTS), ids=list(BAD_SLOTS))
def test_bad_slots_for_observe_masks_and_generate_raise_value_error(three_games, case):
    batch = three_games
    slots = BAD_SLOTS[case]
    before = {k: v.copy() for k, v in batch.arrays().items()}
    with pytest.raises(ValueError):
        observe(batch, slots)
    with pytest.raises(ValueError):
        action_masks(batch, slots)
    with pytest.raises(ValueError):
        generate(batch, slots, np.zeros(np.asarray(slots).shape[-1], np.uint64))
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), f"{case}: {name} changed"


BAD_SEEDS = {
    "negative seed": ([0, 2], [1, -1]),
    "float seeds": ([0, 2], np.array([1.0, 2.0])),
    "one seed too few": ([0, 2], [1]),
    "duplicate slots": ([2, 2], [1, 2]),
}


@pytest.mark.parametrize("case", list(BAD_SEEDS), ids=list(BAD_SEEDS))
def test_bad_generate_input_raises_value_error_and_changes_no_game(three_games, case):
    batch = three_games
    slots, seeds = BAD_SEEDS[case]
    before = {k: v.copy() for k, v in batch.arrays().items()}
    with pytest.raises(ValueError):
        generate(batch, slots, seeds)
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), f"{case}: {name} changed"
