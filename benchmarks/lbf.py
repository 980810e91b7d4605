"""Level-Based Foraging: the field's IPPO anchor against ALMA (+ MINE) and flat entity PPO.

For one LBF task, each seed and each method, trains until the wrapped environment has
taken `--budget` steps and writes one CSV row per iteration to `OUT/<method>_s<seed>.csv`:

    iter, time, env_steps, return, solved, completed, mi_value

`return` is the mean episodic return summed over agents, as EPyMARL reports it (1.0 when
every food item is collected, LBF's normalised reward). Methods:

- `anchor`: stock RLlib `PPOConfig`, one policy shared by every agent, RLlib's default MLP
  over LBF's own vector observation (IPPO with parameter sharing, the EPyMARL baseline);
  `env_steps` is RLlib's `num_env_steps_sampled_lifetime`, `return` its
  `episode_return_mean` (the sum of every agent's rewards). `solved` and `completed` are
  not reported.
- `alma_mi`: `AlmaPPOConfig` defaults (learned allocation, MINE on the allocator).
- `alma`: the same without the MINE term.
- `flat`: PPO with the project's entity network and no allocator (`allocation="none"`).

For the last three `env_steps` is the wrapped env's step count of finished episodes
(`num_base_env_steps_lifetime`) and `return` is the hierarchy's `team_return` (per-step mean
over agents) times the number of agents. Every method gets the same `--batch`,
`--minibatch`, `--epochs`, `--lr`, `--entropy` and env runners; the batch counts RLlib env
steps, which for `alma*` include the allocator's decisions. The local learner of every
method uses the torch thread count AlmaPPO's learner sets for itself.

    python benchmarks/lbf.py --env-id Foraging-8x8-2p-2f-coop-v3 --seeds 0 1 2 \\
        --budget 2000000 --out results/lbf
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import yaml

METHODS = ("anchor", "alma_mi", "alma", "flat")
COLUMNS = ("iter", "time", "env_steps", "return", "solved", "completed", "mi_value")
NAN = float("nan")


def _anchor_config(env_config: dict[str, Any]):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    from envs.lbf import flat_parallel_env

    register_env("lbf_flat", lambda cfg: ParallelPettingZooEnv(flat_parallel_env(**cfg)))
    return (
        PPOConfig()
        .environment("lbf_flat", env_config=env_config)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *a, **k: "shared")
    )


def _alma_config(method: str, env_config: dict[str, Any]):
    from rllib_alma_mi import AlmaPPOConfig

    config = AlmaPPOConfig().environment("lbf", env_config=env_config)
    if method == "alma":
        config.mutual_info(use_mutual_info=False)
    elif method == "flat":
        config.alma(allocation="none").mutual_info(use_mutual_info=False)
    return config


def build(method: str, seed: int, env_config: dict[str, Any], args: argparse.Namespace):
    """The method's algorithm config with the shared training and sampling settings."""
    if method == "anchor":
        config = _anchor_config(env_config)
    else:
        config = _alma_config(method, env_config)
    return (
        config.training(
            train_batch_size_per_learner=args.batch, minibatch_size=args.minibatch,
            num_epochs=args.epochs, lr=args.lr, entropy_coeff=args.entropy,
        )
        .env_runners(
            num_env_runners=args.env_runners, num_envs_per_env_runner=args.envs_per_runner,
            num_cpus_per_env_runner=0.5,
            rollout_fragment_length="auto",
        )
        .debugging(seed=seed)
    )


def _row(method: str, result: dict[str, Any], n_agents: int) -> tuple[float, ...]:
    """(env_steps, return, solved, completed, mi_value) of one iteration's result."""
    runners = result.get("env_runners", {})  # empty when a sample timed out
    if method == "anchor":
        return (runners.get("num_env_steps_sampled_lifetime", 0),
                runners.get("episode_return_mean", NAN), NAN, NAN, NAN)
    return (
        runners.get("num_base_env_steps_lifetime", 0),
        runners.get("team_return", NAN) * n_agents,
        runners.get("solved", NAN),
        runners.get("tasks_completed_frac", NAN),
        result.get("learners", {}).get("allocator", {}).get("mi_value", NAN),
    )


def train(method: str, seed: int, env_config: dict[str, Any], args: argparse.Namespace) -> Path:
    """One run; returns the path of its CSV."""
    import torch

    from envs.lbf import parallel_env
    from rllib_alma_mi.rllib.learner import learner_threads

    n_agents = parallel_env(**env_config).n_agents
    config = build(method, seed, env_config, args)
    # The local learner's torch threads as AlmaPPO's learner sets them for every method: with
    # torch's default (one per core) the anchor's tiny MLP updated ~4x slower on 2 busy cores.
    torch.set_num_threads(learner_threads(config))
    algo = config.build_algo()
    path = args.out / f"{method}_s{seed}.csv"
    start, steps, iteration = time.perf_counter(), 0, 0
    try:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            while steps < args.budget:
                result = algo.train()
                iteration += 1
                row = _row(method, result, n_agents)
                steps = row[0]
                writer.writerow([iteration, round(time.perf_counter() - start, 1), *row])
                f.flush()
                print(f"{method} s{seed} iter {iteration}: env steps {steps}, "
                      f"return {row[1]:.3f}", flush=True)
    finally:
        algo.stop()
    return path


def _env_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env-arg {text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Foraging-8x8-2p-2f-coop-v3")
    parser.add_argument("--env-arg", type=_env_arg, action="append", default=[],
                        help="a ForagingEnv argument overriding the id's, e.g. max_num_food=5")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--batch", type=int, default=4000, help="train_batch_size_per_learner")
    parser.add_argument("--minibatch", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--entropy", type=float, default=0.01)
    parser.add_argument("--env-runners", type=int, default=2)
    parser.add_argument("--envs-per-runner", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/lbf"))
    args = parser.parse_args()
    env_config = {"env_id": args.env_id, **dict(args.env_arg)}
    from envs.lbf import parallel_env

    parallel_env(**env_config).close()  # a bad task fails here, before Ray starts
    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for method in args.methods:
            for seed in args.seeds:
                print("wrote", train(method, seed, env_config, args), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
