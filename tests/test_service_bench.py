"""`gamefleet bench service` end to end on a tiny batch: what it writes, not how fast anything is
(no timed assertions); its RESULTS.md section leaves the others alone."""

import json

import pytest

from gameserver.cli import main

OTHERS = "# Results\n\n## Engine: 20x20\n\nengine table\n\n## Matrix\n\nmatrix table\n"


def test_bench_service_measures_every_mode_in_rounds_and_writes_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    argv = ["bench", "service", "--quick", "--batch", "8", "--seconds", "0.04", "--rounds", "2",
            "--latency-calls", "40", "--out", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"),
            "--markdown", str(results)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["benchmark"] == "service" and result["settings"]["batch"] == 8
    assert len(result["rounds"]) == 2 and result["chosen_round"] in (0, 1)
    chosen = result["rounds"][result["chosen_round"]]
    for mode in ("in_process", "served_full", "served_delta", "served_shared", "served_none"):
        assert result[f"{mode}_steps_per_s"] == chosen["rates"][mode] > 0
    assert result["shared_share"] == chosen["rates"]["served_shared"] / chosen["rates"]["in_process"]
    assert result["none_share"] == chosen["rates"]["served_none"] / chosen["rates"]["in_process"]
    for name in ("unary_one_game", "stream_one_game"):
        lat = result[name]
        assert lat["calls"] == 40 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        quiet = lat["least_disturbed_block"]
        assert quiet["calls"] == 8 and 0 < quiet["p50_ms"] <= quiet["max_ms"] <= lat["max_ms"]
    sync, pipelined = result["agent_sync_steps_per_s"], result["agent_pipelined_steps_per_s"]
    assert sync > 0 and pipelined > 0 and result["pipelined_gain"] == pipelined / sync
    assert result["pipelined_share"] == pipelined / result["in_process_steps_per_s"]
    judged = {t["target"]: t["met"] for t in result["targets"]}
    assert list(judged.values())[:5] == [None] * 5  # throughput targets: batch 4096 only
    assert judged["one game, unary round trip p99"] is None and result["judged"] is False  # --quick
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    text = results.read_text()
    assert text.startswith(OTHERS.rstrip("\n")) and "## Service: one shard process" in text
    assert "gamefleet bench service --quick --batch 8" in text and "![service benchmark](s.png)" in text
    main(argv)  # a second run replaces its section, it does not add one
    assert results.read_text().count("## Service") == 1 and results.read_text().startswith(OTHERS)


def test_bench_service_with_modes_measures_those_against_in_process_and_nothing_else(tmp_path):
    from gameserver.bench.service import SERVED_HOW
    from gameserver.cli.bench import SERVICE_MODES

    assert SERVICE_MODES == SERVED_HOW  # the parser's list, kept apart so that --help stays instant
    out = tmp_path / "s.json"
    argv = ["bench", "service", "--quick", "--batch", "8", "--seconds", "0.04", "--modes", "shared",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["modes"] == ["shared"] and result["served_shared_steps_per_s"] > 0
    assert set(result["rounds"][0]["rates"]) == {"in_process", "served_shared"}
    assert "unary_one_game" not in result and "targets" not in result
    with pytest.raises(SystemExit, match=r"RESULTS\.md"):  # a partial section would replace the full one
        main([*argv, "--markdown", str(tmp_path / "RESULTS.md")])
