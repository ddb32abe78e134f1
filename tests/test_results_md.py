"""benchmarks/results_md: a benchmark writes its JSON and only its own RESULTS.md section."""

import io
import json
from argparse import Namespace

import pytest
from rich.console import Console

from gameserver.bench.results_md import markdown_table, publish, write_section


def test_write_section_replaces_its_own_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("## A\n\nold a\n\n## B\n\nkept b\n")
    write_section(path, "## A\n\nnew a\n")
    write_section(path, "## C\n\nnew c\n")
    assert path.read_text() == "## A\n\nnew a\n\n## B\n\nkept b\n\n## C\n\nnew c\n"
    with pytest.raises(ValueError, match="## "):
        write_section(path, "no title\n")


def test_markdown_table_aligns_the_first_columns_left_and_the_rest_right():
    assert markdown_table(["mode", "steps/s"], [["off", "1"], ["log", "2"]]) == [
        "| mode | steps/s |",
        "|---|---:|",
        "| off | 1 |",
        "| log | 2 |",
    ]
    assert markdown_table(["a", "b", "c"], [], left=0)[1] == "|---:|---:|---:|"
    assert markdown_table(["a", "b", "c"], [], left=2)[1] == "|---|---|---:|"


def test_publish_writes_json_plot_and_a_section_linking_the_plot_from_the_markdown(tmp_path):
    (tmp_path / "docs").mkdir()
    args = Namespace(out=tmp_path / "out" / "r.json", plot=tmp_path / "plots" / "r.png",
                     markdown=tmp_path / "docs" / "RESULTS.md")  # fmt: skip
    args.markdown.write_text("## Other\n\nkept\n")
    plotted = []

    def markdown(result, plot_name):
        return f"## Bench\n\nvalue {result['value']}\n\n![plot]({plot_name})\n"

    status = publish(
        {"value": 7}, args, Console(file=io.StringIO()),
        table=lambda result: f"table {result['value']}",
        plot=lambda result, path: plotted.append(path),
        markdown=markdown,
    )  # fmt: skip
    assert status == 0
    assert json.loads(args.out.read_text()) == {"value": 7}
    assert plotted == [args.plot]
    text = args.markdown.read_text()
    assert "## Other\n\nkept" in text and "value 7" in text and "![plot](../plots/r.png)" in text


def test_publish_without_plot_or_markdown_writes_only_the_json(tmp_path):
    args = Namespace(out=tmp_path / "r.json", plot=None, markdown=None)
    publish({"value": 1}, args, Console(file=io.StringIO()),
            table=str, plot=lambda *_: pytest.fail("no plot asked"),
            markdown=lambda *_: pytest.fail("no markdown asked"))  # fmt: skip
    assert json.loads(args.out.read_text()) == {"value": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
