"""`gamefleet delete-fleet NAME`: delete a GameFleet and wait until it is gone.

The chart's pre-delete hook runs it, so that `helm uninstall` deletes the chart's fleet while
the operator still runs to finish the fleet's cleanup finalizer: deleted after the operator,
the fleet would wait forever for a finalizer nobody handles. Exit 0 once the fleet is gone
(or when there was none), 1 when it is still there after --timeout, naming its finalizers.
"""

from __future__ import annotations

import argparse
import time

USER_AGENT = "gamefleet-delete-fleet"  # tells its API calls from the operator's (RBAC checks)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "delete-fleet", help="delete a GameFleet and wait until its cleanup is done", description=__doc__
    )
    parser.add_argument("name", help="the GameFleet")
    parser.add_argument("--namespace", "-n", default="default", help="the GameFleet's namespace")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it to go")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import kubernetes
    from gamefleet_operator import API_VERSION, KIND
    from gamefleet_operator.kube import ApiError, Kube

    if args.timeout <= 0 or args.interval <= 0:
        raise SystemExit("gamefleet delete-fleet: --timeout and --interval must be > 0")
    fleet = f"{args.namespace}/{args.name}"
    try:
        kube = Kube.connect()
    except kubernetes.config.ConfigException as error:
        raise SystemExit(f"gamefleet delete-fleet: no Kubernetes API to talk to ({error})") from None
    kube.client.user_agent = USER_AGENT
    deadline = time.monotonic() + args.timeout
    try:
        if not kube.delete(API_VERSION, KIND, args.namespace, args.name):
            print(f"GameFleet {fleet}: not found, nothing to delete")
            return 0
        while (body := kube.get(API_VERSION, KIND, args.namespace, args.name)) is not None:
            if time.monotonic() >= deadline:
                finalizers = ", ".join(body["metadata"].get("finalizers", [])) or "none"
                print(f"GameFleet {fleet}: still there after {args.timeout:g} s (finalizers: {finalizers}); "
                      "is the operator running?")  # fmt: skip
                return 1
            time.sleep(args.interval)
    except ApiError as error:
        raise SystemExit(f"gamefleet delete-fleet: {fleet}: {error}") from None
    print(f"GameFleet {fleet}: deleted")
    return 0
