"""RACE's auxiliary term: MINE between a module's representation and a global summary."""

from __future__ import annotations

import torch

from rllib_alma_mi.keys import MI_LOSS, MI_VALUE
from rllib_alma_mi.losses.terms import LossTerms
from rllib_alma_mi.nn.mi_head import MIHead

TOO_FEW_SAMPLES = "fewer than 2 valid samples (MINE needs a positive and a negative)"
NON_FINITE_INPUTS = "non-finite representation or summary in a valid row"
NON_FINITE_ESTIMATE = "non-finite MI estimate"


class MutualInfoLoss:
    """`mi_loss` (to minimise: the negative Fenchel-dual bound) and `mi_value` (the bound's
    estimate, E_pos - E_neg) of one batch.

    Inputs are the `MIHead`'s forward outputs: `mi_x` (B, D) or (B, K, D), `mi_y` (B, D),
    `mi_mask` (B,) or (B, K) valid rows; `loss_mask` (B,) is PPO's (None = all rows). A batch
    with fewer than 2 valid samples, a non-finite input in a valid row, or a non-finite
    estimate is skipped (`LossTerms.skipped` says which).
    """

    def __init__(self, head: MIHead):
        self.head = head

    def __call__(
        self, inputs: dict[str, torch.Tensor], loss_mask: torch.Tensor | None = None
    ) -> LossTerms:
        x, y = inputs["mi_x"], inputs["mi_y"]
        mask = inputs["mi_mask"].bool()
        if loss_mask is not None:
            lm = loss_mask.bool()
            mask = mask & (lm[:, None] if mask.dim() == 2 else lm)
        per_sample = mask.any(dim=1) if mask.dim() == 2 else mask
        if int(per_sample.sum()) < 2:
            return LossTerms.skip(x, TOO_FEW_SAMPLES)
        if not (bool(torch.isfinite(x[mask]).all()) and bool(torch.isfinite(y[per_sample]).all())):
            return LossTerms.skip(x, NON_FINITE_INPUTS)
        mi_loss, mi_value = self.head.mine(x, y, mask)
        if not bool(torch.isfinite(mi_loss)):
            return LossTerms.skip(x, NON_FINITE_ESTIMATE)
        return LossTerms(
            loss=mi_loss, metrics={MI_LOSS: mi_loss.detach(), MI_VALUE: mi_value.detach()}
        )
