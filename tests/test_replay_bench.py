"""The RL benchmarks end to end (`gamefleet bench replay`, `gamefleet bench matrix`): what they write,
not how fast anything is (no timed assertions); and their RESULTS.md sections leave others' alone."""

import json

import pytest

from gameserver.cli import main

OTHERS = "# Results\n\n## Engine: 20x20\n\nengine table\n\n## Service\n\nservice table\n"


def test_bench_replay_writes_json_plot_and_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    argv = [
        "bench",
        "replay",
        "--capacity",
        "3000",
        "--seconds",
        "0.01",
        "--no-service",
        "--out",
        str(tmp_path / "r.json"),
        "--plot",
        str(tmp_path / "r.png"),
        "--markdown",
        str(results),
    ]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["benchmark"] == "replay" and result["settings"]["capacity"] == 3000
    names = [row["name"] for row in result["rows"]]
    assert names == ["sum tree (numba)", "numpy cumsum + searchsorted", "uniform"]
    for row in result["rows"]:
        assert all(
            row[f] > 0 for f in ("inserts_per_s", "samples_per_s", "updates_per_s", "learner_items_per_s")
        )
    assert set(result["sum_tree_vs_numpy"]) == {
        "inserts_per_s",
        "samples_per_s",
        "updates_per_s",
        "learner_items_per_s",
    }
    assert (tmp_path / "r.png").stat().st_size > 0
    text = results.read_text()
    assert text.startswith(OTHERS.rstrip("\n")) and "## Replay buffer: 3,000 items" in text
    main(argv)  # a second run replaces its section, it does not add one
    assert results.read_text().count("## Replay buffer") == 1 and results.read_text().startswith(OTHERS[:40])


def test_bench_matrix_measures_every_cell_in_process_and_served(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    argv = [
        "bench",
        "matrix",
        "--cells",
        "1x2,3x3",
        "--seconds",
        "0.01",
        "--out",
        str(tmp_path / "m.json"),
        "--plot",
        str(tmp_path / "m.png"),
        "--markdown",
        str(results),
    ]
    assert main(argv) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    cells = [(row["games"], row["agents"], row["mode"]) for row in result["rows"]]
    assert cells == [(1, 2, "in process"), (3, 3, "in process"), (1, 2, "served"), (3, 3, "served")]
    for row in result["rows"]:
        assert row["calls"] % 100 == 0 and row["episodes"] >= row["games"]  # whole 100-tick rounds
        assert (
            row["actions_per_s"] == pytest.approx(row["steps_per_s"] * row["agents"])
            and row["games_per_s"] > 0
        )
        latency = row["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert row["state_bytes_per_game"] > 2000 and row["rss_bytes_per_game"] is None  # < 1,000 games
        assert row["others_cpu_share"] is None or 0 <= row["others_cpu_share"] <= 1
    text = results.read_text()
    assert "## Service\n\nservice table" in text and "## Matrix: games x agents" in text
    assert (tmp_path / "m.png").stat().st_size > 0
