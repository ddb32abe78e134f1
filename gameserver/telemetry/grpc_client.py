"""Outgoing calls: latency per method, code and target, calls in flight, and CLIENT spans.

The router wraps each call to a shard in `ClientCall`; entering it yields the metadata to
send (the W3C trace context when tracing is on, else None).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import grpc

from . import metrics, tracing

_SERVICE = "gamefleet.v1.BatchGameService"
_children: dict[tuple[str, str, grpc.StatusCode], Any] = {}


class ClientCall:
    """`with ClientCall(target, method) as metadata:` around one blocking or awaited call."""

    __slots__ = ("_inflight", "_span", "_span_cm", "_started", "method", "target")

    def __init__(self, target: str, method: str) -> None:
        self.target, self.method = target, method

    def __enter__(self) -> tuple[tuple[str, str], ...] | None:
        self._inflight = metrics.SHARD_CALLS_INFLIGHT.labels(self.target)
        self._inflight.inc()
        self._span_cm = self._span = None
        metadata = None
        if tracing.ACTIVE:
            self._span_cm = tracing.rpc_span(
                f"/{_SERVICE}/{self.method}", tracing.SpanKind.CLIENT, target=self.target
            )
            self._span = self._span_cm.__enter__()
            metadata = tracing.outgoing_metadata()
        self._started = time.perf_counter()
        return metadata

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._started
        self._inflight.dec()
        if error is None:
            code = grpc.StatusCode.OK
        elif isinstance(error, grpc.RpcError):
            code = error.code()
        else:
            code = grpc.StatusCode.UNKNOWN
        key = (self.target, self.method, code)
        child = _children.get(key)
        if child is None:
            child = _children[key] = metrics.RPC_CLIENT_SECONDS.labels(
                _SERVICE, self.method, code.name, self.target
            )
        child.observe(elapsed)
        if self._span_cm is not None:
            tracing.finish_rpc(self._span, code)
            self._span_cm.__exit__(kind, error, tb)
