"""Where one training iteration of AlmaPPO goes: the learner's update and an env runner's
sampling, each under cProfile.

    python benchmarks/train_profile.py [--top 25] [--scenario 2-5a_2-5b] [--no-mi]

After two warm-up iterations at the default settings (ALMA + MI unless `--no-mi`), profiles
one `learner_group.update` in this process (the local learner) and one `sample()` call inside
the first remote env runner (its share of a batch), and prints for each the wall time and the
functions with the most own time (torch operators appear as `{built-in method ...}`) and the
most cumulative time, then a table of where the time goes: each part's cumulative time (by
the functions that do it, split by caller where one function serves two parts) and its share
of the profiled wall time; "the rest" is what no part claims.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import ray

from rllib_alma_mi import AlmaPPOConfig

# (file suffix, function) of what does each part; with a third entry, only the time spent
# in calls from that (file suffix, function). The parts do not nest in one another.
Where = tuple  # (file, function) or (file, function, (caller file, caller function))
LEARNER_PARTS: dict[str, list[Where]] = {
    "backward pass": [("torch/autograd/__init__.py", "backward")],
    "forward, worker policy (encoder, logits, MI inputs)": [
        ("rllib/worker_module.py", "_forward_train")],
    "forward, worker value encoder": [
        ("rllib/worker_module.py", "compute_values",
         ("ppo/torch/ppo_torch_learner.py", "compute_loss_for_module"))],
    "forward, allocator (encoder, teacher-forced pointer, MI inputs)": [
        ("rllib/allocator_module.py", "_forward_train")],
    "forward, allocator value encoder": [
        ("rllib/allocator_module.py", "compute_values",
         ("ppo/torch/ppo_torch_learner.py", "compute_loss_for_module"))],
    "PPO's loss terms (surrogate, value error, entropy) and imitation": [
        ("rllib_alma_mi/rllib/learner.py", "compute_loss_for_module")],
    "MI term (MINE bound on the minibatch)": [("losses/mutual_info.py", "__call__")],
    "Adam (fused)": [("torch/optim/adam.py", "step")],
    "learner connector (episodes to batch, GAE with its value pass)": [
        ("connectors/connector_pipeline_v2.py", "__call__")],
}
# Parts that run inside another part: their time is taken out of it.
INSIDE = {
    "forward, worker value encoder": "PPO's loss terms (surrogate, value error, entropy) and "
                                     "imitation",
    "forward, allocator value encoder": "PPO's loss terms (surrogate, value error, entropy) and "
                                        "imitation",
    "MI term (MINE bound on the minibatch)": "PPO's loss terms (surrogate, value error, "
                                             "entropy) and imitation",
}
SAMPLER_PARTS: dict[str, list[Where]] = {
    "RLlib's connector pipelines (env-to-module, module-to-env)": [
        ("connectors/connector_pipeline_v2.py", "__call__")],
    "acting: allocator (autoregressive pointer)": [("rllib/allocator_module.py", "_act")],
    "acting: workers": [("rllib/worker_module.py", "_forward")],
    "environment: the base env + hierarchy": [("rllib_alma_mi/hierarchy.py", "step"),
                                              ("rllib_alma_mi/hierarchy.py", "reset")],
    "RLlib's episode bookkeeping": [("env/multi_agent_episode.py", "add_env_step"),
                                    ("env/multi_agent_episode.py", "add_env_reset")],
}


def _seconds(stats: pstats.Stats, where: Where) -> float:
    file, name, *caller = where
    total = 0.0
    for (path, _, func), (_, _, _, cumulative, callers) in stats.stats.items():
        if func != name or not path.endswith(file):
            continue
        if not caller:
            total += cumulative
            continue
        ((c_file, c_name),) = caller
        for (c_path, _, c_func), entry in callers.items():
            if c_func == c_name and c_path.endswith(c_file):
                total += entry[3]  # cumulative time of the calls from this caller
    return total


def _parts(stats: pstats.Stats, parts: dict[str, list[Where]], wall: float) -> str:
    rows = {label: sum(_seconds(stats, w) for w in where) for label, where in parts.items()}
    for inner, outer in INSIDE.items():
        if inner in rows and outer in rows:
            rows[outer] -= rows[inner]
    rows["the rest"] = max(0.0, wall - sum(rows.values()))
    width = max(len(label) for label in rows)
    lines = [f"{'part':<{width}}  seconds  share"]
    lines += [f"{label:<{width}}  {sec:7.2f}  {sec / wall:5.0%}" for label, sec in rows.items()]
    return "\n".join(lines)


def _report(profile: cProfile.Profile, title: str, wall: float, top: int,
            parts: dict[str, list[Where]]) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    print(f"\n===== {title}: {wall:.2f} s wall =====", file=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"----- {title}: where the time goes -----", file=out)
    print(_parts(stats, parts, wall), file=out)
    return out.getvalue()


def _profile_sample(runner, top: int) -> str:
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    episodes = runner.sample()
    profile.disable()
    wall = time.perf_counter() - start
    steps = sum(e.env_steps() for e in episodes)
    return _report(profile, f"env runner sample() ({steps} RLlib env steps)", wall, top,
                   SAMPLER_PARTS)


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
        .alma(alloc_interval=5)  # as when the README's shares were measured
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
        print(_report(profile, "learner update (local learner)", wall[0], args.top,
                      LEARNER_PARTS))
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
