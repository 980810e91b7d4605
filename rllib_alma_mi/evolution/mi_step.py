"""The MI term trained on the EA rollouts: gradient steps of the allocator's `mi_weight *
mi_loss` on allocator observations, in every learner."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER, COMPONENT_RL_MODULE
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from rllib_alma_mi.keys import ALLOCATOR, MI_VALUE, TRAINING_ONLY_KEYS
from rllib_alma_mi.losses import LossTerms, MutualInfoLoss
from rllib_alma_mi.rllib.greedy import stack_observations


def mi_step_on_observations(learner: Any, observations: dict[str, Any]) -> LossTerms | None:
    """One gradient step of the allocator's MI term (`mi_weight * mi_loss`) on a batch of
    allocator observations, in `learner`; returns the term (its `mi_value`, or why the batch
    was skipped, as in the learner), or None when the allocator carries no MI term. Only the
    encoder and the MINE critic get gradients (the pointer head and the value net do not enter
    the term); the worker module is left alone, and a skipped batch takes no step."""
    module = learner.module[ALLOCATOR].unwrapped()
    if getattr(module, "mi", None) is None:
        return None
    device = next(module.parameters()).device
    obs = _to_tensors(observations, device)
    enc = module.net.encode({k: v for k, v in obs.items() if k not in TRAINING_ONLY_KEYS})
    terms = MutualInfoLoss(module.mi)(module.mi.inputs_from_allocator(enc, obs))
    if terms.skipped is not None:
        return terms
    config = learner.config.get_config_for_module(ALLOCATOR)
    optimizers = [o for _, o in learner.get_optimizers_for_module(ALLOCATOR)]
    for module_id in learner.module.keys():
        for _, optimizer in learner.get_optimizers_for_module(module_id):
            optimizer.zero_grad(set_to_none=True)  # no stale PPO gradient may be stepped
    (config.mi_weight * terms.loss).backward()
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
    return terms


def _to_tensors(tree_: Any, device: Any) -> Any:
    if isinstance(tree_, dict):
        return {k: _to_tensors(v, device) for k, v in tree_.items()}
    return torch.as_tensor(tree_, device=device)


def train_mi_on(algo: Any, observations: list, steps: int) -> dict[str, float]:
    """`steps` MI steps on the EA rollouts' allocator observations in every learner, then the
    new weights go to the env runners. Returns `ea_mi_value` (the last step's mean estimate
    over the learners that took it; NaN when none did) and `ea_mi_skipped` (skipped steps)."""
    batch = stack_observations(observations)
    terms, skipped = [], 0
    for _ in range(steps):
        results = algo.learner_group.foreach_learner(
            lambda learner, obs=batch: mi_step_on_observations(learner, obs)
        )
        terms = [t for t in (r.get() for r in results if r.ok) if t is not None]
        skipped += sum(t.skipped is not None for t in terms)
    if len(algo.learner_group) > 1:
        # Several learners each took these steps on their own copy (their gradients are not
        # averaged here, and MINE draws its negatives per learner): the first learner's
        # weights and optimizer state go to all, so they stay equal.
        state = algo.learner_group.get_state(components=[
            f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}",
            f"{COMPONENT_LEARNER}/{COMPONENT_OPTIMIZER}",
        ])
        # A learner ignores weights whose sequence number is not newer than its own.
        state[COMPONENT_LEARNER].pop(WEIGHTS_SEQ_NO, None)
        algo.learner_group.set_state(state)
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    values = [float(t.metrics[MI_VALUE]) for t in terms if t.skipped is None]
    return {
        "ea_mi_value": float(np.mean(values)) if values else float("nan"),
        "ea_mi_skipped": float(skipped),
    }
