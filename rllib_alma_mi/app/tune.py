"""Running experiments with Ray Tune: the param space, the stopper, the Tuner and its resume."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import CheckpointConfig, RunConfig, TuneConfig, Tuner
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.stopper import Stopper

from rllib_alma_mi.algorithm import AlmaPPO
from rllib_alma_mi.app.building import build_config
from rllib_alma_mi.app.schema import ExperimentSpec, config_key
from rllib_alma_mi.settings import EvolutionSettings


def param_space(
    spec: ExperimentSpec,
    grid: Mapping[tuple[str, str], list[Any]] | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """The Tune param space: the config dict with `tune.grid_search` over grid keys and seeds."""
    space = build_config(spec).to_dict()
    for (section, key), values in (grid or {}).items():
        if section == "evolution" and space.get("evolution_config") is None:
            # Sweeping an evolution key turns the population on (as `--set` does), with
            # the defaults for the other keys.
            space["evolution_config"] = EvolutionSettings().to_dict()
        path = config_key(section, key)
        target = space
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = tune.grid_search(list(values))
    if seeds is not None and len(seeds) > 1:
        space["seed"] = tune.grid_search(list(seeds))
    elif seeds:
        space["seed"] = seeds[0]
    return space


_STOP_KEYS = {
    "iterations": ("training_iteration",),
    "timesteps": ("env_runners", "num_base_env_steps_lifetime"),
    "time_s": ("time_total_s",),
}


def result_value(result: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A value of a (nested or "/"-flattened) Tune result, or None."""
    flat = result.get("/".join(path))
    if flat is not None:
        return flat
    value: Any = result
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class BudgetStopper(Stopper):
    """Tune stopper for `stop: {iterations, timesteps, time_s}`; the first budget met stops.

    `timesteps` counts the wrapped environment's steps (`num_base_env_steps_lifetime`), which
    only grows when episodes end; a missing value counts as 0.
    """

    def __init__(self, stop: Mapping[str, Any]):
        self.stop = dict(stop)

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        for key, budget in self.stop.items():
            value = result_value(result, _STOP_KEYS[key])
            if value is not None and value >= budget:
                return True
        return False

    def stop_all(self) -> bool:
        return False


def _trial_dirname(trial: Any) -> str:
    tag = str(getattr(trial, "experiment_tag", "")).replace("/", "_")[:80]
    return f"trial_{trial.trial_id}" + (f"_{tag}" if tag else "")


def run_config(
    output: Path, stop: Mapping[str, Any], checkpoint_every: int, callbacks: list[Any]
) -> RunConfig:
    """Tune's RunConfig: storage under `output` (its parent + name), CSV/JSON/TensorBoard
    logs, checkpoints every `checkpoint_every` iterations and at the end."""
    return RunConfig(
        name=output.name,
        storage_path=str(output.parent),
        stop=BudgetStopper(stop),
        checkpoint_config=CheckpointConfig(
            checkpoint_frequency=checkpoint_every, checkpoint_at_end=True
        ),
        callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback()],
        verbose=0,
    )


def make_tuner(space: dict[str, Any], output: Path, stop: Mapping[str, Any],
               checkpoint_every: int, callbacks: list[Any]) -> Tuner:
    """A `ray.tune.Tuner` over the AlmaPPO trainable with the given param space."""
    return Tuner(
        AlmaPPO,
        param_space=space,
        tune_config=TuneConfig(trial_dirname_creator=_trial_dirname),
        run_config=run_config(output, stop, checkpoint_every, callbacks),
    )


def restore_tuner(output: Path) -> Tuner:
    """The Tuner of an interrupted run at `output`, continuing from each trial's checkpoint."""
    return Tuner.restore(str(output), trainable=AlmaPPO, resume_unfinished=True,
                         resume_errored=True)


def is_run_dir(path: Path) -> bool:
    """True when `path` holds a Tune experiment (one that `restore_tuner` can continue)."""
    return (path / "tuner.pkl").is_file()
