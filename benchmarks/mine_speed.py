"""Speed and memory of the vectorised MINE against a per-agent loop with N x N score matrices.

The baseline follows the plan's sketch: for each agent, embed its x with a 2-layer MLP and the
global y with a 1-layer MLP, form the N x N score matrix u = m l^T, and take the Fenchel dual
loss with positives on the diagonal and negatives off it. Peak memory is the growth of the
resident set of a fresh subprocess during one forward + backward, after the inputs exist
(Linux: the high-water mark VmHWM is reset through /proc/self/clear_refs just before).

    .venv/bin/python benchmarks/mine_speed.py [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rllib_alma_mi.nn.mine import MINE

ROOT = Path(__file__).resolve().parents[1]


class LoopMINE(nn.Module):
    """The plan's sketch: one N x N JSD Fenchel dual per agent, in a Python loop."""

    def __init__(self, x_dim: int, y_dim: int, embed_dim: int = 128):
        super().__init__()
        self.l1 = nn.Linear(x_dim, embed_dim)
        self.l2 = nn.Linear(embed_dim, embed_dim)
        self.l3 = nn.Linear(y_dim, embed_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, n_agents, _ = x.shape
        eye = torch.eye(n, device=x.device)
        total = x.new_zeros(())
        for agent in range(n_agents):
            local = F.leaky_relu(self.l2(F.leaky_relu(self.l1(x[:, agent]))))
            glob = F.leaky_relu(self.l3(y))
            u = glob @ local.t()
            e_pos = math.log(2.0) - F.softplus(-u)
            e_neg = F.softplus(-u) + u - math.log(2.0)
            loss = (e_neg * (1 - eye)).sum(1) / (n - 1) - (e_pos * eye).sum(1)
            total = total + loss.mean()
        return total / n_agents


def interleaved_times(fns: list, repeats: int) -> list[list[float]]:
    """Seconds of fn() + backward, per function and round (one warm-up call each).

    The functions take turns within each round, so load from other processes hits them alike.
    """
    for fn in fns:
        fn().backward()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn().backward()
            acc.append(time.perf_counter() - start)
    return times


MEMORY_SCRIPT = """
import json, sys, torch
from rllib_alma_mi.nn.mine import MINE


def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


n, agents, dim, threads = (int(v) for v in sys.argv[1:5])
critic = sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(0)
mine = MINE(dim, dim, critic=critic)
x = torch.randn(n, agents, dim, requires_grad=True)
y = torch.randn(n, dim, requires_grad=True)
inputs_mb = (x.numel() + y.numel()) * 4 / 2**20
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark VmHWM to the current resident set
before = status_mb("VmRSS")
loss, mi = mine(x, y)
loss.backward()
peak = status_mb("VmHWM")
finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(x.grad).all())
print(json.dumps({"peak_mb": peak - before, "inputs_mb": inputs_mb, "finite": finite}))
"""


def peak_memory(n: int, agents: int, dim: int, critic: str, threads: int) -> dict:
    args = [str(n), str(agents), str(dim), str(threads), critic]
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--big-n", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-concat", action="store_true", help="skip the slow concat critic")
    parser.add_argument(
        "--concat-memory", action="store_true", help="also measure the concat critic at --big-n"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = torch.randn(args.n, args.agents, args.dim, requires_grad=True)
    y = torch.randn(args.n, args.dim)
    loop = LoopMINE(args.dim, args.dim)
    separable = MINE(args.dim, args.dim)
    loop_t, sep_t = interleaved_times(
        [lambda: loop(x, y), lambda: separable(x, y)[0]], args.repeats
    )
    rows = [
        ("per-agent loop, N x N (plan's sketch)", loop_t, loop_t),
        ("vectorised MINE, separable critic, K=128", sep_t, loop_t),
    ]
    if not args.skip_concat:
        concat = MINE(args.dim, args.dim, critic="concat")
        rounds = max(2, args.repeats // 4)
        loop_c, concat_t = interleaved_times([lambda: loop(x, y), lambda: concat(x, y)[0]], rounds)
        rows.append(("vectorised MINE, concat critic, K=128", concat_t, loop_c))

    print(
        f"forward + backward, N={args.n}, agents={args.agents}, x_dim=y_dim={args.dim}, "
        f"embed_dim=128, threads={args.threads}, {args.repeats} interleaved rounds"
    )
    print(f"{'method':<44} {'median ms':>10} {'speed-up (median of rounds)':>28}")
    for name, times, base in rows:
        speedup = statistics.median(b / t for b, t in zip(base, times, strict=True))
        print(f"{name:<44} {statistics.median(times) * 1e3:10.1f} {speedup:27.1f}x")

    print()
    print(f"peak memory of one forward + backward, N={args.big_n}, agents={args.agents}")
    print(f"{'critic':<12} {'inputs MB':>10} {'peak growth MB (3 runs)':>24} {'finite':>7}")
    for critic in ["separable", "concat"] if args.concat_memory else ["separable"]:
        runs = [
            peak_memory(args.big_n, args.agents, args.dim, critic, args.threads) for _ in range(3)
        ]
        peaks = " / ".join(f"{r['peak_mb']:.0f}" for r in runs)
        finite = all(r["finite"] for r in runs)
        print(f"{critic:<12} {runs[0]['inputs_mb']:10.0f} {peaks:>24} {finite!s:>7}")


if __name__ == "__main__":
    main()
