"""The evolutionary operators on allocator heads, in pure torch: reading and loading heads,
random heads, selection, crossover, mutation and `next_generation` (see the package docstring
for the algorithm).

A **head** is a dict name -> tensor of the pointer-head parameters of `AllocatorNet` (the names
starting with `ptr_`), keyed as in the net (e.g. `"ptr_query.weight"`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rllib_alma_mi.settings import EvolutionSettings

HEAD_PREFIX = "ptr_"
SUPER_MUTATION_SCALE = 10.0
Head = dict[str, torch.Tensor]

# --------------------------------------------------------------------------------- heads
def head_of(net: torch.nn.Module) -> Head:
    """A detached copy of the pointer-head parameters of an `AllocatorNet` (or of a module
    with the net under `.net`)."""
    net = getattr(net, "net", net)
    return {
        name: p.detach().clone()
        for name, p in net.named_parameters()
        if name.startswith(HEAD_PREFIX)
    }


def head_from_state(state: dict[str, Any], prefix: str = "net.") -> Head:
    """The head inside an allocator module's state dict (tensors or numpy arrays)."""
    start = prefix + HEAD_PREFIX
    return {
        key[len(prefix) :]: torch.as_tensor(np.asarray(value)).clone()
        for key, value in state.items()
        if key.startswith(start)
    }


def load_head(net: torch.nn.Module, head: Head) -> None:
    """Copy `head` into the pointer head of `net` (an AllocatorNet or a module with `.net`)."""
    net = getattr(net, "net", net)
    params = dict(net.named_parameters())
    expected = sorted(k for k in params if k.startswith(HEAD_PREFIX))
    if sorted(head) != expected:
        raise ValueError(f"head keys {sorted(head)} do not match the net's {expected}")
    with torch.no_grad():
        for name, value in head.items():
            target = params[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"head[{name!r}] has shape {tuple(value.shape)}, the net expects "
                    f"{tuple(target.shape)}"
                )
            target.copy_(torch.as_tensor(value, dtype=target.dtype))


def clone_head(head: Head) -> Head:
    """A detached copy of `head`."""
    return {k: v.detach().clone() for k, v in head.items()}


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _init_bounds(head: Head) -> dict[str, float]:
    """PyTorch's default Linear init bound 1/sqrt(fan_in) for every tensor of the head."""
    fan_in = {_layer(k): v.shape[1] for k, v in head.items() if v.dim() == 2}
    return {k: 1.0 / math.sqrt(max(1, fan_in.get(_layer(k), v.shape[-1]))) for k, v in head.items()}


def random_head(template: Head, rng: torch.Generator) -> Head:
    """A fresh head shaped like `template`, drawn as PyTorch initialises Linear layers."""
    bounds = _init_bounds(template)
    return {
        k: (torch.rand(v.shape, generator=rng, dtype=v.dtype) * 2 - 1) * bounds[k]
        for k, v in sorted(template.items())
    }


# ------------------------------------------------------------------------------- operators
def as_fitness(fitness: Any) -> np.ndarray:
    """Fitness values as a flat float64 array, NaN (a failed evaluation) as -inf."""
    values = np.asarray(fitness, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(values), -np.inf, values)  # a failed evaluation ranks last


def rank_order(fitness: Any) -> list[int]:
    """Member indices from the fittest to the least fit (ties: lower index first)."""
    values = as_fitness(fitness)
    return [int(i) for i in np.argsort(-values, kind="stable")]


def tournament(fitness: Any, size: int, rng: torch.Generator) -> int:
    """The fittest of `size` members drawn without replacement (ties: first drawn)."""
    values = as_fitness(fitness)
    drawn = torch.randperm(len(values), generator=rng)[:size].tolist()
    return max(drawn, key=lambda i: values[i])


def select_parents(
    fitness: Any, settings: EvolutionSettings, rng: torch.Generator, n_pairs: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """Elites (the `settings.n_elites()` fittest indices) and `n_pairs` tournament pairs."""
    n = len(as_fitness(fitness))
    elites = rank_order(fitness)[: min(settings.n_elites(), n)]
    size = min(settings.tournament_size, n)
    pairs = [
        (tournament(fitness, size, rng), tournament(fitness, size, rng)) for _ in range(n_pairs)
    ]
    return elites, pairs


def crossover(a: Head, b: Head, rng: torch.Generator) -> tuple[Head, Head]:
    """Two complementary children: per layer, each output unit (a weight row and its bias
    entry) comes from `a` or `b` with probability 1/2 (the other child gets the other one)."""
    if sorted(a) != sorted(b):
        raise ValueError(f"crossover of heads with different keys: {sorted(a)} vs {sorted(b)}")
    masks: dict[str, torch.Tensor] = {}
    child_a, child_b = {}, {}
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.shape != y.shape:
            raise ValueError(f"crossover: {name!r} has shapes {tuple(x.shape)}, {tuple(y.shape)}")
        layer = _layer(name)
        if layer not in masks or masks[layer].shape[0] != x.shape[0]:
            masks[layer] = torch.rand(x.shape[0], generator=rng) < 0.5
        take_a = masks[layer].view(-1, *([1] * (x.dim() - 1)))
        child_a[name] = torch.where(take_a, x, y).clone()
        child_b[name] = torch.where(take_a, y, x).clone()
    return child_a, child_b


def mutate(head: Head, rng: torch.Generator, settings: EvolutionSettings) -> Head:
    """A mutated copy of `head` (or an unchanged copy, with probability 1 - mutation_prob)."""
    out = clone_head(head)
    if torch.rand((), generator=rng).item() >= settings.mutation_prob:
        return out
    bounds = _init_bounds(head)
    for name in sorted(out):
        w = out[name]
        picked = torch.rand(w.shape, generator=rng) < settings.mutation_frac
        kind = torch.rand(w.shape, generator=rng)
        noise = torch.randn(w.shape, generator=rng, dtype=w.dtype)
        fresh = (torch.rand(w.shape, generator=rng, dtype=w.dtype) * 2 - 1) * bounds[name]
        is_super = kind < settings.super_mutation_prob
        is_reset = ~is_super & (kind < settings.super_mutation_prob + settings.reset_prob)
        scale = torch.where(is_super, SUPER_MUTATION_SCALE, 1.0) * settings.mutation_std
        mutated = torch.where(is_reset, fresh, w + noise * scale * w.abs())
        out[name] = torch.where(picked, mutated, w)
    return out


def next_generation(
    population: list[Head],
    fitness: Any,
    rl_head: Head | None,
    settings: EvolutionSettings,
    rng: torch.Generator,
) -> list[Head]:
    """The next population, same size and slots.

    Elites keep their slots unchanged; every other slot gets `mutate(crossover(p1, p2)[0])`
    of a tournament pair; with `rl_head`, the slot of the least fit member gets an exact copy
    of it instead (injection wins over elitism when every member is an elite).
    """
    n = len(population)
    values = as_fitness(fitness)
    if len(values) != n:
        raise ValueError(f"fitness has {len(values)} values for a population of {n}")
    order = rank_order(values)
    inject_slot = order[-1] if rl_head is not None else None
    elites = set(order[: min(settings.n_elites(), n)])
    children = [i for i in range(n) if i not in elites and i != inject_slot]
    _, pairs = select_parents(values, settings, rng, len(children))
    new: list[Head | None] = [None] * n
    for i in elites:
        new[i] = clone_head(population[i])
    for slot, (p1, p2) in zip(children, pairs, strict=True):
        child, _ = crossover(population[p1], population[p2], rng)
        new[slot] = mutate(child, rng, settings)
    if inject_slot is not None:
        new[inject_slot] = clone_head(rl_head)
    return new  # type: ignore[return-value]

