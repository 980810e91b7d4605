"""Any ``ParallelEnv`` with each agent's observation flattened into one float32 vector.

For baselines whose network is a plain MLP (RLlib's default encoder): the observation Dict
(entities, masks, indices) becomes ``gymnasium.spaces.flatten`` of it, in the space's key
order. Actions, rewards, terminations and infos pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["FlatObservationEnv"]


class FlatObservationEnv(ParallelEnv):
    """``env`` with observations ``spaces.flatten(env.observation_space(agent), obs)``.

    Observation space per agent: ``Box(low, high, (D,), float32)`` from
    ``spaces.flatten_space``; D is the number of scalars in the original observation (a
    ``Discrete`` entry becomes its one-hot).
    """

    def __init__(self, env: ParallelEnv):
        self.env = env
        self.metadata = {**getattr(env, "metadata", {}), "name": "flat_" + _name(env)}
        self.possible_agents = list(env.possible_agents)
        self.agents: list[str] = []
        self._spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.observation_spaces = {}
        for agent, space in self._spaces.items():
            flat = spaces.flatten_space(space)
            if not isinstance(flat, spaces.Box):
                raise ValueError(
                    f"FlatObservationEnv: the observation space of {agent!r} flattens to "
                    f"{flat}, not a Box; only spaces gymnasium flattens to a vector are supported"
                )
            self.observation_spaces[agent] = spaces.Box(
                flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32
            )
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return self._flatten(obs), infos

    def step(self, actions: dict[str, Any]):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        self.agents = list(self.env.agents)
        return self._flatten(obs), rewards, terms, truncs, infos

    def _flatten(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {agent: self._flatten_one(self._spaces[agent], o) for agent, o in obs.items()}

    @staticmethod
    def _flatten_one(space: spaces.Space, obs: Any) -> np.ndarray:
        if isinstance(space, spaces.Dict) and all(
            isinstance(s, spaces.Box) for s in space.spaces.values()
        ):
            # What spaces.flatten returns for a Dict of Boxes, without its per-entry dispatch
            # (which cost a third of SaveTheCity's step time).
            return np.concatenate(
                [np.ravel(obs[key]) for key in space.spaces], dtype=np.float32
            )
        return spaces.flatten(space, obs).astype(np.float32, copy=False)

    def state(self) -> Any:
        return self.env.state()

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def _name(env: ParallelEnv) -> str:
    return str(getattr(env, "metadata", {}).get("name", type(env).__name__))
