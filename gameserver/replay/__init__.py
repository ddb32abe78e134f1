"""Experience replay, the Reverb-like part: a buffer with uniform or prioritized sampling (a numba
sum tree), a samples-per-insert rate limiter, a gRPC ReplayService, its client, and the sink a
shard pushes transitions through. The client never imports the server."""
