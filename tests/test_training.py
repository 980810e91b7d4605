"""AlmaPPO on RLlib's new API stack: training, MI stats, masks, checkpoints, errors."""

import numpy as np
import pytest
import torch
import tree
from conftest import small_config
from custom_env import LineVisitEnv
from custom_env import parallel_env as line_visit
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core.columns import Columns

from envs.contract import ContractError
from rllib_alma_mi import AlmaPPOConfig, register_env
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.keys import HEURISTIC_ALLOCATION as HEURISTIC_KEY
from rllib_alma_mi.registry import make_env
from rllib_alma_mi.rllib.allocator_module import IMITATION_LOGP

pytestmark = pytest.mark.usefixtures("ray_session")



@pytest.fixture(scope="module")
def trained_mi_algo(ray_session):
    algo = small_config().build_algo()
    result = algo.train()
    yield algo, result
    algo.stop()


def test_mi_stats_appear_when_mi_is_on(trained_mi_algo):
    _, result = trained_mi_algo
    learner = result["learners"]["allocator"]
    assert np.isfinite(learner["mi_loss"]) and np.isfinite(learner["mi_value"])
    assert "mi_loss" not in result["learners"]["worker"]
    for key in ("solved", "tasks_completed_frac", "tasks_burned_frac"):
        assert key in result["env_runners"]


def test_no_mi_stats_when_mi_is_off():
    algo = small_config(use_mutual_info=False).build_algo()
    try:
        result = algo.train()
        assert "mi_loss" not in result["learners"]["allocator"]
        assert "mi_value" not in result["learners"]["allocator"]
        assert algo.get_module("allocator").mi is None
    finally:
        algo.stop()


@pytest.mark.parametrize(
    "mi",
    [
        {"mi_scheme": 2, "mi_target": "entity_mean"},
        {"mi_scheme": 3, "mi_target": "global_state", "mi_measure": "KL"},
        {"mi_scheme": 1, "mi_target": "global_state", "mi_measure": "GAN"},
        {"mi_scheme": 1, "mi_target": "task_mean"},
    ],
)
def test_every_scheme_trains_and_logs_on_its_module(mi):
    algo = small_config(width=16, **mi).build_algo()
    try:
        result = algo.train()
        module_id = "worker" if mi["mi_scheme"] == 1 else "allocator"
        assert np.isfinite(result["learners"][module_id]["mi_value"])
    finally:
        algo.stop()


def test_variable_team_sizes_train():
    algo = small_config(env_config={"scenario": "2-5a_2-5b", "max_cycles": 30}).build_algo()
    try:
        algo.train()
        sizes = set()
        env = algo.env_runner.env.unwrapped.envs[0].unwrapped
        for seed in range(8):
            env.reset(seed=seed)
            sizes.add(len(env.base.agents))
        assert len(sizes) > 1
    finally:
        algo.stop()


def test_user_env_trains_through_register_env():
    register_env("line_visit_test", line_visit)
    config = small_config(
        env="line_visit_test", env_config={"n_agents": 2, "n_targets": 3}, width=16
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        assert "mi_value" in result["learners"]["allocator"]
    finally:
        algo.stop()


class _NaNFeatureEnv(LineVisitEnv):
    def _observations_for(self, i):
        obs = super()._observations_for(i)
        obs["entities"][0, 0] = np.nan
        return obs


def test_env_breaking_the_contract_fails_at_build():
    register_env("broken_test", lambda **kw: _NaNFeatureEnv(**kw))
    with pytest.raises(ContractError, match="entities"):
        small_config(env="broken_test", env_config={}).build_algo()


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="mi_measure"):
        AlmaPPOConfig().mutual_info(mi_measure="XYZ")
    with pytest.raises(ValueError, match="unknown key"):
        AlmaPPOConfig().alma(alloc_intervall=3)
    with pytest.raises(ValueError, match="mi_scheme=3"):
        small_config().alma(allocation="heuristic").build_algo()
    with pytest.raises(ValueError, match="not registered"):
        small_config(env="no_such_env").build_algo()


def _sampled_episodes(algo):
    return algo.env_runner.sample(num_timesteps=300, random_actions=False)


def test_sampled_allocations_and_actions_respect_masks(trained_mi_algo):
    algo, _ = trained_mi_algo
    episodes = _sampled_episodes(algo)
    checked = 0
    for episode in episodes:
        for agent_id, sa_episode in episode.agent_episodes.items():
            obs = sa_episode.get_observations()
            acts = sa_episode.get_actions()
            for t in range(len(acts)):
                if agent_id == ALLOCATOR:
                    live = obs["agent_mask"][t].astype(bool)
                    assert obs["task_mask"][t][acts[t][live]].all()
                else:
                    assert obs["action_mask"][t][acts[t]] == 1
                checked += 1
    assert checked > 100


def _greedy_actions(algo, obs_by_module):
    out = {}
    for module_id, obs in obs_by_module.items():
        module = algo.get_module(module_id)
        batch = _as_batch(obs)
        fwd = module.forward_inference(batch)
        if Columns.ACTIONS in fwd:
            out[module_id] = fwd[Columns.ACTIONS].numpy()
        else:
            out[module_id] = fwd[Columns.ACTION_DIST_INPUTS].argmax(-1).numpy()
    return out


def _as_batch(obs):
    """One observation as a batch of one, in torch."""
    return {Columns.OBS: tree.map_structure(lambda v: torch.as_tensor(v)[None], obs)}


def _some_observations(algo):
    env = make_env(algo.config.env, algo.config.env_config)
    obs, _ = env.reset(seed=5)
    alloc_obs = obs[ALLOCATOR]
    worker_obs, *_ = env.step({ALLOCATOR: np.zeros(env.n_slots, dtype=np.int64)})
    return {"allocator": alloc_obs, "worker": next(iter(worker_obs.values()))}


@pytest.mark.parametrize("runners", [0, 1])
def test_checkpoint_round_trip_keeps_greedy_actions(tmp_path, runners):
    """Also with a remote env runner: the restored algorithm acts exactly as the saved one."""
    algo = small_config(runners=runners, width=16).build_algo()
    try:
        algo.train()
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        obs = _some_observations(algo)
        before = _greedy_actions(algo, obs)
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        after = _greedy_actions(restored, obs)
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
        assert type(restored).__name__ == "AlmaPPO"
    finally:
        restored.stop()


def test_acting_never_reads_the_centralized_state_nor_the_heuristic():
    config = small_config(mi_target="global_state", width=16).alma(imitation_steps=1000)
    algo = config.build_algo()
    try:
        obs = _some_observations(algo)
        assert "state" in obs["allocator"] and "heuristic_allocation" in obs["allocator"]
        module = algo.get_module("allocator")
        batch = _as_batch(obs["allocator"])
        scrambled = {Columns.OBS: dict(batch[Columns.OBS])}
        for key in ("state", "heuristic_allocation"):
            scrambled[Columns.OBS][key] = tree.map_structure(
                lambda v: (torch.rand(v.shape) * 3).to(v.dtype), batch[Columns.OBS][key]
            )
        a = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        b = module.forward_inference(scrambled)[Columns.ACTION_DIST_INPUTS]
        torch.testing.assert_close(a, b)
    finally:
        algo.stop()


def test_imitation_pulls_the_allocator_toward_the_heuristic_with_a_decaying_weight():
    steps = 6000
    # Every 5 steps: many decisions per batch to imitate on.
    config = small_config(use_mutual_info=False, alloc_interval=5).alma(
        imitation_steps=steps, imitation_weight=2.0)
    config.training(num_epochs=4, lr=3e-3)
    algo = config.build_algo()
    try:
        losses = []
        for _ in range(4):
            before = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"), default=0)
            learner = algo.train()["learners"]["allocator"]
            losses.append(learner["imitation_loss"])
            sampled = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"))
            assert sampled > before
            # the weight of this update comes from the lifetime count after its sampling
            assert learner["imitation_weight"] == pytest.approx(2.0 * (1 - sampled / steps))
        assert losses[-1] < 0.5 * losses[0]
    finally:
        algo.stop()


def test_imitation_stops_scoring_the_heuristic_once_its_weight_is_zero():
    config = small_config(use_mutual_info=False).alma(imitation_steps=1000)
    algo = config.build_algo()
    try:
        allocator = algo.learner_group._learner.module["allocator"].unwrapped()
        weights = [algo.train()["learners"]["allocator"]["imitation_weight"] for _ in range(4)]
        assert weights[0] > 0 and weights[-1] == 0.0
        assert not allocator.imitating
        batch = _as_batch(_some_observations(algo)["allocator"])
        batch[Columns.ACTIONS] = torch.zeros(1, allocator.n_slots, dtype=torch.long)
        assert HEURISTIC_KEY in batch[Columns.OBS]
        assert IMITATION_LOGP not in allocator.forward_train(batch)
        allocator.imitating = True
        assert IMITATION_LOGP in allocator.forward_train(batch)
    finally:
        algo.stop()


def test_imitation_off_adds_nothing(trained_mi_algo):
    _, result = trained_mi_algo
    assert "imitation_loss" not in result["learners"]["allocator"]


@pytest.mark.parametrize("shared", [True, False])
def test_worker_value_trains_the_policy_encoder_only_when_shared(shared):
    algo = small_config(use_mutual_info=False).alma(shared_worker_encoder=shared).build_algo()
    try:
        module = algo.get_module("worker")
        assert (module.vf_net is None) == shared
        obs = _some_observations(algo)["worker"]
        batch = _as_batch(obs)
        out = module.forward_train(batch)
        assert (Columns.EMBEDDINGS in out) == shared
        values = module.compute_values(batch, embeddings=out.get(Columns.EMBEDDINGS))
        torch.testing.assert_close(values, module.compute_values(batch))
        values.sum().backward()
        policy_grad = module.pi_net.embed[0].weight.grad
        if shared:
            assert policy_grad is not None and policy_grad.abs().sum() > 0
        else:
            assert policy_grad is None
            assert module.vf_net.embed[0].weight.grad.abs().sum() > 0
    finally:
        algo.stop()


def test_env_runner_converts_each_episode_once_and_counts_like_rllibs(monkeypatch):
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
    from ray.rllib.utils.metrics import (
        NUM_AGENT_STEPS_SAMPLED_LIFETIME,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        NUM_EPISODES_LIFETIME,
        NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    )

    counters = (
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        NUM_EPISODES_LIFETIME,
        NUM_AGENT_STEPS_SAMPLED_LIFETIME,
        NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    )
    calls, algo_env_copies = [], []
    original = MultiAgentEpisode.to_numpy

    def counting(episode):
        calls.append(episode.id_)
        return original(episode)

    def sample(runner_cls):
        config = small_config(use_mutual_info=False)
        if runner_cls is not None:
            config.env_runners(env_runner_cls=runner_cls)
        algo = config.build_algo()
        try:
            calls.clear()
            episodes = algo.env_runner.sample(num_timesteps=300)  # several finished episodes
            algo_env_copies.append(algo.env_runner.env.copy)
            counts = {key: algo.env_runner.metrics.peek(key) for key in counters}
            return episodes, counts, type(algo.env_runner)
        finally:
            algo.stop()

    monkeypatch.setattr(MultiAgentEpisode, "to_numpy", counting)
    stock_episodes, stock_counts, stock_cls = sample(MultiAgentEnvRunner)
    episodes, counts, cls = sample(None)  # AlmaPPOConfig's own runner
    assert stock_cls is MultiAgentEnvRunner and cls is not MultiAgentEnvRunner
    assert sum(e.is_done for e in episodes) >= 3
    assert all(e.is_numpy for e in episodes)
    assert sorted(calls) == sorted(e.id_ for e in episodes)  # once each
    # the same seeded rollout, so the same counts as RLlib's own runner
    assert [len(e) for e in episodes] == [len(e) for e in stock_episodes]
    assert counts == stock_counts
    # and the same observations, though this runner's vector env does not deep-copy them
    assert not algo_env_copies[-1] and algo_env_copies[0]
    for mine, stock in zip(episodes, stock_episodes, strict=True):
        assert mine.agent_episodes.keys() == stock.agent_episodes.keys()
        for agent, agent_episode in mine.agent_episodes.items():
            ours = tree.flatten(agent_episode.get_observations())
            theirs = tree.flatten(stock.agent_episodes[agent].get_observations())
            assert len(ours) == len(theirs)
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_acting_builds_no_graph_and_does_not_depend_on_the_mode():
    """The modules act in inference mode and without RLlib's eval()/train() switch, which is
    only valid while their output does not depend on the mode (no dropout, no batch norm)."""
    algo = small_config(use_mutual_info=False).build_algo()
    try:
        obs = _some_observations(algo)
        for module_id in ("allocator", "worker"):
            module = algo.get_module(module_id)
            batch = _as_batch(obs[module_id])
            for forward in (module.forward_exploration, module.forward_inference):
                tensors = [t for t in tree.flatten(forward(batch)) if isinstance(t, torch.Tensor)]
                assert not any(t.requires_grad for t in tensors), (module_id, forward.__name__)
                assert all(t.is_inference() for t in tensors), (module_id, forward.__name__)
            module.train()
            in_train_mode = module.forward_inference(batch)
            assert module.training
            module.eval()
            in_eval_mode = module.forward_inference(batch)
            assert not module.training
            module.train()
            torch.testing.assert_close(in_train_mode, in_eval_mode)
    finally:
        algo.stop()
