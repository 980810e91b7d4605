"""`ProportionalMiniBatchIterator`: every module covers its batch once per epoch, in either
split, and the largest module sets the update steps."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_alma_mi.rllib.minibatches import ProportionalMiniBatchIterator


def batch(**rows: int) -> MultiAgentBatch:
    return MultiAgentBatch(
        {m: SampleBatch({"row": np.arange(n)}) for m, n in rows.items()}, max(rows.values())
    )


def epochs(split: str, num_epochs: int = 2, minibatch_size: int = 100, **rows: int):
    it = ProportionalMiniBatchIterator(
        batch(**rows), num_epochs=num_epochs, minibatch_size=minibatch_size, split=split
    )
    minibatches = [mb.policy_batches for mb in it]
    steps = len(minibatches) // num_epochs
    return [minibatches[e * steps : (e + 1) * steps] for e in range(num_epochs)]


@pytest.mark.parametrize("split", ["equal_count", "by_size"])
def test_every_module_covers_its_batch_once_per_epoch(split):
    for epoch in epochs(split, worker=950, allocator=230):
        assert len(epoch) == 10  # ceil(950 / 100): the workers set the steps
        assert all("worker" in step for step in epoch)
        for module, n in (("worker", 950), ("allocator", 230)):
            seen = Counter(int(r) for step in epoch if module in step
                           for r in step[module]["row"])
            assert seen == Counter(range(n))


def test_equal_count_slices_the_small_module_at_every_step():
    for epoch in epochs("equal_count", worker=950, allocator=230):
        assert [len(step["allocator"]) for step in epoch] == [23] * 10


def test_by_size_gives_the_small_module_minibatches_of_minibatch_size():
    for epoch in epochs("by_size", worker=950, allocator=230):
        sizes = [len(step["allocator"]) if "allocator" in step else 0 for step in epoch]
        assert sorted(sizes, reverse=True)[:3] == [77, 77, 76] and sum(sizes) == 230
        assert [k for k, n in enumerate(sizes) if n] == [0, 3, 6]  # spread over the epoch
    (epoch,) = epochs("by_size", num_epochs=1, minibatch_size=1000, worker=950, allocator=230)
    assert [len(step["allocator"]) for step in epoch] == [230]


@pytest.mark.parametrize("split", ["equal_count", "by_size"])
def test_no_step_is_empty_when_the_largest_module_has_fewer_rows_than_steps(split):
    it = ProportionalMiniBatchIterator(
        batch(worker=3, allocator=2), num_epochs=1, minibatch_size=1, num_minibatches=5,
        split=split,
    )
    steps = [mb.policy_batches for mb in it]
    assert len(steps) == 5 and all(len(step["worker"]) == 1 for step in steps)


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match=r"split='size'.*'by_size'"):
        ProportionalMiniBatchIterator(batch(worker=10), num_epochs=1, minibatch_size=5,
                                      split="size")


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("split", ["equal_count", "by_size"])
def test_by_size_updates_the_allocator_on_its_whole_batch(split):
    """`small_config`'s allocator batch is smaller than its minibatch size: "by_size" updates
    it once, on every row; "equal_count" in as many slices as the workers'."""
    from conftest import small_config, train_once

    from rllib_alma_mi.keys import ALLOCATOR, WORKER

    learners = train_once(small_config(minibatch_split=split))["learners"]
    allocator = learners[ALLOCATOR]
    rows, mean_minibatch = allocator["num_module_steps_trained"], allocator[
        "module_train_batch_size_mean"]
    assert learners[WORKER]["num_module_steps_trained"] > 2 * 200  # several worker minibatches
    if split == "by_size":
        assert mean_minibatch == rows
    else:
        assert mean_minibatch < rows / 2
    assert np.isfinite(allocator["policy_loss"])
