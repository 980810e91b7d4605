"""Multi-Robot Warehouse (package ``rware`` 2.0.0) seen through the entity-task contract.

``RWARETasks`` wraps ``rware.warehouse.Warehouse``. Dynamics, actions (``Discrete(5)``:
noop, forward, left, right, toggle_load) and per-agent rewards are the wrapped env's,
unchanged; observations and infos are rebuilt from its fields (``agents``, ``shelfs``,
``request_queue``, ``goals``) into the contract (see ``envs.contract``).

Entities (E = n_agents + n_shelves + n_goals, F = 11, T = request_queue_size): rows
``0..n-1`` are the robots in ``possible_agents`` order, then every shelf (in RWARE's shelf
id order, which is fixed by the layout), then the goal (delivery) cells. Task t is request
slot t: its entity is the shelf currently requested in that slot. When that shelf is
delivered RWARE requests another one in the same slot, so task t then refers to the new
shelf; requests never run out, so ``task_mask`` is all ones. Features (``FEATURES``):
is_agent, is_shelf, is_goal, x / (width - 1), y / (height - 1), the robot's direction
one-hot (up, down, left, right), carrying (a robot that carries a shelf, a shelf that is
carried) and requested (a shelf in the request queue). Every entity is always live.

Sight (``obs_mask``) is RWARE's sensor: a robot sees the robots and shelves within
``sensor_range`` cells in both coordinates (the ``(2 r + 1)^2`` square its own observation
covers). Goal cells are always visible: the layout is fixed and a robot observes its own
absolute position. Rows a robot cannot see are zero in its ``entities``. ``action_mask`` is
all ones (RWARE accepts every action in every state and resolves blocked moves itself).
The registered ids have sensor range 1; pass ``sensor_range=2`` (or any Warehouse argument)
with an id to override it, e.g. ``parallel_env("rware-tiny-2ag-v2", sensor_range=2)``.

Rewards. A requested shelf that reaches a goal cell is a delivery: +1 to the robot carrying
it (``RewardType.INDIVIDUAL``, the registered ids) or +1 to every robot (``GLOBAL``).
``infos[agent]["task_rewards"][t]`` is the reward paid, summed over robots, for the
delivery of slot t's shelf in this step, the same for every agent, so ``sum(task_rewards) ==
sum(rewards.values())``. ``TWO_STAGE`` rewards (half for the return of a shelf, after its
request is gone) have no task and are rejected.

Episodes end at ``max_steps`` or after ``max_inactivity_steps`` without a delivery, both
reported as truncation (RWARE sets ``done``); there is no terminal success. Infos then hold
``deliveries``, the number of shelves delivered in the episode.

``flat_parallel_env(...)`` gives RWARE's own vector observation per agent instead, for
baselines (see ``envs.gym_benchmarks.FlatParallelEnv``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.grid_pictures import draw_rware
from envs.gym_benchmarks import FlatParallelEnv, TeamTasksEnv, import_package, resolve_kwargs

__all__ = [
    "ACTION_NAMES",
    "FEATURES",
    "RWARETasks",
    "flat_parallel_env",
    "nearest_request_allocation",
    "parallel_env",
]

FEATURES = (
    "is_agent", "is_shelf", "is_goal", "x", "y",
    "dir_up", "dir_down", "dir_left", "dir_right", "carrying", "requested",
)
F_IS_AGENT, F_IS_SHELF, F_IS_GOAL, F_X, F_Y = range(5)
F_DIR = 5  # F_DIR + rware Direction value (UP 0, DOWN 1, LEFT 2, RIGHT 3)
F_CARRYING, F_REQUESTED = 9, 10
N_FEATURES = len(FEATURES)
ACTION_NAMES = ("noop", "forward", "left", "right", "toggle_load")
N_ACTIONS = len(ACTION_NAMES)
_INSTALL_HINT = "the robotic warehouse needs the rware package: pip install .[rware]"
_ID_HELP = (
    "registered ids are rware-{tiny|small|medium|large}-{1..19}ag{-easy|-hard}-v2 (e.g. "
    "rware-tiny-2ag-v2); for another sensor range, layout or reward pass Warehouse arguments "
    "with the id (sensor_range=2) or all of them without it"
)


def _warehouse_module() -> Any:
    return import_package("rware", "rware.warehouse", _INSTALL_HINT)


def _make_warehouse(env_id: str | None, kwargs: dict[str, Any]) -> Any:
    wh = _warehouse_module()
    resolved = resolve_kwargs("rware", env_id, kwargs, wh.Warehouse, _ID_HELP)
    for key, enum in (("reward_type", wh.RewardType), ("observation_type", wh.ObservationType)):
        value = resolved.get(key)
        if isinstance(value, str):
            if value.upper() not in enum.__members__:
                raise ValueError(f"rware: {key}={value!r} is unknown; allowed: "
                                 f"{[m.lower() for m in enum.__members__]}")
            resolved[key] = enum[value.upper()]
    if resolved["reward_type"] == wh.RewardType.TWO_STAGE:
        raise ValueError("rware: reward_type=TWO_STAGE is not supported (the return half of "
                         "its reward belongs to no request); use 'individual' or 'global'")
    if resolved.get("msg_bits", 0) != 0:
        raise ValueError(f"rware: msg_bits={resolved['msg_bits']!r} is not supported (it "
                         "makes actions MultiDiscrete); use msg_bits=0")
    if resolved.get("render_mode") is not None:
        raise ValueError(f"rware: render_mode={resolved['render_mode']!r} is not supported here "
                         "(RWARE's renderer needs a pyglet window); use render_mode=None")
    return wh.Warehouse(**resolved)


def parallel_env(env_id: str | None = None, **kwargs: Any) -> RWARETasks:
    """The contract adapter of an RWARE task: a registered gymnasium id (``env_id``, e.g.
    ``"rware-tiny-2ag-v2"``), optionally with ``Warehouse`` arguments that override the
    id's, or the ``Warehouse`` arguments alone (see ``RWARETasks``)."""
    return RWARETasks(env_id, **kwargs)


def flat_parallel_env(env_id: str | None = None, **kwargs: Any) -> FlatParallelEnv:
    """RWARE with its own flattened vector observation per agent as a PettingZoo
    ``ParallelEnv``; arguments as ``parallel_env``. Every episode end is a truncation."""
    env = _make_warehouse(env_id, kwargs)
    if not env.fast_obs:
        raise ValueError("rware: flat_parallel_env needs observation_type=FLATTENED")
    return FlatParallelEnv(env, "rware_flat_v0", lambda e: False)


class RWARETasks(TeamTasksEnv):
    """The robotic warehouse as a contract ``ParallelEnv``: robots, shelves and goals as
    entities, one task per request slot.

    Args:
        env_id: a registered RWARE gymnasium id, or None to give every ``Warehouse``
            argument in ``kwargs``.
        render_mode: None or "rgb_array" (``render()`` draws the grid with Pillow).
        **kwargs: ``Warehouse`` arguments (override the id's when ``env_id`` is given);
            ``reward_type`` and ``observation_type`` may be given by name.

    Shapes (E = n + S + G, F = 11, T = request_queue_size, A = 5; n robots, S shelves, G
    goals), per agent: ``entities`` (E, F) float32, ``entity_mask`` (E,) int8, ``obs_mask``
    (E,) int8, ``entity2task`` (E, T) int8, ``task_mask`` (T,) int8, ``agent_index`` ()
    int64, ``action_mask`` (A,) int8. ``state()``: the same layout, unmasked.
    """

    metadata = {
        "name": "rware_tasks_v0", "render_modes": ["rgb_array"], "is_parallelizable": True
    }
    family = "rware"

    def __init__(
        self, env_id: str | None = None, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(env_id, render_mode, kwargs, _make_warehouse)
        env = self._env
        self.n_agents = int(env.n_agents)
        self.height, self.width = (int(s) for s in env.grid_size)
        # RWARE puts a shelf on every non-highway cell at reset
        self.n_shelves = int((env.highways == 0).sum())
        self.n_goals = len(env.goals)
        self.sensor_range = int(env.sensor_range)
        self.n_tasks = int(env.request_queue_size)
        if not 1 <= self.n_tasks <= self.n_shelves:
            raise ValueError(f"rware: request_queue_size={self.n_tasks} must be in [1, "
                             f"{self.n_shelves}] (the number of shelves)")
        self.n_entities = self.n_agents + self.n_shelves + self.n_goals
        self._shelf0 = self.n_agents
        self._goal0 = self.n_agents + self.n_shelves
        self._build_agents(self.n_agents, self.n_entities, N_FEATURES, self.n_tasks, N_ACTIONS)
        self._scale = np.array([max(self.width - 1, 1), max(self.height - 1, 1)], np.float32)
        goals = np.array(env.goals, dtype=np.float32).reshape(-1, 2)  # (x, y)
        self._goal_rows = np.zeros((self.n_goals, N_FEATURES), dtype=np.float32)
        self._goal_rows[:, F_IS_GOAL] = 1.0
        self._goal_rows[:, F_X:F_Y + 1] = goals / self._scale
        self._deliveries = 0

    # ------------------------------------------------------------------ env fields
    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Robot positions (n, 2) and shelf positions (S, 2), both as (x, y) cells."""
        robots = np.array([(a.x, a.y) for a in self._env.agents], dtype=np.int64)
        shelves = np.array([(s.x, s.y) for s in self._env.shelfs], dtype=np.int64)
        return robots, shelves

    def requested_shelves(self) -> np.ndarray:
        """(T,) int64: the shelf index (0-based, entity row - n_agents) of each request slot."""
        return np.array([s.id - 1 for s in self._env.request_queue], dtype=np.int64)

    def state(self) -> dict[str, np.ndarray]:
        """Global unmasked state: entities (E, F), entity_mask (E,), entity2task (E, T),
        task_mask (T,)."""
        env = self._env
        robots, shelves = self._positions()
        ents = np.zeros((self.n_entities, N_FEATURES), dtype=np.float32)
        n, s0, g0 = self.n_agents, self._shelf0, self._goal0
        ents[:n, F_IS_AGENT] = 1.0
        ents[:n, F_X:F_Y + 1] = robots / self._scale
        for i, agent in enumerate(env.agents):
            ents[i, F_DIR + agent.dir.value] = 1.0
            if agent.carrying_shelf is not None:
                ents[i, F_CARRYING] = 1.0
                ents[s0 + agent.carrying_shelf.id - 1, F_CARRYING] = 1.0
        ents[s0:g0, F_IS_SHELF] = 1.0
        ents[s0:g0, F_X:F_Y + 1] = shelves / self._scale
        requested = self.requested_shelves()
        ents[s0 + requested, F_REQUESTED] = 1.0
        ents[g0:] = self._goal_rows
        entity2task = np.zeros((self.n_entities, self.n_tasks), dtype=np.int8)
        entity2task[s0 + requested, np.arange(self.n_tasks)] = 1
        return {
            "entities": ents,
            "entity_mask": np.ones(self.n_entities, dtype=np.int8),
            "entity2task": entity2task,
            "task_mask": np.ones(self.n_tasks, dtype=np.int8),
        }

    def visibility(self) -> np.ndarray:
        """(n, E) int8: 1 where robot i's sensor covers entity j (goals always)."""
        robots, shelves = self._positions()
        cells = np.concatenate([robots, shelves], axis=0)
        near = np.abs(cells[None, :, :] - robots[:, None, :]).max(axis=2) <= self.sensor_range
        goals = np.ones((self.n_agents, self.n_goals), dtype=bool)
        return np.concatenate([near, goals], axis=1).astype(np.int8)

    def _action_masks(self) -> np.ndarray:
        """(n, A) int8: every action is always allowed."""
        return np.ones((self.n_agents, N_ACTIONS), dtype=np.int8)

    # ------------------------------------------------------------------ reset / step
    def _on_reset(self) -> None:
        self._deliveries = 0

    def _team_step(self, actions: list[int]) -> tuple[list, bool, np.ndarray, bool]:
        """RWARE's step; every episode end is a truncation."""
        before = self.requested_shelves()
        _, rewards, done, _, _ = self._env.step(actions)
        delivered = self.requested_shelves() != before  # a delivered slot gets a new request
        self._deliveries += int(delivered.sum())
        per_delivery = 1.0 if self._env.reward_type.name == "INDIVIDUAL" else float(self.n_agents)
        task_rewards = (delivered * per_delivery).astype(np.float32)
        return rewards, bool(done), task_rewards, False

    def _episode_stats(self) -> dict[str, Any]:
        return {"deliveries": self._deliveries}

    # ------------------------------------------------------------------ allocation
    def heuristic_allocation(self) -> np.ndarray:
        """Each robot to the nearest unassigned request (see ``nearest_request_allocation``):
        (n,) int64 request slots."""
        robots, shelves = self._positions()
        requested = self.requested_shelves()
        carried = np.full(self.n_agents, -1, dtype=np.int64)
        for i, agent in enumerate(self._env.agents):
            if agent.carrying_shelf is not None:
                carried[i] = agent.carrying_shelf.id - 1
        return nearest_request_allocation(robots, shelves[requested], requested, carried)

    def _draw(self) -> np.ndarray:
        return draw_rware(self._env)


def nearest_request_allocation(
    robot_pos: np.ndarray, request_pos: np.ndarray, request_shelf: np.ndarray,
    carried_shelf: np.ndarray,
) -> np.ndarray:
    """Greedy RWARE allocation: (n,) int64 request slot per robot.

    Args: robot positions (n, 2), positions (T, 2) and shelf indices (T,) of the requested
    shelves, and the shelf index each robot carries (n,), -1 for none. A robot carrying a
    requested shelf keeps that request. Then the closest (robot, request) pair (Manhattan
    distance; ties to the lower robot, then the lower slot) among free robots and free
    requests is matched, repeatedly. Robots left over (more robots than requests) go to
    their nearest request.
    """
    robot_pos, request_pos = np.asarray(robot_pos), np.asarray(request_pos)
    n, n_slots = len(robot_pos), len(request_pos)
    out = np.zeros(n, dtype=np.int64)
    if n == 0 or n_slots == 0:
        return out
    dist = np.abs(robot_pos[:, None, :] - request_pos[None, :, :]).sum(axis=2)
    free_robot = np.ones(n, dtype=bool)
    free_slot = np.ones(n_slots, dtype=bool)
    for robot, shelf in enumerate(np.asarray(carried_shelf)):
        slots = np.flatnonzero(np.asarray(request_shelf) == shelf)
        if shelf >= 0 and slots.size:
            out[robot] = slots[0]
            free_robot[robot] = False
            free_slot[slots[0]] = False
    robots, slots = np.meshgrid(np.arange(n), np.arange(n_slots), indexing="ij")
    order = np.lexsort((slots.ravel(), robots.ravel(), dist.ravel()))
    for flat in order:
        robot, slot = divmod(int(flat), n_slots)
        if free_robot[robot] and free_slot[slot]:
            out[robot] = slot
            free_robot[robot] = False
            free_slot[slot] = False
    for robot in np.flatnonzero(free_robot):
        out[robot] = int(np.lexsort((np.arange(n_slots), dist[robot]))[0])
    return out
