"""A value per task: the allocator's critic when its choices are credited per task."""

from __future__ import annotations

import torch
from torch import nn

from rllib_alma_mi.nn.attention import as_bool
from rllib_alma_mi.nn.mi_targets import GlobalStateEncoder


class TaskValueNet(nn.Module):
    """V_t(s) for every task t: (B, T), 0 where the task is not live.

    A deep-sets encoder of the visible entities (the allocator's team critic's encoder,
    `GlobalStateEncoder`) gives per-entity features and a global summary; each task's value is
    an MLP of [mean feature of the task's visible entities, global summary]. The critic is
    separate from the pointer's encoder, as the team critic is: its loss shapes no part of the
    policy.

    forward(entities (B, E, F), visible (B, E), entity2task (B, E, T), task_mask (B, T)); masks
    of any dtype (nonzero = 1).
    """

    def __init__(self, entity_dim: int, embed_dim: int):
        super().__init__()
        self.encoder = GlobalStateEncoder(entity_dim, embed_dim)
        self.head = nn.Sequential(
            nn.Linear(2 * embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1)
        )

    def forward(
        self,
        entities: torch.Tensor,
        visible: torch.Tensor,
        entity2task: torch.Tensor,
        task_mask: torch.Tensor,
    ) -> torch.Tensor:
        visible = as_bool(visible)
        per_entity, summary = self.encoder.features({"entities": entities, "entity_mask": visible})
        member = (as_bool(entity2task) & visible[..., None]).to(per_entity.dtype)  # (B, E, T)
        count = member.sum(dim=1).clamp(min=1.0)  # (B, T)
        task_feat = torch.einsum("bet,bed->btd", member, per_entity) / count[..., None]
        both = torch.cat([task_feat, summary[:, None].expand_as(task_feat)], dim=-1)
        return self.head(both).squeeze(-1).masked_fill(~as_bool(task_mask), 0.0)
