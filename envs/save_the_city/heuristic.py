"""ALMA's heuristic allocation for SaveTheCity: each agent to the nearest fitting building."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from envs.save_the_city.constants import (
    AGENT_TYPES,
    BUILDER,
    F_FIRE,
    F_IS_AGENT,
    F_TYPE,
    F_X,
    F_Y,
    FIREFIGHTER,
    GENERALIST,
    GRID_SIZE,
)

__all__ = ["heuristic_allocation"]


def heuristic_allocation(
    state: Mapping[str, np.ndarray], n_agents: int, generalist_prefers_fire: bool = True
) -> np.ndarray:
    """ALMA's heuristic allocation from a ``state()`` dict: (n_agents,) int64 task indices.

    Each live agent row i < n_agents goes to the nearest (Manhattan) live task (task_mask 1),
    preferring burning buildings for firefighters, non-burning ones for builders and, as in
    ALMA's release, burning ones for generalists (``generalist_prefers_fire=False``: the
    nearest regardless of fire). Ties go to the lower task index. Dead or padding agent
    slots, and every slot when no task is live, get 0.
    """
    ents = np.asarray(state["entities"])
    live = np.asarray(state["entity_mask"]).astype(bool)
    e2t = np.asarray(state["entity2task"]).astype(bool) & live[:, None]
    task_live = np.asarray(state["task_mask"]).astype(bool) & e2t.any(axis=0)
    if not 0 <= n_agents <= ents.shape[0]:
        raise ValueError(f"n_agents={n_agents} must be in [0, {ents.shape[0]}] (entity rows)")
    out = np.zeros(n_agents, dtype=np.int64)
    tasks = np.flatnonzero(task_live)
    agents = np.flatnonzero(live[:n_agents] & (ents[:n_agents, F_IS_AGENT] > 0))
    if len(tasks) == 0 or len(agents) == 0:
        return out
    rows = e2t[:, tasks].argmax(axis=0)  # the entity row of each live task
    cell = np.rint(ents[:, F_X:F_Y + 1] * (GRID_SIZE - 1)).astype(np.int64)
    dist = np.abs(cell[agents][:, None, :] - cell[rows][None, :, :]).sum(axis=2)
    burning = ents[rows, F_FIRE] > 0
    kind = ents[agents, F_TYPE:F_TYPE + len(AGENT_TYPES)].argmax(axis=1)
    prefer_fire = (kind == FIREFIGHTER) | ((kind == GENERALIST) & generalist_prefers_fire)
    prefer_calm = kind == BUILDER
    second = (prefer_fire[:, None] & ~burning[None]) | (prefer_calm[:, None] & burning[None])
    key = (second * (4 * GRID_SIZE) + dist) * len(tasks) + np.arange(len(tasks))
    out[agents] = tasks[key.argmin(axis=1)]
    return out
