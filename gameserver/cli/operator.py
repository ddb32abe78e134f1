"""`gamefleet operator`: run the GameFleet operator (kopf) against the current cluster.

In a pod it uses the service account; elsewhere $KUBECONFIG. It serves kopf's liveness
probe on --liveness-port (/healthz) and Prometheus metrics on --metrics-port (/metrics).
`--print-crd` prints the GameFleet CRD (manifests/crd.yaml) instead.

Replicas elect a leader through kopf peering (--peering NAME, the CRDs of manifests/peering.yaml):
each process takes a random priority, the highest live one handles the fleets, the others wait
and take over within the peering lifetime once it is gone. --standalone runs without peering (one
replica only, or where the peering CRDs are not installed).
"""

from __future__ import annotations

import argparse
import secrets
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "operator", help="run the GameFleet Kubernetes operator", description=__doc__
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all)",
    )
    parser.add_argument("--liveness-port", type=int, default=8080, help="kopf liveness endpoint /healthz")
    parser.add_argument("--metrics-port", type=int, default=9090, help="operator metrics /metrics")
    parser.add_argument(
        "--sync-interval", type=float, default=10.0, help="seconds between autoscaling/drain/status rounds"
    )
    parser.add_argument(
        "--peering", default="gamefleet", help="kopf peering object the replicas elect their leader in"
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no leader election: for exactly one replica"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--print-crd", action="store_true", help="print the GameFleet CRD as YAML and exit")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from gamefleet_operator.crd import crd_yaml

    if args.print_crd:
        sys.stdout.write(crd_yaml())
        return 0
    import kopf
    import prometheus_client
    from gamefleet_operator.handlers import build_registry
    from gamefleet_operator.registry import StoreRegistries

    kopf.configure(verbose=args.verbose)
    prometheus_client.start_http_server(args.metrics_port)
    kopf.run(
        registry=build_registry(args.sync_interval),
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=secrets.randbelow(1 << 30) + 1,  # distinct per replica: equal priorities all pause
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz",
        memo=kopf.Memo(registries=StoreRegistries(), namespaces=args.namespace),
    )
    return 0
