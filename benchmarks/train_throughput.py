"""Sampling + training throughput of AlmaPPO at the default settings, in one run.

    python benchmarks/train_throughput.py [--iters 3] [--scenario 2-5a_2-5b]

Prints env steps per second (the wrapped environment's own steps, and RLlib's step count,
which also counts the allocator's decision steps) for flat PPO, ALMA without MI and ALMA with MI.
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


def measure(name: str, scenario: str, iters: int) -> dict:
    spec = METHODS[name]
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config={"scenario": scenario})
        .alma(**spec["alma"])
        .mutual_info(**spec["mi"])
    )
    algo = config.build_algo()
    try:
        algo.train()  # warm-up: process start, first compilation of the torch graph
        base0 = _base_steps(algo)
        rllib0 = algo._counters.get("num_env_steps_sampled", 0)
        start = time.perf_counter()
        for _ in range(iters):
            result = algo.train()
        elapsed = time.perf_counter() - start
        base = _base_steps(algo, result) - base0
        rllib = result["num_env_steps_sampled_lifetime"] - rllib0 if rllib0 else None
        return {
            "method": name,
            "base_steps_per_s": base / elapsed,
            "seconds": elapsed,
            "rllib_steps": rllib,
        }
    finally:
        algo.stop()


def _base_steps(algo, result=None) -> float:
    result = result or algo.metrics.peek(("env_runners",), default={})
    return float(result.get("env_runners", result).get("num_base_env_steps_lifetime", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--scenario", default="2-5a_2-5b")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = [measure(name, args.scenario, args.iters) for name in METHODS]
    ray.shutdown()
    print(f"\nsave_the_city {args.scenario}, default AlmaPPOConfig, {args.iters} iterations")
    print(f"{'method':<14} {'env steps/s':>12} {'vs no MI':>9}")
    no_mi = next(r for r in rows if r["method"] == "ALMA, no MI")["base_steps_per_s"]
    for r in rows:
        rate = r["base_steps_per_s"]
        print(f"{r['method']:<14} {rate:>12.0f} {rate / no_mi:>8.2f}x")


if __name__ == "__main__":
    main()
