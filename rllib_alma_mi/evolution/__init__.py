"""ALMA-EA: a RACE-style evolutionary population of allocator heads (off by default)."""

from rllib_alma_mi.evolution.population import (
    EvolutionCallback,
    attach_evolution,
    best_head,
    evolution_state,
    restore_evolution_state,
    run_generation,
)
from rllib_alma_mi.settings import EvolutionSettings

__all__ = [
    "EvolutionCallback",
    "EvolutionSettings",
    "attach_evolution",
    "best_head",
    "evolution_state",
    "restore_evolution_state",
    "run_generation",
]
