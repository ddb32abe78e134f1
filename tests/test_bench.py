"""`gamefleet bench engine` end to end: what it writes, not how fast it is (no timed assertions)."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from gameserver.bench.engine import targets
from gameserver.cli import main
from gameserver.engine import GameBatch, GameConfig, Observation

RATES = ("steps_per_s_obs", "steps_per_s_state", "maps_per_s")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run against the peer; its JSON, plot and markdown paths."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "tmp.json", "png": out / "tmp.png", "md": out / "RESULTS.md"}
    paths["md"].write_text("## Engine: 20x20, 2 players, random moves\n\nstale\n\n## Another bench\n\nkept\n")
    argv = ["bench", "engine", "--quick", "--seconds", "0.05", "--out", str(paths["json"])]
    argv += ["--plot", str(paths["png"]), "--markdown", str(paths["md"])]
    assert main(argv) == 0
    return paths, json.loads(paths["json"].read_text())


def test_json_records_the_run(quick_run):
    _, result = quick_run
    assert result["benchmark"] == "engine"
    assert result["command"].startswith("gamefleet bench engine --quick --seconds 0.05")
    assert datetime.fromisoformat(result["date"]).tzinfo is not None
    assert {"cpu", "cpus", "numba_threads", "python"} <= result["machine"].keys()
    assert {"gamefleet", "numba", "numpy", "generals-bots"} <= result["versions"].keys()
    assert result["settings"]["quick"] is True and result["settings"]["seconds"] == 0.05
    assert (result["board"]["height"], result["board"]["width"], result["board"]["players"]) == (20, 20, 2)


def test_quick_run_measures_batches_1_64_1024_with_positive_rates(quick_run):
    _, result = quick_run
    assert [row["batch"] for row in result["engine"]] == [1, 64, 1024]
    for row in result["engine"]:
        assert all(row[rate] > 0 for rate in RATES), row


def test_every_figure_keeps_its_rounds_and_the_cpu_other_processes_took(quick_run):
    _, result = quick_run
    assert result["settings"]["rounds"] == 1
    for row in [*result["engine"], result["peer"]]:
        for rate in RATES:
            share = row["others_cpu_share"][rate]
            assert share is None or 0.0 <= share <= 1.0
            assert row["rounds"][rate] == [{"rate": row[rate], "others_cpu_share": share}]


def test_games_stay_running_while_timed(quick_run):
    _, result = quick_run
    assert all(row["running_fraction"] == 1.0 for row in result["engine"])
    assert result["peer"]["running"] is True


def test_peer_is_measured_and_every_rate_has_its_ratio(quick_run):
    _, result = quick_run
    peer = result["peer"]
    assert peer["name"] == "generals-bots" and peer["version"] == "2.5.0"
    assert all(peer[rate] > 0 for rate in RATES)
    for row in result["engine"]:
        assert row["steps_obs_vs_peer"] == pytest.approx(row["steps_per_s_obs"] / peer["steps_per_s_obs"])
        assert row["steps_state_vs_peer"] == pytest.approx(
            row["steps_per_s_state"] / peer["steps_per_s_state"]
        )
        assert row["maps_vs_peer"] == pytest.approx(row["maps_per_s"] / peer["maps_per_s"])


def test_bytes_per_game_are_the_state_plus_the_observation_buffer(quick_run):
    _, result = quick_run
    config = GameConfig()
    state = GameBatch.allocate(config, 8).nbytes_per_game()
    observation = Observation.allocate(config, 8).nbytes_per_game()
    assert result["bytes_per_game"] == {
        "state": state,
        "observation": observation,
        "total": state + observation,
    }


def test_a_quick_run_judges_no_target_though_its_figures_could(quick_run):
    _, result = quick_run
    assert len(result["targets"]) == 4 and result["judged"] is False
    assert all(target["met"] is None for target in result["targets"])
    # the same figures from a full run: every target judged when batch 1024 and the peer ran
    assert all(isinstance(target["met"], bool) for target in targets(result))


def test_update_results_writes_the_committed_figures_and_a_quick_run_refuses_it(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="a --quick run does not update the committed results"):
        main(["bench", "engine", "--quick", "--update-results"])
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr("gameserver.bench.engine.main", lambda *args: calls.append(args) or 0)
    assert main(["bench", "engine", "--update-results"]) == 0
    _, _, out, plot, markdown = calls[0]
    assert out == Path("benchmarks/out/engine.json")  # results go to benchmarks/out/ in any case
    assert (plot, markdown) == (Path("benchmarks/engine.png"), Path("benchmarks/RESULTS.md"))
    assert main(["bench", "engine"]) == 0
    assert calls[1][3:] == (None, None)  # without it: nothing committed is touched


def test_plot_is_a_png(quick_run):
    paths, _ = quick_run
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_has_the_command_a_row_per_batch_and_the_targets(quick_run):
    paths, result = quick_run
    text = paths["md"].read_text()
    assert f"`{result['command']}`" in text
    for batch in ("| 1 |", "| 64 |", "| 1,024 |", "| generals-bots 2.5.0 |"):
        assert batch in text
    for target in result["targets"]:
        assert f"| {target['name']} | {target['target']} |" in text
    assert "![steps/s and maps/s against batch size](tmp.png)" in text


def test_markdown_replaces_only_the_engine_section(quick_run):
    text = quick_run[0]["md"].read_text()
    assert "stale" not in text
    assert text.count("## Engine: 20x20, 2 players, random moves") == 1
    assert "## Another bench\n\nkept" in text


def test_without_the_peer_there_are_no_ratios_and_ratio_targets_are_not_judged(tmp_path):
    out = tmp_path / "engine.json"
    assert (
        main(
            [
                "bench",
                "engine",
                "--quick",
                "--no-peer",
                "--batches",
                "1",
                "--seconds",
                "0.02",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["peer"] is None and "generals-bots" not in result["versions"]
    assert not any(key.endswith("_vs_peer") for key in result["engine"][0])
    assert [target["met"] for target in result["targets"]][:3] == [None, None, None]
