"""Aggregate results over runs and tasks: IQM, stratified bootstrap intervals, probability of
improvement, performance profiles and sample-efficiency curves.

The estimators are those of Agarwal et al., "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (NeurIPS 2021; the `rliable` library), which Gorsane et al. (NeurIPS 2022,
`marl-eval`) adopt for cooperative MARL. They are written here over `scipy.stats.bootstrap`
because `rliable` 1.2 requires `arch<8`, which does not import under pandas 3.

Scores are arranged as in `rliable`: a matrix of shape ``(runs, tasks)`` whose entry ``[r, t]``
is one number for independent run ``r`` (a seed) on task ``t``, for instance the mean return over
that run's evaluation episodes (min-max normalised per task when tasks differ in scale, see
`min_max_normalise`). A 1-D array of shape ``(runs,)`` is a single task. Sample-efficiency curves
take ``(runs, tasks, steps)``.

The bootstrap is stratified over tasks: each replicate resamples runs with replacement within
every task, so each task keeps its number of runs, and the task set is held fixed. Intervals
are bootstrap percentile intervals, as `rliable` computes them by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

STATISTICS = ("iqm", "mean", "median", "optimality_gap")
MIN_REPS = 100
# Bootstrap replicates evaluated at once; bounds memory at about batch * runs * tasks values.
_BATCH = 1000

Seed = int | np.random.Generator | None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` (e.g. the null: 0.5 for a probability of improvement) lies inside."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Band:
    """A curve with a pointwise confidence band: ``point``, ``low`` and ``high`` have the
    shape of ``x`` (thresholds of a performance profile, or steps of a sample-efficiency
    curve)."""

    x: np.ndarray
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray


# ------------------------------------------------------------------------------ validation
def _as_array(name: str, value: object, ndims: tuple[int, ...]) -> np.ndarray:
    """``value`` as a float array of one of ``ndims`` dimensions, non-empty and finite."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers: {error}") from None
    if array.ndim not in ndims:
        shapes = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {shapes}; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); it needs at least one score")
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first {array[first]} at index "
            f"{first}); drop or re-run the failed runs before aggregating"
        )
    return array


def _as_scores(name: str, value: object) -> np.ndarray:
    """Scores as a ``(runs, tasks)`` matrix (a 1-D array is one task)."""
    array = _as_array(name, value, (1, 2))
    return array[:, None] if array.ndim == 1 else array


def _as_runs_tasks(
    label: str, value: object, min_runs: int, ndims: tuple[int, ...] = (1, 2)
) -> np.ndarray:
    """Validated scores with runs on axis 0 and tasks on axis 1 (a 1-D array is one task)."""
    array = _as_array(label, value, ndims)
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] < min_runs:
        raise ValueError(
            f"{label} has {array.shape[0]} run(s); a bootstrap interval needs at least "
            f"{min_runs} independent runs (seeds) per task"
        )
    return array


def _as_score_dict(
    name: str, scores_by_config: object, min_runs: int, ndims: tuple[int, ...] = (1, 2)
) -> dict[str, np.ndarray]:
    """Validated ``{config: scores}`` with one task count across configs."""
    if not isinstance(scores_by_config, Mapping) or not scores_by_config:
        raise ValueError(
            f"{name} must be a non-empty mapping of configuration name to scores; "
            f"got {scores_by_config!r:.80}"
        )
    out = {
        str(key): _as_runs_tasks(f"{name}[{key!r}]", value, min_runs, ndims)
        for key, value in scores_by_config.items()
    }
    tasks = {key: a.shape[1] for key, a in out.items()}
    if len(set(tasks.values())) > 1:
        raise ValueError(
            f"{name}: every configuration must be scored on the same tasks; tasks per "
            f"configuration: {tasks}"
        )
    return out


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if isinstance(reps, bool) or not isinstance(reps, int | np.integer) or reps < MIN_REPS:
        raise ValueError(f"reps must be an integer >= {MIN_REPS}; got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")


def _check_statistics(statistic: str | Sequence[str]) -> tuple[str, ...]:
    names = (statistic,) if isinstance(statistic, str) else tuple(statistic)
    if not names:
        raise ValueError(f"statistic must name at least one of {STATISTICS}")
    unknown = [n for n in names if n not in STATISTICS]
    if unknown:
        raise ValueError(f"statistic: unknown {unknown}; choose from {STATISTICS}")
    return names


# -------------------------------------------------------------------------------- estimators
# Each takes scores of shape (..., runs, tasks) and reduces the last two axes.
def _iqm(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(*x.shape[:-2], -1)
    return stats.trim_mean(flat, 0.25, axis=-1)


def _mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=-2).mean(axis=-1)


def _median(x: np.ndarray) -> np.ndarray:
    return np.median(x.mean(axis=-2), axis=-1)


def _optimality_gap(x: np.ndarray, gamma: float) -> np.ndarray:
    return gamma - np.minimum(x, gamma).mean(axis=(-2, -1))


def _estimator(name: str, gamma: float) -> Callable[[np.ndarray], np.ndarray]:
    if name == "optimality_gap":
        return lambda x: _optimality_gap(x, gamma)
    return {"iqm": _iqm, "mean": _mean, "median": _median}[name]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of ``scores`` (``(runs,)`` or ``(runs, tasks)``): the mean of the
    middle 50% of all run-task scores pooled, ``scipy.stats.trim_mean(scores, 0.25,
    axis=None)``, as `rliable`'s ``aggregate_iqm``. With 1..8 it is the mean of 3..6, 4.5."""
    return float(_iqm(_as_scores("scores", scores)))


def min_max_normalise(scores_by_config: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scores rescaled per task to [0, 1] by that task's minimum and maximum over every
    configuration and run, as `marl-eval` normalises returns. Shapes are kept (``(runs,)``,
    ``(runs, tasks)`` or ``(runs, tasks, steps)``; the range is taken over runs and steps)."""
    data = _as_score_dict("scores_by_config", scores_by_config, 1, ndims=(1, 2, 3))
    pooled = np.concatenate(
        [np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) for a in data.values()], axis=1
    )
    low, high = pooled.min(axis=1), pooled.max(axis=1)
    flat = np.flatnonzero(high == low)
    if flat.size:
        raise ValueError(
            f"scores_by_config: task(s) {flat.tolist()} have one value across all "
            "configurations and runs, so min-max normalisation is undefined; drop them"
        )
    out = {}
    for key, array in data.items():
        shape = (1, -1) + (1,) * (array.ndim - 2)
        normed = (array - low.reshape(shape)) / (high - low).reshape(shape)
        out[key] = normed.reshape(np.shape(scores_by_config[key]))
    return out


# ---------------------------------------------------------------------------------- bootstrap
def _stratified_interval(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    reps: int,
    confidence: float,
    seed: Seed,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``statistic`` over a bootstrap that resamples each sample
    independently along its last axis (runs), i.e. stratified by sample (task)."""
    result = stats.bootstrap(
        tuple(samples),
        lambda *resampled, axis: statistic(*resampled),
        n_resamples=reps,
        batch=_BATCH,
        vectorized=True,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def _by_task(scores: np.ndarray) -> list[np.ndarray]:
    """(runs, tasks, ...) -> one array per task with runs on the last axis."""
    return [np.moveaxis(scores[:, t], 0, -1) for t in range(scores.shape[1])]


def _stack_tasks(*task_samples: np.ndarray) -> np.ndarray:
    """Inverse of `_by_task` on bootstrap batches: (..., runs) per task -> (..., runs, tasks)."""
    return np.stack(task_samples, axis=-1)


def interval_estimates(
    scores_by_config: Mapping[str, np.ndarray],
    statistic: str | Sequence[str] = STATISTICS,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = None,
    gamma: float = 1.0,
) -> dict[str, dict[str, Interval]]:
    """Point estimates and stratified bootstrap intervals of aggregate statistics.

    ``scores_by_config`` maps a configuration name to its ``(runs, tasks)`` (or ``(runs,)``)
    scores, at least 2 runs each and the same tasks for all. ``statistic`` is one or more of
    ``iqm``, ``mean`` (mean of task means), ``median`` (median of task means) and
    ``optimality_gap`` (``gamma`` minus the mean of scores clipped at ``gamma``; for scores
    normalised to [0, 1]). Returns ``{config: {statistic: Interval}}``.
    """
    names = _check_statistics(statistic)
    _check_bootstrap_args(reps, confidence)
    if not np.isfinite(gamma):
        raise ValueError(f"gamma must be finite; got {gamma!r}")
    data = _as_score_dict("scores_by_config", scores_by_config, min_runs=2)
    estimators = [_estimator(n, gamma) for n in names]

    def all_statistics(*task_samples: np.ndarray) -> np.ndarray:
        x = _stack_tasks(*task_samples)
        return np.stack([f(x) for f in estimators])

    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Interval]] = {}
    for key, scores in data.items():
        point = all_statistics(*_by_task(scores))
        low, high = _stratified_interval(_by_task(scores), all_statistics, reps, confidence, rng)
        out[key] = {
            n: Interval(float(point[i]), float(low[i]), float(high[i])) for i, n in enumerate(names)
        }
    return out


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over tasks of P(X_t > Y_t) + P(X_t = Y_t) / 2 for (..., runs, tasks) arrays."""
    greater = x[..., :, None, :] > y[..., None, :, :]
    equal = x[..., :, None, :] == y[..., None, :, :]
    return (greater + 0.5 * equal).mean(axis=(-3, -2)).mean(axis=-1)


def probability_of_improvement(
    x: np.ndarray,
    y: np.ndarray,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = None,
) -> Interval:
    """P(X > Y): the probability that a run of configuration X beats a run of Y on a task,
    averaged over tasks (the Mann-Whitney U statistic over ``runs_x * runs_y``; ties count
    half), with a bootstrap interval that resamples X's and Y's runs independently within each
    task. ``x`` is ``(runs_x, tasks)``, ``y`` is ``(runs_y, tasks)`` (1-D: one task), at least
    2 runs each. 0.5 is the null: X's lead is established only if the interval excludes it."""
    _check_bootstrap_args(reps, confidence)
    xs = _as_runs_tasks("x", x, min_runs=2)
    ys = _as_runs_tasks("y", y, min_runs=2)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"x and y must cover the same tasks; x has {xs.shape[1]} task(s), y has {ys.shape[1]}"
        )
    tasks = xs.shape[1]

    def statistic(*samples: np.ndarray) -> np.ndarray:
        return _improvement(_stack_tasks(*samples[:tasks]), _stack_tasks(*samples[tasks:]))

    point = float(statistic(*_by_task(xs), *_by_task(ys)))
    low, high = _stratified_interval(_by_task(xs) + _by_task(ys), statistic, reps, confidence, seed)
    return Interval(point, float(low), float(high))


def performance_profile(
    scores_by_config: Mapping[str, np.ndarray],
    taus: np.ndarray,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: Seed = None,
) -> dict[str, Band]:
    """Performance profile (`rliable`'s score distribution): for each threshold ``tau`` the
    fraction of all run-task scores strictly above it, with pointwise stratified bootstrap
    bands. ``scores_by_config`` as in `interval_estimates`; ``taus`` is 1-D."""
    _check_bootstrap_args(reps, confidence)
    thresholds = _as_array("taus", taus, (1,))
    data = _as_score_dict("scores_by_config", scores_by_config, min_runs=2)

    def profile(*task_samples: np.ndarray) -> np.ndarray:
        x = _stack_tasks(*task_samples)
        flat = x.reshape(*x.shape[:-2], -1)
        above = (flat[..., None] > thresholds).mean(axis=-2)
        return np.moveaxis(above, -1, 0)  # thresholds first: scipy reads leading axes as outputs

    rng = np.random.default_rng(seed)
    out = {}
    for key, scores in data.items():
        point = profile(*_by_task(scores))
        low, high = _stratified_interval(_by_task(scores), profile, reps, confidence, rng)
        out[key] = Band(thresholds, point, low, high)
    return out


def sample_efficiency_curve(
    scores_by_config: Mapping[str, np.ndarray],
    steps: np.ndarray | None = None,
    statistic: str = "iqm",
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: Seed = None,
    gamma: float = 1.0,
) -> dict[str, Band]:
    """One aggregate ``statistic`` (see `interval_estimates`) at every evaluation step, with
    pointwise stratified bootstrap bands. ``scores_by_config`` maps a configuration to
    ``(runs, tasks, steps)`` scores; each replicate resamples whole runs (all their steps
    together) within each task. ``steps`` (``(steps,)``, e.g. env steps) is the band's x,
    ``0..steps-1`` by default."""
    if not isinstance(statistic, str):
        raise ValueError(f"statistic must be one name from {STATISTICS}; got {statistic!r}")
    (name,) = _check_statistics(statistic)
    _check_bootstrap_args(reps, confidence)
    data = _as_score_dict("scores_by_config", scores_by_config, min_runs=2, ndims=(3,))
    lengths = {key: a.shape[2] for key, a in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"scores_by_config: steps per configuration differ: {lengths}")
    n_steps = next(iter(lengths.values()))
    x = np.arange(n_steps, dtype=float) if steps is None else _as_array("steps", steps, (1,))
    if x.shape != (n_steps,):
        raise ValueError(f"steps has {x.shape[0]} entries; the scores have {n_steps} steps")
    estimator = _estimator(name, gamma)

    def curve(*task_samples: np.ndarray) -> np.ndarray:
        # each task sample is (steps, ..., runs): steps lead, as scipy reads leading axes
        return estimator(_stack_tasks(*task_samples))

    rng = np.random.default_rng(seed)
    out = {}
    for key, scores in data.items():
        point = curve(*_by_task(scores))
        low, high = _stratified_interval(_by_task(scores), curve, reps, confidence, rng)
        out[key] = Band(x, point, low, high)
    return out


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the Student-t interval over axis 0 (seeds) of ``(seeds,)`` or
    ``(seeds, points)`` values; needs at least 2 seeds. Arrays of shape ``values.shape[1:]``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    array = _as_array("values", values, (1, 2))
    n = array.shape[0]
    if n < 2:
        raise ValueError(f"values has {n} seed(s) on axis 0; a t interval needs at least 2")
    mean = array.mean(axis=0)
    sem = array.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sem
