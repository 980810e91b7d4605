"""Experiment files: the YAML schema, its validation, and the `AlmaPPOConfig` built from it.

An experiment file has these top-level keys, all optional. A missing section or key takes the
library's default (the environment's own defaults, `AlmaPPOConfig()`'s settings), a missing
`stop` is 100 iterations, a missing `evolution` leaves the ALMA-EA population off
(`evolution: {}` turns it on with `EvolutionSettings`' defaults) and a missing `evaluation`
leaves evaluation during training off (`evaluation: {}`: `EvaluationSettings`' defaults).
`DEFAULT_EXPERIMENT` is the embedded default file, the same as
`examples/configs/save_the_city.yaml`:

    name: save_the_city          # run name (default: the file's stem)
    env: save_the_city           # a registered environment (save_the_city, mpe_spread, ...)
    env_config: {...}            # keyword arguments of that environment
    alma: {...}                  # AlmaPPOConfig.alma(): allocation, alloc_interval, ...
    mutual_info: {...}           # AlmaPPOConfig.mutual_info(): use_mutual_info, mi_weight, ...
    evolution: {...}             # AlmaPPOConfig.evolution(): population_size, ... (off if left out)
    training: {...}              # PPOConfig.training(): lr, gamma, lambda_, num_epochs, ...
    env_runners: {...}           # AlgorithmConfig.env_runners(): num_env_runners, ...
    evaluation: {...}            # AlmaPPOConfig.seeded_evaluation(): interval, episodes, ...
    stop: {iterations: 60}       # and/or timesteps (the wrapped env's steps), time_s
    checkpoint_every: 20         # checkpoint period in training iterations (and at the end)
    seed: 0                      # the RLlib seed (`.debugging(seed=...)`)
    loggers: []                  # experiment trackers beside CSV/TensorBoard: wandb, mlflow

This module holds the defaults, the validated `ExperimentSpec` and its validation; the key
vocabulary is in `schema`, YAML reading in `yaml_io`, `--set`/`--grid` in `overrides`, the
`AlmaPPOConfig` in `building` and the Tune runner in `tune`.

Every value is checked before anything starts. A problem raises `ConfigError`, whose one-line
message names the source (file or `--set`), the key, the bad value and what is allowed, with a
suggestion for a likely typo. `examples/configs/README.md` documents the schema for users.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from rllib_alma_mi.app.building import build_config
from rllib_alma_mi.app.schema import (
    ALMA_KEYS,
    DICT_SECTIONS,
    LIST_SECTIONS,
    MI_KEYS,
    SECTION_CHECKS,
    SECTIONS,
    TOP_CHECKS,
    ConfigError,
    ExperimentSpec,
    suggest,
)
from rllib_alma_mi.registry import base_env_creator, registered_envs
from rllib_alma_mi.settings import (
    EvaluationSettings,
    EvolutionSettings,
    HierarchySettings,
    ModelSettings,
    MutualInfoSettings,
    check_combination,
)

__all__ = [
    "BASE_DEFAULTS",
    "DEFAULT_EXPERIMENT",
    "ConfigError",
    "ExperimentSpec",
    "check_env_config",
    "validate",
]

DEFAULT_EXPERIMENT: dict[str, Any] = {
    "name": "save_the_city",
    "env": "save_the_city",
    "env_config": {"scenario": "2-5a_2-5b", "max_cycles": 100},
    "alma": {
        "allocation": "learned",
        "alloc_interval": None,
        "imitation_steps": 0,
        "embed_dim": 64,
        "n_heads": 4,
    },
    "mutual_info": {
        "use_mutual_info": True,
        "mi_measure": "JSD",
        "mi_embed_dim": 64,
        "mi_weight": 0.001,
        "mi_scheme": 3,
        "mi_target": "task_mean",
    },
    "training": {
        "lr": 0.0005,
        "gamma": 0.99,
        "lambda_": 0.95,
        "train_batch_size_per_learner": 1000,
        "minibatch_size": 250,
        "num_epochs": 4,
        "entropy_coeff": 0.01,
    },
    "env_runners": {
        "num_env_runners": 0,
        "num_envs_per_env_runner": 8,
        "rollout_fragment_length": 25,
    },
    "evaluation": {"interval": 10, "episodes": 10, "greedy": True},
    "stop": {"iterations": 60},
    "checkpoint_every": 20,
    "seed": 0,
}

# What a file leaves out: sections left empty take the library's defaults (AlmaPPOConfig).
BASE_DEFAULTS: dict[str, Any] = {
    "env": "save_the_city",
    "env_config": {},
    "alma": {},
    "mutual_info": {},
    "evolution": None,  # off
    "training": {},
    "env_runners": {},
    "evaluation": None,  # off
    "stop": {"iterations": 100},
    "checkpoint_every": 10,
    "seed": 0,
    "loggers": [],
}


def with_defaults(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    """`raw` over the base defaults; an empty section (`training:` or `loggers:` with nothing
    under it, which YAML reads as null) counts as left out."""
    merged = {**copy.deepcopy(BASE_DEFAULTS), "name": name}
    merged.update({k: copy.deepcopy(v) for k, v in raw.items()
                   if not (k in DICT_SECTIONS + LIST_SECTIONS and v is None)})
    return merged


def validate(raw: Mapping[str, Any], source: str, name: str = "experiment") -> ExperimentSpec:
    """Check a parsed experiment file section by section; returns the spec with defaults.

    `source` names the origin in error messages (a file path, or `--set key=value`).
    """
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(
                f"{source}: {key}: unknown section;{suggest(key, SECTIONS)} "
                f"allowed: {', '.join(SECTIONS)}"
            )
    for key in DICT_SECTIONS:
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(
                f"{source}: {key}: must be a mapping of keys to values, got "
                f"{type(raw[key]).__name__} {raw[key]!r}"
            )
    merged = with_defaults(raw, name)
    for key, check in TOP_CHECKS.items():
        _check_value(source, key, merged[key], check)
    for section, checks in SECTION_CHECKS.items():
        for key, value in merged[section].items():
            if key not in checks:
                raise ConfigError(
                    f"{source}: {section}.{key}: unknown key;{suggest(key, checks)} "
                    f"allowed: {', '.join(checks)}"
                )
            _check_value(source, f"{section}.{key}", value, checks[key])
    if not merged["stop"]:
        raise ConfigError(
            f"{source}: stop: give at least one of {', '.join(SECTION_CHECKS['stop'])}"
        )
    _check_settings(source, merged)
    check_env_config(source, merged["env"], merged["env_config"])
    spec = ExperimentSpec(**merged)
    _check_with_rllib(source, spec)
    return spec


def _check_value(source: str, key: str, value: Any, check) -> None:
    """One value through its `settings.check_*`; the message names source, key and fix."""
    try:
        check(key, value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_settings(source: str, merged: dict[str, Any]) -> None:
    for section, keys in (("alma", ALMA_KEYS), ("mutual_info", MI_KEYS),
                          ("evolution", EvolutionSettings.keys()),
                          ("evaluation", EvaluationSettings.keys())):
        for key in merged[section] or {}:
            if key not in keys:
                raise ConfigError(
                    f"{source}: {section}.{key}: unknown key;{suggest(key, keys)} "
                    f"allowed: {', '.join(keys)}"
                )
    model_keys = ModelSettings.keys()
    alma = merged["alma"]
    try:
        hierarchy = HierarchySettings(**{k: v for k, v in alma.items() if k not in model_keys})
        ModelSettings(**{k: v for k, v in alma.items() if k in model_keys})
    except ValueError as exc:
        raise ConfigError(f"{source}: alma: {exc}") from None
    try:
        mi = MutualInfoSettings(**merged["mutual_info"])
    except ValueError as exc:
        raise ConfigError(f"{source}: mutual_info: {exc}") from None
    try:
        check_combination(hierarchy, mi)
    except ValueError as exc:
        raise ConfigError(f"{source}: alma/mutual_info: {exc}") from None
    if merged["evaluation"] is not None:
        try:
            EvaluationSettings(**merged["evaluation"])
        except ValueError as exc:
            raise ConfigError(f"{source}: evaluation: {exc}") from None
    if merged["evolution"] is None:
        return
    try:
        EvolutionSettings(**merged["evolution"])
    except ValueError as exc:
        raise ConfigError(f"{source}: evolution: {exc}") from None
    if hierarchy.allocation != "learned":
        raise ConfigError(
            f"{source}: alma/evolution: the population evolves the learned allocator's head, "
            f"so it needs alma.allocation 'learned', got {hierarchy.allocation!r}; set "
            "allocation: learned or drop the evolution section"
        )


def _env_parameters(env: str) -> list[str] | None:
    """The keyword arguments the environment accepts, when its signature tells."""
    creator = base_env_creator(env)
    target = creator
    try:
        params = inspect.signature(target).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            target = type(creator()).__init__  # a forwarding factory: ask the env class
            params = inspect.signature(target).parameters
    except Exception:  # noqa: BLE001 - any failure only costs the suggestion
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]


def check_env_config(source: str, env: str, env_config: dict[str, Any]) -> None:
    """Build the base environment once; a failure is a ConfigError naming the bad key."""
    if env not in registered_envs():
        raise ConfigError(
            f"{source}: env: {env!r} is not a registered environment;"
            f"{suggest(env, registered_envs())} allowed: {', '.join(registered_envs())}"
        )
    try:
        base_env_creator(env)(**env_config).close()
    except Exception as exc:  # noqa: BLE001 - any construction failure is a config error
        allowed = _env_parameters(env)
        unknown = [k for k in env_config if allowed is not None and k not in allowed]
        if unknown:
            raise ConfigError(
                f"{source}: env_config.{unknown[0]}: unknown key for env {env!r};"
                f"{suggest(unknown[0], allowed)} allowed: {', '.join(allowed)}"
            ) from None
        message = " ".join(str(exc).split())
        raise ConfigError(f"{source}: env_config: {message}") from None


def _check_with_rllib(source: str, spec: ExperimentSpec) -> None:
    """RLlib's own cross-checks (e.g. minibatch_size <= train_batch_size_per_learner)."""
    rllib_logger = logging.getLogger("ray.rllib")
    level = rllib_logger.level
    rllib_logger.setLevel(logging.ERROR)  # the check itself is not worth RLlib's notices
    try:
        build_config(spec).copy(copy_frozen=False).validate()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - RLlib raises ValueError and others
        message = " ".join(str(exc).split())
        raise ConfigError(f"{source}: {message}") from None
    finally:
        rllib_logger.setLevel(level)
