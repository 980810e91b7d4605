"""Reading Tune runs: trials, their grouping by configuration, learning curves over seeds.

Each trial directory holds Tune's `progress.csv` and `result.json` (one row per training
iteration; column names are the nested result keys joined with "/") and `params.json` (the
trial's config). Trials are grouped by their configuration without the seed; curves of a group
are put on a common x grid by linear interpolation over the x range every seed covers.

Metrics come from the evaluation during training when every trial has it (`evaluation:` in the
experiment file: greedy episodes on fixed seeds, under `evaluation/env_runners/*`, one row per
evaluation) and otherwise from the training episodes (`env_runners/*`, one row per iteration);
`select_source` makes that choice and says which. `reports` builds the IQM and bootstrap
summaries on top of this module; `plot_runs(stat="t")` draws mean and 95% t-interval curves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from rllib_alma_mi.app.schema import setting_names, suggest
from rllib_alma_mi.settings import alma_defaults

# name → (candidate columns, axis label)
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "solved": (("env_runners/solved",), "solved rate (fraction of episodes)"),
    "return": (
        ("env_runners/team_return", "env_runners/episode_return_mean"),
        "team return per episode",
    ),
    "tasks_completed": (
        ("env_runners/tasks_completed_frac",),
        "tasks completed (fraction of tasks)",
    ),
    "tasks_burned": (("env_runners/tasks_burned_frac",), "tasks burned (fraction of tasks)"),
    "episode_len": (("env_runners/base_env_steps",), "episode length (env steps)"),
    "mi_value": (
        ("learners/allocator/mi_value", "learners/worker/mi_value"),
        "MI lower-bound estimate (nats)",
    ),
    "mi_loss": (("learners/allocator/mi_loss", "learners/worker/mi_loss"), "MI loss"),
    "imitation_loss": (("learners/allocator/imitation_loss",), "imitation loss (nats)"),
    "best_fitness": (("evolution/best_fitness",), "best EA member's team return"),
    "mean_fitness": (("evolution/mean_fitness",), "mean EA member's team return"),
    "rl_fitness": (("evolution/rl_fitness",), "RL allocator's team return (greedy)"),
    "rl_rank": (("evolution/rl_rank",), "RL allocator's rank in the population"),
    "ea_mi_value": (("evolution/ea_mi_value",), "MI estimate on the EA rollouts (nats)"),
    "iteration_time": (("time_this_iter_s",), "wall-clock time per iteration (s)"),
    "training_step_time": (
        ("timers/training_iteration",), "time per iteration without callbacks (s)"
    ),
}
FRACTIONS = ("solved", "tasks_completed", "tasks_burned")
X_AXES: dict[str, tuple[tuple[str, ...], str]] = {
    "env_steps": (("env_runners/num_base_env_steps_lifetime",), "environment steps"),
    "iterations": (("training_iteration",), "training iteration"),
    "time": (("time_total_s",), "wall-clock time (s)"),
    "sampled_steps": (
        ("env_runners/num_env_steps_sampled_lifetime",),
        "RLlib env steps (with allocation steps)",
    ),
}


class PlotError(ValueError):
    """No runs at a path, or a metric the runs do not have."""


@dataclass
class Trial:
    """One trial's results table and config."""

    path: Path
    table: pd.DataFrame
    params: dict[str, Any]


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def _read_table(trial_dir: Path) -> pd.DataFrame:
    """The trial's results, one row per iteration, nested keys joined with "/".

    Read from result.json (JSON lines) when present: Tune's progress.csv fixes its header at
    the first result and, after a resume, appends rows whose columns no longer match that
    header. progress.csv is the fallback.
    """
    result_json = trial_dir / "result.json"
    if result_json.is_file():
        lines = [line for line in result_json.read_text().splitlines() if line.strip()]
        if lines:
            return pd.DataFrame([_flatten(json.loads(line)) for line in lines])
    try:
        return pd.read_csv(trial_dir / "progress.csv")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def find_trials(paths: list[str | Path]) -> list[Trial]:
    """Every trial (a directory with progress.csv) in or under the given run directories."""
    trials = []
    for path in map(Path, paths):
        if not path.exists():
            raise PlotError(f"{path}: no such directory")
        found = [path / "progress.csv"] if (path / "progress.csv").is_file() else sorted(
            path.rglob("progress.csv")
        )
        if not found:
            raise PlotError(f"{path}: no progress.csv in it or below; is it a training run?")
        for csv in found:
            params_file = csv.parent / "params.json"
            params = json.loads(params_file.read_text()) if params_file.is_file() else {}
            trials.append(Trial(csv.parent, _read_table(csv.parent), params))
    return trials


SOURCES = ("auto", "evaluation", "training")
EVALUATION_PREFIX = "evaluation/"
# Episode metrics the evaluation reports under evaluation/env_runners/ (its step counters
# count evaluation episodes, so the x axes stay the training's).
_EVALUATED = ("solved", "tasks_completed_frac", "tasks_burned_frac", "team_return",
              "episode_return_mean", "base_env_steps", "episode_len_mean")


def evaluation_view(trial: Trial) -> Trial | None:
    """The trial's evaluation rows with `env_runners/<metric>` read from the evaluation, or
    None when it has no evaluation data.

    RLlib repeats the last evaluation's results in the iterations between evaluations, so
    the rows kept are those whose iteration is a multiple of `evaluation_interval`.
    """
    interval = trial.params.get("evaluation_interval")
    columns = {f"{EVALUATION_PREFIX}env_runners/{m}": f"env_runners/{m}" for m in _EVALUATED}
    present = [c for c in columns if c in trial.table]
    if not interval or not present or "training_iteration" not in trial.table:
        return None
    iteration = pd.to_numeric(trial.table["training_iteration"], errors="coerce")
    rows = trial.table[(iteration % int(interval) == 0)].dropna(subset=present, how="all")
    if rows.empty:
        return None
    table = rows.drop(columns=[c for c in rows if c.startswith(EVALUATION_PREFIX)])
    for column in present:
        table[columns[column]] = rows[column]
    return Trial(trial.path, table.reset_index(drop=True), trial.params)


def select_source(trials: list[Trial], source: str = "auto") -> tuple[list[Trial], str, str]:
    """(trials, "evaluation" or "training", a note for the reader).

    "auto" takes the evaluation rows when every trial has them, else the training rows;
    "evaluation" insists on evaluation data.
    """
    if source not in SOURCES:
        raise PlotError(f"source {source!r}: choose one of {', '.join(SOURCES)}")
    if source == "training":
        return trials, "training", "training episodes (as asked)"
    views = [evaluation_view(t) for t in trials]
    missing = [t.path.name for t, v in zip(trials, views, strict=True) if v is None]
    if not missing:
        return views, "evaluation", "evaluation episodes (greedy, fixed seeds)"
    if source == "evaluation":
        raise PlotError(
            f"{len(missing)} of {len(trials)} trials have no evaluation data (e.g. "
            f"{missing[0]}); train with an `evaluation:` section, or use --source training"
        )
    some = f"{len(missing)} of {len(trials)} trials have" if len(missing) < len(trials) else (
        "the runs have")
    return trials, "training", (
        f"training episodes: {some} no evaluation data (trained without an `evaluation:` "
        "section)"
    )


def resolve_column(trials: list[Trial], name: str, known: dict, kind: str) -> tuple[str, str]:
    """(column, axis label) of a metric or x-axis name, or of a raw column name."""
    columns = set().union(*(t.table.columns for t in trials))
    candidates, label = known.get(name, ((name,), name))
    for column in candidates:
        if column in columns:
            return column, label
    choices = list(known) + sorted(c for c in columns if "/" in c or c in ("training_iteration",))
    raise PlotError(
        f"{kind} {name!r}: not in these runs;{suggest(name, choices)} known names: "
        f"{', '.join(known)} (or a progress.csv column such as {candidates[0]!r})"
    )


def config_identity(params: dict[str, Any]) -> dict[str, str]:
    """The settings that define a configuration (everything but the seed), as text.

    The population's settings are named `evolution.<key>`, and `evolution` says whether it
    is on at all. An `AlmaPPOConfig` run recorded before an `.alma()` / `.mutual_info()` key
    existed counts as that key's default, so adding a setting does not split old runs from
    new ones.
    """
    flat = {"evolution": json.dumps("on" if params.get("evolution_config") else "off")}
    defaults = alma_defaults()
    alma_run = any(key in params for key in defaults)
    for path in setting_names():
        value: Any = params
        if alma_run and path[0] in defaults and path[0] not in params:
            value = {path[0]: defaults[path[0]]}
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if path[0] == "evolution_config":
            flat[f"evolution.{path[-1]}"] = json.dumps(value)
        else:
            flat[path[-1] if path != ("lambda",) else "lambda_"] = json.dumps(value)
    for key, value in (params.get("env_config") or {}).items():
        if not key.startswith("_") and value is not None:  # None: the env's default
            flat[key] = json.dumps(value)
    return flat


def group_trials(trials: list[Trial]) -> dict[str, list[Trial]]:
    """Label → trials of one configuration. Labels name the settings that differ."""
    identities = [config_identity(t.params) for t in trials]
    keys = sorted(set().union(*identities))
    varying = [k for k in keys if len({ident.get(k) for ident in identities}) > 1]
    if "evolution" in varying:
        # With the population on in some runs only, its settings differ merely by being
        # absent elsewhere: name them only when they also differ between runs that have it.
        varying = [
            k for k in varying if not k.startswith("evolution.")
            or len({ident[k] for ident in identities if k in ident}) > 1
        ]
    groups: dict[str, list[Trial]] = {}
    for trial, ident in zip(trials, identities, strict=True):
        if varying:
            label = ", ".join(f"{k}={_short(ident.get(k))}" for k in varying)
        else:
            label = trial.params.get("env", "") or trial.path.parent.name
        groups.setdefault(label, []).append(trial)
    return groups


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    value = json.loads(text)
    return f"{value:g}" if isinstance(value, float) else str(value)


def t_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% Student-t interval over axis 0 (seeds) of (S, X)."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, np.zeros_like(mean)
    sem = values.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, stats.t.ppf(0.975, n - 1) * sem


def curves_on_grid(
    trials: list[Trial], x_col: str, y_col: str, points: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(x (X,), y (S, X)): each trial's curve interpolated onto one x grid (the x range every
    seed covers; the seeds' own x when they all share it). Empty arrays without data."""
    curves = []
    for trial in trials:
        if x_col not in trial.table or y_col not in trial.table:
            continue
        data = trial.table[[x_col, y_col]].apply(pd.to_numeric, errors="coerce").dropna()
        data = data.sort_values(x_col).drop_duplicates(x_col, keep="last")
        if len(data):
            curves.append((data[x_col].to_numpy(float), data[y_col].to_numpy(float)))
    if not curves:
        return np.array([]), np.empty((0, 0))
    xs = [c[0] for c in curves]
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        grid = xs[0]
    else:
        lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
        if hi < lo:  # the seeds share no x range: keep the longest curve only
            grid = max(xs, key=len)
            curves = [max(curves, key=lambda c: len(c[0]))]
        else:
            grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


def aggregate(
    trials: list[Trial], x_col: str, y_col: str, points: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(x (X,), mean (X,), half-width (X,), seeds used) of one configuration's curves."""
    grid, ys = curves_on_grid(trials, x_col, y_col, points)
    if not len(ys):
        return np.array([]), np.array([]), np.array([]), 0
    mean, half = t_interval(ys)
    return grid, mean, half, len(ys)


# Metrics of episodes, which the evaluation reports too; the others are training-only.
EPISODE_METRICS = ("solved", "return", "tasks_completed", "tasks_burned", "episode_len")


def metric_trials(
    paths: list[str | Path], metric: str, source: str = "auto"
) -> tuple[list[Trial], str, str]:
    """The trials to read `metric` from, with the source and its note (`select_source`;
    training-only metrics such as mi_value always read the training rows)."""
    trials = find_trials(paths)
    if metric not in EPISODE_METRICS:
        return trials, "training", "training iterations"
    return select_source(trials, source)


def new_figure() -> tuple[Figure, Any]:
    """A figure and its axes, drawn without pyplot (no GUI backend, nothing global)."""
    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    return fig, fig.subplots()


def save_figure(fig: Figure, ax: Any, out: str | Path, legend: bool = True) -> Path:
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def plot_runs(
    paths: list[str | Path],
    metric: str,
    out: str | Path,
    x: str = "env_steps",
    source: str = "auto",
) -> tuple[list[tuple[str, int, float]], str]:
    """Draw mean and 95% t-interval learning curves of the runs into `out` (PNG/PDF/SVG).

    Returns one (label, seeds, last mean value) per configuration, and the note on where the
    values come from (`select_source`).
    """
    trials, _, note = metric_trials(paths, metric, source)
    y_col, y_label = resolve_column(trials, metric, METRICS, "metric")
    x_col, x_label = resolve_column(trials, x, X_AXES, "--x")
    fig, ax = new_figure()
    summary = []
    for label, group in sorted(group_trials(trials).items()):
        grid, mean, half, n = aggregate(group, x_col, y_col)
        if n == 0:
            continue
        shown = f"{label} (n={n} seed{'s' if n != 1 else ''})"
        (line,) = ax.plot(grid, mean, marker="o" if len(grid) < 12 else None, label=shown)
        if n > 1:
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
        summary.append((label, n, float(mean[-1])))
    label_axes(ax, summary, metric, (x_col, x_label), (y_col, y_label),
               f"{metric}: mean and 95% t-interval over seeds ({note})")
    save_figure(fig, ax, out)
    return summary, note


def label_axes(
    ax: Any,
    summary: list,
    metric: str,
    x: tuple[str, str],
    y: tuple[str, str],
    title: str,
) -> None:
    """Axis labels, limits and title of a learning-curve plot; a PlotError when no trial had
    data to draw (`summary` empty). x, y: (column, label)."""
    if not summary:
        raise PlotError(f"no trial has both {x[0]!r} and {y[0]!r} values")
    if metric in FRACTIONS:
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(x[1])
    ax.set_ylabel(y[1])
    ax.set_title(title, fontsize=9)


SUMMARY_METRICS = ("tasks_completed", "solved", "return")


def summarize_runs(
    paths: list[str | Path],
    window: int = 10,
    metrics: tuple[str, ...] = SUMMARY_METRICS,
    source: str = "auto",
) -> pd.DataFrame:
    """Final performance per configuration, one row each: mean and 95% t-interval.

    Each seed's value is the mean of its last `window` rows (iterations, or evaluations with
    the evaluation source, see `select_source`); a row holds the number of seeds, their mean
    env steps and wall-clock seconds at the end, and per metric the mean over seeds and the
    half-width of the 95% t-interval (`<metric>` and `<metric>_ci95`). Fractions are in
    percent. `attrs["source"]` and `attrs["note"]` say where the values come from.
    """
    if window < 1:
        raise PlotError(f"window={window}: must be at least 1 row")
    trials, used, note = select_source(find_trials(paths), source)
    x_col, _ = resolve_column(trials, "env_steps", X_AXES, "--x")
    columns = {}
    for metric in metrics:
        try:
            columns[metric] = resolve_column(trials, metric, METRICS, "metric")[0]
        except PlotError:  # e.g. an environment without task metrics: reported as NaN
            columns[metric] = None
    rows = []
    for label, group in sorted(group_trials(trials).items()):
        tails = [t.table.apply(pd.to_numeric, errors="coerce").tail(window) for t in group]
        row: dict[str, Any] = {"config": label, "seeds": len(group)}
        row["env_steps"] = float(np.mean([tail[x_col].max() for tail in tails]))
        times = [tail["time_total_s"].max() for tail in tails if "time_total_s" in tail]
        row["wall_clock_s"] = float(np.mean(times)) if times else float("nan")
        for metric, column in columns.items():
            values = np.array([[tail[column].mean()] for tail in tails if column in tail])
            values = values[np.isfinite(values[:, 0])] if len(values) else values
            scale = 100.0 if metric in FRACTIONS else 1.0
            if len(values) == 0:  # also when column is None (not in tails)
                row[metric], row[f"{metric}_ci95"] = float("nan"), float("nan")
                continue
            mean, half = t_interval(values * scale)
            row[metric], row[f"{metric}_ci95"] = float(mean[0]), float(half[0])
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(source=used, note=note)
    return table


def _evaluations_of(trial: Path) -> list[Path]:
    """The `evaluate --json` and `probe --json` files in the trial's directory or its run's:
    JSON objects whose `checkpoint` lies inside the trial."""
    found = []
    for path in sorted({*trial.parent.glob("*.json"), *trial.glob("*.json")}):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        checkpoint = data.get("checkpoint") if isinstance(data, dict) else None
        if isinstance(checkpoint, str) and ("mode" in data or "r2_representation" in data) and (
            Path(checkpoint).resolve().is_relative_to(trial.resolve())
        ):
            found.append(path)
    return found


def export_curves(paths: list[str | Path], out: str | Path) -> list[Path]:
    """Copy each trial's config, learning curves and evaluations (no checkpoints) under `out`.

    Writes `out/<trial dir name>/params.json`, a `progress.csv` holding the iteration, the
    x axes and the metrics `plot` and `summarize` know (with the evaluation's), so both
    commands work on the copy, and every `evaluate --json` or `probe --json` file of the
    trial's checkpoints found in the trial's or its run's directory (e.g. `eval.json`), under
    its own name.
    Returns the trial directories written.
    """
    keep = {"training_iteration"}
    for candidates, _ in (*METRICS.values(), *X_AXES.values()):
        keep.update(candidates)
    keep.update(f"{EVALUATION_PREFIX}env_runners/{m}" for m in _EVALUATED)
    out = Path(out)
    written = []
    for trial in find_trials(paths):
        target = out / trial.path.name
        if target.exists() and target.resolve() == trial.path.resolve():
            raise PlotError(f"{target}: exporting a trial onto itself; pick another directory")
        target.mkdir(parents=True, exist_ok=True)
        (target / "params.json").write_text(json.dumps(trial.params, indent=1, default=str))
        columns = [c for c in trial.table.columns if c in keep]
        trial.table[columns].to_csv(target / "progress.csv", index=False, float_format="%.6g")
        for evaluation in _evaluations_of(trial.path):
            (target / evaluation.name).write_text(evaluation.read_text())
        written.append(target)
    return written
