"""The population kept on the algorithm (`EvolutionState`) and its place in checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rllib_alma_mi.evolution.operators import Head, clone_head, random_head
from rllib_alma_mi.settings import EvolutionSettings

STATE_KEY = "alma_evolution"  # the component name in the algorithm's state
ATTRIBUTE = "_alma_evolution"  # the attribute holding the EvolutionState on the algorithm


def _to_numpy(head: Head) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in head.items()}


def _from_numpy(head: dict[str, Any]) -> Head:
    return {k: torch.as_tensor(np.asarray(v)).clone() for k, v in head.items()}


@dataclass
class EvolutionState:
    """The population and its bookkeeping, as kept on the algorithm and in checkpoints."""

    population: list[Head]
    rng: torch.Generator
    generation: int = 0
    fitness: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    best: Head | None = None  # the fittest member of the last evaluation

    @classmethod
    def create(cls, template: Head, settings: EvolutionSettings, seed: int) -> EvolutionState:
        """A population of `settings.population_size` random heads shaped like `template`."""
        rng = torch.Generator().manual_seed(int(seed))
        population = [random_head(template, rng) for _ in range(settings.population_size)]
        return cls(population=population, rng=rng)

    def to_dict(self) -> dict[str, Any]:
        """The state as numpy arrays and Python numbers (what checkpoints store)."""
        return {
            "population": [_to_numpy(h) for h in self.population],
            "rng_state": self.rng.get_state().numpy().copy(),
            "generation": self.generation,
            "fitness": list(self.fitness),
            "metrics": dict(self.metrics),
            "best": None if self.best is None else _to_numpy(self.best),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvolutionState:
        """The inverse of `to_dict`."""
        rng = torch.Generator()
        rng.set_state(torch.as_tensor(np.asarray(data["rng_state"], dtype=np.uint8)))
        population = [_from_numpy(h) for h in data["population"]]
        return cls(
            population=population,
            rng=rng,
            generation=int(data["generation"]),
            fitness=[float(f) for f in data["fitness"]],
            metrics={k: float(v) for k, v in data["metrics"].items()},
            best=None if data.get("best") is None else _from_numpy(data["best"]),
        )


def attached_state(algo: Any) -> EvolutionState | None:
    """The population kept on `algo`, or None before it is created."""
    return getattr(algo, ATTRIBUTE, None)


def attach_state(algo: Any, state: EvolutionState) -> None:
    """Keep `state` on `algo` (replacing any population it had)."""
    setattr(algo, ATTRIBUTE, state)


def best_head(algo: Any) -> Head | None:
    """The fittest head of the last evaluation (before breeding), or None before the first."""
    state = attached_state(algo)
    return None if state is None or state.best is None else clone_head(state.best)


def evolution_state(
    algo: Any, state: dict[str, Any], components: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """`state` plus the population, for `Algorithm.get_state(components, not_components=)`;
    the population is a component named `alma_evolution`."""
    population = attached_state(algo)
    wanted = algo._check_component(STATE_KEY, components, kwargs.get("not_components"))
    if population is not None and wanted:
        state[STATE_KEY] = population.to_dict()
    return state


def restore_evolution_state(algo: Any, state: dict[str, Any]) -> None:
    """Restore the population from a state written by `evolution_state`."""
    if STATE_KEY in state:
        attach_state(algo, EvolutionState.from_dict(state[STATE_KEY]))
