"""The `allocator`'s action distribution: joint allocations from the pointer's step logits."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution

from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits

_SAMPLED_BY_THE_MODULE = (
    "JointAllocation cannot sample: each step's logits depend on the earlier choices, so the "
    "allocator module samples autoregressively (AllocatorNet.sample) and returns the actions."
)


class JointAllocation(Distribution):
    """Distribution over allocations (B, N) of N agent slots to T tasks.

    Inputs are the per-step conditional logits (B, N*T) that a forward pass computed for an
    allocation (masked entries = MASKED_LOGIT); logp, entropy and kl are those of
    `rllib_alma_mi.nn.JointAllocationLogits` over them, which equal RLlib's
    `TorchMultiCategorical` over the same logits, in a few batched operations.
    """

    def __init__(self, logits: torch.Tensor, n_tasks: int):
        super().__init__()
        self.joint = JointAllocationLogits.from_flat(logits, n_tasks)

    def logp(self, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.joint.log_prob(value)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        return self.joint.entropy()

    def kl(self, other: JointAllocation, **kwargs: Any) -> torch.Tensor:
        return self.joint.kl(other.joint)

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
