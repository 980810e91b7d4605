"""Per-task credit of the allocator's choices (`allocator_credit="task"`): the hierarchy's task
returns, per-task GAE, each choice's advantage, the per-choice PPO loss, and training."""

import numpy as np
import pytest
import torch
from conftest import small_config
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.postprocessing.episodes import add_one_ts_to_episodes_and_truncate
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from envs.save_the_city import BUILD, F_COMPLETE, STAY
from envs.save_the_city import parallel_env as save_the_city
from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.keys import (
    ALLOCATOR,
    PER_CHOICE_POLICY_LOSS,
    SOLVED,
    TASK_RETURNS,
    TASK_VF_EXPLAINED_VAR,
    TASK_VF_LOSS,
)
from rllib_alma_mi.losses import (
    PerChoiceInputs,
    PerChoicePPOLoss,
    choice_advantages,
    per_task_gae,
)
from rllib_alma_mi.rllib.allocator_module import AllocatorModule
from rllib_alma_mi.rllib.task_credit import PerTaskGAE, episode_task_returns
from rllib_alma_mi.settings import HierarchySettings

NEW_TERMS = (PER_CHOICE_POLICY_LOSS, TASK_VF_LOSS, TASK_VF_EXPLAINED_VAR)


# ------------------------------------------------------------------------------ per-task GAE
def _gae_reference(values, rewards, bootstrap, gamma, lam):
    """One episode's GAE by the textbook sums: (advantages, targets) of its real steps."""
    v_next = np.append(values[1:], bootstrap)
    deltas = rewards + gamma * v_next - values
    adv = np.array(
        [sum((gamma * lam) ** j * deltas[k + j] for j in range(len(deltas) - k))
         for k in range(len(deltas))]
    )
    return adv, adv + values


def test_per_task_gae_matches_a_hand_computed_reference_over_two_episodes():
    gamma, lam = 0.9, 0.5
    # Episode 1 terminates after 2 decisions; episode 2 is truncated after 3 and bootstraps
    # from its artificial row's value (9, -1). Each has RLlib's artificial last row.
    values = np.array(
        [[1.0, 0.5], [2.0, -1.0], [7.0, 7.0],                # episode 1 (+ artificial)
         [0.5, 0.0], [1.5, 2.0], [-0.5, 1.0], [9.0, -1.0]],  # episode 2 (+ artificial)
        dtype=np.float32,
    )
    rewards = np.array(
        [[1.0, 0.0], [3.0, 2.0], [0.0, 0.0],
         [0.0, 1.0], [2.0, -1.0], [1.0, 0.5], [0.0, 0.0]],
        dtype=np.float32,
    )
    terminateds = np.array([0, 1, 0, 0, 0, 0, 0], dtype=bool)
    truncateds = np.array([0, 0, 0, 0, 0, 1, 0], dtype=bool)
    adv, targets = per_task_gae(values, rewards, terminateds, truncateds, gamma, lam)
    assert adv.shape == targets.shape == (7, 2) and adv.dtype == np.float32
    # Episode 1, task 0 by hand: delta_1 = 3 - 2 = 1 (terminal: no bootstrap), A_1 = 1;
    # delta_0 = 1 + 0.9 * 2 - 1 = 1.8, A_0 = 1.8 + 0.45 * 1 = 2.25.
    np.testing.assert_allclose(adv[[0, 1], 0], [2.25, 1.0], rtol=1e-6)
    for task in range(2):
        ref1 = _gae_reference(values[0:2, task], rewards[0:2, task], 0.0, gamma, lam)
        ref2 = _gae_reference(values[3:6, task], rewards[3:6, task], values[6, task], gamma, lam)
        np.testing.assert_allclose(adv[[0, 1, 3, 4, 5], task], np.concatenate([ref1[0], ref2[0]]),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            targets[[0, 1, 3, 4, 5], task], np.concatenate([ref1[1], ref2[1]]), rtol=1e-5
        )
        # Every row (the artificial ones too) as RLlib's GAE computes a single column.
        rllib = compute_value_targets(values[:, task], rewards[:, task], terminateds.astype(
            np.float32), truncateds.astype(np.float32), gamma, lam)
        np.testing.assert_allclose(targets[:, task], rllib, rtol=1e-5, atol=1e-6)


def test_task_returns_of_a_transition_come_from_the_next_info():
    a, b = np.array([1.0, -2.0], np.float32), np.array([0.5, 3.0], np.float32)
    episode = SingleAgentEpisode(
        observations=[0, 1, 2], actions=[0, 0], rewards=[-1.0, 3.5],
        infos=[{}, {TASK_RETURNS: a}, {TASK_RETURNS: b}], len_lookback_buffer=0,
    )
    add_one_ts_to_episodes_and_truncate([episode])  # as PPO's learner connector does
    np.testing.assert_array_equal(episode_task_returns(episode, 2), [a, b, [0.0, 0.0]])
    broken = SingleAgentEpisode(observations=[0, 1], actions=[0], rewards=[0.0],
                                infos=[{}, {}], len_lookback_buffer=0)
    add_one_ts_to_episodes_and_truncate([broken])
    with pytest.raises(ValueError, match="task_returns"):
        episode_task_returns(broken, 2)


# ------------------------------------------------------------------------ choice advantages
def test_each_choice_gets_its_chosen_tasks_advantage_and_dead_slots_none():
    task_adv = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    allocation = torch.tensor([[2, 0, 1], [1, 1, 2]])
    live = torch.tensor([[True, True, False], [True, True, True]])  # slot 2 of row 0 is dead
    out = choice_advantages(task_adv, allocation, live)
    torch.testing.assert_close(out, torch.tensor([[3.0, 1.0, 0.0], [-2.0, -2.0, -3.0]]))


def _module(n_agents=3, n_tasks=3):
    env = HierarchicalEnv(
        save_the_city(scenario=f"{n_agents}a_{n_tasks}b"),
        HierarchySettings(allocator_credit="task"),
    )
    return AllocatorModule(
        observation_space=env.observation_spaces[ALLOCATOR],
        action_space=env.action_spaces[ALLOCATOR],
        model_config={"embed_dim": 8, "n_heads": 2, "allocator_credit": "task"},
    ), env


def _allocator_batch(env, n=4, seed=0):
    """`n` allocator observations of `env` (one per reset seed), batched as tensors."""
    rows = [env.reset(seed=seed + k)[0][ALLOCATOR] for k in range(n)]
    return {Columns.OBS: {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}}


def test_dead_slots_and_forced_rows_choose_nothing_and_leave_the_loss_alone():
    module, env = _module()
    batch = _allocator_batch(env)
    obs = batch[Columns.OBS]
    obs["agent_mask"][0, 2] = 0  # a dead slot
    obs["task_mask"][1] = 0  # a sample without a live task: every row forced
    live = module.live_choices(batch)
    expected = torch.ones(4, 3, dtype=torch.bool)
    expected[0, 2] = False
    expected[1] = False
    torch.testing.assert_close(live, expected)

    torch.manual_seed(0)
    allocation = module.forward_exploration(batch)[Columns.ACTIONS]
    logits = module.net.log_prob(obs, allocation)[2]
    task_adv = torch.randn(4, 3)

    def loss(allocation, task_adv):
        inputs = PerChoiceInputs(
            step_logits=logits, old_step_logits=logits.detach() + 0.1 * torch.randn_like(logits),
            allocation=allocation, live_choices=live, task_advantages=task_adv,
            task_value_targets=torch.zeros(4, 3), task_values=torch.zeros(4, 3),
            task_mask=obs["task_mask"],
        )
        return PerChoicePPOLoss(0.2, 0.0, 0.0)(inputs).loss

    torch.manual_seed(1)
    base = loss(allocation, task_adv)
    # Another task for the dead slot, other advantages in the forced sample: the same loss.
    other = allocation.clone()
    other[0, 2] = (other[0, 2] + 1) % 3
    changed = task_adv.clone()
    changed[1] = 100.0
    torch.manual_seed(1)
    assert loss(other, changed).item() == base.item()


# ------------------------------------------------------------------------------- gradients
def test_task_value_loss_trains_the_task_critic_and_not_the_pointer():
    module, env = _module()
    batch = _allocator_batch(env)
    obs = batch[Columns.OBS]
    allocation = module.forward_exploration(batch)[Columns.ACTIONS]
    logits = module.net.log_prob(obs, allocation)[2]
    values = module.compute_task_values(batch)
    assert values.shape == (4, 3)
    assert (values[~obs["task_mask"].bool()] == 0).all()
    torch.testing.assert_close(module.compute_values(batch), values.sum(-1))
    inputs = PerChoiceInputs(
        step_logits=logits, old_step_logits=logits.detach(), allocation=allocation,
        live_choices=module.live_choices(batch), task_advantages=torch.zeros(4, 3),
        task_value_targets=torch.ones(4, 3), task_values=values, task_mask=obs["task_mask"],
    )
    PerChoicePPOLoss(0.2, vf_loss_coeff=1.0, entropy_coeff=0.0)(inputs).loss.backward()
    critic = dict(module.task_value_net.named_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.values())
    for name, p in module.net.named_parameters():
        assert p.grad is None or not p.grad.any(), name


def test_a_choice_with_zero_advantage_gets_no_policy_gradient():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, requires_grad=True)
    allocation = torch.tensor([[0, 1, 2]])
    # Agent 0's task has advantage 0; standardising [0, 1, -1] over the choices keeps it 0.
    task_adv = torch.tensor([[0.0, 1.0, -1.0, 5.0]])
    inputs = PerChoiceInputs(
        step_logits=logits, old_step_logits=logits.detach(), allocation=allocation,
        live_choices=torch.ones(1, 3, dtype=torch.bool), task_advantages=task_adv,
        task_value_targets=torch.zeros(1, 4), task_values=torch.zeros(1, 4),
        task_mask=torch.ones(1, 4),
    )
    terms = PerChoicePPOLoss(0.2, vf_loss_coeff=0.0, entropy_coeff=0.0)(inputs)
    terms.loss.backward()
    assert not logits.grad[0, 0].any()
    assert logits.grad[0, 1].abs().sum() > 0 and logits.grad[0, 2].abs().sum() > 0
    # At ratio 1 the surrogate is the sum of the choices' standardised advantages: 0 + 1 - 1.
    assert terms.metrics[PER_CHOICE_POLICY_LOSS].item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ the hierarchy's returns
def test_task_returns_add_up_to_the_allocator_reward_plus_savethecitys_completion_terms():
    """SaveTheCity: sum(task_rewards) == team reward + scale * (19 completed - 20 solved) at
    every step, so over an allocation interval the same holds for the task returns."""
    base = save_the_city(scenario="2a_3b", max_cycles=40)
    env = HierarchicalEnv(base, HierarchySettings(allocator_credit="task", alloc_interval=3))
    layout = {"agents": [("builder", 5, 5), ("firefighter", 12, 2)],
              "buildings": [{"pos": (5, 6), "health": 0.95}, {"pos": (1, 13), "health": 0.5}]}
    obs, _ = env.reset(seed=0, options={"layout": layout})
    rng = np.random.default_rng(0)
    scale, completed, deliveries, completions = base.reward_scale, 0, 0, 0
    for step in range(60):
        if ALLOCATOR in obs:
            live = np.flatnonzero(obs[ALLOCATOR]["task_mask"])
            obs, rewards, terms, truncs, infos = env.step({ALLOCATOR: rng.choice(live, 2)})
        else:
            acts = {a: int(rng.choice(np.flatnonzero(o["action_mask"]))) for a, o in obs.items()}
            if step == 1:
                acts = {"agent_0": BUILD, "agent_1": STAY}  # completes building 0
            obs, rewards, terms, truncs, infos = env.step(acts)
        if ALLOCATOR not in rewards:
            assert TASK_RETURNS not in infos.get(ALLOCATOR, {})
            continue
        now = int(base.state()["entities"][base.max_agents:, F_COMPLETE].sum())
        new, completed = now - completed, now
        solved = bool(infos[ALLOCATOR].get(SOLVED, False))
        returns = infos[ALLOCATOR][TASK_RETURNS]
        assert returns.shape == (3,) and returns.dtype == np.float32
        expected = rewards[ALLOCATOR] + scale * (19 * new - 20 * solved)
        # Exact up to the float32 the environment reports task rewards in.
        assert float(returns.astype(np.float64).sum()) == pytest.approx(expected, abs=1e-5)
        deliveries += 1
        completions += new
        if terms["__all__"] or truncs["__all__"]:
            break
    assert deliveries >= 5 and completions >= 1


def test_lbf_task_returns_sum_to_the_allocator_reward():
    """LBF's task rewards add up every agent's reward; the hierarchy's team reward is their
    mean, so the task returns are divided by the live agents and sum to it exactly."""
    lbf = pytest.importorskip("envs.lbf")
    pytest.importorskip("lbforaging")
    env = HierarchicalEnv(lbf.parallel_env("Foraging-5x5-2p-1f-v3"),
                          HierarchySettings(allocator_credit="task", alloc_interval=2))
    rng = np.random.default_rng(0)
    paid = 0.0
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            if ALLOCATOR in obs:
                live = np.flatnonzero(obs[ALLOCATOR]["task_mask"])
                obs, rewards, terms, truncs, infos = env.step(
                    {ALLOCATOR: rng.choice(live, env.n_slots)})
            else:
                acts = {a: int(rng.choice(np.flatnonzero(o["action_mask"])))
                        for a, o in obs.items()}
                obs, rewards, terms, truncs, infos = env.step(acts)
            if ALLOCATOR in rewards:
                returns = infos[ALLOCATOR][TASK_RETURNS]
                assert float(returns.astype(np.float64).sum()) == pytest.approx(
                    rewards[ALLOCATOR], abs=1e-6)
                paid += abs(rewards[ALLOCATOR])
            done = terms["__all__"] or truncs["__all__"]
    assert paid > 0  # some food was collected, so the relation was tested on real rewards


# -------------------------------------------------------------------------------- training
@pytest.mark.usefixtures("ray_session")
def test_one_iteration_with_task_credit_logs_its_terms_and_team_credit_does_not():
    algo = small_config(allocator_credit="task").build_algo()
    try:
        learner = algo.train()["learners"][ALLOCATOR]
        assert any(isinstance(p, PerTaskGAE) for p in algo.learner_group._learner
                   ._learner_connector.connectors)
    finally:
        algo.stop()
    for key in (*NEW_TERMS, "policy_loss", "vf_loss", "entropy", "total_loss"):
        assert np.isfinite(learner[key]), key
    assert learner["policy_loss"] == learner[PER_CHOICE_POLICY_LOSS]

    algo = small_config(batch=200).build_algo()  # "team" (the default): nothing new
    try:
        learner = algo.train()["learners"][ALLOCATOR]
        connectors = algo.learner_group._learner._learner_connector.connectors
        module = algo.get_module(ALLOCATOR)
    finally:
        algo.stop()
    assert not any(key in learner for key in NEW_TERMS)
    assert not any(isinstance(p, PerTaskGAE) for p in connectors)
    assert not hasattr(module, "task_value_net") and hasattr(module, "value_out")


# ------------------------------------------------------------------------------ bad values
def test_bad_allocator_credit_is_a_clear_error():
    with pytest.raises(ValueError, match=r"allocator_credit='agent' is not allowed.*'task'"):
        AlmaPPOConfig().alma(allocator_credit="agent")
    with pytest.raises(ValueError, match=r"allocator_credit='task'.*allocation='learned'"):
        AlmaPPOConfig().alma(allocation="heuristic", allocator_credit="task")
    with pytest.raises(ValueError, match="allocator_credit"):
        HierarchySettings(allocation="random", allocator_credit="task")
    config = (AlmaPPOConfig().environment("save_the_city", env_config={"scenario": "2a_3b"})
              .alma(allocator_credit="task")
              .api_stack(enable_rl_module_and_learner=False,
                         enable_env_runner_and_connector_v2=False))
    with pytest.raises(ValueError, match=r"allocator_credit='task'.*new API stack"):
        config.validate()
    base = save_the_city(scenario="2a_3b")
    base.task_rewards_summed_over_agents = "yes"
    with pytest.raises(ValueError, match="task_rewards_summed_over_agents"):
        HierarchicalEnv(base, HierarchySettings(allocator_credit="task"))


def test_evaluating_a_task_credit_run_under_another_allocation_drops_the_credit():
    from types import SimpleNamespace

    from rllib_alma_mi.app.evaluation import evaluation_env_config
    from rllib_alma_mi.registry import HIERARCHY_KEY

    trained = {"scenario": "2a_3b",
               HIERARCHY_KEY: {**HierarchySettings(allocator_credit="task").to_dict()}}
    algo = SimpleNamespace(config=SimpleNamespace(env_config=trained))
    block = evaluation_env_config(algo, {}, "heuristic")[HIERARCHY_KEY]
    settings = HierarchySettings.from_dict(block)  # valid: no task credit without an allocator
    assert settings.allocation == "heuristic" and settings.allocator_credit == "team"
    kept = evaluation_env_config(algo, {}, "learned")[HIERARCHY_KEY]
    assert kept["allocator_credit"] == "task"
