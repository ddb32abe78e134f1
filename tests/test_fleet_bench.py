"""`gamefleet bench fleet` end to end on tiny sizes: what it writes, not how fast anything is (no
timed assertions); its RESULTS.md section leaves the others alone."""

import json

from gameserver.cli import main

OTHERS = "# Results\n\n## Engine: 20x20\n\nengine table\n\n## Service\n\nservice table\n"


def test_bench_fleet_measures_router_durability_and_recovery_and_writes_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    argv = ["bench", "fleet", "--quick", "--seconds", "0.05", "--blocks", "2", "--recovery-games", "40",
            "--out", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png"),
            "--markdown", str(results)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["benchmark"] == "fleet"
    assert set(result["steps_per_s"]) == {
        "direct_full",
        "router_full",
        "direct_delta",
        "router_delta",
        "direct_none",
        "router_none",
        "off_delta",
        "log_delta",
        "snapshot_delta",
        "off_full",
        "log_full",
    }
    assert all(rate > 0 for rate in result["steps_per_s"].values())
    for name, pair in result["pairs"].items():
        assert len(pair["blocks"]) == 2
        ratios = sorted(b["b"] / b["a"] for b in pair["blocks"])
        assert result["ratios"][name] == pair["ratio"] == (ratios[0] + ratios[1]) / 2  # the median
    recovery = result["recovery"]
    assert recovery["games"] == 40 and recovery["bit_exact"] and recovery["seconds"] > 0
    assert len(recovery["attempts"]) == 3
    assert recovery["seconds"] == min(a["seconds"] for a in recovery["attempts"])
    assert recovery["log_entries"] > 0  # the recovery replayed logged steps, not only snapshots
    assert [t["met"] for t in result["targets"]] == [None] * 5  # tiny sizes: nothing judged
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    text = results.read_text()
    assert text.startswith(OTHERS.rstrip("\n")) and "## Fleet: router path, durability cost, recovery" in text
    assert "gamefleet bench fleet --quick" in text and "![fleet benchmark](f.png)" in text
