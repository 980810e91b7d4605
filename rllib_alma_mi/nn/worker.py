"""Low-level worker policy: the agent's own entity attends over what it may see."""

from __future__ import annotations

import math

import torch
from torch import nn

from rllib_alma_mi.keys import SUBTASK
from rllib_alma_mi.nn.attention import MASKED_LOGIT, EntityAttention, as_bool
from rllib_alma_mi.settings import ModelSettings

__all__ = ["MASKED_LOGIT", "WorkerNet"]


class WorkerNet(nn.Module):
    """Entity-attention actor-critic for one agent (parameters shared across agents).

    obs (batched): entities (B, E, F), entity_mask (B, E), obs_mask (B, E) (already restricted
    to the agent's subtask), agent_index (B,) or (B, 1) (any numeric dtype), action_mask (B, A);
    with `marks_subtask`, also `subtask` (B, E): 1 on the entities of the agent's subtask, whose
    embeddings then gain a learned vector (zero at first), for workers that see beyond their
    subtask (`subtask_mask=False`).
    encode(obs) -> hidden (B, D); logits(hidden, action_mask) -> (B, A) with MASKED_LOGIT on
    invalid actions; value(hidden) -> (B,); forward(obs) -> (logits, hidden).
    Entities outside entity_mask & obs_mask have no influence; the agent's own row always counts.
    As in ALMA's low-level agents, only the agent's own row queries the entities (no
    entity-to-entity self-attention): one query per sample keeps the many worker rows cheap.

    Each entity is embedded from (entity, own features, relative_scale * (entity - own)). The
    scaled difference makes small but decisive differences (a cell of 1/15 in SaveTheCity's
    coordinates) as large as the other inputs: left unscaled, the first layer's weights must
    grow tens of times from their initial size before "adjacent" and "two cells away" differ,
    which PPO's small steps took hundreds of thousands of env steps to do. 0 turns it off.
    """

    def __init__(
        self,
        entity_dim: int,
        n_actions: int,
        embed_dim: int = ModelSettings.embed_dim,
        n_heads: int = ModelSettings.n_heads,
        relative_scale: float = ModelSettings.relative_scale,
        marks_subtask: bool = False,
    ):
        super().__init__()
        self.entity_dim, self.n_actions, self.embed_dim = entity_dim, n_actions, embed_dim
        self.subtask_vector = nn.Parameter(torch.zeros(embed_dim)) if marks_subtask else None
        self.relative_scale = float(relative_scale)
        # Each entity is embedded together with the agent's own features, so relations such as
        # relative position are one layer away instead of being left to the attention.
        self.embed = nn.Sequential(
            nn.Linear(3 * entity_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.readout = EntityAttention(embed_dim, n_heads)
        self.hidden = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.ReLU())
        self.policy_head = nn.Linear(embed_dim, n_actions)
        self.value_head = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1)
        )

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        entities = obs["entities"]
        self._validate(obs)
        b, e = entities.shape[:2]
        index = obs["agent_index"].reshape(b).long()
        if index.numel() and (index.min() < 0 or index.max() >= e):
            raise ValueError(
                f"obs['agent_index'] must lie in [0, {e}), got values in "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        rows = torch.arange(b, device=entities.device)
        own = torch.nn.functional.one_hot(index, e).bool()
        usable = (as_bool(obs["entity_mask"]) & as_bool(obs["obs_mask"])) | own  # (B, E)
        entities = entities.masked_fill(~usable[..., None], 0.0)
        own = entities[rows, index]  # (B, F)
        # embed[0](cat(x, own, s (x - own))) = x (W_x + s W_r)^T + own (W_own - s W_r)^T + bias:
        # the same first layer with the agent's part computed once per sample, not per entity.
        w_x, w_own, w_rel = self.embed[0].weight.split(self.entity_dim, dim=1)
        scale = self.relative_scale
        per_sample = torch.addmm(self.embed[0].bias, own, (w_own - scale * w_rel).T)  # (B, D)
        pre = entities @ (w_x + scale * w_rel).T + per_sample[:, None]  # (B, E, D)
        if self.subtask_vector is not None:
            pre = pre + obs[SUBTASK].to(pre.dtype)[..., None] * self.subtask_vector
        h = torch.relu(pre)
        own_emb = self.embed[2](h[rows, index])  # (B, D)
        read = self._read(own_emb, h, usable)
        return self.hidden(torch.cat([own_emb, read], dim=-1))

    def _read(self, own_emb: torch.Tensor, h: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
        """`readout(own_emb, embed[2](h), usable)` with the entity embedding folded in.

        The one query meets the keys only through dot products, and the values only through a
        weighted sum, so the key and value projections (and the embedding's last layer, all
        linear) act once per sample on the query side instead of once per entity:
        q . W_k (W2 h_j + b2) = ((W_k W2)^T q) . h_j + q . W_k b2, whose last term is the same
        for every entity and so leaves the softmax unchanged, and
        W_v sum_j w_j (W2 h_j + b2) = (W_v W2) sum_j w_j h_j + W_v b2 (the weights
        sum to 1).
        Same function and gradients (up to float rounding), with several times fewer
        operations for SaveTheCity's 11 entities.
        """
        att, w2, b2 = self.readout, self.embed[2].weight, self.embed[2].bias
        b, n_heads, head_dim = h.shape[0], att.n_heads, att.head_dim
        q = att.q(own_emb).view(b, n_heads, head_dim)
        key_w = (att.k.weight @ w2).view(n_heads, head_dim, -1)
        query = torch.einsum("bhd,hdf->bhf", q, key_w)  # (B, H, D)
        scores = query @ h.transpose(1, 2) / math.sqrt(head_dim)  # (B, H, E)
        # The agent's own row is always usable: no row of the softmax is fully masked, and the
        # weights sum to 1.
        weights = torch.softmax(scores.masked_fill(~usable[:, None, :], MASKED_LOGIT), dim=-1)
        pooled = weights @ h  # (B, H, D)
        value_w = (att.v.weight @ w2).view(n_heads, head_dim, -1)
        value_b = (att.v.weight @ b2).view(n_heads, head_dim)
        mixed = torch.einsum("bhf,hdf->bhd", pooled, value_w) + value_b
        return att.out(mixed.reshape(b, -1))

    def logits(self, hidden: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        if action_mask.shape != (hidden.shape[0], self.n_actions):
            raise ValueError(
                f"action_mask must have shape (B, A) = ({hidden.shape[0]}, {self.n_actions}), "
                f"got {tuple(action_mask.shape)}"
            )
        return self.policy_head(hidden).masked_fill(~as_bool(action_mask), MASKED_LOGIT)

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden).squeeze(-1)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encode(obs)
        return self.logits(hidden, obs["action_mask"]), hidden

    def _validate(self, obs: dict[str, torch.Tensor]) -> None:
        for key in ("entities", "entity_mask", "obs_mask", "agent_index"):
            if key not in obs:
                raise ValueError(f"obs is missing {key!r}")
        ent = obs["entities"]
        if ent.dim() != 3 or ent.shape[-1] != self.entity_dim:
            raise ValueError(
                f"obs['entities'] must have shape (B, E, {self.entity_dim}), got {tuple(ent.shape)}"
            )
        b, e = ent.shape[:2]
        marks = self.subtask_vector is not None
        if marks and SUBTASK not in obs:
            raise ValueError(
                f"obs is missing {SUBTASK!r}: this worker marks its subtask's entities "
                "(subtask_mask=False); build its observations with the hierarchy"
            )
        for key in ("entity_mask", "obs_mask") + ((SUBTASK,) if marks else ()):
            if tuple(obs[key].shape) != (b, e):
                raise ValueError(
                    f"obs[{key!r}] has shape {tuple(obs[key].shape)}, expected (B, E) = ({b}, {e})"
                )
        if obs["agent_index"].numel() != b:
            raise ValueError(
                f"obs['agent_index'] must have shape (B,) or (B, 1) with B={b}, got "
                f"{tuple(obs['agent_index'].shape)}"
            )
