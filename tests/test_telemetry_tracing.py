"""OpenTelemetry tracing: the spans a step makes, their parents across client -> router -> shard,
sampling, the OTEL_* set-up, and a real OTLP/gRPC export from fleet processes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from router_helpers import BackgroundRouter

from gameserver.bench.otlp_sink import OtlpSink
from gameserver.client import FleetClient, InvalidArgument
from gameserver.engine import GameConfig
from gameserver.local_fleet import LocalFleet
from gameserver.router.topology import StaticSource
from gameserver.telemetry import tracing
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import write_tensor

CONFIG = GameConfig(max_ticks=50)
STEP = "gamefleet.v1.BatchGameService/SubmitBatchActions"
PASS = np.full((4, 2), -1, np.int32)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(exporter, ALWAYS_ON)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture(scope="module")
def fleet_path() -> Iterator[tuple[BackgroundShard, BackgroundRouter]]:
    shard = BackgroundShard(seed=3)
    router = BackgroundRouter(StaticSource([shard.address]))
    try:
        yield shard, router
    finally:
        router.stop()
        shard.stop()


def named(finished: list[ReadableSpan], name: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name and (kind is None or s.kind == kind)]


def parent_of(span: ReadableSpan, finished: list[ReadableSpan]) -> ReadableSpan:
    (parent,) = [s for s in finished if s.context.span_id == span.parent.span_id]
    return parent


def test_a_step_is_traced_from_the_client_through_the_router_to_the_engine(spans, fleet_path) -> None:
    _, router = fleet_path
    with FleetClient(router.address, timeout=30) as client:
        created = client.create(4, CONFIG)
        spans.clear()
        client.step(created.ids, PASS)
    finished = list(spans.get_finished_spans())
    (engine,) = named(finished, "game.run")
    batch = parent_of(engine, finished)
    shard_server = parent_of(batch, finished)
    router_client = parent_of(shard_server, finished)
    router_server = parent_of(router_client, finished)
    client_span = parent_of(router_server, finished)
    chain = [client_span, router_server, router_client, shard_server, batch, engine]
    assert [(s.name, s.kind) for s in chain] == [
        (STEP, SpanKind.CLIENT),
        (STEP, SpanKind.SERVER),
        (STEP, SpanKind.CLIENT),
        (STEP, SpanKind.SERVER),
        ("game.process_actions", SpanKind.INTERNAL),
        ("game.run", SpanKind.INTERNAL),
    ]
    assert client_span.parent is None
    assert len({s.context.trace_id for s in chain}) == 1
    assert router_client.attributes["server.address"] == fleet_path[0].address
    assert shard_server.attributes["rpc.grpc.status_code"] == 0
    assert batch.attributes["gamefleet.batch_games"] == 4
    assert batch.attributes["gamefleet.config"] == "20x20, 2 players"
    assert batch.attributes["gamefleet.max_ticks"] == 50
    assert batch.attributes["gamefleet.shard_games"] >= 4
    assert engine.attributes["gamefleet.seat_tiles"] == 4 * 2 * 400
    assert engine.start_time >= batch.start_time and engine.end_time <= batch.end_time


def test_a_refused_call_marks_its_spans_with_the_status(spans, fleet_path) -> None:
    shard, _ = fleet_path
    with FleetClient(shard.address, timeout=30) as client:
        created = client.create(4, CONFIG)
        spans.clear()
        with pytest.raises(InvalidArgument):
            client.step(created.ids, np.zeros((5, 2), np.int32))
    # the server sends a refusal's status before its handler unwinds: its span ends a moment later
    deadline = time.monotonic() + 10
    while not named(list(spans.get_finished_spans()), STEP, SpanKind.SERVER) and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = list(spans.get_finished_spans())
    (server,) = named(finished, STEP, SpanKind.SERVER)
    (client_span,) = named(finished, STEP, SpanKind.CLIENT)
    for span in (server, client_span):
        assert span.attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
        assert span.status.status_code == trace.StatusCode.ERROR
    assert server.parent.span_id == client_span.context.span_id


def test_parent_based_sampling_follows_the_caller(fleet_path) -> None:
    """Roots are sampled at the ratio (here 0: none), but a caller's sampled trace is continued."""
    shard, _ = fleet_path
    exporter = InMemorySpanExporter()
    tracing.use(exporter, ParentBased(TraceIdRatioBased(0.0)))
    try:
        with FleetClient(shard.address, timeout=30) as client:
            created = client.create(4, CONFIG)
            for _ in range(20):
                client.step(created.ids, PASS)
            assert exporter.get_finished_spans() == ()
            sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            with grpc.insecure_channel(shard.address) as channel:
                channel.unary_unary(f"/{STEP}")(
                    _request(created.ids), timeout=30, metadata=(("traceparent", sampled),)
                )
    finally:
        tracing.shutdown()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == sorted([STEP, "game.process_actions", "game.run"])
    assert {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()} == {
        "0af7651916cd43dd8448eb211c80319c"
    }


def _request(ids: np.ndarray) -> bytes:
    request = pb.SubmitBatchActionsRequest()
    write_tensor(request.game_ids, ids)
    write_tensor(request.actions, PASS)
    return request.SerializeToString()


def test_default_sampler_is_a_low_parent_based_ratio(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    sampler = tracing.default_sampler()
    assert isinstance(sampler, ParentBased)
    assert "TraceIdRatioBased{0.01}" in sampler.get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in tracing.default_sampler().get_description()


@pytest.mark.parametrize(
    ("environment", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"}, True),
    ],
    ids=["no endpoint", "sdk disabled", "traces endpoint"],
)
def test_tracing_is_on_only_with_an_endpoint(monkeypatch, environment, on) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        assert tracing.configure_from_env("gamefleet-test") is on
        assert tracing.ACTIVE is on
    finally:
        tracing.shutdown()


def test_an_unsupported_otlp_protocol_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    with pytest.raises(ValueError, match="grpc only"):
        tracing.configure_from_env("gamefleet-test")
    assert not tracing.ACTIVE


def test_fleet_processes_export_over_otlp_in_the_callers_trace(monkeypatch, spans) -> None:
    """A shard and a router process (real `gamefleet serve` / `route`) export their spans to an
    OTLP/gRPC receiver; the trace is the one this client started (W3C context in the metadata)."""
    with OtlpSink() as sink:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)  # the default: parent-based, 1%
        with LocalFleet(1, router=True) as fleet, FleetClient(fleet.router_address, timeout=60) as client:
            created = client.create(4, CONFIG)
            spans.clear()
            client.step(created.ids, PASS)
            (mine,) = named(list(spans.get_finished_spans()), STEP, SpanKind.CLIENT)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(_in_trace(sink, mine)) < 5:
                time.sleep(0.1)
        exported = _in_trace(sink, mine)
    assert sorted((service, span.name) for service, span in exported) == sorted(
        [
            ("gamefleet-router", STEP),  # served
            ("gamefleet-router", STEP),  # its call to the shard
            ("gamefleet-shard", STEP),
            ("gamefleet-shard", "game.process_actions"),
            ("gamefleet-shard", "game.run"),
        ]
    )
    (router_server,) = [
        s for service, s in exported if service == "gamefleet-router" and s.kind == s.SPAN_KIND_SERVER
    ]
    assert router_server.parent_span_id == mine.context.span_id.to_bytes(8, "big")


def _in_trace(sink: OtlpSink, root: ReadableSpan) -> list:
    trace_id = root.context.trace_id.to_bytes(16, "big")
    return [(service, span) for service, span in sink.received() if span.trace_id == trace_id]


def test_a_step_stream_carries_the_callers_trace_to_the_shard(spans, fleet_path) -> None:
    shard, _ = fleet_path
    with FleetClient(shard.address, timeout=30) as client:
        created = client.create(4, CONFIG)
        spans.clear()
        with tracing.span("trainer.rollout") as rollout, client.stream() as steps:
            for _ in range(3):
                steps.step(created.ids, PASS)
    deadline = time.monotonic() + 10  # the stream's server span ends as the stream winds down
    while not named(list(spans.get_finished_spans()), "gamefleet.v1.BatchGameService/StreamSteps"):
        assert time.monotonic() < deadline, "the stream's server span never ended"
        time.sleep(0.01)
    finished = list(spans.get_finished_spans())
    (server,) = named(finished, "gamefleet.v1.BatchGameService/StreamSteps", SpanKind.SERVER)
    assert server.parent.span_id == rollout.get_span_context().span_id
    batches = named(finished, "game.process_actions")
    assert len(batches) == 3 and all(b.parent.span_id == server.context.span_id for b in batches)
