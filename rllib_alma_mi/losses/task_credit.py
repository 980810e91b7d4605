"""Per-task credit of the allocator's choices: GAE per task, and each choice's advantage."""

from __future__ import annotations

import numpy as np
import torch


def per_task_gae(
    values: np.ndarray,
    rewards: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE of every task at once: (advantages (L, T), value targets (L, T)), float32.

    values, rewards (L, T): V_t(s_k) and task t's reward of transition k, over concatenated
    episode chunks, each elongated by one artificial row at its end (RLlib's
    `AddOneTsToEpisodesAndTruncate`: reward 0, the last observation repeated, loss mask 0);
    terminateds, truncateds (L,): per row, with RLlib's convention. The recursion is that of
    `ray.rllib.utils.postprocessing.value_predictions.compute_value_targets`, per column:
    delta_k = r_k + gamma (1 - term_k) V(s_{k+1}) - V(s_k); A_k = delta_k + gamma lambda
    (1 - term_k)(1 - trunc_k) A_{k+1}. A terminal row does not bootstrap; the last real row of
    a truncated chunk bootstraps from its artificial row's value and stops the recursion.
    """
    values = np.asarray(values, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    if values.ndim != 2 or rewards.shape != values.shape:
        raise ValueError(
            f"values and rewards must have the same shape (L, T); got {values.shape} and "
            f"{rewards.shape}"
        )
    length = values.shape[0]
    terminateds = np.asarray(terminateds, dtype=np.float64)
    truncateds = np.asarray(truncateds, dtype=np.float64)
    if terminateds.shape != (length,) or truncateds.shape != (length,):
        raise ValueError(
            f"terminateds and truncateds must have shape ({length},); got {terminateds.shape} "
            f"and {truncateds.shape}"
        )
    non_terminal = (1.0 - terminateds)[:, None]
    propagate = non_terminal * (1.0 - truncateds)[:, None]
    next_values = np.concatenate([values[1:], np.zeros_like(values[:1])], axis=0)
    deltas = rewards + gamma * non_terminal * next_values - values
    advantages = np.zeros_like(values)
    running = np.zeros(values.shape[1])
    for k in range(length - 1, -1, -1):
        running = deltas[k] + gamma * lambda_ * propagate[k] * running
        advantages[k] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


def choice_advantages(
    task_advantages: torch.Tensor, allocation: torch.Tensor, live_choices: torch.Tensor
) -> torch.Tensor:
    """Each pointer step's advantage: (B, N), the advantage of the task agent i chose.

    task_advantages (B, T); allocation (B, N) task indices; live_choices (B, N) bool, the
    steps that choose (dead slots and forced rows get 0, whatever task they hold).
    """
    b, n = allocation.shape
    if task_advantages.dim() != 2 or task_advantages.shape[0] != b:
        raise ValueError(
            f"task_advantages must have shape (B, T) with B = {b}, got "
            f"{tuple(task_advantages.shape)}"
        )
    if tuple(live_choices.shape) != (b, n):
        raise ValueError(f"live_choices must have shape {(b, n)}, got {tuple(live_choices.shape)}")
    live = live_choices.bool()
    index = allocation.long().masked_fill(~live, 0)
    picked = task_advantages.gather(1, index)
    return picked.masked_fill(~live, 0.0)


def standardized(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x standardised over the entries where mask is set (zero mean, unit std, std floored at
    1e-4, as RLlib's GAE does), 0 elsewhere; x unchanged (masked to 0) with fewer than 2."""
    mask = mask.bool()
    if int(mask.sum()) < 2:
        return x.masked_fill(~mask, 0.0)
    real = x[mask]
    return ((x - real.mean()) / real.std().clamp(min=1e-4)).masked_fill(~mask, 0.0)
