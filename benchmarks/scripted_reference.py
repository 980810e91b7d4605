"""A scripted reference on SaveTheCity: ALMA's heuristic allocation + greedy scripted workers.

    python benchmarks/scripted_reference.py [--scenario 2-5a_2-5b] [--episodes 200]

Each step the team is re-allocated with `heuristic_allocation`; each agent then acts on its
building if an action helps (firefighter and generalist: extinguish or freeze a burning
building; builder and generalist-beside-builder: build once the fire is out) and otherwise
takes the allowed move that brings it closest to a cell next to the building. No learning:
the numbers tell what a sensible hand-written team achieves, a yardstick for the learned ones.
"""

from __future__ import annotations

import argparse

import numpy as np

from envs.save_the_city import (
    BUILD,
    BUILDER,
    EXTINGUISH,
    F_COMPLETE,
    F_FIRE,
    F_IS_BUILDING,
    F_TYPE,
    F_X,
    F_Y,
    FREEZE,
    GRID_SIZE,
    MOVE_DELTAS,
    SaveTheCityEnv,
    heuristic_allocation,
)

_MOVES = np.array(MOVE_DELTAS)  # (dx, dy) of the move actions 0..8


def scripted_actions(env: SaveTheCityEnv, obs: dict, allocation: np.ndarray) -> dict[str, int]:
    """One action per live agent: work on the allocated building, else walk towards it."""
    state = env.state()
    ents, e2t = state["entities"], state["entity2task"]
    actions = {}
    for agent, o in obs.items():
        i, mask = int(o["agent_index"]), o["action_mask"]
        row = int(e2t[:, allocation[i]].argmax())
        kind = int(ents[i, F_TYPE:F_TYPE + 3].argmax())
        burning = ents[row, F_FIRE] > 0
        work = (EXTINGUISH, FREEZE, BUILD) if burning else (BUILD,)
        useful = [a for a in work if mask[a] and not (kind == BUILDER and a == EXTINGUISH)]
        if useful:
            actions[agent] = useful[0]
            continue
        me = np.rint(ents[i, F_X:F_Y + 1] * (GRID_SIZE - 1))
        goal = np.rint(ents[row, F_X:F_Y + 1] * (GRID_SIZE - 1))
        allowed = np.flatnonzero(mask[: len(_MOVES)])
        gap = np.abs(np.abs(me + _MOVES[allowed] - goal).sum(axis=1) - 1)
        actions[agent] = int(allowed[gap.argmin()]) if len(allowed) else int(mask.argmax())
    return actions


def run(scenario: str, episodes: int) -> dict[str, float]:
    env = SaveTheCityEnv(scenario=scenario)
    completed, solved, returns = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        team_return = 0.0
        while env.agents:
            allocation = heuristic_allocation(env.state(), env.max_agents)
            obs, rewards, _, _, _ = env.step(scripted_actions(env, obs, allocation))
            team_return += next(iter(rewards.values())) if rewards else 0.0
        ents = env.state()["entities"]
        n_buildings = int((ents[:, F_IS_BUILDING] > 0).sum())
        n_completed = int(ents[:, F_COMPLETE].sum())
        completed.append(n_completed / n_buildings)
        solved.append(n_completed == n_buildings)
        returns.append(team_return)
    return {
        "completed": float(np.mean(completed)),
        "solved": float(np.mean(solved)),
        "team_return": float(np.mean(returns)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="2-5a_2-5b")
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    r = run(args.scenario, args.episodes)
    print(f"save_the_city {args.scenario}, {args.episodes} episodes, scripted team: "
          f"buildings completed {100 * r['completed']:.1f}%, solved {100 * r['solved']:.1f}%, "
          f"team return {r['team_return']:.1f}")


if __name__ == "__main__":
    main()
