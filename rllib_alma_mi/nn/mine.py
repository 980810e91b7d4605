"""MINE / Deep-InfoMax mutual-information estimator with Fenchel-dual f-divergence bounds.

All agents are scored in one vectorised pass. Valid samples are shuffled into blocks of at most
``negatives + 1`` samples; inside a block every (x of sample i, any agent) is paired with the y of
every sample of the block: the pair with y_i is the positive, the others are negatives. Pairs
that share a y (same sample, another agent) are therefore never negatives, each positive gets at
most ``negatives`` negatives drawn uniformly from the other valid samples, and the score tensor
is (samples, agents, block) instead of N x N. Blocks are evaluated in chunks of bounded size
(rebuilt one at a time in the backward pass), so memory beyond the inputs and their gradients
does not grow with N.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rllib_alma_mi.settings import MutualInfoSettings

MEASURES = ("JSD", "GAN", "KL")
CRITICS = ("separable", "concat")

LOG2 = math.log(2.0)
# exp() arguments are clamped here: exp(20) ~ 5e8 keeps sums over millions of pairs finite.
MAX_EXPONENT = 20.0


def positive_expectation(t: torch.Tensor, measure: str) -> torch.Tensor:
    """E_P term of the Fenchel dual, elementwise on critic values of positive pairs."""
    if measure == "JSD":
        return LOG2 - F.softplus(-t)
    if measure == "GAN":
        return -F.softplus(-t)
    if measure == "KL":
        return t
    raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")


def negative_expectation(t: torch.Tensor, measure: str) -> torch.Tensor:
    """E_Q term of the Fenchel dual, elementwise on critic values of negative pairs."""
    return _negative_core(t, measure) - _NEGATIVE_OFFSET[measure]


# E_Q = core(t) - offset with core(-inf) = 0, so excluded pairs can simply be set to -inf.
_NEGATIVE_OFFSET = {"JSD": LOG2, "GAN": 0.0, "KL": 0.0}


def _negative_core(t: torch.Tensor, measure: str) -> torch.Tensor:
    """JSD: softplus(-t) + t - log2 = softplus(t) - log2; GAN: softplus(t); KL: exp(t - 1)."""
    if measure in ("JSD", "GAN"):
        return F.softplus(t)
    if measure == "KL":
        return torch.exp(torch.clamp(t - 1.0, max=MAX_EXPONENT))
    raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")


def _nwj_terms(t_pos: torch.Tensor, t_neg: torch.Tensor, shift: float):
    """NWJ bound pieces for the critic t + shift: E_P[t + shift] and E_Q[exp(t + shift - 1)]."""
    return t_pos + shift, torch.exp(torch.clamp(t_neg + shift - 1.0, max=MAX_EXPONENT))


class _Encoder(nn.Sequential):
    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__(nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))


class MINE(nn.Module):
    """Mutual-information estimator between x and y with a learned critic T(x, y).

    Args:
        x_dim, y_dim: feature sizes of x and y.
        measure: "JSD", "GAN" or "KL" (the NWJ bound, in nats).
        embed_dim: width of the critic.
        negatives: at most this many negatives (other samples' y) per positive.
        critic: "separable" (default): T = f(x) . g(y) / sqrt(embed_dim), with f one ReLU layer
            (x has n_agents rows per sample) and g a two-layer MLP, so T is a one-hidden-layer
            network in x whose output weights depend on y. The pair scores of a block are one
            batched matmul: this is what makes the vectorised pass faster than a per-agent N x N
            loop (benchmarks/mine_speed.py); it meets the correlated-Gaussian targets
            (benchmarks/mine_gaussian.py). "concat": T = w . relu(f(x) + g(y)) + b with f, g
            two-layer MLPs, i.e. an MLP on the concatenation [f(x), g(y)] whose first layer is
            applied to x and y separately and added per pair; richer but O(embed_dim)
            elementwise work per pair (tens of times slower on CPU).
        chunk_elements: memory budget per chunk of blocks, in float elements of the pair tensor.

    forward(x, y, mask=None) -> (loss, mi):
        x: (N, x_dim) or (N, n_agents, x_dim); y: (N, y_dim); mask: (N,) or (N, n_agents), any
        dtype, nonzero = valid row. A sample takes part (as positive and as negative y) when any
        of its rows is valid. loss = mean(E_neg) - mean(E_pos) (scalar, differentiable);
        mi = mean(E_pos) - mean(E_neg) (detached): the bound of the measure.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        measure: str = "JSD",
        embed_dim: int = MutualInfoSettings.mi_embed_dim,
        negatives: int = MutualInfoSettings.mi_negatives,
        critic: str = "separable",
        chunk_elements: int = 1 << 21,
    ):
        super().__init__()
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
        if critic not in CRITICS:
            raise ValueError(f"unknown critic {critic!r}; expected one of {CRITICS}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        self.x_dim, self.y_dim = x_dim, y_dim
        self.measure, self.critic_kind, self.negatives = measure, critic, negatives
        self.embed_dim = embed_dim
        self.chunk_elements = chunk_elements
        if critic == "separable":
            # x has n_agents rows per sample, y one: the deeper encoder goes on the y side.
            self.f = nn.Sequential(nn.Linear(x_dim, embed_dim), nn.ReLU())
        else:
            self.f = _Encoder(x_dim, embed_dim)
        self.g = _Encoder(y_dim, embed_dim)
        if critic == "concat":
            self.pair_out = nn.Linear(embed_dim, 1)

    def extra_repr(self) -> str:
        return f"measure={self.measure!r}, critic={self.critic_kind!r}, negatives={self.negatives}"

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None):
        pos, neg = self._expectations(x, y, mask, nwj_shift=None)
        mi = pos - neg
        return -mi, mi.detach()

    def nwj_estimate(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """NWJ lower bound on I(X; Y) in nats, read out from the current critic.

        A KL-trained critic is used as is: E_P[T] - E_Q[exp(T - 1)]. A JSD or GAN critic
        approximates T* = log p(x,y) / (p(x) p(y)), whose NWJ-optimal form is T* + 1 (f-GAN;
        Poole et al. 2019), so the readout is E_P[T + 1] - E_Q[exp(T)].
        """
        pos, neg = self._expectations(x, y, mask, nwj_shift=0.0 if self.measure == "KL" else 1.0)
        return pos - neg

    def critic(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """T(x, y) for aligned rows: x (..., x_dim), y (..., y_dim) -> (...)."""
        fx, gy = self.f(x), self.g(y)
        if self.critic_kind == "separable":
            return (fx * (gy * self.embed_dim**-0.5)).sum(-1)
        return self.pair_out(torch.relu(fx + gy)).squeeze(-1)

    def _pair_terms(self, t_pos, t_neg, nwj_shift):
        """Elementwise positive terms and negative cores (core(-inf) = 0) for the chosen bound."""
        if nwj_shift is None:
            return positive_expectation(t_pos, self.measure), _negative_core(t_neg, self.measure)
        return _nwj_terms(t_pos, t_neg, nwj_shift)

    # ----------------------------------------------------------------- vectorised pair scoring
    def _expectations(self, x, y, mask, nwj_shift):
        """Means of the positive and the negative terms over all valid pairs."""
        x, y, row_mask = self._check(x, y, mask)
        n, n_agents = x.shape[0], x.shape[1]
        valid_idx = torch.nonzero(row_mask.any(dim=1)).squeeze(1)
        if valid_idx.numel() < 2:
            raise ValueError(
                f"MINE needs at least 2 valid samples (one positive and one negative), got "
                f"{valid_idx.numel()} of {n}; check the mask"
            )
        order, cols = sample_blocks(valid_idx, self.negatives)
        rows = row_mask[order] & cols[..., None]  # (n_blocks, block, agents)
        n_pos = rows.sum().to(x.dtype)
        # Every valid row is paired with the valid columns of its block but its own sample.
        n_neg = (rows.sum(dim=(1, 2)) * (cols.sum(dim=1) - 1)).sum().to(x.dtype)

        n_blocks, block = order.shape
        pair_cost = 1 if self.critic_kind == "separable" else self.embed_dim
        per_chunk = max(1, self.chunk_elements // (block * n_agents * block * pair_cost))
        chunks = [
            (order[i : i + per_chunk], rows[i : i + per_chunk], cols[i : i + per_chunk])
            for i in range(0, n_blocks, per_chunk)
        ]

        def chunk_sums(xc, yc, rows, cols):
            return self._chunk(xc, yc, rows, cols, nwj_shift)

        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad or params)
        if needs_grad and len(chunks) > 1:
            pos, neg = _ChunkedPairSums.apply(chunk_sums, chunks, x, y, *params)
        else:
            pos = neg = x.new_zeros(())
            for order_c, rows_c, cols_c in chunks:
                p, q = chunk_sums(x[order_c], y[order_c], rows_c, cols_c)
                pos, neg = pos + p, neg + q
        offset = 0.0 if nwj_shift is not None else _NEGATIVE_OFFSET[self.measure]
        return pos / n_pos, neg / n_neg - offset

    def _chunk(self, xc, yc, rows, cols, nwj_shift):
        """Positive and negative sums of one chunk of C blocks of G samples.

        xc: (C, G, A, x_dim); yc: (C, G, y_dim); rows: (C, G, A) valid x rows; cols: (C, G)
        valid y columns (padding slots are invalid).
        """
        c, g, a = rows.shape
        xc = torch.where(rows[..., None], xc, 0.0)
        yc = torch.where(cols[..., None], yc, 0.0)
        _check_finite(xc, "x")
        _check_finite(yc, "y")
        fx = self.f(xc).reshape(c, g * a, self.embed_dim)
        gy = self.g(yc)
        scores = self._scores(fx, gy)  # (C, G*A, G)
        # Positives: row (sample s, agent k) against column s.
        t_pos = torch.diagonal(scores.view(c, g, a, g), dim1=1, dim2=3)  # (C, A, G)
        other = ~torch.eye(g, dtype=torch.bool, device=xc.device).repeat_interleave(a, dim=0)
        neg_ok = rows.reshape(c, g * a, 1) & cols[:, None, :] & other
        t_neg = scores.masked_fill(~neg_ok, float("-inf"))
        pos_terms, neg_core = self._pair_terms(t_pos, t_neg, nwj_shift)
        pos_sum = torch.where(rows.transpose(1, 2), pos_terms, 0.0).sum()
        return pos_sum, neg_core.sum()

    def _scores(self, fx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        if self.critic_kind == "separable":
            # The 1/sqrt(D) scale goes on the smaller factor.
            return torch.bmm(fx, (gy * self.embed_dim**-0.5).transpose(1, 2))
        hidden = torch.relu(fx[:, :, None, :] + gy[:, None, :, :])
        return self.pair_out(hidden).squeeze(-1)

    # ------------------------------------------------------------------------------ validation
    def _check(self, x, y, mask):
        x_shape = tuple(x.shape)
        if x.dim() == 2:
            x = x[:, None, :]
            if mask is not None and mask.dim() == 1:
                mask = mask[:, None]
        if x.dim() != 3 or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"x must have shape (N, {self.x_dim}) or (N, n_agents, {self.x_dim}), got {x_shape}"
            )
        n, n_agents = x.shape[0], x.shape[1]
        if y.dim() != 2 or y.shape != (n, self.y_dim):
            raise ValueError(f"y must have shape ({n}, {self.y_dim}), got {tuple(y.shape)}")
        if mask is None:
            row_mask = torch.ones(n, n_agents, dtype=torch.bool, device=x.device)
        else:
            if mask.dim() == 1:
                mask = mask[:, None].expand(n, n_agents)
            if mask.shape != (n, n_agents):
                expected = f"({n},) or ({n}, {n_agents})" if n_agents > 1 else f"({n},)"
                raise ValueError(f"mask must have shape {expected}, got {tuple(mask.shape)}")
            row_mask = mask > 0 if mask.dtype != torch.bool else mask
        return x, y, row_mask.to(x.device)


def sample_blocks(valid_idx: torch.Tensor, negatives: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the valid sample indices into blocks of at most negatives + 1 samples.

    Returns order (n_blocks, G) sample indices and valid (n_blocks, G) (False on the padding
    of the last block). With n_valid - 1 <= negatives there is one block holding every valid
    sample in its original order (deterministic). Otherwise each sample's block-mates are a
    uniformly random subset of the other valid samples.
    """
    n_valid = valid_idx.numel()
    if n_valid - 1 <= negatives:
        return valid_idx[None], torch.ones(1, n_valid, dtype=torch.bool, device=valid_idx.device)
    block = negatives + 1
    order = valid_idx[torch.randperm(n_valid, device=valid_idx.device)]
    n_blocks = -(-n_valid // block)
    pad = n_blocks * block - n_valid
    valid = torch.ones(n_blocks * block, dtype=torch.bool, device=valid_idx.device)
    if pad:
        order = torch.cat([order, order.new_zeros(pad)])
        valid[n_valid:] = False
    return order.view(n_blocks, block), valid.view(n_blocks, block)


class _ChunkedPairSums(torch.autograd.Function):
    """Sums of chunk_sums over chunks, rebuilding one chunk's graph at a time in backward.

    The gradients of x and y go into one buffer each (index_add_), so memory holds the inputs,
    their gradients and a single chunk's activations, whatever the number of chunks (autograd
    through per-chunk gathers would materialise a dense x-sized gradient per chunk).
    """

    @staticmethod
    def forward(ctx, chunk_sums, chunks, x, y, *params):
        ctx.chunk_sums, ctx.chunks = chunk_sums, chunks
        ctx.save_for_backward(x, y, *params)
        pos = neg = x.new_zeros(())
        for order, rows, cols in chunks:
            p, q = chunk_sums(x[order], y[order], rows, cols)
            pos, neg = pos + p, neg + q
        return pos, neg

    @staticmethod
    def backward(ctx, grad_pos, grad_neg):
        x, y, *params = ctx.saved_tensors
        want_x, want_y = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        grad_x = torch.zeros_like(x) if want_x else None
        grad_y = torch.zeros_like(y) if want_y else None
        grad_params = [torch.zeros_like(p) for p in params]
        for order, rows, cols in ctx.chunks:
            with torch.enable_grad():
                xc = x.detach()[order].requires_grad_(want_x)
                yc = y.detach()[order].requires_grad_(want_y)
                p, q = ctx.chunk_sums(xc, yc, rows, cols)
                inputs = [xc, yc, *params]
                grads = torch.autograd.grad(
                    p * grad_pos + q * grad_neg,
                    [t for t in inputs if t.requires_grad],
                    allow_unused=True,
                )
            grads = iter(grads)
            flat = order.reshape(-1)
            if want_x:
                grad_x.index_add_(0, flat, next(grads).flatten(0, 1))
            if want_y:
                grad_y.index_add_(0, flat, next(grads).flatten(0, 1))
            for acc, g in zip(grad_params, grads, strict=True):
                if g is not None:
                    acc += g
        return None, None, grad_x, grad_y, *grad_params


def _check_finite(t: torch.Tensor, name: str) -> None:
    # One reduction on the common path; the exact elementwise test only when the sum is not finite.
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN/inf in a valid (unmasked) row")
