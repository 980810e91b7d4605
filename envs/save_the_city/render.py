"""Drawing SaveTheCity: a ``CityView`` (what the env shows) to an RGB picture, or a window.

The drawing reads nothing but the ``CityView`` that ``SaveTheCityEnv.city_view()`` returns.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.grid_pictures import BACKGROUND, CELL, TEXT, grid_canvas
from envs.save_the_city.constants import AGENT_TYPES, GRID_SIZE

__all__ = ["CityView", "draw_city", "show_frame"]

_STATUS_H = 44
_AGENT_COLOURS = ((214, 58, 48), (46, 108, 214), (52, 160, 76))  # by agent type


@dataclass(frozen=True)
class CityView:
    """Read-only snapshot of an episode for drawing (n agents, n_b buildings; arrays are
    read-only copies, cells are (x, y) with y up)."""

    agent_pos: np.ndarray  # (n, 2) int64
    agent_types: tuple[int, ...]  # (n,) indices into AGENT_TYPES
    building_pos: np.ndarray  # (n_b, 2) int64
    health: np.ndarray  # (n_b,) float64 in [0, 1]
    fire: np.ndarray  # (n_b,) float64 in [0, 1]
    fast_burn: np.ndarray  # (n_b,) bool
    frozen: np.ndarray  # (n_b,) bool: a generalist froze it in the last step
    complete: np.ndarray  # (n_b,) bool
    burned: np.ndarray  # (n_b,) bool
    assignment: tuple[tuple[int, int], ...]  # (agent slot, task) pairs, in the order set
    sight_range: int | None
    t: int  # steps taken in this episode
    max_cycles: int
    episode_return: float  # team reward summed over the episode so far


def _cell_box(x: int, y: int, inset: int = 0) -> tuple[int, int, int, int]:
    left, top = x * CELL, (GRID_SIZE - 1 - y) * CELL
    return left + inset, top + inset, left + CELL - 1 - inset, top + CELL - 1 - inset


def _cell_centre(x: int, y: int) -> tuple[int, int]:
    return x * CELL + CELL // 2, (GRID_SIZE - 1 - y) * CELL + CELL // 2


def _blend(a: tuple[int, ...], b: tuple[int, ...], w: float) -> tuple[int, ...]:
    return tuple(round(x * (1.0 - w) + y * w) for x, y in zip(a, b, strict=True))


def _draw_building(draw: Any, view: CityView, b: int, font: Any) -> None:
    """Body coloured by kind (dark: fast burn, tan: slow) and reddened by fire, gold when
    complete, black with a red cross when burned; health bar along the bottom."""
    x, y = (int(v) for v in view.building_pos[b])
    health, fire = float(view.health[b]), float(view.fire[b])
    left, top, right, bottom = _cell_box(x, y, 1)
    if view.complete[b]:
        body, text = (236, 192, 48), TEXT
    elif view.burned[b]:
        body, text = (48, 40, 40), (230, 230, 230)
    else:
        fast = view.fast_burn[b]
        body = _blend((96, 100, 120) if fast else (170, 150, 118), (255, 60, 0), 0.8 * fire)
        text = (255, 255, 255)
    draw.rectangle((left, top, right, bottom), fill=body)
    if fire > 0:
        draw.rectangle((left, top, right, bottom), outline=(200, 0, 0), width=2)
    if view.frozen[b]:
        draw.rectangle((left + 2, top + 2, right - 2, bottom - 2), outline=(90, 220, 255),
                       width=2)
    if view.burned[b]:
        draw.line((left + 4, top + 4, right - 4, bottom - 8), fill=(200, 30, 30), width=3)
        draw.line((left + 4, bottom - 8, right - 4, top + 4), fill=(200, 30, 30), width=3)
    bar_top = bottom - 6
    draw.rectangle((left + 2, bar_top, right - 2, bottom - 2), fill=(30, 30, 30))
    if health > 0:
        draw.rectangle((left + 2, bar_top, left + 2 + round((right - left - 4) * health),
                        bottom - 2), fill=(70, 210, 80))
    cx, cy = _cell_centre(x, y)
    draw.text((cx, cy - 3), str(b), fill=text, font=font, anchor="mm")


def draw_city(view: CityView) -> np.ndarray:
    """Picture of the grid: (16*32 + 44, 16*32, 3) uint8."""
    width = GRID_SIZE * CELL
    image, draw, font = grid_canvas(GRID_SIZE, GRID_SIZE, margin_below=_STATUS_H)
    n, nb = len(view.agent_types), len(view.building_pos)
    if view.sight_range is not None:
        r = view.sight_range
        for i in range(n):
            x, y = (int(v) for v in view.agent_pos[i])
            box = _cell_box(max(x - r, 0), min(y + r, GRID_SIZE - 1))
            end = _cell_box(min(x + r, GRID_SIZE - 1), max(y - r, 0))
            draw.rectangle((box[0], box[1], end[2], end[3]),
                           outline=_blend(_AGENT_COLOURS[view.agent_types[i]], BACKGROUND, 0.6))
    for i, task in view.assignment:
        if i < n and task < nb:
            start = _cell_centre(*(int(v) for v in view.agent_pos[i]))
            end = _cell_centre(*(int(v) for v in view.building_pos[task]))
            draw.line(start + end, fill=_AGENT_COLOURS[view.agent_types[i]], width=3)
    for b in range(nb):
        _draw_building(draw, view, b, font)
    for i in range(n):
        cx, cy = _cell_centre(*(int(v) for v in view.agent_pos[i]))
        kind = view.agent_types[i]
        draw.ellipse((cx - 12, cy - 12, cx + 12, cy + 12), fill=_AGENT_COLOURS[kind],
                     outline=(20, 20, 20), width=2)
        label = "FBG"[kind] + str(i)
        draw.text((cx, cy), label, fill=(255, 255, 255), font=font, anchor="mm")
    status = (f"t={view.t}/{view.max_cycles}  complete {int(view.complete.sum())}/{nb}  "
              f"burned {int(view.burned.sum())}/{nb}  return {view.episode_return:+.2f}")
    draw.text((8, width + 6), status, fill=TEXT, font=font)
    legend_x = 8
    for kind, name in enumerate(AGENT_TYPES):
        draw.ellipse((legend_x, width + 27, legend_x + 10, width + 37), fill=_AGENT_COLOURS[kind])
        draw.text((legend_x + 14, width + 25), name, fill=TEXT, font=font)
        legend_x += 110
    draw.text((legend_x, width + 25), "red: fire, bar: health", fill=TEXT, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def show_frame(image: np.ndarray, figure: Any, fps: float) -> Any:
    """Show an (H, W, 3) picture in a matplotlib window (``figure`` None opens one) for
    ``1 / fps`` seconds; returns the figure to reuse. Raises RuntimeError without a display."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless or backend in ("agg", "pdf", "ps", "svg", "template", "cairo"):
        raise RuntimeError(
            f"render_mode='human' needs a display (matplotlib backend {backend!r}, "
            "DISPLAY unset?); use render_mode='rgb_array' and save the frame instead"
        )
    import matplotlib.pyplot as plt

    if figure is None:
        figure = plt.figure("save_the_city")
    figure.clf()
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(image)
    ax.axis("off")
    plt.pause(1.0 / fps)
    return figure
