"""Minibatches that give every module the same number of epochs.

RLlib's `MiniBatchCyclicIterator` slices `minibatch_size` rows from every module and cycles the
smaller batches until the largest one has done `num_epochs`; the allocator (a row per decision)
would then be passed over several times more often than the workers (a row per agent and env
step). Here each epoch is split into the same number of minibatches for every module, each
module's minibatch being a proportional slice of its own batch.
"""

from __future__ import annotations

import math

import numpy as np
from ray.rllib.policy.sample_batch import MultiAgentBatch


class ProportionalMiniBatchIterator:
    """Yields `MultiAgentBatch` minibatches; every module covers its batch `num_epochs` times.

    The number of minibatches per epoch is `num_minibatches` when given (data-parallel
    learners must all take the same number), else ceil(largest module batch / minibatch_size).
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
        for _ in range(self._num_epochs):
            bounds = {}
            for module_id, module_batch in self._batch.policy_batches.items():
                if self._shuffle:
                    module_batch.shuffle()
                n = len(module_batch)
                parts = min(self._num_minibatches, n)
                bounds[module_id] = np.linspace(0, n, parts + 1).astype(int)
            for k in range(self._num_minibatches):
                minibatch = {}
                for module_id, edges in bounds.items():
                    j = k % (len(edges) - 1)
                    module_batch = self._batch.policy_batches[module_id]
                    minibatch[module_id] = module_batch[edges[j] : edges[j + 1]]
                yield MultiAgentBatch(minibatch, len(self._batch))
