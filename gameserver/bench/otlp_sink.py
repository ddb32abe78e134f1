"""A minimal OTLP/gRPC trace receiver on 127.0.0.1: what a collector or Jaeger would be.

The tracing benchmark exports into it (so export costs what it costs against a real
collector), and the tracing tests read back what a process exported.
"""

from __future__ import annotations

import threading
from concurrent import futures
from types import TracebackType

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


class OtlpSink(otlp_grpc.TraceServiceServicer):
    """Keeps every exported span with its resource's service.name; `endpoint` once started."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        otlp_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attributes.get("service.name", "")
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return otlp.ExportTraceServiceResponse()

    def received(self) -> list[tuple[str, trace_pb2.Span]]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> OtlpSink:
        self._server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(0)
