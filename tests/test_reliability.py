"""Faults survived and results reproduced: non-finite updates, MINE at extreme scores, a killed
EnvRunner, checkpoints that survive a crash, and seeded rollouts / first iterations."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import TINY_CITY, tiny_config
from ray.rllib.core.columns import Columns

from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.app.checkpoints import load_algorithm, save_checkpoint
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.nn.mine import MEASURES, MINE
from rllib_alma_mi.registry import make_env

pytestmark = pytest.mark.usefixtures("ray_session")



def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _adam_steps(learner, module_id: str) -> list[float]:
    steps = []
    for _, optimizer in learner.get_optimizers_for_module(module_id):
        for state in optimizer.state.values():
            steps.append(float(state["step"]))
    return steps


# ------------------------------------------------------------------ numerical faults
@pytest.mark.parametrize("skip_nan_gradients", [False, True])
def test_nan_update_is_skipped_and_counted(skip_nan_gradients):
    """NaN logits for the allocator: its weights and optimizer state stay as they were, the
    worker still trains, and num_nonfinite_updates counts the skipped minibatch updates. Both
    values of RLlib's `torch_skip_nan_gradients` would otherwise corrupt the weights."""
    field = Columns.ACTION_DIST_INPUTS
    config = tiny_config().framework("torch", torch_skip_nan_gradients=skip_nan_gradients)
    algo = config.build_algo()
    try:
        learner = algo.learner_group._learner
        allocator, worker = learner.module[ALLOCATOR], learner.module["worker"]
        algo.train()  # a clean iteration first, so the optimizers have state
        before = {"allocator": _weights(allocator), "worker": _weights(worker)}
        adam_before = _adam_steps(learner, ALLOCATOR)
        clean = allocator._forward_train

        def nan_output(batch, **kwargs):
            out = clean(batch, **kwargs)
            out[field] = out[field] * float("nan")
            return out

        allocator._forward_train = nan_output
        result = algo.train()
        skipped = result["learners"][ALLOCATOR]["num_nonfinite_updates"]
        assert skipped >= 1
        assert result["learners"]["worker"]["num_nonfinite_updates"] == 0
        assert _same_weights(_weights(allocator), before["allocator"])
        assert _adam_steps(learner, ALLOCATOR) == adam_before
        assert not _same_weights(_weights(worker), before["worker"])
        assert all(torch.isfinite(p).all() for p in allocator.parameters())

        allocator._forward_train = clean
        result = algo.train()
        assert result["learners"][ALLOCATOR]["num_nonfinite_updates"] == skipped  # lifetime
        assert not _same_weights(_weights(allocator), before["allocator"])
        assert np.isfinite(result["learners"][ALLOCATOR]["total_loss"])
    finally:
        algo.stop()


def test_minibatch_without_real_rows_is_skipped_not_counted_as_nonfinite():
    """An allocator minibatch of bootstrap rows only (loss mask all 0, as a small slice gets
    when the allocator acts only on events): its update is skipped, its optimizer state kept,
    and the skip counted in num_empty_minibatches, not as a non-finite update."""
    algo = tiny_config().build_algo()
    try:
        learner = algo.learner_group._learner
        allocator, worker = learner.module[ALLOCATOR], learner.module["worker"]
        algo.train()
        before = {"allocator": _weights(allocator), "worker": _weights(worker)}
        adam_before = _adam_steps(learner, ALLOCATOR)
        real_rows = learner.compute_loss_for_module

        def no_real_rows(*, module_id, config, batch, fwd_out):
            if module_id == ALLOCATOR:
                batch = {**batch, Columns.LOSS_MASK: torch.zeros_like(batch[Columns.LOSS_MASK])}
            return real_rows(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)

        learner.compute_loss_for_module = no_real_rows
        result = algo.train()
        stats = result["learners"][ALLOCATOR]
        assert stats["num_empty_minibatches"] >= 1
        assert stats["num_nonfinite_updates"] == 0
        assert result["learners"]["worker"]["num_empty_minibatches"] == 0
        assert _same_weights(_weights(allocator), before["allocator"])
        assert _adam_steps(learner, ALLOCATOR) == adam_before
        assert not _same_weights(_weights(worker), before["worker"])

        learner.compute_loss_for_module = real_rows
        empty = stats["num_empty_minibatches"]
        result = algo.train()
        assert result["learners"][ALLOCATOR]["num_empty_minibatches"] == empty  # lifetime
        assert not _same_weights(_weights(allocator), before["allocator"])
    finally:
        algo.stop()


@pytest.mark.parametrize("fault", ["nan_inputs", "inf_estimate"])
def test_unusable_mi_batches_skip_the_term_and_ppo_still_updates(fault):
    """NaN MINE inputs or an infinite estimate: the MI term is left out of those minibatches
    and counted in `mi_skipped`; PPO's update of the allocator goes on, finite."""
    algo = tiny_config().build_algo()
    try:
        learner = algo.learner_group._learner
        allocator = learner.module[ALLOCATOR]
        if fault == "nan_inputs":
            clean = allocator._forward_train

            def nan_inputs(batch, **kwargs):
                out = clean(batch, **kwargs)
                out["mi_x"] = out["mi_x"] * float("nan")
                return out

            allocator._forward_train = nan_inputs
        else:
            mine = allocator.mi.mine
            clean_forward = mine.forward
            mine.forward = lambda *a, **k: tuple(t + float("inf") for t in clean_forward(*a, **k))
        before = _weights(allocator)
        result = algo.train()
        stats = result["learners"][ALLOCATOR]
        assert stats["mi_skipped"] >= 1 and stats["num_nonfinite_updates"] == 0
        assert "mi_value" not in stats
        assert not _same_weights(_weights(allocator), before)
        assert all(torch.isfinite(p).all() for p in allocator.parameters())
    finally:
        algo.stop()


@pytest.mark.parametrize("old_stack", [False, True])
def test_tiny_minibatches_skip_mi_instead_of_stopping_training(old_stack):
    """Minibatches of 4 rows (new stack: PPO's artificial rows included) hold a single allocator
    decision now and then, too few for MINE: those minibatches leave the term out (counted),
    and training goes on."""
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=dict(TINY_CITY))
        .training(train_batch_size_per_learner=16, minibatch_size=4, num_epochs=1)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=16)
        .alma(embed_dim=16)
        .mutual_info(mi_embed_dim=16)
    )
    if old_stack:
        config = config.api_stack(
            enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False
        )
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        if old_stack:
            # The old stack's allocator minibatches hold only real decisions (no artificial
            # rows), so MINE mostly has enough samples; a minibatch without reports NaN, which
            # RLlib's mean over minibatches leaves out (their stats must share their keys).
            stats = result["info"]["learner"][ALLOCATOR]
            assert np.isfinite(stats["learner_stats"]["total_loss"])
            model = stats["model"]
            assert {"mi_loss", "mi_value", "mi_skipped"} <= set(model)
        else:
            assert result["learners"][ALLOCATOR]["mi_skipped"] >= 1
    finally:
        algo.stop()


@pytest.mark.parametrize("measure", MEASURES)
def test_mine_is_finite_at_extreme_scores(measure):
    """Critic scores of +-1e4 (saturated critic): loss, estimate and gradients stay finite."""
    torch.manual_seed(0)
    mine = MINE(6, 6, measure=measure, embed_dim=8, negatives=16)
    original = mine._scores

    def extreme(fx, gy):
        scores = original(fx, gy)
        # +1e4 on the positives' side of zero and -1e4 on the others, keeping the gradient.
        return scores / scores.detach().abs().clamp_min(1e-12) * 1e4

    mine._scores = extreme
    x = torch.randn(40, 3, 6, requires_grad=True)
    y = torch.randn(40, 6, requires_grad=True)
    loss, mi = mine(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(mi)
    assert torch.isfinite(mine.nwj_estimate(x, y))
    for grad in (x.grad, y.grad, *(p.grad for p in mine.parameters())):
        assert torch.isfinite(grad).all()
    for sign in (1.0, -1.0):  # every score at the same extreme
        mine._scores = lambda fx, gy, s=sign: original(fx, gy) * 0 + s * 1e4
        loss, mi = mine(x, y)
        assert torch.isfinite(loss) and torch.isfinite(mi)


# ------------------------------------------------------------------ worker faults
def _runner_pids(algo) -> list[int]:
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: os.getpid(), local_env_runner=False
    )


@pytest.mark.slow
def test_killed_env_runner_is_restarted_and_training_completes():
    """SIGKILL the only remote EnvRunner while an iteration runs: the iterations after it
    complete (those without a runner sample nothing), the runner is restarted, and sampling
    resumes on the new process."""
    config = tiny_config(runners=1).fault_tolerance(
        restart_failed_env_runners=True, delay_between_env_runner_restarts_s=0.1
    )
    algo = config.build_algo()
    try:
        algo.train()
        (pid,) = _runner_pids(algo)
        killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
        killer.start()
        sampled_after_restart = False
        # Iterations without a runner are quick; on a loaded machine the restart takes tens of
        # seconds, so wait for it by the clock rather than by a count of iterations.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            result = algo.train()
            steps = result["env_runners"].get("num_env_steps_sampled", float("nan"))
            restarted = algo.env_runner_group.num_remote_worker_restarts() >= 1
            if restarted and np.isfinite(steps) and steps > 0:
                sampled_after_restart = True
                break
        killer.join()
        assert sampled_after_restart, "the killed EnvRunner was not restarted"
        assert result["training_iteration"] == algo.iteration >= 2
        (new_pid,) = _runner_pids(algo)
        assert new_pid != pid
        assert np.isfinite(result["learners"][ALLOCATOR]["total_loss"])
    finally:
        algo.stop()


# ------------------------------------------------------------------ checkpoints
def _module_weights(algo) -> dict[str, dict[str, torch.Tensor]]:
    learner = algo.learner_group._learner
    return {mid: _weights(learner.module[mid]) for mid in learner.module.keys()}


def _files(directory) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_run_killed_between_checkpoints_resumes_from_the_last_one(tmp_path):
    ckpt = tmp_path / "ckpt"
    algo = tiny_config().build_algo()
    try:
        algo.train()
        algo.train()
        saved_path = save_checkpoint(algo, ckpt)
        saved = _module_weights(algo)
        algo.train()  # progress after the checkpoint, lost when the run dies here
    finally:
        algo.stop()
    assert saved_path == str(ckpt.resolve())
    restored = load_algorithm(ckpt)
    try:
        assert restored.iteration == 2
        weights = _module_weights(restored)
        assert all(_same_weights(weights[mid], saved[mid]) for mid in saved)
        assert restored.train()["training_iteration"] == 3
    finally:
        restored.stop()


def test_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    ckpt = tmp_path / "ckpt"
    algo = tiny_config().build_algo()
    try:
        algo.train()
        save_checkpoint(algo, ckpt)
        before = _files(ckpt)
        algo.train()

        def crash(*args, **kwargs):
            raise OSError("disk full (simulated crash mid-save)")

        # The learner group (new weights) is written first, then the EnvRunner's save fails.
        algo.env_runner.save_to_path = crash
        with pytest.raises(OSError, match="simulated crash"):
            save_checkpoint(algo, ckpt)
        assert _files(ckpt) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half-written dirs

        # A process killed mid-save leaves its temporary sibling behind: the next save
        # removes it. A crash between the two renames leaves only the previous checkpoint
        # under its hidden name: loading finds it.
        del algo.env_runner.save_to_path
        (tmp_path / ".ckpt.saving-deadbeef").mkdir()
        save_checkpoint(algo, ckpt)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
        ckpt.rename(tmp_path / ".ckpt.previous")
    finally:
        algo.stop()
    restored = load_algorithm(ckpt)
    try:
        assert restored.iteration == 2
    finally:
        restored.stop()


# ------------------------------------------------------------------ reproducibility
def _rollout(seed: int, allocation: str, n_steps: int = 60) -> list:
    """A seeded random policy (valid actions only) through the hierarchy."""
    env_config = {**TINY_CITY, "_hierarchy": {"allocation": allocation}}
    env = make_env("save_the_city", env_config)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for _ in range(n_steps):
        actions = {}
        for agent, agent_obs in obs.items():
            if agent == ALLOCATOR:
                live = np.flatnonzero(agent_obs["task_mask"])
                actions[agent] = rng.choice(live, size=env.n_slots).astype(np.int64)
            else:
                actions[agent] = int(rng.choice(np.flatnonzero(agent_obs["action_mask"])))
        obs, rewards, terms, truncs, infos = env.step(actions)
        trace.append((actions, obs, rewards, terms, truncs))
        if terms["__all__"] or truncs["__all__"]:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


@pytest.mark.parametrize("allocation", ["learned", "random"])
def test_same_seed_same_rollout(allocation):
    first = _rollout(11, allocation)
    np.testing.assert_equal(first, _rollout(11, allocation))
    with pytest.raises(AssertionError):
        np.testing.assert_equal(first, _rollout(12, allocation))


LEARNER_STATS = ("total_loss", "policy_loss", "vf_loss", "entropy", "mean_kl_loss", "mi_loss")


def _first_iteration(seed: int) -> dict:
    algo = tiny_config(seed=seed).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    stats = {
        (mid, key): float(result["learners"][mid][key])
        for mid in (ALLOCATOR, "worker")
        for key in LEARNER_STATS
        if key in result["learners"][mid]
    }
    stats["return"] = float(result["env_runners"]["episode_return_mean"])
    return stats


def test_same_seed_same_first_iteration():
    first = _first_iteration(5)
    assert (ALLOCATOR, "mi_loss") in first and (ALLOCATOR, "policy_loss") in first
    assert _first_iteration(5) == first  # exactly equal
    other = _first_iteration(6)
    assert other[(ALLOCATOR, "total_loss")] != first[(ALLOCATOR, "total_loss")]


_INITIAL_WEIGHTS = """
import json, torch
from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.registry import make_env
config = (AlmaPPOConfig().environment("save_the_city", env_config={"scenario": "2a_3b"})
          .alma(embed_dim=16).mutual_info(mi_embed_dim=16))
config.validate()
spec = config.get_multi_rl_module_spec(env=make_env(config.env, config.env_config))
torch.manual_seed(0)
module = spec.build()
print(json.dumps({m: sum(float(p.double().sum()) for p in module[m].parameters())
                  for m in module.keys()}))
"""


@pytest.mark.slow
def test_initial_weights_do_not_depend_on_the_hash_seed():
    """Module construction order (and so the weights drawn from the seeded RNG) is fixed, not
    the iteration order of a set of module ids, which changes with PYTHONHASHSEED."""
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _INITIAL_WEIGHTS],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert list(outputs[0]) == list(outputs[1]) == ["worker", ALLOCATOR]
    assert outputs[0] == outputs[1]
