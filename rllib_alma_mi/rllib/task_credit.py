"""The learner connector piece of the allocator's per-task credit (`allocator_credit="task"`).

It runs after RLlib's `GeneralAdvantageEstimation` and mirrors it: the same episodes, taken in
the same order (so their rows line up with the batch's), the same artificial last row per
episode chunk, the same terminated / truncated columns, and the same recursion
(`rllib_alma_mi.losses.per_task_gae`), but over the per-task values of the allocator's critic
and the per-task returns the hierarchy hands the allocator (`infos["allocator"]
["task_returns"]`, see `HierarchicalEnv`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

from rllib_alma_mi.keys import ALLOCATOR, TASK_RETURNS
from rllib_alma_mi.losses.task_credit import per_task_gae

# Columns this piece adds to the allocator's batch, (B, T) float32 each.
TASK_ADVANTAGES = "task_advantages"
TASK_VALUE_TARGETS = "task_value_targets"


def episode_task_returns(episode: Any, n_tasks: int) -> np.ndarray:
    """(len(episode), T) float32: row k holds the `task_returns` of transition k, which the
    hierarchy delivers with the next observation (its info k + 1); the episode's last row is
    the artificial one RLlib's PPO appends (reward 0), so it gets zeros."""
    rows = len(episode)
    out = np.zeros((rows, n_tasks), dtype=np.float32)
    if rows == 0:
        return out
    infos = episode.get_infos()
    for k in range(rows - 1):
        info = infos[k + 1]
        if TASK_RETURNS not in info:
            raise ValueError(
                f"allocator_credit='task': the allocator's info at step {k + 1} of an episode "
                f"has no {TASK_RETURNS!r} (keys {sorted(info)}); the environment must be a "
                "HierarchicalEnv built with allocator_credit='task' (AlmaPPOConfig sets it up)"
            )
        out[k] = info[TASK_RETURNS]
    return out


class PerTaskGAE(ConnectorV2):
    """Adds `task_advantages` and `task_value_targets` (B, T) to the allocator's batch.

    Values: the module's `compute_task_values` on the batch (no gradient); rewards: the
    episodes' `task_returns`; discount and lambda: PPO's `gamma` and `lambda_`. Must come after
    `GeneralAdvantageEstimation` (it reads the batch's terminateds / truncateds and the
    artificial rows `AddOneTsToEpisodesAndTruncate` added).
    """

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        gamma: float,
        lambda_: float,
        module_id: str = ALLOCATOR,
    ):
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.lambda_ = lambda_
        self.module_id = module_id

    def __call__(
        self, *, rl_module: Any, episodes: list[Any], batch: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        if self.module_id not in batch:
            return batch
        module = rl_module[self.module_id].unwrapped()
        module_batch = batch[self.module_id]
        with torch.no_grad():
            values_t = module.compute_task_values(module_batch)
        values = values_t.cpu().numpy()
        module_episodes = [
            e
            for e in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
            if e.module_id in (None, self.module_id)
        ]
        n_tasks = values.shape[1]
        returns = np.concatenate(
            [episode_task_returns(e, n_tasks) for e in module_episodes]
            or [np.zeros((0, n_tasks), dtype=np.float32)]
        )
        # The rows line up with the batch's when the episodes' rewards are the batch's rewards.
        rewards = np.concatenate(
            [np.asarray(e.get_rewards(), dtype=np.float32) for e in module_episodes]
            or [np.zeros(0, dtype=np.float32)]
        )
        batch_rewards = _numpy(module_batch[Columns.REWARDS]).astype(np.float32)
        if rewards.shape != batch_rewards.shape or not np.allclose(rewards, batch_rewards):
            raise RuntimeError(
                f"per-task GAE: the {self.module_id!r} episodes ({rewards.shape[0]} rows) do "
                f"not line up with its batch ({batch_rewards.shape[0]} rows); a stateful "
                "module's zero padding, or a learner connector that reorders rows, is not "
                "supported"
            )
        advantages, targets = per_task_gae(
            values,
            returns,
            _numpy(module_batch[Columns.TERMINATEDS]),
            _numpy(module_batch[Columns.TRUNCATEDS]),
            self.gamma,
            self.lambda_,
        )
        module_batch[TASK_ADVANTAGES] = torch.from_numpy(advantages).to(values_t.device)
        module_batch[TASK_VALUE_TARGETS] = torch.from_numpy(targets).to(values_t.device)
        return batch


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
