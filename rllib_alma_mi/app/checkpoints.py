"""Saving and loading AlmaPPO checkpoints on both RLlib API stacks.

The new API stack saves with `Algorithm.save_to_path`; the old stack cannot (its
`Algorithm.get_state()` is not supported) and saves with `Algorithm.save`.
`Algorithm.from_checkpoint` restores either.

`save_checkpoint` is atomic: it writes into a hidden temporary sibling of the target and
renames it into place only once the save has finished, so a crash mid-save leaves the previous
checkpoint in `directory` as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm


def uses_new_api_stack(algo_or_config: Any) -> bool:
    """True when an Algorithm (or an AlgorithmConfig) runs on the new API stack."""
    config = getattr(algo_or_config, "config", algo_or_config)
    return bool(config.enable_rl_module_and_learner)


def _previous(target: Path) -> Path:
    """Where the replaced checkpoint waits while the new one is renamed into place."""
    return target.with_name(f".{target.name}.previous")


def save_checkpoint(algo: Any, directory: str | Path) -> str:
    """Write `algo`'s checkpoint into `directory` atomically; returns the checkpoint path.

    An existing checkpoint in `directory` is replaced only after the new one is complete.
    """
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.saving-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-save
    tmp = target.with_name(f".{target.name}.saving-{uuid.uuid4().hex[:8]}")
    try:
        if uses_new_api_stack(algo):
            written = Path(algo.save_to_path(str(tmp)))
        else:
            written = Path(algo.save(str(tmp)).checkpoint.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    previous = _previous(target)
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    os.replace(tmp, target)
    shutil.rmtree(previous, ignore_errors=True)
    return str(target / written.resolve().relative_to(tmp.resolve()))


def load_algorithm(path: str | Path) -> Any:
    """The Algorithm restored from the checkpoint directory `path` (either API stack).

    If a crash hit the instant between moving the old checkpoint aside and renaming the new
    one into place, `path` is missing and the old checkpoint is restored.
    """
    path = Path(path).resolve()
    if not path.exists() and _previous(path).is_dir():
        path = _previous(path)
    return Algorithm.from_checkpoint(str(path))
