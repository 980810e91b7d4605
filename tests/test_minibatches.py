"""`ProportionalMiniBatchIterator`: every module covers its batch once per epoch, the largest
module sets the update steps, and the small allocator is sliced into every step."""

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


def epochs(num_epochs: int = 2, minibatch_size: int = 100, **rows: int):
    it = ProportionalMiniBatchIterator(
        batch(**rows), num_epochs=num_epochs, minibatch_size=minibatch_size
    )
    minibatches = [mb.policy_batches for mb in it]
    steps = len(minibatches) // num_epochs
    return [minibatches[e * steps : (e + 1) * steps] for e in range(num_epochs)]


def test_every_module_covers_its_batch_once_per_epoch():
    for epoch in epochs(worker=950, allocator=230):
        assert len(epoch) == 10  # ceil(950 / 100): the workers set the steps
        for module, n in (("worker", 950), ("allocator", 230)):
            seen = Counter(int(r) for step in epoch for r in step[module]["row"])
            assert seen == Counter(range(n))


def test_the_small_module_is_sliced_into_every_step():
    for epoch in epochs(worker=950, allocator=230):
        assert [len(step["allocator"]) for step in epoch] == [23] * 10


def test_no_step_is_empty_when_the_largest_module_has_fewer_rows_than_steps():
    it = ProportionalMiniBatchIterator(
        batch(worker=3, allocator=2), num_epochs=1, minibatch_size=1, num_minibatches=5
    )
    steps = [mb.policy_batches for mb in it]
    assert len(steps) == 5 and all(len(step["worker"]) == 1 for step in steps)
    assert all(len(step["allocator"]) == 1 for step in steps)


@pytest.mark.usefixtures("ray_session")
def test_the_allocator_takes_as_many_update_steps_as_the_workers():
    """`small_config`'s allocator batch is smaller than its minibatch size; it is still cut into
    as many slices as the workers' batch, not updated once on its whole batch."""
    from conftest import small_config, train_once

    from rllib_alma_mi.keys import ALLOCATOR, WORKER

    learners = train_once(small_config())["learners"]
    allocator = learners[ALLOCATOR]
    rows, mean_minibatch = allocator["num_module_steps_trained"], allocator[
        "module_train_batch_size_mean"]
    assert learners[WORKER]["num_module_steps_trained"] > 2 * 200  # several worker minibatches
    assert mean_minibatch < rows / 2
    assert np.isfinite(allocator["policy_loss"])
