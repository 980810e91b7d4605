"""AlmaPPO on RLlib's old API stack (ModelV2 + Policy), and its agreement with the new stack."""

import numpy as np
import pytest
import torch
import tree
from conftest import small_config
from ray.rllib.core.columns import Columns
from ray.rllib.models.modelv2 import restore_original_dimensions
from ray.rllib.models.preprocessors import get_preprocessor

from rllib_alma_mi.app.checkpoints import load_algorithm, save_checkpoint, uses_new_api_stack
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.registry import make_env
from rllib_alma_mi.rllib.old_stack.action_dist import AllocationDistribution
from rllib_alma_mi.rllib.old_stack.model_v2 import AllocatorModelV2, WorkerModelV2

pytestmark = pytest.mark.usefixtures("ray_session")



@pytest.fixture(scope="module")
def trained_old(ray_session):
    algo = small_config(old_stack=True).build_algo()
    result = algo.train()
    yield algo, result
    algo.stop()


@pytest.fixture(scope="module")
def trained_new(ray_session):
    algo = small_config(old_stack=False).build_algo()
    result = algo.train()
    yield algo, result
    algo.stop()


def test_one_iteration_per_stack_reports_mi_and_task_metrics(trained_old, trained_new):
    old_algo, old = trained_old
    new_algo, new = trained_new
    assert not uses_new_api_stack(old_algo) and uses_new_api_stack(new_algo)
    assert isinstance(old_algo.get_policy("allocator").model, AllocatorModelV2)
    assert isinstance(old_algo.get_policy("worker").model, WorkerModelV2)
    assert old_algo.get_policy("allocator").dist_class is AllocationDistribution

    model_stats = old["info"]["learner"]["allocator"]["model"]
    assert np.isfinite(model_stats["mi_loss"]) and np.isfinite(model_stats["mi_value"])
    assert old["info"]["learner"]["worker"]["model"] == {}
    assert np.isfinite(new["learners"]["allocator"]["mi_loss"])
    assert np.isfinite(new["learners"]["allocator"]["mi_value"])
    for result in (old, new):
        for key in ("solved", "tasks_completed_frac", "tasks_burned_frac", "base_env_steps"):
            assert np.isfinite(result["env_runners"][key]), key


def test_imitation_is_rejected_on_the_old_stack():
    config = small_config(old_stack=True).alma(imitation_steps=1000)
    with pytest.raises(ValueError, match="imitation_steps=1000: .* new API stack only"):
        config.validate()


def test_worker_mi_scheme_and_subtask_marks_train_on_the_old_stack():
    """Scheme 1: the worker carries the MI term; its nested `state` observation is flattened
    and restored by RLlib's preprocessor, as is `subtask` without the subtask mask (whose
    learned vector leaves zero in the update)."""
    config = small_config(old_stack=True, mi_scheme=1, mi_target="global_state",
                          subtask_mask=False)
    algo = config.build_algo()
    try:
        learner = algo.train()["info"]["learner"]
        assert np.isfinite(learner["worker"]["model"]["mi_value"])
        assert learner["allocator"]["model"] == {}
        vector = algo.get_policy("worker").model.module.pi_net.subtask_vector
        assert vector.abs().sum() > 0
    finally:
        algo.stop()


def _named_grads(policy, batch) -> dict[str, torch.Tensor | None]:
    grads, _ = policy.compute_gradients(batch.copy())
    names = [name for name, _ in policy.model.named_parameters()]
    return {n: None if g is None else g.detach().clone() for n, g in zip(names, grads, strict=True)}


def test_mi_term_is_added_to_the_policy_loss(trained_old):
    """Through the policy's own gradient path: MINE's critic gets gradients only from the MI
    term, so they vanish with mi_weight=0 and are nonzero with a large weight."""
    algo, _ = trained_old
    policy = algo.get_policy("allocator")
    batch = algo.env_runner.sample().policy_batches["allocator"]
    model = policy.model
    saved_weight = model.mi_weight
    try:
        model.mi_weight = 0.0
        off = _named_grads(policy, batch)
        model.mi_weight = 10.0
        on = _named_grads(policy, batch)
    finally:
        model.mi_weight = saved_weight
    mine = [n for n in on if n.startswith("module.mi.mine.")]
    assert mine
    for name in mine:
        assert off[name] is None or torch.count_nonzero(off[name]) == 0, name
    assert any(on[n] is not None and torch.count_nonzero(on[n]) > 0 for n in mine)
    assert set(model.metrics()) == {"mi_loss", "mi_value", "mi_skipped"}


def test_a_skipped_mi_term_keeps_its_stats_keys(trained_old):
    """One decision leaves MINE no negatives, so the term is left out. Its stats keep their
    keys, as NaN: RLlib averages the minibatches' stats with a NaN-ignoring mean that needs
    the same keys in every minibatch."""
    algo, _ = trained_old
    policy = algo.get_policy("allocator")
    batch = algo.env_runner.sample().policy_batches["allocator"].slice(0, 1)
    before = policy.model.metrics().get("mi_skipped", 0.0)
    policy.compute_gradients(batch)
    stats = policy.model.metrics()
    assert stats["mi_skipped"] == before + 1
    assert np.isnan(stats["mi_loss"]) and np.isnan(stats["mi_value"])


def _restored(batch, policy) -> dict[str, np.ndarray]:
    return restore_original_dimensions(batch["obs"], policy.observation_space, "numpy")


def test_old_stack_allocator_respects_masks_and_its_logp_is_consistent(ray_session):
    """Variable teams: padded tasks and dead agent slots. Sampled and greedy allocations put
    every live agent on a live task, and the stored log-probs match the teacher-forced ones."""
    config = small_config(old_stack=True, env_config={"scenario": "2-5a_2-5b", "max_cycles": 30})
    algo = config.build_algo()
    try:
        policy = algo.get_policy("allocator")
        rows = []
        while sum(len(b) for b in rows) < 40:
            rows.append(algo.env_runner.sample().policy_batches["allocator"])
        saw_padded_task = saw_dead_slot = False
        for batch in rows:
            obs = _restored(batch, policy)
            live = obs["agent_mask"].astype(bool)
            task_mask = obs["task_mask"].astype(bool)
            saw_padded_task |= bool((~task_mask).any())
            saw_dead_slot |= bool((~live).any())
            greedy, _, _ = policy.compute_actions(batch["obs"], explore=False)
            for actions in (batch["actions"], greedy):
                for t in range(len(batch)):
                    assert task_mask[t][actions[t][live[t]]].all()
            forced = policy.compute_log_likelihoods(batch["actions"], batch["obs"])
            np.testing.assert_allclose(forced.numpy(), batch["action_logp"], atol=1e-5)
            stored = AllocationDistribution(batch["action_dist_inputs"], policy.model)
            np.testing.assert_allclose(
                stored.logp(torch.as_tensor(batch["actions"])).numpy(),
                batch["action_logp"],
                atol=1e-5,
            )
        assert saw_padded_task and saw_dead_slot
    finally:
        algo.stop()


def _random_valid_allocations(obs: dict, rng: np.random.Generator, k: int) -> np.ndarray:
    live_tasks = np.flatnonzero(obs["task_mask"])
    out = np.zeros((k, len(obs["agent_mask"])), dtype=np.int64)
    for slot in np.flatnonzero(obs["agent_mask"]):
        out[:, slot] = rng.choice(live_tasks, size=k)
    return out


def _allocator_observations(algo, n: int, seed: int = 0) -> list[dict]:
    env = make_env(algo.config.env, algo.config.env_config)
    rng = np.random.default_rng(seed)
    observations = []
    obs, _ = env.reset(seed=seed)
    while len(observations) < n:
        if ALLOCATOR in obs:
            observations.append(obs[ALLOCATOR])
            action = {ALLOCATOR: _random_valid_allocations(obs[ALLOCATOR], rng, 1)[0]}
        else:
            action = {a: rng.choice(np.flatnonzero(o["action_mask"])) for a, o in obs.items()}
        obs, _, terms, truncs, _ = env.step(action)
        if terms["__all__"] or truncs["__all__"]:
            obs, _ = env.reset(seed=seed + len(observations))
    return observations


def test_both_stacks_give_the_same_joint_log_prob_with_the_same_weights(trained_old, trained_new):
    old_algo, _ = trained_old
    new_algo, _ = trained_new
    module = new_algo.get_module("allocator")
    policy = old_algo.get_policy("allocator")
    policy.model.module.load_state_dict(module.state_dict())

    rng = np.random.default_rng(1)
    observations, actions = [], []
    for obs in _allocator_observations(new_algo, 6):
        for allocation in _random_valid_allocations(obs, rng, 3):
            observations.append(obs)
            actions.append(allocation)
    actions = np.stack(actions)

    batch = tree.map_structure(lambda *v: torch.as_tensor(np.stack(v)), *observations)
    with torch.no_grad():
        fwd = module.forward_train({Columns.OBS: batch, Columns.ACTIONS: torch.as_tensor(actions)})
    dist = module.get_train_action_dist_cls().from_logits(fwd[Columns.ACTION_DIST_INPUTS])
    new_logp = dist.logp(torch.as_tensor(actions)).numpy()

    space = policy.observation_space.original_space
    preprocessor = get_preprocessor(space)(space)
    flat = np.stack([preprocessor.transform(o) for o in observations]).astype(np.float32)
    old_logp = policy.compute_log_likelihoods(actions, flat).numpy()
    np.testing.assert_allclose(old_logp, new_logp, atol=1e-5)

    with torch.no_grad():
        inputs, _ = policy.model(
            {"obs": torch.as_tensor(flat), "actions": torch.as_tensor(actions)}
        )
        old_entropy = AllocationDistribution(inputs, policy.model).entropy().numpy()
    np.testing.assert_allclose(old_entropy, dist.entropy().numpy(), atol=1e-5)


def _some_observations(algo) -> dict[str, dict]:
    env = make_env(algo.config.env, algo.config.env_config)
    obs, _ = env.reset(seed=5)
    alloc_obs = obs[ALLOCATOR]
    worker_obs, *_ = env.step({ALLOCATOR: np.zeros(env.n_slots, dtype=np.int64)})
    return {"allocator": alloc_obs, "worker": next(iter(worker_obs.values()))}


def _greedy_actions(algo, obs_by_policy: dict[str, dict]) -> dict[str, np.ndarray]:
    out = {}
    for policy_id, obs in obs_by_policy.items():
        if uses_new_api_stack(algo):
            module = algo.get_module(policy_id)
            batch = {Columns.OBS: tree.map_structure(lambda v: torch.as_tensor(v)[None], obs)}
            fwd = module.forward_inference(batch)
            if Columns.ACTIONS in fwd:
                out[policy_id] = fwd[Columns.ACTIONS].numpy()[0]
            else:
                out[policy_id] = fwd[Columns.ACTION_DIST_INPUTS].argmax(-1).numpy()[0]
        else:
            action = algo.compute_single_action(obs, policy_id=policy_id, explore=False)
            out[policy_id] = np.asarray(action)
    return out


@pytest.mark.parametrize("stack", ["old", "new"])
def test_checkpoint_helpers_round_trip_greedy_actions(stack, trained_old, trained_new, tmp_path):
    algo, _ = trained_old if stack == "old" else trained_new
    path = save_checkpoint(algo, tmp_path / "ckpt")
    obs = _some_observations(algo)
    before = _greedy_actions(algo, obs)
    restored = load_algorithm(path)
    try:
        assert uses_new_api_stack(restored) == (stack == "new")
        after = _greedy_actions(restored, obs)
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
    finally:
        restored.stop()


def test_hybrid_api_stack_is_rejected():
    config = small_config(old_stack=False).api_stack(
        enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=True
    )
    with pytest.raises(ValueError, match="enable_env_runner_and_connector_v2=False"):
        config.validate()
