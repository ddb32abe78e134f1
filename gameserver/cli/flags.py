"""Flags the server subcommands share (serve, route)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def add_reflection_argument(parser: argparse.ArgumentParser) -> None:
    """--reflection: gRPC server reflection, off unless asked for ($GAMEFLEET_REFLECTION=1): it maps
    the whole API for anyone who reaches the port. `gamefleet up` turns it on for local tools."""
    parser.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("GAMEFLEET_REFLECTION") == "1",
        help="serve gRPC reflection (default: $GAMEFLEET_REFLECTION=1, else off)",
    )


def _seconds(minimum_exclusive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if not (value > 0 if minimum_exclusive else value >= 0):
            raise argparse.ArgumentTypeError(f"must be {'> 0' if minimum_exclusive else '>= 0'}, got {text}")
        return value

    return parse


def add_idle_close_argument(parser: argparse.ArgumentParser) -> None:
    """--idle-close-seconds: games nobody calls go (shard/idle.py)."""
    parser.add_argument(
        "--idle-close-seconds", type=_seconds(True), default=os.environ.get("GAMEFLEET_IDLE_CLOSE_SECONDS"),
        help="close the games of a placement key no call named for this long: no orphans when a "
        "client loses a create's reply (default: $GAMEFLEET_IDLE_CLOSE_SECONDS, else never)",
    )  # fmt: skip


def add_redis_timing_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--redis-timeout, --redis-breaker: what a hung or unreachable Redis may cost one call."""
    env = os.environ.get
    parser.add_argument(
        "--redis-timeout", type=_seconds(True), default=env("GAMEFLEET_REDIS_TIMEOUT_SECONDS") or 2.0,
        help="the most one Redis command may take, connect, send and reply (s; "
        "default: $GAMEFLEET_REDIS_TIMEOUT_SECONDS, else 2)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-breaker", type=_seconds(False), default=env("GAMEFLEET_REDIS_BREAKER_SECONDS") or 1.0,
        help="after a Redis command that got no answer, seconds the next ones fail at once without "
        "trying Redis (0: off; default: $GAMEFLEET_REDIS_BREAKER_SECONDS, else 1)",
    )  # fmt: skip


def add_security_arguments(
    parser: argparse.ArgumentParser, *, client_only: bool = False, health_port: bool = True
) -> None:
    """--tls-cert/--tls-key/--tls-ca/--tls-server-name/--token-file (and --tls for a client): the
    process's TLS and the fleet's bearer token, for its server and the channels it opens; each
    defaults to its $GAMEFLEET_* variable (the operator mounts them so). Nothing set: plaintext,
    no token (`gamefleet up` on loopback)."""
    env = os.environ.get
    group = parser.add_argument_group("security (TLS, mutual TLS, the fleet's token)")
    mine = "client" if client_only else "server (and client)"
    group.add_argument(
        "--tls-cert", default=env("GAMEFLEET_TLS_CERT"),
        help=f"PEM certificate of this {mine}; needs --tls-key (default: $GAMEFLEET_TLS_CERT)",
    )  # fmt: skip
    group.add_argument(
        "--tls-key", default=env("GAMEFLEET_TLS_KEY"), help="its PEM key (default: $GAMEFLEET_TLS_KEY)"
    )
    group.add_argument(
        "--tls-ca", default=env("GAMEFLEET_TLS_CA"),
        help="PEM CA that verifies the other side: a server given one requires client certificates "
        "(mutual TLS) (default: $GAMEFLEET_TLS_CA)",
    )  # fmt: skip
    group.add_argument(
        "--tls-server-name", default=env("GAMEFLEET_TLS_SERVER_NAME"),
        help="the name servers' certificates are checked against, instead of the address dialled "
        "(default: $GAMEFLEET_TLS_SERVER_NAME)",
    )  # fmt: skip
    group.add_argument(
        "--token-file", default=env("GAMEFLEET_TOKEN_FILE"),
        help="file holding the fleet's bearer token (default: $GAMEFLEET_TOKEN_FILE, else the token "
        "in $GAMEFLEET_TOKEN): calls without it are refused, but for health and seat play",
    )  # fmt: skip
    group.add_argument(
        "--tls-client-auth", action=argparse.BooleanOptionalAction,
        default=env("GAMEFLEET_TLS_CLIENT_AUTH", "1").lower() not in ("0", "false", "no"),
        help="with --tls-ca, a server requires client certificates: mutual TLS (default: "
        "$GAMEFLEET_TLS_CLIENT_AUTH, else on)",
    )  # fmt: skip
    if health_port and not client_only:
        group.add_argument(
            "--health-port", type=int, default=int(env("GAMEFLEET_HEALTH_PORT") or 0) or None,
            help="also serve gRPC health alone, plaintext, on this port: the kubelet's gRPC probes "
            "speak no TLS (default: $GAMEFLEET_HEALTH_PORT, else none)",
        )  # fmt: skip
    if client_only:
        group.add_argument(
            "--tls", action="store_true", help="TLS verified by the system's roots (no --tls-ca)"
        )


def security_argv(args: argparse.Namespace) -> list[str]:
    """The security flags as given, to pass on to the processes a command starts (`gamefleet up`)."""
    argv = []
    for flag in ("tls_cert", "tls_key", "tls_ca", "tls_server_name", "token_file"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return argv if args.tls_client_auth else [*argv, "--no-tls-client-auth"]


def credentials(args: argparse.Namespace, command: str) -> object:
    """The Credentials the security flags name; a missing file or a certificate without its key
    ends the command at start-up with a message saying which."""
    from ..wire.security import Credentials, SecurityError

    try:
        return Credentials.from_files(
            args.tls_cert,
            args.tls_key,
            args.tls_ca,
            args.token_file,
            token=os.environ.get("GAMEFLEET_TOKEN"),
            tls=getattr(args, "tls", False),
            server_name=args.tls_server_name,
            client_auth=args.tls_client_auth,
        )
    except SecurityError as error:
        raise SystemExit(f"gamefleet {command}: {error}") from None
