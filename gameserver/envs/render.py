"""Games to watch: frames of a board as RGB arrays, an animated GIF, a self-contained HTML viewer.

A frame is drawn from observation codes (`kind << 4 | owner`, the engine's `Observation.codes`) and
armies, so one drawing serves a seat's fog-of-war view, every seat's view merged, and the whole
state (`state_view`). Everything is axis-aligned rectangles of solid colour (tiles, markers, and
army counts in a 3x5 pixel font), so the HTML viewer's canvas, which draws the same rectangles
with the same palette and font (handed to it by `viewer_html`), matches `draw` pixel for pixel.

Per tile (`tile` pixels a side, the last row and column a grid line): fog is dark grey, a mountain
or city seen through fog a lighter square on it; plain land neutral light grey or its owner's
colour; mountains grey with a dark peak; cities a dark frame; generals a gold frame.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..engine.config import CITY, FOG, FOG_OBSTACLE, GENERAL, KIND_OFFSET, MOUNTAIN, PLAIN

TILE = 20  # pixels per tile: a 5-digit army (65535) in the 3x5 font fits its 19 free pixels
RENDER_FPS = 8
GRID_RGB = (30, 30, 30)
FOG_RGB = (52, 52, 52)
FOG_OBSTACLE_RGB = (92, 92, 92)
NEUTRAL_RGB = (214, 214, 214)
MOUNTAIN_RGB = (150, 150, 150)
PEAK_RGB = (90, 90, 90)
CITY_RGB = (120, 120, 120)
CITY_FRAME_RGB = (40, 40, 40)
GENERAL_FRAME_RGB = (255, 200, 0)
DARK_TEXT_RGB = (0, 0, 0)
LIGHT_TEXT_RGB = (255, 255, 255)
PLAYER_RGB = (
    (220, 40, 40),
    (40, 90, 230),
    (30, 150, 60),
    (140, 50, 190),
    (230, 120, 20),
    (20, 160, 170),
    (130, 40, 60),
    (170, 150, 20),
)
# 3x5 digits, row by row from the top, 3 bits a row (bit 2 = left column)
FONT = (
    (7, 5, 5, 5, 7),
    (2, 6, 2, 2, 7),
    (7, 1, 7, 4, 7),
    (7, 1, 7, 1, 7),
    (5, 5, 7, 1, 1),
    (7, 4, 7, 1, 7),
    (7, 4, 7, 5, 7),
    (7, 1, 1, 1, 1),
    (7, 5, 7, 5, 7),
    (7, 5, 7, 1, 7),
)
_ARMY_CAP = 65535


def state_view(terrain: np.ndarray, owner: np.ndarray, armies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole state as observation codes and armies (no fog): codes uint8, armies uint16."""
    codes = ((terrain.astype(np.uint8) + KIND_OFFSET) << 4) | owner.astype(np.uint8)
    return codes, np.minimum(armies, _ARMY_CAP).astype(np.uint16)


def fog_view(
    terrain: np.ndarray, owner: np.ndarray, armies: np.ndarray, player: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seat `player`'s view of one game's state rows [tiles], as the engine's `observe` writes it:
    a tile is seen when the player owns a tile of its 3x3 neighbourhood."""
    mine = np.pad((owner == player + 1).reshape(height, width), 1)
    seen = np.zeros((height, width), np.bool_)
    for dr in range(3):
        for dc in range(3):
            seen |= mine[dr : dr + height, dc : dc + width]
    seen = seen.reshape(-1)
    codes, army = state_view(terrain, owner, armies)
    obstacle = (terrain == MOUNTAIN) | (terrain == CITY)
    fogged = np.where(obstacle, FOG_OBSTACLE << 4, FOG << 4).astype(np.uint8)
    return np.where(seen, codes, fogged), np.where(seen, army, 0).astype(np.uint16)


def merged_view(codes: np.ndarray, armies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What any seat sees: views codes/armies [players, tiles] merged (a tile any seat sees shows
    as seen; else the most any seat knows: an obstacle in fog, or fog)."""
    best = np.argmax(codes >> 4, axis=0)
    tiles = np.arange(codes.shape[1])
    return codes[best, tiles], armies[best, tiles]


def draw(codes: np.ndarray, armies: np.ndarray, height: int, width: int, tile: int = TILE) -> np.ndarray:
    """uint8[height * tile, width * tile, 3]: the board of one view (codes, armies [tiles])."""
    if tile < 8:
        raise ValueError(f"tile must be at least 8 pixels, got {tile}")
    codes = np.asarray(codes).reshape(-1)
    armies = np.asarray(armies).reshape(-1)
    image = np.empty((height * tile, width * tile, 3), np.uint8)
    image[:] = GRID_RGB
    for t in range(height * width):
        top, left = (t // width) * tile, (t % width) * tile
        image[top : top + tile - 1, left : left + tile - 1] = _stamp(int(codes[t]), int(armies[t]), tile)
    return image


@functools.lru_cache(maxsize=1 << 14)
def _stamp(code: int, army: int, tile: int) -> np.ndarray:
    """The pixels of one tile (without its grid line): drawn once per (code, army, tile)."""
    stamp = np.zeros((tile - 1, tile - 1, 3), np.uint8)
    for x, y, w, h, rgb in _tile_rects(code >> 4, code & 15, army, tile, _palette()):
        stamp[y : y + h, x : x + w] = rgb
    return stamp


def _palette() -> dict[str, object]:
    return {
        "grid": GRID_RGB,
        "fog": FOG_RGB,
        "fogObstacle": FOG_OBSTACLE_RGB,
        "neutral": NEUTRAL_RGB,
        "mountain": MOUNTAIN_RGB,
        "peak": PEAK_RGB,
        "city": CITY_RGB,
        "cityFrame": CITY_FRAME_RGB,
        "generalFrame": GENERAL_FRAME_RGB,
        "darkText": DARK_TEXT_RGB,
        "lightText": LIGHT_TEXT_RGB,
        "players": PLAYER_RGB,
    }


def _tile_rects(kind: int, owner: int, army: int, tile: int, palette: dict) -> list[tuple]:
    """(x, y, w, h, rgb) rectangles of one tile, in drawing order, relative to its top-left corner.
    The viewer's `tileRects` (in `_VIEWER_JS`) is this function in JavaScript."""
    inner = tile - 1
    if kind == FOG:
        return [(0, 0, inner, inner, palette["fog"])]
    if kind == FOG_OBSTACLE:
        q = inner // 4
        return [
            (0, 0, inner, inner, palette["fog"]),
            (q, q, inner - 2 * q, inner - 2 * q, palette["fogObstacle"]),
        ]
    terrain = kind - KIND_OFFSET
    if owner:
        base = palette["players"][owner - 1]
    else:
        base = {PLAIN: palette["neutral"], MOUNTAIN: palette["mountain"]}.get(terrain, palette["city"])
    rects = [(0, 0, inner, inner, base)]
    if terrain == MOUNTAIN:
        q = inner // 4
        rects += [
            (q + 2 * k, inner - q - 2 * (k + 1), inner - 2 * q - 4 * k, 2, palette["peak"]) for k in range(3)
        ]
    elif terrain in (CITY, GENERAL):
        frame = palette["generalFrame"] if terrain == GENERAL else palette["cityFrame"]
        rects += [(0, 0, inner, 2, frame), (0, inner - 2, inner, 2, frame)]
        rects += [(0, 0, 2, inner, frame), (inner - 2, 0, 2, inner, frame)]
    if army > 0:
        light = owner or terrain in (CITY, GENERAL)
        rects += _text_rects(str(army), inner, palette["lightText"] if light else palette["darkText"])
    # small tiles: a peak may vanish, a long army loses the digits that do not fit
    return [
        (x, y, w, h, rgb)
        for x, y, w, h, rgb in rects
        if x >= 0 and y >= 0 and 0 < w <= inner - x and 0 < h <= inner - y
    ]


def _text_rects(text: str, inner: int, rgb: tuple) -> list[tuple]:
    """One 1x1 rectangle per lit pixel of `text` in the 3x5 font, centred in the tile."""
    left, top = (inner - (4 * len(text) - 1)) // 2, (inner - 5) // 2
    rects = []
    for i, digit in enumerate(text):
        for row, bits in enumerate(FONT[int(digit)]):
            rects += [(left + 4 * i + col, top + row, 1, 1, rgb) for col in range(3) if bits >> (2 - col) & 1]
    return rects


def write_gif(frames: list[np.ndarray], path: str | Path, fps: float = RENDER_FPS) -> None:
    """An animated GIF of RGB frames (needs Pillow: `pip install 'gamefleet[render]'`)."""
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError("writing a GIF needs Pillow: pip install 'gamefleet[render]'") from None
    images = [Image.fromarray(frame).quantize(colors=64, dither=Image.Dither.NONE) for frame in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, optimize=True
    )


def viewer_html(
    terrain: np.ndarray,
    owner: np.ndarray,
    armies: np.ndarray,
    height: int,
    width: int,
    *,
    names: list[str],
    title: str = "GameFleet replay",
    tile: int = TILE,
    fps: float = RENDER_FPS,
) -> str:
    """One HTML file that plays a game from its states (terrain, owner, armies: [ticks + 1, tiles],
    row t after tick t): play/pause, step, a tick slider, and a view switch (everything, or one
    seat's fog of war). No network: data, script and style are inline. `#t=37&view=1` in the
    address opens tick 37 in seat 1's view (`view=all`: everything)."""
    changed = np.zeros_like(owner, dtype=np.bool_)
    changed[1:] = (terrain[1:] != terrain[:-1]) | (owner[1:] != owner[:-1]) | (armies[1:] != armies[:-1])
    deltas = []
    for t in range(1, terrain.shape[0]):
        tiles = np.flatnonzero(changed[t])
        deltas.append(
            np.stack([tiles, terrain[t, tiles], owner[t, tiles], armies[t, tiles]], 1).ravel().tolist()
        )
    data = {
        "height": height,
        "width": width,
        "names": names,
        "tile": tile,
        "fps": fps,
        "kinds": {"fog": FOG, "fogObstacle": FOG_OBSTACLE, "offset": KIND_OFFSET},
        "terrainCodes": {"mountain": MOUNTAIN, "city": CITY, "general": GENERAL, "plain": PLAIN},
        "palette": _palette(),
        "font": FONT,
        "first": {"terrain": terrain[0].tolist(), "owner": owner[0].tolist(), "armies": armies[0].tolist()},
        "deltas": deltas,
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _VIEWER_HTML.replace("__TITLE__", _escape(title)).replace("__DATA__", payload)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_VIEWER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { margin: 0; background: #1e1e1e; color: #ddd; font: 14px sans-serif; }
#board { display: block; margin: 0; image-rendering: pixelated; }
#controls { padding: 8px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
#slider { width: 280px; }
</style></head>
<body>
<canvas id="board"></canvas>
<div id="controls">
  <button id="back" title="step back (left arrow)">&#9664;&#9664;</button>
  <button id="play" title="play / pause (space)">play</button>
  <button id="step" title="step (right arrow)">&#9654;&#9654;</button>
  <input id="slider" type="range" min="0" value="0">
  <span id="tick"></span>
  <label>view <select id="view"></select></label>
  <label>speed <select id="speed"><option value="0.5">0.5x</option><option value="1" selected>1x</option>
  <option value="2">2x</option><option value="4">4x</option></select></label>
  <span id="score"></span>
</div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const H = D.height, W = D.width, N = H * W, TILE = D.tile, P = D.names.length;
const K = D.kinds, T = D.terrainCodes, PAL = D.palette;
// every tick's state, rebuilt from the first state and the per-tick changes [tile, terrain, owner, army]*
const states = [{terrain: D.first.terrain, owner: D.first.owner, armies: D.first.armies}];
for (const delta of D.deltas) {
  const prev = states[states.length - 1];
  const next = {terrain: prev.terrain.slice(), owner: prev.owner.slice(), armies: prev.armies.slice()};
  for (let i = 0; i < delta.length; i += 4) {
    next.terrain[delta[i]] = delta[i + 1]; next.owner[delta[i]] = delta[i + 2]; next.armies[delta[i]] = delta[i + 3];
  }
  states.push(next);
}
const LAST = states.length - 1;
const canvas = document.getElementById("board"), ctx = canvas.getContext("2d");
canvas.width = W * TILE; canvas.height = H * TILE;
const slider = document.getElementById("slider"), viewSelect = document.getElementById("view");
const playButton = document.getElementById("play"), speedSelect = document.getElementById("speed");
slider.max = LAST;
viewSelect.add(new Option("everything", "all"));
D.names.forEach((name, p) => viewSelect.add(new Option(name + " (fog)", String(p))));
let tick = 0, timer = null;

function view(state, player) {  // codes and armies of one view, as the engine's observe writes them
  const codes = new Array(N), armies = new Array(N);
  for (let t = 0; t < N; t++) {
    let seen = player === null;
    for (let dr = -1; dr <= 1 && !seen; dr++) for (let dc = -1; dc <= 1 && !seen; dc++) {
      const r = Math.floor(t / W) + dr, c = t % W + dc;
      seen = r >= 0 && r < H && c >= 0 && c < W && state.owner[r * W + c] === player + 1;
    }
    const terrain = state.terrain[t];
    if (seen) { codes[t] = ((terrain + K.offset) << 4) | state.owner[t]; armies[t] = Math.min(state.armies[t], 65535); }
    else { codes[t] = (terrain === T.mountain || terrain === T.city ? K.fogObstacle : K.fog) << 4; armies[t] = 0; }
  }
  return {codes, armies};
}

function tileRects(kind, owner, army) {  // render.py's _tile_rects
  const inner = TILE - 1;
  if (kind === K.fog) return [[0, 0, inner, inner, PAL.fog]];
  if (kind === K.fogObstacle) {
    const q = Math.floor(inner / 4);
    return [[0, 0, inner, inner, PAL.fog], [q, q, inner - 2 * q, inner - 2 * q, PAL.fogObstacle]];
  }
  const terrain = kind - K.offset;
  let base = owner ? PAL.players[owner - 1] : terrain === T.plain ? PAL.neutral : terrain === T.mountain ? PAL.mountain : PAL.city;
  const rects = [[0, 0, inner, inner, base]];
  if (terrain === T.mountain) {
    const q = Math.floor(inner / 4);
    for (let k = 0; k < 3; k++) rects.push([q + 2 * k, inner - q - 2 * (k + 1), inner - 2 * q - 4 * k, 2, PAL.peak]);
  } else if (terrain === T.city || terrain === T.general) {
    const f = terrain === T.general ? PAL.generalFrame : PAL.cityFrame;
    rects.push([0, 0, inner, 2, f], [0, inner - 2, inner, 2, f], [0, 0, 2, inner, f], [inner - 2, 0, 2, inner, f]);
  }
  if (army > 0) {
    const light = owner || terrain === T.city || terrain === T.general;
    const text = String(army), rgb = light ? PAL.lightText : PAL.darkText;
    const left = Math.floor((inner - (4 * text.length - 1)) / 2), top = Math.floor((inner - 5) / 2);
    for (let i = 0; i < text.length; i++) D.font[+text[i]].forEach((bits, row) => {
      for (let col = 0; col < 3; col++) if ((bits >> (2 - col)) & 1) rects.push([left + 4 * i + col, top + row, 1, 1, rgb]);
    });
  }
  return rects.filter(([x, y, w, h]) => x >= 0 && y >= 0 && w > 0 && w <= inner - x && h > 0 && h <= inner - y);
}

function draw() {
  const state = states[tick], player = viewSelect.value === "all" ? null : +viewSelect.value;
  const v = view(state, player);
  ctx.fillStyle = "rgb(" + D.palette.grid + ")";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let t = 0; t < N; t++) {
    const x0 = (t % W) * TILE, y0 = Math.floor(t / W) * TILE;
    for (const [x, y, w, h, rgb] of tileRects(v.codes[t] >> 4, v.codes[t] & 15, v.armies[t])) {
      ctx.fillStyle = "rgb(" + rgb.join(",") + ")";
      ctx.fillRect(x0 + x, y0 + y, w, h);
    }
  }
  slider.value = tick;
  document.getElementById("tick").textContent = "tick " + tick + " / " + LAST + " (turn " + Math.floor(tick / 2) + ")";
  const land = new Array(P).fill(0), armyTotal = new Array(P).fill(0);
  for (let t = 0; t < N; t++) if (state.owner[t]) { land[state.owner[t] - 1]++; armyTotal[state.owner[t] - 1] += state.armies[t]; }
  document.getElementById("score").textContent = D.names.map((n, p) => n + ": " + land[p] + " land, " + armyTotal[p] + " army").join(" | ");
  document.title = document.title.replace(/ \\(tick \\d+\\)$/, "") + " (tick " + tick + ")";
}

function seek(t) { tick = Math.max(0, Math.min(LAST, t)); draw(); }
function pause() { if (timer !== null) { clearInterval(timer); timer = null; } playButton.textContent = "play"; }
function play() {
  if (tick >= LAST) seek(0);
  pause();
  playButton.textContent = "pause";
  timer = setInterval(() => { if (tick >= LAST) pause(); else seek(tick + 1); }, 1000 / (D.fps * +speedSelect.value));
}
playButton.onclick = () => (timer === null ? play() : pause());
document.getElementById("step").onclick = () => { pause(); seek(tick + 1); };
document.getElementById("back").onclick = () => { pause(); seek(tick - 1); };
slider.oninput = () => { pause(); seek(+slider.value); };
viewSelect.onchange = draw;
speedSelect.onchange = () => { if (timer !== null) play(); };
document.addEventListener("keydown", (e) => {
  if (e.key === " ") { e.preventDefault(); playButton.click(); }
  else if (e.key === "ArrowRight") document.getElementById("step").click();
  else if (e.key === "ArrowLeft") document.getElementById("back").click();
});
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.has("view") && [...viewSelect.options].some((o) => o.value === hash.get("view"))) viewSelect.value = hash.get("view");
seek(hash.has("t") ? parseInt(hash.get("t"), 10) || 0 : 0);
</script>
</body></html>
"""  # noqa: E501 (JavaScript)


def _human_problem() -> str | None:
    """Why render_mode="human" cannot open a window here, or None when it can."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "needs a display and none is set ($DISPLAY, $WAYLAND_DISPLAY)"
    try:
        import tkinter  # noqa: F401 (the window's toolkit)
    except ImportError:
        return "needs tkinter (Debian: apt install python3-tk)"
    return None


# What the envs' metadata offers: "human" only where a window can open (gymnasium's check_env
# makes the env in every mode listed).
RENDER_MODES = ("rgb_array",) if _human_problem() else ("rgb_array", "human")


def check_render_mode(mode: str | None) -> str | None:
    """The envs' render_mode: None, "rgb_array" (frames as arrays) or "human" (a window, where a
    display exists). ValueError names what is missing."""
    if mode not in (None, "rgb_array", "human"):
        raise ValueError(f"render_mode must be None or one of ('rgb_array', 'human'), got {mode!r}")
    if mode == "human" and (problem := _human_problem()):
        raise ValueError(
            f"render_mode='human' {problem}; use render_mode='rgb_array' for frames as arrays, "
            "or save replays and watch them with `gamefleet replay render`"
        )
    return mode


def observation_frame(
    codes: np.ndarray, armies: np.ndarray, seat: int | None, height: int, width: int
) -> np.ndarray:
    """The frame of one game's views (codes, armies [players, tiles]): one seat's, or (None) what
    any seat sees."""
    view = merged_view(codes, armies) if seat is None else (codes[seat], armies[seat])
    return draw(*view, height, width)


class Window:
    """render_mode="human": frames shown in a Tk window, at most `fps` a second."""

    def __init__(self, title: str, fps: float = RENDER_FPS) -> None:
        import tkinter

        self._root = tkinter.Tk()
        self._root.title(title)
        self._label = tkinter.Label(self._root)
        self._label.pack()
        self._photo = None
        self._interval = 1.0 / fps
        self._shown = 0.0

    def show(self, frame: np.ndarray) -> None:
        import tkinter

        h, w = frame.shape[:2]
        self._photo = tkinter.PhotoImage(data=b"P6 %d %d 255\n" % (w, h) + frame.tobytes(), format="PPM")
        self._label.configure(image=self._photo)
        self._root.update()
        wait = self._shown + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._shown = time.monotonic()

    def close(self) -> None:
        self._root.destroy()
