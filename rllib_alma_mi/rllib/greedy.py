"""Greedy acting of RLModules in a `HierarchicalEnv`, and one greedy episode.

Both levels act greedily: the allocator module's `forward_inference` decodes its allocation
autoregressively with the most likely task per agent (it returns `actions`), a worker module
returns logits whose masked argmax is taken. Used by the evaluation of checkpoints and by the
evolution's rollouts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from rllib_alma_mi.keys import ALLOCATOR, TEAM_RETURN, agent_to_module

Act = Callable[[dict[str, Any]], dict[str, Any]]


def stack_observations(observations: list[Any]) -> Any:
    """A list of B (nested dict) observations -> the same tree of tensors with leading axis B."""
    first = observations[0]
    if isinstance(first, dict):
        return {k: stack_observations([o[k] for o in observations]) for k in first}
    return torch.as_tensor(np.stack([np.asarray(o) for o in observations]))


class GreedyModuleActor:
    """Greedy actions of one RLModule per module id (`allocator`, `worker`).

    `modules` maps module ids to RLModules built for the env's spaces; they are used as given
    (put them in eval mode and load their weights before).
    """

    def __init__(self, modules: Mapping[str, RLModule]):
        self.modules = dict(modules)

    def act(self, observations: dict[str, Any]) -> dict[str, Any]:
        """Greedy actions for the agents in `observations`: the allocator's (N,) allocation,
        each worker's int action (one batched forward pass per module)."""
        groups: dict[str, list[str]] = {}
        for agent in observations:
            groups.setdefault(agent_to_module(agent), []).append(agent)
        actions: dict[str, Any] = {}
        with torch.no_grad():
            for module_id, agents in groups.items():
                batch = {Columns.OBS: stack_observations([observations[a] for a in agents])}
                out = self.modules[module_id].forward_inference(batch)
                chosen = out.get(Columns.ACTIONS)
                if chosen is None:
                    chosen = out[Columns.ACTION_DIST_INPUTS].argmax(-1)
                actions.update(zip(agents, chosen.cpu().numpy(), strict=True))
        return actions


@dataclass
class GreedyEpisode:
    """One finished episode: the episode statistics `HierarchicalEnv` reports at its last step
    (`team_return`, `base_env_steps` and the contract env's `solved`, ...), the team size at
    reset and the number of allocator decisions."""

    stats: dict[str, Any]
    team_size: int
    allocations: int

    @property
    def team_return(self) -> float:
        return float(self.stats[TEAM_RETURN])


def play_episode(
    env: Any,
    act: Act,
    seed: int,
    before_act: Callable[[dict[str, Any]], None] | None = None,
) -> GreedyEpisode:
    """Play one episode of `env` (a `HierarchicalEnv`) from `reset(seed=seed)`, taking the
    actions `act(observations)`; `before_act(observations)` is called before each action."""
    obs, _ = env.reset(seed=seed)
    team_size = len(env.base.agents)
    allocations = 0
    while True:
        if before_act is not None:
            before_act(obs)
        allocations += ALLOCATOR in obs
        obs, _, terms, truncs, infos = env.step(act(obs))
        if terms.get("__all__") or truncs.get("__all__"):
            break
    stats = next((i for i in infos.values() if TEAM_RETURN in i), None)
    if stats is None:
        raise RuntimeError(
            f"the episode ended without info[{TEAM_RETURN!r}]; play_episode needs a "
            "HierarchicalEnv"
        )
    return GreedyEpisode(stats=dict(stats), team_size=team_size, allocations=allocations)
