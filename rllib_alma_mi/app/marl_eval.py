"""Results in the JSON layout that `marl-eval` (Gorsane et al., NeurIPS 2022) reads.

The layout, as in the `marl-eval` README and its `data_process_pipeline` /
`create_matrices_for_rliable`::

    {environment: {task: {algorithm: {run: {
        "step_0": {"step_count": int, metric: [value per evaluation episode], ...},
        ...
        "step_k": {...},
        "absolute_metrics": {metric: [value per episode], ...},
    }}}}}

Every run ends with ``absolute_metrics`` (the final evaluation of the best policy, with ten
times the episodes in the protocol). `marl-eval` lower-cases every key and stacks arrays, so
within an environment all tasks need the same algorithms, all (task, algorithm) pairs the same
number of runs, all runs the same step keys, and every step and ``absolute_metrics`` the same
metrics (the rules of `marl-eval`'s `DiagnoseData.check_data`); algorithm names must not
contain commas. `validate_layout` checks all of that, that metric values are non-empty lists of
finite numbers, and that ``step_count`` increases from step to step.

A record, the flat form `to_marl_eval` writes and `records_from_layout` returns, is a dict::

    {"env": str, "task": str, "algorithm": str, "run": str,
     "step": int >= 0 or "absolute_metrics",
     "step_count": int >= 0 (None for "absolute_metrics"),
     "metrics": {name: [float, ...]}}

one per logged evaluation; ``step`` k becomes the key ``step_k``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ABSOLUTE = "absolute_metrics"
STEP_COUNT = "step_count"
RECORD_KEYS = ("env", "task", "algorithm", "run", "step", "step_count", "metrics")
_STEP_KEY = re.compile(r"step_(\d+)")

Layout = dict[str, dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]]]


# ------------------------------------------------------------------------------- checks
def _name(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string; got {value!r}")
    return value


def _count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be a non-negative integer; got {value!r}")
    return value


def _values(where: str, value: object) -> list[float]:
    if not isinstance(value, list | tuple | np.ndarray) or len(value) == 0:
        raise ValueError(
            f"{where} must be a non-empty list of numbers (one per evaluation episode, or one "
            f"aggregate); got {value!r:.80}"
        )
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError(f"{where}[{i}] must be a number; got {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"{where}[{i}] is {v}; JSON and marl-eval need finite values")
        out.append(float(v))
    return out


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{where} must be a non-empty object; got {value!r:.80}")
    folded: dict[str, str] = {}
    for key in value:
        _name(f"a key of {where}", key)
        if key.lower() in folded:
            raise ValueError(
                f"{where} has keys {folded[key.lower()]!r} and {key!r}, equal once lower-cased "
                "(marl-eval lower-cases every key); rename one"
            )
        folded[key.lower()] = key
    return value


def _step_index(where: str, key: str) -> int:
    match = _STEP_KEY.fullmatch(key)
    if match is None:
        raise ValueError(
            f"{where}: unexpected key {key!r}; a run holds only 'step_<k>' entries and {ABSOLUTE!r}"
        )
    return int(match.group(1))


def _check_run(where: str, run: object) -> tuple[list[str], set[str]]:
    """Validate one run; return its step keys (in order) and its metric names."""
    run = _mapping(where, run)
    if ABSOLUTE not in run:
        raise ValueError(f"{where} has no {ABSOLUTE!r}; marl-eval needs one per run")
    steps = [k for k in run if k != ABSOLUTE]
    if not steps:
        raise ValueError(f"{where} has no 'step_<k>' entry; log at least one evaluation step")
    metric_sets = []
    previous = -1
    for key in steps:
        _step_index(where, key)
        entry = _mapping(f"{where}[{key!r}]", run[key])
        if STEP_COUNT not in entry:
            raise ValueError(f"{where}[{key!r}] has no {STEP_COUNT!r}")
        count = _count(f"{where}[{key!r}][{STEP_COUNT!r}]", entry[STEP_COUNT])
        if count <= previous:
            raise ValueError(
                f"{where}[{key!r}]: step_count {count} does not increase on the previous step's "
                f"{previous}; order the steps by training progress"
            )
        previous = count
        metrics = {m: v for m, v in entry.items() if m != STEP_COUNT}
        if not metrics:
            raise ValueError(f"{where}[{key!r}] has a step_count but no metric")
        for metric, values in metrics.items():
            _values(f"{where}[{key!r}][{metric!r}]", values)
        metric_sets.append((key, set(metrics)))
    absolute = _mapping(f"{where}[{ABSOLUTE!r}]", run[ABSOLUTE])
    if STEP_COUNT in absolute:
        raise ValueError(f"{where}[{ABSOLUTE!r}] holds metrics only; drop its {STEP_COUNT!r}")
    for metric, values in absolute.items():
        _values(f"{where}[{ABSOLUTE!r}][{metric!r}]", values)
    metric_sets.append((ABSOLUTE, set(absolute)))
    names = metric_sets[0][1]
    for key, other in metric_sets[1:]:
        if other != names:
            raise ValueError(
                f"{where}[{key!r}] logs metrics {sorted(other)} but {metric_sets[0][0]!r} logs "
                f"{sorted(names)}; every step and {ABSOLUTE!r} need the same metrics"
            )
    return steps, names


def validate_layout(data: object) -> Layout:
    """Check that ``data`` is a complete `marl-eval` layout (see the module docstring) and
    return it; raise ValueError naming the first offending path and the fix."""
    data = _mapping("data", data)
    for env, tasks in data.items():
        tasks = _mapping(f"data[{env!r}]", tasks)
        reference: dict[str, Any] = {}
        for task, algorithms in tasks.items():
            where_task = f"data[{env!r}][{task!r}]"
            algorithms = _mapping(where_task, algorithms)
            for algorithm, runs in algorithms.items():
                if "," in algorithm:
                    raise ValueError(
                        f"{where_task}: algorithm name {algorithm!r} contains a comma, which "
                        "marl-eval's probability-of-improvement plots cannot parse; rename it"
                    )
                where = f"{where_task}[{algorithm!r}]"
                runs = _mapping(where, runs)
                for run_name, run in runs.items():
                    steps, metrics = _check_run(f"{where}[{run_name!r}]", run)
                    shape = {
                        "algorithms": sorted(algorithms),
                        "runs": len(runs),
                        "steps": steps,
                        "metrics": sorted(metrics),
                    }
                    if not reference:
                        reference = {"where": f"{where}[{run_name!r}]", **shape}
                    for field, value in shape.items():
                        if value != reference[field]:
                            raise ValueError(
                                f"{where}[{run_name!r}]: {field} {value} differ from "
                                f"{reference[field]} at {reference['where']}; within an "
                                "environment marl-eval needs the same algorithms per task, "
                                "runs per algorithm, step keys and metrics"
                            )
    return data  # type: ignore[return-value]


# ------------------------------------------------------------------------ records <-> layout
def _check_record(i: int, record: object) -> dict[str, Any]:
    where = f"records[{i}]"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a dict with keys {RECORD_KEYS}; got {record!r:.80}")
    keys = set(record)
    if keys != set(RECORD_KEYS):
        missing, unknown = sorted(set(RECORD_KEYS) - keys), sorted(keys - set(RECORD_KEYS))
        raise ValueError(
            f"{where}: keys must be exactly {list(RECORD_KEYS)} (missing {missing}, "
            f"unknown {unknown})"
        )
    for field in ("env", "task", "algorithm", "run"):
        _name(f"{where}['{field}']", record[field])
    step, count = record["step"], record["step_count"]
    if step == ABSOLUTE:
        if count is not None:
            raise ValueError(
                f"{where}: an {ABSOLUTE!r} record takes step_count None; got {count!r}"
            )
    else:
        _count(f"{where}['step'] (or {ABSOLUTE!r})", step)
        _count(f"{where}['step_count']", count)
    metrics = record["metrics"]
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"{where}['metrics'] must be a non-empty dict of name to values")
    for name, values in metrics.items():
        _name(f"a metric name of {where}", name)
        if name == STEP_COUNT:
            raise ValueError(f"{where}['metrics']: {STEP_COUNT!r} is reserved for the step count")
        _values(f"{where}['metrics'][{name!r}]", values)
    return dict(record)


def layout_from_records(records: Iterable[Mapping[str, Any]]) -> Layout:
    """The `marl-eval` layout of ``records`` (see the module docstring), validated. Steps of
    a run are ordered by ``step``, with ``absolute_metrics`` last."""
    checked = [_check_record(i, r) for i, r in enumerate(records)]
    if not checked:
        raise ValueError("records is empty; give at least one evaluation record per run")
    runs: dict[tuple[str, str, str, str], dict[Any, dict[str, Any]]] = {}
    for i, r in enumerate(checked):
        run = runs.setdefault((r["env"], r["task"], r["algorithm"], r["run"]), {})
        if r["step"] in run:
            raise ValueError(
                f"records[{i}] repeats step {r['step']!r} of run {r['run']!r} "
                f"({r['env']}/{r['task']}/{r['algorithm']}); log each step once"
            )
        entry = {} if r["step"] == ABSOLUTE else {STEP_COUNT: r["step_count"]}
        entry.update({m: _values("", v) for m, v in r["metrics"].items()})
        run[r["step"]] = entry
    data: Layout = {}
    for (env, task, algorithm, run_name), entries in runs.items():
        steps = sorted(k for k in entries if k != ABSOLUTE)
        ordered = {f"step_{k}": entries[k] for k in steps}
        if ABSOLUTE in entries:
            ordered[ABSOLUTE] = entries[ABSOLUTE]
        data.setdefault(env, {}).setdefault(task, {}).setdefault(algorithm, {})[run_name] = ordered
    return validate_layout(data)


def records_from_layout(data: object) -> list[dict[str, Any]]:
    """The records of a validated layout, in layout order (inverse of `layout_from_records`)."""
    out = []
    for env, tasks in validate_layout(data).items():
        for task, algorithms in tasks.items():
            for algorithm, runs in algorithms.items():
                for run_name, run in runs.items():
                    for key, entry in run.items():
                        absolute = key == ABSOLUTE
                        out.append(
                            {
                                "env": env,
                                "task": task,
                                "algorithm": algorithm,
                                "run": run_name,
                                "step": ABSOLUTE if absolute else _step_index("", key),
                                "step_count": None if absolute else entry[STEP_COUNT],
                                "metrics": {m: v for m, v in entry.items() if m != STEP_COUNT},
                            }
                        )
    return out


# ---------------------------------------------------------------------------------- files
def to_marl_eval(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``records`` as a `marl-eval` JSON file at ``path`` (replaced atomically); return
    the path."""
    data = layout_from_records(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_marl_eval(path: str | Path) -> Layout:
    """Read a `marl-eval` JSON file and return its validated layout."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    try:
        return validate_layout(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


# --------------------------------------------------------------------------------- scores
def absolute_scores(data: Layout, environment: str, metric: str) -> dict[str, np.ndarray]:
    """``{algorithm: (runs, tasks)}`` of ``metric``'s mean over the episodes in
    ``absolute_metrics``, runs and tasks in layout order, as `marl-eval`'s
    `create_matrices_for_rliable` builds them; input for `statistics.interval_estimates`."""
    return {a: s[..., -1] for a, s in _scores(data, environment, metric, absolute=True).items()}


def step_scores(data: Layout, environment: str, metric: str) -> dict[str, np.ndarray]:
    """``{algorithm: (runs, tasks, steps)}`` of ``metric``'s per-step episode mean, for
    `statistics.sample_efficiency_curve`."""
    return _scores(data, environment, metric, absolute=False)


def step_counts(data: Layout, environment: str) -> np.ndarray:
    """``(steps,)`` env step counts of the first run of ``environment`` (the x of a curve)."""
    run = _first_run(validate_layout(data), environment)
    return np.array([entry[STEP_COUNT] for key, entry in run.items() if key != ABSOLUTE])


def _first_run(data: Layout, environment: str) -> dict[str, Any]:
    if environment not in data:
        raise ValueError(f"environment {environment!r} not in the data; have {sorted(data)}")
    task = next(iter(data[environment].values()))
    return next(iter(next(iter(task.values())).values()))


def _scores(data: Layout, environment: str, metric: str, absolute: bool) -> dict[str, np.ndarray]:
    data = validate_layout(data)
    run = _first_run(data, environment)
    if metric not in run[ABSOLUTE]:
        raise ValueError(f"metric {metric!r} not logged; have {sorted(run[ABSOLUTE])}")
    tasks = data[environment]
    algorithms = next(iter(tasks.values()))
    out = {}
    for algorithm in algorithms:
        per_task = []
        for task in tasks.values():
            runs = task[algorithm]
            keys = (
                [ABSOLUTE] if absolute else [k for k in next(iter(runs.values())) if k != ABSOLUTE]
            )
            per_task.append([[np.mean(r[k][metric]) for k in keys] for r in runs.values()])
        out[algorithm] = np.array(per_task).transpose(1, 0, 2)  # (runs, tasks, steps)
    return out
