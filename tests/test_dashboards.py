"""The Grafana dashboards (charts/gamefleet/dashboards/*.json) against a real Prometheus.

A local fleet (two shards with `log` durability in a real redis-server, and a router), all
serving /metrics, plays self-play through the router while a real Prometheus (the Debian
package) scrapes it every second. This process stands in for the operator and a replay
service: it runs the operator's metered handlers and a ReplayServer, and serves its own
/metrics. Then every query of every panel is evaluated through Prometheus' HTTP API and
must return data; only the GPU panel may be empty, when no DCGM exporter is scraped.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT

from gameserver.agents import random_actions
from gameserver.client import FleetClient, InvalidArgument
from gameserver.engine import GameConfig
from gameserver.local_fleet import LocalFleet
from gameserver.replay.buffer import ReplayBuffer, field_spec
from gameserver.replay.client import ReplayClient
from gameserver.replay.service import ReplayServer
from gameserver.telemetry.exposition import AUTO, serve_metrics

DASHBOARDS = sorted((ROOT / "charts" / "gamefleet" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"  # Debian's package (.ci/run installs it)
BOARD = GameConfig(height=10, width=10, max_ticks=24)
WINDOW = "1m"  # what $__rate_interval stands for here: the whole test
GPU_METRICS = ("DCGM_",)  # exporters not running here: their panels may be empty


def panels(board: dict) -> Iterator[dict]:
    for panel in board["panels"]:
        yield from panels(panel) if panel["type"] == "row" else [panel]


def queries() -> list[tuple[str, str, str]]:
    return [
        (path.stem, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in panels(json.loads(path.read_text()))
        for target in panel["targets"]
    ]


def test_both_dashboards_exist_and_use_a_datasource_variable() -> None:
    assert {path.name for path in DASHBOARDS} >= {"rl_training.json", "fleet.json"}
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == "prometheus"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in panels(board):
            assert panel["datasource"]["uid"] == f"${{{variable['name']}}}", (path.name, panel["title"])
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    assert len(uids) == len(DASHBOARDS)
    titles = {p["title"] for path in DASHBOARDS for p in panels(json.loads(path.read_text()))}
    for needed in ("Games/s", "Actions/s", "Turn processing time p50 / p95 / p99", "Memory per game",
                   "GPU utilisation", "Redis snapshot and log lag", "Agent connections",
                   "Autoscaler decisions", "Reconciles/s by handler", "Serving shards"):  # fmt: skip
        assert needed in titles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hostport(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


class Prometheus:
    """A real prometheus scraping the given jobs every second, on a free port, in a temp dir."""

    def __init__(self, directory: Path, jobs: dict[str, list[str]]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={_hostport(self.url)}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert reply["status"] == "success", (expr, reply)
        return reply["data"]["result"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1)
                return
            except OSError:
                assert self.process.poll() is None, "prometheus exited"
                time.sleep(0.1)
        raise TimeoutError("prometheus not ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _operator_round(round_number: int) -> None:
    """What the operator's handlers export, from its own metrics module (the operator process
    itself needs a Kubernetes API; its handlers are metered by these same calls)."""
    from gamefleet_operator import metrics as operator_metrics

    def sync_fleet() -> None:
        time.sleep(0.002)

    def apply_fleet() -> None:
        if round_number == 0:
            raise RuntimeError("the API server said no")

    for handler in (sync_fleet, apply_fleet):
        with contextlib.suppress(RuntimeError):
            operator_metrics.observed(handler)()
    status = {"shards": 2, "readyShards": 2, "utilisation": 0.4}
    operator_metrics.record_fleet("games", "dash", status, desired=2)
    operator_metrics.record_decision("games", "dash", 2, 3 if round_number == 1 else 2)


@pytest.fixture
def replay() -> Iterator[ReplayClient]:
    buffer = ReplayBuffer({"reward": field_spec(np.float32)}, 10_000)
    with ReplayServer(buffer) as server, ReplayClient(server.address, timeout=10) as client:
        yield client


def test_every_panel_query_returns_data_from_a_scraped_fleet(tmp_path, redis_server, replay) -> None:
    own = serve_metrics("127.0.0.1", AUTO)
    with LocalFleet(2, router=True, metrics=True, redis_url=redis_server.url, fleet="dash",
                    durability="log") as fleet:  # fmt: skip
        jobs = {
            "gamefleet": [_hostport(url) for url in fleet.metrics_urls],
            "gamefleet-operator": [f"127.0.0.1:{own}"],
        }
        prometheus = Prometheus(tmp_path, jobs)
        try:
            prometheus.wait_ready()
            with Traffic(fleet.router_address, replay):
                missing = _until_answered(prometheus, queries(), timeout=45.0)
        finally:
            prometheus.stop()
    assert missing == [], "panels without data: " + "; ".join(f"{p}/{t}: {e}" for p, t, e in missing)


def _until_answered(prometheus: Prometheus, panels: list[tuple[str, str, str]], timeout: float) -> list:
    """The panel queries still without data when every other one has some or `timeout` passed.
    Rates need two scrapes with traffic between them, which a loaded machine may delay."""
    deadline = time.monotonic() + timeout
    waiting = [(p, t, e) for p, t, e in panels if not any(name in e for name in GPU_METRICS)]
    for path, title, expr in panels:
        if any(name in expr for name in GPU_METRICS):  # no DCGM exporter here: must be empty
            assert prometheus.query(expr) == [], f"{path}/{title}: GPU metrics appeared"
    while waiting and time.monotonic() < deadline:
        time.sleep(1.0)
        waiting = [(p, t, e) for p, t, e in waiting if not _has_data(prometheus, e)]
    return waiting


def _has_data(prometheus: Prometheus, expr: str) -> bool:
    result = prometheus.query(expr.replace("$__rate_interval", WINDOW))
    return any(not np.isnan(float(sample["value"][1])) for sample in result)


class Traffic:
    """Self-play through the router (episodes end every 24 ticks, one refused call first), and
    every quarter second the operator's rounds and replay traffic, in a thread until exit."""

    def __init__(self, router: str, replay: ReplayClient) -> None:
        self.router, self.replay = router, replay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with FleetClient(self.router, timeout=60) as client:
                games = client.create(32, BOARD, autoreset=True)
                observation = games.observations
                with pytest.raises(InvalidArgument):
                    client.step(games.ids, np.zeros((3, 2), np.int32))
                tick, rounds, start = 0, 0, time.monotonic()
                while not self._stop.is_set():
                    if time.monotonic() - start >= rounds * 0.25:
                        _operator_round(rounds)
                        self.replay.insert({"reward": np.ones(64, np.float32)})
                        self.replay.sample(16)
                        rounds += 1
                    codes, armies, ticks = observation.codes, observation.armies, observation.tick
                    moves = random_actions(codes, armies, ticks, BOARD.height, BOARD.width, tick)
                    observation = client.step(games.ids, moves).observations
                    tick += 1
        except BaseException as error:  # reported on exit
            self.error = error
