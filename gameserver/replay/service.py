"""ReplayService: one ReplayBuffer served over gRPC, so many actors feed one learner.

A plain (threaded) grpc server: Insert and Sample may block in the rate limiter, and a
blocked call simply holds its worker thread until it is permitted, until the call's deadline,
or for at most `max_wait_s` (then DEADLINE_EXCEEDED). Handlers take raw bytes and parse them
here, so a malformed payload is INVALID_ARGUMENT naming the problem (gRPC's own deserializer
would answer INTERNAL) and the buffer is untouched: the buffer checks everything before it
changes anything.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..telemetry.collectors import watch_replay
from ..wire.errors import InvalidArgument, status_of
from ..wire.generated import replay_pb2 as rpb
from ..wire.limits import MAX_MESSAGE_BYTES, channel_options
from ..wire.messages import parse_request, read_tensor, write_tensor
from ..wire.replay import info_to_proto, read_fields, write_fields
from ..wire.security import PLAINTEXT, Credentials
from ..wire.services import REPLAY_SERVICE
from .buffer import ReplayBuffer

MAX_BATCH = 1 << 20  # items one Sample may ask for
log = logging.getLogger(__name__)


def _refuse(handler: Callable[..., bytes]) -> Callable[..., bytes]:
    """A refused request ends with its status; the server keeps serving."""

    def unary(self: ReplayServicer, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return handler(self, raw, context)
        except Exception as error:
            status = status_of(error, log)
            context.abort(status.code, status.details)

    return unary


class ReplayServicer:
    """The ReplayService methods over one buffer: bytes in, bytes out."""

    def __init__(self, buffer: ReplayBuffer, *, max_wait_s: float = 30.0) -> None:
        self.buffer = buffer
        self.max_wait_s = max_wait_s

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            m.name: grpc.unary_unary_rpc_method_handler(getattr(self, m.name)) for m in REPLAY_SERVICE.methods
        }
        return grpc.method_handlers_generic_handler(REPLAY_SERVICE.full_name, methods)

    def _wait(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.max_wait_s if remaining is None else max(0.0, min(self.max_wait_s, remaining))

    @_refuse
    def Insert(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = parse_request(rpb.InsertRequest, raw)
        columns = read_fields(request.fields)
        priorities = read_tensor(request.priorities, "priorities") if request.HasField("priorities") else None
        keys = self.buffer.insert(columns, priorities, timeout=self._wait(context))
        reply = rpb.InsertResponse(size=self.buffer.size)
        write_tensor(reply.keys, keys)
        return reply.SerializeToString()

    @_refuse
    def Sample(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = parse_request(rpb.SampleRequest, raw)
        if not 1 <= request.batch_size <= MAX_BATCH:
            raise InvalidArgument(f"batch_size must be in [1, {MAX_BATCH}], got {request.batch_size}")
        beta = request.beta if request.HasField("beta") else None
        batch = self.buffer.sample_batch(request.batch_size, beta, timeout=self._wait(context))
        reply = rpb.SampleResponse()
        write_fields(reply.fields, batch.fields)
        write_tensor(reply.keys, batch.keys)
        write_tensor(reply.probabilities, batch.probabilities)
        write_tensor(reply.weights, batch.weights)
        return reply.SerializeToString()

    @_refuse
    def UpdatePriorities(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = parse_request(rpb.UpdatePrioritiesRequest, raw)
        keys = read_tensor(request.keys, "keys")
        if keys.dtype != np.uint64:
            raise InvalidArgument(f"keys must be a uint64 tensor, got {keys.dtype}")
        priorities = read_tensor(request.priorities, "priorities")
        updated = self.buffer.update_priorities(keys, priorities)
        return rpb.UpdatePrioritiesResponse(updated=updated, stale=keys.size - updated).SerializeToString()

    @_refuse
    def Info(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        parse_request(rpb.InfoRequest, raw)
        return info_to_proto(self.buffer.info(), self.buffer.spec).SerializeToString()


class ReplayServer:
    """A ReplayService on host:port (port 0 picks a free one; `address` tells which after start)."""

    def __init__(
        self,
        buffer: ReplayBuffer,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int = 16,
        max_wait_s: float = 30.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        self.buffer = buffer
        self.credentials = credentials  # TLS on its port, the token its calls must carry
        watch_replay(buffer)
        self.host, self.port = host, port
        self.health = health.HealthServicer()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(workers, thread_name_prefix="replay"),
            options=channel_options(max_message_bytes),
            interceptors=credentials.sync_server_interceptors(),
        )
        self._server.add_generic_rpc_handlers((ReplayServicer(buffer, max_wait_s=max_wait_s).handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> ReplayServer:
        self.port = self.credentials.add_port(self._server, self.address)
        self._server.start()
        for service in ("", REPLAY_SERVICE.full_name):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, then let in-flight calls finish within `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(0)

    def serve_until_signal(self, grace: float = 5.0) -> None:
        """Start, print the address, serve until SIGINT/SIGTERM, then stop gracefully."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        print(f"gamefleet replay serving on {self.address}", flush=True)
        while not stop.wait(0.5):
            pass
        self.stop(grace)
