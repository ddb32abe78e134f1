"""Observability of the fleet: Prometheus metrics and OpenTelemetry traces.

  metrics.py      every metric family (names and buckets from DESIGN.md) and the once-per-batch
                  recorders the hot path calls: a few integer adds and numpy reductions per call,
                  never a call per game
  histograms.py   a histogram that takes a whole numpy array in one call (episode lengths)
  collectors.py   what is read at scrape time instead of on the hot path: games, memory, the
                  router's shard links, Redis lag, the replay buffer
  grpc_server.py  the server interceptor: latency per method and code, agent connections, and
                  a server span per RPC
  tracing.py      OpenTelemetry set-up from the standard OTEL_* variables (off unless an OTLP
                  endpoint is named), W3C trace context in gRPC metadata, the game spans
  exposition.py   /metrics over HTTP (`--metrics-port`, GAMEFLEET_METRICS_PORT; 0 = off)

Everything registers on prometheus_client's default registry, as the operator's metrics do
(operator/gamefleet_operator/metrics.py): one process, one /metrics.
"""
