"""Data-parallel learners (`num_learners > 1`): whole episodes per learner, one step count.

RLlib's `LearnerGroup.update(episodes=...)` balances the learners' shards by slicing
multi-agent episodes (`ShardEpisodesIterator`), which fails on the hierarchy's episodes: the
allocator acts less often than the workers, so its lookback buffer differs from theirs and
`MultiAgentEpisode.slice` raises. Here every episode chunk goes whole to one learner.

Torch DDP averages the gradients of each module across learners inside `backward()`, so every
learner must update the same modules the same number of times: every shard gets some rows of
every module (`shard_whole_episodes`), and every learner gets the same number of minibatches
per epoch (`num_total_minibatches`, read by `AlmaPPOLearner`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ray.rllib.core.learner.learner_group import LearnerGroup
from ray.rllib.core.learner.training_data import TrainingData


def module_rows(episode: Any) -> Counter:
    """{module_id: timesteps} of one (multi-agent) episode chunk."""
    if not hasattr(episode, "agent_episodes"):
        return Counter({getattr(episode, "module_id", None): len(episode)})
    rows: Counter = Counter()
    for agent_episode in episode.agent_episodes.values():
        if len(agent_episode):
            rows[agent_episode.module_id] += len(agent_episode)
    return rows


def shard_whole_episodes(episodes: list[Any], num_shards: int) -> list[list[Any]]:
    """`num_shards` lists of whole episodes, about equal in timesteps, each holding rows of
    every module found in `episodes`.

    First, module by module (the rarest first), each shard without rows of that module gets
    the unassigned episode with the most of them; then the rest go, longest first, to the
    shard with the fewest timesteps. Raises ValueError when a module's rows lie in fewer
    episodes than there are shards.
    """
    rows = [module_rows(e) for e in episodes]
    totals: Counter = sum(rows, Counter())
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    lengths = [0] * num_shards
    unassigned = set(range(len(episodes)))

    def assign(index: int, shard: int) -> None:
        shards[shard].append(index)
        lengths[shard] += len(episodes[index])
        unassigned.discard(index)

    for module_id in sorted(totals, key=lambda m: (totals[m], str(m))):
        holders = [i for i in range(len(episodes)) if rows[i][module_id]]
        if len(holders) < num_shards:
            raise ValueError(
                f"num_learners={num_shards}: only {len(holders)} of the {len(episodes)} "
                f"episode chunks sampled this iteration hold rows of module {module_id!r}, "
                "and every learner needs some (they update in lockstep); sample more chunks "
                "per iteration (a larger train_batch_size_per_learner, more env runners or "
                "envs per runner, a shorter rollout_fragment_length) or use fewer learners"
            )
        for shard in range(num_shards):
            if any(rows[i][module_id] for i in shards[shard]):
                continue
            free = [i for i in holders if i in unassigned]
            assign(max(free, key=lambda i: (rows[i][module_id], -i)), shard)
    for index in sorted(unassigned, key=lambda i: (-len(episodes[i]), i)):
        assign(index, lengths.index(min(lengths)))
    return [[episodes[i] for i in sorted(shard)] for shard in shards]


def minibatches_per_epoch(episodes: list[Any], num_shards: int, minibatch_size: int) -> int:
    """The minibatches each learner takes per epoch: the largest module's timesteps over
    all shards, split into minibatches of `minibatch_size` rows per learner."""
    totals: Counter = sum((module_rows(e) for e in episodes), Counter())
    largest = max(totals.values(), default=0)
    return max(1, math.ceil(largest / (num_shards * minibatch_size)))


class WholeEpisodeTrainingData(TrainingData):
    """`TrainingData` whose episodes are sharded whole (`shard_whole_episodes`)."""

    def shard(self, num_shards: int, len_lookback_buffer: int | None = None, **kwargs: Any):
        if self.episodes is None or num_shards <= 1:
            return super().shard(num_shards, len_lookback_buffer=len_lookback_buffer, **kwargs)
        extra = {}
        if kwargs.get("minibatch_size"):
            per_epoch = minibatches_per_epoch(
                self.episodes, num_shards, kwargs["minibatch_size"]
            )
            extra["num_total_minibatches"] = per_epoch * kwargs.get("num_epochs", 1)
        return [
            (TrainingData(episodes=shard), dict(extra))
            for shard in shard_whole_episodes(self.episodes, num_shards)
        ]


class AlmaLearnerGroup(LearnerGroup):
    """`LearnerGroup` that gives remote learners whole episodes (`WholeEpisodeTrainingData`)."""

    def update(self, *, episodes: list[Any] | None = None, training_data=None, **kwargs):
        if episodes is not None and training_data is None and not self.is_local:
            training_data, episodes = WholeEpisodeTrainingData(episodes=episodes), None
        return super().update(episodes=episodes, training_data=training_data, **kwargs)
