"""Play one random-policy SaveTheCity episode and save one frame as a PNG.

    python examples/render_random.py [out/save_the_city.png] [--scenario 2-5a_2-5b]
        [--sight-range 3] [--seed 0] [--frame-step 20]

The frame is taken after step ``--frame-step`` (or at the end of a shorter episode); lines
join agents to the building ALMA's heuristic allocation gives them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from envs import parallel_env


def run_episode(
    scenario: str, sight_range: int | None, seed: int, frame_step: int
) -> tuple[np.ndarray, dict]:
    """Return (frame (H, W, 3) uint8, episode statistics)."""
    env = parallel_env(scenario=scenario, sight_range=sight_range, render_mode="rgb_array")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    team = len(env.agents)
    episode_return, steps, infos, frame = 0.0, 0, {}, None
    while env.agents:
        actions = {a: int(rng.choice(np.flatnonzero(o["action_mask"]))) for a, o in obs.items()}
        obs, rewards, _, _, infos = env.step(actions)
        episode_return += next(iter(rewards.values()))
        steps += 1
        if steps == frame_step or (frame is None and not env.agents):
            live = env.possible_agents[:team]
            env.set_assignment(dict(zip(live, env.heuristic_allocation().tolist(),
                                        strict=False)))
            frame = env.render()
    env.close()
    last = next(iter(infos.values()))
    stats = {
        "team_size": team,
        "return": episode_return,
        "steps": steps,
        "solved": last["solved"],
        "tasks_completed_frac": last["tasks_completed_frac"],
        "tasks_burned_frac": last["tasks_burned_frac"],
        "frame_step": min(frame_step, steps),
    }
    return frame, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="out/save_the_city.png")
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--sight-range", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-step", type=int, default=20)
    args = parser.parse_args(argv)

    frame, stats = run_episode(args.scenario, args.sight_range, args.seed, args.frame_step)
    path = Path(args.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path)
    for key, value in stats.items():
        print(f"{key:>21}: {value:.3f}" if isinstance(value, float) else f"{key:>21}: {value}")
    print(f"{'frame':>21}: {path}")


if __name__ == "__main__":
    main()
