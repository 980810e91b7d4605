"""SaveTheCity: PettingZoo API, the contract and the rules of ALMA's release."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import parallel_api_test, parallel_seed_test

from envs import check_env, heuristic_allocation, parallel_env
from envs.save_the_city import (
    BUILD,
    EXTINGUISH,
    F_BURNED,
    F_COMPLETE,
    F_FIRE,
    F_FROZEN,
    F_HEALTH,
    F_TYPE,
    FREEZE,
    N_ACTIONS,
    STAY,
)
from envs.save_the_city.render import draw_city

SCENARIOS = [
    "2-5a_2-5b",
    "2-8a_2-8b",
    "3a_4b",
    {"agent_types": ["firefighter", "builder", "generalist", "builder"], "n_buildings": 2},
    ["generalist", "firefighter"],
]
UP, RIGHT, UP2, RIGHT2 = 1, 4, 5, 8


def _random_actions(rng, obs):
    return {a: int(rng.choice(np.flatnonzero(o["action_mask"]))) for a, o in obs.items()}


def _layout_env(agents, buildings, **kwargs):
    env = parallel_env(scenario="5a_6b", **kwargs)
    obs, _ = env.reset(seed=0, options={"layout": {"agents": agents, "buildings": buildings}})
    return env, obs


def _building(env, b, feature):
    return float(env.state()["entities"][env.max_agents + b, feature])


def _stay_all(env, **overrides):
    return env.step({a: overrides.get(a, STAY) for a in env.agents})


# Variable teams leave possible_agents that never play; PettingZoo warns about those.
_TEAM_WARNING = "ignore:No agents present but not all possible_agents"


# ---------------------------------------------------------------------- API and contract
@pytest.mark.filterwarnings(_TEAM_WARNING)
@pytest.mark.parametrize("sight_range", [None, 2])
def test_parallel_api(sight_range):
    parallel_api_test(parallel_env(sight_range=sight_range), num_cycles=200)


@pytest.mark.filterwarnings(_TEAM_WARNING)
def test_parallel_api_large_scenario():
    parallel_api_test(parallel_env(scenario="2-8a_2-8b"), num_cycles=160)


def test_parallel_seed():
    # PettingZoo's seed test samples actions without masks: opt in to "stay" for them.
    parallel_seed_test(lambda: parallel_env(invalid_action="stay"))
    parallel_seed_test(lambda: parallel_env(scenario="2-8a_2-8b", sight_range=3,
                                            invalid_action="stay"))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
@pytest.mark.parametrize("sight_range", [None, 0, 3])
def test_check_env_every_scenario(scenario, sight_range):
    check_env(parallel_env(scenario=scenario, sight_range=sight_range), n_steps=200, seed=1)


def test_spaces_are_cached_and_shaped():
    env = parallel_env()
    assert env.observation_space("agent_0") is env.observation_space("agent_0")
    assert env.action_space("agent_3") is env.action_space("agent_3")
    assert env.possible_agents == [f"agent_{i}" for i in range(5)]
    space = env.observation_space("agent_0")
    assert space["entities"].shape == (11, 16)
    assert space["entity2task"].shape == (11, 6)
    assert space["action_mask"].shape == (N_ACTIONS,)
    obs, infos = env.reset(seed=0)
    for agent, o in obs.items():
        assert env.observation_space(agent).contains(o)
        assert infos[agent]["task_rewards"].shape == (6,)
        assert not infos[agent]["task_rewards"].any()
    state = env.state()
    assert set(state) == {"entities", "entity_mask", "entity2task", "task_mask"}
    assert env.state_space.contains(state)
    big = parallel_env(scenario="2-8a_2-8b")
    assert big.observation_space("agent_7")["entities"].shape == (17, 16)


def test_default_reward_scale_follows_alma():
    assert parallel_env().reward_scale == pytest.approx(20 / (6 * 6 + 20))
    assert parallel_env(scenario="2-8a_2-8b").reward_scale == pytest.approx(20 / (6 * 9 + 20))
    assert parallel_env(reward_scale=1.0).reward_scale == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"scenario": "bogus"}, "scenario"),
        ({"scenario": "2-5a_3-6b"}, "scenario"),
        ({"scenario": {"agent_types": ["pilot"]}}, "scenario"),
        ({"scenario": "0a_3b"}, "scenario"),
        ({"sight_range": -1}, "sight_range"),
        ({"sight_range": 1.5}, "sight_range"),
        ({"max_cycles": 0}, "max_cycles"),
        ({"reward_scale": -1.0}, "reward_scale"),
        ({"reward_scale": float("nan")}, "reward_scale"),
        ({"render_mode": "ascii"}, "render_mode"),
        ({"invalid_action": "clip"}, "invalid_action"),
    ],
)
def test_invalid_kwargs_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        parallel_env(**kwargs)


# ---------------------------------------------------------------------- actions
def test_masked_action_raises_with_agent_name():
    env, obs = _layout_env([("firefighter", 8, 8), ("builder", 0, 0)],
                           [{"pos": (13, 13), "health": 0.5}])
    assert obs["agent_0"]["action_mask"][UP2] == 0
    with pytest.raises(ValueError, match=r"agent_0.*allowed actions"):
        env.step({"agent_0": UP2, "agent_1": STAY})
    with pytest.raises(ValueError, match="agent_1"):
        env.step({"agent_0": STAY, "agent_1": 3})  # left of (0, 0) leaves the grid


def test_malformed_actions_raise():
    env, _ = _layout_env([("firefighter", 8, 8), ("builder", 0, 5)],
                         [{"pos": (13, 13), "health": 0.5}])
    with pytest.raises(ValueError, match="agent_1"):
        env.step({"agent_0": STAY})
    with pytest.raises(ValueError, match="agent_7"):
        env.step({"agent_0": STAY, "agent_1": STAY, "agent_7": STAY})
    with pytest.raises(TypeError, match="agent_0"):
        env.step({"agent_0": 1.0, "agent_1": STAY})
    with pytest.raises(TypeError, match="agent_0"):
        env.step({"agent_0": True, "agent_1": STAY})
    with pytest.raises(ValueError, match="outside"):
        env.step({"agent_0": 12, "agent_1": STAY})
    with pytest.raises(TypeError):
        env.step([0, 0])
    env.step({"agent_0": np.int64(UP), "agent_1": np.array(STAY)})


def test_invalid_action_stay_option_executes_stay():
    env, _ = _layout_env([("firefighter", 8, 8)], [{"pos": (13, 13), "health": 0.5}],
                         invalid_action="stay")
    env.step({"agent_0": UP2})
    assert env.state()["entities"][0, 2:4] * 15 == pytest.approx([8, 8])


def test_double_moves_are_for_generalists_only():
    env, obs = _layout_env([("generalist", 5, 5), ("firefighter", 9, 9)],
                           [{"pos": (13, 13), "health": 0.5}])
    assert obs["agent_0"]["action_mask"][UP2:RIGHT2 + 1].tolist() == [1, 1, 1, 1]
    assert obs["agent_1"]["action_mask"][UP2:RIGHT2 + 1].tolist() == [0, 0, 0, 0]
    env.step({"agent_0": UP2, "agent_1": STAY})
    assert env.state()["entities"][0, 2:4] * 15 == pytest.approx([5, 7])


def test_move_conflicts_resolve_in_slot_order():
    env, _ = _layout_env([("firefighter", 3, 3), ("builder", 5, 3)],
                         [{"pos": (13, 13), "health": 0.5}])
    env.step({"agent_0": RIGHT, "agent_1": 3})  # both target (4, 3): the lower slot wins
    ents = env.state()["entities"]
    assert ents[0, 2:4] * 15 == pytest.approx([4, 3])
    assert ents[1, 2:4] * 15 == pytest.approx([5, 3])
    # a double move is blocked when an earlier agent takes its middle cell
    env, _ = _layout_env([("builder", 4, 4), ("generalist", 3, 3)],
                         [{"pos": (13, 13), "health": 0.5}])
    env.step({"agent_0": 2, "agent_1": RIGHT2})  # builder moves down into (4, 3)
    ents = env.state()["entities"]
    assert ents[0, 2:4] * 15 == pytest.approx([4, 3])
    assert ents[1, 2:4] * 15 == pytest.approx([3, 3])


def test_double_move_needs_free_middle_cell():
    env, obs = _layout_env([("generalist", 3, 3), ("builder", 3, 4)],
                           [{"pos": (13, 13), "health": 0.5}])
    assert obs["agent_0"]["action_mask"][UP] == 0
    assert obs["agent_0"]["action_mask"][UP2] == 0
    assert obs["agent_0"]["action_mask"][RIGHT2] == 1


# ---------------------------------------------------------------------- rules
def test_firefighter_lowers_fire_by_a_quarter():
    env, obs = _layout_env([("firefighter", 2, 1)],
                           [{"pos": (1, 1), "health": 0.5, "fire": 0.6, "ignite_period": 500}])
    mask = obs["agent_0"]["action_mask"]
    assert mask[EXTINGUISH] == 1 and mask[BUILD] == 0 and mask[FREEZE] == 0
    env.step({"agent_0": EXTINGUISH})
    assert _building(env, 0, F_FIRE) == pytest.approx(0.35)
    assert _building(env, 0, F_HEALTH) == pytest.approx(0.5 - 0.35 * 1.0 * 0.035)


def test_unfought_fire_grows_and_burns_by_rate():
    env, _ = _layout_env([("firefighter", 8, 8)], [
        {"pos": (1, 1), "health": 0.5, "fire": 0.5, "fast_burn": True, "ignite_period": 500},
        {"pos": (4, 1), "health": 0.5, "fire": 0.5, "fast_burn": False, "ignite_period": 500},
        {"pos": (7, 1), "health": 0.5, "fire": 0.95, "ignite_period": 500},
    ])
    _stay_all(env)
    assert _building(env, 0, F_FIRE) == pytest.approx(0.55)
    assert _building(env, 0, F_HEALTH) == pytest.approx(0.5 - 0.55 * 1.0 * 0.035)
    assert _building(env, 1, F_HEALTH) == pytest.approx(0.5 - 0.55 * 0.5 * 0.035)
    assert _building(env, 2, F_FIRE) == pytest.approx(1.0)  # capped at 1


def test_frozen_building_loses_no_health_while_frozen():
    env, obs = _layout_env([("generalist", 2, 1)],
                           [{"pos": (1, 1), "health": 0.5, "fire": 0.5, "ignite_period": 500}])
    assert obs["agent_0"]["action_mask"][FREEZE] == 1
    env.step({"agent_0": FREEZE})
    assert _building(env, 0, F_HEALTH) == pytest.approx(0.5)
    assert _building(env, 0, F_FIRE) == pytest.approx(0.55)  # freezing does not fight fire
    assert _building(env, 0, F_FROZEN) == 1.0
    env.step({"agent_0": FREEZE})
    assert _building(env, 0, F_HEALTH) == pytest.approx(0.5)
    env.step({"agent_0": STAY})  # the freeze lasts only while a generalist keeps freezing
    assert _building(env, 0, F_FROZEN) == 0.0
    assert _building(env, 0, F_HEALTH) < 0.5


def test_builder_builds_only_without_fire():
    env, obs = _layout_env([("builder", 2, 1), ("builder", 4, 2)], [
        {"pos": (1, 1), "health": 0.5, "fire": 0.0, "ignite_period": 500},
        {"pos": (4, 1), "health": 0.5, "fire": 0.3, "ignite_period": 500},
    ])
    assert obs["agent_0"]["action_mask"][BUILD] == 1
    assert obs["agent_1"]["action_mask"][BUILD] == 0
    assert obs["agent_1"]["action_mask"][EXTINGUISH] == 1
    env.step({"agent_0": BUILD, "agent_1": EXTINGUISH})
    assert _building(env, 0, F_HEALTH) == pytest.approx(0.625)
    assert _building(env, 1, F_FIRE) == pytest.approx(0.3 - 0.05 * 0.25)


def test_generalist_adds_the_missing_skill():
    env, _ = _layout_env([("builder", 2, 1), ("generalist", 1, 2), ("firefighter", 5, 1),
                          ("generalist", 4, 2)], [
        {"pos": (1, 1), "health": 0.5, "fire": 0.8, "ignite_period": 500},
        {"pos": (4, 1), "health": 0.5, "fire": 0.0, "ignite_period": 500},
    ])
    env.step({"agent_0": EXTINGUISH, "agent_1": EXTINGUISH, "agent_2": BUILD,
              "agent_3": BUILD})
    assert _building(env, 0, F_FIRE) == pytest.approx(0.8 - (0.05 + 0.45) * 0.25)
    assert _building(env, 1, F_HEALTH) == pytest.approx(0.5 + (0.05 + 0.45) * 0.125)


def test_generalist_alone_does_not_fight_fire():
    env, _ = _layout_env([("generalist", 2, 1)],
                         [{"pos": (1, 1), "health": 0.5, "fire": 0.5, "ignite_period": 500}])
    env.step({"agent_0": EXTINGUISH})
    assert _building(env, 0, F_FIRE) == pytest.approx(0.55)


def test_ignition_period():
    env, _ = _layout_env([("firefighter", 8, 8)],
                         [{"pos": (1, 1), "health": 0.9, "fire": 0.0, "ignite_period": 3}])
    for _ in range(2):
        _stay_all(env)
        assert _building(env, 0, F_FIRE) == 0.0
    _stay_all(env)
    assert _building(env, 0, F_FIRE) == 1.0


def test_completed_building_never_changes_or_reignites():
    env, _ = _layout_env([("builder", 2, 1)], [
        {"pos": (1, 1), "health": 0.9, "ignite_period": 2},
        {"pos": (10, 10), "health": 0.7, "ignite_period": 500},
    ])
    env.step({"agent_0": BUILD})
    assert _building(env, 0, F_COMPLETE) == 1.0
    assert env.state()["task_mask"][0] == 0
    for _ in range(10):
        obs, *_ = _stay_all(env)
        assert _building(env, 0, F_FIRE) == 0.0
        assert _building(env, 0, F_HEALTH) == 1.0
        assert obs["agent_0"]["action_mask"][BUILD] == 0  # resolved: no interaction
    assert env.state()["entity_mask"][env.max_agents] == 1  # still a live entity


def test_burned_building_never_reignites():
    env, _ = _layout_env([("firefighter", 8, 8)], [
        {"pos": (1, 1), "health": 0.01, "fire": 1.0, "ignite_period": 2},
        {"pos": (10, 10), "health": 0.7, "ignite_period": 500},
    ])
    _, rewards, *_ = _stay_all(env)
    assert _building(env, 0, F_BURNED) == 1.0
    assert rewards["agent_0"] == pytest.approx(env.reward_scale * (10 * -0.01 - 20))
    for _ in range(6):
        _stay_all(env)
        assert _building(env, 0, F_FIRE) == 0.0
        assert _building(env, 0, F_HEALTH) == 0.0


def test_solving_ends_the_episode_with_bonus():
    env, _ = _layout_env([("builder", 2, 1)], [{"pos": (1, 1), "health": 0.95}])
    _, rewards, terms, truncs, infos = env.step({"agent_0": BUILD})
    scale = env.reward_scale
    assert terms == {"agent_0": True} and truncs == {"agent_0": False}
    assert rewards["agent_0"] == pytest.approx(scale * (10 * 0.05 + 1 + 20))
    assert infos["agent_0"]["task_rewards"][0] == pytest.approx(scale * (10 * 0.05 + 20))
    assert infos["agent_0"]["solved"] is True
    assert infos["agent_0"]["tasks_completed_frac"] == 1.0
    assert infos["agent_0"]["tasks_burned_frac"] == 0.0
    assert env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_truncation_at_max_cycles():
    env = parallel_env(max_cycles=5)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        agents = list(env.agents)
        obs, _, terms, truncs, infos = env.step(_random_actions(rng, obs))
    assert all(truncs.values()) and not any(terms.values())
    assert set(truncs) == set(agents)
    info = infos[agents[0]]
    assert {"solved", "tasks_completed_frac", "tasks_burned_frac"} <= set(info)
    assert env.agents == []


# ---------------------------------------------------------------------- observations
def test_sight_range_hides_far_entities():
    layout = ([("firefighter", 0, 0), ("builder", 2, 2)],
              [{"pos": (10, 10), "health": 0.5}, {"pos": (3, 3), "health": 0.5}])
    env, obs = _layout_env(*layout, sight_range=2)
    m = env.max_agents
    o = obs["agent_0"]
    assert o["obs_mask"][0] == 1 and o["obs_mask"][1] == 1
    assert o["obs_mask"][m] == 0 and o["obs_mask"][m + 1] == 0
    assert not o["entities"][m].any()  # hidden rows carry no features
    assert o["entity_mask"][m] == 1  # but the building is still a live entity
    assert obs["agent_1"]["obs_mask"][m + 1] == 1
    assert obs["agent_1"]["entities"][m + 1, F_HEALTH] == pytest.approx(0.5)
    assert env.state()["entities"][m, F_HEALTH] == pytest.approx(0.5)
    full_env, full_obs = _layout_env(*layout, sight_range=None)
    assert (full_obs["agent_0"]["obs_mask"] == full_obs["agent_0"]["entity_mask"]).all()
    assert full_obs["agent_0"]["entities"][m, F_HEALTH] == pytest.approx(0.5)


def test_observation_layout():
    env = parallel_env()
    obs, _ = env.reset(seed=5)
    n, m = len(env.agents), env.max_agents
    n_b = int(env.state()["task_mask"].sum())
    assert n_b == n + 1
    for i, agent in enumerate(env.agents):
        o = obs[agent]
        assert int(o["agent_index"]) == i
        assert o["entity_mask"].tolist() == [1] * n + [0] * (m - n) + [1] * n_b + [0] * (
            env.max_buildings - n_b)
        assert (o["entity2task"][m:m + n_b] == np.eye(n_b, env.n_tasks, dtype=np.int8)).all()
        assert not o["entity2task"][:m].any()
        types = o["entities"][:n, F_TYPE:F_TYPE + 3]
        assert (types.sum(axis=1) == 1).all()
    assert not obs[env.agents[0]]["entities"][n:m].any()  # padding rows are zero


def test_observations_are_fresh_arrays():
    env = parallel_env()
    obs, _ = env.reset(seed=0)
    before = {k: v.copy() for k, v in obs["agent_0"].items()}
    rng = np.random.default_rng(0)
    latest = obs
    for _ in range(5):
        latest, *_ = env.step(_random_actions(rng, latest))
    for key, value in before.items():
        assert (obs["agent_0"][key] == value).all(), key


# ---------------------------------------------------------------------- episodes
def test_team_sizes_and_diversity_vary_across_resets():
    env = parallel_env()
    sizes = set()
    for seed in range(60):
        env.reset(seed=seed)
        n = len(env.agents)
        sizes.add(n)
        types = env.state()["entities"][:n, F_TYPE:F_TYPE + 3].argmax(axis=1)
        assert len(set(types.tolist())) >= min(3, n)
        assert int(env.state()["task_mask"].sum()) == n + 1
    assert sizes == {2, 3, 4, 5}


def test_fixed_team_scenarios():
    env = parallel_env(scenario="3a_4b")
    env.reset(seed=0)
    assert env.agents == ["agent_0", "agent_1", "agent_2"]
    assert int(env.state()["task_mask"].sum()) == 4
    explicit = parallel_env(scenario={"agent_types": ["builder", "generalist"], "n_buildings": 2})
    explicit.reset(seed=0)
    types = explicit.state()["entities"][:2, F_TYPE:F_TYPE + 3].argmax(axis=1)
    assert types.tolist() == [1, 2]


def test_buildings_on_lattice_and_agents_near_centre():
    env = parallel_env(scenario="2-8a_2-8b")
    for seed in range(10):
        env.reset(seed=seed)
        state = env.state()
        cells = np.rint(state["entities"][:, 2:4] * 15).astype(int)
        m, n = env.max_agents, len(env.agents)
        n_b = int(state["task_mask"].sum())
        assert set(cells[m:m + n_b].ravel().tolist()) <= {1, 4, 7, 10, 13}
        assert len({tuple(c) for c in cells[m:m + n_b]}) == n_b
        assert (np.abs(cells[:n] - 7.5) <= 2.5).all()


def test_random_policy_completes_few_buildings():
    env = parallel_env()
    rng = np.random.default_rng(0)
    completed, solved = [], []
    for episode in range(15):
        obs, _ = env.reset(seed=episode)
        while env.agents:
            obs, _, _, _, infos = env.step(_random_actions(rng, obs))
        info = next(iter(infos.values()))
        completed.append(info["tasks_completed_frac"])
        solved.append(info["solved"])
    assert np.mean(completed) < 0.1
    assert not any(solved)


def test_same_seed_same_rollout():
    def rollout(seed):
        env = parallel_env(sight_range=3)
        rng = np.random.default_rng(11)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for _ in range(120):
            if not env.agents:
                obs, _ = env.reset()
                trace.append(obs)
                continue
            out = env.step(_random_actions(rng, obs))
            obs = out[0]
            trace.append(out)
        return trace

    assert data_equivalence(rollout(4), rollout(4))
    assert not data_equivalence(rollout(4), rollout(5))


def test_task_rewards_sum_relationship():
    """sum(task_rewards) == team reward + scale * (19 * completed_now - 20 * solved)."""
    env = parallel_env(scenario="2-5a_2-5b")
    scale = env.reward_scale
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        complete_before = env.state()["entities"][:, F_COMPLETE].sum()
        while env.agents:
            obs, rewards, _, _, infos = env.step(_random_actions(rng, obs))
            agent = next(iter(rewards))
            complete_now = env.state()["entities"][:, F_COMPLETE].sum()
            n_completed = complete_now - complete_before
            complete_before = complete_now
            solved = infos[agent].get("solved", False)
            expected = rewards[agent] + scale * (19 * n_completed - 20 * solved)
            assert infos[agent]["task_rewards"].sum() == pytest.approx(expected, abs=1e-5)
            assert len(set(rewards.values())) == 1  # every agent gets the team reward
            checked += 1
    assert checked > 100


# ---------------------------------------------------------------------- helpers
def test_heuristic_allocation_prefers_by_type():
    env, _ = _layout_env(
        [("firefighter", 5, 5), ("builder", 5, 6), ("generalist", 6, 5)],
        [
            {"pos": (5, 8), "health": 0.5, "fire": 0.0},   # near, calm
            {"pos": (9, 9), "health": 0.5, "fire": 0.7},   # farther, burning
            {"pos": (0, 0), "health": 0.5, "fire": 0.0},
        ],
    )
    alloc = env.heuristic_allocation()
    assert alloc.dtype == np.int64 and alloc.shape == (env.max_agents,)
    assert alloc.tolist() == [1, 0, 1, 0, 0]  # slots 3 and 4 are not in this team
    nearest = heuristic_allocation(env.state(), env.max_agents, generalist_prefers_fire=False)
    assert nearest.tolist() == [1, 0, 0, 0, 0]
    padded = heuristic_allocation(env.state(), 3)
    assert padded.tolist() == [1, 0, 1]


def test_heuristic_allocation_skips_resolved_and_dead_slots():
    env, _ = _layout_env([("builder", 2, 1)], [
        {"pos": (1, 1), "health": 0.95},
        {"pos": (13, 13), "health": 0.5},
    ])
    env.step({"agent_0": BUILD})
    assert env.state()["task_mask"][0] == 0  # building 0 is complete
    assert env.heuristic_allocation().tolist() == [1, 0, 0, 0, 0]


def test_set_assignment_validates():
    env = parallel_env()
    env.reset(seed=0)
    env.set_assignment({"agent_0": 1})
    env.set_assignment(None)
    with pytest.raises(ValueError, match="agent_9"):
        env.set_assignment({"agent_9": 0})
    with pytest.raises(ValueError, match="task"):
        env.set_assignment({"agent_0": 6})


def test_render_rgb_array():
    env = parallel_env(scenario="2-8a_2-8b", sight_range=3, render_mode="rgb_array")
    obs, _ = env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(10):
        obs, *_ = env.step(_random_actions(rng, obs))
    plain = env.render()
    env.set_assignment(dict(zip(env.agents, env.heuristic_allocation().tolist(), strict=False)))
    image = env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 512 and image.shape[1] >= 512
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10
    assert (image != plain).any()  # assignment lines are drawn


@pytest.mark.skipif(bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
                    reason="a display is available")
def test_human_render_without_display_raises():
    env = parallel_env(render_mode="human")
    with pytest.raises(RuntimeError, match="rgb_array"):
        env.reset(seed=0)


def test_unknown_argument_is_named():
    with pytest.raises(ValueError, match="sight"):
        parallel_env(sight=3)


def test_render_needs_a_mode():
    env = parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="render_mode"):
        env.render()


# ------------------------------------------------------------------ recorded behaviour
# Digests recorded from the single-module implementation this package was split from: the
# rules, the random draws and the drawing must not change under refactoring.
RECORDED_ROLLOUTS = {
    ("2-5a_2-5b", None, 150, 0): "06c50786c4c44467e17a74175e9bc37180d5e07c131f7d46b7b149f1dde92db6",
    ("2-8a_2-8b", 3, 20, 1): "d4ea911462118d6ca13b352b25798bbd76ebd28f1543877c503862bd820ffaeb",
}
# Text is drawn with Pillow's bundled FreeType font, so the frame digest holds for this Pillow.
RECORDED_FRAMES_PILLOW = "13.0.0"
RECORDED_FRAMES = "3cf2432f95764777b63cfca44ea70a2e23d4390195a1bb8ce670db2ed39fb080"


def _digest(h, value):
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            _digest(h, value[key])
    else:
        array = np.ascontiguousarray(value)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())


@pytest.mark.parametrize(("scenario", "sight_range", "max_cycles", "seed"), list(RECORDED_ROLLOUTS))
def test_seeded_random_rollout_matches_the_recorded_digest(scenario, sight_range, max_cycles, seed):
    """50 random steps (with a reset after each episode): observations, rewards, flags, infos
    and state() digest to the recorded value."""
    env = parallel_env(scenario=scenario, sight_range=sight_range, max_cycles=max_cycles)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    obs, infos = env.reset(seed=seed)
    for value in (obs, infos, env.state()):
        _digest(h, value)
    for _ in range(50):
        if not env.agents:
            obs, infos = env.reset()
            for value in (obs, infos, env.state()):
                _digest(h, value)
        obs, rewards, terms, truncs, infos = env.step(_random_actions(rng, obs))
        for value in (obs, rewards, terms, truncs, infos, env.state()):
            _digest(h, value)
    assert h.hexdigest() == RECORDED_ROLLOUTS[(scenario, sight_range, max_cycles, seed)]


def _recorded_frames():
    """Frames covering sight boxes, assignment lines, fire, freeze, completion and burning."""
    env = parallel_env(scenario="2-8a_2-8b", sight_range=3, render_mode="rgb_array")
    rng = np.random.default_rng(4)
    obs, _ = env.reset(seed=4)
    env.set_assignment({a: i % env.n_tasks for i, a in enumerate(reversed(env.possible_agents))})
    for t in range(150):
        if t % 15 == 0 or not env.agents:
            yield env.render()
        if not env.agents:
            break
        obs, *_ = env.step(_random_actions(rng, obs))
    env = parallel_env(
        scenario={"agent_types": ["builder", "generalist", "firefighter"], "n_buildings": 4},
        sight_range=2, render_mode="rgb_array",
    )
    layout = {
        "agents": [("builder", 2, 1), ("generalist", 5, 4), ("firefighter", 8, 8)],
        "buildings": [
            {"pos": (1, 1), "health": 0.95},
            {"pos": (10, 10), "health": 0.01, "fire": 1.0},
            {"pos": (4, 4), "health": 0.5, "fire": 0.5},
            {"pos": (12, 3), "health": 0.3, "fire": 0.2, "fast_burn": False},
        ],
    }
    env.reset(seed=0, options={"layout": layout})
    env.set_assignment({"agent_2": 1, "agent_0": 0, "agent_1": 3})
    yield env.render()
    env.step({"agent_0": BUILD, "agent_1": FREEZE, "agent_2": STAY})  # complete, frozen, burned
    view = env.city_view()
    assert view.complete.tolist() == [True, False, False, False]
    assert view.burned.tolist() == [False, True, False, False]
    assert view.frozen.tolist() == [False, False, True, False]
    yield env.render()


def test_render_matches_the_recorded_frames():
    import PIL

    if PIL.__version__ != RECORDED_FRAMES_PILLOW:
        pytest.skip(f"frames recorded with Pillow {RECORDED_FRAMES_PILLOW}, "
                    f"installed {PIL.__version__}")
    h = hashlib.sha256()
    for frame in _recorded_frames():
        assert frame.shape == (556, 512, 3) and frame.dtype == np.uint8
        h.update(frame.tobytes())
    assert h.hexdigest() == RECORDED_FRAMES


def test_city_view_is_a_read_only_snapshot():
    env = parallel_env(scenario="3a_4b", sight_range=2, render_mode="rgb_array")
    obs, _ = env.reset(seed=5)
    env.set_assignment({"agent_1": 2})
    view = env.city_view()
    state = env.state()["entities"]
    m, n_b = env.max_agents, len(view.building_pos)
    assert view.agent_pos.shape == (len(env.agents), 2) and len(view.agent_types) == 3
    np.testing.assert_allclose(view.agent_pos / 15, state[:m, 2:4])
    np.testing.assert_allclose(view.health, state[m:m + n_b, F_HEALTH], rtol=1e-6)
    np.testing.assert_allclose(view.fire, state[m:m + n_b, F_FIRE], rtol=1e-6)
    assert view.assignment == ((1, 2),) and view.t == 0 and view.sight_range == 2
    for array in (view.agent_pos, view.building_pos, view.health, view.fire, view.frozen):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    before = {k: np.copy(v) for k, v in vars(view).items() if isinstance(v, np.ndarray)}
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, *_ = env.step(_random_actions(rng, obs))
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(view, key), value)  # a snapshot, not a live view
    np.testing.assert_array_equal(env.render(), draw_city(env.city_view()))


def test_city_view_needs_reset():
    with pytest.raises(RuntimeError, match="reset"):
        parallel_env().city_view()
