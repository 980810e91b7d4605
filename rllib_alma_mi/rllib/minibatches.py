"""Minibatches that give every module the same number of epochs.

RLlib's `MiniBatchCyclicIterator` slices `minibatch_size` rows from every module and cycles the
smaller batches until the largest one has done `num_epochs`; the allocator (a row per decision)
would then be passed over several times more often than the workers (a row per agent and env
step). Here every module covers its own batch once per epoch: every module's batch is split
into as many minibatches as the largest module's, one slice of each module per update step.
With 4000-step batches on SaveTheCity the allocator's ~250 rows (decisions plus one bootstrap
row per episode chunk) go in ~14 slices of ~18 rows, so it takes ~70 small updates an
iteration. (Updating it on its whole batch once per epoch instead, as RLlib's PPO treats a
single policy of that size, learned far later: `results/minibatch_split`.)
"""

from __future__ import annotations

import math

import numpy as np
from ray.rllib.policy.sample_batch import MultiAgentBatch


class ProportionalMiniBatchIterator:
    """Yields `MultiAgentBatch` minibatches; every module covers its batch `num_epochs` times.

    The number of update steps per epoch is `num_minibatches` when given (data-parallel
    learners must all take the same number), else ceil(largest module batch / minibatch_size).
    A module with fewer rows than steps repeats its one-row slices within the epoch.
    """

    def __init__(
        self,
        batch: MultiAgentBatch,
        *,
        num_epochs: int,
        minibatch_size: int,
        shuffle: bool = True,
        num_minibatches: int | None = None,
    ):
        self._batch = batch
        self._num_epochs = num_epochs
        if num_minibatches is None:
            largest = max(len(b) for b in batch.policy_batches.values())
            num_minibatches = math.ceil(largest / minibatch_size)
        self._num_minibatches = max(1, num_minibatches)
        self._shuffle = shuffle

    def __iter__(self):
        steps = self._num_minibatches
        for _ in range(self._num_epochs):
            slices: list[dict] = [{} for _ in range(steps)]
            for module_id, module_batch in self._batch.policy_batches.items():
                if self._shuffle:
                    module_batch.shuffle()
                n = len(module_batch)
                parts = max(1, min(steps, n))
                edges = np.linspace(0, n, parts + 1).astype(int)
                for k in range(steps):
                    j = k % parts
                    slices[k][module_id] = module_batch[edges[j] : edges[j + 1]]
            for minibatch in slices:
                yield MultiAgentBatch(minibatch, len(self._batch))
