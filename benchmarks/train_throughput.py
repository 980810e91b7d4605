"""Sampling + training throughput of AlmaPPO at the default settings, in one run.

    python benchmarks/train_throughput.py [--iters 5] [--scenario 2-5a_2-5b]
    python benchmarks/train_throughput.py --shared-worker-encoder   # one worker encoder
    python benchmarks/train_throughput.py --embed-dim 4 --num-epochs 1   # RLlib's own cost

Prints, for flat PPO, ALMA without MI and ALMA with MI, the wrapped environment's steps per
second (allocation decisions are not counted) and the seconds per iteration spent in the
learner's update and in the rest of the iteration (sampling, mostly). Each option changes one
default; with a tiny network and one epoch what is left is RLlib's own per-step cost.
"""

from __future__ import annotations

import argparse
import time

import ray

from rllib_alma_mi import AlmaPPOConfig

METHODS = {
    "flat PPO": {"alma": {"allocation": "none"}, "mi": {"use_mutual_info": False}},
    "ALMA, no MI": {"alma": {}, "mi": {"use_mutual_info": False}},
    "ALMA + MI": {"alma": {}, "mi": {"use_mutual_info": True}},
}


def measure(name: str, args: argparse.Namespace) -> dict:
    spec = METHODS[name]
    alma = dict(spec["alma"])
    if args.embed_dim is not None:
        alma.update(embed_dim=args.embed_dim, n_heads=1)
    if args.shared_worker_encoder is not None:
        alma["shared_worker_encoder"] = args.shared_worker_encoder
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config={"scenario": args.scenario})
        .alma(**alma)
        .mutual_info(**spec["mi"])
    )
    if args.num_epochs is not None:
        config.training(num_epochs=args.num_epochs)
    if args.minibatch_size is not None:
        config.training(minibatch_size=args.minibatch_size)
    if args.envs_per_runner is not None:
        config.env_runners(num_envs_per_env_runner=args.envs_per_runner)
    algo = config.build_algo()
    try:
        algo.train()  # warm-up: process start, first compilation of the torch graph
        learner_seconds = _time_learner_updates(algo)
        base0 = _base_steps(algo)
        start = time.perf_counter()
        for _ in range(args.iters):
            result = algo.train()
        elapsed = time.perf_counter() - start
        base = _base_steps(algo, result) - base0
        learning = learner_seconds() / args.iters
        return {
            "method": name,
            "base_steps_per_s": base / elapsed,
            "other_s": elapsed / args.iters - learning,
            "learning_s": learning,
            "steps_per_iter": base / args.iters,
        }
    finally:
        algo.stop()


def _time_learner_updates(algo):
    """Wraps the learner group's update with a clock; returns a function giving its total.
    (RLlib's own timers are running averages that still carry the warm-up iteration.)"""
    update, total = algo.learner_group.update, [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    algo.learner_group.update = timed
    return lambda: total[0]


def _base_steps(algo, result=None) -> float:
    result = result or algo.metrics.peek(("env_runners",), default={})
    return float(result.get("env_runners", result).get("num_base_env_steps_lifetime", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--embed-dim", type=int, help="network width (n_heads becomes 1)")
    parser.add_argument("--num-epochs", type=int, help="PPO epochs per batch")
    parser.add_argument("--minibatch-size", type=int, help="rows per minibatch")
    parser.add_argument("--envs-per-runner", type=int, help="num_envs_per_env_runner")
    parser.add_argument(
        "--shared-worker-encoder", action=argparse.BooleanOptionalAction, default=None,
        help="the worker's value head reads the policy's encoder (or its own)",
    )
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = [measure(name, args) for name in METHODS]
    ray.shutdown()
    changed = {k: v for k, v in vars(args).items() if v is not None and k not in ("iters",)}
    print(f"\nsave_the_city, {changed}, otherwise default AlmaPPOConfig, {args.iters} iterations")
    print(f"{'method':<14} {'env steps/s':>12} {'vs no MI':>9} {'steps/iter':>11} "
          f"{'other s':>8} {'learner s':>10}")
    no_mi = next(r for r in rows if r["method"] == "ALMA, no MI")["base_steps_per_s"]
    for r in rows:
        rate = r["base_steps_per_s"]
        print(f"{r['method']:<14} {rate:>12.0f} {rate / no_mi:>8.2f}x {r['steps_per_iter']:>11.0f} "
              f"{r['other_s']:>8.2f} {r['learning_s']:>10.2f}")


if __name__ == "__main__":
    main()
