"""`gamefleet bench fleet` end to end on tiny sizes: what it writes, not how fast anything is (no
timed assertions); its RESULTS.md section leaves the others alone."""

import json

from gameserver.cli import main

OTHERS = "# Results\n\n## Engine: 20x20\n\nengine table\n\n## Service\n\nservice table\n"


def test_bench_fleet_measures_router_durability_and_recovery_and_writes_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(OTHERS)
    argv = ["bench", "fleet", "--quick", "--seconds", "0.05", "--rounds", "2", "--recovery-games", "40",
            "--out", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png"),
            "--markdown", str(results)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["benchmark"] == "fleet" and len(result["rounds"]) == 2
    chosen = result["rounds"][result["chosen_round"]]
    assert result["steps_per_s"] == chosen["rates"] and all(rate > 0 for rate in chosen["rates"].values())
    assert result["ratios"]["log_delta"] == chosen["rates"]["log_delta"] / chosen["rates"]["off_delta"]
    assert result["ratios"]["router_full"] == chosen["rates"]["router_full"] / chosen["rates"]["direct_full"]
    recovery = result["recovery"]
    assert recovery["games"] == 40 and recovery["bit_exact"] and recovery["seconds"] > 0
    assert recovery["log_entries"] > 0  # the recovery replayed logged steps, not only snapshots
    assert [t["met"] for t in result["targets"]] == [None] * 5  # tiny sizes: nothing judged
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    text = results.read_text()
    assert text.startswith(OTHERS.rstrip("\n")) and "## Fleet: router path, durability cost, recovery" in text
    assert "gamefleet bench fleet --quick" in text and "![fleet benchmark](f.png)" in text
