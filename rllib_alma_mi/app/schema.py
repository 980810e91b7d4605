"""The experiment file's vocabulary: its sections, their keys and the values each key takes.

Pure Python (no Ray): `plotting` reads `setting_names()` from here to group runs, and
`experiment` validates files against these tables. Every value check is one of
`settings.check_*`, so a bad value is reported the same way in a file, a `--set` and a
settings dataclass: `key=value` and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rllib_alma_mi.settings import (
    ALMA_KEYS,
    EvaluationSettings,
    EvolutionSettings,
    MutualInfoSettings,
    check_bool,
    check_choice,
    check_float,
    check_int,
)


class ConfigError(ValueError):
    """A bad experiment file or override; `str()` is one line naming source, key and fix."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """" did you mean 'x'?" for the closest choice, or ""."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" did you mean '{match[0]}'?" if match else ""


SECTIONS = (
    "name",
    "env",
    "env_config",
    "alma",
    "mutual_info",
    "evolution",
    "training",
    "env_runners",
    "evaluation",
    "stop",
    "checkpoint_every",
    "seed",
    "loggers",
)
DICT_SECTIONS = (
    "env_config", "alma", "mutual_info", "evolution", "training", "env_runners", "evaluation",
    "stop",
)
# List sections: an empty one (YAML null) counts as the empty list.
LIST_SECTIONS = ("loggers",)
# Sections whose absence means "off" rather than "the library's defaults".
OPTIONAL_SECTIONS = ("evolution", "evaluation")
MI_KEYS = MutualInfoSettings.keys()
EVALUATION_KEYS = EvaluationSettings.keys()
# Sections whose keys a sweep may vary (`--grid key=v1,v2`), in lookup order for bare keys
# (env_config, evolution and env_runners keys are always written section.key).
GRID_SECTIONS = ("mutual_info", "alma", "training", "env_config", "evolution", "env_runners")

# A check takes the key as the user writes it (e.g. "training.lr") and the value, and raises
# ValueError "key=value ... what is allowed" when the value is bad.
Check = Callable[[str, Any], None]


def _float(minimum: float, maximum: float | None = None, *, exclusive: bool = False) -> Check:
    return lambda key, value: check_float(key, value, minimum, maximum,
                                          exclusive_minimum=exclusive)


def _int(minimum: int, maximum: int | None = None) -> Check:
    return lambda key, value: check_int(key, value, minimum, maximum)


def _choice(*allowed: Any) -> Check:
    return lambda key, value: check_choice(key, value, allowed)


def _or(check: Check, *literals: Any) -> Check:
    """`check`, also accepting the given literal values (None, "auto", inf)."""

    def checked(key: str, value: Any) -> None:
        if any(value is lit or (type(value) is type(lit) and value == lit) for lit in literals):
            return
        try:
            check(key, value)
        except ValueError as exc:
            shown = " or ".join("null" if lit is None else repr(lit) for lit in literals)
            raise ValueError(f"{exc}; or {shown}") from None

    return checked


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}={value!r} must be a non-empty string")


# Experiment trackers a run can log to besides its CSV/JSON/TensorBoard files (`app.trackers`).
TRACKERS = ("wandb", "mlflow")


def check_loggers(key: str, value: Any) -> None:
    """A list of distinct tracker names from `TRACKERS` (e.g. [mlflow] or [wandb, mlflow])."""
    if not isinstance(value, list):
        raise ValueError(
            f"{key}={value!r} must be a list of trackers, e.g. [mlflow]; "
            f"allowed: {', '.join(TRACKERS)}"
        )
    for i, name in enumerate(value):
        try:
            check_choice(f"{key}[{i}]", name, TRACKERS)
        except ValueError as exc:
            raise ValueError(f"{exc};{suggest(name, TRACKERS)}".rstrip(";")) from None
        if name in value[:i]:
            raise ValueError(f"{key}[{i}]={name!r} is listed twice; give each tracker once")


_POSITIVE = _float(0.0, exclusive=True)
_NONNEG = _float(0.0)
_UNIT = _float(0.0, 1.0)
_COUNT = _int(1)

TRAINING_CHECKS: dict[str, Check] = {
    "lr": _POSITIVE,
    "gamma": _UNIT,
    "lambda_": _UNIT,
    "train_batch_size_per_learner": _COUNT,
    "minibatch_size": _COUNT,
    "num_epochs": _COUNT,
    "shuffle_batch_per_epoch": check_bool,
    "clip_param": _POSITIVE,
    "vf_clip_param": _or(_POSITIVE, math.inf),  # inf: no clipping
    "vf_loss_coeff": _NONNEG,
    "entropy_coeff": _NONNEG,
    "use_kl_loss": check_bool,
    "kl_coeff": _NONNEG,
    "kl_target": _POSITIVE,
    "use_critic": check_bool,
    "use_gae": check_bool,
    "grad_clip": _or(_POSITIVE, None),
    "grad_clip_by": _choice("value", "norm", "global_norm"),
}
ENV_RUNNER_CHECKS: dict[str, Check] = {
    "num_env_runners": _int(0),
    "num_envs_per_env_runner": _COUNT,
    "rollout_fragment_length": _or(_COUNT, "auto"),
    "batch_mode": _choice("truncate_episodes", "complete_episodes"),
    "sample_timeout_s": _or(_POSITIVE, None),
    "num_cpus_per_env_runner": _POSITIVE,
    "episodes_to_numpy": check_bool,
    "explore": check_bool,
}
STOP_CHECKS: dict[str, Check] = {
    "iterations": _COUNT,
    "timesteps": _COUNT,
    "time_s": _POSITIVE,
}
TOP_CHECKS: dict[str, Check] = {
    "name": _text,
    "env": _text,
    "checkpoint_every": _COUNT,
    "seed": _or(_int(0), None),
    "loggers": check_loggers,
}
SECTION_CHECKS: dict[str, dict[str, Check]] = {
    "training": TRAINING_CHECKS,
    "env_runners": ENV_RUNNER_CHECKS,
    "stop": STOP_CHECKS,
}


def config_key(section: str, key: str) -> tuple[str, ...]:
    """Where a setting lives in `AlgorithmConfig.to_dict()` (the Tune param space)."""
    if section == "env_config":
        return ("env_config", key)
    if section == "evolution":
        return ("evolution_config", key)
    return ("lambda",) if key == "lambda_" else (key,)


def setting_names() -> list[tuple[str, ...]]:
    """Config-dict paths that identify a configuration (used to group trials over seeds).

    How a run is evaluated (the `evaluation` section) does not define a configuration.
    """
    names = [("env",)] + [(k,) for k in ALMA_KEYS + MI_KEYS]
    names += [config_key("training", k) for k in TRAINING_CHECKS]
    names += [config_key("evolution", k) for k in EvolutionSettings.keys()]
    names += [config_key("env_runners", k) for k in ENV_RUNNER_CHECKS]
    return names


@dataclass
class ExperimentSpec:
    """A validated experiment: the sections of the file with defaults filled in."""

    name: str
    env: str
    env_config: dict[str, Any] = field(default_factory=dict)
    alma: dict[str, Any] = field(default_factory=dict)
    mutual_info: dict[str, Any] = field(default_factory=dict)
    evolution: dict[str, Any] | None = None  # None: no ALMA-EA population
    training: dict[str, Any] = field(default_factory=dict)
    env_runners: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # None: no evaluation during training
    stop: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 10
    seed: int | None = 0
    loggers: list[str] = field(default_factory=list)  # trackers beside CSV/JSON/TensorBoard

    def to_dict(self) -> dict[str, Any]:
        """The sections as an experiment file would hold them (an optional section that is
        off, such as a missing `evolution`, and an empty `loggers` are left out)."""
        return {
            k: copy.deepcopy(getattr(self, k))
            for k in SECTIONS
            if not (k in OPTIONAL_SECTIONS and getattr(self, k) is None)
            and not (k in LIST_SECTIONS and not getattr(self, k))
        }
