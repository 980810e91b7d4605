"""Level-Based Foraging (package ``lbforaging`` 2.0.0) seen through the entity-task contract.

``LBFTasks`` wraps ``lbforaging.foraging.ForagingEnv``. Dynamics, actions (``Discrete(6)``:
none, north, south, west, east, load) and per-agent rewards are the wrapped env's, unchanged
(LBF itself turns an invalid action into "none"); observations and infos are rebuilt from
its fields (``players``, ``field``) into the contract (see ``envs.contract``).

Entities (E = n_players + max_num_food, F = 5, T = max_num_food): rows ``0..n-1`` are the
players in ``possible_agents`` order, row ``n + j`` is food slot j and task j. Food slots
are the food cells at reset in row-major order; slots left empty (LBF may place fewer food
items than ``max_num_food``) and collected food are not live (``entity_mask`` 0, no
``entity2task`` entry, zero features), and ``task_mask`` drops them. Features (``FEATURES``):
is_agent, is_food, row / (rows - 1), col / (cols - 1), level / ``level_scale``; agents and
food share one level scale (the largest level the env can draw), so "can these agents lift
this food" stays a comparison of sums.

Sight (``obs_mask``) is LBF's own: agent i sees food within ``sight`` cells in both
coordinates (Chebyshev distance), and a player k when ``p_k - p_i + min(sight, p_i)`` lies in
``[0, 2 sight]`` in both coordinates, which is LBF's rule (its window for players is shifted
inwards at the field's border, so there it sees players up to ``2 sight`` cells away). The
registered ``-2s-`` ids have ``sight`` 2, the others the field size (everything visible).
Rows an agent cannot see are zero in its ``entities``. ``action_mask`` is LBF's valid
actions (moves into the field's free cells, load next to food; none always).

Rewards. A load of food j of level L by the adjacent loading players G succeeds when their
levels sum to at least L; each loader a gets ``level_a * L`` (divided by ``sum_G level *
total food level spawned`` when ``normalize_reward``, the default, so the team return is 1.0
when every food is collected). ``infos[agent]["task_rewards"][j]`` is the sum of the rewards
paid for food j in this step (its loaders' rewards, or their ``penalty`` on a failed load),
the same for every agent, so ``sum(task_rewards) == sum(rewards.values())``. LBF's spawn
rule keeps food cells at least two cells apart in a row or column and not diagonal
neighbours, so every player is next to at most one food and the attribution is exact.

Episodes end when every food is collected (termination) or at ``max_episode_steps``
(truncation; LBF reports both as ``done``). Infos then hold ``solved`` (every food
collected), ``tasks_completed_frac`` (fraction of the food items collected) and
``tasks_burned_frac`` (always 0.0).

``flat_parallel_env(...)`` gives LBF's own vector observation per agent instead, for
baselines (see ``envs.gym_benchmarks.FlatParallelEnv``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.contract import episode_stats
from envs.grid_pictures import draw_lbf
from envs.gym_benchmarks import FlatParallelEnv, TeamTasksEnv, import_package, resolve_kwargs

__all__ = [
    "ACTION_NAMES",
    "FEATURES",
    "LBFTasks",
    "flat_parallel_env",
    "lift_allocation",
    "parallel_env",
]

FEATURES = ("is_agent", "is_food", "row", "col", "level")
F_IS_AGENT, F_IS_FOOD, F_ROW, F_COL, F_LEVEL = range(5)
N_FEATURES = len(FEATURES)
ACTION_NAMES = ("none", "north", "south", "west", "east", "load")
N_ACTIONS = len(ACTION_NAMES)
_INSTALL_HINT = "Level-Based Foraging needs the lbforaging package: pip install .[lbf]"
_ID_HELP = (
    "registered ids are Foraging{-2s}-{5..19}x{5..19}-{2..9}p-{1..4}f{-coop}-v3 (e.g. "
    "Foraging-2s-8x8-2p-2f-coop-v3); for 5 or more food items pass max_num_food=5 with an "
    "id, or give every ForagingEnv argument (players, min_player_level, max_player_level, "
    "min_food_level, max_food_level, field_size, max_num_food, sight, max_episode_steps, "
    "force_coop) without one"
)


def _foraging_env_class() -> type:
    return import_package("lbf", "lbforaging.foraging.environment", _INSTALL_HINT).ForagingEnv


def _make_foraging_env(env_id: str | None, kwargs: dict[str, Any]) -> Any:
    env_class = _foraging_env_class()
    resolved = resolve_kwargs("lbf", env_id, kwargs, env_class, _ID_HELP)
    if resolved.get("render_mode") is not None:
        raise ValueError(f"lbf: render_mode={resolved['render_mode']!r} is not supported here "
                         "(LBF's renderer needs a pyglet window); use render_mode=None")
    field_size = resolved["field_size"]
    if not (isinstance(field_size, tuple | list) and len(field_size) == 2):
        raise ValueError(f"lbf: field_size={field_size!r} must be (rows, cols)")
    return env_class(**{**resolved, "field_size": tuple(field_size)})


def parallel_env(env_id: str | None = None, **kwargs: Any) -> LBFTasks:
    """The contract adapter of an LBF task: a registered gymnasium id (``env_id``, e.g.
    ``"Foraging-2s-8x8-2p-2f-coop-v3"``), optionally with ``ForagingEnv`` arguments that
    override the id's, or the ``ForagingEnv`` arguments alone (see ``LBFTasks``)."""
    return LBFTasks(env_id, **kwargs)


def flat_parallel_env(env_id: str | None = None, **kwargs: Any) -> FlatParallelEnv:
    """LBF with its own vector observation per agent (``Box``, (y, x, level) per food then
    per player, self first) as a PettingZoo ``ParallelEnv``; arguments as ``parallel_env``.
    Collecting every food is a termination, the step limit a truncation."""
    env = _make_foraging_env(env_id, kwargs)
    if env._grid_observation:
        raise ValueError("lbf: flat_parallel_env needs grid_observation=False (the vector "
                         "observation)")
    return FlatParallelEnv(env, "lbf_flat_v0", lambda e: int(e.field.sum()) == 0)


class LBFTasks(TeamTasksEnv):
    """Level-Based Foraging as a contract ``ParallelEnv``: players and food items as
    entities, one task per food item.

    Args:
        env_id: a registered LBF gymnasium id, or None to give every ``ForagingEnv``
            argument in ``kwargs``.
        render_mode: None or "rgb_array" (``render()`` draws the grid with Pillow).
        **kwargs: ``ForagingEnv`` arguments (override the id's when ``env_id`` is given).

    Shapes (E = n + M, F = 5, T = M, A = 6; n players, M = max_num_food), per agent:
    ``entities`` (E, F) float32, ``entity_mask`` (E,) int8, ``obs_mask`` (E,) int8,
    ``entity2task`` (E, T) int8, ``task_mask`` (T,) int8, ``agent_index`` () int64,
    ``action_mask`` (A,) int8. ``state()``: the same layout, unmasked.
    """

    metadata = {
        "name": "lbf_tasks_v0", "render_modes": ["rgb_array"], "is_parallelizable": True
    }
    family = "lbf"

    def __init__(
        self, env_id: str | None = None, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(env_id, render_mode, kwargs, _make_foraging_env)
        env = self._env
        self.n_agents = len(env.players)
        self.n_food = int(env.max_num_food)
        self.sight = int(env.sight)
        self.rows, self.cols = (int(s) for s in env.field.shape)
        max_player = int(np.max(env.max_player_level))
        if env.max_food_level is None:  # LBF then sets every food to the 3 lowest levels' sum
            max_food = int(np.sum(np.sort(env.max_player_level)[:3]))
        else:
            max_food = int(np.max(env.max_food_level))
        self.level_scale = float(max(max_player, max_food, 1))
        self.n_entities = self.n_agents + self.n_food
        self.n_tasks = self.n_food
        self._build_agents(self.n_agents, self.n_entities, N_FEATURES, self.n_tasks, N_ACTIONS)
        self._food_pos = np.zeros((self.n_food, 2), dtype=np.int64)
        self._food_level = np.zeros(self.n_food, dtype=np.int64)
        self._food_spawned = np.zeros(self.n_food, dtype=bool)

    # ------------------------------------------------------------------ env fields
    def _agent_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Player positions (n, 2) as (row, col) and levels (n,)."""
        players = self._env.players
        pos = np.array([p.position for p in players], dtype=np.int64).reshape(-1, 2)
        return pos, np.array([p.level for p in players], dtype=np.int64)

    def _food_live(self) -> np.ndarray:
        """(M,) bool: the slot's food is still on the field."""
        field = self._env.field
        on_field = field[self._food_pos[:, 0], self._food_pos[:, 1]] > 0
        return self._food_spawned & on_field

    def _entities(self, food_live: np.ndarray) -> np.ndarray:
        pos, level = self._agent_arrays()
        ents = np.zeros((self.n_entities, N_FEATURES), dtype=np.float32)
        n = self.n_agents
        scale = np.array([max(self.rows - 1, 1), max(self.cols - 1, 1)], dtype=np.float32)
        ents[:n, F_IS_AGENT] = 1.0
        ents[:n, F_ROW:F_COL + 1] = pos / scale
        ents[:n, F_LEVEL] = level / self.level_scale
        food = ents[n:]
        food[food_live, F_IS_FOOD] = 1.0
        food[food_live, F_ROW:F_COL + 1] = self._food_pos[food_live] / scale
        food[food_live, F_LEVEL] = self._food_level[food_live] / self.level_scale
        return ents

    def visibility(self) -> np.ndarray:
        """(n, E) int8: 1 where player i sees entity j under LBF's sight rule (see module doc)."""
        pos, _ = self._agent_arrays()
        s = self.sight
        centre = pos[:, None, :]
        shifted = pos[None, :, :] - centre + np.minimum(s, centre)
        sees_player = (shifted.min(axis=2) >= 0) & (shifted.max(axis=2) <= 2 * s)
        near = np.abs(self._food_pos[None, :, :] - centre).max(axis=2) <= s
        sees_food = near & self._food_live()[None, :]
        return np.concatenate([sees_player, sees_food], axis=1).astype(np.int8)

    def _action_masks(self) -> np.ndarray:
        masks = np.zeros((self.n_agents, N_ACTIONS), dtype=np.int8)
        for i, player in enumerate(self._env.players):
            for action in self._env._valid_actions[player]:
                masks[i, action.value] = 1
        return masks

    # ------------------------------------------------------------------ observations
    def state(self) -> dict[str, np.ndarray]:
        """Global unmasked state: entities (E, F), entity_mask (E,), entity2task (E, T),
        task_mask (T,)."""
        live = self._food_live()
        entity_mask = np.ones(self.n_entities, dtype=np.int8)
        entity_mask[self.n_agents:] = live
        entity2task = np.zeros((self.n_entities, self.n_tasks), dtype=np.int8)
        slots = np.flatnonzero(live)
        entity2task[self.n_agents + slots, slots] = 1
        return {
            "entities": self._entities(live),
            "entity_mask": entity_mask,
            "entity2task": entity2task,
            "task_mask": live.astype(np.int8),
        }

    # ------------------------------------------------------------------ reset / step
    def _on_reset(self) -> None:
        """Number the food placed by LBF's reset into the food slots."""
        field = self._env.field
        rows, cols = np.nonzero(field)
        count = len(rows)
        if count == 0:
            raise RuntimeError(
                f"lbf: LBF placed no food on the {self.rows}x{self.cols} field; use a larger "
                "field_size or fewer players"
            )
        self._food_pos[:] = 0
        self._food_level[:] = 0
        self._food_spawned[:] = False
        self._food_pos[:count] = np.stack([rows, cols], axis=1)
        self._food_level[:count] = field[rows, cols]
        self._food_spawned[:count] = True

    def _team_step(self, actions: list[int]) -> tuple[list, bool, np.ndarray, bool]:
        """LBF's step; collecting every food is a termination."""
        food_before = self._food_live()
        _, rewards, done, _, _ = self._env.step(actions)
        task_rewards = self._task_rewards(np.asarray(rewards, dtype=np.float64), food_before)
        return rewards, bool(done), task_rewards, not self._food_live().any()

    def _task_rewards(self, rewards: np.ndarray, food_before: np.ndarray) -> np.ndarray:
        """(T,) float32: each agent's reward credited to the food it loaded (or tried to)."""
        out = np.zeros(self.n_tasks, dtype=np.float64)
        paid = np.flatnonzero(rewards != 0.0)
        if paid.size == 0:
            return out.astype(np.float32)
        pos, _ = self._agent_arrays()  # loaders do not move in their loading step
        manhattan = np.abs(pos[paid, None, :] - self._food_pos[None, :, :]).sum(axis=2)
        adjacent = (manhattan == 1) & food_before[None, :]
        for row, agent in enumerate(paid):
            food = np.flatnonzero(adjacent[row])
            if food.size != 1:
                raise RuntimeError(
                    f"lbf: agent_{agent} got reward {rewards[agent]} but is next to food slots "
                    f"{food.tolist()}; expected exactly one (LBF's spawn rule)"
                )
            out[food[0]] += rewards[agent]
        return out.astype(np.float32)

    def _episode_stats(self) -> dict[str, Any]:
        return episode_stats(~self._food_live()[self._food_spawned])

    # ------------------------------------------------------------------ allocation
    def heuristic_allocation(self) -> np.ndarray:
        """Nearest liftable food per group of agents (see ``lift_allocation``): (n,) int64."""
        pos, level = self._agent_arrays()
        return lift_allocation(pos, level, self._food_pos, self._food_level, self._food_live())

    def _draw(self) -> np.ndarray:
        return draw_lbf(self._env.players, self._env.field, self.sight)


def lift_allocation(
    agent_pos: np.ndarray,
    agent_level: np.ndarray,
    food_pos: np.ndarray,
    food_level: np.ndarray,
    food_live: np.ndarray,
) -> np.ndarray:
    """Greedy LBF allocation: (n,) int64 food slot per agent.

    Args: agent positions (n, 2), agent levels (n,), food positions (M, 2), food levels
    (M,), food_live (M,) bool. Repeatedly, for every unassigned live food, the closest free
    agents (Manhattan distance, ties to the lower index) whose levels first sum to the food's
    level form its group; the food whose group arrives soonest (the group's largest
    distance; ties to the lower slot) gets it. Agents left over when no remaining food can
    be lifted by the free agents join their nearest live food. All zeros when no food is
    live.
    """
    agent_pos, food_pos = np.asarray(agent_pos), np.asarray(food_pos)
    agent_level, food_level = np.asarray(agent_level), np.asarray(food_level)
    live = np.flatnonzero(np.asarray(food_live, dtype=bool))
    n = len(agent_pos)
    out = np.zeros(n, dtype=np.int64)
    if live.size == 0 or n == 0:
        return out
    dist = np.abs(agent_pos[:, None, :] - food_pos[None, :, :]).sum(axis=2)
    free = np.ones(n, dtype=bool)
    open_food = list(live)
    while free.any() and open_food:
        best: tuple[tuple[int, int], int, np.ndarray] | None = None
        for food in open_food:
            candidates = np.flatnonzero(free)
            order = candidates[np.lexsort((candidates, dist[candidates, food]))]
            reach = np.flatnonzero(np.cumsum(agent_level[order]) >= food_level[food])
            if reach.size == 0:
                continue
            group = order[:reach[0] + 1]
            key = (int(dist[group, food].max()), int(food))
            if best is None or key < best[0]:
                best = (key, int(food), group)
        if best is None:
            break
        _, food, group = best
        out[group] = food
        free[group] = False
        open_food.remove(food)
    for agent in np.flatnonzero(free):
        out[agent] = live[np.lexsort((live, dist[agent, live]))[0]]
    return out
