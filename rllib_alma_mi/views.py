"""What the allocator and the workers see, and when the allocator acts: pure numpy, no Ray.

The hierarchy wrapper (`rllib_alma_mi.hierarchy.HierarchicalEnv`) and the deployment runtime
(`rllib_alma_mi.deploy`) both build their observations here, so a trained team acts on the
same inputs in training and after export. Shapes: E entity rows, F features, T tasks, N agent
slots (agent slot i is entity row i); masks are 1 = present / visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from rllib_alma_mi.settings import ALLOCATOR_VIEWS


def allocator_observation(
    state: Mapping[str, np.ndarray],
    obs_masks: Mapping[int, np.ndarray],
    n_slots: int,
    view: str = "global",
) -> dict[str, np.ndarray]:
    """The allocator's acting observation.

    state: the env's `state()` (entities (E, F), entity_mask (E,), entity2task (E, T),
    task_mask (T,)); obs_masks: {slot: that live agent's obs_mask (E,)}; view: "global" (the
    whole state) or "team" (only the entities some live agent sees).
    Returns entities (E, F), entity_mask (E,), obs_mask (E,), entity2task (E, T),
    task_mask (T,), agent_mask (N,) and agent_obs_mask (N, E).
    """
    if view not in ALLOCATOR_VIEWS:
        raise ValueError(f"allocator_view={view!r} is not allowed; choose one of "
                         f"{list(ALLOCATOR_VIEWS)}")
    n_entities = state["entity_mask"].shape[0]
    agent_mask = np.zeros(n_slots, dtype=np.int8)
    agent_obs_mask = np.zeros((n_slots, n_entities), dtype=np.int8)
    for slot, mask in obs_masks.items():
        agent_mask[slot] = 1
        agent_obs_mask[slot] = mask
    entity_mask = state["entity_mask"]
    entities, entity2task = state["entities"], state["entity2task"]
    if view == "team":
        seen = agent_obs_mask.max(axis=0)
        entities = entities * seen[:, None].astype(entities.dtype)
        entity2task = entity2task * seen[:, None]
        entity_mask = entity_mask * seen
        obs_mask = seen.astype(np.int8)
    else:
        obs_mask = entity_mask.astype(np.int8, copy=True)
    return {
        "entities": entities,
        "entity_mask": entity_mask,
        "obs_mask": obs_mask,
        "entity2task": entity2task,
        "task_mask": state["task_mask"],
        "agent_mask": agent_mask,
        "agent_obs_mask": agent_obs_mask,
    }


def subtask_entities(
    slot: int,
    allocation: np.ndarray,
    live_slots: Iterable[int],
    entity2task: np.ndarray,
) -> np.ndarray:
    """The entities of agent slot `slot`'s subtask (E,) int8: the agent itself, the entities of
    its task (`entity2task` (E, T)), the live agents (`live_slots`) assigned to the same task
    in `allocation` (N,), and the shared entities: every non-agent row (row >= N) that belongs
    to no task.

    Shared entities are part of every subtask because no task owns them: RWARE's goal cells
    and unrequested shelves are where a requested shelf must go and what blocks the way back.
    Hiding them would leave a worker unable to finish its task. Environments whose every
    non-agent entity belongs to a task (SaveTheCity, LBF, MPE `simple_spread`) are unaffected.
    """
    task = allocation[slot]
    members = entity2task[:, task].astype(bool)
    shared = ~entity2task.any(axis=1)
    shared[: allocation.shape[0]] = False
    members |= shared
    mates = [s for s in live_slots if allocation[s] == task]
    members[mates] = True
    members[slot] = True
    return members.astype(np.int8)


def subtask_obs_mask(
    obs_mask: np.ndarray,
    slot: int,
    allocation: np.ndarray,
    live_slots: Iterable[int],
    entity2task: np.ndarray,
) -> np.ndarray:
    """A worker's `obs_mask` (E,) restricted to its subtask (`subtask_entities`), as ALMA's
    low-level agents see: each entity of the subtask only where `obs_mask` already shows it.
    Returns int8 (E,).
    """
    members = subtask_entities(slot, allocation, live_slots, entity2task).astype(bool)
    return (obs_mask.astype(bool) & members).astype(np.int8)


def allocation_due(
    env_steps: int, alloc_interval: int | None, prev_task_mask: np.ndarray, task_mask: np.ndarray
) -> bool:
    """Whether the allocator acts again after `env_steps` (>= 1) env steps: whenever a task
    live before the last step (`prev_task_mask` (T,)) is no longer live (`task_mask` (T,)),
    and every `alloc_interval` steps unless it is None."""
    task_resolved = bool(np.any(prev_task_mask.astype(bool) & ~task_mask.astype(bool)))
    periodic = alloc_interval is not None and env_steps % alloc_interval == 0
    return periodic or task_resolved


def random_allocation(
    rng: np.random.Generator, task_mask: np.ndarray, n_slots: int
) -> np.ndarray:
    """A task drawn uniformly from the live tasks of `task_mask` (T,) for each of the N slots:
    (N,) int64 (all 0 when no task is live)."""
    live_tasks = np.flatnonzero(task_mask)
    allocation = np.zeros(n_slots, dtype=np.int64)
    if live_tasks.size:
        allocation[:] = rng.choice(live_tasks, size=n_slots)
    return allocation


def live_task_violation(
    allocation: np.ndarray, live_slots: np.ndarray, task_mask: np.ndarray
) -> str | None:
    """None when every live slot of `allocation` (N,) holds a live task of `task_mask` (T,);
    otherwise what is wrong, as the end of a sentence naming the allocation."""
    live = np.asarray(task_mask).astype(bool)
    chosen = allocation[live_slots]
    n_tasks = live.shape[0]
    if np.any(chosen < 0) or np.any(chosen >= n_tasks) or not np.all(
        live[np.clip(chosen, 0, n_tasks - 1)]
    ):
        return (
            f"assigns live agent slots {live_slots.tolist()} to tasks {chosen.tolist()}, but "
            f"only tasks {np.flatnonzero(live).tolist()} are live"
        )
    return None

