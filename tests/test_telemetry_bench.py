"""`gamefleet bench telemetry` end to end: what it writes (no timed assertions), and that its
RESULTS.md section leaves the others alone."""

import json

from gameserver.cli import main

OTHERS = "# Results\n\n## Engine: 20x20\n\nengine table\n\n## Service\n\nservice table\n"


def test_bench_telemetry_measures_every_mode_and_writes_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    out, plot = tmp_path / "t.json", tmp_path / "t.png"
    argv = ["bench", "telemetry", "--quick", "--batch", "8", "--seconds", "0.05",
            "--out", str(out), "--plot", str(plot), "--markdown", str(results)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "telemetry" and result["settings"]["batch"] == 8
    assert [row["mode"] for row in result["rows"]] == ["off", "metrics", "tracing 1%", "tracing 100%"]
    for row in result["rows"]:
        assert row["steps_per_s"] > 0 and row["one_game_p99_ms"] >= row["one_game_p50_ms"] > 0
    assert result["rows"][0]["throughput_vs_off"] == 1.0
    # always-on traced every call of its mode: at least a client and a server span per call
    calls = result["settings"]["latency_calls"]
    assert result["spans_received"] >= 2 * calls
    assert set(result["target"]) == {"target", "goal", "measured", "met"}
    assert plot.stat().st_size > 0
    text = results.read_text()
    assert text.startswith(OTHERS.rstrip("\n")) and "## Telemetry: the cost of metrics" in text
    assert "| tracing 100% |" in text
