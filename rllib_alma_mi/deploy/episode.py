"""One episode of an exported team in a contract environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rllib_alma_mi.deploy.policy import TeamPolicy

EPISODE_STATS = ("solved", "tasks_completed_frac", "tasks_burned_frac")


@dataclass
class EpisodeResult:
    """team_return: the sum over env steps of the mean reward over live agents (the return
    `rllib-alma-mi evaluate` reports); steps: env steps; allocations: allocator decisions;
    stats: the env's end-of-episode statistics found in the last infos (e.g. `solved`)."""

    seed: int | None
    team_size: int
    team_return: float
    steps: int
    allocations: int
    stats: dict[str, float] = field(default_factory=dict)


def run_episode(
    env: Any,
    policy: TeamPolicy,
    seed: int | None = None,
    greedy: bool = True,
    on_step: Callable[[dict[str, int]], None] | None = None,
) -> EpisodeResult:
    """Play one episode of the contract `ParallelEnv` `env` with `policy`, greedy (argmax
    actions and allocations) or sampled; `on_step(actions)` sees every joint action."""
    observations, infos = env.reset(seed=seed)
    policy.reset(env, seed=seed)
    team_size = len(env.agents)
    team_return, steps, allocations = 0.0, 0, 0
    while True:
        before = policy.decisions
        actions = policy.act(observations, env, greedy=greedy)
        allocations += policy.decisions - before
        if on_step is not None:
            on_step(actions)
        observations, rewards, terms, truncs, infos = env.step(actions)
        steps += 1
        if rewards:
            team_return += float(np.mean([rewards[a] for a in actions if a in rewards]))
        if any(terms.values()) or any(truncs.values()) or not env.agents:
            break
    last = next(iter(infos.values()), {}) if infos else {}
    stats = {k: float(last[k]) for k in EPISODE_STATS if k in last}
    return EpisodeResult(seed, team_size, team_return, steps, allocations, stats)
