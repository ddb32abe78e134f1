"""OpenTelemetry tracing: set up from the standard OTEL_* variables, carried in gRPC metadata.

Off unless an OTLP endpoint is named (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_SDK_DISABLED is not true, which is how the
operator's ConfigMap switches it. When off, every helper here is one flag test.

Sampling: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG as the SDK reads them; unset, a
parent-based ratio of DEFAULT_RATIO, so a trainer's sampled call is traced through the router
and the shard while most steps cost nothing. Spans:
  <service>/<method>     a CLIENT span per call a FleetClient or the router makes, and a
                         SERVER span per RPC a shard or router serves (grpc_server.py)
  game.process_actions   a shard's handling of one batch of actions
  game.run               the engine running a batch (on the engine's worker thread)
The W3C trace context (and baggage) travel in the calls' metadata (`traceparent`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

try:  # the telemetry extra (gamefleet[telemetry]); without it tracing stays off
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        ParentBased,
        Sampler,
        TraceIdRatioBased,
        _get_from_env_or_default,
    )
    from opentelemetry.trace import SpanKind, Status, StatusCode

    AVAILABLE = True
except ImportError:  # a client or an env installed without it: every helper sees ACTIVE False
    AVAILABLE = False
    ALWAYS_ON = SpanKind = None  # used only while ACTIVE, which use() alone sets

T = TypeVar("T")
DEFAULT_RATIO = 0.01
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_MISSING = "tracing needs OpenTelemetry: pip install 'gamefleet[telemetry]'"
ACTIVE = False  # read on the hot path: nothing else is touched while it is False
_PARENT_BASED = False  # the sampler follows the caller: an unsampled caller's spans need not exist
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = trace.NoOpTracer() if AVAILABLE else None


def default_sampler() -> Sampler:
    """The SDK's choice when OTEL_TRACES_SAMPLER is set, else a parent-based DEFAULT_RATIO."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return _get_from_env_or_default()
    return ParentBased(TraceIdRatioBased(DEFAULT_RATIO))


def configure_from_env(service_name: str) -> bool:
    """Trace to the OTLP endpoint the environment names (gRPC protocol); False when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return False
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol != "grpc":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: GameFleet exports OTLP over grpc only")
    if not AVAILABLE:
        raise RuntimeError(_MISSING)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    use(OTLPSpanExporter(), default_sampler(), service_name=service_name, batch=True)
    return True


def use(
    exporter: SpanExporter,
    sampler: Sampler = ALWAYS_ON,
    *,
    service_name: str = "gamefleet",
    batch: bool = False,
) -> TracerProvider:
    """Trace into `exporter` from now on (tests hand an InMemorySpanExporter). With `batch`, spans
    are exported from a background thread (OTEL_BSP_* tune it); else as each one ends."""
    global ACTIVE, _PARENT_BASED, _provider, _tracer
    if not AVAILABLE:
        raise RuntimeError(_MISSING)
    shutdown()
    _PARENT_BASED = isinstance(sampler, ParentBased)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(sampler=sampler, resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider, _tracer, ACTIVE = provider, provider.get_tracer("gameserver"), True
    return provider


def shutdown() -> None:
    """Export what is pending and stop tracing."""
    global ACTIVE, _provider, _tracer
    ACTIVE = False
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer() if AVAILABLE else None


# Spans -------------------------------------------------------------------------------------


def _dropped(parent: otel_context.Context | None = None) -> bool:
    """The caller's trace is not sampled and the sampler follows it: a span here would be dropped
    anyway, so none is made (the SDK spends tens of µs on a span it then drops)."""
    if not _PARENT_BASED:
        return False
    caller = trace.get_current_span(parent).get_span_context()
    return caller.is_valid and not caller.trace_flags.sampled


def recording() -> bool:
    """Whether the current span records (worth computing attributes for)."""
    return ACTIVE and trace.get_current_span().is_recording()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager:
    """A span, child of the current one (call only when ACTIVE)."""
    if _dropped():
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes)


def in_span(name: str, work: Callable[[], T], attributes: Mapping[str, Any] | None = None) -> Callable[[], T]:
    """`work` to run on another thread inside a span that is a child of the current one here
    (a thread pool does not carry context variables); `work` itself when tracing is off."""
    if not ACTIVE or _dropped():
        return work
    parent = otel_context.get_current()

    def traced() -> T:
        with _tracer.start_as_current_span(name, context=parent, attributes=attributes):
            return work()

    return traced


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span."""
    trace.get_current_span().set_attributes(attributes)


@contextlib.contextmanager
def rpc_span(
    method: str, kind: SpanKind, parent: otel_context.Context | None = None, target: str | None = None
) -> Iterator[trace.Span | None]:
    """A span for one call of `/service/method` (set its code with `finish_rpc`), under `parent`
    if given. None when the caller's trace is not sampled: its context is then made current,
    so what runs inside (and the calls it makes) carries the caller's decision on."""
    if _dropped(parent):
        token = None if parent is None else otel_context.attach(parent)
        try:
            yield None
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    if target:
        attributes["server.address"] = target
    with _tracer.start_as_current_span(
        f"{service}/{name}", context=parent, kind=kind, attributes=attributes, record_exception=False
    ) as s:
        yield s


@contextlib.contextmanager
def client_span(method: str, target: str | None = None) -> Iterator[tuple[tuple[str, str], ...]]:
    """A CLIENT span around one outgoing call; yields the metadata that carries it to the server."""
    with rpc_span(method, SpanKind.CLIENT, target=target) as s:
        try:
            yield outgoing_metadata()
        except grpc.RpcError as error:
            finish_rpc(s, error.code())
            raise
        finish_rpc(s, grpc.StatusCode.OK)


def finish_rpc(s: trace.Span | None, code: Any) -> None:
    """Record a call's gRPC status on its span (an error status unless OK)."""
    if s is None:
        return
    s.set_attribute("rpc.grpc.status_code", code.value[0])
    if code.name != "OK":
        s.set_status(Status(StatusCode.ERROR, code.name))


# Propagation (W3C trace context in gRPC metadata) -----------------------------------------------


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata entries (`traceparent`, ...)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def incoming_context(metadata: Sequence[tuple[str, Any]] | None) -> otel_context.Context | None:
    """The caller's trace context from a call's metadata; None when it sent none."""
    fields = propagate.get_global_textmap().fields
    carrier = {key: value for key, value in metadata or () if key in fields and isinstance(value, str)}
    return propagate.extract(carrier) if carrier else None
