"""The wire contract, the floor every gRPC speaker stands on: generated code (proto/ is the
source), the tensor codec, request and reply framing, the error <-> status mapping, limits and
service names. It imports nothing of the project but the engine's plain types, so a client,
a shard, a router and the replay service all speak it without importing each other."""
