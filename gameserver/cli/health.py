"""`gamefleet health ADDRESS`: exit 0 once a fleet service or shard answers its gRPC health
check SERVING, 1 if it has not within `--wait` seconds.

For checks from outside the pods: the chart's `helm test` hook and the load-test Job, which
must wait for a fleet that is still starting (shards compile their kernels first) rather than
fail at once. Each state seen is printed once, when it changes.
"""

from __future__ import annotations

import argparse
import sys
import time

from .flags import add_security_arguments, credentials


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "health", help="wait until a fleet or shard reports SERVING (gRPC health check)", description=__doc__
    )
    parser.add_argument("address", help="host:port of the fleet service (router) or a shard")
    parser.add_argument("--service", default="", help="health service name (default: the whole server)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep trying (0: check once)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of one check (s)")
    add_security_arguments(parser, client_only=True)  # health needs no token, but TLS where served
    parser.set_defaults(run=run)
    return parser


def check(stub: object, service: str, timeout: float) -> str:
    """The server's answer as a word: SERVING, NOT_SERVING, ... or the gRPC status of a failed call."""
    import grpc
    from grpc_health.v1 import health_pb2

    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def run(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2_grpc

    if args.wait < 0 or args.interval <= 0 or args.timeout <= 0:
        raise SystemExit("gamefleet health: --wait must be >= 0, --interval and --timeout > 0")
    started = time.monotonic()
    seen = None
    with credentials(args, "health").channel(args.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            state = check(stub, args.service, args.timeout)
            elapsed = time.monotonic() - started
            if state != seen:
                print(f"[{elapsed:5.1f} s] {args.address}: {state}", file=sys.stderr, flush=True)
                seen = state
            if state == "SERVING":
                return 0
            if elapsed + args.interval > args.wait:
                print(f"gamefleet health: {args.address} is not SERVING after {elapsed:.0f} s ({state})",
                      file=sys.stderr)  # fmt: skip
                return 1
            time.sleep(args.interval)
