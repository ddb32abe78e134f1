"""Who may talk to a GameFleet process: TLS (mutual, when a CA for clients is given) and a
per-fleet bearer token, the same settings for a process's server and for the channels it opens
(a router to its shards, a shard to a shard it moves games with or to the replay service, a
client to a fleet).

Nothing set (the default, `gamefleet up`): plaintext, no token, as a loopback fleet needs.
The token travels as `authorization: Bearer <token>` metadata on every call; a server with a
token refuses calls without it (UNAUTHENTICATED) before it parses their request, except the
gRPC health service, which probes and load balancers call without credentials.

Channels here are transports only (TLS or plaintext): the callers add `metadata` to each call
themselves, so the hot path pays for no client interceptor (and nothing at all without a token).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from .services import SERVICE

OPEN_METHODS = ("/grpc.health.v1.Health/",)  # probes carry no token
# Seat play, open to callers without the fleet's token (and with no other): the servicers let
# them only join open seats and move those seats with their seat tokens (Unauthenticated else).
SEAT_METHODS = frozenset(
    f"/{SERVICE.full_name}/{name}" for name in ("JoinGame", "SubmitBatchActions", "StreamSteps")
)
HEADER = "authorization"
ENV = {
    "cert": "GAMEFLEET_TLS_CERT",
    "key": "GAMEFLEET_TLS_KEY",
    "ca": "GAMEFLEET_TLS_CA",
    "server_name": "GAMEFLEET_TLS_SERVER_NAME",
    "client_auth": "GAMEFLEET_TLS_CLIENT_AUTH",
    "token_file": "GAMEFLEET_TOKEN_FILE",
    "token": "GAMEFLEET_TOKEN",
}


class SecurityError(ValueError):
    """Settings that cannot work (a missing file, a certificate without its key): said at start-up."""


def _read(what: str, path: str | os.PathLike | None) -> bytes | None:
    if path is None or path == "":
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SecurityError(f"{what} {path}: {error.strerror or error}") from None
    if not data.strip():
        raise SecurityError(f"{what} {path} is empty")
    return data


@dataclass(frozen=True)
class Credentials:
    """PEM bytes and a token. `cert`/`key`: this process's certificate (its server's, and its
    client certificate where servers ask for one). `ca`: the roots that verify the other side: a
    server with `ca` requires client certificates (mutual TLS); a channel with `ca` (or `tls`)
    speaks TLS. `server_name`: the name channels check the servers' certificates against instead
    of the host they dial (shards are dialled by pod address; one fleet certificate names them)."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    token: str | None = None
    tls: bool = False  # TLS channels verified against the system roots when no `ca` is given
    server_name: str | None = None
    client_auth: bool = True  # a server with `ca` requires client certificates (False: TLS only)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityError("a TLS certificate and its key come together: give both or neither")
        if self.token is not None and (
            not self.token or any(c.isspace() or not c.isprintable() for c in self.token)
        ):
            raise SecurityError(
                "the token must be a non-empty string of printable characters without whitespace"
            )

    @classmethod
    def from_files(
        cls,
        cert: str | os.PathLike | None = None,
        key: str | os.PathLike | None = None,
        ca: str | os.PathLike | None = None,
        token_file: str | os.PathLike | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        server_name: str | None = None,
        client_auth: bool = True,
    ) -> Credentials:
        """PEM files and a token file (its text, stripped), or the `token` itself; a missing or
        empty file is a SecurityError naming it."""
        if token_file:
            token = (_read("token file", token_file) or b"").decode().strip()
        return cls(
            _read("TLS certificate", cert),
            _read("TLS key", key),
            _read("TLS CA", ca),
            token or None,
            tls,
            server_name or None,
            client_auth,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        """$GAMEFLEET_TLS_CERT, $GAMEFLEET_TLS_KEY, $GAMEFLEET_TLS_CA (paths),
        $GAMEFLEET_TLS_SERVER_NAME, and the token from $GAMEFLEET_TOKEN_FILE or $GAMEFLEET_TOKEN;
        none set: plaintext, no token."""
        get = environ.get
        return cls.from_files(
            get(ENV["cert"]),
            get(ENV["key"]),
            get(ENV["ca"]),
            get(ENV["token_file"]),
            token=get(ENV["token"]),
            server_name=get(ENV["server_name"]),
            client_auth=get(ENV["client_auth"], "1").lower() not in ("0", "false", "no"),
        )

    @property
    def secure(self) -> bool:
        """Channels speak TLS."""
        return self.tls or self.ca is not None or self.cert is not None

    # -- servers --------------------------------------------------------------------------------

    def add_port(self, server: aio.Server | grpc.Server, address: str) -> int:
        """Listen on `address`: TLS when there is a certificate (clients must show one signed by
        `ca` when it is given), else plaintext."""
        if self.cert is None:
            return server.add_insecure_port(address)
        tls = grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.client_auth else None,
            require_client_auth=self.ca is not None and self.client_auth,
        )
        return server.add_secure_port(address, tls)

    def server_interceptors(self, seat_play: bool = False) -> list[aio.ServerInterceptor]:
        """For a grpc.aio server: the token check, when there is a token. `seat_play`: callers
        without a token reach SEAT_METHODS (the game servers, which check them further)."""
        return [] if self.token is None else [TokenCheck(self.token, SEAT_METHODS if seat_play else ())]

    def sync_server_interceptors(self) -> list[grpc.ServerInterceptor]:
        """For a blocking grpc server (the replay service)."""
        return [] if self.token is None else [SyncTokenCheck(self.token)]

    # -- channels -------------------------------------------------------------------------------

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What each call on a channel below carries: the bearer token (nothing without one)."""
        return () if self.token is None else ((HEADER, f"Bearer {self.token}"),)

    def _tls(self, options: list[tuple[str, Any]] | None) -> tuple[grpc.ChannelCredentials, list]:
        options = list(options or [])
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert), options

    def channel(self, target: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A blocking channel to `target`: TLS when `secure` (with the client certificate, when
        there is one); its calls must carry `metadata`."""
        if not self.secure:
            return grpc.insecure_channel(target, options=options)
        tls, options = self._tls(options)
        return grpc.secure_channel(target, tls, options=options)

    def aio_channel(self, target: str, options: list[tuple[str, Any]] | None = None) -> aio.Channel:
        """The asyncio twin of `channel`."""
        if not self.secure:
            return aio.insecure_channel(target, options=options)
        tls, options = self._tls(options)
        return aio.secure_channel(target, tls, options=options)

    def with_metadata(
        self, metadata: tuple[tuple[str, str], ...] | None
    ) -> tuple[tuple[str, str], ...] | None:
        """A call's own metadata (trace context, or None) with the token added."""
        if self.token is None:
            return metadata
        return self.metadata if not metadata else (*metadata, *self.metadata)

    def describe(self) -> str:
        """For start-up logs: what this process requires and presents (never the token)."""
        mutual = self.ca and self.cert and self.client_auth
        tls = "plaintext" if not self.secure else ("mutual TLS" if mutual else "TLS")
        return f"{tls}, {'bearer token' if self.token else 'no token'}"


PLAINTEXT = Credentials()


async def health_port(health: Any, address: str) -> tuple[aio.Server, int]:
    """A plaintext port that serves only gRPC health (`--health-port`): the kubelet's gRPC probes
    speak no TLS, and health tells nothing of the games. Started (the caller stops it); its port."""
    from grpc_health.v1 import health_pb2_grpc

    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


def token_matches(metadata: object, token: str) -> bool:
    """The call's metadata carries `Bearer <token>` (compared in constant time)."""
    expected = f"Bearer {token}".encode()
    for name, value in metadata or ():
        if name == HEADER:
            given = value.encode() if isinstance(value, str) else bytes(value)
            return hmac.compare_digest(given, expected)
    return False


def presents_token(metadata: object, token: str | None) -> bool:
    """Whether a call carries the fleet's token (False where the fleet has none)."""
    return token is not None and token_matches(metadata, token)


def _refusal_message(metadata: object) -> str:
    given = any(name == HEADER for name, _ in metadata or ())
    return (
        "the fleet's token is wrong" if given else "this fleet needs a token (authorization: Bearer <token>)"
    )


def _allowed(details: grpc.HandlerCallDetails, token: str, seat_methods: frozenset[str] | tuple = ()) -> bool:
    metadata = details.invocation_metadata
    if details.method.startswith(OPEN_METHODS) or token_matches(metadata, token):
        return True
    return details.method in seat_methods and not any(name == HEADER for name, _ in metadata or ())


def _shaped(handler: grpc.RpcMethodHandler | None, refuse: Callable) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s shape that runs `refuse`; no deserializer: requests stay bytes.
    An unknown method is refused the same way (no hint which methods exist)."""
    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class TokenCheck(aio.ServerInterceptor):
    """Refuses calls without the fleet's token, UNAUTHENTICATED, before their request is parsed."""

    def __init__(self, token: str, seat_methods: frozenset[str] | tuple = ()) -> None:
        self._token = token
        self._seat_methods = seat_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if _allowed(details, self._token, self._seat_methods):
            return await continuation(details)
        message = _refusal_message(details.invocation_metadata)

        async def refuse(_request: object, context: aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return _shaped(await continuation(details), refuse)


class SyncTokenCheck(grpc.ServerInterceptor):
    """TokenCheck for a blocking grpc server."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if _allowed(details, self._token):
            return continuation(details)
        message = _refusal_message(details.invocation_metadata)

        def refuse(_request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return _shaped(continuation(details), refuse)
