"""Wire formats: exact round trips, zero-copy views, and bad input refused with ValueError."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gameserver.engine import GameBatch, GameConfig, action_masks, generate, observe, step
from gameserver.engine.actions import from_generals_bots
from gameserver.wire import codec

SMALL = GameConfig(height=6, width=7, players=2, max_ticks=200)
FFA = GameConfig(height=8, width=8, players=4, max_ticks=300)


def legal_actions(batch: GameBatch, slots: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random legal move (or a pass, 1 in 8) for every player, from the engine's masks."""
    bits = np.unpackbits(action_masks(batch, slots), axis=-1, bitorder="little")[
        ..., : batch.config.tiles * 4
    ]
    scores = rng.random(bits.shape) * bits
    moves = scores.argmax(-1) * 2 + rng.integers(0, 2, scores.shape[:2])
    passes = (scores.max(-1) == 0) | (rng.random(scores.shape[:2]) < 0.125)
    return np.where(passes, -1, moves).astype(np.int32)


def played_batch(config: GameConfig, games: int, ticks: int, seed: int = 0) -> GameBatch:
    batch = GameBatch.allocate(config, games)
    slots = np.arange(games)
    generate(batch, slots, np.arange(games) + 1000 * seed)
    rng = np.random.default_rng(seed)
    for _ in range(ticks):
        step(batch, slots, legal_actions(batch, slots, rng))
    return batch


def arrays_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# Arrays -------------------------------------------------------------------------------------

wire_arrays = hnp.arrays(
    dtype=st.sampled_from(list(codec.WIRE_DTYPES.values())),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@given(wire_arrays)
def test_array_round_trip_is_exact(a: np.ndarray) -> None:
    buf, dtype, shape = codec.encode_array(a)
    decoded = codec.decode_array(bytes(buf), dtype, shape)
    assert decoded.dtype == a.dtype and decoded.shape == a.shape
    assert decoded.tobytes() == a.tobytes()  # bitwise, so NaNs and -0.0 count too


def test_encode_array_is_a_view_of_a_contiguous_array() -> None:
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    buf, dtype, shape = codec.encode_array(a)
    assert (dtype, shape) == ("<i4", (4, 6))
    assert np.shares_memory(np.frombuffer(buf, np.uint8), a)


def test_decode_array_is_a_view_of_the_message() -> None:
    message = bytearray(np.arange(10, dtype="<u2").tobytes())
    decoded = codec.decode_array(message, "uint16", (2, 5))
    assert np.shares_memory(decoded, np.frombuffer(message, np.uint8))
    assert not codec.decode_array(bytes(message), "uint16", (2, 5)).flags.writeable


def test_big_endian_input_is_sent_little_endian() -> None:
    a = np.array([1, 256, -2], dtype=">i4")
    buf, dtype, _ = codec.encode_array(a)
    assert dtype == "<i4" and bytes(buf) == np.array([1, 256, -2], "<i4").tobytes()


def test_dtype_names_are_accepted_on_decode() -> None:
    assert codec.decode_array(b"\x01\x00\x00\x00", "int32", (1,)).tolist() == [1]
    assert codec.decode_array(b"\x01", "bool", (1,)).tolist() == [True]


@pytest.mark.parametrize(
    ("buf", "dtype", "shape", "problem"),
    [
        (b"\0" * 8, ">i4", (2,), "unsupported dtype"),
        (b"\0" * 8, "object", (1,), "unsupported dtype"),
        (b"\0" * 8, "complex64", (1,), "unsupported dtype"),
        (b"\0" * 8, 4, (2,), "unsupported dtype"),
        (b"\0" * 8, "int32", (3,), "needs 12"),
        (b"\0" * 8, "int32", (-2,), "non-negative"),
        (b"\0" * 8, "int32", (2.0,), "non-negative"),
        (b"\0" * 8, "int32", 2, "sequence of ints"),
        (b"\0" * 8, "int32", (1 << 40, 1 << 40), "needs"),
        ("abcdefgh", "uint8", (8,), "bytes-like"),
        (memoryview(bytes(16))[::2], "uint8", (8,), "contiguous"),
    ],
)
def test_decode_array_rejects_bad_input(buf: object, dtype: object, shape: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        codec.decode_array(buf, dtype, shape)


@pytest.mark.parametrize("a", [np.array(["x"]), np.array([1 + 2j]), np.array([None])])
def test_encode_array_rejects_dtypes_off_the_allow_list(a: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot go on the wire"):
        codec.encode_array(a)


# Observations -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [SMALL, FFA])
def test_engine_writes_observations_straight_into_the_wire_buffer(config: GameConfig) -> None:
    batch = played_batch(config, 5, 20)
    buffer, views = codec.allocate_observation(config, 5)
    observe(batch, np.arange(5), out=views)
    expected = observe(batch, np.arange(5))
    for name in ("codes", "armies", "land", "army", "tick"):
        assert np.shares_memory(getattr(views, name), buffer)
        assert np.array_equal(getattr(views, name), getattr(expected, name))
    received = codec.unpack_observation(buffer.tobytes(), 5, config.players, config.tiles)
    for name in ("codes", "armies", "land", "army", "tick"):
        assert np.array_equal(getattr(received, name), getattr(expected, name))
    assert np.array_equal(codec.pack_observation(expected), buffer)


def test_observation_buffer_is_three_bytes_a_tile_with_aligned_blocks() -> None:
    games, players, tiles = 3, 5, 37  # odd sizes: any misalignment would show
    assert (
        codec.observation_nbytes(games, players, tiles)
        == games * players * tiles * 3 + games * (2 * players + 1) * 4
    )
    buffer = np.zeros(codec.observation_nbytes(games, players, tiles), np.uint8)
    views = codec.unpack_observation(buffer, games, players, tiles)
    for name in ("codes", "armies", "land", "army", "tick"):
        array = getattr(views, name)
        assert array.flags.aligned and array.flags.c_contiguous
        assert (array.ctypes.data - buffer.ctypes.data) % array.itemsize == 0


def test_unpack_observation_rejects_a_wrong_size() -> None:
    with pytest.raises(ValueError, match="need 38"):  # 1 x 2 x 3 tiles x 3 bytes + 5 int32 counters
        codec.unpack_observation(bytes(29), 1, 2, 3)


def test_observation_tensors_round_trip_as_views() -> None:
    obs = observe(played_batch(FFA, 3, 10), np.arange(3))
    tensors = {name: (bytes(b), d, s) for name, (b, d, s) in codec.encode_observation(obs).items()}
    received = codec.decode_observation(tensors)
    for name in ("codes", "armies", "land", "army", "tick"):
        assert np.array_equal(getattr(received, name), getattr(obs, name))
        assert np.shares_memory(getattr(received, name), np.frombuffer(tensors[name][0], np.uint8))


@pytest.mark.parametrize(
    ("name", "replacement", "problem"),
    [
        ("armies", np.zeros((3, 4, 64), np.uint8), "armies must be uint16"),
        ("land", np.zeros((3, 2), np.int32), r"land must be int32 \(3, 4\)"),
        ("tick", np.zeros((2,), np.int32), "tick must be"),
        ("codes", np.zeros((3, 4 * 64), np.uint8), r"\[games, players, tiles\]"),
    ],
)
def test_inconsistent_observation_tensors_are_refused(
    name: str, replacement: np.ndarray, problem: str
) -> None:
    tensors = codec.encode_observation(observe(played_batch(FFA, 3, 1), np.arange(3)))
    tensors[name] = codec.encode_array(replacement)
    with pytest.raises(ValueError, match=problem):
        codec.decode_observation(tensors)
    del tensors["tick"]
    with pytest.raises(ValueError, match=r"missing: \['tick'\]"):
        codec.decode_observation(tensors)


# Actions ------------------------------------------------------------------------------------


def test_actions_round_trip_as_int32() -> None:
    actions = np.array([[-1, 5], [SMALL.num_actions - 1, 0]], np.int64)
    buf, dtype, shape = codec.encode_actions(actions)
    assert dtype == "<i4" and len(buf) == 16
    decoded = codec.decode_actions(bytes(buf), dtype, shape, SMALL)
    assert decoded.dtype == np.int32 and np.array_equal(decoded, actions)


def test_generals_bots_actions_use_the_engine_conversion() -> None:
    rng = np.random.default_rng(1)
    columns = [(0, 2), (-1, 8), (-1, 8), (0, 4), (0, 2)]  # pass, row, col (some off board), dir, split
    bots = np.stack([rng.integers(low, high, (4, 2)) for low, high in columns], axis=-1).astype(np.int16)
    buf, dtype, shape = codec.encode_array(bots)
    decoded = codec.decode_actions(buf, dtype, shape, SMALL)
    assert np.array_equal(decoded, from_generals_bots(bots, SMALL.height, SMALL.width))


@pytest.mark.parametrize(
    ("actions", "problem"),
    [
        (np.array([[0, (1 << 32) + 5]], np.int64), "must be in"),  # would wrap to a valid int32 move
        (np.array([[0, SMALL.num_actions]], np.int32), "must be in"),
        (np.array([[0, -2]], np.int32), "must be in"),
        (np.array([[0, 1, 2]], np.int32), "got shape"),
        (np.array([0, 1], np.int32), "got shape"),
        (np.array([[0.0, 1.0]], np.float32), "integers"),
    ],
)
def test_decode_actions_rejects_bad_input(actions: np.ndarray, problem: str) -> None:
    buf, dtype, shape = codec.encode_array(actions)
    with pytest.raises(ValueError, match=problem):
        codec.decode_actions(buf, dtype, shape, SMALL)


# Snapshots ----------------------------------------------------------------------------------


@st.composite
def snapshot_fields(draw: st.DrawFn) -> tuple[GameConfig, dict[str, np.ndarray]]:
    """Any in-range value for every GameBatch field (not just reachable states)."""
    config = draw(st.sampled_from([SMALL, FFA]))
    games = draw(st.integers(0, 4))
    p, t = config.players, config.tiles
    fields = {}
    for name, a in GameBatch.allocate(config, 0).arrays().items():
        low, high = {
            "generals": (0, t - 1),
            "structures": (0, t - 1),
            "owner": (0, p),
            "terrain": (0, 3),
            "status": (0, 2),
            "winner": (-1, p - 1),
            "tick": (0, config.max_ticks),
        }.get(name, (None, None))
        elements = (
            st.booleans() if a.dtype == np.bool_ else hnp.from_dtype(a.dtype, min_value=low, max_value=high)
        )
        fields[name] = draw(hnp.arrays(a.dtype, (games, *a.shape[1:]), elements=elements))
    return config, fields


@given(snapshot_fields(), st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_snapshot_round_trip_is_exact(fields: tuple[GameConfig, dict[str, np.ndarray]], random) -> None:
    config, arrays = fields
    games = arrays["tick"].shape[0]
    source = GameBatch.allocate(config, games + 2)
    slots = np.array(random.sample(range(games + 2), games), np.int64)
    for name, a in arrays.items():
        getattr(source, name)[slots] = a
    decoded = codec.decode_snapshot(codec.encode_snapshot(source, slots))
    assert decoded.config == config and decoded.games == games
    assert arrays_equal(decoded.arrays, arrays)
    target = GameBatch.allocate(config, games + 3)
    target_slots = np.arange(games)[::-1] + 3
    codec.restore_snapshot(target, target_slots, decoded)
    assert arrays_equal({k: v[target_slots] for k, v in target.arrays().items()}, arrays)


def test_decoded_snapshot_arrays_are_views_of_the_message() -> None:
    data = codec.encode_snapshot(played_batch(SMALL, 3, 5), [0, 2])
    decoded = codec.decode_snapshot(data)
    whole = np.frombuffer(data, np.uint8)
    assert all(np.shares_memory(a, whole) and a.flags.aligned for a in decoded.arrays.values())


@pytest.mark.parametrize("config", [SMALL, FFA])
def test_restored_games_step_bit_identically(config: GameConfig) -> None:
    original = played_batch(config, 6, 25, seed=3)
    slots = np.array([4, 1, 5, 0])
    copy = GameBatch.allocate(config, 9)
    copy_slots = np.array([8, 2, 3, 6])
    codec.restore_snapshot(copy, copy_slots, codec.decode_snapshot(codec.encode_snapshot(original, slots)))
    rng = np.random.default_rng(7)
    for _ in range(60):
        actions = legal_actions(original, slots, rng)
        expected = step(original, slots, actions, out=observe(original, slots))
        got = step(copy, copy_slots, actions, out=observe(copy, copy_slots))
        for name in ("rewards", "terminated", "truncated"):
            assert np.array_equal(getattr(expected, name), getattr(got, name))
        assert np.array_equal(observe(original, slots).codes, observe(copy, copy_slots).codes)
    assert arrays_equal(
        {k: v[slots] for k, v in original.arrays().items()},
        {k: v[copy_slots] for k, v in copy.arrays().items()},
    )


SNAPSHOT = codec.encode_snapshot(played_batch(SMALL, 2, 10), [0, 1])


@given(st.integers(0, len(SNAPSHOT) - 1))
def test_truncated_snapshot_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        codec.decode_snapshot(SNAPSHOT[:length])


@given(st.integers(0, len(SNAPSHOT) * 8 - 1))
def test_any_flipped_bit_is_refused(bit: int) -> None:
    corrupted = bytearray(SNAPSHOT)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError, match="snapshot"):
        codec.decode_snapshot(bytes(corrupted))


def _with_prefix(data: bytes, **changes: int) -> bytes:
    """Rewrite prefix fields and re-checksum, as a well-meaning but wrong writer would."""
    fields = dict(
        zip(
            ("magic", "version", "reserved", "header", "crc"),
            struct.unpack_from("<4sHHII", data),
            strict=True,
        )
    )
    fields.update(changes)
    return struct.pack("<4sHHII", *fields.values()) + data[16:]


def _rewritten_header(data: bytes, edit) -> bytes:
    """A snapshot whose JSON header went through `edit`, with a valid checksum."""
    header_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[16 : 16 + header_len])
    new_header = json.dumps(edit(header)).encode()
    pad = -(16 + len(new_header)) % 8
    body = new_header + bytes(pad) + data[16 + header_len + (-(16 + header_len) % 8) :]
    return struct.pack("<4sHHII", b"GFSN", 1, 0, len(new_header), zlib.crc32(body)) + body


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (SNAPSHOT + b"\0", "checksum"),
        (_with_prefix(SNAPSHOT, magic=b"RDB0"), "not a GameFleet snapshot"),
        (_with_prefix(SNAPSHOT, version=2), "unsupported snapshot version 2"),
        (_with_prefix(SNAPSHOT, reserved=1), "unknown flags"),
        (_with_prefix(SNAPSHOT, header=1 << 30), "truncated"),
        (_rewritten_header(SNAPSHOT, lambda h: [h]), "header is invalid"),
        (_rewritten_header(SNAPSHOT, lambda h: {**h, "config": {**h["config"], "height": 999}}), "height"),
        (
            _rewritten_header(SNAPSHOT, lambda h: {**h, "config": {**h["config"], "colour": 1}}),
            "header is invalid",
        ),
        (_rewritten_header(SNAPSHOT, lambda h: {**h, "fields": h["fields"][:-1]}), "trailing bytes"),
        (
            _rewritten_header(SNAPSHOT, lambda h: {**h, "fields": [["armies", ">i4", [2, 42]]]}),
            "unsupported dtype",
        ),
        (
            _rewritten_header(SNAPSHOT, lambda h: {**h, "fields": h["fields"] + [["x", "<i4", [999]]]}),
            "truncated",
        ),
        (
            _rewritten_header(
                SNAPSHOT, lambda h: {**h, "fields": [["armies", "<i4", [2, 42, 1]], *h["fields"][1:]]}
            ),
            "must be a int32 array of shape",
        ),
    ],
)
def test_bad_snapshot_is_refused_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        codec.decode_snapshot(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generals", SMALL.tiles),
        ("structures", -2),  # -1 is maps.NO_STRUCTURE (no tile)
        ("owner", SMALL.players + 1),
        ("terrain", 4),
        ("winner", 2),
    ],
)
def test_snapshot_with_values_kernels_would_index_out_of_bounds_is_refused(field: str, value: int) -> None:
    batch = played_batch(SMALL, 2, 3)
    getattr(batch, field).reshape(2, -1)[1, 0] = value  # a consistent checksum, but a state no game can reach
    with pytest.raises(ValueError, match=f"{field} has values outside"):
        codec.decode_snapshot(codec.encode_snapshot(batch, [0, 1]))


@pytest.mark.parametrize(
    ("config", "slots", "problem"),
    [
        (FFA, [0, 1], "differs from the batch"),
        (SMALL, [0], "holds 2 games but 1 slots"),
        (SMALL, [1, 1], "distinct"),
        (SMALL, [0, 5], "out of range"),
    ],
)
def test_bad_restore_changes_no_game(config: GameConfig, slots: list[int], problem: str) -> None:
    snapshot = codec.decode_snapshot(SNAPSHOT)
    target = played_batch(config, 3, 4, seed=9)
    before = {k: v.copy() for k, v in target.arrays().items()}
    with pytest.raises(ValueError, match=problem):
        codec.restore_snapshot(target, slots, snapshot)
    assert arrays_equal(target.arrays(), before)


# Deltas -------------------------------------------------------------------------------------

planes = st.integers(1, 40).flatmap(
    lambda n: st.tuples(*(hnp.arrays(dt, (2, n)) for dt in (np.uint8, np.uint16, np.uint8, np.uint16)))
)


@given(planes)
def test_delta_turns_the_previous_view_into_the_new_one(views: tuple[np.ndarray, ...]) -> None:
    prev_codes, prev_armies, codes, armies = views
    delta = codec.encode_delta(prev_codes, prev_armies, codes, armies)
    changed = (prev_codes != codes) | (prev_armies != armies)
    assert np.array_equal(delta.index, np.flatnonzero(changed)) and delta.index.dtype == np.int32
    wire = [codec.encode_array(a) for a in delta]  # delta_index, delta_codes, delta_armies tensors
    received = codec.ObservationDelta(*(codec.decode_array(bytes(b), d, s) for b, d, s in wire))
    client_codes, client_armies = prev_codes.copy(), prev_armies.copy()
    assert codec.apply_delta(client_codes, client_armies, received) == changed.sum()
    assert np.array_equal(client_codes, codes) and np.array_equal(client_armies, armies)


def test_delta_of_engine_observations_after_a_step() -> None:
    batch = played_batch(FFA, 4, 30)
    slots = np.arange(4)
    before = observe(batch, slots)
    client = observe(batch, slots)
    step(batch, slots, legal_actions(batch, slots, np.random.default_rng(2)))
    after = observe(batch, slots)
    delta = codec.encode_delta(before.codes, before.armies, after.codes, after.armies)
    assert 0 < sum(a.nbytes for a in delta) < after.codes.nbytes + after.armies.nbytes
    codec.apply_delta(client.codes, client.armies, delta)
    assert np.array_equal(client.codes, after.codes) and np.array_equal(client.armies, after.armies)


def _delta(index: list[int], codes_dtype: type = np.uint8) -> codec.ObservationDelta:
    k = len(index)
    return codec.ObservationDelta(np.array(index, np.int32), np.ones(k, codes_dtype), np.ones(k, np.uint16))


@pytest.mark.parametrize(
    ("codes", "armies", "delta", "problem"),
    [
        (np.zeros(4, np.uint8), np.zeros(4, np.uint16), _delta([0, 4]), r"outside \[0, 4\)"),
        (np.zeros(4, np.uint8), np.zeros(4, np.uint16), _delta([-1]), "outside"),
        (np.zeros(4, np.uint8), np.zeros(4, np.uint16), _delta([0], np.uint16), "uint8/uint16"),
        (
            np.zeros(4, np.uint8),
            np.zeros(4, np.uint16),
            _delta([0])._replace(codes=np.ones(2, np.uint8)),
            "one length",
        ),
        (np.zeros(4, np.uint8), np.zeros(4, np.uint16), _delta([0])._replace(index=np.ones(1)), "integers"),
        (np.zeros(4, np.uint8), np.zeros(5, np.uint16), _delta([0]), "same shape"),
        (np.zeros(4, np.uint16), np.zeros(4, np.uint16), _delta([0]), "codes must be"),
        (np.zeros(4, np.uint8), np.frombuffer(bytes(8), np.uint16), _delta([0]), "writable"),
        (np.zeros(8, np.uint8)[::2], np.zeros(4, np.uint16), _delta([0]), "C-contiguous"),
    ],
)
def test_bad_delta_changes_nothing(
    codes: np.ndarray, armies: np.ndarray, delta: codec.ObservationDelta, problem: str
) -> None:
    codes_before, armies_before = codes.copy(), armies.copy()
    with pytest.raises(ValueError, match=problem):
        codec.apply_delta(codes, armies, delta)
    assert np.array_equal(codes, codes_before) and np.array_equal(armies, armies_before)


def test_encode_delta_rejects_mismatched_planes() -> None:
    a8, a16 = np.zeros(4, np.uint8), np.zeros(4, np.uint16)
    with pytest.raises(ValueError, match="prev_armies must be"):
        codec.encode_delta(a8, np.zeros(5, np.uint16), a8, a16)
