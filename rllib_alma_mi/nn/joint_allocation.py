"""The joint-allocation distribution: N agent slots, each choosing one of T tasks in turn."""

from __future__ import annotations

import torch

from rllib_alma_mi.nn.attention import MASKED_LOGIT


class JointAllocationLogits:
    """A distribution over allocations (..., N) given the per-step conditional logits (..., N, T).

    Step i's logits are those the pointer computed for slot i given the choices of slots
    0..i-1; entries at `MASKED_LOGIT` are ruled out (softmax sends them to probability 0). The joint
    log-prob is the sum over slots of the chosen log-softmax entries; entropy and KL are the
    sums over slots of the conditional ones. A slot whose step allows a single task (a dead
    agent slot, or a sample with one live task) counts as choosing it, whatever the stored
    action says. KL follows torch's `Categorical`: infinite where only `other` rules a
    choice out (a masked entry), finite wherever both allow it.

    Both API stacks' action distributions and `AllocatorNet` compute through this class.
    """

    def __init__(self, step_logits: torch.Tensor):
        if step_logits.dim() < 2:
            raise ValueError(
                f"step_logits must have shape (..., N, T), got {tuple(step_logits.shape)}"
            )
        self.allowed = step_logits > MASKED_LOGIT  # (..., N, T)
        self.log_probs = torch.log_softmax(step_logits, dim=-1)

    @classmethod
    def from_flat(cls, logits: torch.Tensor, n_tasks: int) -> JointAllocationLogits:
        """From logits flattened to (..., N*T), as RLlib stores action-distribution inputs."""
        return cls(logits.unflatten(-1, (-1, n_tasks)))

    def log_prob(self, allocation: torch.Tensor) -> torch.Tensor:
        """Joint log-prob (...,) of `allocation` (..., N) int task indices."""
        allocation = allocation.long()
        single = self.allowed.sum(-1) == 1
        allocation = torch.where(single, self.allowed.long().argmax(-1), allocation)
        return self.log_probs.gather(-1, allocation.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Sum over slots of the conditional entropies: (...,)."""
        probs = self.log_probs.exp()
        return -torch.where(self.allowed, probs * self.log_probs, 0.0).sum((-1, -2))

    def kl(self, other: JointAllocationLogits) -> torch.Tensor:
        """Sum over slots of KL(self_i || other_i) of the conditional distributions: (...,)."""
        probs = self.log_probs.exp()
        terms = probs * (self.log_probs - other.log_probs)
        terms = torch.where(self.allowed & ~other.allowed, torch.inf, terms)
        return torch.where(self.allowed, terms, 0.0).sum((-1, -2))
