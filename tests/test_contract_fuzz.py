"""Fuzzing `envs.contract.check_env`: broken variants of good environments.

Each variant corrupts one thing (an observation field, a reward or an info entry of one agent)
in one output of `reset()`/`step()`, chosen at random. `check_env` must report every variant
with a `ContractError` whose message names the corrupted key.
"""

from __future__ import annotations

import numpy as np
import pytest
from custom_env import LineVisitEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import ContractError, SaveTheCityEnv, check_env
from envs.contract import OBS_KEYS

BINARY_KEYS = ("entity_mask", "obs_mask", "entity2task", "task_mask", "action_mask")
EXPECTED_DTYPE = {key: np.int8 for key in BINARY_KEYS} | {
    "entities": np.float32,
    "agent_index": np.int64,
}
OTHER_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8, bool)


# ------------------------------------------------------------------ corruptions
# Each takes (obs, rewards, infos, agent, draw) and returns the key its error must name.
# `draw(strategy)` picks the details (which cell, which dtype, ...).
def _non_finite_feature(obs, rewards, infos, agent, draw):
    ents = obs[agent]["entities"].copy()
    row = draw(st.integers(0, ents.shape[0] - 1))
    col = draw(st.integers(0, ents.shape[1] - 1))
    ents[row, col] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    obs[agent]["entities"] = ents
    return "entities"


def _wrong_dtype(obs, rewards, infos, agent, draw):
    key = draw(st.sampled_from(OBS_KEYS))
    dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != EXPECTED_DTYPE[key]]))
    obs[agent][key] = np.asarray(obs[agent][key]).astype(dtype)
    return key


def _wrong_shape(obs, rewards, infos, agent, draw):
    key = draw(st.sampled_from(OBS_KEYS))
    value = np.asarray(obs[agent][key])
    how = draw(st.sampled_from(["drop", "add", "flatten", "batch"]))
    if value.ndim == 0 or how == "batch":
        value = value[None]
    elif how == "drop":
        value = value[:-1]
    elif how == "add":
        value = np.concatenate([value, value[:1]])
    else:
        value = value.reshape(-1) if value.ndim > 1 else value.reshape(1, -1)
    obs[agent][key] = value
    return key


def _not_an_array(obs, rewards, infos, agent, draw):
    key = draw(st.sampled_from(OBS_KEYS))
    value = np.asarray(obs[agent][key])
    obs[agent][key] = draw(st.sampled_from([value.tolist(), None, str(value.tolist())]))
    return key


def _missing_key(obs, rewards, infos, agent, draw):
    key = draw(st.sampled_from(OBS_KEYS))
    del obs[agent][key]
    return key


def _extra_key(obs, rewards, infos, agent, draw):
    obs[agent]["extra_feature"] = np.zeros(3, dtype=np.float32)
    return "extra_feature"


def _non_binary_mask(obs, rewards, infos, agent, draw):
    key = draw(st.sampled_from(BINARY_KEYS))
    value = obs[agent][key].copy()
    index = tuple(draw(st.integers(0, n - 1)) for n in value.shape)
    value[index] = draw(st.sampled_from([2, -1, 7]))
    obs[agent][key] = value
    return key


def _index_out_of_range(obs, rewards, infos, agent, draw):
    n_entities = obs[agent]["entities"].shape[0]
    bad = draw(st.sampled_from([n_entities, n_entities + 3, -1, -n_entities - 1, 10**9]))
    obs[agent]["agent_index"] = np.int64(bad)
    return "agent_index"


def _no_allowed_action(obs, rewards, infos, agent, draw):
    obs[agent]["action_mask"] = np.zeros_like(obs[agent]["action_mask"])
    return "action_mask"


def _drop_observation(obs, rewards, infos, agent, draw):
    del obs[agent]
    return "observations"


def _observation_not_a_dict(obs, rewards, infos, agent, draw):
    obs[agent] = draw(st.sampled_from([None, [1, 2], np.zeros(3, dtype=np.float32)]))
    return "observation"


def _bad_reward(obs, rewards, infos, agent, draw):
    bad = draw(st.sampled_from(
        [np.nan, np.inf, -np.inf, np.float32(np.nan), None, "1.0", [1.0], True,
         np.complex128(1.0), np.array([1.0])]
    ))
    rewards[agent] = bad
    return "rewards"


def _missing_reward(obs, rewards, infos, agent, draw):
    del rewards[agent]
    return "rewards"


def _bad_task_rewards(obs, rewards, infos, agent, draw):
    info = dict(infos.get(agent) or {})
    value = np.asarray(info.get("task_rewards", np.zeros(1, dtype=np.float32)))
    how = draw(st.sampled_from(["nan", "inf", "shape", "int", "list", "missing", "complex"]))
    if how == "missing":
        info.pop("task_rewards", None)
    elif how == "nan":
        info["task_rewards"] = np.full_like(value, np.nan)
    elif how == "inf":
        info["task_rewards"] = np.concatenate([value[:-1], [np.inf]]).astype(value.dtype)
    elif how == "shape":
        info["task_rewards"] = np.concatenate([value, value])
    elif how == "int":
        info["task_rewards"] = value.astype(np.int64)
    elif how == "complex":
        info["task_rewards"] = value.astype(np.complex64)
    else:
        info["task_rewards"] = value.tolist()
    infos[agent] = info
    return "task_rewards"


def _info_not_a_dict(obs, rewards, infos, agent, draw):
    if draw(st.booleans()):
        infos.pop(agent, None)
    else:
        infos[agent] = draw(st.sampled_from([None, "info", 3]))
    return "task_rewards"


OBS_CORRUPTIONS = [
    _non_finite_feature, _wrong_dtype, _wrong_shape, _not_an_array, _missing_key, _extra_key,
    _non_binary_mask, _index_out_of_range, _no_allowed_action, _drop_observation,
    _observation_not_a_dict, _bad_task_rewards, _info_not_a_dict,
]
STEP_CORRUPTIONS = [_bad_reward, _missing_reward]  # rewards exist only in step() outputs


class _Broken:
    """A contract env whose `at_call`-th output (0 = the first reset) is corrupted once."""

    def __init__(self, env, corruption, at_call: int, agent_pick: int, draw):
        self._env, self._corruption, self._draw = env, corruption, draw
        self._at_call, self._agent_pick = at_call, agent_pick
        self._calls = 0
        self.expected_key = None

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, seed=None, options=None):
        obs, infos = self._env.reset(seed=seed, options=options)
        self._maybe_corrupt(obs, None, infos)
        return obs, infos

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self._env.step(actions)
        self._maybe_corrupt(obs, rewards, infos)
        return obs, rewards, terms, truncs, infos

    def _maybe_corrupt(self, obs, rewards, infos):
        self._calls += 1
        live = [a for a in self._env.agents if a in obs]
        fits = rewards is not None or self._corruption not in STEP_CORRUPTIONS
        # Fire on the first output at or after `at_call` that has live agents (the last
        # output of an episode may have none; a reward corruption needs a step output).
        if self.expected_key is not None or self._calls <= self._at_call or not live or not fits:
            return
        agent = live[self._agent_pick % len(live)]
        obs[agent] = dict(obs[agent])
        self.expected_key = self._corruption(obs, rewards, infos, agent, self._draw)


def _check_reported(env: _Broken, n_steps: int) -> None:
    with pytest.raises(ContractError) as caught:
        check_env(env, n_steps=n_steps, seed=0)
    assert env.expected_key is not None, "the corruption never fired"
    message = str(caught.value)
    assert env.expected_key in message, message


def test_good_envs_pass():
    check_env(LineVisitEnv(), n_steps=100)
    check_env(SaveTheCityEnv(scenario="2a_3b"), n_steps=100)


ALL_CORRUPTIONS = OBS_CORRUPTIONS + STEP_CORRUPTIONS
IDS = [c.__name__.lstrip("_") for c in ALL_CORRUPTIONS]


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS, ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at_call=st.integers(0, 12),
    agent_pick=st.integers(0, 3),
    env_kwargs=st.fixed_dictionaries(
        {"n_agents": st.integers(1, 3), "n_targets": st.integers(1, 3)}
    ),
    data=st.data(),
)
def test_corrupted_line_visit_is_reported_naming_the_key(
    corruption, at_call, agent_pick, env_kwargs, data
):
    env = LineVisitEnv(length=8, max_cycles=5, **env_kwargs)
    _check_reported(_Broken(env, corruption, at_call, agent_pick, data.draw), n_steps=30)


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS, ids=IDS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at_call=st.integers(0, 8), agent_pick=st.integers(0, 4), data=st.data())
def test_corrupted_save_the_city_is_reported_naming_the_key(corruption, at_call, agent_pick, data):
    env = SaveTheCityEnv(scenario="2-5a_2-5b", max_cycles=20)
    _check_reported(_Broken(env, corruption, at_call, agent_pick, data.draw), n_steps=20)
