"""MPE ``simple_spread`` (package ``mpe2``) seen through the entity-task observation contract.

``MPESpreadTasks`` wraps ``mpe2.simple_spread_v3.parallel_env(continuous_actions=False)``.
Dynamics, actions (``Discrete(5)``: no-op, left, right, down, up), rewards, terminations and
truncations are those of the wrapped env, unchanged; only observations and infos are
rewritten into the contract (README, section "The entity-task observation contract").

Entities (E = 2N, F = 6, T = N): rows ``0..N-1`` are the agents in ``possible_agents``
order, rows ``N..2N-1`` are the landmarks; landmark ``t`` is entity row ``N + t`` and task
``t``. Features (see ``FEATURES``) are read from the wrapped world state, in world units:
position x, y, velocity x, y, then the flags is_agent and is_landmark. Every entity is
always live. Landmarks are never resolved in simple_spread, so ``task_mask`` is all ones
for the whole episode. With a ``sight_radius`` an agent sees the entities within that
Euclidean distance of its own position (always itself); the ``entities`` rows it cannot
see are zero. ``action_mask`` is all ones.

Rewards. mpe2 gives agent ``i`` at every step::

    rewards[i] = (1 - local_ratio) * G + local_ratio * C_i
    G   = -sum_t min_a ||p_a - q_t||          (global: landmark coverage)
    C_i = -#{j != i : ||p_i - p_j|| < 0.3}    (local: collisions, agent size 0.15 each)

``infos[agent]["task_rewards"][t] = -(1 - local_ratio) * min_a ||p_a - q_t||`` (float32),
so ``sum(task_rewards) == (1 - local_ratio) * G``, the global part of every agent's reward,
and ``rewards[i] == sum(task_rewards) + local_ratio * C_i`` (up to float32 rounding). The
task rewards are the same for every agent; they are zero after ``reset``.

Episode end (truncation after ``max_cycles`` steps): infos also hold ``solved`` (every
landmark covered), ``tasks_completed_frac`` (fraction of landmarks covered) and
``tasks_burned_frac`` (always 0.0). A landmark is covered when some agent is closer than
``COVER_RADIUS`` = 0.1, mpe2's own capture radius (``Scenario.CAPTURE_RADIUS``, also used
by its ``benchmark_data`` and ``terminate_on_success``); one agent may cover two landmarks
that lie within 0.1 of it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from envs.contract import ContractParallelEnv, episode_stats, observations_from_state

__all__ = ["COVER_RADIUS", "FEATURES", "N_ACTIONS", "MPESpreadTasks", "parallel_env"]

FEATURES = ("x", "y", "vx", "vy", "is_agent", "is_landmark")
F_POS, F_VEL, F_IS_AGENT, F_IS_LANDMARK = slice(0, 2), slice(2, 4), 4, 5
N_FEATURES = len(FEATURES)
N_ACTIONS = 5
COVER_RADIUS = 0.1
_INSTALL_HINT = "the MPE environments need the mpe2 package: pip install .[mpe]"


def _simple_spread_module() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        from mpe2 import simple_spread_v3
    except ImportError as err:
        raise ImportError(f"mpe_spread: {_INSTALL_HINT}") from err
    return simple_spread_v3




def parallel_env(**kwargs: Any) -> MPESpreadTasks:
    """Build the contract adapter of MPE simple_spread (see ``MPESpreadTasks`` for kwargs)."""
    return MPESpreadTasks(**kwargs)


class MPESpreadTasks(ContractParallelEnv):
    """MPE simple_spread as a contract ``ParallelEnv``: N agents, N landmarks = N tasks.

    Args:
        N: number of agents and of landmarks (3).
        local_ratio: mpe2's weight of the local (collision) reward, in [0, 1] (0.5).
        max_cycles: steps before truncation (25).
        sight_radius: None (see everything) or a Euclidean radius >= 0 in world units.
        render_mode: None, "rgb_array" or "human" (drawn by mpe2).
        continuous_actions: must be False; the contract needs discrete actions.

    Shapes (E = 2N, F = 6, T = N, A = 5), per agent: ``entities`` (E, F) float32,
    ``entity_mask`` (E,) int8, ``obs_mask`` (E,) int8, ``entity2task`` (E, T) int8,
    ``task_mask`` (T,) int8, ``agent_index`` () int64, ``action_mask`` (A,) int8.
    ``state()``: ``entities``, ``entity_mask``, ``entity2task``, ``task_mask``, unmasked.
    """

    metadata = {
        "name": "mpe_spread_v0",
        "render_modes": ["rgb_array", "human"],
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        N: int = 3,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        sight_radius: float | None = None,
        render_mode: str | None = None,
        continuous_actions: bool = False,
    ) -> None:
        if continuous_actions:
            raise ValueError(
                f"continuous_actions={continuous_actions!r} is not supported: the entity-task "
                "contract needs discrete actions; use continuous_actions=False"
            )
        self.N = _check_int("N", N, low=1)
        self.local_ratio = _check_local_ratio(local_ratio)
        self.max_cycles = _check_int("max_cycles", max_cycles, low=1)
        self.sight_radius = _check_sight(sight_radius)
        if render_mode not in (None, "rgb_array", "human"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: None, "
                             "'rgb_array', 'human'")
        self.render_mode = render_mode
        self._env = _simple_spread_module().parallel_env(
            N=self.N, local_ratio=self.local_ratio, max_cycles=self.max_cycles,
            continuous_actions=False, render_mode=render_mode,
        )
        self.possible_agents = list(self._env.possible_agents)
        self.agents: list[str] = []
        self.n_entities, self.n_tasks = 2 * self.N, self.N
        self._static = self._static_arrays()
        self._build_contract_spaces(self.n_entities, N_FEATURES, self.n_tasks, N_ACTIONS)

    # ------------------------------------------------------------------ spaces
    def _static_arrays(self) -> dict[str, np.ndarray]:
        n, n_e = self.N, self.n_entities
        e2t = np.zeros((n_e, self.n_tasks), dtype=np.int8)
        e2t[np.arange(n, n_e), np.arange(self.n_tasks)] = 1
        flags = np.zeros((n_e, N_FEATURES), dtype=np.float32)
        flags[:n, F_IS_AGENT] = 1.0
        flags[n:, F_IS_LANDMARK] = 1.0
        return {
            "entity_mask": np.ones(n_e, dtype=np.int8),
            "entity2task": e2t,
            "task_mask": np.ones(self.n_tasks, dtype=np.int8),
            "action_masks": np.ones((n, N_ACTIONS), dtype=np.int8),
            "flags": flags,
        }

    # ------------------------------------------------------------------ world access
    @property
    def world(self) -> Any:
        """The wrapped mpe2 ``World`` (agents, landmarks and their states)."""
        return self._env.unwrapped.world

    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Agent positions (N, 2) and landmark positions (N, 2), float64 world units."""
        world = self.world
        agents = np.array([a.state.p_pos for a in world.agents], dtype=np.float64)
        landmarks = np.array([lm.state.p_pos for lm in world.landmarks], dtype=np.float64)
        return agents, landmarks

    def _entities(self) -> np.ndarray:
        """(E, F) float32 features of agents then landmarks, from the world state."""
        ents = self._static["flags"].copy()
        bodies = list(self.world.agents) + list(self.world.landmarks)
        ents[:, F_POS] = [b.state.p_pos for b in bodies]
        ents[:, F_VEL] = [b.state.p_vel for b in bodies]
        return ents

    def _min_distances(self) -> np.ndarray:
        """(T,) distance from each landmark to its closest agent."""
        agents, landmarks = self._positions()
        dist = np.sqrt(np.sum(np.square(agents[None, :, :] - landmarks[:, None, :]), axis=2))
        return dist.min(axis=1)

    def _task_rewards(self) -> np.ndarray:
        """(T,) float32: ``-(1 - local_ratio) * min_a dist(a, landmark t)``."""
        return (-(1.0 - self.local_ratio) * self._min_distances()).astype(np.float32)

    def _episode_stats(self) -> dict[str, Any]:
        return episode_stats(self._min_distances() < COVER_RADIUS)

    # ------------------------------------------------------------------ observations
    def _visibility(self, ents: np.ndarray) -> np.ndarray:
        """(N, E) int8: 1 where agent i sees entity j."""
        n, n_e = self.N, self.n_entities
        if self.sight_radius is None:
            return np.ones((n, n_e), dtype=np.int8)
        pos = ents[:, F_POS].astype(np.float64)
        dist = np.sqrt(np.sum(np.square(pos[None, :, :] - pos[:n, None, :]), axis=2))
        vis = (dist <= self.sight_radius).astype(np.int8)
        vis[np.arange(n), np.arange(n)] = 1
        return vis

    def _observe(self, agents: list[str]) -> dict[str, dict[str, np.ndarray]]:
        state = self.state()
        vis = self._visibility(state["entities"])
        return observations_from_state(state, vis, self._static["action_masks"], agents,
                                       self.possible_agents)

    def state(self) -> dict[str, np.ndarray]:
        """Global unmasked state: entities (E, F), entity_mask (E,), entity2task (E, T),
        task_mask (T,)."""
        return {
            "entities": self._entities(),
            "entity_mask": self._static["entity_mask"].copy(),
            "entity2task": self._static["entity2task"].copy(),
            "task_mask": self._static["task_mask"].copy(),
        }

    # ------------------------------------------------------------------ reset / step
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Reset the wrapped env with ``seed`` and ``options``; returns (observations, infos)."""
        _, wrapped_infos = self._env.reset(seed=seed, options=options)
        self.agents = list(self._env.agents)
        zeros = np.zeros(self.n_tasks, dtype=np.float32)
        infos = {a: {**wrapped_infos.get(a, {}), "task_rewards": zeros.copy()}
                 for a in self.agents}
        return self._observe(self.agents), infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Step the wrapped env with ``actions`` unchanged; returns (observations, rewards,
        terminations, truncations, infos), rewards exactly the wrapped env's."""
        self._require_actions(actions)
        acting = self.agents
        wrapped_obs, rewards, terms, truncs, wrapped_infos = self._env.step(actions)
        self.agents = list(self._env.agents)
        task_rewards = self._task_rewards()
        done = not self.agents or all(terms[a] or truncs[a] for a in acting)
        stats = self._episode_stats() if done else {}
        infos = {a: {**wrapped_infos.get(a, {}), "task_rewards": task_rewards.copy(), **stats}
                 for a in acting}
        return self._observe(list(wrapped_obs)), dict(rewards), terms, truncs, infos

    # ------------------------------------------------------------------ render / close
    def render(self) -> np.ndarray | None:
        """"rgb_array": (700, 700, 3) uint8 picture drawn by mpe2; "human": a pygame window."""
        if self.render_mode is None:
            raise ValueError("render() needs render_mode='rgb_array' or 'human' at construction")
        return self._env.render()

    def close(self) -> None:
        self._env.close()


# ---------------------------------------------------------------------- validation
def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r} is invalid; allowed: an int >= {low}")
    return int(value)


def _check_local_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
        0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"local_ratio={value!r} is invalid; allowed: a float in [0, 1]")
    return float(value)


def _check_sight(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
        math.isfinite(float(value)) and float(value) >= 0.0
    ):
        raise ValueError(
            f"sight_radius={value!r} is invalid; allowed: None (full observability) or a "
            "finite float >= 0 (Euclidean radius in world units)"
        )
    return float(value)
