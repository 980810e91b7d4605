"""A minimal user environment meeting the entity-task contract, trained through the hierarchy.

`LineVisitEnv`: agents walk on a line of `length` cells; each target cell is a task, resolved
when an agent stands on it. Run this file to train ALMA on it for a few iterations:

    python examples/custom_env.py
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv


class LineVisitEnv(ParallelEnv):
    """Agents on a 1-D line must visit every target. Entities: agents first, then targets.

    Features (F = 3): is_agent, is_target, position / length. Actions: stay, left, right.
    Team reward: +1 per target visited this step; `task_rewards[t]` is 1 on the step target t
    is visited.
    """

    metadata = {"name": "line_visit_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(
        self, n_agents: int = 2, n_targets: int = 3, length: int = 8, max_cycles: int = 30
    ):
        self.n_agents, self.n_targets, self.length = n_agents, n_targets, length
        self.max_cycles = max_cycles
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents = []
        e, t = n_agents + n_targets, n_targets
        binary = lambda *shape: gym.spaces.Box(0, 1, shape=shape, dtype=np.int8)  # noqa: E731
        self._obs_space = gym.spaces.Dict(
            {
                "entities": gym.spaces.Box(-1.0, 1.0, shape=(e, 3), dtype=np.float32),
                "entity_mask": binary(e),
                "obs_mask": binary(e),
                "entity2task": binary(e, t),
                "task_mask": binary(t),
                "agent_index": gym.spaces.Box(0, e - 1, shape=(), dtype=np.int64),
                "action_mask": binary(3),
            }
        )
        self._rng = np.random.default_rng()

    @functools.cache  # noqa: B019
    def observation_space(self, agent):
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        cells = self._rng.choice(self.length, size=self.n_agents + self.n_targets, replace=False)
        self._pos = cells[: self.n_agents].astype(np.int64)
        self._targets = cells[self.n_agents :].astype(np.int64)
        self._visited = np.zeros(self.n_targets, dtype=bool)
        self._t = 0
        self.agents = list(self.possible_agents)
        zeros = np.zeros(self.n_targets, dtype=np.float32)
        return self._observations(), {a: {"task_rewards": zeros} for a in self.agents}

    def state(self):
        obs = self._observations_for(0)
        return {k: obs[k] for k in ("entities", "entity_mask", "entity2task", "task_mask")}

    def _observations_for(self, i: int) -> dict:
        n, t = self.n_agents, self.n_targets
        entities = np.zeros((n + t, 3), dtype=np.float32)
        entities[:n, 0] = 1.0
        entities[n:, 1] = 1.0
        entities[:n, 2] = self._pos / self.length
        entities[n:, 2] = self._targets / self.length
        entity_mask = np.ones(n + t, dtype=np.int8)
        entity_mask[n:] = ~self._visited
        entity2task = np.zeros((n + t, t), dtype=np.int8)
        entity2task[n + np.arange(t), np.arange(t)] = 1
        entity2task[n:] *= entity_mask[n:, None]
        action_mask = np.array([1, self._pos[i] > 0, self._pos[i] < self.length - 1], dtype=np.int8)
        return {
            "entities": entities,
            "entity_mask": entity_mask,
            "obs_mask": entity_mask.copy(),
            "entity2task": entity2task,
            "task_mask": (~self._visited).astype(np.int8),
            "agent_index": np.int64(i),
            "action_mask": action_mask,
        }

    def _observations(self) -> dict:
        return {a: self._observations_for(i) for i, a in enumerate(self.agents)}

    def step(self, actions):
        for i, agent in enumerate(self.agents):
            action = int(actions[agent])
            if not self._observations_for(i)["action_mask"][action]:
                raise ValueError(f"{agent}: action {action} is not allowed here")
            self._pos[i] += {0: 0, 1: -1, 2: 1}[action]
        newly = ~self._visited & np.isin(self._targets, self._pos)
        self._visited |= newly
        self._t += 1
        task_rewards = newly.astype(np.float32)
        done = bool(self._visited.all())
        truncated = self._t >= self.max_cycles and not done
        obs = self._observations()
        infos = {a: {"task_rewards": task_rewards} for a in self.agents}
        if done or truncated:
            for info in infos.values():
                info["solved"] = done
                info["tasks_completed_frac"] = float(self._visited.mean())
        rewards = {a: float(newly.sum()) for a in self.agents}
        terms = {a: done for a in self.agents}
        truncs = {a: truncated for a in self.agents}
        if done or truncated:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def parallel_env(**kwargs) -> LineVisitEnv:
    return LineVisitEnv(**kwargs)


if __name__ == "__main__":
    from rllib_alma_mi import AlmaPPOConfig, register_env

    # RLlib's convention, `creator(env_config)`; `register_env("line_visit", parallel_env)`
    # (PettingZoo's, `creator(**env_config)`) works as well.
    register_env("line_visit", lambda cfg: LineVisitEnv(**cfg))
    config = (
        AlmaPPOConfig()
        .environment("line_visit", env_config={"n_agents": 2, "n_targets": 3})
        .training(train_batch_size_per_learner=1000, minibatch_size=250)
        .env_runners(num_env_runners=0)
    )
    algo = config.build_algo()
    for i in range(5):
        result = algo.train()
        runners = result["env_runners"]
        print(
            f"iter {i + 1}: return {runners.get('episode_return_mean', float('nan')):.2f} "
            f"solved {runners.get('solved', float('nan')):.2f}"
        )
    algo.stop()
