"""Command-line changes to an experiment: `--set section.key=value` and `--grid key=v1,v2`.

`load_experiment` is the entry point: an experiment file (or the embedded default) with its
`--set` overrides, validated; `parse_grid` turns `--grid` flags into the values a sweep varies.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from rllib_alma_mi.app.experiment import DEFAULT_EXPERIMENT, ExperimentSpec, validate
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


def load_experiment(path: str | Path | None, sets: Iterable[str] = ()) -> ExperimentSpec:
    """The validated experiment of a file (None: the embedded default) plus `--set` overrides.

    The file is checked alone, then with all overrides applied (so their order does not
    matter). An error is blamed on the one `--set` that fails on the file by itself, or else
    on the file with its overrides together.
    """
    if path is None:
        raw, source, name = copy.deepcopy(DEFAULT_EXPERIMENT), "default config", "save_the_city"
    else:
        raw, source, name = load_yaml(path), str(path), Path(path).stem
    spec = validate(raw, source, name)
    sets = list(sets)
    if not sets:
        return spec
    final = raw
    for assignment in sets:
        final = apply_set(final, assignment)
    try:
        return validate(final, f"{source} with --set {' --set '.join(sets)}", name)
    except ConfigError as together:
        for assignment in sets:
            validate(apply_set(raw, assignment), f"--set {assignment}", name)
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
    """`--grid key=v1,v2,...` → {(section, key): [values]}, each value validated on `raw`."""
    out: dict[tuple[str, str], list[Any]] = {}
    for text in grids:
        key, values_text = _split_assignment(text, "--grid")
        section, sub = resolve_grid_key(key)
        values = [parse_value(v.strip()) for v in values_text.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--grid {text}: give at least one value, e.g. {key}=0.1,0.2")
        for value in values:
            validate(apply_set(raw, f"{section}.{sub}={yaml.safe_dump(value).strip()}"),
                     f"--grid {text} (value {value!r})", name)
        out[(section, sub)] = values
    return out
