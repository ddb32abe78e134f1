"""`gamefleet loadtest`: a short run against a local fleet it starts, pacing, bounds, errors, loopback."""

import asyncio
import json

import pytest

from gameserver.cli import main
from gameserver.client import AsyncFleetClient, Unavailable
from gameserver.loadtest import LoadSettings, check_loopback, run_load

SMALL = {"size": 8, "max_ticks": 60, "games_per_agent": 4}


def test_loadtest_against_a_local_fleet_writes_a_valid_report(tmp_path):
    path, results = tmp_path / "load.json", tmp_path / "RESULTS.md"
    results.write_text("## Engine\n\nkept as it is\n")
    argv = ["loadtest", "--agents", "3", "--games-per-agent", "4", "--duration", "2", "--size", "8",
            "--max-ticks", "60", "--json", str(path), "--markdown", str(results)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(path.read_text())
    assert report["address"].startswith("127.0.0.1:")
    assert report["settings"]["agents"] == 3 and report["settings"]["games_per_agent"] == 4
    assert report["errors"] == {"total": 0, "by_code": {}}
    assert report["requests"] > 0 and report["actions"] == report["requests"] * 4 * 2
    assert report["actions_per_s"] > 0 and report["steps_per_s"] == pytest.approx(report["actions_per_s"] / 2)
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert 1.5 < report["duration_s"] < 60 and report["target_reached"] is None
    text = results.read_text()
    assert text.startswith("## Engine\n\nkept as it is\n\n## Load test: 3 agents x 4 games, flat out\n")
    assert f"- Command: `gamefleet {' '.join(argv)}`" in text
    assert "a local fleet of 1 shard process(es) on loopback" in text
    row = text.strip().splitlines()[-1].split(" | ")
    assert row[0] == f"| {report['requests']:,}" and row[3] == f"{latency['p50']:.2f}"
    assert main(argv) == 0  # a second run of the same shape replaces its section
    assert results.read_text().count("## Load test:") == 1


def test_pacing_never_passes_the_target_rate(shard):
    settings = LoadSettings(agents=2, target_actions_per_s=400, duration_s=1.5, **SMALL)
    report = asyncio.run(run_load(shard.address, settings))
    # 2 agents x 8 actions per request: one request every 40 ms each. The schedule never sends
    # early, so the rate cannot pass the target by more than the first request of each agent;
    # how close it gets depends on the machine (a benchmark's question, not a test's).
    assert report["requests"] <= 2 * (1 + 1.5 / 0.04)
    assert report["actions_per_s"] <= 1.1 * 400
    assert report["requests"] >= 2 and report["errors"]["total"] == 0
    assert report["target_reached"] == (report["actions_per_s"] >= 0.95 * 400)


def test_requests_are_bounded_in_count_and_think_time_spaces_them(shard):
    settings = LoadSettings(agents=2, max_requests=5, duration_s=30, think_time_ms=20, **SMALL)
    report = asyncio.run(run_load(shard.address, settings))
    assert report["requests"] == 10
    assert 5 * 0.02 <= report["duration_s"] < 10


def test_refused_calls_are_counted_by_code_and_the_test_goes_on(shard, monkeypatch):
    real_step = AsyncFleetClient.step
    calls = {"n": 0}

    async def flaky_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise Unavailable("shard restarting")
        return await real_step(self, *args, **kwargs)

    monkeypatch.setattr(AsyncFleetClient, "step", flaky_step)
    report = asyncio.run(run_load(shard.address, LoadSettings(agents=1, max_requests=9, **SMALL)))
    assert report["errors"] == {"total": 3, "by_code": {"UNAVAILABLE": 3}}
    assert report["requests"] == 6


def test_only_loopback_targets_unless_allowed(shard):
    check_loopback(shard.address)
    check_loopback("localhost:50051")
    with pytest.raises(ValueError, match="not loopback"):
        check_loopback("10.1.2.3:50051")
    with pytest.raises(ValueError, match="not loopback"):
        asyncio.run(run_load("192.0.2.1:50051", LoadSettings(max_requests=1, **SMALL)))
    with pytest.raises(SystemExit, match="not loopback"):
        main(["loadtest", "--address", "192.0.2.1:50051", "--duration", "1"])


@pytest.mark.parametrize(
    "bad", [{"agents": 0}, {"max_requests": 0}, {"duration_s": 0}, {"think_time_ms": -1},
            {"target_actions_per_s": -5}, {"size": 2}],
)  # fmt: skip
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        LoadSettings(**bad)
