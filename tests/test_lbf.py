"""Level-Based Foraging through the entity-task contract (envs.lbf)."""

from functools import partial

import numpy as np
import pytest

pytest.importorskip("lbforaging")

from conftest import (  # noqa: E402
    check_install_hint,
    check_rgb_array_render,
    check_rllib_env_checks,
    small_config,
    train_once,
)
from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from envs.contract import check_env  # noqa: E402
from envs.lbf import (  # noqa: E402
    F_COL,
    F_IS_AGENT,
    F_IS_FOOD,
    F_LEVEL,
    F_ROW,
    FEATURES,
    LBFTasks,
    flat_parallel_env,
    lift_allocation,
    parallel_env,
)

PARTIAL = "Foraging-2s-8x8-2p-2f-coop-v3"
FULL = "Foraging-8x8-3p-4f-v3"
LOAD, NONE = 5, 0


def rollout(env, seed=0, steps=None):
    """Random valid actions from reset to the end (or `steps`); yields (obs_before, actions,
    step outputs)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    n = 0
    while env.agents and (steps is None or n < steps):
        actions = {a: np.int64(rng.choice(np.flatnonzero(obs[a]["action_mask"])))
                   for a in env.agents}
        out = env.step(actions)
        yield obs, actions, out
        obs = out[0]
        n += 1


def place(env, positions, levels):
    """Move LBF's players to `positions` (row, col) with `levels`; refresh its valid moves."""
    for player, pos, level in zip(env.unwrapped_env.players, positions, levels, strict=True):
        player.position, player.level = tuple(pos), level
    env.unwrapped_env._gen_valid_moves()


def test_layout_and_spaces():
    env = parallel_env(FULL)
    assert FEATURES == ("is_agent", "is_food", "row", "col", "level")
    space = env.observation_space("agent_0")
    assert space["entities"].shape == (3 + 4, 5)
    assert space["entity2task"].shape == (7, 4)
    assert space["action_mask"].shape == (6,)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]


@pytest.mark.parametrize("env_id", [PARTIAL, FULL, "Foraging-2s-10x10-4p-3f-v3"])
def test_contract_checker_passes(env_id):
    check_env(parallel_env(env_id), n_steps=120)


def test_pettingzoo_parallel_api_and_seed_tests():
    parallel_api_test(parallel_env(PARTIAL), num_cycles=60)
    parallel_seed_test(lambda: parallel_env(PARTIAL), num_cycles=60)
    parallel_api_test(flat_parallel_env(PARTIAL), num_cycles=60)


def test_env_id_keyword_and_constructor_arguments_build_the_same_task():
    by_keyword = parallel_env(env_id=PARTIAL)
    by_args = LBFTasks(
        players=2, min_player_level=1, max_player_level=2, min_food_level=1,
        max_food_level=None, field_size=(8, 8), max_num_food=2, sight=2,
        max_episode_steps=50, force_coop=True,
    )
    first = [out for _, _, out in rollout(by_keyword, seed=3)]
    second = [out for _, _, out in rollout(by_args, seed=3)]
    assert data_equivalence(first, second)


def test_five_food_tasks_through_an_override():
    env = parallel_env("Foraging-10x10-3p-4f-v3", max_num_food=5)
    assert env.n_tasks == 5
    env.reset(seed=0)
    assert env.state()["task_mask"].sum() == np.count_nonzero(env.unwrapped_env.field) == 5


def test_features_follow_players_and_field():
    env = parallel_env(FULL)
    for _ in rollout(env, seed=1, steps=30):
        state = env.state()
        ents = state["entities"]
        players = env.unwrapped_env.players
        field = env.unwrapped_env.field
        for i, player in enumerate(players):
            assert ents[i, F_IS_AGENT] == 1 and ents[i, F_IS_FOOD] == 0
            np.testing.assert_allclose(ents[i, [F_ROW, F_COL]], np.array(player.position) / 7)
            assert ents[i, F_LEVEL] == pytest.approx(player.level / env.level_scale)
        live_rows = 3 + np.flatnonzero(state["entity_mask"][3:])
        cells = np.rint(ents[live_rows][:, [F_ROW, F_COL]] * 7).astype(int)
        assert sorted(map(tuple, cells)) == sorted(zip(*np.nonzero(field), strict=True))
        levels = np.rint(ents[live_rows, F_LEVEL] * env.level_scale).astype(int)
        np.testing.assert_array_equal(levels, field[cells[:, 0], cells[:, 1]])
        assert (ents[3:][state["entity_mask"][3:] == 0] == 0).all()


def test_obs_mask_is_lbf_own_sight():
    """The mask marks exactly the players and food LBF puts into each agent's observation."""
    env = parallel_env("Foraging-2s-9x9-4p-3f-v3")
    lbf = env.unwrapped_env
    n, s = 4, 2
    checked_hidden = 0
    for seed in range(4):
        for _, _, (obs, *_rest) in rollout(env, seed=seed, steps=25):
            state = env.state()
            for i, player in enumerate(lbf.players):
                mask = obs[f"agent_{i}"]["obs_mask"]
                own = lbf._make_obs(player)
                centre = np.array(player.position)
                origin = centre - np.minimum(s, centre)
                seen_players = sorted(tuple(np.array(p.position) + origin) for p in own.players)
                masked = sorted(tuple(lbf.players[k].position) for k in np.flatnonzero(mask[:n]))
                assert seen_players == masked
                window = np.maximum(centre - s, 0)
                seen_food = sorted(tuple(np.array(c) + window)
                                   for c in zip(*np.nonzero(own.field), strict=True))
                food_rows = n + np.flatnonzero(mask[n:])
                masked_food = sorted(tuple(np.rint(state["entities"][r, [F_ROW, F_COL]] * 8)
                                           .astype(int)) for r in food_rows)
                assert seen_food == masked_food
                hidden = (mask == 0)
                assert (obs[f"agent_{i}"]["entities"][hidden] == 0).all()
                checked_hidden += int(hidden[n:].sum())
    assert checked_hidden > 0


def test_sight_two_hides_a_far_food_that_full_sight_shows():
    for seed in range(20):
        partial, full = parallel_env(PARTIAL), parallel_env("Foraging-8x8-2p-2f-coop-v3")
        obs, _ = partial.reset(seed=seed)
        obs_full, _ = full.reset(seed=seed)
        pos = np.array(partial.unwrapped_env.players[0].position)
        far = [j for j, food in enumerate(partial._food_pos[:2])
               if np.abs(food - pos).max() > 2]
        if far:
            row = 2 + far[0]
            assert obs["agent_0"]["obs_mask"][row] == 0
            assert (obs["agent_0"]["entities"][row] == 0).all()
            assert obs_full["agent_0"]["obs_mask"][row] == 1
            assert obs_full["agent_0"]["entities"][row, F_IS_FOOD] == 1
            return
    pytest.fail("no seed put a food more than 2 cells from agent_0")


def test_action_mask_is_lbf_valid_actions():
    env = parallel_env(FULL)
    for _, _, (obs, *_rest) in rollout(env, seed=2, steps=40):
        for i, player in enumerate(env.unwrapped_env.players):
            valid = sorted(a.value for a in env.unwrapped_env._valid_actions[player])
            assert np.flatnonzero(obs[f"agent_{i}"]["action_mask"]).tolist() == valid


def test_task_rewards_credit_each_collected_food_and_collected_food_leaves_the_masks():
    env = parallel_env("Foraging-10x10-3p-2f-v3", min_food_level=2, max_food_level=2)
    env.reset(seed=0)
    food = env._food_pos[:2].copy()
    # agents 0 and 1 (level 1 each) next to food 0 (above and left), agent 2 (level 2) next
    # to food 1 (below); both food have level 2
    place(env, [food[0] - (1, 0), food[0] - (0, 1), food[1] + (1, 0)], [1, 1, 2])
    obs, rewards, terms, truncs, infos = env.step(
        {"agent_0": LOAD, "agent_1": LOAD, "agent_2": LOAD})
    task_rewards = infos["agent_0"]["task_rewards"]
    assert task_rewards[0] == pytest.approx(rewards["agent_0"] + rewards["agent_1"])
    assert task_rewards[1] == pytest.approx(rewards["agent_2"])
    assert sum(rewards.values()) == pytest.approx(task_rewards.sum()) == pytest.approx(1.0)
    for agent in env.possible_agents:
        np.testing.assert_array_equal(infos[agent]["task_rewards"], task_rewards)
        assert obs[agent]["task_mask"].tolist() == [0, 0]
        assert obs[agent]["entity_mask"][3:].tolist() == [0, 0]
        assert not obs[agent]["entity2task"].any()
    assert terms["agent_0"] and not truncs["agent_0"]
    assert infos["agent_0"]["solved"] and infos["agent_0"]["tasks_completed_frac"] == 1.0


def test_task_rewards_sum_to_the_env_reward_over_random_episodes():
    env = parallel_env("Foraging-8x8-3p-3f-v3", penalty=0.1)
    paid = 0.0
    for seed in range(6):
        for before, _, (obs, rewards, *_rest, infos) in rollout(env, seed=seed):
            task_rewards = infos["agent_0"]["task_rewards"]
            assert task_rewards.sum() == pytest.approx(sum(rewards.values()), abs=1e-6)
            collected = (before["agent_0"]["task_mask"] == 1) & (obs["agent_0"]["task_mask"] == 0)
            assert (task_rewards[collected] > 0).all()
            assert (task_rewards[~collected] <= 0).all()  # only penalties elsewhere
            paid += sum(r for r in rewards.values() if r > 0)
    assert paid > 0


def test_step_limit_is_a_truncation_with_episode_stats():
    env = parallel_env(PARTIAL, max_episode_steps=5)
    env.reset(seed=0)
    for step in range(5):
        _, _, terms, truncs, infos = env.step(dict.fromkeys(env.agents, NONE))
        assert not any(terms.values())
        assert all(truncs.values()) == (step == 4)
        assert ("solved" in infos["agent_0"]) == (step == 4)
    assert infos["agent_0"]["solved"] is False
    assert infos["agent_0"]["tasks_completed_frac"] == 0.0
    assert env.agents == []


def test_lift_allocation_closed_cases():
    # food 0 (level 2) needs both level-1 agents; food 1 (level 1) is next to agent 1 alone
    alloc = lift_allocation([(0, 0), (0, 5)], [1, 1], [(0, 1), (0, 6)], [2, 1], [True, True])
    assert alloc.tolist() == [0, 1]
    # both food need both agents: the group goes to the one it reaches soonest
    alloc = lift_allocation([(0, 0), (4, 4)], [1, 1], [(1, 1), (6, 6)], [2, 2], [True, True])
    assert alloc.tolist() == [0, 0]
    # a collected food is never chosen; no live food gives zeros
    alloc = lift_allocation([(0, 0), (4, 4)], [2, 2], [(1, 1), (6, 6)], [1, 1], [False, True])
    assert alloc.tolist() == [1, 1]
    assert lift_allocation([(0, 0)], [1], [(1, 1)], [1], [False]).tolist() == [0]


def test_heuristic_allocation_is_valid_through_episodes():
    env = parallel_env("Foraging-10x10-4p-4f-v3")
    for _, _, (obs, *_rest) in rollout(env, seed=4):
        if not env.agents:
            break
        alloc = env.heuristic_allocation()
        assert alloc.shape == (4,) and alloc.dtype == np.int64
        assert obs["agent_0"]["task_mask"][alloc].all()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("Foraging-8x8-2p-9f-v3",), {}, "not registered.*max_num_food"),
        (("CartPole-v1",), {}, "registered for"),
        ((PARTIAL,), {"sigth": 3}, r"unknown argument.*sigth.*sight"),
        ((), {"players": 2}, "missing argument"),
        ((PARTIAL,), {"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_env_arguments_name_the_field(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel_env(*args, **kwargs)


def test_missing_lbforaging_says_how_to_install(monkeypatch):
    check_install_hint(monkeypatch, ["lbforaging.foraging.environment"], "lbf",
                       partial(parallel_env, PARTIAL))


def test_flat_env_gives_lbf_own_vector_observation():
    env = flat_parallel_env(PARTIAL, max_episode_steps=4)
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        native = env.env.test_make_gym_obs()
        for i, agent in enumerate(env.possible_agents):
            np.testing.assert_array_equal(obs[agent], native[i])
            assert env.observation_space(agent).contains(obs[agent])
        obs, _, terms, truncs, _ = env.step(dict.fromkeys(env.agents, NONE))
    assert all(truncs.values()) and not any(terms.values()) and env.agents == []


def test_registered_for_the_hierarchy_with_the_heuristic():
    from rllib_alma_mi.registry import make_env, registered_envs

    assert {"lbf", "rware"} <= set(registered_envs())
    env = make_env("lbf", {"env_id": PARTIAL, "_hierarchy": {"allocation": "heuristic"}})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"agent_0", "agent_1"}
    expected = env.base.heuristic_allocation()
    assert env.allocation() == {"agent_0": int(expected[0]), "agent_1": int(expected[1])}


@pytest.mark.usefixtures("ray_session")
def test_alma_ppo_builds_and_trains_one_iteration_on_lbf():
    # Every 5 steps (as examples/configs/lbf.yaml): enough allocator decisions for MINE.
    result = train_once(small_config(
        env="lbf", env_config={"env_id": "Foraging-8x8-2p-2f-coop-v3"}, batch=200, width=16,
        n_heads=2, alloc_interval=5,
    ))
    assert np.isfinite(result["learners"]["allocator"]["mi_value"])
    assert result["env_runners"]["num_base_env_steps_lifetime"] > 0
    assert 0.0 <= result["env_runners"]["tasks_completed_frac"] <= 1.0


def test_render_rgb_array_draws_the_grid():
    env, frame = check_rgb_array_render(partial(parallel_env, PARTIAL), (8 * 32, 8 * 32, 3))
    row, col = env.unwrapped_env.players[0].position
    centre = frame[row * 32 + 16, col * 32 + 10]
    assert tuple(centre) == (214, 58, 48)  # agent_0's colour in its cell
    with pytest.raises(ValueError, match="render_mode"):
        parallel_env(PARTIAL, render_mode="human")


def test_rllib_env_check_passes_on_the_hierarchy_and_the_flat_env():
    # every food is live at reset, so the check's sampled allocation is valid
    check_rllib_env_checks(parallel_env(PARTIAL), flat_parallel_env(PARTIAL))
