"""Masked multi-head attention over entity slots, and the entity encoder built on it."""

from __future__ import annotations

import math

import torch
from torch import nn

# Logit of a masked choice. RLlib's TorchCategorical / TorchMultiCategorical handle it.
MASKED_LOGIT = torch.finfo(torch.float32).min


def as_bool(mask: torch.Tensor) -> torch.Tensor:
    """A mask of any dtype (int8, float, bool) as bool: nonzero = present."""
    return mask if mask.dtype == torch.bool else mask > 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, K, D) over the rows where mask (B, K) is set; zeros when none is."""
    m = as_bool(mask).to(x.dtype)[..., None]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class EntityAttention(nn.Module):
    """Multi-head attention with key and query masks.

    forward(queries (B, Q, D), keys (B, K, D), key_mask (B, K) or (B, Q, K),
    query_mask (B, Q) | None) -> (B, Q, D). A query whose keys are all masked, and a masked
    query, yield exact zeros.
    """

    def __init__(self, embed_dim: int, n_heads: int = 4):
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by n_heads ({n_heads})")
        self.embed_dim, self.n_heads = embed_dim, n_heads
        self.head_dim = embed_dim // n_heads
        self.q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v = nn.Linear(embed_dim, embed_dim, bias=False)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        key_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, nq, d = queries.shape
        nk = keys.shape[1]
        allowed = as_bool(key_mask)
        if allowed.dim() == 2:
            allowed = allowed[:, None, :]
        if allowed.shape[-1] != nk or allowed.shape[1] not in (1, nq):
            raise ValueError(
                f"key_mask must have shape ({b}, {nk}) or ({b}, {nq}, {nk}), got "
                f"{tuple(key_mask.shape)}"
            )
        # Keys no query may use are zeroed, so even NaN features there cannot leak (0 * NaN).
        keys = keys.masked_fill(~allowed.any(dim=1)[..., None], 0.0)
        q = self.q(queries).view(b, nq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k(keys).view(b, nk, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v(keys).view(b, nk, self.n_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, Q, K)
        head_allowed = allowed[:, None]
        # A fully masked row becomes a uniform softmax; multiplying by the mask zeroes it.
        weights = torch.softmax(scores.masked_fill(~head_allowed, MASKED_LOGIT), dim=-1)
        weights = weights * head_allowed
        mixed = (weights @ v).transpose(1, 2).reshape(b, nq, d)
        keep = allowed.any(dim=-1).expand(b, nq)
        if query_mask is not None:
            keep = keep & as_bool(query_mask)
        return self.out(mixed).masked_fill(~keep[..., None], 0.0)


class EntityEncoder(nn.Module):
    """Per-entity embedding followed by one masked self-attention block (ALMA style).

    forward(entities (B, E, F), entity_mask (B, E), attn_mask (B, E) or (B, E, E) | None)
    -> (B, E, D). Entity i attends to the live entities j allowed by attn_mask[i, j]; rows of
    dead entities are zeros. Equivariant to permutations of entity slots.
    """

    def __init__(self, entity_dim: int, embed_dim: int, n_heads: int = 4):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(entity_dim, embed_dim), nn.ReLU())
        self.attn = EntityAttention(embed_dim, n_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(
        self,
        entities: torch.Tensor,
        entity_mask: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        live = as_bool(entity_mask)
        keys = live[:, None, :]
        if attn_mask is not None:
            allowed = as_bool(attn_mask)
            keys = keys & (allowed[:, None, :] if allowed.dim() == 2 else allowed)
        # Padding rows may hold anything; zero them so nothing leaks through the embedding.
        x = self.embed(entities.masked_fill(~live[..., None], 0.0))
        h = self.norm1(x + self.attn(x, x, keys, query_mask=live))
        h = self.norm2(h + self.mlp(h))
        return h.masked_fill(~live[..., None], 0.0)
