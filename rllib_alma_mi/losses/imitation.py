"""Imitation of the environment's heuristic allocation by the learned allocator."""

from __future__ import annotations

import torch

from rllib_alma_mi.keys import IMITATION_LOSS
from rllib_alma_mi.losses.terms import LossTerms

NO_DECISIONS = "no real allocator decision in the batch"
NON_FINITE_LOG_PROB = "non-finite log-probability of the heuristic's allocation"


class ImitationLoss:
    """`imitation_loss`: the negative joint log-prob of the heuristic's allocation, averaged
    over the batch's real decisions.

    Input: `logp` (B,), the teacher-forced joint log-prob of the heuristic's allocation;
    `loss_mask` (B,) PPO's mask of real rows (None = all rows). A batch without a real row or
    with a non-finite log-prob in one is skipped.
    """

    def __call__(self, logp: torch.Tensor, loss_mask: torch.Tensor | None = None) -> LossTerms:
        rows = torch.ones_like(logp, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
        if not bool(rows.any()):
            return LossTerms.skip(logp, NO_DECISIONS)
        if not bool(torch.isfinite(logp[rows]).all()):
            return LossTerms.skip(logp, NON_FINITE_LOG_PROB)
        nll = -logp[rows].mean()
        return LossTerms(loss=nll, metrics={IMITATION_LOSS: nll.detach()})
