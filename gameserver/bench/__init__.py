"""Benchmarks behind `gamefleet bench` (results as JSON, markdown tables and PNG plots). They ship in
the package so an installed gamefleet benchmarks its own machine; benchmarks/ at the repository
root keeps the recorded RESULTS.md and plots."""
