"""check_env accepts SaveTheCity and names the key of every injected contract violation."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from envs import ContractError, SaveTheCityEnv, check_env

SEED = 1  # the first "2-5a_2-5b" episode of this seed has 4 agents: entity row 4 is padding


class _Corrupted(SaveTheCityEnv):
    """SaveTheCity whose outputs (of reset and step) pass through `corrupt`."""

    def __init__(self, corrupt, **kwargs):
        super().__init__(**kwargs)
        self._corrupt = corrupt
        self._calls = 0

    def reset(self, seed=None, options=None):
        obs, infos = super().reset(seed=seed, options=options)
        self._corrupt(self, obs, None, infos)
        return obs, infos

    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        self._calls += 1
        self._corrupt(self, obs, rewards, infos)
        return obs, rewards, terms, truncs, infos


def _set(key, make):
    """Replace observation[key] of agent_0 by make(old value)."""
    def corrupt(env, obs, rewards, infos):
        if "agent_0" in obs:
            obs["agent_0"] = dict(obs["agent_0"], **{key: make(obs["agent_0"][key])})
    return corrupt


def _nan_feature(ents):
    ents = ents.copy()
    ents[0, 2] = np.nan
    return ents


def _drop_observation(env, obs, rewards, infos):
    obs.pop("agent_1", None)


def _inf_reward(env, obs, rewards, infos):
    if rewards:
        rewards["agent_0"] = float("inf")


def _drop_task_rewards(env, obs, rewards, infos):
    infos["agent_0"].pop("task_rewards")


def _padding_task_row(e2t):
    e2t = e2t.copy()
    e2t[4, 0] = 1
    return e2t


def _two_tasks_per_row(e2t):
    e2t = e2t.copy()
    e2t[5, 1] = 1  # row 5 is building 0, already in task 0
    return e2t


def _hide_self(mask):
    mask = mask.copy()
    mask[0] = 0
    return mask


def _no_actions(mask):
    return np.zeros_like(mask)


def test_good_env_passes():
    check_env(SaveTheCityEnv(), n_steps=300)
    check_env(SaveTheCityEnv(scenario="2-8a_2-8b", sight_range=2), n_steps=300)


@pytest.mark.parametrize(
    ("corrupt", "pattern"),
    [
        (_set("entities", _nan_feature), r"observation\['entities'\] of agent_0.*finite"),
        (_set("entity_mask", lambda m: m.astype(np.float32)),
         r"observation\['entity_mask'\] of agent_0: expected dtype int8, got float32"),
        (_set("obs_mask", lambda m: m[:-1]),
         r"observation\['obs_mask'\] of agent_0: expected shape \(11,\), got \(10,\)"),
        (_set("agent_index", lambda i: np.array(99, dtype=np.int64)),
         r"observation\['agent_index'\] of agent_0: expected a value in \[0, 11\), got 99"),
        (_set("agent_index", lambda i: np.array(4, dtype=np.int64)),
         r"'agent_index'.*live entity"),
        (_set("entity2task", _padding_task_row), r"'entity2task'.*live entities"),
        (_set("entity2task", _two_tasks_per_row), r"'entity2task'.*at most one task"),
        (_set("obs_mask", _hide_self), r"'obs_mask'.*agent_index"),
        (_set("action_mask", _no_actions), r"'action_mask'.*at least one"),
        (_set("task_mask", lambda m: m * 2), r"'task_mask'.*0/1"),
        (_drop_observation, r"observations: expected an entry for 'agent_1'"),
        (_inf_reward, r"rewards\['agent_0'\]: expected a finite number"),
        (_drop_task_rewards, r"infos\['agent_0'\]\['task_rewards'\]"),
    ],
    ids=[
        "nan-feature", "wrong-dtype", "wrong-mask-shape", "index-out-of-range",
        "index-on-padding", "task-on-padding", "two-tasks", "hidden-self", "no-actions",
        "non-binary-mask", "missing-observation", "inf-reward", "missing-task-rewards",
    ],
)
def test_broken_env_raises_naming_the_key(corrupt, pattern):
    with pytest.raises(ContractError, match=pattern):
        check_env(_Corrupted(corrupt), n_steps=20, seed=SEED)


def test_contract_error_is_a_value_error():
    assert issubclass(ContractError, ValueError)


class _ExtraKeySpace(SaveTheCityEnv):
    def observation_space(self, agent):
        space = super().observation_space(agent)
        return spaces.Dict({**space.spaces, "extra": spaces.Discrete(2)})


class _BadState(SaveTheCityEnv):
    def state(self):
        state = super().state()
        del state["task_mask"]
        return state


class _WrongStateDtype(SaveTheCityEnv):
    def state(self):
        state = super().state()
        state["entities"] = state["entities"].astype(np.float64)
        return state


class _MultiDiscreteActions(SaveTheCityEnv):
    def action_space(self, agent):
        return spaces.MultiDiscrete([12, 2])


class _AgentOutsidePossible(SaveTheCityEnv):
    def reset(self, seed=None, options=None):
        out = super().reset(seed=seed, options=options)
        self.agents = [*self.agents, "stranger"]
        return out


@pytest.mark.parametrize(
    ("env_cls", "pattern"),
    [
        (_ExtraKeySpace, r"observation_space\('agent_0'\): expected exactly the keys.*extra"),
        (_BadState, r"state\(\): expected the keys"),
        (_WrongStateDtype, r"state\(\)\['entities'\]: expected dtype float32, got float64"),
        (_MultiDiscreteActions, r"action_space\('agent_0'\): expected Discrete\(12\)"),
        (_AgentOutsidePossible, r"env.agents: expected a subset of possible_agents"),
    ],
)
def test_broken_spaces_and_state_raise(env_cls, pattern):
    with pytest.raises(ContractError, match=pattern):
        check_env(env_cls(), n_steps=5)


def test_violation_after_reset_is_found_while_stepping():
    def late(env, obs, rewards, infos):
        if env._calls == 3 and "agent_0" in obs:
            obs["agent_0"] = dict(obs["agent_0"], entities=_nan_feature(obs["agent_0"]["entities"]))

    with pytest.raises(ContractError, match=r"step 3: observation\['entities'\]"):
        check_env(_Corrupted(late), n_steps=10, seed=SEED)


def test_seed_leaves_padding_rows():
    env = SaveTheCityEnv()
    env.reset(seed=SEED)
    assert len(env.agents) == 4  # the padding cases above rely on this
