"""The linear probe's parts: ridge R² against closed forms, its target, what an observation
shows, and the episode split. The probe of a trained checkpoint runs in `test_cli.py`."""

import numpy as np
import pytest

from rllib_alma_mi.app.evaluation import EvaluationError
from rllib_alma_mi.app.probe import (
    ProbeSamples,
    observed_features,
    probe_r2,
    ridge_r2,
    state_summary,
)


def _linear_data(rng, n: int, noise: float):
    x = rng.normal(size=(n, 5))
    w = rng.normal(size=(5, 3))
    return x, x @ w + noise * rng.normal(size=(n, 3)), w


def test_ridge_r2_is_one_on_an_exact_linear_map():
    rng = np.random.default_rng(0)
    x, y, _ = _linear_data(rng, 400, noise=0.0)
    assert ridge_r2(x[:300], y[:300], x[300:], y[300:], alpha=1e-6) == pytest.approx(1.0, abs=1e-6)


def test_ridge_r2_matches_the_share_of_explained_variance():
    # y = x w + noise: the best R² is var(x w) / (var(x w) + var(noise)), pooled over outputs.
    rng = np.random.default_rng(1)
    x, y, w = _linear_data(rng, 20000, noise=1.5)
    signal = (w**2).sum()  # x has unit variance per column
    expected = signal / (signal + 3 * 1.5**2)
    got = ridge_r2(x[:10000], y[:10000], x[10000:], y[10000:])
    assert got == pytest.approx(expected, abs=0.02)


def test_ridge_r2_is_near_zero_without_information_and_ignores_constant_inputs():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(2000, 4)), np.ones((2000, 1))], axis=1)
    y = rng.normal(size=(2000, 2))
    assert abs(ridge_r2(x[:1000], y[:1000], x[1000:], y[1000:])) < 0.02


def test_ridge_r2_names_bad_shapes_and_constant_targets():
    x, y = np.zeros((10, 3)), np.zeros((10, 2))
    with pytest.raises(ValueError, match="train inputs"):
        ridge_r2(x, y[:5], x, y)
    with pytest.raises(ValueError, match="constant"):
        ridge_r2(np.random.default_rng(0).normal(size=(10, 3)), np.ones((10, 2)), x, y)
    with pytest.raises(ValueError, match="alpha"):
        ridge_r2(x, y, x, y, alpha=0.0)


def test_state_summary_averages_only_live_entities():
    entities = np.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])
    summary = state_summary({"entities": entities, "entity_mask": np.array([1, 1, 0])})
    np.testing.assert_allclose(summary, [2.0, 3.0])
    with pytest.raises(ValueError, match="no live entity"):
        state_summary({"entities": entities, "entity_mask": np.zeros(3)})


def test_observed_features_hide_what_the_masks_hide():
    obs = {
        "entities": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        "entity_mask": np.array([1, 1, 0]),
        "obs_mask": np.array([1, 0, 1]),
    }
    np.testing.assert_allclose(observed_features(obs), [1, 2, 0, 0, 0, 0, 1, 0, 0])


def test_split_keeps_each_episode_on_one_side():
    samples = ProbeSamples([0] * 7, [0] * 7, [0] * 7, [0, 0, 1, 1, 1, 2, 3])
    train, test = samples.split(0.5)
    assert train.tolist() == [True] * 5 + [False] * 2 and (train ^ test).all()
    with pytest.raises(EvaluationError, match="both sides"):
        ProbeSamples([0], [0], [0], [0]).split(0.7)


def test_probe_r2_picks_a_penalty_that_holds_up_on_new_episodes():
    # Few samples, many noisy inputs: an almost unpenalised fit overfits, the picked one less.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 60))
    y = x[:, :1] + rng.normal(size=(120, 1))
    episode = np.repeat(np.arange(12), 10)
    train = episode < 8
    picked = probe_r2(x, y, train, ~train, episode)
    loose = ridge_r2(x[train], y[train], x[~train], y[~train], alpha=1e-3)
    assert picked > loose + 0.1
