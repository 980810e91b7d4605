"""`LossTerms`: what a loss term returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LossTerms:
    """One batch's value of a loss term.

    loss: scalar tensor to add (times the term's weight) to the module's loss; a zero without
        gradient when the term was skipped.
    metrics: detached scalars by metric name (empty when skipped).
    skipped: why this batch was left out of the term, or None when it was computed.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: str | None = None

    @classmethod
    def skip(cls, like: torch.Tensor, reason: str) -> LossTerms:
        return cls(loss=like.new_zeros(()), skipped=reason)
