"""SaveTheCity's shared vocabulary: the grid, agent types, actions and entity features."""

from __future__ import annotations

GRID_SIZE = 16
LATTICE = (1, 4, 7, 10, 13)  # x and y coordinates of the cells buildings are drawn on

AGENT_TYPES = ("firefighter", "builder", "generalist")
FIREFIGHTER, BUILDER, GENERALIST = 0, 1, 2
MAX_TEAM = 64

ACTION_NAMES = (
    "stay", "up", "down", "left", "right",
    "up2", "down2", "left2", "right2",
    "extinguish", "build", "freeze",
)
N_ACTIONS = len(ACTION_NAMES)
STAY, EXTINGUISH, BUILD, FREEZE = 0, 9, 10, 11
# (dx, dy) of actions 0..8; "up" is +y (drawn upwards by render()).
MOVE_DELTAS = (
    (0, 0), (0, 1), (0, -1), (-1, 0), (1, 0), (0, 2), (0, -2), (-2, 0), (2, 0),
)

FEATURES = (
    "is_agent",         # 0
    "is_building",      # 1
    "x",                # 2  x / 15
    "y",                # 3  y / 15
    "firefighter",      # 4  agent type one-hot
    "builder",          # 5
    "generalist",       # 6
    "health",           # 7  building health in [0, 1]
    "fire",             # 8  building fire strength in [0, 1]
    "on_fire",          # 9  fire > 0
    "frozen",           # 10 a generalist froze it in the last step
    "complete",         # 11 resolved: health reached 1
    "burned",           # 12 resolved: health reached 0
    "ignite_progress",  # 13 steps since last ignition / ignition period (0 once resolved)
    "fast_burn",        # 14 1 fast burn (rate 1.0), 0 slow burn (rate 0.5)
    "ignite_rate",      # 15 ignition frequency: (1/period - 1/80) / (1/10 - 1/80), clipped
)
N_FEATURES = len(FEATURES)
F_IS_AGENT, F_IS_BUILDING, F_X, F_Y = 0, 1, 2, 3
F_TYPE = 4  # F_TYPE + AGENT_TYPES.index(name)
F_HEALTH, F_FIRE, F_ON_FIRE, F_FROZEN, F_COMPLETE, F_BURNED = 7, 8, 9, 10, 11, 12
F_IGNITE_PROGRESS, F_FAST_BURN, F_IGNITE_RATE = 13, 14, 15

# Every name above; the package re-exports them all (``envs.save_the_city.F_HEALTH``).
__all__ = sorted(name for name in dict(globals()) if name.isupper())
