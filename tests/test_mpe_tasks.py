"""MPE simple_spread through the entity-task contract (envs.mpe_tasks)."""

import numpy as np
import pytest

pytest.importorskip("mpe2")

from conftest import (  # noqa: E402
    check_install_hint,
    check_rgb_array_render,
    small_config,
    train_once,
)
from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from mpe2 import simple_spread_v3  # noqa: E402
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from envs.contract import check_env  # noqa: E402
from envs.mpe_tasks import (  # noqa: E402
    COVER_RADIUS,
    F_IS_AGENT,
    F_IS_LANDMARK,
    FEATURES,
    MPESpreadTasks,
    parallel_env,
)

AGENT_SIZE = 0.15


def random_rollout(env, wrapped=None, seed=0, steps=None):
    """Step `env` (and `wrapped` with the same actions) to the end; yields step outputs."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    if wrapped is not None:
        wrapped.reset(seed=seed)
    n = 0
    while env.agents and (steps is None or n < steps):
        actions = {a: np.int64(rng.integers(5)) for a in env.agents}
        out = env.step(actions)
        out_wrapped = wrapped.step(dict(actions)) if wrapped is not None else None
        n += 1
        yield out, out_wrapped


def collision_penalties(world):
    pos = np.array([a.state.p_pos for a in world.agents])
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    close = (dist < 2 * AGENT_SIZE) & ~np.eye(len(pos), dtype=bool)
    return -close.sum(axis=1).astype(np.float64)


def test_layout_constants():
    assert FEATURES == ("x", "y", "vx", "vy", "is_agent", "is_landmark")
    env = parallel_env(N=4)
    space = env.observation_space("agent_0")
    assert space["entities"].shape == (8, len(FEATURES))
    assert space["entity2task"].shape == (8, 4)
    assert space["action_mask"].shape == (5,)
    assert env.metadata["name"] == "mpe_spread_v0"


@pytest.mark.parametrize("kwargs", [{}, {"N": 4, "sight_radius": 0.6}, {"sight_radius": 0.0}])
def test_contract_checker_passes(kwargs):
    check_env(parallel_env(**kwargs), n_steps=60)


def test_pettingzoo_parallel_api_and_seed_tests():
    parallel_api_test(parallel_env(sight_radius=0.5), num_cycles=60)
    parallel_seed_test(lambda: parallel_env(sight_radius=0.5))


def test_observation_follows_world_state():
    env = parallel_env(N=3)
    obs, infos = env.reset(seed=3)
    world = env.world
    state = env.state()
    bodies = list(world.agents) + list(world.landmarks)
    np.testing.assert_allclose(state["entities"][:, 0:2], [b.state.p_pos for b in bodies],
                               rtol=1e-6)
    np.testing.assert_allclose(state["entities"][:, 2:4], [b.state.p_vel for b in bodies])
    assert state["entities"][:3, F_IS_AGENT].tolist() == [1, 1, 1]
    assert state["entities"][3:, F_IS_LANDMARK].tolist() == [1, 1, 1]
    assert state["entity2task"][3:].tolist() == np.eye(3).tolist()
    assert not state["entity2task"][:3].any()
    assert state["task_mask"].tolist() == [1, 1, 1]
    for i, agent in enumerate(env.agents):
        assert int(obs[agent]["agent_index"]) == i
        assert obs[agent]["obs_mask"].tolist() == [1] * 6
        assert obs[agent]["action_mask"].tolist() == [1] * 5
        np.testing.assert_array_equal(obs[agent]["entities"], state["entities"])
        assert infos[agent]["task_rewards"].tolist() == [0.0, 0.0, 0.0]


def test_sight_radius_masks_and_hides_entities():
    radius = 0.7
    env = parallel_env(N=3, sight_radius=radius)
    for (obs, *_), _ in random_rollout(env, seed=5, steps=10):
        pos = env.state()["entities"][:, 0:2].astype(np.float64)
        for i, agent in enumerate(obs):
            dist = np.linalg.norm(pos - pos[i], axis=1)
            visible = dist <= radius
            assert obs[agent]["obs_mask"].astype(bool).tolist() == visible.tolist()
            assert not obs[agent]["entities"][~visible].any()
    blind = parallel_env(sight_radius=0.0)
    obs, _ = blind.reset(seed=0)
    assert np.flatnonzero(obs["agent_1"]["obs_mask"]).tolist() == [1]


def test_rewards_pass_through_exactly_and_task_rewards_sum_to_global_part():
    local_ratio = 0.3
    env = parallel_env(N=3, local_ratio=local_ratio, max_cycles=25)
    wrapped = simple_spread_v3.parallel_env(N=3, local_ratio=local_ratio, max_cycles=25,
                                            continuous_actions=False)
    steps = 0
    for (_, rew, terms, truncs, infos), (_, w_rew, w_terms, w_truncs, _) in random_rollout(
        env, wrapped, seed=11
    ):
        steps += 1
        assert rew == dict(w_rew)
        assert terms == w_terms and truncs == w_truncs
        penalties = collision_penalties(env.world)
        for i, agent in enumerate(rew):
            task_sum = float(infos[agent]["task_rewards"].astype(np.float64).sum())
            assert rew[agent] == pytest.approx(task_sum + local_ratio * penalties[i], abs=1e-5)
            global_part = (1 - local_ratio) * env._env.unwrapped.scenario.global_reward(env.world)
            assert task_sum == pytest.approx(global_part, abs=1e-5)
    assert steps == 25


def test_without_local_reward_task_rewards_are_the_reward():
    env = parallel_env(local_ratio=0.0)
    for (_, rew, _, _, infos), _ in random_rollout(env, seed=2, steps=10):
        for agent, r in rew.items():
            assert r == pytest.approx(float(infos[agent]["task_rewards"].sum()), abs=1e-5)


def test_episode_stats_only_at_the_last_step():
    env = parallel_env(max_cycles=4)
    outs = [out for out, _ in random_rollout(env, seed=0)]
    assert len(outs) == 4 and not env.agents
    for _, _, _, _, infos in outs[:-1]:
        assert "solved" not in infos["agent_0"]
    final = outs[-1][4]["agent_0"]
    assert isinstance(final["solved"], bool)
    assert 0.0 <= final["tasks_completed_frac"] <= 1.0
    assert final["tasks_burned_frac"] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_solved_when_every_landmark_is_covered():
    env = parallel_env(N=3, max_cycles=1)
    env.reset(seed=0)
    spots = np.array([[-0.6, -0.6], [0.0, 0.6], [0.6, -0.6]])
    for body_list in (env.world.agents, env.world.landmarks):
        for body, spot in zip(body_list, spots, strict=True):
            body.state.p_pos = spot.copy()
    _, _, _, truncs, infos = env.step({a: 0 for a in env.agents})
    assert all(truncs.values())
    assert infos["agent_0"]["solved"] is True
    assert infos["agent_0"]["tasks_completed_frac"] == 1.0

    env.reset(seed=0)
    only_first = spots[0] + [[COVER_RADIUS / 2, 0.0], [0.0, 0.8], [1.2, 0.8]]
    for body_list, places in ((env.world.agents, only_first), (env.world.landmarks, spots)):
        for body, place in zip(body_list, places, strict=True):
            body.state.p_pos = place.copy()
    _, _, _, _, infos = env.step({a: 0 for a in env.agents})
    assert infos["agent_0"]["solved"] is False
    assert infos["agent_0"]["tasks_completed_frac"] == pytest.approx(1 / 3)


def test_same_seed_same_rollout():
    first = [out for out, _ in random_rollout(parallel_env(sight_radius=0.8), seed=7)]
    second = [out for out, _ in random_rollout(parallel_env(sight_radius=0.8), seed=7)]
    assert len(first) == len(second) == 25
    assert data_equivalence(first, second)
    other = [out for out, _ in random_rollout(parallel_env(sight_radius=0.8), seed=8)]
    assert not data_equivalence(first[0][0], other[0][0])


def test_render_rgb_array():
    _, frame = check_rgb_array_render(parallel_env, (700, 700, 3))
    assert frame.std() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"continuous_actions": True}, "continuous_actions"),
        ({"N": 0}, "N"),
        ({"local_ratio": 1.5}, "local_ratio"),
        ({"sight_radius": -1.0}, "sight_radius"),
        ({"max_cycles": 0}, "max_cycles"),
        ({"render_mode": "video"}, "render_mode"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        parallel_env(**kwargs)


def test_missing_mpe2_says_how_to_install(monkeypatch):
    check_install_hint(monkeypatch, ["mpe2", "mpe2.simple_spread_v3"], "mpe", MPESpreadTasks)


def test_registered_for_the_hierarchy():
    from rllib_alma_mi.registry import make_env, registered_envs

    assert "mpe_spread" in registered_envs()
    env = make_env("mpe_spread", {"N": 3, "sight_radius": 1.0})
    obs, _ = env.reset(seed=0)
    assert obs


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_hierarchical_ppo_with_mi_trains_one_iteration():
    result = train_once(small_config(
        env="mpe_spread", env_config={"N": 3}, batch=400, width=32, mi_embed_dim=16,
    ))
    assert "mi_value" in result["learners"]["allocator"]
    assert np.isfinite(result["learners"]["allocator"]["mi_value"])
