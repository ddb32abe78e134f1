"""How numba's OpenMP threads wait between kernels, for processes that share their CPUs.

After a parallel kernel, libgomp's threads spin for a while waiting for the next one
(OMP_WAIT_POLICY unset). In a shard that spinning takes the CPUs its own gRPC threads
need to send the reply, and on a machine shared with the client or other shards it takes
theirs: on 2 cores, passive waits in client and shard gave 32-48% more served steps/s at
batch 4096 (full, delta and shared-view modes), and `gamefleet up` (agents and shards on one
machine) played 124k steps/s with OMP_WAIT_POLICY=ACTIVE against 228k passive. A passive
wait puts the threads to sleep at once; waking them costs microseconds.

libgomp reads the variable when it loads, on numba's first parallel kernel, so this must
run before that. A policy the user set is kept.
"""

from __future__ import annotations

import os

POLICY_VARIABLE = "OMP_WAIT_POLICY"


def wait_passively() -> str:
    """Make OpenMP threads sleep between kernels unless a policy is set already; returns the policy."""
    return os.environ.setdefault(POLICY_VARIABLE, "PASSIVE")
