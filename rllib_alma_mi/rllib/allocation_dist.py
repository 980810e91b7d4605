"""The `allocator`'s action distribution: joint allocations from the pointer's step logits."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution

_SAMPLED_BY_THE_MODULE = (
    "JointAllocation cannot sample: each step's logits depend on the earlier choices, so the "
    "allocator module samples autoregressively (AllocatorNet.sample) and returns the actions."
)


class JointAllocation(Distribution):
    """Distribution over allocations (B, N) of N agent slots to T tasks.

    Inputs are the per-step conditional logits (B, N*T) that a forward pass computed for an
    allocation (masked entries = MASKED_LOGIT). logp of that allocation is the sum over slots
    of the chosen log-softmax entries; entropy and kl are sums of the per-step conditional
    ones. These equal RLlib's `TorchMultiCategorical` over the same logits, computed in a few
    batched operations instead of through N torch `Categorical`s, whose construction and
    argument checks showed up in profiles of the learner's update.
    """

    def __init__(self, logits: torch.Tensor, n_tasks: int):
        super().__init__()
        self.log_probs = torch.log_softmax(logits.unflatten(-1, (-1, n_tasks)), dim=-1)

    def logp(self, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        chosen = self.log_probs.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)
        return chosen.sum(-1)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        probs = self.log_probs.exp()
        return -torch.where(probs > 0, probs * self.log_probs, 0.0).sum((-1, -2))

    def kl(self, other: JointAllocation, **kwargs: Any) -> torch.Tensor:
        # As torch's Categorical KL: infinite where only `other` rules a choice out.
        probs = self.log_probs.exp()
        terms = probs * (self.log_probs - other.log_probs)
        terms = torch.where(other.log_probs.exp() == 0, torch.inf, terms)
        return torch.where(probs == 0, 0.0, terms).sum((-1, -2))

    def sample(self, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError(_SAMPLED_BY_THE_MODULE)

    def rsample(self, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError(_SAMPLED_BY_THE_MODULE)

    def to_deterministic(self) -> Distribution:
        raise NotImplementedError(_SAMPLED_BY_THE_MODULE)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs: Any) -> int:
        return int(np.sum(space.nvec))

    @classmethod
    def from_logits(cls, logits: torch.Tensor, n_tasks: int, **kwargs: Any) -> JointAllocation:
        return cls(logits, n_tasks)


@functools.cache
def joint_allocation_cls(n_tasks: int) -> type[JointAllocation]:
    """`JointAllocation` with T bound, as RLlib's `from_logits(logits)` calls it (one class per
    T: RLlib asks for the class at every update)."""
    return JointAllocation.get_partial_dist_cls(n_tasks=n_tasks)
