"""The multi-robot warehouse through the entity-task contract (envs.rware)."""

from functools import partial

import numpy as np
import pytest

pytest.importorskip("rware")

from conftest import (  # noqa: E402
    check_install_hint,
    check_rgb_array_render,
    check_rllib_env_checks,
)
from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402
from rware.warehouse import Direction  # noqa: E402

from envs.contract import check_env  # noqa: E402
from envs.rware import (  # noqa: E402
    F_CARRYING,
    F_DIR,
    F_IS_AGENT,
    F_IS_GOAL,
    F_IS_SHELF,
    F_REQUESTED,
    F_X,
    F_Y,
    RWARETasks,
    flat_parallel_env,
    nearest_request_allocation,
    parallel_env,
)

TINY = "rware-tiny-2ag-v2"
NOOP, FORWARD, TOGGLE_LOAD = 0, 1, 4


def rollout(env, seed=0, steps=None):
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    n = 0
    while env.agents and (steps is None or n < steps):
        out = env.step({a: np.int64(rng.integers(5)) for a in env.agents})
        yield out
        n += 1


def delivery_setup(env):
    """Put agent_0 one cell above goal 0, facing down, carrying request slot 0's shelf, and
    agent_1 out of the way; returns the slot's shelf index."""
    wh = env.unwrapped_env
    goal_x, goal_y = wh.goals[0]
    shelf = wh.request_queue[0]
    robot, other = wh.agents
    robot.x, robot.y, robot.dir = goal_x, goal_y - 1, Direction.DOWN
    shelf.x, shelf.y = robot.x, robot.y
    robot.carrying_shelf = shelf
    other.x, other.y = 0, 0
    wh._recalc_grid()
    return shelf.id - 1


def test_layout_and_spaces():
    env = parallel_env(TINY)
    assert (env.n_agents, env.n_shelves, env.n_goals, env.n_tasks) == (2, 32, 2, 2)
    space = env.observation_space("agent_0")
    assert space["entities"].shape == (36, 11)
    assert space["entity2task"].shape == (36, 2)
    assert space["action_mask"].shape == (5,)
    env.reset(seed=0)
    assert len(env.unwrapped_env.shelfs) == env.n_shelves


@pytest.mark.parametrize("kwargs", [{}, {"sensor_range": 2}, {"reward_type": "global"}])
def test_contract_checker_passes(kwargs):
    check_env(parallel_env("rware-tiny-4ag-easy-v2", **kwargs), n_steps=60)


def test_pettingzoo_parallel_api_and_seed_tests():
    parallel_api_test(parallel_env(TINY, max_steps=25), num_cycles=40)
    parallel_seed_test(lambda: parallel_env(TINY), num_cycles=40)
    parallel_api_test(flat_parallel_env(TINY, max_steps=25), num_cycles=40)


def test_env_id_keyword_matches_positional():
    first = list(rollout(parallel_env(env_id=TINY), seed=5, steps=20))
    second = list(rollout(parallel_env(TINY), seed=5, steps=20))
    assert data_equivalence(first, second)


def test_features_follow_the_warehouse():
    env = parallel_env("rware-tiny-4ag-v2")
    wh = env.unwrapped_env
    for _ in rollout(env, seed=1, steps=40):
        state = env.state()
        ents = state["entities"]
        scale = np.array([env.width - 1, env.height - 1])
        for i, robot in enumerate(wh.agents):
            assert ents[i, F_IS_AGENT] == 1
            np.testing.assert_allclose(ents[i, [F_X, F_Y]], np.array([robot.x, robot.y]) / scale)
            assert np.flatnonzero(ents[i, F_DIR:F_DIR + 4]).tolist() == [robot.dir.value]
            assert ents[i, F_CARRYING] == (robot.carrying_shelf is not None)
        for shelf in wh.shelfs:
            row = 4 + shelf.id - 1
            assert ents[row, F_IS_SHELF] == 1
            np.testing.assert_allclose(ents[row, [F_X, F_Y]], np.array([shelf.x, shelf.y]) / scale)
            assert ents[row, F_REQUESTED] == (shelf in wh.request_queue)
        for slot, shelf in enumerate(wh.request_queue):
            assert np.flatnonzero(state["entity2task"][:, slot]).tolist() == [4 + shelf.id - 1]
        assert (ents[-2:, F_IS_GOAL] == 1).all()
        assert state["task_mask"].tolist() == [1] * 4


def test_obs_mask_is_the_sensor_square():
    """The mask counts exactly the robots, shelves and requested shelves RWARE's own
    (dict) observation reports in each robot's sensor cells."""
    env = parallel_env("rware-tiny-4ag-v2", sensor_range=2, observation_type="dict")
    wh = env.unwrapped_env
    n, goals = 4, env.n_goals
    for out in rollout(env, seed=2, steps=40):
        obs = out[0]
        state = env.state()
        for i, robot in enumerate(wh.agents):
            mask = obs[f"agent_{i}"]["obs_mask"]
            sensors = wh._get_default_obs(robot)["sensors"]
            assert mask[:n].sum() == sum(c["has_agent"][0] for c in sensors)
            assert mask[n:-goals].sum() == sum(c["has_shelf"][0] for c in sensors)
            seen_requested = (mask == 1) & (state["entities"][:, F_REQUESTED] == 1)
            assert seen_requested.sum() == sum(c["shelf_requested"][0] for c in sensors)
            assert mask[-goals:].all()
            assert (obs[f"agent_{i}"]["entities"][mask == 0] == 0).all()


def test_sensor_range_hides_a_far_requested_shelf():
    env = parallel_env(TINY)
    obs, _ = env.reset(seed=0)
    wh = env.unwrapped_env
    robot = wh.agents[0]
    far = [s for s in wh.request_queue if max(abs(s.x - robot.x), abs(s.y - robot.y)) > 1]
    assert far, "seed 0 puts a requested shelf next to agent_0; pick another seed"
    row = 2 + far[0].id - 1
    assert obs["agent_0"]["obs_mask"][row] == 0
    assert (obs["agent_0"]["entities"][row] == 0).all()
    assert env.state()["entities"][row, F_REQUESTED] == 1


@pytest.mark.parametrize("reward_type, paid", [("individual", 1.0), ("global", 2.0)])
def test_a_delivery_credits_its_request_slot(reward_type, paid):
    env = parallel_env(TINY, reward_type=reward_type)
    env.reset(seed=3)
    shelf = delivery_setup(env)
    obs, rewards, terms, truncs, infos = env.step({"agent_0": FORWARD, "agent_1": NOOP})
    task_rewards = infos["agent_0"]["task_rewards"]
    assert task_rewards.tolist() == [paid, 0.0]
    assert sum(rewards.values()) == pytest.approx(task_rewards.sum())
    np.testing.assert_array_equal(infos["agent_1"]["task_rewards"], task_rewards)
    new_shelf = env.requested_shelves()[0]
    assert new_shelf != shelf
    e2t = obs["agent_0"]["entity2task"][:, 0]
    assert np.flatnonzero(e2t).tolist() == [2 + new_shelf]
    assert obs["agent_0"]["task_mask"].tolist() == [1, 1]
    assert not any(terms.values()) and not any(truncs.values())


def test_two_deliveries_in_one_step_credit_their_own_slots():
    env = parallel_env(TINY)
    env.reset(seed=3)
    wh = env.unwrapped_env
    for robot, (goal_x, goal_y), shelf in zip(wh.agents, wh.goals, wh.request_queue,
                                              strict=True):
        robot.x, robot.y, robot.dir = goal_x, goal_y - 1, Direction.DOWN
        shelf.x, shelf.y = robot.x, robot.y
        robot.carrying_shelf = shelf
    wh._recalc_grid()
    _, rewards, _, _, infos = env.step({"agent_0": FORWARD, "agent_1": FORWARD})
    assert rewards == {"agent_0": 1.0, "agent_1": 1.0}
    assert infos["agent_0"]["task_rewards"].tolist() == [1.0, 1.0]


def test_step_limit_is_a_truncation_with_the_delivery_count():
    env = parallel_env(TINY, max_steps=6)
    env.reset(seed=3)
    delivery_setup(env)
    for step in range(6):
        action = FORWARD if step == 0 else NOOP
        _, _, terms, truncs, infos = env.step({"agent_0": action, "agent_1": NOOP})
        assert not any(terms.values())
        assert all(truncs.values()) == (step == 5)
    assert infos["agent_0"]["deliveries"] == 1
    assert env.agents == []


def test_nearest_request_allocation_closed_cases():
    # robot 1 carries slot 1's shelf (index 7) and keeps it; robot 0 takes slot 0
    alloc = nearest_request_allocation([(0, 0), (9, 9)], [(1, 0), (0, 1)], [3, 7], [-1, 7])
    assert alloc.tolist() == [0, 1]
    # closest pairs first: robot 1 is next to slot 0, so robot 0 gets slot 1
    alloc = nearest_request_allocation([(0, 0), (5, 5)], [(5, 6), (2, 0)], [3, 7], [-1, -1])
    assert alloc.tolist() == [1, 0]
    # more robots than requests: the extra robot joins its nearest request
    alloc = nearest_request_allocation([(0, 0), (1, 0), (9, 9)], [(0, 1), (9, 8)], [3, 7],
                                       [-1, -1, -1])
    assert alloc.tolist() == [0, 0, 1]


def test_heuristic_allocation_is_valid_and_keeps_a_carried_request():
    env = parallel_env(TINY)
    env.reset(seed=3)
    delivery_setup(env)
    assert env.heuristic_allocation()[0] == 0
    for _ in rollout(env, seed=4, steps=30):
        alloc = env.heuristic_allocation()
        assert alloc.shape == (2,) and alloc.dtype == np.int64
        assert ((alloc >= 0) & (alloc < env.n_tasks)).all()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("rware-huge-2ag-v2",), {}, "not registered.*sensor_range"),
        (("CartPole-v1",), {}, "registered for"),
        ((TINY,), {"sensor_rnage": 2}, r"unknown argument.*sensor_rnage.*sensor_range"),
        ((TINY,), {"reward_type": "two_stage"}, "TWO_STAGE"),
        ((TINY,), {"reward_type": "shared"}, "reward_type"),
        ((TINY,), {"msg_bits": 2}, "msg_bits"),
        ((TINY,), {"request_queue_size": 0}, "request_queue_size"),
    ],
)
def test_bad_env_arguments_name_the_field(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel_env(*args, **kwargs)


def test_missing_rware_says_how_to_install(monkeypatch):
    check_install_hint(monkeypatch, ["rware.warehouse"], "rware", partial(RWARETasks, TINY))


def test_flat_env_gives_rware_own_vector_observation():
    env = flat_parallel_env(TINY, max_steps=3)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        for i, agent in enumerate(env.possible_agents):
            np.testing.assert_array_equal(obs[agent], env.env._make_obs(env.env.agents[i]))
        obs, _, terms, truncs, _ = env.step(dict.fromkeys(env.agents, NOOP))
    assert all(truncs.values()) and not any(terms.values()) and env.agents == []


def test_registered_for_the_hierarchy_with_the_heuristic():
    from rllib_alma_mi.registry import make_env

    env = make_env("rware", {"env_id": TINY, "_hierarchy": {"allocation": "heuristic"}})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"agent_0", "agent_1"}
    expected = env.base.heuristic_allocation()
    assert env.allocation() == {"agent_0": int(expected[0]), "agent_1": int(expected[1])}


def test_workers_under_the_subtask_mask_see_the_goals_and_unrequested_shelves():
    """Goals and unrequested shelves belong to no task: every worker keeps them in sight,
    and loses only the other tasks' shelves and the agents on other tasks."""
    from rllib_alma_mi.registry import make_env

    env = make_env("rware", {"env_id": TINY, "sensor_range": 3,
                             "_hierarchy": {"allocation": "heuristic"}})
    obs, _ = env.reset(seed=0)
    base = env.base
    state = base.state()
    owner = np.where(state["entity2task"].any(axis=1), state["entity2task"].argmax(axis=1), -1)
    allocation = env.allocation()
    n = base.n_agents
    for i, agent in enumerate(base.possible_agents):
        sight = base.visibility()[i].astype(bool)
        hidden = (owner >= 0) & (owner != allocation[agent])
        hidden[:n] = [allocation[other] != allocation[agent] for other in base.possible_agents]
        hidden[i] = False
        expected = sight & ~hidden
        np.testing.assert_array_equal(obs[agent]["obs_mask"].astype(bool), expected)
        assert expected[base._goal0:].all()
        assert expected[n:base._goal0][owner[n:base._goal0] < 0].any()


def test_render_rgb_array_draws_the_grid():
    env, frame = check_rgb_array_render(partial(parallel_env, TINY), (11 * 32, 10 * 32, 3))
    shelf = env.unwrapped_env.request_queue[0]
    assert tuple(frame[shelf.y * 32 + 16, shelf.x * 32 + 16]) == (40, 160, 160)  # requested
    with pytest.raises(ValueError, match="render_mode"):
        parallel_env(TINY, render_mode="human")


def test_rllib_env_check_passes_on_the_hierarchy_and_the_flat_env():
    check_rllib_env_checks(parallel_env(TINY), flat_parallel_env(TINY))
