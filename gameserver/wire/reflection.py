"""gRPC server reflection as both versions clients speak: `grpc.reflection.v1` and `v1alpha`.

grpcio-reflection (1.85) ships only v1alpha. v1's `reflection.proto` is v1alpha's with the
package renamed: every message and field number is the same, so the same servicer answers
`/grpc.reflection.v1.ServerReflection/ServerReflectionInfo` with the same bytes. Clients that
speak only v1 (grpcurl's newer builds, grpc-js's reflection, Postman) then see the API too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc import aio
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as messages

V1ALPHA = reflection.SERVICE_NAME  # "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
METHOD = "ServerReflectionInfo"


def enable_reflection(server: grpc.Server | aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection, v1 and v1alpha, listing `service_names` and both reflection services."""
    names = (*service_names, V1, V1ALPHA)
    if isinstance(server, aio.Server):
        servicer = reflection.aio.ReflectionServicer(names)
    else:
        servicer = reflection.ReflectionServicer(names)
    handlers = {
        METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=messages.ServerReflectionRequest.FromString,
            response_serializer=messages.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in (V1, V1ALPHA):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
