"""The servers' interceptor: latency per method and status code, agent connections, server spans.

Installed on the shard's and the router's grpc.aio servers. Per call it reads a clock twice,
notes the caller's connection, and observes one histogram child cached per (method, code);
with tracing on it also opens a SERVER span under the caller's context from the metadata.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from grpc import aio

from . import metrics, tracing

_STEP_METHODS = ("SubmitBatchActions", "StreamSteps")
_MAX_PEERS = 4096  # remembered connections; older ones are dropped first when more appear
PEER_WINDOW_S = 60.0

_interceptors: weakref.WeakSet[ServerTelemetry] = weakref.WeakSet()


def interceptors() -> list[aio.ServerInterceptor]:
    """What a server installs: the telemetry interceptor, unless metrics and tracing are both off."""
    return [ServerTelemetry()] if metrics.RECORDING or tracing.ACTIVE else []


def live_interceptors() -> list[ServerTelemetry]:
    return list(_interceptors)


def _code_of(context: aio.ServicerContext, failed: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class _Recorder:
    """One method's bookkeeping: its histogram children by code, its span name."""

    def __init__(self, owner: ServerTelemetry, method: str) -> None:
        self.owner = owner
        self.method = method
        self.service, _, self.name = method.lstrip("/").partition("/")
        self.steps = self.name in _STEP_METHODS
        self._children: dict[grpc.StatusCode, Any] = {}

    def begin(self, context: aio.ServicerContext) -> float:
        now = time.perf_counter()
        peers = self.owner.peers
        peers[context.peer()] = now
        if len(peers) > _MAX_PEERS:
            self.owner.forget_peers(now)
        return now

    def span(self, context: aio.ServicerContext) -> contextlib.AbstractContextManager:
        """The call's SERVER span under the caller's trace context; none when tracing is off."""
        if not tracing.ACTIVE:
            return contextlib.nullcontext()
        parent = tracing.incoming_context(context.invocation_metadata())
        return tracing.rpc_span(self.method, tracing.SpanKind.SERVER, parent)

    def end(self, started: float, code: grpc.StatusCode) -> None:
        child = self._children.get(code)
        if child is None:
            child = metrics.RPC_SERVER_SECONDS.labels(self.service, self.name, code.name)
            self._children[code] = child
        child.observe(time.perf_counter() - started)
        if self.steps and code is grpc.StatusCode.INVALID_ARGUMENT:
            metrics.INVALID_ACTIONS.inc()


class ServerTelemetry(aio.ServerInterceptor):
    """Wraps every coroutine (unary reply) and async-generator (streamed reply) handler."""

    def __init__(self) -> None:
        self.peers: dict[str, float] = {}  # connection -> perf_counter of its last call
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        _interceptors.add(self)

    def connections(self, window_s: float = PEER_WINDOW_S) -> int:
        """Client connections that made a call within the last `window_s` seconds."""
        self.forget_peers(time.perf_counter(), window_s)
        return len(self.peers)

    def forget_peers(self, now: float, window_s: float = PEER_WINDOW_S) -> None:
        recent = {peer: seen for peer, seen in list(self.peers.items()) if now - seen <= window_s}
        if len(recent) > _MAX_PEERS:
            recent = dict(sorted(recent.items(), key=lambda item: item[1])[-_MAX_PEERS // 2 :])
        self.peers = recent

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        cached = self._handlers.get(details.method)
        if cached is None or cached[0] is not handler:
            cached = self._handlers[details.method] = (handler, self._wrap(details.method, handler))
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        recorder = _Recorder(self, method)
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(_unary(recorder, handler.unary_unary), **codec)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            return grpc.stream_stream_rpc_method_handler(_stream(recorder, handler.stream_stream), **codec)
        return handler


class _Outcome:
    """Whether a call succeeded: it failed unless its handler finished (set at the end)."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = True


@contextlib.contextmanager
def _observed(recorder: _Recorder, context: aio.ServicerContext) -> Iterator[_Outcome]:
    """One call's bookkeeping around its handler: the clock, the SERVER span ended with the
    call's code, then the latency histogram and invalid-action count by that code."""
    started = recorder.begin(context)
    outcome = _Outcome()
    try:
        with recorder.span(context) as span:
            try:
                yield outcome
            finally:
                if span is not None:
                    tracing.finish_rpc(span, _code_of(context, outcome.failed))
    finally:
        recorder.end(started, _code_of(context, outcome.failed))


def _unary(recorder: _Recorder, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: aio.ServicerContext) -> Any:
        with _observed(recorder, context) as outcome:
            reply = await behaviour(request, context)
            outcome.failed = False
            return reply

    return call


def _stream(
    recorder: _Recorder, behaviour: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def call(requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Any]:
        with _observed(recorder, context) as outcome:
            async for reply in behaviour(requests, context):
                yield reply
            outcome.failed = False

    return call
