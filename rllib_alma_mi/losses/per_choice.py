"""PPO for the allocator with per-task credit: one clipped surrogate per pointer choice."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rllib_alma_mi.keys import PER_CHOICE_POLICY_LOSS, TASK_VF_EXPLAINED_VAR, TASK_VF_LOSS
from rllib_alma_mi.losses.task_credit import choice_advantages, standardized
from rllib_alma_mi.losses.terms import LossTerms
from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits

ENTROPY = "entropy"


@dataclass(frozen=True)
class PerChoiceInputs:
    """One minibatch of allocator decisions (B rows, N agent slots, T tasks).

    step_logits (B, N, T): the pointer's per-step conditional logits now (teacher-forced, with
        gradient); old_step_logits (B, N, T): those the decision was sampled with;
    allocation (B, N): the task each slot was given; live_choices (B, N) bool: the steps that
        chose (not a dead slot, not a sample without a live task);
    task_advantages, task_value_targets (B, T): per-task GAE; task_values (B, T): the critic
        now (with gradient); task_mask (B, T): live tasks;
    loss_mask (B,) or None: PPO's real rows (None = all).
    """

    step_logits: torch.Tensor
    old_step_logits: torch.Tensor
    allocation: torch.Tensor
    live_choices: torch.Tensor
    task_advantages: torch.Tensor
    task_value_targets: torch.Tensor
    task_values: torch.Tensor
    task_mask: torch.Tensor
    loss_mask: torch.Tensor | None = None


class PerChoicePPOLoss:
    """`-surrogate + vf_loss_coeff * task_vf_loss - entropy_coeff * entropy` for one minibatch.

    Agent i's choice is a factor of the joint allocation with its own ratio
    r_i = exp(logp_i(new) - logp_i(old)) of its conditional step and its own advantage A_i, the
    per-task advantage of the task it chose; the A_i are standardised over the minibatch's
    (real row, live choice) entries. surrogate: the mean over real rows of the sum over live
    choices of min(r_i A_i, clip(r_i, 1 - clip_param, 1 + clip_param) A_i). task_vf_loss: the
    mean over (real row, live task) entries of (V_t - target_t)^2, clamped at `vf_clip_param`
    as RLlib's PPO does. entropy: the joint allocation's entropy (the sum of the conditional
    ones), mean over real rows. Metrics: `per_choice_policy_loss` (-surrogate), `task_vf_loss`,
    `entropy`, `task_vf_explained_var`.
    """

    def __init__(
        self,
        clip_param: float,
        vf_loss_coeff: float,
        entropy_coeff: float,
        vf_clip_param: float = float("inf"),
    ):
        self.clip_param = float(clip_param)
        self.vf_loss_coeff = float(vf_loss_coeff)
        self.entropy_coeff = float(entropy_coeff)
        self.vf_clip_param = float(vf_clip_param)

    def __call__(self, x: PerChoiceInputs) -> LossTerms:
        b = x.step_logits.shape[0]
        rows = (
            torch.ones(b, dtype=torch.bool, device=x.step_logits.device)
            if x.loss_mask is None
            else x.loss_mask.bool()
        )
        live = x.live_choices.bool()
        factors = live & rows[:, None]
        adv = standardized(choice_advantages(x.task_advantages, x.allocation, live), factors)

        index = x.allocation.long().masked_fill(~live, 0)[..., None]
        logp = torch.log_softmax(x.step_logits, dim=-1).gather(-1, index).squeeze(-1)
        old = torch.log_softmax(x.old_step_logits, dim=-1).gather(-1, index).squeeze(-1)
        ratio = torch.exp((logp - old).masked_fill(~factors, 0.0))
        clipped = torch.clamp(ratio, 1 - self.clip_param, 1 + self.clip_param)
        per_factor = torch.min(ratio * adv, clipped * adv).masked_fill(~factors, 0.0)
        n_rows = rows.sum().clamp(min=1)
        surrogate = per_factor.sum(dim=-1)[rows].sum() / n_rows

        entropy = JointAllocationLogits(x.step_logits).entropy()[rows].sum() / n_rows

        tasks = x.task_mask.bool() & rows[:, None]
        error = (x.task_values - x.task_value_targets).pow(2).clamp(max=self.vf_clip_param)
        vf_loss = error[tasks].sum() / tasks.sum().clamp(min=1)

        loss = -surrogate + self.vf_loss_coeff * vf_loss - self.entropy_coeff * entropy
        return LossTerms(
            loss=loss,
            metrics={
                PER_CHOICE_POLICY_LOSS: -surrogate.detach(),
                TASK_VF_LOSS: vf_loss.detach(),
                ENTROPY: entropy.detach(),
                TASK_VF_EXPLAINED_VAR: _explained_variance(
                    x.task_value_targets[tasks].detach(), x.task_values[tasks].detach()
                ),
            },
        )


def _explained_variance(targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """1 - Var(targets - predictions) / Var(targets), floored at -1 as RLlib's; 0 with fewer
    than 2 entries."""
    if targets.numel() < 2:
        return targets.new_zeros(())
    ratio = (targets - predictions).var() / targets.var().clamp(min=1e-8)
    return torch.clamp(1.0 - ratio, min=-1.0)
