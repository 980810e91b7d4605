"""Fuzzing `envs.contract.check_env` with `envs.testing`: broken variants of good environments.

Each variant corrupts one thing (an observation field, a reward or an info entry of one agent)
in one output of `reset()`/`step()`; hypothesis draws which output, which agent and the seed of
the corruption's details. `check_env` must report every variant with a `ContractError` whose
message names the corrupted key.
"""

from __future__ import annotations

import numpy as np
import pytest
from custom_env import LineVisitEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import ContractError, SaveTheCityEnv, check_env
from envs.testing import ALL_CORRUPTIONS, BrokenEnv, expect_reported, fuzz_contract

IDS = [c.__name__ for c in ALL_CORRUPTIONS]
SEEDS = st.integers(0, 2**32 - 1)


def test_good_envs_pass():
    check_env(LineVisitEnv(), n_steps=100)
    check_env(SaveTheCityEnv(scenario="2a_3b"), n_steps=100)


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS, ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at_call=st.integers(0, 12),
    agent_pick=st.integers(0, 3),
    env_kwargs=st.fixed_dictionaries(
        {"n_agents": st.integers(1, 3), "n_targets": st.integers(1, 3)}
    ),
    seed=SEEDS,
)
def test_corrupted_line_visit_is_reported_naming_the_key(
    corruption, at_call, agent_pick, env_kwargs, seed
):
    env = LineVisitEnv(length=8, max_cycles=5, **env_kwargs)
    broken = BrokenEnv(env, corruption, at_call, agent_pick, np.random.default_rng(seed))
    expect_reported(broken, n_steps=30)


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS, ids=IDS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at_call=st.integers(0, 8), agent_pick=st.integers(0, 4), seed=SEEDS)
def test_corrupted_save_the_city_is_reported_naming_the_key(corruption, at_call, agent_pick, seed):
    env = SaveTheCityEnv(scenario="2-5a_2-5b", max_cycles=20)
    broken = BrokenEnv(env, corruption, at_call, agent_pick, np.random.default_rng(seed))
    expect_reported(broken, n_steps=20)


def test_fuzz_contract_checks_every_corruption():
    factory = lambda: LineVisitEnv(length=8, max_cycles=5, n_agents=2)
    assert fuzz_contract(factory, n_cases=2, max_call=12, n_steps=30) == 2 * len(ALL_CORRUPTIONS)


def test_fuzz_contract_rejects_a_broken_base_env():
    def factory():
        return BrokenEnv(LineVisitEnv(), ALL_CORRUPTIONS[0], 0, 0, np.random.default_rng(0))

    with pytest.raises(ContractError, match="entities"):
        fuzz_contract(factory, n_cases=1)


def test_expect_reported_fails_when_the_checker_misses_the_corruption():
    def no_op(obs, rewards, infos, agent, rng):
        return "entities"  # claims a corruption but changes nothing

    broken = BrokenEnv(LineVisitEnv(), no_op, 0, 0, np.random.default_rng(0))
    with pytest.raises(AssertionError, match="accepted"):
        expect_reported(broken, n_steps=10)


def test_expect_reported_fails_when_the_corruption_never_fires():
    broken = BrokenEnv(LineVisitEnv(), ALL_CORRUPTIONS[0], 50, 0, np.random.default_rng(0))
    with pytest.raises(AssertionError, match="never fired"):
        expect_reported(broken, n_steps=10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_cases": 0}, "n_cases"), ({"max_call": -1}, "max_call"),
     ({"max_call": 20, "n_steps": 20}, "max_call=20")],
)
def test_fuzz_contract_names_a_bad_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        fuzz_contract(LineVisitEnv, **kwargs)
