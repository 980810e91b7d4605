"""Where one training iteration of AlmaPPO goes: the learner's update and an env runner's
sampling, each under cProfile.

    python benchmarks/train_profile.py [--top 25] [--scenario 2-5a_2-5b] [--no-mi]

After two warm-up iterations at the default settings (ALMA + MI unless `--no-mi`), profiles
one `learner_group.update` in this process (the local learner) and one `sample()` call inside
the first remote env runner (its share of a batch), and prints for each the wall time and the
functions with the most own time (torch operators appear as `{built-in method ...}`) and the
most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import ray

from rllib_alma_mi import AlmaPPOConfig


def _report(profile: cProfile.Profile, title: str, wall: float, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    print(f"\n===== {title}: {wall:.2f} s wall =====", file=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _profile_sample(runner, top: int) -> str:
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    episodes = runner.sample()
    profile.disable()
    wall = time.perf_counter() - start
    steps = sum(e.env_steps() for e in episodes)
    return _report(profile, f"env runner sample() ({steps} RLlib env steps)", wall, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--no-mi", action="store_true", help="ALMA without the MI term")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config={"scenario": args.scenario})
        .mutual_info(use_mutual_info=not args.no_mi)
    )
    algo = config.build_algo()
    try:
        algo.train()
        algo.train()
        group, profile, wall = algo.learner_group, cProfile.Profile(), [0.0]
        update = group.update

        def profiled(*a, **k):
            start = time.perf_counter()
            profile.enable()
            try:
                return update(*a, **k)
            finally:
                profile.disable()
                wall[0] += time.perf_counter() - start

        group.update = profiled
        start = time.perf_counter()
        algo.train()
        iteration = time.perf_counter() - start
        print(f"iteration: {iteration:.2f} s, of which the learner's update {wall[0]:.2f} s")
        print(_report(profile, "learner update (local learner)", wall[0], args.top))
        sampled = algo.env_runner_group.foreach_env_runner(
            lambda runner: _profile_sample(runner, args.top),
            remote_worker_ids=[1],
            local_env_runner=False,
        )
        print(sampled[0])
    finally:
        algo.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
