"""Sampling + training throughput of AlmaPPO at the default settings, against stock RLlib PPO.

    python benchmarks/train_throughput.py [--rounds 3] [--iters 3] [--scenario 2-5a_2-5b]
    python benchmarks/train_throughput.py --shared-worker-encoder   # one worker encoder
    python benchmarks/train_throughput.py --embed-dim 4 --num-epochs 1   # RLlib's own cost

Methods:
- `stock PPO` (the anchor): RLlib 2.60's `PPOConfig` as it comes, one policy shared by every
  agent, RLlib's default MLP encoder over each agent's flattened observation
  (`envs.flat_observation.FlatObservationEnv` of SaveTheCity, through RLlib's
  `ParallelPettingZooEnv`). It has no action masking: a masked-out action is executed as
  "stay" (`invalid_action="stay"`).
- `flat PPO`, `ALMA, no MI`, `ALMA + MI`: `AlmaPPOConfig` with `allocation="none"`, without
  the MI term, and at its defaults.

Every method gets the same train batch (4,000 RLlib env steps, which for ALMA include the
allocator's decisions), minibatch (1,000 rows) and epochs (5), the same env runners (2 × 8
envs, half a CPU each) and the same torch threads in the local learner; the options below
change them for every method. Throughput is wrapped-environment steps per second, counted the
same way for all (`num_base_env_steps_lifetime`: the steps of the episodes that finished).

Each round times every method in turn (the order rotating each round): the method is built,
trains one warm-up iteration, is timed over `--iters` iterations and is stopped before the next
one is built, so no other method's idle env runners share the cores while it runs (kept alive,
they took 10-15% of a core each). Each method's ratio to the anchor is taken within a round;
the table gives the median over `--rounds` rounds and the range. On a shared machine absolute
rates drift, the ratios much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import ray
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.keys import BASE_ENV_STEPS_LIFETIME
from rllib_alma_mi.rllib.learner import learner_threads

ANCHOR = "stock PPO"
# The hierarchy allocates every 5 env steps here, as when the README's figures were measured
# (the default is now only at reset and on resolutions: fewer allocation steps per batch).
METHODS = {
    ANCHOR: None,
    "flat PPO": {"alma": {"allocation": "none"}, "mi": {"use_mutual_info": False}},
    "ALMA, no MI": {"alma": {"alloc_interval": 5}, "mi": {"use_mutual_info": False}},
    "ALMA + MI": {"alma": {"alloc_interval": 5}, "mi": {"use_mutual_info": True}},
}
ANCHOR_ENV = "save_the_city_flat_obs"


class BaseStepsCallback(RLlibCallback):
    """The anchor's step count as the hierarchy's: each finished episode's env steps, summed
    into `num_base_env_steps_lifetime`. (`episode` is the episode's last chunk: its
    `env_steps()` would miss the steps sampled in earlier calls; `env_t` counts from reset.)"""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        metrics_logger.log_value(BASE_ENV_STEPS_LIFETIME, episode.env_t, reduce="lifetime_sum")


def anchor_env(env_config: dict[str, Any]):
    """SaveTheCity with flattened observations as an RLlib `MultiAgentEnv`.

    RLlib's wrapper takes its agents' spaces from the first reset's team; teams vary in size,
    so every possible agent's spaces are given to it."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from envs.flat_observation import FlatObservationEnv
    from envs.save_the_city import parallel_env

    flat = FlatObservationEnv(parallel_env(invalid_action="stay", **env_config))
    env = ParallelPettingZooEnv(flat)
    env.possible_agents = list(flat.possible_agents)
    env.observation_spaces = {a: flat.observation_space(a) for a in flat.possible_agents}
    env.action_spaces = {a: flat.action_space(a) for a in flat.possible_agents}
    return env


def _anchor_config(args: argparse.Namespace):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    register_env(ANCHOR_ENV, anchor_env)
    return (
        PPOConfig()
        .environment(ANCHOR_ENV, env_config=_env_config(args))
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *a, **k: "shared")
        .callbacks(BaseStepsCallback)
    )


def _env_config(args: argparse.Namespace) -> dict[str, Any]:
    config = {"scenario": args.scenario}
    if args.max_cycles is not None:
        config["max_cycles"] = args.max_cycles
    return config


def _alma_config(name: str, args: argparse.Namespace):
    spec = METHODS[name]
    alma = dict(spec["alma"])
    if args.embed_dim is not None:
        alma.update(embed_dim=args.embed_dim, n_heads=1)
    if args.shared_worker_encoder is not None:
        alma["shared_worker_encoder"] = args.shared_worker_encoder
    return (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=_env_config(args))
        .alma(**alma)
        .mutual_info(**spec["mi"])
    )


def build(name: str, args: argparse.Namespace):
    """The method's algorithm, with the sampling and batch settings of AlmaPPOConfig's
    defaults (or the options) for every method."""
    config = _anchor_config(args) if name == ANCHOR else _alma_config(name, args)
    defaults = AlmaPPOConfig()
    config.training(
        train_batch_size_per_learner=args.train_batch or defaults.train_batch_size_per_learner,
        minibatch_size=args.minibatch_size or defaults.minibatch_size,
        num_epochs=args.num_epochs or defaults.num_epochs,
    )
    config.env_runners(
        num_env_runners=defaults.num_env_runners,
        num_envs_per_env_runner=args.envs_per_runner or defaults.num_envs_per_env_runner,
        num_cpus_per_env_runner=defaults.num_cpus_per_env_runner,
        rollout_fragment_length="auto",
    )
    # The local learner's torch threads as AlmaPPO's learner sets them, for every method.
    torch.set_num_threads(learner_threads(config))
    return config.build_algo()


class Timed:
    """A built algorithm whose training iterations are timed; the learner's update apart."""

    def __init__(self, name: str, algo: Any):
        self.name, self.algo = name, algo
        update, self._learner_s = algo.learner_group.update, [0.0]

        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return update(*a, **k)
            finally:
                self._learner_s[0] += time.perf_counter() - start

        algo.learner_group.update = timed
        self.algo.train()  # warm-up: process start, first pass of every code path

    def run(self, iters: int) -> dict[str, float]:
        torch.set_num_threads(learner_threads(self.algo.config))
        base0, learner0 = _base_steps(self.algo), self._learner_s[0]
        start = time.perf_counter()
        for _ in range(iters):
            result = self.algo.train()
        elapsed = time.perf_counter() - start
        base = _base_steps(self.algo, result) - base0
        learning = (self._learner_s[0] - learner0) / iters
        return {
            "rate": base / elapsed,
            "other_s": elapsed / iters - learning,
            "learning_s": learning,
            "steps_per_iter": base / iters,
        }


def _base_steps(algo, result=None) -> float:
    result = result or algo.metrics.peek(("env_runners",), default={})
    return float(result.get("env_runners", result).get(BASE_ENV_STEPS_LIFETIME, 0.0))


def measure(names: list[str], args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Each method's measurements, one per round, each method alone on the machine."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            run = Timed(name, build(name, args))
            try:
                rows[name].append(run.run(args.iters))
            finally:
                run.algo.stop()
            print(f"round {r + 1}: {name}: {rows[name][-1]['rate']:.0f} env steps/s",
                  file=sys.stderr, flush=True)
    return rows


def summarize(rows: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per method: median rate, median and range of its per-round ratio to the anchor (and to
    ALMA without MI when measured), median seconds per iteration."""
    out = []
    for name, runs in rows.items():
        row = {"method": name, "rate": statistics.median(r["rate"] for r in runs)}
        for key in ("other_s", "learning_s", "steps_per_iter"):
            row[key] = statistics.median(r[key] for r in runs)
        for ref_name, label in ((ANCHOR, "vs_anchor"), ("ALMA, no MI", "vs_no_mi")):
            ref = rows.get(ref_name)
            if ref is not None:
                ratios = [a["rate"] / b["rate"] for a, b in zip(runs, ref, strict=True)]
                row[label] = (statistics.median(ratios), min(ratios), max(ratios))
        out.append(row)
    return out


def _ratio(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return "-"
    median, low, high = value
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed turns of every method")
    parser.add_argument("--iters", type=int, default=3, help="training iterations per turn")
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--max-cycles", type=int, help="SaveTheCity's episode length")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--embed-dim", type=int, help="network width (n_heads becomes 1)")
    parser.add_argument("--train-batch", type=int, help="RLlib env steps per iteration")
    parser.add_argument("--num-epochs", type=int, help="PPO epochs per batch")
    parser.add_argument("--minibatch-size", type=int, help="rows per minibatch")
    parser.add_argument("--envs-per-runner", type=int, help="num_envs_per_env_runner")
    parser.add_argument(
        "--shared-worker-encoder", action=argparse.BooleanOptionalAction, default=None,
        help="the worker's value head reads the policy's encoder (or its own)",
    )
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        table = summarize(measure(args.methods, args))
    finally:
        ray.shutdown()
    changed = {k: v for k, v in vars(args).items()
               if v is not None and k not in ("iters", "rounds", "methods")}
    print(f"\nsave_the_city, {changed}, otherwise default AlmaPPOConfig; {args.rounds} rounds "
          f"of {args.iters} iterations; ratios: median (range) over rounds")
    print(f"{'method':<12} {'env steps/s':>11} {'vs stock PPO':>20} {'vs no MI':>20} "
          f"{'steps/iter':>10} {'other s':>8} {'learner s':>9}")
    for r in table:
        print(f"{r['method']:<12} {r['rate']:>11.0f} {_ratio(r.get('vs_anchor')):>20} "
              f"{_ratio(r.get('vs_no_mi')):>20} {r['steps_per_iter']:>10.0f} "
              f"{r['other_s']:>8.2f} {r['learning_s']:>9.2f}")


if __name__ == "__main__":
    main()
