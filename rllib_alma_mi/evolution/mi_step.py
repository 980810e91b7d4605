"""The MI term trained on the EA rollouts: gradient steps of the allocator's `mi_weight *
mi_loss` on allocator observations, in every learner."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.rllib.allocator_module import TRAINING_ONLY_KEYS
from rllib_alma_mi.rllib.greedy import stack_observations


def mi_step_on_observations(learner: Any, observations: dict[str, Any]) -> float | None:
    """One gradient step of the allocator's MI term (`mi_weight * mi_loss`) on a batch of
    allocator observations, in `learner`; returns the MI estimate, or None when the allocator
    carries no MI term. Only the encoder and the MINE critic get gradients (the pointer head
    and the value net do not enter the term); the worker module is left alone, and a
    non-finite loss skips the step."""
    module = learner.module[ALLOCATOR].unwrapped()
    if getattr(module, "mi", None) is None:
        return None
    device = next(module.parameters()).device
    obs = _to_tensors(observations, device)
    enc = module.net.encode({k: v for k, v in obs.items() if k not in TRAINING_ONLY_KEYS})
    mi_loss, mi_value = module.mi.loss(module.mi.inputs_from_allocator(enc, obs), None)
    config = learner.config.get_config_for_module(ALLOCATOR)
    loss = config.mi_weight * mi_loss
    if not torch.isfinite(loss):
        return float("nan")
    optimizers = [o for _, o in learner.get_optimizers_for_module(ALLOCATOR)]
    for module_id in learner.module.keys():
        for _, optimizer in learner.get_optimizers_for_module(module_id):
            optimizer.zero_grad(set_to_none=True)  # no stale PPO gradient may be stepped
    loss.backward()
    grads = {
        learner.get_param_ref(p): p.grad for p in module.parameters() if p.grad is not None
    }
    grads = learner.postprocess_gradients_for_module(
        module_id=ALLOCATOR, config=config, module_gradients_dict=grads
    )
    for param in module.parameters():
        param.grad = grads.get(learner.get_param_ref(param))
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(mi_value.detach())


def _to_tensors(tree_: Any, device: Any) -> Any:
    if isinstance(tree_, dict):
        return {k: _to_tensors(v, device) for k, v in tree_.items()}
    return torch.as_tensor(tree_, device=device)


def _train_mi_on(algo: Any, observations: list, steps: int) -> float:
    """`steps` MI steps on the EA rollouts' allocator observations in every learner, then the
    new weights go to the env runners; returns the last step's mean MI estimate."""
    batch = stack_observations(observations)
    values = []
    for _ in range(steps):
        results = algo.learner_group.foreach_learner(
            lambda learner, obs=batch: mi_step_on_observations(learner, obs)
        )
        values = [r.get() for r in results if r.ok]
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else float("nan")

