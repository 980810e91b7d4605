"""Learning performance on SaveTheCity: methods x {buildings completed, solved, team return}.

Each run trains the default `AlmaPPOConfig` (only the method's settings changed) until the
wrapped environment has taken `--budget` steps, writing one CSV row per iteration to
`OUT/<method>_s<seed>.csv`. `--summarize` reads those files and prints the table (mean and
95% t-interval over seeds of the last `--window` iterations' metrics) and writes a plot.

    python benchmarks/learning.py --methods alma_mi alma flat heuristic --budget 300000
    python benchmarks/learning.py --summarize --out results/learning
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

METHODS = {
    "alma_mi": {"alma": {"allocation": "learned"}, "mi": True},
    "alma": {"alma": {"allocation": "learned"}, "mi": False},
    "alma_mi_imitation": {
        "alma": {"allocation": "learned", "imitation_steps": 100_000}, "mi": True
    },
    "heuristic": {"alma": {"allocation": "heuristic"}, "mi": False},
    "random": {"alma": {"allocation": "random"}, "mi": False},
    "flat": {"alma": {"allocation": "none"}, "mi": False},
    "alma_mi_sight4": {"alma": {"allocation": "learned"}, "mi": True, "sight_range": 4},
    "alma_sight4": {"alma": {"allocation": "learned"}, "mi": False, "sight_range": 4},
}
COLUMNS = ("iter", "time", "base_steps", "team_return", "completed", "solved", "mi")


def train(
    method: str,
    seed: int,
    budget: int,
    scenario: str,
    out: Path,
    checkpoints: Path | None = None,
    envs_per_runner: int | None = None,
) -> Path:
    from rllib_alma_mi import AlmaPPOConfig

    spec = METHODS[method]
    # Every 5 env steps, the default when results/learning_500k ran (now: reset and resolutions).
    alma = {"alloc_interval": 5, **spec["alma"]}
    env_config = {"scenario": scenario, "sight_range": spec.get("sight_range")}
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=env_config)
        .alma(**alma)
        .mutual_info(use_mutual_info=spec["mi"])
        .debugging(seed=seed)
    )
    if envs_per_runner is not None:
        config.env_runners(num_envs_per_env_runner=envs_per_runner)
    algo = config.build_algo()
    path = out / f"{method}_s{seed}.csv"
    start, steps, iteration = time.perf_counter(), 0, 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        while steps < budget:
            result = algo.train()
            iteration += 1
            runners = result.get("env_runners", {})  # empty when a sample timed out
            steps = runners.get("num_base_env_steps_lifetime", 0)
            writer.writerow(
                [
                    iteration,
                    round(time.perf_counter() - start, 1),
                    steps,
                    runners.get("team_return", float("nan")),
                    runners.get("tasks_completed_frac", float("nan")),
                    runners.get("solved", float("nan")),
                    result["learners"].get("allocator", {}).get("mi_value", float("nan")),
                ]
            )
            f.flush()
    if checkpoints is not None:
        algo.save_to_path(str((checkpoints / f"{method}_s{seed}").resolve()))
    algo.stop()
    return path


def _interval(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
    return mean, float(half)


def summarize(out: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    runs: dict[str, list[pd.DataFrame]] = {}
    for path in sorted(out.glob("*_s*.csv")):
        method = path.stem.rsplit("_s", 1)[0]
        runs.setdefault(method, []).append(pd.read_csv(path))
    print(
        f"{'method':<16} {'seeds':>5} {'env steps':>10} {'completed %':>14} "
        f"{'solved %':>12} {'team return':>14}"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, frames in runs.items():
        last = [f.tail(window) for f in frames]
        cells = []
        for column, scale in (("completed", 100), ("solved", 100), ("team_return", 1)):
            mean, half = _interval([float(x[column].mean()) * scale for x in last])
            cells.append(f"{mean:.1f} ± {half:.1f}" if np.isfinite(half) else f"{mean:.1f}")
        steps = int(np.mean([f["base_steps"].iloc[-1] for f in frames]))
        print(
            f"{method:<16} {len(frames):>5} {steps:>10} {cells[0]:>14} {cells[1]:>12} "
            f"{cells[2]:>14}"
        )
        for ax, column, label in (
            (axes[0], "completed", "buildings completed (fraction)"),
            (axes[1], "team_return", "team return per episode"),
        ):
            for i, frame in enumerate(frames):
                smooth = frame[column].rolling(5, min_periods=1).mean()
                ax.plot(
                    frame["base_steps"],
                    smooth,
                    color=f"C{list(runs).index(method)}",
                    label=method if i == 0 else None,
                )
            ax.set_xlabel("environment steps")
            ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle("SaveTheCity 2-5a_2-5b (rolling mean over 5 iterations)")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    print(f"plot: {out / 'learning_curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["alma_mi", "alma", "heuristic", "flat"],
        choices=sorted(METHODS),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=300_000, help="wrapped-env steps per run")
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--out", type=Path, default=Path("results/learning"))
    parser.add_argument("--summarize", action="store_true", help="only print the table")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="also save each run's final algorithm under DIR/<method>_s<seed>")
    parser.add_argument("--window", type=int, default=10, help="iterations averaged at the end")
    parser.add_argument("--envs-per-runner", type=int, default=None,
                        help="num_envs_per_env_runner (default: the library's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for method in args.methods:
            for seed in args.seeds:
                path = train(method, seed, args.budget, args.scenario, args.out, args.checkpoints,
                             args.envs_per_runner)
                print("wrote", path)
        ray.shutdown()
    summarize(args.out, args.window)


if __name__ == "__main__":
    main()
