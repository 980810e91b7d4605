"""MINE against the closed form for correlated Gaussians (the staircase of Poole et al. 2019).

x, eps ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps, I(X; Y) = -(d/2) ln(1 - rho^2) nats.
A critic is trained on fresh samples each step, then the bound is read out on large fresh
batches: the KL measure gives the NWJ bound directly; a JSD critic is read out with
MINE.nwj_estimate (critic T + 1).

    .venv/bin/python benchmarks/mine_gaussian.py [--steps 3000] [--mi 2 4 6 8 10]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from rllib_alma_mi.nn.mine import MINE


def rho_for_mi(mi: float, dim: int) -> float:
    """Correlation that gives `mi` nats between x and y in `dim` dimensions."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def sample_pairs(
    n: int, dim: int, rho: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, dim, generator=generator)
    eps = torch.randn(n, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * eps


def estimate_gaussian_mi(
    true_mi: float,
    measure: str,
    *,
    dim: int = 20,
    steps: int = 3000,
    batch: int = 512,
    lr: float = 1e-3,
    embed_dim: int = 256,
    eval_batches: int = 8,
    eval_size: int = 8192,
    seed: int = 0,
) -> float:
    """Train a MINE critic with `measure` and return its NWJ estimate of I(X; Y) in nats."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rho = rho_for_mi(true_mi, dim)
    mine = MINE(dim, dim, measure=measure, embed_dim=embed_dim)
    opt = torch.optim.Adam(mine.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    for _ in range(steps):
        x, y = sample_pairs(batch, dim, rho, gen)
        loss, _ = mine(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        estimates = [
            float(mine.nwj_estimate(*sample_pairs(eval_size, dim, rho, gen)))
            for _ in range(eval_batches)
        ]
    return sum(estimates) / len(estimates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per estimate")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--mi", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--measures", nargs="+", default=["KL", "JSD"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tolerance = {"KL": 0.15, "JSD": 0.20}
    print(f"d={args.dim}, steps={args.steps}, batch={args.batch}, threads={args.threads}")
    print(
        f"{'true MI':>8} {'measure':>8} {'NWJ est.':>9} {'rel. err':>9} {'target':>7} {'time':>7}"
    )
    for mi in args.mi:
        for measure in args.measures:
            start = time.perf_counter()
            est = estimate_gaussian_mi(
                mi, measure, dim=args.dim, steps=args.steps, batch=args.batch, seed=args.seed
            )
            err = (est - mi) / mi
            target = f"{tolerance[measure]:.0%}" if mi <= 4 else "-"
            elapsed = time.perf_counter() - start
            print(f"{mi:8.1f} {measure:>8} {est:9.3f} {err:+9.1%} {target:>7} {elapsed:6.1f}s")


if __name__ == "__main__":
    main()
