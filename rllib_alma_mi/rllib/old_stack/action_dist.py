"""Old API stack: the joint allocation distribution of the `allocator` policy.

Inputs are the per-step conditional logits of the autoregressive pointer, flattened to
(B, N*T) (masked entries = MASKED_LOGIT). Sampling runs the pointer autoregressively through
the model (`AllocatorNet.sample`) and writes the logits it used back into the inputs, so the
`action_dist_inputs` RLlib stores describe the allocation that was taken. The joint log-prob
of given actions is computed by teacher forcing (`AllocatorNet.log_prob`) when the
distribution comes from the model's last forward pass; otherwise logp, entropy and KL are
`JointAllocationLogits`' over the per-step logits, as on the new stack.

Registered name (on import): `alma_allocation`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.models import ModelCatalog
from ray.rllib.models.torch.torch_action_dist import TorchDistributionWrapper

from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits

ALLOCATION_DIST = "alma_allocation"


class AllocationDistribution(TorchDistributionWrapper):
    """Distribution over joint allocations (B, N) of N agent slots to T tasks.

    `model` must be the allocator model (`AllocatorModelV2`): it provides `n_slots`,
    `n_tasks` and, for sampling and exact log-probs, the observation and encoding of the
    forward pass that produced `inputs` (`model.allocation_context(inputs)`).
    A distribution built from stored inputs (e.g. PPO's previous-policy distribution) has no
    such context: its `logp` reads the per-step logits, which is exact for the actions they
    were computed for; it cannot sample.
    """

    def __init__(self, inputs: Any, model: Any):
        super().__init__(inputs, model)
        if model is None or not hasattr(model, "allocation_context"):
            raise ValueError(
                f"{ALLOCATION_DIST} needs the allocator model (custom_model 'alma_allocator'), "
                f"got {type(model).__name__}"
            )
        self.n_slots, self.n_tasks = model.n_slots, model.n_tasks
        self._sampled_logp: torch.Tensor | None = None

    # ------------------------------------------------------------------------- per-step views
    def _step_logits(self) -> torch.Tensor:
        """(B, N, T) conditional logits."""
        return self.inputs.reshape(-1, self.n_slots, self.n_tasks)

    def _joint(self) -> JointAllocationLogits:
        return JointAllocationLogits(self._step_logits())

    # ------------------------------------------------------------------------- sampling
    def _context(self):
        ctx = self.model.allocation_context(self.inputs)
        if ctx is None:
            raise ValueError(
                "sampling an allocation needs the observation of the allocator model's forward "
                "pass that produced these inputs; build the distribution as "
                "dist_class(model(input_dict)[0], model)"
            )
        return ctx

    def _sample(self, deterministic: bool) -> torch.Tensor:
        ctx = self._context()
        allocation, log_prob, _, logits = self.model.net.sample(
            ctx.obs, deterministic=deterministic, enc=ctx.enc
        )
        if not self.inputs.requires_grad:
            with torch.no_grad():
                self.inputs.copy_(logits.flatten(1))
        self.last_sample = allocation
        self._sampled_logp = log_prob
        return allocation

    def sample(self) -> torch.Tensor:
        """An autoregressive sample: (B, N) int64 task indices."""
        return self._sample(deterministic=False)

    def deterministic_sample(self) -> torch.Tensor:
        """The greedy allocation (each slot takes its most likely task in turn): (B, N)."""
        return self._sample(deterministic=True)

    def sampled_action_logp(self) -> torch.Tensor:
        """Joint log-prob (B,) of the last (deterministic_)sample under this distribution."""
        if self._sampled_logp is None:
            raise ValueError("sampled_action_logp() needs sample() or deterministic_sample()")
        return self._sampled_logp

    # ------------------------------------------------------------------------- densities
    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        """Joint log-prob (B,) of allocations `actions` (B, N).

        Teacher-forced through the model when these inputs come from its last forward pass
        (exact for any allocation); otherwise read from the per-step logits. Actions of
        slots with a single allowed task (dead slots) count as that task.
        """
        actions = torch.as_tensor(actions, device=self.inputs.device).long()
        actions = actions.reshape(-1, self.n_slots)
        ctx = self.model.allocation_context(self.inputs)
        if ctx is not None:
            log_prob, _, _ = self.model.net.log_prob(ctx.obs, actions, enc=ctx.enc)
            return log_prob
        return self._joint().log_prob(actions)

    def entropy(self) -> torch.Tensor:
        """Sum over slots of the conditional entropies: (B,)."""
        return self._joint().entropy()

    def kl(self, other: AllocationDistribution) -> torch.Tensor:
        """Sum over slots of KL(self_i || other_i) of the conditional distributions: (B,)."""
        return self._joint().kl(other._joint())

    @staticmethod
    def required_model_output_shape(action_space: gym.Space, model_config: Any) -> int:
        """N*T for `MultiDiscrete([T] * N)`."""
        nvec = getattr(action_space, "nvec", None)
        if (
            not isinstance(action_space, gym.spaces.MultiDiscrete)
            or nvec.ndim != 1
            or len(set(nvec.tolist())) != 1
        ):
            raise ValueError(
                f"{ALLOCATION_DIST} needs a MultiDiscrete([T] * N) action space (a task per "
                f"agent slot), got {action_space}"
            )
        return int(np.sum(nvec))


ModelCatalog.register_custom_action_dist(ALLOCATION_DIST, AllocationDistribution)
