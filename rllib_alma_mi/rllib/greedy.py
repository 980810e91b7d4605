"""Greedy (or sampled) acting of RLModules in a `HierarchicalEnv`, and one episode.

Greedy, both levels take their most likely action: the allocator module's `forward_inference`
decodes its allocation autoregressively with the most likely task per agent (it returns
`actions`), a worker module returns logits whose masked argmax is taken. Sampled, both act as
in training: the allocator's `forward_exploration` samples its allocation autoregressively, a
worker's action is drawn from its exploration distribution over the masked logits; the draws
come from torch's global generator, which `seeded_sampling` seeds for one episode. Used by the
evaluation of checkpoints and by the evolution's rollouts (greedy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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


@contextmanager
def seeded_sampling(seed: int) -> Iterator[None]:
    """Within the block torch's global CPU generator starts from `seed`; on leaving it, the
    generator's state from before the block is back. Sampled actions drawn inside depend only
    on `seed` and the observations, not on what was sampled before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def module_actions(module: RLModule, batch: dict[str, Any], sample: bool = False) -> torch.Tensor:
    """Actions (B, ...) of `module` for `batch` ({"obs": tree of (B, ...) tensors}).

    Greedy: `forward_inference`'s `actions` when the module returns them (the allocator),
    else the argmax of its `action_dist_inputs`. With `sample`: `forward_exploration`'s
    `actions`, else a draw from the module's exploration distribution over its
    `action_dist_inputs` (torch's global generator)."""
    with torch.no_grad():
        out = module.forward_exploration(batch) if sample else module.forward_inference(batch)
        chosen = out.get(Columns.ACTIONS)
        if chosen is not None:
            return chosen
        inputs = out[Columns.ACTION_DIST_INPUTS]
        if not sample:
            return inputs.argmax(-1)
        return module.get_exploration_action_dist_cls().from_logits(inputs).sample()


class GreedyModuleActor:
    """Greedy (or, with `sample`, sampled) actions of one RLModule per module id (`allocator`,
    `worker`); see `module_actions`.

    `modules` maps module ids to RLModules built for the env's spaces; they are used as given
    (put them in eval mode and load their weights before). Sampled episodes are reproducible
    when played inside `seeded_sampling`.
    """

    def __init__(self, modules: Mapping[str, RLModule], sample: bool = False):
        self.modules = dict(modules)
        self.sample = sample

    def act(self, observations: dict[str, Any]) -> dict[str, Any]:
        """Actions for the agents in `observations`: the allocator's (N,) allocation, each
        worker's int action (one batched forward pass per module)."""
        groups: dict[str, list[str]] = {}
        for agent in observations:
            groups.setdefault(agent_to_module(agent), []).append(agent)
        actions: dict[str, Any] = {}
        for module_id, agents in groups.items():
            batch = {Columns.OBS: stack_observations([observations[a] for a in agents])}
            chosen = module_actions(self.modules[module_id], batch, self.sample)
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
