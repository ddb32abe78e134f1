"""The fleet service: the same BatchGameService in front of many shards. A pure fan-out plan
(fanout.py: split a request by shard with numpy), channels to shards, topology sources, the server."""
