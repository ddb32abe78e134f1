"""One error hierarchy for both ends of the wire, each class bound to its gRPC status code.

The shard raises these (or lets the pool's and codec's own errors through) and the servicer
turns any of them into a status with details; the client turns a failed RPC back into the
same class, so a trainer catches `NotFound` rather than parsing `grpc.RpcError`.
"""

from __future__ import annotations

import grpc

from ..pool import PoolFullError, UnknownGameError
from ..store import StoreUnavailableError


class GameFleetError(Exception):
    """A call the service refused or could not serve; `code` and `details` are the gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


class InvalidArgument(GameFleetError, ValueError):
    """Malformed request (sizes, dtypes, ranges, config): no game changed. Also a ValueError,
    like the client's own checks of its arguments."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GameFleetError):
    """Game ids this shard does not hold (never created, or closed): no game changed."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(GameFleetError):
    """Too many games for one call, one shard, or one message: no game changed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unimplemented(GameFleetError):
    code = grpc.StatusCode.UNIMPLEMENTED


class FailedPrecondition(GameFleetError):
    """A call that does not fit the game's mode (a seat call on a self-play game, a self-play
    call on an open-seat game, a seat that already acted this tick): no game changed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(GameFleetError):
    """JoinGame for a seat someone already holds."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(GameFleetError):
    """A seat call whose token does not hold the seat it names: no game changed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(GameFleetError):
    """A seat call whose game was closed while it waited for the other seats."""

    code = grpc.StatusCode.ABORTED


class Unavailable(GameFleetError):
    """The shard is not reachable, shutting down or draining, its Redis is down (durability mode
    fail), or the games moved (a retry through a fresh ring reaches them): no game changed."""

    code = grpc.StatusCode.UNAVAILABLE


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        Unimplemented,
        Unavailable,
        FailedPrecondition,
        AlreadyExists,
        PermissionDenied,
        Aborted,
    )
}


def as_service_error(error: Exception) -> GameFleetError | None:
    """The status a shard answers for an exception from a request's own data; None for a bug.

    Pool and codec errors are raised before anything changes (their contract), so mapping
    them to a status keeps "a refused call changed no game" true.
    """
    if isinstance(error, GameFleetError):
        return error
    if isinstance(error, StoreUnavailableError):  # on-redis-error=fail
        if error.applied:  # Redis failed while the step ran: done here, not durable, not acknowledged
            return Unavailable(
                "durability store unavailable: the step was applied but its log entry was not "
                f"confirmed, so it is not acknowledged; read the games before retrying: {error}"
            )
        return Unavailable(
            f"durability store unavailable, the call changed nothing (on-redis-error=fail): {error}"
        )
    if isinstance(error, UnknownGameError):
        return NotFound(error.message)
    if isinstance(error, PoolFullError):
        return ResourceExhausted(str(error))
    if isinstance(error, ValueError):
        return InvalidArgument(str(error))
    return None


def from_status(code: grpc.StatusCode, details: str) -> GameFleetError:
    """The GameFleetError subclass for a status (GameFleetError itself for other codes)."""
    return _BY_CODE.get(code, GameFleetError)(details, code)


def from_rpc_error(error: grpc.RpcError) -> GameFleetError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    return from_status(code, details)
