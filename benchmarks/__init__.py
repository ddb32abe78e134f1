"""Benchmark suite: run through `gamefleet bench` (results as JSON, tables, plots)."""
