"""SaveTheCity throughput: random-policy env steps per second on one process.

Every step builds all agents' observation dicts (the full contract). "env" times only
``env.step`` and ``env.reset`` calls; "loop" also counts sampling the random policy
(uniform over each agent's valid actions).

    python benchmarks/env_throughput.py [--steps 30000] [--sight-range 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from envs import parallel_env

SCENARIOS = ("2-5a_2-5b", "2-8a_2-8b")
TARGET = 16_000  # env steps/s on "2-5a_2-5b"


def random_actions(rng: np.random.Generator, obs: dict) -> dict[str, int]:
    """Uniform over valid actions: the argmax of uniform noise restricted to the mask."""
    agents = list(obs)
    masks = np.stack([obs[a]["action_mask"] for a in agents])
    choice = (masks * rng.random(masks.shape)).argmax(axis=1)
    return dict(zip(agents, choice.tolist(), strict=True))


def measure(scenario: str, sight_range: int | None, steps: int, seed: int) -> dict:
    env = parallel_env(scenario=scenario, sight_range=sight_range)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(500):  # warm-up
        obs, *_ = env.step(random_actions(rng, obs))
        if not env.agents:
            obs, _ = env.reset()
    env_time, episodes, agent_steps = 0.0, 0, 0
    clock = time.perf_counter
    start = clock()
    for _ in range(steps):
        actions = random_actions(rng, obs)
        agent_steps += len(actions)
        t0 = clock()
        obs, *_ = env.step(actions)
        if not env.agents:
            obs, _ = env.reset()
            episodes += 1
        env_time += clock() - t0
    loop_time = clock() - start
    return {
        "scenario": scenario,
        "sight": "full" if sight_range is None else str(sight_range),
        "env_sps": steps / env_time,
        "us_per_step": 1e6 * env_time / steps,
        "loop_sps": steps / loop_time,
        "team": agent_steps / steps,
        "episodes": episodes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000, help="timed steps per row")
    parser.add_argument(
        "--sight-range",
        type=int,
        default=None,
        help="also measure this sight range (default: full observability only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    args = parser.parse_args(argv)

    sights = [None] if args.sight_range is None else [None, args.sight_range]
    rows = [measure(s, r, args.steps, args.seed) for s in args.scenarios for r in sights]
    header = (
        f"{'scenario':<12} {'sight':>5} {'env steps/s':>12} {'us/step':>8} "
        f"{'loop steps/s':>13} {'mean team':>9} {'episodes':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<12} {row['sight']:>5} {row['env_sps']:>12,.0f} "
            f"{row['us_per_step']:>8.1f} {row['loop_sps']:>13,.0f} {row['team']:>9.2f} "
            f"{row['episodes']:>8d}"
        )
    base = [r for r in rows if r["scenario"] == "2-5a_2-5b" and r["sight"] == "full"]
    if base:
        verdict = "met" if base[0]["env_sps"] >= TARGET else "MISSED"
        print(f"\ntarget {TARGET:,} env steps/s on 2-5a_2-5b: {verdict}")


if __name__ == "__main__":
    main()
