"""Aggregate statistics: known answers, bootstrap coverage, stratification and input checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from rllib_alma_mi.app.statistics import (
    Interval,
    interval_estimates,
    iqm,
    min_max_normalise,
    performance_profile,
    probability_of_improvement,
    sample_efficiency_curve,
    t_interval,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
score_matrices = arrays(float, st.tuples(st.integers(1, 12), st.integers(1, 4)), elements=finite)


# ---------------------------------------------------------------------------------- IQM
def test_iqm_of_one_to_eight_is_the_mean_of_three_to_six():
    scores = np.arange(1, 9)
    assert iqm(scores) == pytest.approx(4.5)
    assert iqm(scores) == pytest.approx(stats.trim_mean(scores, 0.25))


def test_iqm_pools_runs_and_tasks_before_trimming():
    scores = np.array([[1.0, 100.0], [2.0, 200.0], [3.0, 300.0], [4.0, 400.0]])
    # pooled sorted: 1 2 3 4 100 200 300 400 -> middle half 3 4 100 200
    assert iqm(scores) == pytest.approx((3 + 4 + 100 + 200) / 4)


@settings(max_examples=60, deadline=None)
@given(score_matrices)
def test_iqm_matches_scipy_trim_mean_over_the_pooled_matrix(scores):
    assert iqm(scores) == pytest.approx(stats.trim_mean(scores, 0.25, axis=None), rel=1e-9)
    assert scores.min() - 1e-9 <= iqm(scores) <= scores.max() + 1e-9
    assert iqm(scores[::-1]) == pytest.approx(iqm(scores), rel=1e-9)


# ------------------------------------------------------------------------- interval estimates
def test_statistics_have_their_closed_forms():
    scores = np.array([[0.5, 1.5], [0.2, 0.8]])  # task means 0.35 and 1.15
    result = interval_estimates({"a": scores}, reps=200, seed=0)["a"]
    assert result["mean"].point == pytest.approx(0.75)
    assert result["median"].point == pytest.approx(0.75)
    assert result["iqm"].point == pytest.approx(stats.trim_mean(scores, 0.25, axis=None))
    # clipped at gamma = 1: 0.5, 1, 0.2, 0.8 -> mean 0.625
    assert result["optimality_gap"].point == pytest.approx(0.375)
    gap = interval_estimates({"a": scores}, "optimality_gap", reps=200, seed=0, gamma=2.0)
    assert gap["a"]["optimality_gap"].point == pytest.approx(2 - 0.75)


def test_median_is_the_median_of_task_means():
    scores = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 9.0]])  # task means 1, 2, 7
    assert interval_estimates({"a": scores}, "median", reps=200)["a"]["median"].point == 2.0


def test_bootstrap_interval_covers_the_true_mean_at_close_to_the_nominal_rate():
    rng = np.random.default_rng(12345)
    task_means, task_sds = np.array([0.0, 5.0, -3.0]), np.array([1.0, 2.0, 0.5])
    truth = task_means.mean()
    draws, covered = 200, 0
    for _ in range(draws):
        scores = rng.normal(task_means, task_sds, size=(20, 3))
        interval = interval_estimates({"a": scores}, "mean", reps=1000, seed=rng)["a"]["mean"]
        covered += interval.contains(truth)
    assert 0.90 <= covered / draws <= 0.99


def test_bootstrap_is_stratified_over_tasks():
    # Each task is constant across runs, so any resample that keeps every task's run count
    # reproduces the data; pooled (unstratified) resampling would move the mean and the IQM.
    scores = np.column_stack([np.zeros(4), np.full(4, 10.0)])
    result = interval_estimates({"a": scores}, ("mean", "iqm"), reps=500, seed=0)["a"]
    for name in ("mean", "iqm"):
        assert result[name] == Interval(5.0, 5.0, 5.0)


def test_intervals_bracket_the_point_and_are_reproducible_with_a_seed():
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=(6, 3)), "b": rng.normal(1.0, 1.0, size=(6, 3))}
    first = interval_estimates(data, reps=500, seed=7)
    assert first == interval_estimates(data, reps=500, seed=7)
    assert set(first) == {"a", "b"}
    for by_stat in first.values():
        assert set(by_stat) == {"iqm", "mean", "median", "optimality_gap"}
        for interval in by_stat.values():
            assert interval.low <= interval.point <= interval.high
            assert interval.low < interval.high


def test_a_one_dimensional_array_is_a_single_task():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    one = interval_estimates({"a": scores}, "mean", reps=300, seed=0)
    two = interval_estimates({"a": scores[:, None]}, "mean", reps=300, seed=0)
    assert one == two


# ------------------------------------------------------------------ probability of improvement
def test_probability_of_improvement_is_one_half_for_identical_distributions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    result = probability_of_improvement(x, y, reps=1000, seed=0)
    assert result.point == pytest.approx(0.5, abs=0.1)
    assert result.contains(0.5)
    assert probability_of_improvement(x, x, reps=200, seed=0).point == 0.5  # ties count half


def test_probability_of_improvement_is_one_for_separated_distributions():
    rng = np.random.default_rng(2)
    x, y = rng.normal(10.0, 1.0, size=(5, 3)), rng.normal(0.0, 1.0, size=(5, 3))
    assert probability_of_improvement(x, y, reps=500, seed=0) == Interval(1.0, 1.0, 1.0)
    assert probability_of_improvement(y, x, reps=500, seed=0) == Interval(0.0, 0.0, 0.0)


def test_probability_of_improvement_is_the_task_mean_of_mann_whitney_u():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, size=(6, 3)), rng.integers(0, 4, size=(4, 3))  # with ties
    u = [stats.mannwhitneyu(x[:, t], y[:, t]).statistic / (6 * 4) for t in range(3)]
    result = probability_of_improvement(x, y, reps=300, seed=0)
    assert result.point == pytest.approx(np.mean(u))
    assert result.low <= result.point <= result.high


@settings(max_examples=30, deadline=None)
@given(
    arrays(float, st.tuples(st.integers(2, 6), st.just(2)), elements=st.integers(-3, 3)),
    arrays(float, st.tuples(st.integers(2, 6), st.just(2)), elements=st.integers(-3, 3)),
)
def test_probability_of_improvement_of_x_over_y_and_y_over_x_sum_to_one(x, y):
    forward = probability_of_improvement(x, y, reps=100, seed=0).point
    backward = probability_of_improvement(y, x, reps=100, seed=0).point
    assert forward + backward == pytest.approx(1.0)


# ------------------------------------------------------------------------ performance profile
def test_performance_profile_is_one_below_the_minimum_and_zero_from_the_maximum():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(8, 3))
    taus = np.array([scores.min() - 1.0, np.median(scores), scores.max(), scores.max() + 1.0])
    band = performance_profile({"a": scores}, taus, reps=500, seed=0)["a"]
    np.testing.assert_array_equal(band.x, taus)
    assert band.point[0] == band.low[0] == band.high[0] == 1.0
    assert band.point[2] == band.point[3] == band.high[3] == 0.0
    assert band.point[1] == pytest.approx(np.mean(scores > taus[1]))
    assert np.all(band.low <= band.point) and np.all(band.point <= band.high)


def test_performance_profile_does_not_increase_with_the_threshold():
    rng = np.random.default_rng(5)
    taus = np.linspace(-3.0, 3.0, 25)
    band = performance_profile({"a": rng.normal(size=(10, 2))}, taus, reps=300)["a"]
    assert np.all(np.diff(band.point) <= 0)


# ---------------------------------------------------------------------- sample-efficiency curve
def test_sample_efficiency_curve_is_the_statistic_at_every_step():
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(5, 3, 4)) + np.arange(4)
    steps = np.array([1000, 2000, 3000, 4000])
    band = sample_efficiency_curve({"a": scores}, steps, reps=300, seed=0)["a"]
    np.testing.assert_array_equal(band.x, steps)
    np.testing.assert_allclose(band.point, [iqm(scores[..., s]) for s in range(4)])
    assert np.all(band.low <= band.point) and np.all(band.point <= band.high)
    mean = sample_efficiency_curve({"a": scores}, statistic="mean", reps=300)["a"]
    np.testing.assert_allclose(mean.point, scores.mean(axis=(0, 1)))
    np.testing.assert_array_equal(mean.x, np.arange(4))


# ------------------------------------------------------------------------- t interval, scaling
def test_t_interval_matches_the_student_t_closed_form():
    mean, half = t_interval(np.array([1.0, 2.0, 3.0]))
    low, high = stats.t.interval(0.95, 2, loc=2.0, scale=1.0 / np.sqrt(3))
    assert float(mean) == pytest.approx(2.0)
    assert float(half) == pytest.approx((high - low) / 2)
    means, halves = t_interval(np.array([[1.0, 10.0], [3.0, 10.0]]))
    np.testing.assert_allclose(means, [2.0, 10.0])
    assert halves[1] == 0.0


def test_min_max_normalise_maps_each_task_onto_zero_to_one_across_configs():
    data = {"a": np.array([[0.0, 10.0], [5.0, 20.0]]), "b": np.array([[10.0, 30.0]])}
    normed = min_max_normalise(data)
    np.testing.assert_allclose(normed["a"], [[0.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(normed["b"], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="task.*1.*one value"):
        min_max_normalise({"a": np.array([[0.0, 1.0], [1.0, 1.0]])})


# ------------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_rejected_with_the_argument_named(bad):
    scores = np.array([[1.0, 2.0], [bad, 3.0]])
    with pytest.raises(ValueError, match=r"scores has 1 non-finite value.*\(1, 0\)"):
        iqm(scores)
    with pytest.raises(ValueError, match=r"scores_by_config\['a'\] has 1 non-finite"):
        interval_estimates({"a": scores}, reps=100)
    with pytest.raises(ValueError, match=r"^y has 1 non-finite"):
        probability_of_improvement(np.ones((2, 2)), scores, reps=100)
    with pytest.raises(ValueError, match=r"^values has 1 non-finite"):
        t_interval(scores)


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match="scores is empty"):
        iqm(np.array([]))
    with pytest.raises(ValueError, match=r"scores_by_config\['a'\] is empty"):
        interval_estimates({"a": np.zeros((0, 3))}, reps=100)
    with pytest.raises(ValueError, match="scores_by_config must be a non-empty mapping"):
        interval_estimates({}, reps=100)
    with pytest.raises(ValueError, match="taus is empty"):
        performance_profile({"a": np.ones((3, 1))}, np.array([]), reps=100)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="same tasks.*'a': 2, 'b': 3"):
        interval_estimates({"a": np.ones((3, 2)), "b": np.ones((3, 3))}, reps=100)
    with pytest.raises(ValueError, match="x has 2 task.*y has 3"):
        probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)), reps=100)
    with pytest.raises(ValueError, match="scores must be 1-D or 2-D"):
        iqm(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="steps has 3 entries.*4 steps"):
        sample_efficiency_curve({"a": np.ones((3, 1, 4))}, np.arange(3), reps=100)
    with pytest.raises(ValueError, match="must be 3-D"):
        sample_efficiency_curve({"a": np.ones((3, 4))}, reps=100)


def test_bad_bootstrap_settings_are_rejected():
    data = {"a": np.ones((3, 2))}
    with pytest.raises(ValueError, match=r"scores_by_config\['a'\] has 1 run.*at least 2"):
        interval_estimates({"a": np.ones((1, 2))}, reps=100)
    with pytest.raises(ValueError, match="statistic: unknown"):
        interval_estimates(data, "iqr", reps=100)
    with pytest.raises(ValueError, match="confidence"):
        interval_estimates(data, reps=100, confidence=95)
    with pytest.raises(ValueError, match="reps must be an integer >= 100"):
        interval_estimates(data, reps=10)
    with pytest.raises(ValueError, match="values has 1 seed"):
        t_interval(np.array([1.0]))
    with pytest.raises(ValueError, match="must be an array of numbers"):
        iqm(["a", "b"])
