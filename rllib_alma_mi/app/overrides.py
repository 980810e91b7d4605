"""Command-line changes to an experiment: `--set section.key=value` and `--grid key=v1,v2`.

`load_experiment` is the entry point: an experiment file (or the embedded default) with its
`--set` overrides, validated; `parse_grid` turns `--grid` flags into the values a sweep varies.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from rllib_alma_mi.app.building import build_config
from rllib_alma_mi.app.experiment import DEFAULT_EXPERIMENT, ExperimentSpec, validate, with_defaults
from rllib_alma_mi.app.schema import (
    ALMA_KEYS,
    DICT_SECTIONS,
    GRID_SECTIONS,
    MI_KEYS,
    SECTIONS,
    TRAINING_CHECKS,
    ConfigError,
    check_loggers,
    suggest,
)
from rllib_alma_mi.app.yaml_io import load_yaml, parse_value
from rllib_alma_mi.settings import EvolutionSettings


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
        if section not in DICT_SECTIONS:
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
        config = build_config(ExperimentSpec(**with_defaults(raw, name)))
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


def add_loggers(spec: ExperimentSpec, names: Iterable[str]) -> ExperimentSpec:
    """`spec` with the trackers of `--logger NAME` flags added to its `loggers` (a tracker the
    file already lists is kept once); an unknown or repeated name is a ConfigError."""
    names = list(names)
    for i, name in enumerate(names):
        try:
            check_loggers("loggers", names[: i + 1])
        except ValueError as exc:
            shown = str(exc).replace(f"loggers[{i}]=", "", 1)
            raise ConfigError(f"--logger {name}: {shown}") from None
    merged = list(spec.loggers) + [n for n in names if n not in spec.loggers]
    return dataclasses.replace(spec, loggers=merged)


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
        "training": tuple(TRAINING_CHECKS) + ("lambda",),
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
