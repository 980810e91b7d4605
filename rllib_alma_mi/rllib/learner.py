"""PPO learner that adds the MINE term: `total = ppo_loss + mi_weight * mi_loss`."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns

from rllib_alma_mi.rllib.minibatches import ProportionalMiniBatchIterator


class AlmaPPOLearner(PPOTorchLearner):
    """`PPOTorchLearner` plus the MI term of the module that carries it.

    Logs `mi_loss` and `mi_value` under `result["learners"][module_id]`. Minibatches give the
    allocator and the workers the same number of epochs (see `ProportionalMiniBatchIterator`).
    """

    def build(self) -> None:
        # One torch thread per learner CPU: on small machines the env runners use the other
        # cores, and OpenMP threads competing with them made updates several times slower.
        cpus = self.config.num_cpus_per_learner
        torch.set_num_threads(int(cpus) if isinstance(cpus, (int, float)) and cpus >= 1 else 1)
        super().build()

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        mi_head = getattr(self.module[module_id].unwrapped(), "mi", None)
        if mi_head is None or "mi_x" not in fwd_out:
            return loss
        mi_loss, mi_value = mi_head.loss(fwd_out, batch.get(Columns.LOSS_MASK))
        self.metrics.log_value((module_id, "mi_loss"), mi_loss.detach(), window=1)
        self.metrics.log_value((module_id, "mi_value"), mi_value.detach(), window=1)
        return loss + config.mi_weight * mi_loss

    def _create_iterator_if_necessary(
        self,
        *,
        training_data,
        num_total_minibatches: int = 0,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle_batch_per_epoch: bool = False,
        **kwargs,
    ):
        if training_data.data_iterators or not minibatch_size or num_total_minibatches:
            return super()._create_iterator_if_necessary(
                training_data=training_data,
                num_total_minibatches=num_total_minibatches,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                **kwargs,
            )
        batch = self._make_batch_if_necessary(training_data=training_data)
        for module_id in list(batch.policy_batches):
            if not self.should_module_be_updated(module_id, batch):
                del batch.policy_batches[module_id]
        if not batch.policy_batches:
            return {}
        batch = self._set_slicing_by_batch_id(batch, value=True)
        return ProportionalMiniBatchIterator(
            batch,
            num_epochs=num_epochs,
            minibatch_size=minibatch_size,
            shuffle=shuffle_batch_per_epoch,
        )
