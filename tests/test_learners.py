"""Several data-parallel learners: whole-episode shards, and learners that stay equal."""

from collections import Counter

import numpy as np
import pytest
import torch
import tree

from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.keys import ALLOCATOR, WORKER
from rllib_alma_mi.rllib.learner import AlmaPPOLearner
from rllib_alma_mi.rllib.sharding import (
    minibatches_per_epoch,
    module_rows,
    shard_whole_episodes,
)


class _AgentChunk:
    def __init__(self, module_id: str, rows: int):
        self.module_id, self.rows = module_id, rows

    def __len__(self):
        return self.rows


class _EpisodeChunk:
    """A stand-in multi-agent episode chunk: two worker agents and the allocator."""

    def __init__(self, name: str, workers: int, allocator: int):
        self.name = name
        self.agent_episodes = {
            "agent_0": _AgentChunk(WORKER, workers - workers // 2),
            "agent_1": _AgentChunk(WORKER, workers // 2),
            ALLOCATOR: _AgentChunk(ALLOCATOR, allocator),
        }
        self.env_steps = workers // 2

    def __len__(self):  # env steps, as MultiAgentEpisode counts them
        return self.env_steps


def episode(name: str, workers: int, allocator: int) -> _EpisodeChunk:
    return _EpisodeChunk(name, workers, allocator)


def test_shards_hold_whole_episodes_and_every_module():
    # The allocator acts in two of six chunks only; length alone would put both in one shard.
    episodes = [episode("a", 40, 4), episode("b", 40, 3)] + [
        episode(c, 40, 0) for c in "cdef"
    ]
    shards = shard_whole_episodes(episodes, 2)
    names = sorted(e.name for shard in shards for e in shard)
    assert names == list("abcdef")  # nothing sliced, dropped or repeated
    for shard in shards:
        rows = sum((module_rows(e) for e in shard), Counter())
        assert rows[ALLOCATOR] > 0 and rows[WORKER] > 0
    assert [sum(len(e) for e in shard) for shard in shards] == [60, 60]


def test_too_few_chunks_of_a_module_is_a_clear_error():
    episodes = [episode("a", 40, 4)] + [episode(c, 40, 0) for c in "bcd"]
    with pytest.raises(ValueError, match=r"num_learners=2.*module 'allocator'"):
        shard_whole_episodes(episodes, 2)


def test_every_learner_takes_the_minibatches_of_the_largest_module():
    episodes = [episode("a", 400, 40), episode("b", 390, 30)]
    # 790 worker rows over 2 learners in minibatches of 100 rows: 4 per learner and epoch.
    assert minibatches_per_epoch(episodes, 2, 100) == 4
    assert minibatches_per_epoch(episodes, 2, 1000) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_two_learners_train_and_hold_the_same_weights():
    """Two CPU learners on 2a_3b with MI and imitation on. Learner 1's allocator loss is
    made non-finite once (its gradients stay finite, as when MINE's inputs are non-finite),
    so only the agreement between the learners makes both skip that update."""

    class OneNonFiniteLoss(AlmaPPOLearner):
        def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
            import torch.distributed as dist

            loss = super().compute_loss_for_module(
                module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
            )
            if module_id == ALLOCATOR and dist.get_rank() == 1 and not hasattr(self, "hit"):
                self.hit = True
                return loss + loss.new_tensor(float("nan"))
            return loss

    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config={"scenario": "2a_3b", "max_cycles": 40})
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=2)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .learners(num_learners=2, num_cpus_per_learner=0.5, learner_class=OneNonFiniteLoss)
        # Every 5 steps: allocator decisions in every minibatch of both learners.
        .alma(embed_dim=16, imitation_steps=100_000, alloc_interval=5)
        .mutual_info(mi_embed_dim=16)
    )
    algo = config.build_algo()
    try:
        def state(learner):
            return learner.get_state(components=["rl_module", "optimizer"])

        before = [r.get() for r in algo.learner_group.foreach_learner(state)]
        for _ in range(2):
            result = algo.train()
        after = [r.get() for r in algo.learner_group.foreach_learner(state)]
    finally:
        algo.stop()

    learners = result["learners"]
    assert learners[ALLOCATOR]["num_nonfinite_updates"] == 1  # skipped once, on both
    assert learners[WORKER]["num_nonfinite_updates"] == 0
    assert np.isfinite(learners[ALLOCATOR]["mi_value"])
    assert np.isfinite(learners[ALLOCATOR]["imitation_loss"])

    def arrays(s):
        return {path: np.asarray(v, dtype=np.float64)
                for path, v in tree.flatten_with_path(s)
                if isinstance(v, np.ndarray | torch.Tensor | float | int)
                and not isinstance(v, bool)}

    first, second = arrays(after[0]), arrays(after[1])
    assert first.keys() == second.keys() and len(first) > 100
    for path, value in first.items():
        np.testing.assert_array_equal(value, second[path], err_msg=str(path))
    # Initial weights were equal too (rank 0's, broadcast), and training moved them.
    start = arrays(before[0])
    np.testing.assert_array_equal(
        arrays(before[1])[("rl_module", WORKER, "vf_net.value_head.2.weight")],
        start[("rl_module", WORKER, "vf_net.value_head.2.weight")],
    )
    moved = [k for k in start if k[0] == "rl_module" and not np.array_equal(start[k], first[k])]
    assert any(k[1] == WORKER for k in moved) and any(k[1] == ALLOCATOR for k in moved)


def two_learners(num_epochs: int, **alma) -> AlmaPPOConfig:
    """Two CPU learners on 2a_3b, 200 env steps each in minibatches of 100, 16 wide."""
    return (
        AlmaPPOConfig()
        .environment("save_the_city", env_config={"scenario": "2a_3b", "max_cycles": 40})
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=num_epochs)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .learners(num_learners=2, num_cpus_per_learner=0.5)
        .alma(embed_dim=16, **alma)
        .mutual_info(mi_embed_dim=16)
    )


def train_once_and_get_learner_states(config) -> tuple[dict, list]:
    """One training iteration; the result and each learner's module and optimizer state."""
    algo = config.build_algo()
    try:
        result = algo.train()
        states = [r.get() for r in algo.learner_group.foreach_learner(
            lambda learner: learner.get_state(components=["rl_module", "optimizer"]))]
    finally:
        algo.stop()
    return result, states


def assert_learners_equal(states: list) -> None:
    first = dict(tree.flatten_with_path(states[0]))
    for path, value in tree.flatten_with_path(states[1]):
        if isinstance(value, np.ndarray | torch.Tensor):
            np.testing.assert_array_equal(np.asarray(value), np.asarray(first[path]),
                                          err_msg=str(path))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_two_learners_stay_equal_through_the_populations_mi_steps():
    """The population's MI steps run in every learner on its own (MINE draws negatives per
    learner); the first learner's weights and optimizer state are then given to all."""
    config = two_learners(num_epochs=1).evolution(
        population_size=2, tournament_size=2, episodes_per_eval=1, eval_workers=1, ea_mi_steps=2
    )
    result, states = train_once_and_get_learner_states(config)
    assert np.isfinite(result["evolution"]["ea_mi_value"])
    assert_learners_equal(states)
