"""Global summaries that agent representations are paired with in the MI term."""

from __future__ import annotations

import torch
from torch import nn

from rllib_alma_mi.nn.attention import as_bool, masked_mean

MI_TARGETS = ("task_mean", "entity_mean", "global_state")


def task_mean(task_emb: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
    """Mean embedding of the live tasks: (B, T, D), (B, T) -> (B, D) (scheme 3's default)."""
    _check_pair(task_emb, task_mask, "task_emb", "task_mask")
    return masked_mean(task_emb, task_mask)


def entity_mean(entity_emb: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """Mean embedding of the live entities: (B, E, D), (B, E) -> (B, D)."""
    _check_pair(entity_emb, entity_mask, "entity_emb", "entity_mask")
    return masked_mean(entity_emb, entity_mask)


class GlobalStateEncoder(nn.Module):
    """Encoder of the centralized state (deep-sets: per-entity MLP, masked mean, MLP).

    forward(state: {"entities": (B, E, F), "entity_mask": (B, E)}) -> (B, D).
    """

    def __init__(self, entity_dim: int, embed_dim: int):
        super().__init__()
        self.entity_dim = entity_dim
        self.phi = nn.Sequential(
            nn.Linear(entity_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim), nn.ReLU()
        )
        self.rho = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim)
        )

    def forward(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features(state)[1]

    def features(self, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-entity features (B, E, D), zeros on dead rows; the summary (B, D))."""
        for key in ("entities", "entity_mask"):
            if key not in state:
                raise ValueError(f"state is missing {key!r}")
        entities, mask = state["entities"], state["entity_mask"]
        if entities.dim() != 3 or entities.shape[-1] != self.entity_dim:
            raise ValueError(
                f"state['entities'] must have shape (B, E, {self.entity_dim}), "
                f"got {tuple(entities.shape)}"
            )
        _check_pair(entities, mask, "state['entities']", "state['entity_mask']")
        live = as_bool(mask)
        per_entity = self.phi(entities.masked_fill(~live[..., None], 0.0))
        summary = self.rho(masked_mean(per_entity, live))
        return per_entity.masked_fill(~live[..., None], 0.0), summary


def _check_pair(x: torch.Tensor, mask: torch.Tensor, x_name: str, mask_name: str) -> None:
    if x.dim() != 3 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"{mask_name} must have shape {tuple(x.shape[:2])} matching {x_name} "
            f"{tuple(x.shape)} (B, K, D), got {tuple(mask.shape)}"
        )
