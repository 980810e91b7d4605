"""Experiment files: the YAML schema, its validation, and the `AlmaPPOConfig` built from it.

An experiment file has these top-level keys, all optional. A missing section or key takes the
library's default (the environment's own defaults, `AlmaPPOConfig()`'s settings), a missing
`stop` is 100 iterations and a missing `evolution` leaves the ALMA-EA population off
(`evolution: {}` turns it on with `EvolutionSettings`' defaults). `DEFAULT_EXPERIMENT` is the
embedded default file, the same as `examples/configs/save_the_city.yaml`:

    name: save_the_city          # run name (default: the file's stem)
    env: save_the_city           # a registered environment (save_the_city, mpe_spread, ...)
    env_config: {...}            # keyword arguments of that environment
    alma: {...}                  # AlmaPPOConfig.alma(): allocation, alloc_interval, ...
    mutual_info: {...}           # AlmaPPOConfig.mutual_info(): use_mutual_info, mi_weight, ...
    evolution: {...}             # AlmaPPOConfig.evolution(): population_size, ... (off if left out)
    training: {...}              # PPOConfig.training(): lr, gamma, lambda_, num_epochs, ...
    env_runners: {...}           # AlgorithmConfig.env_runners(): num_env_runners, ...
    stop: {iterations: 60}       # and/or timesteps (the wrapped env's steps), time_s
    checkpoint_every: 20         # checkpoint period in training iterations (and at the end)
    seed: 0                      # the RLlib seed (`.debugging(seed=...)`)

Every value is checked before anything starts. A problem raises `ConfigError`, whose one-line
message names the source (file or `--set`), the key, the bad value and what is allowed, with a
suggestion for a likely typo. `examples/configs/README.md` documents the schema for users.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.tune.stopper import Stopper

from rllib_alma_mi.settings import (
    EvolutionSettings,
    HierarchySettings,
    ModelSettings,
    MutualInfoSettings,
    check_combination,
)

DEFAULT_EXPERIMENT: dict[str, Any] = {
    "name": "save_the_city",
    "env": "save_the_city",
    "env_config": {"scenario": "2-5a_2-5b", "max_cycles": 100},
    "alma": {
        "allocation": "learned",
        "alloc_interval": 5,
        "imitation_steps": 40000,
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
    "stop": {"iterations": 60},
    "checkpoint_every": 20,
    "seed": 0,
}

SECTIONS = (
    "name",
    "env",
    "env_config",
    "alma",
    "mutual_info",
    "evolution",
    "training",
    "env_runners",
    "stop",
    "checkpoint_every",
    "seed",
)
_DICT_SECTIONS = (
    "env_config", "alma", "mutual_info", "evolution", "training", "env_runners", "stop"
)
# Sections whose absence means "off" rather than "the library's defaults".
_OPTIONAL_SECTIONS = ("evolution",)
ALMA_KEYS = (
    tuple(k for k in HierarchySettings.keys() if k != "include_state") + ModelSettings.keys()
)
MI_KEYS = MutualInfoSettings.keys()
# Sections whose keys a sweep may vary (`--grid key=v1,v2`), in lookup order for bare keys
# (env_config, evolution and env_runners keys are always written section.key).
GRID_SECTIONS = ("mutual_info", "alma", "training", "env_config", "evolution", "env_runners")
# What a file leaves out: sections left empty take the library's defaults (AlmaPPOConfig).
BASE_DEFAULTS: dict[str, Any] = {
    "env": "save_the_city",
    "env_config": {},
    "alma": {},
    "mutual_info": {},
    "evolution": None,  # off
    "training": {},
    "env_runners": {},
    "stop": {"iterations": 100},
    "checkpoint_every": 10,
    "seed": 0,
}


class ConfigError(ValueError):
    """A bad experiment file or override; `str()` is one line naming source, key and fix."""


# ----------------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A command-line value as YAML: `3` → 3, `1e-4` → 0.0001, `true` → True, `null` → None."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into a dict; unreadable or non-mapping files raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the file must hold a mapping of sections ({', '.join(SECTIONS)}), "
            f"got a {type(data).__name__}"
        )
    return data


# ----------------------------------------------------------------------------------- rules
def suggest(word: str, choices: Iterable[str]) -> str:
    """" did you mean 'x'?" for the closest choice, or ""."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" did you mean '{match[0]}'?" if match else ""


@dataclass(frozen=True)
class Rule:
    """Type and range of one value: kind is "int", "float", "bool", "str" or "choice".

    `low`/`high` bound numbers (`open_low` makes the lower bound exclusive); `nullable`
    allows None; `also` lists extra accepted literal values (e.g. "auto").
    """

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple = ()
    nullable: bool = False
    also: tuple = ()

    def allowed(self) -> str:
        if self.kind == "choice":
            text = f"one of {list(self.choices)}"
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "a string"
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            text = f"{noun} in {'(' if self.open_low or self.low is None else '['}{lo}, {hi}"
            text += ")" if self.high is None else "]"
        extras = [repr(a) for a in self.also] + (["null"] if self.nullable else [])
        return text + "".join(f" or {e}" for e in extras)

    def problem(self, value: Any) -> str | None:
        """Why `value` breaks the rule, or None when it is fine."""
        if value is None and self.nullable or value in self.also and not isinstance(value, bool):
            return None
        if self.kind == "choice":
            ok = value in self.choices and isinstance(value, bool) == isinstance(
                self.choices[0], bool
            )
            return None if ok else "is not allowed"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "has the wrong type"
        if self.kind == "str":
            return None if isinstance(value, str) else "has the wrong type"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "has the wrong type"
        if self.kind == "int" and not isinstance(value, int):
            return "has the wrong type"
        if not math.isfinite(value):
            return "is out of range"
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        above = self.high is not None and value > self.high
        return "is out of range" if below or above else None


_POS = Rule("float", 0.0, open_low=True)
_NONNEG = Rule("float", 0.0)
_UNIT = Rule("float", 0.0, 1.0)
_COUNT = Rule("int", 1)
_BOOL = Rule("bool")

TRAINING_RULES: dict[str, Rule] = {
    "lr": _POS,
    "gamma": _UNIT,
    "lambda_": _UNIT,
    "train_batch_size_per_learner": _COUNT,
    "minibatch_size": _COUNT,
    "num_epochs": _COUNT,
    "shuffle_batch_per_epoch": _BOOL,
    "clip_param": _POS,
    "vf_clip_param": Rule("float", 0.0, open_low=True, also=(math.inf,)),  # inf: no clipping
    "vf_loss_coeff": _NONNEG,
    "entropy_coeff": _NONNEG,
    "use_kl_loss": _BOOL,
    "kl_coeff": _NONNEG,
    "kl_target": _POS,
    "use_critic": _BOOL,
    "use_gae": _BOOL,
    "grad_clip": Rule("float", 0.0, open_low=True, nullable=True),
    "grad_clip_by": Rule("choice", choices=("value", "norm", "global_norm")),
}
ENV_RUNNER_RULES: dict[str, Rule] = {
    "num_env_runners": Rule("int", 0),
    "num_envs_per_env_runner": _COUNT,
    "rollout_fragment_length": Rule("int", 1, also=("auto",)),
    "batch_mode": Rule("choice", choices=("truncate_episodes", "complete_episodes")),
    "sample_timeout_s": Rule("float", 0.0, open_low=True, nullable=True),
    "num_cpus_per_env_runner": _POS,
    "episodes_to_numpy": _BOOL,
    "explore": _BOOL,
}
STOP_RULES: dict[str, Rule] = {
    "iterations": _COUNT,
    "timesteps": _COUNT,
    "time_s": _POS,
}
TOP_RULES: dict[str, Rule] = {
    "name": Rule("str"),
    "env": Rule("str"),
    "checkpoint_every": _COUNT,
    "seed": Rule("int", 0, nullable=True),
}
_SECTION_RULES = {"training": TRAINING_RULES, "env_runners": ENV_RUNNER_RULES, "stop": STOP_RULES}


def _check_rules(source: str, section: str, values: Mapping[str, Any], rules: dict) -> None:
    for key, value in values.items():
        if key not in rules:
            raise ConfigError(
                f"{source}: {section}.{key}: unknown key;{suggest(key, rules)} "
                f"allowed: {', '.join(rules)}"
            )
        problem = rules[key].problem(value)
        if problem:
            raise ConfigError(
                f"{source}: {section}.{key}: {value!r} {problem}; allowed: "
                f"{rules[key].allowed()}"
            )


# ----------------------------------------------------------------------------------- spec
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
    stop: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 10
    seed: int | None = 0

    def to_dict(self) -> dict[str, Any]:
        """The sections as an experiment file would hold them (an optional section that is
        off, such as a missing `evolution`, is left out)."""
        return {
            k: copy.deepcopy(getattr(self, k))
            for k in SECTIONS
            if not (k in _OPTIONAL_SECTIONS and getattr(self, k) is None)
        }


def _with_defaults(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    """`raw` over the base defaults; an empty section (`training:` with nothing under it,
    which YAML reads as null) counts as left out."""
    merged = {**copy.deepcopy(BASE_DEFAULTS), "name": name}
    merged.update({k: copy.deepcopy(v) for k, v in raw.items()
                   if not (k in _DICT_SECTIONS and v is None)})
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
    for key in _DICT_SECTIONS:
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(
                f"{source}: {key}: must be a mapping of keys to values, got "
                f"{type(raw[key]).__name__} {raw[key]!r}"
            )
    merged = _with_defaults(raw, name)
    for key, rule in TOP_RULES.items():
        problem = rule.problem(merged[key])
        if problem:
            raise ConfigError(
                f"{source}: {key}: {merged[key]!r} {problem}; allowed: {rule.allowed()}"
            )
    for section, rules in _SECTION_RULES.items():
        _check_rules(source, section, merged[section], rules)
    if not merged["stop"]:
        raise ConfigError(f"{source}: stop: give at least one of {', '.join(STOP_RULES)}")
    _check_settings(source, merged)
    check_env_config(source, merged["env"], merged["env_config"])
    spec = ExperimentSpec(**merged)
    _check_with_rllib(source, spec)
    return spec


def _check_settings(source: str, merged: dict[str, Any]) -> None:
    for section, keys in (("alma", ALMA_KEYS), ("mutual_info", MI_KEYS),
                          ("evolution", EvolutionSettings.keys())):
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
    from rllib_alma_mi.registry import base_env_creator

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
    from rllib_alma_mi.registry import base_env_creator, registered_envs

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


# ----------------------------------------------------------------------------------- overrides
def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} {text}: expected key=value, e.g. mutual_info.mi_weight=0.01")
    return key.strip(), value


def apply_set(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """A copy of `raw` with one `--set section.key=value` (or `key=value` for top-level keys)."""
    source = f"--set {assignment}"
    key, text = _split_assignment(assignment, "--set")
    value = parse_value(text)
    section, dot, sub = key.partition(".")
    if section not in SECTIONS:
        raise ConfigError(
            f"{source}: {section}: unknown section;{suggest(section, SECTIONS)} "
            f"allowed: {', '.join(SECTIONS)}"
        )
    out = copy.deepcopy(dict(raw))
    if dot:
        if section not in _DICT_SECTIONS:
            raise ConfigError(f"{source}: {section} is a single value; write --set {section}=...")
        out[section] = {**(out.get(section) or {}), sub: value}
    else:
        out[section] = value
    return out


# The settings RLlib multiplies against each other (runners x envs per runner x
# rollout_fragment_length must come within 10% of the train batch).
_SAMPLING_KEYS = frozenset({
    ("env_runners", "num_env_runners"),
    ("env_runners", "num_envs_per_env_runner"),
    ("training", "train_batch_size_per_learner"),
})
_FRAGMENT_KEY = ("env_runners", "rollout_fragment_length")


def _assigned_keys(assignment: str) -> set[tuple[str, str]]:
    """The (section, key) pairs one `--set` assignment writes."""
    key, _, text = assignment.partition("=")
    section, dot, sub = key.strip().partition(".")
    if dot:
        return {(section, sub)}
    value = parse_value(text)
    return {(section, k) for k in value} if isinstance(value, dict) else set()


def _fragment_fits(raw: Mapping[str, Any], name: str) -> bool:
    """Whether RLlib accepts `raw`'s fixed rollout_fragment_length with its batch settings
    (True as well when `raw` does not build: validation then reports what is wrong)."""
    try:
        config = build_config(ExperimentSpec(**_with_defaults(raw, name)))
    except Exception:  # noqa: BLE001 - validate() names the bad value
        return True
    try:
        config.validate_train_batch_size_vs_rollout_fragment_length()
    except ValueError:
        return False
    return True


def derive_fragment_length(
    raw: dict[str, Any], changed: set[tuple[str, str]], name: str = "experiment"
) -> dict[str, Any]:
    """`raw` with `env_runners.rollout_fragment_length: auto` when overrides (`changed`)
    alter the runner count, the envs per runner or the train batch, leave the fragment length
    alone, and the file's fixed fragment length no longer fits RLlib's batch check; else `raw`.

    RLlib's "auto" splits the train batch evenly over runners x envs per runner.
    """
    if _FRAGMENT_KEY in changed or not changed & _SAMPLING_KEYS:
        return raw
    if (raw.get("env_runners") or {}).get("rollout_fragment_length", "auto") == "auto":
        return raw
    if _fragment_fits(raw, name):
        return raw
    out = copy.deepcopy(dict(raw))
    out["env_runners"] = {**out["env_runners"], "rollout_fragment_length": "auto"}
    return out


def with_overrides(raw: dict[str, Any], sets: Iterable[str], name: str) -> dict[str, Any]:
    """`raw` with the `--set` assignments applied, then `derive_fragment_length`."""
    changed: set[tuple[str, str]] = set()
    for assignment in sets:
        raw = apply_set(raw, assignment)
        changed |= _assigned_keys(assignment)
    return derive_fragment_length(raw, changed, name)


def load_experiment(path: str | Path | None, sets: Iterable[str] = ()) -> ExperimentSpec:
    """The validated experiment of a file (None: the embedded default) plus `--set` overrides.

    The file is checked alone, then with all overrides applied (so their order does not
    matter; an override of the runner count, envs per runner or train batch may make the
    fragment length "auto", see `derive_fragment_length`). An error is blamed on the one
    `--set` that fails on the file by itself, or else on the file with its overrides
    together.
    """
    if path is None:
        raw, source, name = copy.deepcopy(DEFAULT_EXPERIMENT), "default config", "save_the_city"
    else:
        raw, source, name = load_yaml(path), str(path), Path(path).stem
    spec = validate(raw, source, name)
    sets = list(sets)
    if not sets:
        return spec
    final = with_overrides(raw, sets, name)
    try:
        return validate(final, f"{source} with --set {' --set '.join(sets)}", name)
    except ConfigError as together:
        for assignment in sets:
            validate(with_overrides(raw, [assignment], name), f"--set {assignment}", name)
        raise together


def resolve_grid_key(key: str, flag: str = "--grid") -> tuple[str, str]:
    """`mi_weight` or `mutual_info.mi_weight` → ("mutual_info", "mi_weight")."""
    if "." in key:
        section, _, sub = key.partition(".")
        if section not in GRID_SECTIONS:
            raise ConfigError(
                f"{flag} {key}: only keys of {', '.join(GRID_SECTIONS)} can be swept;"
                f"{suggest(section, GRID_SECTIONS)}"
            )
        return section, sub
    candidates = {
        "alma": ALMA_KEYS,
        "mutual_info": MI_KEYS,
        "training": tuple(TRAINING_RULES) + ("lambda",),
    }
    found = [s for s, keys in candidates.items() if key in keys]
    if len(found) == 1:
        return found[0], "lambda_" if key == "lambda" else key
    if key in EvolutionSettings.keys():
        raise ConfigError(f"{flag} {key}: write evolution.{key} (evolution keys take their "
                          "section, as sweeping one turns the population on)")
    every = [k for keys in candidates.values() for k in keys]
    raise ConfigError(
        f"{flag} {key}: unknown key;{suggest(key, every)} write section.key for env_config, "
        f"evolution and env_runners keys (e.g. env_config.sight_range); sweepable sections: "
        f"{', '.join(GRID_SECTIONS)}"
    )


def parse_grid(
    raw: dict[str, Any], grids: Iterable[str], name: str = "experiment"
) -> dict[tuple[str, str], list[Any]]:
    """`--grid key=v1,v2,...` → {(section, key): [values]}, each value validated on `raw`.

    When a value of the runner count, envs per runner or train batch needs a derived
    fragment length (`derive_fragment_length`), the grid also sets
    `env_runners.rollout_fragment_length` to ["auto"], for every trial alike.
    """
    out: dict[tuple[str, str], list[Any]] = {}
    derived = False
    for text in grids:
        key, values_text = _split_assignment(text, "--grid")
        section, sub = resolve_grid_key(key)
        values = [parse_value(v.strip()) for v in values_text.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--grid {text}: give at least one value, e.g. {key}=0.1,0.2")
        for value in values:
            assignment = f"{section}.{sub}={yaml.safe_dump(value).strip()}"
            point = with_overrides(raw, [assignment], name)
            derived |= point != apply_set(raw, assignment)
            validate(point, f"--grid {text} (value {value!r})", name)
        out[(section, sub)] = values
    if derived and _FRAGMENT_KEY not in out:
        out[_FRAGMENT_KEY] = ["auto"]
    return out


# ----------------------------------------------------------------------------------- building
def build_config(spec: ExperimentSpec):
    """The `AlmaPPOConfig` of an experiment (not yet validated by RLlib, so Tune can vary it)."""
    from rllib_alma_mi.algorithm import AlmaPPOConfig

    training = dict(spec.training)
    config = (
        AlmaPPOConfig()
        .environment(spec.env, env_config=dict(spec.env_config))
        .alma(**spec.alma)
        .mutual_info(**spec.mutual_info)
        .training(**training)
        .env_runners(**spec.env_runners)
        .debugging(seed=spec.seed)
    )
    if spec.evolution is not None:
        config.evolution(**spec.evolution)
    return config


def config_key(section: str, key: str) -> tuple[str, ...]:
    """Where a setting lives in `AlgorithmConfig.to_dict()` (the Tune param space)."""
    if section == "env_config":
        return ("env_config", key)
    if section == "evolution":
        return ("evolution_config", key)
    return ("lambda",) if key == "lambda_" else (key,)


def param_space(
    spec: ExperimentSpec,
    grid: Mapping[tuple[str, str], list[Any]] | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """The Tune param space: the config dict with `tune.grid_search` over grid keys and seeds."""
    from ray import tune

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


def setting_names() -> list[tuple[str, ...]]:
    """Config-dict paths that identify a configuration (used to group trials over seeds)."""
    names = [("env",)] + [(k,) for k in ALMA_KEYS + MI_KEYS]
    names += [config_key("training", k) for k in TRAINING_RULES]
    names += [config_key("evolution", k) for k in EvolutionSettings.keys()]
    names += [config_key("env_runners", k) for k in ENV_RUNNER_RULES]
    return names


# ----------------------------------------------------------------------------------- Tune
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
):
    """Tune's RunConfig: storage under `output` (its parent + name), CSV/JSON/TensorBoard
    logs, checkpoints every `checkpoint_every` iterations and at the end."""
    from ray.tune import CheckpointConfig, RunConfig
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

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
               checkpoint_every: int, callbacks: list[Any]):
    """A `ray.tune.Tuner` over the AlmaPPO trainable with the given param space."""
    from ray.tune import TuneConfig, Tuner

    from rllib_alma_mi.algorithm import AlmaPPO

    return Tuner(
        AlmaPPO,
        param_space=space,
        tune_config=TuneConfig(trial_dirname_creator=_trial_dirname),
        run_config=run_config(output, stop, checkpoint_every, callbacks),
    )


def restore_tuner(output: Path):
    """The Tuner of an interrupted run at `output`, continuing from each trial's checkpoint."""
    from ray.tune import Tuner

    from rllib_alma_mi.algorithm import AlmaPPO

    return Tuner.restore(str(output), trainable=AlmaPPO, resume_unfinished=True,
                         resume_errored=True)


def is_run_dir(path: Path) -> bool:
    """True when `path` holds a Tune experiment (one that `restore_tuner` can continue)."""
    return (path / "tuner.pkl").is_file()
