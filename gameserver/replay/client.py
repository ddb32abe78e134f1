"""Clients of the ReplayService: ReplayClient (insert, sample, priorities) and TransitionPusher.

The pusher is what an actor runs beside its rollout loop: it turns each self-play step
into transitions (numpy, in the caller's thread, since the caller's buffers change on the next
step) and sends them from a background thread, so stepping and sending overlap. Its queue is
bounded: when the learner's rate limiter holds inserts back, the actor slows down too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping

import grpc
import numpy as np

from ..engine import GameConfig
from ..wire.errors import from_rpc_error
from ..wire.generated import replay_pb2 as rpb
from ..wire.generated import replay_pb2_grpc as rpb_grpc
from ..wire.limits import channel_options
from ..wire.messages import read_tensor, write_tensor
from ..wire.replay import info_from_proto, read_fields, write_fields
from ..wire.security import PLAINTEXT, Credentials
from .buffer import SampleBatch
from .transitions import CapturedPlanes, Planes, StepFlags, capture, make_transitions, transition_spec

_END = object()


class ReplayClient:
    """Blocking client of one ReplayService; errors are GameFleetError subclasses (service.errors)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        max_message_bytes: int | None = None,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        options = channel_options() if max_message_bytes is None else channel_options(max_message_bytes)
        self.address = address
        self.timeout = timeout
        self._metadata = credentials.metadata or None  # the token (TLS: the channel's)
        self._channel = credentials.channel(address, options)
        self._stub = rpb_grpc.ReplayServiceStub(self._channel)

    def __enter__(self) -> ReplayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: object, timeout: float | None) -> object:
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def insert(
        self, fields: Mapping[str, object], priorities: object = None, *, timeout: float | None = None
    ) -> np.ndarray:
        """Append a batch (each field [n, ...]); returns the new keys. Blocks while rate limited."""
        request = rpb.InsertRequest()
        write_fields(request.fields, {name: np.asarray(column) for name, column in fields.items()})
        if priorities is not None:
            write_tensor(request.priorities, np.asarray(priorities, np.float64))
        return read_tensor(self._call("Insert", request, timeout).keys, "keys")

    def sample(
        self, batch_size: int, beta: float | None = None, *, timeout: float | None = None
    ) -> SampleBatch:
        """`batch_size` items with keys, probabilities and importance weights (read-only arrays)."""
        reply = self._call("Sample", rpb.SampleRequest(batch_size=batch_size, beta=beta), timeout)
        return SampleBatch(
            keys=read_tensor(reply.keys, "keys"),
            fields=read_fields(reply.fields),
            probabilities=read_tensor(reply.probabilities, "probabilities"),
            weights=read_tensor(reply.weights, "weights"),
        )

    def update_priorities(self, keys: object, priorities: object) -> int:
        """New priorities by key; returns how many items were still stored (the rest: overwritten)."""
        request = rpb.UpdatePrioritiesRequest()
        write_tensor(request.keys, np.asarray(keys))
        write_tensor(request.priorities, np.asarray(priorities))
        return self._call("UpdatePriorities", request, None).updated

    def info(self) -> dict[str, object]:
        """Capacity, size, counts, sampler settings, the spec and the rate limiter's settings."""
        return info_from_proto(self._call("Info", rpb.InfoRequest(), None))

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)


class TransitionPusher:
    """Send self-play transitions (`rl.transitions`) of a fixed batch of games to a ReplayService.

    Per step: `before = pusher.capture(view)` before stepping, then `pusher.push(...)` with the
    step's outcome. A failed send is raised by the next `push` or by `close`.
    """

    def __init__(
        self,
        address: str,
        config: GameConfig,
        *,
        seats: object = None,
        max_pending: int = 4,
        chunk_bytes: int = 32 << 20,
        timeout: float = 60.0,
        credentials: Credentials = PLAINTEXT,
    ) -> None:
        self.client = ReplayClient(address, timeout=timeout, credentials=credentials)
        spec = transition_spec(config)
        served = self.client.info()["spec"]
        if served != spec:
            self.client.close()
            raise ValueError(
                f"the replay service at {address} stores {served}, but {config.height}x{config.width} "
                f"self-play transitions are {spec}: start it with the same board size"
            )
        self.seats = None if seats is None else np.asarray(seats, np.int64)
        item_bytes = sum(s.dtype.itemsize * int(np.prod(s.shape)) for s in spec.values())
        self._rows_per_call = max(1, chunk_bytes // item_bytes)
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self.pushed = 0  # transitions the service has accepted
        self._thread = threading.Thread(target=self._send, name="transition-pusher", daemon=True)
        self._thread.start()

    capture = staticmethod(capture)

    def push(
        self,
        ids: np.ndarray,
        before: CapturedPlanes,
        actions: np.ndarray,
        step: StepFlags,
        after: Planes,
        final: Planes | None,
    ) -> None:
        """Queue one step's transitions (blocks while `max_pending` batches wait to be sent).

        `step` is the step's PoolStep or client StepReply; `after` the views after it and
        `final` the finished episodes' last views (`final_observation(s)` of either).
        """
        self._raise_failure()
        items = make_transitions(ids, before, actions, step, after, final, self.seats)
        self._queue.put(items)

    def close(self) -> None:
        """Send what is queued, stop the sender, close the channel; raise a failed send."""
        self._queue.put(_END)
        self._thread.join()
        self.client.close()
        self._raise_failure()

    def __enter__(self) -> TransitionPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _send(self) -> None:
        finished = False
        while not finished:
            batches = [self._queue.get()]
            while not self._queue.empty():  # steps that queued up while the last call ran: one call
                batches.append(self._queue.get_nowait())
            finished = batches[-1] is _END
            batches = [b for b in batches if b is not _END]
            if self._error is not None or not batches:
                continue  # keep draining so `push` never blocks on a dead sender
            try:
                items = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
                rows = items["action"].shape[0]
                for start in range(0, rows, self._rows_per_call):
                    self.client.insert({k: v[start : start + self._rows_per_call] for k, v in items.items()})
                self.pushed += rows
            except BaseException as error:  # handed to the actor's thread by push/close
                self._error = error
