"""RGB pictures of grids drawn with Pillow: the LBF and RWARE grids (the packages' own
renderers need a pyglet window), used by ``LBFTasks.render`` and ``RWARETasks.render``, and
the blank grid (``grid_canvas``) that SaveTheCity's drawing starts from."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BACKGROUND", "CELL", "TEXT", "draw_lbf", "draw_rware", "grid_canvas"]

CELL = 32
BACKGROUND, TEXT = (238, 236, 228), (25, 25, 25)
_GRID = (214, 211, 202)
_AGENT_COLOURS = ((214, 58, 48), (46, 108, 214), (52, 160, 76), (160, 82, 190), (230, 140, 30))


def grid_canvas(rows: int, cols: int, margin_below: int = 0) -> tuple[Any, Any, Any]:
    """(image, draw, font): a Pillow RGB image of ``cols * CELL`` by ``rows * CELL +
    margin_below`` pixels with the cell lines of a rows x cols grid, its ``ImageDraw`` and
    Pillow's default font at size 13."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (cols * CELL, rows * CELL + margin_below), BACKGROUND)
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    for c in range(cols + 1):
        draw.line((c * CELL, 0, c * CELL, rows * CELL), fill=_GRID)
    for r in range(rows + 1):
        draw.line((0, r * CELL, cols * CELL, r * CELL), fill=_GRID)
    return image, draw, font


def _box(row: int, col: int, inset: int = 0) -> tuple[int, int, int, int]:
    return (col * CELL + inset, row * CELL + inset,
            (col + 1) * CELL - 1 - inset, (row + 1) * CELL - 1 - inset)


def _label(draw: Any, font: Any, row: int, col: int, text: str, fill=TEXT) -> None:
    draw.text((col * CELL + CELL // 2, row * CELL + CELL // 2), text, fill=fill, font=font,
              anchor="mm")


def draw_lbf(players: list[Any], field: np.ndarray, sight: int) -> np.ndarray:
    """(rows*32, cols*32, 3) uint8: food (green, its level), players (coloured discs, their
    level, index order) and, under partial sight, each player's food window outlined."""
    rows, cols = field.shape
    image, draw, font = grid_canvas(rows, cols)
    for r, c in zip(*np.nonzero(field), strict=True):
        draw.rectangle(_box(r, c, 3), fill=(120, 190, 90))
        _label(draw, font, r, c, str(int(field[r, c])))
    for i, player in enumerate(players):
        r, c = player.position
        colour = _AGENT_COLOURS[i % len(_AGENT_COLOURS)]
        if sight < max(rows, cols):
            draw.rectangle((max(c - sight, 0) * CELL, max(r - sight, 0) * CELL,
                            min(c + sight + 1, cols) * CELL - 1,
                            min(r + sight + 1, rows) * CELL - 1), outline=colour, width=2)
        draw.ellipse(_box(r, c, 4), fill=colour)
        _label(draw, font, r, c, str(int(player.level)), fill=(255, 255, 255))
    return np.asarray(image, dtype=np.uint8)


_ARROW = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}  # rware Direction value -> (dx, dy)


def draw_rware(warehouse: Any) -> np.ndarray:
    """(height*32, width*32, 3) uint8: highways (light), goals (dark), shelves (grey;
    requested ones teal), robots (coloured discs with a line for their heading; a carried
    shelf is drawn under its robot)."""
    height, width = warehouse.grid_size
    image, draw, font = grid_canvas(height, width)
    for y, x in zip(*np.nonzero(warehouse.highways == 0), strict=True):
        draw.rectangle(_box(y, x), fill=(225, 222, 212))
    for x, y in warehouse.goals:
        draw.rectangle(_box(y, x), fill=(60, 60, 60))
    requested = {s.id for s in warehouse.request_queue}
    for shelf in warehouse.shelfs:
        fill = (40, 160, 160) if shelf.id in requested else (150, 150, 150)
        draw.rectangle(_box(shelf.y, shelf.x, 3), fill=fill)
    for i, robot in enumerate(warehouse.agents):
        colour = _AGENT_COLOURS[i % len(_AGENT_COLOURS)]
        draw.ellipse(_box(robot.y, robot.x, 7), fill=colour)
        dx, dy = _ARROW[robot.dir.value]
        cx, cy = robot.x * CELL + CELL // 2, robot.y * CELL + CELL // 2
        draw.line((cx, cy, cx + dx * CELL // 2, cy + dy * CELL // 2), fill=TEXT, width=3)
        _label(draw, font, robot.y, robot.x, str(i), fill=(255, 255, 255))
    return np.asarray(image, dtype=np.uint8)
