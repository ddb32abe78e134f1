"""The contract's gRPC services and health-check names: what servers register and clients call.

Health names (grpc.health.v1 service names a probe asks about):
  ""                          readiness: SERVING while the process takes calls (NOT_SERVING draining)
  LIVENESS_SERVICE            SERVING while the process runs, draining or not (a liveness probe on
                              readiness would restart a draining shard); the operator's pods probe it
  DURABILITY_HEALTH           a shard's durability: NOT_SERVING while acknowledged changes are not
                              all in Redis (on-redis-error=degrade)
"""

from __future__ import annotations

from .generated import batch_pb2, moves_pb2, replay_pb2

SERVICE = batch_pb2.DESCRIPTOR.services_by_name["BatchGameService"]
MOVES_SERVICE = moves_pb2.DESCRIPTOR.services_by_name["ShardMoves"]
REPLAY_SERVICE = replay_pb2.DESCRIPTOR.services_by_name["ReplayService"]
LIVENESS_SERVICE = "liveness"
DURABILITY_HEALTH = "gamefleet.v1.Durability"
