"""ALMA's allocator: entity attention, then an autoregressive pointer from agents to tasks."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rllib_alma_mi.keys import CURRENT_ALLOCATION
from rllib_alma_mi.nn.attention import (
    MASKED_LOGIT,
    EntityAttention,
    EntityEncoder,
    as_bool,
)
from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits
from rllib_alma_mi.settings import ModelSettings

__all__ = ["MASKED_LOGIT", "AllocEncoding", "AllocatorNet"]


class AllocEncoding(NamedTuple):
    """Encoder outputs of the allocator."""

    entity_emb: torch.Tensor  # (B, E, D)
    agent_emb: torch.Tensor  # (B, N, D)
    task_emb: torch.Tensor  # (B, T, D)
    relation: torch.Tensor  # (B, N, T, D): agent-task relation from their feature differences


class AllocatorNet(nn.Module):
    """Assigns every agent slot to a task, agent by agent, each choice seeing the earlier ones.

    obs (batched): entities (B, E, F), entity_mask (B, E), obs_mask (B, E), entity2task
    (B, E, T), task_mask (B, T), agent_mask (B, N), agent_obs_mask (B, N, E) (only with
    agent_attention). Agent slot i is entity row i. Masks may have any dtype (nonzero = 1).

    Agent i's logits over tasks depend on its embedding and on each task's embedding updated by
    the agents 0..i-1 already placed on it (a sum of their messages plus an embedding of their
    number). Only live tasks may be chosen; a dead agent, or any agent of a sample without a
    live task, gets a row that allows only task 0 (log-prob 0, entropy 0).

    The pointer also reads a relation per (agent, task): an MLP of relative_scale * (entity -
    agent) features averaged over the task's visible entities, so that distances of a cell or
    two (1/15 in SaveTheCity's coordinates) are unit-sized inputs (see WorkerNet).

    With `keep_bias` > 0 the net has a learned scalar, initialised there, added to each
    agent's logit of its current task (obs `current_allocation` (B, N), -1 = none), so that a
    young allocator keeps assignments rather than re-drawing them at every decision.
    """

    def __init__(
        self,
        entity_dim: int,
        n_agents: int,
        n_tasks: int,
        embed_dim: int = ModelSettings.embed_dim,
        n_heads: int = ModelSettings.n_heads,
        agent_attention: bool = ModelSettings.agent_attention,
        relative_scale: float = ModelSettings.relative_scale,
        keep_bias: float = ModelSettings.keep_bias,
    ):
        super().__init__()
        self.entity_dim, self.n_agents, self.n_tasks = entity_dim, n_agents, n_tasks
        self.embed_dim = embed_dim
        self.relative_scale = float(relative_scale)
        self.agent_attention = agent_attention
        d = embed_dim
        self.encoder = EntityEncoder(entity_dim, d, n_heads)
        if agent_attention:
            self.agent_attn = EntityAttention(d, n_heads)
            self.agent_norm = nn.LayerNorm(d)
        self.pool_score = nn.Linear(d, 1)
        self.pool_value = nn.Linear(d, d)
        self.task_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        # Additive pointer: logit = w . relu(query(agent) + key(task) + placed messages + count).
        self.ptr_query = nn.Linear(d, d)
        self.ptr_key = nn.Linear(d, d, bias=False)
        self.ptr_message = nn.Linear(d, d, bias=False)
        # A linear code of the count, so no weight depends on the team size.
        self.ptr_count = nn.Linear(1, d, bias=False)
        self.ptr_out = nn.Linear(d, 1)
        # A learned bias toward each agent's current task (see `keep_logits`); None when off.
        self.keep_bias = nn.Parameter(torch.tensor(float(keep_bias))) if keep_bias else None
        self.relation_mlp = nn.Sequential(
            nn.Linear(entity_dim, d), nn.ReLU(), nn.Linear(d, d, bias=False)
        )

    # ---------------------------------------------------------------------------------- encoder
    def encode(self, obs: dict[str, torch.Tensor]) -> AllocEncoding:
        self._validate(obs)
        n = self.n_agents
        vis = as_bool(obs["entity_mask"]) & as_bool(obs["obs_mask"])  # (B, E)
        alive = as_bool(obs["agent_mask"])  # (B, N)
        live_task = as_bool(obs["task_mask"])  # (B, T)
        entity_emb = self.encoder(obs["entities"], vis)

        agent_emb = entity_emb[:, :n]
        if self.agent_attention:
            e = entity_emb.shape[1]
            # A float eye cast to bool: ONNX Runtime has no boolean EyeLike kernel.
            own = torch.eye(n, e, device=vis.device).bool()
            sees = (as_bool(obs["agent_obs_mask"]) & vis[:, None, :]) | own
            agent_emb = self.agent_norm(
                agent_emb + self.agent_attn(agent_emb, entity_emb, sees, query_mask=alive)
            )
        agent_emb = agent_emb.masked_fill(~alive[..., None], 0.0)

        # Attention pooling of each task's visible entities.
        member = as_bool(obs["entity2task"]) & vis[..., None]  # (B, E, T)
        score = self.pool_score(entity_emb).expand_as(member)
        weights = torch.softmax(score.masked_fill(~member, MASKED_LOGIT), dim=1) * member
        pooled = torch.einsum("bet,bed->btd", weights, self.pool_value(entity_emb))
        task_emb = self.task_mlp(pooled).masked_fill(~live_task[..., None], 0.0)

        return AllocEncoding(
            entity_emb, agent_emb, task_emb, self._relation(obs["entities"], member)
        )

    def _relation(self, entities: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
        """(B, N, T, D): mean over each task's visible entities of MLP(scale * (entity - agent))."""
        diff = entities[:, None] - entities[:, : self.n_agents, None]  # (B, N, E, F)
        pair = self.relation_mlp(self.relative_scale * diff)  # (B, N, E, D)
        weights = member.to(pair.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, E, T)
        return torch.einsum("bned,bet->bntd", pair, weights)

    # ---------------------------------------------------------------------------------- pointer
    def sample(
        self,
        obs: dict[str, torch.Tensor],
        deterministic: bool = False,
        enc: AllocEncoding | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoregressive allocation.

        Returns allocation (B, N) int64, log_prob (B,), entropy (B,) and the per-step
        conditional logits (B, N, T) that were used (masked entries = MASKED_LOGIT).
        """
        if enc is None:
            enc = self.encode(obs)
        else:
            self._validate(obs)
        allowed, forced = self._allowed(obs)
        query, key, message = self._pointer_inputs(enc)
        keep = self.keep_logits(obs)
        b, t, d = key.shape
        placed = key.new_zeros(b, t, d)
        counts = torch.zeros(b, t, dtype=torch.long, device=key.device)
        choices, step_logits = [], []
        for i in range(self.n_agents):
            logits = self._raw_logits(query[:, i], key + enc.relation[:, i], placed, counts)
            if keep is not None:
                logits = logits + keep[:, i]
            logits = logits.masked_fill(~allowed[:, i], MASKED_LOGIT)
            if deterministic:
                choice = logits.argmax(dim=-1)
            else:
                choice = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
            choice = choice.masked_fill(forced[:, i], 0)
            placed_here = F.one_hot(choice, t) & ~forced[:, i, None]
            placed = placed + placed_here[..., None] * message[:, i, None, :]
            counts = counts + placed_here.long()
            choices.append(choice)
            step_logits.append(logits)
        allocation = torch.stack(choices, dim=1)
        logits = torch.stack(step_logits, dim=1)
        dist = JointAllocationLogits(logits)
        return allocation, dist.log_prob(allocation), dist.entropy(), logits

    def log_prob(
        self,
        obs: dict[str, torch.Tensor],
        allocation: torch.Tensor,
        enc: AllocEncoding | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced joint log-prob (B,), entropy (B,) and per-step logits (B, N, T).

        One pass: the context of step i comes from exclusive cumulative sums over the one-hot
        allocation. The logits equal those sample() would use for this allocation. Entries of
        dead agents are ignored (treated as task 0).
        """
        if enc is None:
            enc = self.encode(obs)
        else:
            self._validate(obs)
        allowed, forced = self._allowed(obs)
        b, n, t = allowed.shape
        if tuple(allocation.shape) != (b, n):
            raise ValueError(
                f"allocation must have shape (B, N) = ({b}, {n}), got {tuple(allocation.shape)}"
            )
        allocation = allocation.long().masked_fill(forced, 0)
        if allocation.numel() and (allocation.min() < 0 or allocation.max() >= t):
            raise ValueError(
                f"allocation entries must be task indices in [0, {t}), got values in "
                f"[{int(allocation.min())}, {int(allocation.max())}]"
            )
        query, key, message = self._pointer_inputs(enc)
        placed_here = F.one_hot(allocation, t) & ~forced[..., None]  # (B, N, T)
        contrib = placed_here[..., None] * message[:, :, None, :]  # (B, N, T, D)
        placed = _exclusive_cumsum(contrib)
        counts = _exclusive_cumsum(placed_here.long())
        logits = self._raw_logits(query, key[:, None] + enc.relation, placed, counts)
        keep = self.keep_logits(obs)
        if keep is not None:
            logits = logits + keep
        logits = logits.masked_fill(~allowed, MASKED_LOGIT)
        dist = JointAllocationLogits(logits)
        return dist.log_prob(allocation), dist.entropy(), logits

    def keep_logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, N, T): `keep_bias` on each agent's current task (`current_allocation`, -1 =
        none), 0 elsewhere; None when the net has no keep bias."""
        if self.keep_bias is None:
            return None
        current = obs[CURRENT_ALLOCATION].long()
        onehot = F.one_hot(current.clamp(min=0), self.n_tasks) * (current >= 0)[..., None]
        return self.keep_bias * onehot.to(self.keep_bias.dtype)

    def _pointer_inputs(self, enc: AllocEncoding):
        return (
            self.ptr_query(enc.agent_emb),
            self.ptr_key(enc.task_emb),
            self.ptr_message(enc.agent_emb),
        )

    def _raw_logits(self, query, key, placed, counts):
        """query (..., D); key, placed (..., T, D); counts (..., T) -> logits (..., T).

        The same expression serves sampling and teacher forcing, so both give equal logits.
        """
        context = key + placed + self.ptr_count(counts.to(key.dtype).unsqueeze(-1))
        return self.ptr_out(torch.relu(context + query.unsqueeze(-2))).squeeze(-1)

    def allowed_choices(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of the pointer: allowed (B, N, T) and forced (B, N), both bool.

        allowed[b, i, t]: step i may choose task t. forced[b, i]: the row of a dead agent or of
        a sample without a live task, which allows only task 0.
        """
        return self._allowed(obs)

    def _allowed(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        alive = as_bool(obs["agent_mask"])
        live_task = as_bool(obs["task_mask"])
        allowed = alive[:, :, None] & live_task[:, None, :]
        forced = ~allowed.any(dim=-1)
        first = torch.zeros(self.n_tasks, dtype=torch.bool, device=allowed.device)
        first[0] = True
        return allowed | (forced[..., None] & first), forced

    # ------------------------------------------------------------------------------- validation
    def _validate(self, obs: dict[str, torch.Tensor]) -> None:
        if "entities" not in obs:
            raise ValueError("obs is missing 'entities' (expected shape (B, E, F))")
        ent = obs["entities"]
        if ent.dim() != 3 or ent.shape[-1] != self.entity_dim:
            raise ValueError(
                f"obs['entities'] must have shape (B, E, {self.entity_dim}), got {tuple(ent.shape)}"
            )
        b, e, n, t = ent.shape[0], ent.shape[1], self.n_agents, self.n_tasks
        if e < n:
            raise ValueError(f"obs['entities'] has {e} entity rows, fewer than n_agents={n}")
        expected = {
            "entity_mask": ((b, e), "(B, E)"),
            "obs_mask": ((b, e), "(B, E)"),
            "entity2task": ((b, e, t), "(B, E, T)"),
            "task_mask": ((b, t), "(B, T)"),
            "agent_mask": ((b, n), "(B, N)"),
        }
        if self.agent_attention:
            expected["agent_obs_mask"] = ((b, n, e), "(B, N, E)")
        if self.keep_bias is not None:
            expected[CURRENT_ALLOCATION] = ((b, n), "(B, N)")
        for key, (shape, names) in expected.items():
            if key not in obs:
                raise ValueError(f"obs is missing {key!r} (expected shape {names} = {shape})")
            got = tuple(obs[key].shape)
            if got != shape:
                raise ValueError(f"obs[{key!r}] has shape {got}, expected {names} = {shape}")


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the earlier steps j < i along dim 1."""
    return torch.cat([torch.zeros_like(x[:, :1]), x.cumsum(dim=1)[:, :-1]], dim=1)
