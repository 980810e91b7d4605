"""Minibatches that give every module the same number of epochs.

RLlib's `MiniBatchCyclicIterator` slices `minibatch_size` rows from every module and cycles the
smaller batches until the largest one has done `num_epochs`; the allocator (a row per decision)
would then be passed over several times more often than the workers (a row per agent and env
step). Here every module covers its own batch once per epoch, in one of two splits:

- "equal_count": every module's batch is split into as many minibatches as the largest
  module's, one slice of each module per update step. With 4000-step batches on SaveTheCity
  the allocator's ~250 rows (decisions plus one bootstrap row per episode chunk) go in ~14
  slices of ~18 rows, so it takes ~70 small updates an iteration.
- "by_size": the largest module sets the update steps as before; every other module's batch is
  split into minibatches of at most `minibatch_size` rows, spread evenly over those steps (a
  module is absent from the steps in between). The allocator's ~250 rows are then one
  minibatch per epoch, as RLlib's PPO would treat a single policy of that size.
"""

from __future__ import annotations

import math

import numpy as np
from ray.rllib.policy.sample_batch import MultiAgentBatch

from rllib_alma_mi.settings import MINIBATCH_SPLITS


class ProportionalMiniBatchIterator:
    """Yields `MultiAgentBatch` minibatches; every module covers its batch `num_epochs` times.

    The number of update steps per epoch is `num_minibatches` when given (data-parallel
    learners must all take the same number), else ceil(largest module batch / minibatch_size).
    `split` says how the other modules' batches are spread over those steps (module
    docstring).
    """

    def __init__(
        self,
        batch: MultiAgentBatch,
        *,
        num_epochs: int,
        minibatch_size: int,
        shuffle: bool = True,
        num_minibatches: int | None = None,
        split: str = "equal_count",
    ):
        if split not in MINIBATCH_SPLITS:
            raise ValueError(f"split={split!r} is not allowed; use one of {MINIBATCH_SPLITS}")
        self._batch = batch
        self._num_epochs = num_epochs
        self._minibatch_size = minibatch_size
        largest = max(len(b) for b in batch.policy_batches.values())
        if num_minibatches is None:
            num_minibatches = math.ceil(largest / minibatch_size)
        self._num_minibatches = max(1, num_minibatches)
        self._largest = largest
        self._shuffle = shuffle
        self._split = split

    def __iter__(self):
        steps = self._num_minibatches
        for _ in range(self._num_epochs):
            slices: list[dict] = [{} for _ in range(steps)]
            for module_id, module_batch in self._batch.policy_batches.items():
                if self._shuffle:
                    module_batch.shuffle()
                n = len(module_batch)
                if self._split == "by_size" and n < self._largest:
                    parts = min(math.ceil(n / self._minibatch_size), steps)
                    # Slice j at step floor(j * steps / parts): distinct steps, evenly spread.
                    at = {j * steps // parts: j for j in range(parts)}
                else:
                    parts = max(1, min(steps, n))
                    at = {k: k % parts for k in range(steps)}
                edges = np.linspace(0, n, parts + 1).astype(int)
                for k, j in at.items():
                    slices[k][module_id] = module_batch[edges[j] : edges[j + 1]]
            for minibatch in slices:
                yield MultiAgentBatch(minibatch, len(self._batch))
