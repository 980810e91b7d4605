"""Scoring heads by greedy episodes: copies of the RL team's modules with a head loaded into
the allocator, played in this process or fanned out over Ray tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import ENV_CREATOR, _global_registry
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rllib_alma_mi.evolution.operators import Head, load_head
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.registry import make_env, registered_envs
from rllib_alma_mi.rllib.greedy import GreedyModuleActor, play_episode


def learner_module_states(algo: Any) -> dict[str, Any]:
    """module id -> state of the learner's module (the RL team's current weights)."""
    state = algo.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}")
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE]


def module_specs(algo: Any, module_ids: list[str]) -> dict[str, RLModuleSpec]:
    """module id -> an RLModuleSpec that builds a fresh copy of `algo`'s module."""
    specs = {}
    for module_id in module_ids:
        module = algo.get_module(module_id)
        specs[module_id] = RLModuleSpec(
            module_class=type(module),
            observation_space=module.observation_space,
            action_space=module.action_space,
            model_config=dict(module.model_config),
        )
    return specs


def _make_env(env_name: str, env_config: dict[str, Any]) -> Any:
    """The hierarchy env; in a Ray worker a user's env registered only in the driver is
    found through Ray Tune's cluster-wide env registry (as RLlib's EnvRunners find it)."""
    if env_name in registered_envs():
        return make_env(env_name, env_config)
    if not _global_registry.contains(ENV_CREATOR, env_name):
        return make_env(env_name, env_config)  # raises "not registered"
    return _global_registry.get(ENV_CREATOR, env_name)(dict(env_config))


def evaluate_heads_locally(
    heads: list[Head],
    specs: dict[str, Any],
    states: dict[str, Any],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    observations: list | None = None,
) -> list[float]:
    """Mean team return over `seeds` of each head, in this process.

    `specs`: module id -> RLModuleSpec; `states`: module id -> module state (the RL team's).
    Fresh copies of the modules are built here; the heads are loaded into the allocator copy.
    With `observations` given, every allocator observation played is appended to it.
    """
    env = _make_env(env_name, env_config)
    modules = {}
    for module_id, spec in specs.items():
        module = spec.build()
        module.set_state(states[module_id])
        module.eval()
        modules[module_id] = module
    actor = GreedyModuleActor(modules)

    def collect(obs: dict[str, Any]) -> None:
        if ALLOCATOR in obs:
            observations.append(obs[ALLOCATOR])

    before_act = None if observations is None else collect
    fitness = []
    for head in heads:
        load_head(modules[ALLOCATOR], head)
        returns = [play_episode(env, actor.act, s, before_act).team_return for s in seeds]
        fitness.append(float(np.mean(returns)))
    env.close()
    return fitness


def _evaluate_chunk(
    heads: list[Head],
    payload: tuple[dict[str, Any], dict[str, Any]],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    collect: bool,
) -> tuple[list[float], list]:
    specs, states = payload
    torch.set_num_threads(1)  # one thread per task: `eval_workers` bounds the parallelism
    observations: list | None = [] if collect else None
    fitness = evaluate_heads_locally(
        heads, specs, states, env_name, env_config, seeds, observations
    )
    return fitness, observations or []


# No CPU reserved and outside any placement group: a Tune trial holding every CPU cannot
# starve the evaluation.
_evaluate_chunk_task = ray.remote(
    num_cpus=0,
    max_retries=0,
    scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
)(_evaluate_chunk)


def evaluate_heads(
    heads: list[Head],
    specs: dict[str, Any],
    states: dict[str, Any],
    env_name: str,
    env_config: dict[str, Any],
    seeds: list[int],
    workers: int = 2,
    observations: list | None = None,
) -> list[float]:
    """Mean team return of each head over `seeds`, in up to `workers` parallel Ray tasks
    (in this process when Ray is not initialised). With `observations` given, the allocator
    observations of every episode played are appended to it."""
    if not heads:
        return []
    if not ray.is_initialized():
        return evaluate_heads_locally(
            heads, specs, states, env_name, env_config, seeds, observations
        )
    chunks = np.array_split(np.arange(len(heads)), min(workers, len(heads)))
    payload = ray.put((specs, states))  # shipped once, shared by every task
    futures = [
        _evaluate_chunk_task.remote(
            [heads[i] for i in chunk], payload, env_name, env_config, seeds,
            observations is not None,
        )
        for chunk in chunks
    ]
    fitness = []
    for chunk_fitness, chunk_observations in ray.get(futures):
        fitness.extend(chunk_fitness)
        if observations is not None:
            observations.extend(chunk_observations)
    return fitness
