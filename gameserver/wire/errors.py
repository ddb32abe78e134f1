"""One error hierarchy for both ends of the wire, each class bound to its gRPC status code.

The shard raises these (or lets the pool's, store's and codec's own errors through) and the
servicer turns any of them into a status with details; the client turns a failed RPC back into
the same class, so a trainer catches `NotFound` rather than parsing `grpc.RpcError`.

Layers below the wire know nothing of gRPC, and the wire imports none of them: an exception of
theirs names its status by a class attribute `status_code` (a canonical code name such as
"NOT_FOUND"), and may give `status_details` (else its message). Any other ValueError is a
malformed request (INVALID_ARGUMENT); anything else is a bug (INTERNAL, logged).
"""

from __future__ import annotations

import logging

import grpc


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


class Unauthenticated(GameFleetError):
    """A call without the fleet's token (or with a wrong one) where the fleet has one; a caller
    without it may only join open seats and move them with their seat tokens: no game changed."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Aborted(GameFleetError):
    """A call whose outcome the caller must read before retrying: a seat call whose game was
    closed while it waited for the other seats; a step that ran but whose log entry Redis did not
    confirm (applied, not acknowledged); a call its shard cancelled as it stopped (it may have run).
    Read the games (their `tick`), then decide: a blind retry may play a step twice."""

    code = grpc.StatusCode.ABORTED


class Unavailable(GameFleetError):
    """The shard is not reachable, shutting down or draining, its Redis is down (durability mode
    fail), or the games moved (a retry through a fresh ring reaches them): no game changed."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(GameFleetError):
    """Games whose state Redis cannot vouch for: restored to an earlier tick than their clients
    may have acknowledged (a shard that died while degraded, snapshot mode), or whose records
    Redis lost. Reading the restored games (GetBatchStates) acknowledges them; until then their
    other calls answer this and change nothing."""

    code = grpc.StatusCode.DATA_LOSS


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
        Unauthenticated,
        Aborted,
        DataLoss,
    )
}


def as_service_error(error: Exception) -> GameFleetError | None:
    """The status a server answers for an exception from a request's own data; None for a bug.

    The lower layers raise before anything changes (their contract), so mapping their errors
    to a status keeps "a refused call changed no game" true.
    """
    if isinstance(error, GameFleetError):
        return error
    code = getattr(error, "status_code", None)
    if isinstance(code, str) and code in grpc.StatusCode.__members__:
        return from_status(grpc.StatusCode[code], getattr(error, "status_details", None) or str(error))
    if isinstance(error, ValueError):
        return InvalidArgument(str(error))
    return None


def status_of(error: Exception, log: logging.Logger) -> GameFleetError:
    """The status to answer for any exception; a bug becomes INTERNAL and is logged with its trace."""
    status = as_service_error(error)
    if status is None:
        log.exception("request failed", exc_info=error)
        status = GameFleetError(f"internal error: {type(error).__name__}: {error}", grpc.StatusCode.INTERNAL)
    return status


async def abort(context: grpc.aio.ServicerContext, error: Exception, log: logging.Logger) -> None:
    """End an asyncio call with the status of `error` (the server keeps serving)."""
    status = status_of(error, log)
    await context.abort(status.code, status.details)


def from_status(code: grpc.StatusCode, details: str) -> GameFleetError:
    """The GameFleetError subclass for a status (GameFleetError itself for other codes)."""
    return _BY_CODE.get(code, GameFleetError)(details, code)


def from_rpc_error(error: grpc.RpcError) -> GameFleetError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    return from_status(code, details)
