"""Saving and loading AlmaPPO checkpoints on both RLlib API stacks.

The new API stack saves with `Algorithm.save_to_path`; the old stack cannot (its
`Algorithm.get_state()` is not supported) and saves with `Algorithm.save`.
`Algorithm.from_checkpoint` restores either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def uses_new_api_stack(algo_or_config: Any) -> bool:
    """True when an Algorithm (or an AlgorithmConfig) runs on the new API stack."""
    config = getattr(algo_or_config, "config", algo_or_config)
    return bool(config.enable_rl_module_and_learner)


def save_checkpoint(algo: Any, directory: str | Path) -> str:
    """Write `algo`'s checkpoint into `directory`; returns the checkpoint path."""
    directory = str(Path(directory).resolve())
    if uses_new_api_stack(algo):
        return str(algo.save_to_path(directory))
    return str(algo.save(directory).checkpoint.path)


def load_algorithm(path: str | Path) -> Any:
    """The Algorithm restored from the checkpoint directory `path` (either API stack)."""
    from ray.rllib.algorithms.algorithm import Algorithm

    return Algorithm.from_checkpoint(str(Path(path).resolve()))
