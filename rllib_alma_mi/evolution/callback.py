"""The evolution in RLlib's training loop: `run_generation` on an algorithm, the callback that
runs it every `generations_every` iterations, and `attach_evolution` for the config."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_alma_mi.evolution.mi_step import train_mi_on
from rllib_alma_mi.evolution.operators import (
    as_fitness,
    clone_head,
    head_from_state,
    next_generation,
)
from rllib_alma_mi.evolution.rollouts import evaluate_heads, learner_module_states, module_specs
from rllib_alma_mi.evolution.state import EvolutionState, attach_state, attached_state
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.rllib.callbacks import add_callback
from rllib_alma_mi.settings import EvolutionSettings


def settings_of(config: Any) -> EvolutionSettings | None:
    """The checked evolution settings of `config`, or None when the evolution is off."""
    block = getattr(config, "evolution_config", None)
    return None if block is None else EvolutionSettings.from_dict(block)


def _seed_of(algo: Any) -> int:
    return int(algo.config.seed) if algo.config.seed is not None else 0


def _state_of(algo: Any) -> EvolutionState:
    """The population on `algo`, created (from the learner's head shapes) on first use."""
    state = attached_state(algo)
    if state is None:
        settings = settings_of(algo.config)
        template = head_from_state(learner_module_states(algo)[ALLOCATOR])
        state = EvolutionState.create(template, settings, seed=10_007 * (_seed_of(algo) + 1))
        attach_state(algo, state)
    return state


def run_generation(algo: Any) -> dict[str, float]:
    """Evaluate the population and the RL head, log, and breed the next generation."""
    settings = settings_of(algo.config)
    state = _state_of(algo)
    states = learner_module_states(algo)
    rl_head = head_from_state(states[ALLOCATOR])
    first = 1_000_003 * (_seed_of(algo) + 1) + state.generation * settings.episodes_per_eval
    seeds = [first + i for i in range(settings.episodes_per_eval)]
    trains_mi = settings.ea_mi_steps > 0 and algo.get_module(ALLOCATOR).mi is not None
    observations: list | None = [] if trains_mi else None
    scores = evaluate_heads(
        [*state.population, rl_head],
        module_specs(algo, list(states)),
        states,
        algo.config.env,
        dict(algo.config.env_config),
        seeds,
        workers=settings.eval_workers,
        observations=observations,
    )
    fitness, rl_fitness = scores[:-1], scores[-1]
    state.best = clone_head(state.population[int(np.argmax(as_fitness(fitness)))])
    every = settings.inject_rl_every
    inject = every > 0 and (state.generation + 1) % every == 0
    state.population = next_generation(
        state.population, fitness, rl_head if inject else None, settings, state.rng
    )
    state.generation += 1
    state.fitness = list(fitness)
    state.metrics = {
        "best_fitness": float(np.max(fitness)),
        "mean_fitness": float(np.mean(fitness)),
        "rl_fitness": float(rl_fitness),
        "rl_rank": float(1 + sum(f > rl_fitness for f in fitness)),
        "generation": float(state.generation),
    }
    if observations:
        state.metrics.update(train_mi_on(algo, observations, settings.ea_mi_steps))
    return dict(state.metrics)


class EvolutionCallback(RLlibCallback):
    """Runs a generation every `generations_every` iterations; logs `evolution/...`."""

    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        if settings_of(algorithm.config) is not None:
            _state_of(algorithm)

    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        settings = settings_of(algorithm.config)
        if settings is None:
            return
        iteration = int(result.get("training_iteration", algorithm.training_iteration))
        if iteration % settings.generations_every == 0:
            run_generation(algorithm)
        metrics = _state_of(algorithm).metrics
        if metrics:
            result["evolution"] = dict(metrics)


def attach_evolution(config: Any) -> None:
    """Check the evolution block against the rest of `config` and add `EvolutionCallback`."""
    if getattr(config, "evolution_config", None) is None:
        return
    settings_of(config)
    if not config.enable_rl_module_and_learner:
        raise ValueError(
            "evolution() runs on RLlib's new API stack only; drop .evolution() or use the "
            "default api_stack()"
        )
    if config.allocation != "learned":
        raise ValueError(
            f"evolution() needs allocation='learned' (it evolves the allocator's head), got "
            f"allocation={config.allocation!r}; call .alma(allocation='learned') or drop "
            ".evolution()"
        )
    add_callback(config, EvolutionCallback)
