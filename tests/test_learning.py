"""Learning: the learned allocator beats random allocation driving the same trained workers.

`LineVisitEnv` (examples/custom_env.py) with more targets than agents: agents that split the
line between them visit every target sooner than agents sent back and forth by a random
allocation. One short training run of the default `AlmaPPOConfig` (without MINE, learning rate
1e-3), then greedy episodes on the same seeds with the learned allocator and with random
allocation: the gap in episode length (an unsolved episode counts its full `max_cycles`) is the
allocator's own contribution.
"""

import numpy as np
import pytest
from custom_env import parallel_env as line_visit

from rllib_alma_mi import AlmaPPOConfig, register_env
from rllib_alma_mi.app.evaluation import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

ENV = {"n_agents": 2, "n_targets": 4, "length": 16, "max_cycles": 14}
# Env steps of the wrapped environment (about 90 s on 2 cores). Solved rates were a fragile
# measure: once the workers are good, random allocation still solves 88% of these episodes, and
# a run at 0.925 learned against 0.880 random failed a 0.05 margin. Episode length keeps
# separating the rules: at 40k the learned allocator took 1.1-2.4 steps fewer than random
# (half-width 0.4) in four runs on seeds 0-2; the slowest of them was level with random at 32k
# and had just left that plateau at 40k, hence the extra 10k.
BUDGET = 50_000
EPISODES = 200


def test_learned_allocation_beats_random_allocation(tmp_path):
    register_env("line_visit_learning", line_visit)
    config = (
        AlmaPPOConfig()
        .environment("line_visit_learning", env_config=ENV)
        .mutual_info(use_mutual_info=False)
        .training(lr=1e-3)
        # Remote runners could not import the example module (and sampled no faster here);
        # 32 envs batch the local runner's per-step work over 4x the rows of the default 8.
        .env_runners(num_env_runners=0, num_envs_per_env_runner=32)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        steps = 0
        while steps < BUDGET:
            steps = algo.train().get("env_runners", {}).get("num_base_env_steps_lifetime", steps)
        algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()
    episodes = {rule: evaluate(tmp_path / "checkpoint", EPISODES, allocation=rule).episodes
                for rule in ("learned", "random")}
    length = {rule: np.array([e.steps for e in eps]) for rule, eps in episodes.items()}
    solved = {rule: np.mean([e.solved for e in eps]) for rule, eps in episodes.items()}
    gap = length["random"] - length["learned"]  # paired: same seeds, same workers
    half_width = 2.0 * gap.std(ddof=1) / np.sqrt(EPISODES)
    message = (f"episode steps: learned {length['learned'].mean():.2f}, random "
               f"{length['random'].mean():.2f} (solved {solved['learned']:.3f} against "
               f"{solved['random']:.3f})")
    assert gap.mean() > 0.25 and gap.mean() > half_width, message
