"""Bad input against a real shard: refused with the right status and details, no game changed,
and the server keeps serving (also under a randomised fuzz of payloads to every method)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from gameserver.client import InvalidArgument, NotFound
from gameserver.engine import GameConfig
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import config_to_proto, write_tensor
from gameserver.wire.services import SERVICE

CONFIG = GameConfig(height=8, width=8)
LIMIT = 4096  # the shard fixture's max_games_per_call
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def raw(shard) -> Iterator[Callable[[str, bytes], bytes]]:
    """Call any method with raw bytes (no client-side checks), unary or as a one-message stream."""
    with grpc.insecure_channel(shard.address) as channel:

        def call(method: str, payload: bytes) -> bytes:
            path = f"/{SERVICE.full_name}/{method}"
            if method == "StreamSteps":
                return list(channel.stream_stream(path)(iter([payload]), timeout=30))
            return channel.unary_unary(path)(payload, timeout=30)

        yield call


@pytest.fixture(scope="module")
def games(fleet) -> np.ndarray:
    return fleet.create(4, CONFIG, seeds=[1, 2, 3, 4]).ids


def tensor(array: object, dtype: str | None = None, shape: list[int] | None = None) -> pb.Tensor:
    message = pb.Tensor()
    write_tensor(message, np.asarray(array))
    if dtype is not None:
        message.dtype = dtype
    if shape is not None:
        message.shape[:] = shape
    return message


def step(ids: object, actions: object, **fields: object) -> bytes:
    actions = actions if isinstance(actions, pb.Tensor) else tensor(actions)
    return pb.SubmitBatchActionsRequest(game_ids=tensor(ids), actions=actions, **fields).SerializeToString()


def create(**fields: object) -> bytes:
    fields.setdefault("num_games", 2)
    return pb.CreateBatchGamesRequest(**fields).SerializeToString()


def ids_only(message: type, ids: object, **fields: object) -> bytes:
    return message(game_ids=tensor(ids), **fields).SerializeToString()


PASS2 = np.full((4, 2), -1, np.int32)
MISSING = np.uint64(12345)
INVALID, NOT_FOUND, EXHAUSTED, PRECONDITION = (
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.RESOURCE_EXHAUSTED,
    Code.FAILED_PRECONDITION,
)
STEP, CREATE, STATES, RESET, CLOSE, STREAM = (
    "SubmitBatchActions",
    "CreateBatchGames",
    "GetBatchStates",
    "ResetBatchGames",
    "CloseBatchGames",
    "StreamSteps",
)
TOO_MANY = LIMIT + 1

# case: method, payload from the 4 live ids, expected status, words the details must contain
CASES = {
    "actions shape": (STEP, lambda ids: step(ids, np.full((4, 3), -1)), INVALID, ["actions", "shape"]),
    "actions rows": (STEP, lambda ids: step(ids, PASS2[:3]), INVALID, ["actions", "3 rows"]),
    "actions size": (STEP, lambda ids: step(ids, tensor(PASS2, shape=[4, 3])), INVALID, ["actions", "bytes"]),
    "unknown dtype": (STEP, lambda ids: step(ids, tensor(PASS2, dtype="<i3")), INVALID, ["actions", "dtype"]),
    "float actions": (
        STEP,
        lambda ids: step(ids, PASS2.astype(np.float32)),
        INVALID,
        ["actions", "integers"],
    ),
    "action too big": (
        STEP,
        lambda ids: step(ids, PASS2 + np.array([[0, 513]])),
        INVALID,
        ["actions", "[-1, 512)"],
    ),
    "action below -1": (STEP, lambda ids: step(ids, PASS2 - 1), INVALID, ["actions", "[-1, 512)"]),
    "int64 wraps": (
        STEP,
        lambda ids: step(ids, PASS2.astype(np.int64) + (1 << 32) + 1),
        INVALID,
        ["actions"],
    ),
    "ids dtype": (STEP, lambda ids: step(ids.astype(np.int64), PASS2), INVALID, ["game_ids", "uint64"]),
    "ids 2-D": (STEP, lambda ids: step(ids.reshape(2, 2), PASS2), INVALID, ["game_ids", "1-D"]),
    "duplicate ids": (STEP, lambda ids: step(ids[[0, 1, 1, 2]], PASS2), INVALID, ["distinct", "repeated"]),
    "unknown id": (STEP, lambda ids: step(np.r_[ids[:3], MISSING], PASS2), NOT_FOUND, [str(MISSING)]),
    "unknown states": (
        STATES,
        lambda ids: ids_only(pb.GetBatchStatesRequest, [MISSING]),
        NOT_FOUND,
        ["12345"],
    ),
    "unknown reset": (
        RESET,
        lambda ids: ids_only(pb.ResetBatchGamesRequest, np.r_[ids, MISSING]),
        NOT_FOUND,
        [],
    ),
    "unknown close": (
        CLOSE,
        lambda ids: ids_only(pb.CloseBatchGamesRequest, np.r_[MISSING, ids]),
        NOT_FOUND,
        [],
    ),
    "too many ids": (
        STEP,
        lambda ids: step(np.arange(TOO_MANY, dtype=np.uint64), PASS2),
        EXHAUSTED,
        ["4097"],
    ),
    "too many games": (CREATE, lambda ids: create(num_games=TOO_MANY), EXHAUSTED, ["num_games", "4096"]),
    "reply too large": (
        CREATE,
        lambda ids: create(num_games=LIMIT, config=pb.GameConfig(height=64, width=64, players=8)),
        EXHAUSTED,
        ["message limit"],
    ),
    "height": (CREATE, lambda ids: create(config=pb.GameConfig(height=100)), INVALID, ["GameConfig.height"]),
    "players": (CREATE, lambda ids: create(config=pb.GameConfig(players=1)), INVALID, ["GameConfig.players"]),
    "density": (
        CREATE,
        lambda ids: create(config=pb.GameConfig(mountain_density=0.9)),
        INVALID,
        ["mountain"],
    ),
    "nan density": (CREATE, lambda ids: create(config=pb.GameConfig(city_density=np.nan)), INVALID, ["city"]),
    "max ticks": (CREATE, lambda ids: create(config=pb.GameConfig(max_ticks=0)), INVALID, ["max_ticks"]),
    "create seeds": (CREATE, lambda ids: create(seeds=tensor([1, 2, 3])), INVALID, ["seeds", "[2]"]),
    "reset seeds": (
        RESET,
        lambda ids: ids_only(pb.ResetBatchGamesRequest, ids, seeds=tensor([-1, 2, 3, 4])),
        INVALID,
        ["seeds"],
    ),
    "empty create": (CREATE, lambda ids: b"", INVALID, ["num_games"]),
    "empty step": (STEP, lambda ids: b"", INVALID, ["game_ids is missing"]),
    "empty states": (STATES, lambda ids: b"", INVALID, ["game_ids is missing"]),
    "empty reset": (RESET, lambda ids: b"", INVALID, ["game_ids is missing"]),
    "empty close": (CLOSE, lambda ids: b"", INVALID, ["game_ids is missing"]),
    "empty stream step": (STREAM, lambda ids: b"", INVALID, ["game_ids is missing"]),
    "no ids": (STEP, lambda ids: step(np.zeros(0, np.uint64), PASS2[:0]), INVALID, ["empty"]),
    "no actions": (
        STEP,
        lambda ids: ids_only(pb.SubmitBatchActionsRequest, ids),
        INVALID,
        ["actions is missing"],
    ),
    "not protobuf": (STEP, lambda ids: b"\xff\xff\xff", INVALID, ["not a valid"]),
    "bad stream step": (STREAM, lambda ids: step(ids, PASS2 + 1000), INVALID, ["actions"]),
    "deadline without open seats": (
        CREATE,
        lambda ids: create(turn_deadline_ms=50),
        INVALID,
        ["turn_deadline_ms", "open_seats"],
    ),
    "negative deadline": (
        CREATE,
        lambda ids: create(open_seats=True, turn_deadline_ms=-1),
        INVALID,
        ["turn_deadline_ms"],
    ),
    "seat play on self-play games": (
        STEP,
        lambda ids: step(
            ids, PASS2[:, 0], seats=tensor(np.zeros(4, np.int32)), seat_tokens=tensor(np.ones(4, np.uint64))
        ),
        PRECONDITION,
        ["self-play", "open_seats"],
    ),
    "seat play without tokens": (
        STEP,
        lambda ids: step(ids, PASS2[:, 0], seats=tensor(np.zeros(4, np.int32))),
        INVALID,
        ["seat_tokens is missing"],
    ),
    "join self-play game": (
        "JoinGame",
        lambda ids: pb.JoinGameRequest(game_id=int(ids[0])).SerializeToString(),
        PRECONDITION,
        ["self-play", "open_seats"],
    ),
    "placement key too long": (
        CREATE,
        lambda ids: create(num_games=2, config=config_to_proto(CONFIG), placement_key="k" * 257),
        INVALID,
        ["placement_key", "257 bytes", "256"],
    ),
    "join unknown game": (
        "JoinGame",
        lambda ids: pb.JoinGameRequest(game_id=int(MISSING)).SerializeToString(),
        NOT_FOUND,
        [str(MISSING)],
    ),
}


@pytest.mark.parametrize(("method", "payload", "code", "words"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_and_changes_nothing(shard, raw, games, fleet, method, payload, code, words):
    before = shard.state()
    with pytest.raises(grpc.RpcError) as refused:
        raw(method, payload(games))
    assert refused.value.code() == code, refused.value.details()
    for word in words:
        assert word in refused.value.details()
    after = shard.state()
    assert before.keys() == after.keys()
    for name, array in before.items():
        np.testing.assert_array_equal(array, after[name], err_msg=name)
    assert fleet.states(games).tick.shape == (4,)  # still serving


def test_mixed_configs_in_one_call_are_refused(fleet, games):
    other = fleet.create(1, GameConfig(height=9, width=9)).ids
    with pytest.raises(InvalidArgument, match="configs") as refused:
        fleet.states(np.r_[games, other])
    assert refused.value.code == Code.INVALID_ARGUMENT
    fleet.close(other)


def test_closed_games_are_not_found(fleet):
    ids = fleet.create(2, CONFIG).ids
    fleet.close(ids[:1])
    with pytest.raises(NotFound, match=str(ids[0])) as refused:
        fleet.step(ids, np.full((2, 2), -1))
    assert refused.value.code == Code.NOT_FOUND and str(ids[1]) not in refused.value.details
    assert fleet.states(ids[1:]).tick.tolist() == [0]  # the live one did not step


def garbage_tensor(rng: np.random.Generator) -> pb.Tensor:
    """A Tensor with random dtype (valid or not), shape (even negative or huge) and bytes."""
    dtypes = ["<u8", "<i4", "|u1", "<f4", "<i8", "|b1", "<u2", "int32", "", "xyz", "<c16", ">i4", "O"]
    shape = rng.integers(-3, 6, rng.integers(0, 4)).tolist()
    if rng.random() < 0.1:
        shape = [1 << 62, 4]
    data = rng.bytes(int(rng.integers(0, 64)))
    return pb.Tensor(data=data, dtype=str(rng.choice(dtypes)), shape=shape)


def random_payload(rng: np.random.Generator, method: str, ids: np.ndarray) -> bytes:
    kind = rng.integers(4)
    if kind == 0:  # noise
        return rng.bytes(int(rng.integers(0, 200)))
    valid = {
        "CreateBatchGames": create(num_games=2, config=config_to_proto(CONFIG)),
        "GetBatchStates": ids_only(pb.GetBatchStatesRequest, ids),
        "SubmitBatchActions": step(ids, PASS2),
        "StreamSteps": step(ids, PASS2),
        "ResetBatchGames": ids_only(pb.ResetBatchGamesRequest, ids),
        "CloseBatchGames": b"",  # closing the fuzzed games would end the fuzz early
        "JoinGame": pb.JoinGameRequest(game_id=int(ids[0])).SerializeToString(),
        "GetTopology": b"",
    }[method]
    if kind == 1 and valid:  # a valid request with bytes flipped, cut or inserted
        data = bytearray(valid)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(len(data)))
            action = rng.integers(3)
            if action == 0:
                data[at] = int(rng.integers(256))
            elif action == 1:
                del data[at:]
            else:
                data[at:at] = rng.bytes(int(rng.integers(1, 8)))
            if not data:
                break
        return bytes(data)
    # Well-formed messages with random field values.
    if method == "CreateBatchGames":
        config = pb.GameConfig(
            height=int(rng.integers(0, 80)),
            width=int(rng.integers(0, 80)),
            players=int(rng.integers(0, 10)),
            mountain_density=float(rng.normal(0.2, 0.3)),
            max_ticks=int(rng.integers(0, 1 << 32)),
        )
        n = int(rng.choice([0, 1, 3, LIMIT + 1, (1 << 32) - 1]))
        seeds = garbage_tensor(rng) if rng.random() < 0.5 else None
        return pb.CreateBatchGamesRequest(num_games=n, config=config, seeds=seeds).SerializeToString()
    game_ids = garbage_tensor(rng) if rng.random() < 0.5 else tensor(ids[rng.permutation(ids.size)][:2])
    return pb.SubmitBatchActionsRequest(
        game_ids=game_ids,
        actions=garbage_tensor(rng),
        include_masks=bool(rng.integers(2)),
        delta=bool(rng.integers(2)),
        skip_observations=bool(rng.integers(2)),
    ).SerializeToString()


def test_fuzzed_payloads_never_crash_the_server(shard, raw, fleet):
    """Seeded and bounded (count and time): every answer is a success or a client-error status."""
    ids = fleet.create(4, CONFIG).ids
    rng = np.random.default_rng(20240611)
    methods = [m.name for m in SERVICE.methods]
    allowed = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION}
    deadline = time.monotonic() + 8.0
    sent = 0
    while sent < 600 and time.monotonic() < deadline:
        method = methods[sent % len(methods)]
        payload = random_payload(rng, method, ids)
        try:
            raw(method, payload)
        except grpc.RpcError as error:
            assert error.code() in allowed, (method, payload, error.code(), error.details())
        sent += 1
    assert sent >= 200
    fresh = fleet.create(4, CONFIG).ids  # (the fuzz may have closed some of its games)
    assert fleet.step(fresh, np.full((4, 2), -1)).status.shape == (4,)  # a valid call works afterwards
    assert fleet.healthy()
