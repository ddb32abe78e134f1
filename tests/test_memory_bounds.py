"""Bounded memory (DESIGN.md, Security): requests refused by size before they are read, large calls
served a few at a time, creates refused past --max-memory, the cgroup limit read right; on real
shards and routers (in process, and one `gamefleet serve` process)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT, BackgroundShard, ServeProcess
from fleet_play import wait_for
from router_helpers import BackgroundRouter

from gameserver.cli.memory import cgroup_memory_limit, default_max_memory, parse_bytes
from gameserver.client import FleetClient, ResourceExhausted
from gameserver.engine import GameConfig
from gameserver.engine.config import MAX_PLAYERS
from gameserver.router.topology import StaticSource
from gameserver.wire.admission import RequestLimits
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.limits import MAX_GAMES_PER_CALL, REQUEST_BYTES_PER_GAME, request_bytes
from gameserver.wire.messages import write_tensor
from gameserver.wire.services import SERVICE

CONFIG = GameConfig(height=8, width=8)
PER_CALL, MAX_GAMES = 512, 4096  # the receive limit: 512 x 344 + 64 KiB = 240 KiB
LARGE = 16 << 10  # a large call: a 256-game step in generals-bots int64 form (22 KB)
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def step_request(ids: np.ndarray) -> bytes:
    """A legitimate step in the widest form: generals-bots moves [games, players, 5] as int64 (passes)."""
    moves = np.zeros((ids.size, CONFIG.players, 5), np.int64)
    moves[..., 0] = 1  # pass
    request = pb.SubmitBatchActionsRequest(skip_observations=True)
    write_tensor(request.game_ids, ids)
    write_tensor(request.actions, moves)
    return request.SerializeToString()


def oversized(size: int) -> bytes:
    request = pb.SubmitBatchActionsRequest()
    request.actions.data = bytes(size)
    return request.SerializeToString()


def unary(address: str, method: str) -> grpc.UnaryUnaryMultiCallable:
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 1 << 30)])
    return channel.unary_unary(f"/{SERVICE.full_name}/{method}")


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def shard() -> Iterator[BackgroundShard]:
    """A shard whose large calls (over 16 KiB) are served one at a time, the next refused at once."""
    limits = RequestLimits(large_call_bytes=LARGE, large_calls=1, large_call_wait_s=0)
    server = BackgroundShard(max_games_per_call=PER_CALL, max_games=MAX_GAMES, requests=limits)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(shard: BackgroundShard) -> Iterator[FleetClient]:
    with FleetClient(shard.address, timeout=30) as client:
        yield client


class HeldSteps:
    """Steps on a shard wait inside the engine call until `release`: calls stay in flight."""

    def __init__(self, shard: BackgroundShard) -> None:
        self.entered, self.released = threading.Semaphore(0), threading.Event()
        games, step = shard.server.games, shard.server.games.step

        async def held(*args: object, **kwargs: object) -> object:
            self.entered.release()
            await shard.loop.run_in_executor(None, self.released.wait, 30)
            return await step(*args, **kwargs)

        games.step = held

    def release(self) -> None:
        self.released.set()


# Size: refused by gRPC before the bytes are read --------------------------------------------


def test_the_receive_limit_is_the_largest_legitimate_request():
    games = MAX_GAMES_PER_CALL
    ids = np.arange(games, dtype=np.uint64)
    widest = pb.SubmitBatchActionsRequest(include_masks=True, delta=True, shared_view="v" * 64)
    write_tensor(widest.game_ids, ids)
    write_tensor(widest.actions, np.zeros((games, MAX_PLAYERS, 5), np.int64))
    write_tensor(widest.seats, ids.astype(np.int64))
    write_tensor(widest.seat_tokens, ids)
    assert widest.ByteSize() <= request_bytes(games) < 1.01 * widest.ByteSize() + (64 << 10)
    assert request_bytes(games) < 24 << 20  # ~22 MB, not the 256 MB of a reply
    assert REQUEST_BYTES_PER_GAME == 8 + MAX_PLAYERS * 5 * 8 + 16


@pytest.mark.parametrize("method", ["SubmitBatchActions", "CreateBatchGames", "StreamSteps"])
def test_an_oversized_request_is_refused_and_changes_nothing(shard, fleet, method):
    ids = fleet.create(4, CONFIG, seeds=[1, 2, 3, 4]).ids
    before = shard.state()
    assert shard.server.max_request_bytes == PER_CALL * REQUEST_BYTES_PER_GAME + (64 << 10)
    payload = oversized(shard.server.max_request_bytes + 1)
    channel = grpc.insecure_channel(shard.address, options=[("grpc.max_send_message_length", 1 << 30)])
    with channel:
        path = f"/{SERVICE.full_name}/{method}"
        if method == "StreamSteps":
            code = code_of(lambda: list(channel.stream_stream(path)(iter([payload]), timeout=30)))
        else:
            code = code_of(lambda: channel.unary_unary(path)(payload, timeout=30))
    assert code == EXHAUSTED
    after = shard.state()
    assert before.keys() == after.keys()
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array, err_msg=name)
    assert fleet.step(ids, np.full((4, 2), -1, np.int32)).rewards.shape == (4, 2)  # still serving


def test_a_large_legitimate_request_is_served(shard, fleet):
    ids = fleet.create(PER_CALL, CONFIG).ids
    request = step_request(ids)
    assert LARGE < len(request) <= shard.server.max_request_bytes
    reply = pb.StepResponse.FromString(unary(shard.address, "SubmitBatchActions")(request, timeout=30))
    assert list(reply.rewards.shape) == [PER_CALL, 2]


# Concurrency: large calls a few at a time -----------------------------------------------------


def test_no_more_large_calls_at_once_than_the_cap(shard, fleet):
    ids = fleet.create(512, CONFIG).ids
    first, second = step_request(ids[:256]), step_request(ids[256:])
    held = HeldSteps(shard)
    gate = shard.server.large_calls
    step = unary(shard.address, "SubmitBatchActions")
    in_flight = step.future(first, timeout=30)
    assert held.entered.acquire(timeout=10)
    assert gate.active == 1
    refused = code_of(lambda: step(second, timeout=30))  # the cap is 1 and nothing may wait
    assert refused == EXHAUSTED and gate.refused == 1
    small = step_request(ids[:8])  # under the threshold: not held back
    assert len(small) < LARGE
    small_call = step.future(small, timeout=30)
    assert held.entered.acquire(timeout=10)  # the small call reached the engine beside the large one
    held.release()
    assert pb.StepResponse.FromString(in_flight.result()).rewards.shape == [256, 2]
    assert pb.StepResponse.FromString(small_call.result()).rewards.shape == [8, 2]
    assert (gate.active, gate.peak, gate.admitted) == (0, 1, 1)
    assert code_of(lambda: step(second, timeout=30)) == grpc.StatusCode.OK  # a turn is free again


def test_large_calls_wait_their_turn_and_the_queue_is_bounded():
    limits = RequestLimits(large_call_bytes=LARGE, large_calls=1, large_call_wait_s=30)
    shard = BackgroundShard(max_games_per_call=PER_CALL, max_games=MAX_GAMES, requests=limits)
    try:
        with FleetClient(shard.address, timeout=30) as fleet:
            ids = fleet.create(512, CONFIG).ids
        held, gate = HeldSteps(shard), shard.server.large_calls
        step = unary(shard.address, "SubmitBatchActions")
        calls = [step.future(step_request(ids[:256]), timeout=30)]
        assert held.entered.acquire(timeout=10)
        calls.append(step.future(step_request(ids[256:]), timeout=30))
        wait_for(lambda: gate.waiting == 1, "the second large call to wait")
        assert code_of(lambda: step(step_request(ids[:256]), timeout=30)) == EXHAUSTED  # one may wait
        held.release()
        assert all(call.code() == grpc.StatusCode.OK for call in calls)
        assert (gate.peak, gate.admitted, gate.refused) == (1, 2, 1)
    finally:
        shard.stop()


def test_a_stream_holds_a_turn_per_large_message(shard, fleet):
    ids = fleet.create(512, CONFIG).ids
    held, gate = HeldSteps(shard), shard.server.large_calls
    channel = grpc.insecure_channel(shard.address)
    stream = channel.stream_stream(f"/{SERVICE.full_name}/StreamSteps")(
        iter([step_request(ids[:256])]), timeout=30
    )
    assert held.entered.acquire(timeout=10)
    assert gate.active == 1
    assert code_of(lambda: unary(shard.address, "SubmitBatchActions")(step_request(ids[256:]))) == EXHAUSTED
    held.release()
    assert len(list(stream)) == 1
    assert gate.active == 0
    channel.close()


def test_the_router_bounds_requests_too(shard, fleet):
    """The router's receive limit, its cap on large calls, and the placement-key cap."""
    limits = RequestLimits(large_call_bytes=LARGE, large_calls=1, large_call_wait_s=0)
    router = BackgroundRouter(StaticSource([shard.address]), max_games_per_call=PER_CALL, requests=limits)
    try:
        assert router.server.max_request_bytes == PER_CALL * REQUEST_BYTES_PER_GAME + (64 << 10)
        step = unary(router.address, "SubmitBatchActions")
        assert code_of(lambda: step(oversized(router.server.max_request_bytes + 1), timeout=30)) == EXHAUSTED
        ids = fleet.create(512, CONFIG, placement_key="router-test").ids
        before = shard.state()
        key = pb.CreateBatchGamesRequest(num_games=2, placement_key="k" * 257).SerializeToString()
        assert code_of(lambda: unary(router.address, "CreateBatchGames")(key, timeout=30)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        np.testing.assert_array_equal(shard.state()["ids"], before["ids"])
        held = HeldSteps(shard)
        in_flight = step.future(step_request(ids[:256]), timeout=30)
        assert held.entered.acquire(timeout=10)
        assert code_of(lambda: step(step_request(ids[256:]), timeout=30)) == EXHAUSTED
        assert (router.server.large_calls.active, router.server.large_calls.refused) == (1, 1)
        held.release()
        assert in_flight.code() == grpc.StatusCode.OK
    finally:
        router.stop()


# Capacity in bytes -----------------------------------------------------------------------------


def test_creates_past_max_memory_are_refused_and_change_nothing():
    shard = BackgroundShard(max_memory_bytes=4 << 20)
    try:
        with FleetClient(shard.address, timeout=30) as fleet:
            small = fleet.create(64, CONFIG).ids  # 8x8, 2 players: a few hundred bytes a game
            big = GameConfig(height=64, width=64, players=8)
            before = shard.state()
            with pytest.raises(ResourceExhausted, match=r"shard memory full.*64x64, 8 players.*--max-memory"):
                fleet.create(256, big)
            after = shard.state()
            for name, array in before.items():
                np.testing.assert_array_equal(after[name], array, err_msg=name)
            assert shard.server.games.memory_bytes() <= 4 << 20
            assert fleet.create(64, CONFIG).ids.size == 64  # what fits is still taken
            assert fleet.step(small, np.full((64, 2), -1, np.int32)).rewards.shape == (64, 2)
    finally:
        shard.stop()


def test_a_served_shard_enforces_its_flags():
    """`gamefleet serve --max-memory --max-request-mb`: both refusals, and the process serves on."""
    process = ServeProcess("--max-memory", "2Mi", "--max-request-mb", "0.25", "--drain-timeout", "0")
    try:
        with FleetClient(process.address, timeout=30) as fleet:
            ids = fleet.create(16, CONFIG).ids
            with pytest.raises(ResourceExhausted, match="max_memory=2097152"):
                fleet.create(256, GameConfig(height=64, width=64, players=8))
            step = unary(process.address, "SubmitBatchActions")
            assert code_of(lambda: step(oversized(300 << 10), timeout=30)) == EXHAUSTED
            assert fleet.step(ids, np.full((16, 2), -1, np.int32)).rewards.shape == (16, 2)
        assert process.terminate() == 0
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


BAD_FLAGS = {
    "bytes": (["serve", "--max-memory", "lots"], {}, "--max-memory: expected bytes"),
    "negative memory": (["serve", "--max-memory", "-1"], {}, "--max-memory: expected bytes"),
    "zero memory": (["serve", "--max-memory", "0"], {}, "must be > 0 bytes"),
    "variable": (["serve"], {"GAMEFLEET_MAX_MEMORY": "1.5 lots"}, "$GAMEFLEET_MAX_MEMORY"),
    "request size": (["serve", "--max-request-mb", "0"], {}, "--max-request-mb: must be > 0"),
    "cap": (["route", "--large-calls", "many"], {}, "--large-calls: expected a count"),
    "wait": (["route", "--large-call-wait", "-1"], {}, "--large-call-wait: must be >= 0"),
}


@pytest.mark.parametrize(("args", "env", "message"), BAD_FLAGS.values(), ids=BAD_FLAGS.keys())
def test_bad_memory_flags_stop_the_start_with_a_message(args, env, message):
    run = subprocess.run(
        [sys.executable, "-m", "gameserver.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    assert run.returncode == 2
    assert message in run.stderr


# The cgroup limit and the default ------------------------------------------------------------

GI = 1 << 30
CGROUPS = {
    "v2 limit": ({"memory.max": "2147483648\n"}, "0::/\n", 2 * GI),
    "v2 no limit": ({"memory.max": "max\n"}, "0::/\n", None),
    "v2 nested, the parent's smaller": (
        {"kubepods/memory.max": f"{GI}\n", "kubepods/pod1/memory.max": f"{4 * GI}\n"},
        "0::/kubepods/pod1\n",
        GI,
    ),
    "v1 limit": (
        {"memory/memory.limit_in_bytes": f"{3 * GI}\n"},
        "4:memory:/\n1:cpu,cpuacct:/\n",
        3 * GI,
    ),
    "v1 no limit": ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, "4:memory:/\n", None),
    "v1 path not in the mount": (
        {"memory/memory.limit_in_bytes": f"{GI}\n"},
        "4:memory,hugetlb:/process_api/abc\n0::/\n",
        GI,
    ),
    "nothing readable": ({}, "", None),
    "garbage": ({"memory.max": "lots\n"}, "0::/\n", None),
}


@pytest.mark.parametrize(("files", "self_cgroup", "limit"), CGROUPS.values(), ids=CGROUPS.keys())
def test_the_cgroup_memory_limit(tmp_path: Path, files, self_cgroup, limit):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup)
    assert cgroup_memory_limit(root, proc) == limit


@pytest.mark.parametrize(
    ("limit", "games"),
    [(None, None), (GI, GI - (384 << 20)), (8 * GI, 6 * GI), (256 << 20, 128 << 20)],
)
def test_the_default_max_memory_leaves_a_margin(limit, games):
    assert default_max_memory(limit) == games


@pytest.mark.parametrize(
    ("text", "value"),
    [("2147483648", 2 * GI), ("2Gi", 2 * GI), ("1.5G", 1_500_000_000), ("512Mi", 512 << 20), ("64k", 64000)],
)
def test_byte_quantities(text, value):
    assert parse_bytes(text) == value
