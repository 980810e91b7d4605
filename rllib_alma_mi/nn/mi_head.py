"""The MI term of one module: which representation (x) is paired with which summary (y)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rllib_alma_mi.nn.mi_targets import GlobalStateEncoder, entity_mean, task_mean
from rllib_alma_mi.nn.mine import MINE


class MIHead(nn.Module):
    """MINE between a module's representation and a global summary (RACE's auxiliary term).

    Scheme 3: allocator agent embeddings (B, N, D) vs. the summary; scheme 2: allocator task
    embeddings (B, T, D) vs. the summary; scheme 1: worker hidden state (B, D) vs. a summary of
    the centralized `state`. Targets: `task_mean`, `entity_mean`, `global_state`.
    """

    def __init__(
        self,
        *,
        scheme: int,
        target: str,
        measure: str,
        mi_embed_dim: int,
        negatives: int,
        detach_target: bool,
        x_dim: int,
        n_features: int,
    ):
        super().__init__()
        self.scheme, self.target, self.detach_target = scheme, target, detach_target
        needs_state_encoder = target == "global_state" or scheme == 1
        self.state_encoder = GlobalStateEncoder(n_features, x_dim) if needs_state_encoder else None
        self.mine = MINE(x_dim, x_dim, measure=measure, embed_dim=mi_embed_dim, negatives=negatives)

    @classmethod
    def from_model_config(cls, cfg: dict[str, Any], *, x_dim: int, n_features: int):
        """The head described by a module's model_config, or None when it carries no MI."""
        if not cfg.get("mi_enabled", False):
            return None
        return cls(
            scheme=cfg["mi_scheme"],
            target=cfg["mi_target"],
            measure=cfg["mi_measure"],
            mi_embed_dim=cfg["mi_embed_dim"],
            negatives=cfg["mi_negatives"],
            detach_target=cfg["mi_detach_target"],
            x_dim=x_dim,
            n_features=n_features,
        )

    def _finish(self, x, y, mask) -> dict[str, torch.Tensor]:
        if self.detach_target:
            y = y.detach()
        return {"mi_x": x, "mi_y": y, "mi_mask": mask}

    def inputs_from_allocator(self, enc, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.scheme == 3:
            x, mask = enc.agent_emb, obs["agent_mask"] > 0
        else:
            x, mask = enc.task_emb, obs["task_mask"] > 0
        if self.target == "task_mean":
            y = task_mean(enc.task_emb, obs["task_mask"])
        elif self.target == "entity_mean":
            y = entity_mean(enc.entity_emb, (obs["entity_mask"] > 0) & (obs["obs_mask"] > 0))
        else:
            y = self.state_encoder(self._state(obs))
        return self._finish(x, y, mask)

    def inputs_from_worker(self, hidden: torch.Tensor, obs: dict[str, torch.Tensor]):
        """Scheme 1: the summary comes from the centralized `state`, embedded per entity by the
        state encoder: `global_state` = its pooled output, `entity_mean` = the mean over live
        entities, `task_mean` = the mean over live tasks of each task's mean entity embedding."""
        state = self._state(obs)
        if self.target == "global_state":
            y = self.state_encoder(state)
        else:
            live = state["entity_mask"] > 0
            per_entity = self.state_encoder.phi(state["entities"].masked_fill(~live[..., None], 0))
            if self.target == "entity_mean":
                y = entity_mean(per_entity, live)
            else:
                member = (state["entity2task"] > 0) & live[..., None]  # (B, E, T)
                member = member.to(per_entity.dtype)
                tasks = torch.einsum("bet,bed->btd", member, per_entity)
                tasks = tasks / member.sum(1).clamp(min=1.0)[..., None]
                y = task_mean(tasks, state["task_mask"])
        mask = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        return self._finish(hidden, y, mask)

    @staticmethod
    def _state(obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "state" not in obs:
            raise ValueError(
                "mi_target='global_state' (and mi_scheme=1) need the centralized state in the "
                "observation under 'state'; the hierarchy adds it with include_state=True"
            )
        return obs["state"]
