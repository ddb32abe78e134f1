"""What a request may cost a server in memory before it is parsed (DESIGN.md, Security: memory).

Two bounds, on the shard and on the router alike:

- Size. gRPC's receive limit (`grpc.max_receive_message_length`) is checked by the gRPC core on
  a message's length prefix, before its bytes are buffered: a request over it is answered
  RESOURCE_EXHAUSTED and costs the server nothing measurable (benchmarks/RESULTS.md, "Memory").
  A gRPC server takes one limit for all its methods (per-method limits exist only in a client's
  service config), so the default is the largest request a legitimate call can make under the
  server's batch limit (`request_bytes`), not the reply limit: replies carry observations
  (kilobytes per game), requests carry ids and moves (a few hundred bytes per game at most).
- Concurrency. A request under the limit reaches Python as one bytes object; parsing it and
  serving it take a few copies more. `LargeCalls` lets at most `limit` calls whose request
  passes `threshold` bytes be parsed and served at once; up to `limit` more wait for a turn (at
  most `wait_s`), and any beyond those, or still waiting after `wait_s`, are refused with
  RESOURCE_EXHAUSTED, their bytes dropped at once. Smaller calls pass without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from .errors import ResourceExhausted, abort
from .limits import LARGE_CALL_BYTES, LARGE_CALL_WAIT_S, LARGE_CALLS, request_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestLimits:
    """A server's bounds on requests (`gamefleet serve/route --max-request-mb --large-calls ...`)."""

    max_request_bytes: int | None = None  # None: request_bytes() of the server's batch limit
    large_call_bytes: int = LARGE_CALL_BYTES
    large_calls: int = LARGE_CALLS
    large_call_wait_s: float = LARGE_CALL_WAIT_S

    def receive_bytes(self, max_games_per_call: int, max_games: int, max_message_bytes: int) -> int:
        """The receive limit: as set, else sized from the batch limits; never over the message limit."""
        limit = self.max_request_bytes
        if limit is None:
            limit = request_bytes(max_games_per_call, max_games)
        return min(limit, max_message_bytes)

    def gate(self) -> LargeCalls:
        return LargeCalls(self.large_call_bytes, self.large_calls, self.large_call_wait_s)


class LargeCalls:
    """At most `limit` calls with requests over `threshold` bytes served at once (module doc).

    `active` (now), `peak` (since start), `waiting`, `admitted` and `refused` are read by the
    metrics (telemetry/collectors.py) and the tests."""

    def __init__(self, threshold: int, limit: int, wait_s: float) -> None:
        self.threshold, self.limit, self.wait_s = threshold, limit, wait_s
        self.active = 0
        self.peak = 0
        self.waiting = 0
        self.admitted = 0
        self.refused = 0
        self._turns = asyncio.Semaphore(max(limit, 1))

    async def acquire(self, size: int) -> bool:
        """Admit a request of `size` bytes: False if it is small (nothing held), True once it holds
        a turn (call `release`); ResourceExhausted if it may not wait or waited too long."""
        if size <= self.threshold or self.limit <= 0:
            return False
        if self._turns.locked():
            if self.waiting >= self.limit or self.wait_s <= 0:
                self._refuse(size, "and as many wait")
            self.waiting += 1
            try:
                async with asyncio.timeout(self.wait_s):
                    await self._turns.acquire()
            except TimeoutError:
                self._refuse(size, f"for {self.wait_s:g} s")
            finally:
                self.waiting -= 1
        else:
            await self._turns.acquire()  # free: returns at once
        self.active += 1
        self.admitted += 1
        self.peak = max(self.peak, self.active)
        return True

    def release(self) -> None:
        self.active -= 1
        self._turns.release()

    def _refuse(self, size: int, why: str) -> None:
        self.refused += 1
        raise ResourceExhausted(
            f"request of {size} bytes: {self.limit} calls over {self.threshold} bytes are being served "
            f"{why}, the limit is {self.limit}: retry later, or send smaller batches"
        )

    def wrap(self, handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """`handler`'s methods (bytes in, no deserializer) behind this gate: unary calls by their
        request, streams by each message (held until the next one is read)."""
        return _Gated(handler, self)

    def _unary(self, behaviour: Callable[..., Awaitable[bytes]]) -> Callable[..., Awaitable[bytes]]:
        async def gated(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                held = await self.acquire(len(request))
            except ResourceExhausted as error:
                await abort(context, error, log)
            try:
                return await behaviour(request, context)
            finally:
                if held:
                    self.release()

        return gated

    def _stream(self, behaviour: Callable[..., AsyncIterator[bytes]]) -> Callable[..., AsyncIterator[bytes]]:
        async def gated(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            # a refusal is raised to the behaviour's loop over the requests, which ends the stream with it
            async with contextlib.aclosing(self._each(requests)) as admitted:
                async for reply in behaviour(admitted, context):
                    yield reply

        return gated

    async def _each(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for request in requests:
            held = await self.acquire(len(request))
            try:
                yield request
            finally:
                if held:
                    self.release()


class _Gated(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, gate: LargeCalls) -> None:
        self._inner, self._gate = inner, gate

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = self._inner.service(handler_call_details)
        if method is None or method.request_deserializer is not None:
            return method  # only bytes-in methods: their request's size is the bytes' length
        if method.unary_unary is not None:
            return method._replace(unary_unary=self._gate._unary(method.unary_unary))
        if method.stream_stream is not None:
            return method._replace(stream_stream=self._gate._stream(method.stream_stream))
        return method
