"""Results of run directories with the estimators of `statistics` (docs/evaluation_protocol.md).

Per configuration (the trials `plotting.group_trials` puts together) each seed gives one final
score per metric: the mean of its last `window` rows, evaluations when the runs have
evaluation data and training iterations otherwise (`plotting.select_source`). From these:
IQM and mean with 95% stratified bootstrap intervals (`summarize`), the probability that one
configuration's seed beats another's (`compare`), sample-efficiency curves and performance
profiles (`plot_iqm`), and the `marl-eval` records of the evaluations (`marl_eval_records`).
Scores are single-task: runs are the seeds, the task is the run's scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllib_alma_mi.app import statistics
from rllib_alma_mi.app.plotting import (
    FRACTIONS,
    METRICS,
    SUMMARY_METRICS,
    X_AXES,
    PlotError,
    Trial,
    curves_on_grid,
    find_trials,
    group_trials,
    label_axes,
    metric_trials,
    new_figure,
    resolve_column,
    save_figure,
    select_source,
)
from rllib_alma_mi.app.schema import suggest

REPS = 10_000
SEED = 0  # bootstrap seed: the same data give the same intervals


def default_window(source: str) -> int:
    """Rows averaged at the end of each seed: the last evaluation, or 10 iterations."""
    return 1 if source == "evaluation" else 10


def _scale(metric: str) -> float:
    return 100.0 if metric in FRACTIONS else 1.0


def final_scores(
    group: list[Trial], column: str | None, window: int, scale: float = 1.0
) -> np.ndarray:
    """(seeds,) each seed's mean of `column` over its last `window` rows (seeds without the
    column, or with no finite value, are left out)."""
    if column is None:
        return np.array([])
    values = []
    for trial in group:
        if column not in trial.table:
            continue
        tail = pd.to_numeric(trial.table[column], errors="coerce").dropna().tail(window)
        if len(tail):
            values.append(float(tail.mean()) * scale)
    return np.array(values)


def _columns(trials: list[Trial], metrics: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for metric in metrics:
        try:
            out[metric] = resolve_column(trials, metric, METRICS, "metric")[0]
        except PlotError:  # e.g. an environment without task metrics: reported as NaN
            out[metric] = None
    return out


def summarize(
    paths: list[str | Path],
    window: int | None = None,
    metrics: tuple[str, ...] = SUMMARY_METRICS,
    source: str = "auto",
    reps: int = REPS,
) -> pd.DataFrame:
    """IQM and mean over seeds with 95% stratified bootstrap intervals, one row per
    configuration: `config`, `seeds`, `env_steps`, `wall_clock_s`, and per metric
    `<metric>_iqm`, `<metric>_iqm_low`, `<metric>_iqm_high`, `<metric>_mean`, ... (fractions
    in percent; intervals NaN with one seed). `attrs` holds `source`, `note` and `window`."""
    trials, used, note = select_source(find_trials(paths), source)
    window = default_window(used) if window is None else window
    if window < 1:
        raise PlotError(f"window={window}: must be at least 1 row")
    x_col, _ = resolve_column(trials, "env_steps", X_AXES, "--x")
    columns = _columns(trials, metrics)
    rows = []
    for label, group in sorted(group_trials(trials).items()):
        row: dict[str, Any] = {"config": label, "seeds": len(group)}
        ends = [pd.to_numeric(t.table[x_col], errors="coerce").max() for t in group
                if x_col in t.table]
        row["env_steps"] = float(np.mean(ends)) if ends else float("nan")
        times = [pd.to_numeric(t.table["time_total_s"], errors="coerce").max() for t in group
                 if "time_total_s" in t.table]
        row["wall_clock_s"] = float(np.mean(times)) if times else float("nan")
        for metric, column in columns.items():
            scores = final_scores(group, column, window, _scale(metric))
            for name in ("iqm", "mean"):
                for part in ("", "_low", "_high"):
                    row[f"{metric}_{name}{part}"] = float("nan")
            if len(scores) == 0:
                continue
            row[f"{metric}_iqm"] = statistics.iqm(scores)
            row[f"{metric}_mean"] = float(scores.mean())
            if len(scores) < 2:
                continue
            found = statistics.interval_estimates(
                {label: scores}, ("iqm", "mean"), reps=reps, seed=SEED
            )[label]
            for name, interval in found.items():
                row[f"{metric}_{name}_low"] = interval.low
                row[f"{metric}_{name}_high"] = interval.high
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(source=used, note=note, window=window)
    return table


def compare(
    paths: list[str | Path],
    a: str,
    b: str,
    window: int | None = None,
    metrics: tuple[str, ...] = SUMMARY_METRICS,
    source: str = "auto",
    reps: int = REPS,
) -> tuple[dict[str, statistics.Interval | None], str]:
    """P(A > B) per metric: the probability that a seed of configuration `a` ends above a
    seed of `b` (ties count half), with its 95% bootstrap interval; None for a metric the
    runs do not log. `a` and `b` are labels as `group_trials` names the configurations.
    Returns the intervals and the note on the data source."""
    trials, used, note = select_source(find_trials(paths), source)
    window = default_window(used) if window is None else window
    groups = group_trials(trials)
    for label in (a, b):
        if label not in groups:
            raise PlotError(
                f"--compare {label!r}: no such configuration;{suggest(label, groups)} "
                f"configurations: {'; '.join(sorted(groups))}"
            )
    if a == b:
        raise PlotError("--compare: give two different configurations")
    out: dict[str, statistics.Interval | None] = {}
    for metric, column in _columns(trials, metrics).items():
        x = final_scores(groups[a], column, window)
        y = final_scores(groups[b], column, window)
        if len(x) == 0 or len(y) == 0:
            out[metric] = None
            continue
        if len(x) < 2 or len(y) < 2:
            raise PlotError(
                f"--compare: {a!r} has {len(x)} seed(s) and {b!r} {len(y)}; the probability "
                "of improvement needs at least 2 seeds of each"
            )
        out[metric] = statistics.probability_of_improvement(x, y, reps=reps, seed=SEED)
    return out, note


# ----------------------------------------------------------------------------------- figures
def plot_iqm(
    paths: list[str | Path],
    metric: str,
    out: str | Path,
    x: str = "env_steps",
    source: str = "auto",
    window: int | None = None,
    reps: int = 2_000,
) -> tuple[list[tuple[str, int, float]], list[Path], str]:
    """Sample-efficiency curves (IQM over seeds at each x, with 95% stratified bootstrap
    bands) into `out`, and the performance profile of the seeds' final scores (the fraction
    of seeds scoring above each threshold, with bands) into `<out stem>_profile<suffix>`.

    Returns one (label, seeds, last IQM) per configuration, the files written and the note on
    the data source. Bands need 2 seeds; a configuration with one seed is a line alone.
    """
    trials, used, note = metric_trials(paths, metric, source)
    window = default_window(used) if window is None else window
    y_col, y_label = resolve_column(trials, metric, METRICS, "metric")
    x_col, x_label = resolve_column(trials, x, X_AXES, "--x")
    groups = sorted(group_trials(trials).items())
    fig, ax = new_figure()
    summary, finals = [], {}
    for label, group in groups:
        grid, ys = curves_on_grid(group, x_col, y_col)
        if not len(ys):
            continue
        n = len(ys)
        shown = f"{label} (n={n} seed{'s' if n != 1 else ''})"
        if n > 1:
            band = statistics.sample_efficiency_curve(
                {label: ys[:, None, :]}, steps=grid, reps=reps, seed=0
            )[label]
            point = band.point
        else:
            point = ys[0]
        (line,) = ax.plot(grid, point, marker="o" if len(grid) < 12 else None, label=shown)
        if n > 1:
            ax.fill_between(grid, band.low, band.high, color=line.get_color(), alpha=0.2)
        summary.append((label, n, float(point[-1])))
        finals[shown] = final_scores(group, y_col, window)
    label_axes(ax, summary, metric, (x_col, x_label), (y_col, y_label),
               f"{metric}: IQM and 95% bootstrap band over seeds ({note})")
    written = [save_figure(fig, ax, out)]
    out = Path(out)
    profile = out.with_name(f"{out.stem}_profile{out.suffix}")
    written.append(_plot_profile(finals, metric, y_label, profile, reps, note))
    return summary, written, note


def _plot_profile(
    finals: dict[str, np.ndarray], metric: str, y_label: str, out: Path, reps: int, note: str
) -> Path:
    pooled = np.concatenate([v for v in finals.values() if len(v)])
    low, high = (0.0, 1.0) if metric in FRACTIONS else (pooled.min(), pooled.max())
    pad = 0.02 * (high - low or 1.0)
    taus = np.linspace(low - pad, high + pad, 201)
    fig, ax = new_figure()
    for shown, scores in finals.items():
        if len(scores) == 0:
            continue
        if len(scores) > 1:
            band = statistics.performance_profile({shown: scores}, taus, reps=reps, seed=0)[shown]
            (line,) = ax.step(taus, band.point, where="post", label=shown)
            ax.fill_between(taus, band.low, band.high, step="post", color=line.get_color(),
                            alpha=0.2)
        else:
            ax.step(taus, (scores[:, None] > taus).mean(axis=0), where="post", label=shown)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"threshold tau: final {y_label}")
    ax.set_ylabel("fraction of seeds scoring above tau")
    ax.set_title(f"{metric}: performance profile, 95% bootstrap bands ({note})", fontsize=9)
    return save_figure(fig, ax, out)


# ----------------------------------------------------------------------------------- marl-eval
MARL_EVAL_METRICS = {"return": "return", "solved": "solved", "tasks_completed": "tasks_completed"}


def marl_eval_records(
    paths: list[str | Path], source: str = "auto"
) -> tuple[list[dict[str, Any]], str]:
    """The records of `marl_eval.to_marl_eval` for the runs: environment = the env name,
    task = its scenario (or "default"), algorithm = the configuration's label (commas become
    semicolons, which marl-eval needs), run = "seed_<seed>", one step per evaluation with the
    env steps as `step_count`, and the last step again as `absolute_metrics`.

    Each metric is a one-element list, the evaluation's mean over its episodes (the runs log
    no per-episode values). Within an environment every run is cut to the fewest steps any
    run has, as marl-eval needs the same steps everywhere. Returns the records and a note.
    """
    trials, used, note = select_source(find_trials(paths), source)
    x_col, _ = resolve_column(trials, "env_steps", X_AXES, "--x")
    columns = {name: c for name, c in _columns(trials, tuple(MARL_EVAL_METRICS)).items() if c}
    if not columns:
        raise PlotError(f"the runs log none of {', '.join(MARL_EVAL_METRICS)}")
    per_env: dict[str, list[tuple[str, str, str, pd.DataFrame]]] = {}
    for label, group in sorted(group_trials(trials).items()):
        algorithm = label.replace(",", ";")
        runs: dict[str, int] = {}
        for trial in group:
            env = str(trial.params.get("env") or "env")
            task = str((trial.params.get("env_config") or {}).get("scenario") or "default")
            seed = trial.params.get("seed")
            run = f"seed_{seed}" if seed is not None else "seed_none"
            runs[run] = runs.get(run, 0) + 1
            if runs[run] > 1:
                run = f"{run}_{runs[run]}"
            table = trial.table[[x_col, *columns.values()]].apply(pd.to_numeric, errors="coerce")
            table = table.dropna().sort_values(x_col)
            if table.empty:
                raise PlotError(f"{trial.path}: no row with {x_col} and the metrics")
            per_env.setdefault(env, []).append((task, algorithm, run, table))
    records = []
    for env, runs_of_env in per_env.items():
        steps = min(len(table) for *_, table in runs_of_env)
        for task, algorithm, run, table in runs_of_env:
            table = table.head(steps)
            base = {"env": env, "task": task, "algorithm": algorithm, "run": run}
            for k, (_, row) in enumerate(table.iterrows()):
                metrics = {name: [float(row[c])] for name, c in columns.items()}
                records.append({**base, "step": k, "step_count": int(row[x_col]),
                                "metrics": metrics})
            records.append({**base, "step": "absolute_metrics", "step_count": None,
                            "metrics": {name: [float(table[c].iloc[-1])]
                                        for name, c in columns.items()}})
    return records, note
