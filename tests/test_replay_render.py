"""Games to watch: the renderer's views equal the engine's, `gamefleet replay render` writes a GIF and
an HTML viewer, and the viewer, played in a real headless chromium, draws the renderer's frames."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import websocket
from PIL import Image
from test_replays import play_to_the_end

from gameserver.cli.main import main
from gameserver.engine import GameConfig, observe
from gameserver.envs.render import draw, fog_view, merged_view, state_view
from gameserver.rl.replay_files import dumps, export_replay, import_replay, replay_states

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package (.ci/run installs it)
CONFIG = GameConfig(8, 8, max_ticks=300)


@pytest.fixture(scope="module")
def replay_file(tmp_path_factory) -> Path:
    """A whole game (expander against random, player 0 wins at tick 62) saved as a replay."""
    first, _, actions = play_to_the_end(CONFIG, 3)
    path = tmp_path_factory.mktemp("replay") / "game.json"
    path.write_text(dumps(export_replay(first, 0, actions, usernames=["ann", "bob"])))
    return path


def test_fog_views_are_the_engines_observations(replay_file):
    replay = import_replay(replay_file)
    terrain, owner, armies = replay_states(replay)
    batch = replay.initial
    for t in (0, 10, len(terrain) - 1):
        batch.terrain[0], batch.owner[0], batch.armies[0] = terrain[t], owner[t], armies[t]
        seen = observe(batch, [0])
        for p in range(CONFIG.players):
            codes, army = fog_view(terrain[t], owner[t], armies[t], p, 8, 8)
            np.testing.assert_array_equal(codes, seen.codes[0, p])
            np.testing.assert_array_equal(army, seen.armies[0, p])
        codes, army = merged_view(seen.codes[0], seen.armies[0])  # what any seat sees
        full, full_army = state_view(terrain[t], owner[t], armies[t])
        known = (codes >> 4) >= 2
        assert known.any() and (codes[known] == full[known]).all() and (army[known] == full_army[known]).all()


def test_frames_show_each_tile_and_army(replay_file):
    terrain, owner, armies = replay_states(import_replay(replay_file))
    frame = draw(*state_view(terrain[0], owner[0], armies[0]), 8, 8, tile=20)
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    general = int(np.flatnonzero(owner[0] == 1)[0])
    r, c = divmod(general, 8)
    assert tuple(frame[r * 20 + 9, c * 20 + 1]) == (255, 200, 0)  # the gold frame of a general
    fogged = draw(*fog_view(terrain[0], owner[0], armies[0], 1, 8, 8), 8, 8)
    assert tuple(fogged[r * 20 + 9, c * 20 + 9]) == (52, 52, 52)  # seat 1 sees fog there
    assert (
        not np.array_equal(draw(*state_view(terrain[1], owner[1], armies[1]), 8, 8), frame)
        or (armies[1] == armies[0]).all()
    )


def test_replay_render_writes_a_gif_and_a_viewer(replay_file, tmp_path, capsys):
    gif, html = tmp_path / "game.gif", tmp_path / "game.html"
    assert (
        main(["replay", "render", str(replay_file), "--gif", str(gif), "--html", str(html), "--view", "1"])
        == 0
    )
    terrain, owner, armies = replay_states(import_replay(replay_file))
    with Image.open(gif) as image:
        assert image.n_frames == 32  # ticks 0, 2, ..., 62 (the last tick always)
        image.seek(5)
        np.testing.assert_array_equal(
            np.asarray(image.convert("RGB")),
            draw(*fog_view(terrain[10], owner[10], armies[10], 1, 8, 8), 8, 8),
        )
    page = html.read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # no network
    assert "ann" in page and "62 ticks" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--view all or 0\.\.1"):
        main(["replay", "render", str(replay_file), "--view", "2"])
    with pytest.raises(SystemExit, match=r"not a generals\.io replay"):
        main(["replay", "render", str(tmp_path / "missing.json")])


class Browser:
    """Headless chromium driven over the DevTools protocol (one page)."""

    def __init__(self) -> None:
        self.profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             "--force-device-scale-factor=1", f"--user-data-dir={self.profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = ""
        while "DevTools listening on" not in line:
            line = self.process.stderr.readline()
            assert line or self.process.poll() is None, "chromium exited before listening"
        port = line.rsplit(":", 1)[1].split("/", 1)[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.calls = 0

    def call(self, method: str, **params: object) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            answer = json.loads(self.socket.recv())
            if answer.get("id") == self.calls:
                assert "error" not in answer, answer
                return answer["result"]

    def eval(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.getElementById('tick').textContent")

    def wait_for(self, expression: str, timeout: float = 20.0) -> object:
        deadline = time.monotonic() + timeout
        while not (value := self.eval(expression)):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.02)
        return value

    def choose_view(self, value: str) -> None:
        """Pick a view in the page's select, as a user does (the change event fires)."""
        self.eval(
            f"{{ const v = document.getElementById('view'); v.value = '{value}';"
            " v.dispatchEvent(new Event('change')); }"
        )

    def canvas(self) -> np.ndarray:
        url = self.eval("document.getElementById('board').toDataURL('image/png')")
        png = base64.b64decode(url.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)
        self.profile.cleanup()


@pytest.fixture(scope="module")
def browser():
    chrome = Browser()
    yield chrome
    chrome.close()


def test_the_viewer_in_a_browser_draws_the_renderers_frames(replay_file, browser, tmp_path):
    html = tmp_path / "game.html"
    assert main(["replay", "render", str(replay_file), "--html", str(html)]) == 0
    terrain, owner, armies = replay_states(import_replay(replay_file))
    browser.open(html.as_uri())
    np.testing.assert_array_equal(browser.canvas(), draw(*state_view(terrain[0], owner[0], armies[0]), 8, 8))
    for _ in range(37):  # the step button, as a user clicks it
        browser.eval("document.getElementById('step').click()")
    browser.choose_view("1")
    assert browser.eval("document.getElementById('tick').textContent").startswith("tick 37 / 62")
    np.testing.assert_array_equal(
        browser.canvas(), draw(*fog_view(terrain[37], owner[37], armies[37], 1, 8, 8), 8, 8)
    )
    browser.choose_view("0")
    np.testing.assert_array_equal(
        browser.canvas(), draw(*fog_view(terrain[37], owner[37], armies[37], 0, 8, 8), 8, 8)
    )
    browser.eval("document.getElementById('back').click()")
    np.testing.assert_array_equal(
        browser.canvas(), draw(*fog_view(terrain[36], owner[36], armies[36], 0, 8, 8), 8, 8)
    )
    browser.eval("document.getElementById('play').click()")  # plays on to the end, then stops
    browser.wait_for("document.getElementById('tick').textContent.startsWith('tick 62 / 62')")
    browser.wait_for("document.getElementById('play').textContent === 'play'")
    np.testing.assert_array_equal(
        browser.canvas(), draw(*fog_view(terrain[62], owner[62], armies[62], 0, 8, 8), 8, 8)
    )


def test_a_viewer_link_opens_a_tick_in_a_seats_view(replay_file, browser, tmp_path):
    html = tmp_path / "game.html"
    assert main(["replay", "render", str(replay_file), "--html", str(html), "--tile", "12"]) == 0
    terrain, owner, armies = replay_states(import_replay(replay_file))
    browser.open(html.as_uri() + "#t=50&view=1")
    frame = draw(*fog_view(terrain[50], owner[50], armies[50], 1, 8, 8), 8, 8, tile=12)
    np.testing.assert_array_equal(browser.canvas(), frame)
