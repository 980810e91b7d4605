"""Smoke tests of the benchmark scripts on tiny budgets (they are also the results' commands)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scripted_reference  # noqa: E402


def test_scripted_team_completes_far_more_buildings_than_chance():
    scripted = scripted_reference.run("2-5a_2-5b", episodes=20)
    assert 0.3 < scripted["completed"] <= 1.0  # a random policy completes about 1%
    assert 0.0 <= scripted["solved"] <= scripted["completed"]
    assert np.isfinite(scripted["team_return"])


def test_learning_summary_prints_intervals_and_writes_the_plot(tmp_path):
    header = "iter,time,base_steps,team_return,completed,solved,mi\n"
    for seed, level in ((0, 0.2), (1, 0.4)):
        rows = [f"{i},{i},{1000 * i},-10,{level},0.1,nan\n" for i in range(1, 13)]
        (tmp_path / f"alma_mi_s{seed}.csv").write_text(header + "".join(rows))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--summarize",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(row for row in proc.stdout.splitlines() if row.startswith("alma_mi"))
    assert "30.0 ±" in line  # mean of 20% and 40% with a t-interval over the two seeds
    assert (tmp_path / "learning_curves.png").stat().st_size > 0


def test_train_throughput_times_every_method_against_the_stock_anchor():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--rounds", "2",
         "--iters", "1", "--train-batch", "300", "--minibatch-size", "150", "--num-epochs", "1",
         "--scenario", "2a_3b", "--max-cycles", "20", "--embed-dim", "8",
         "--methods", "stock PPO", "ALMA + MI"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line[:12].strip(): line[12:].split() for line in proc.stdout.splitlines()
            if line.startswith(("stock PPO", "ALMA + MI"))}
    assert rows["stock PPO"][1] == "1.00x" and rows["stock PPO"][2] == "(1.00-1.00)"
    assert float(rows["stock PPO"][0]) > 0 and float(rows["ALMA + MI"][0]) > 0
    assert rows["ALMA + MI"][1].endswith("x")
    low, high = (float(v) for v in rows["ALMA + MI"][2].strip("()").split("-"))
    assert 0 < low <= float(rows["ALMA + MI"][1][:-1]) <= high


def test_flat_observations_are_gymnasiums_flattening():
    from gymnasium import spaces

    from envs.flat_observation import FlatObservationEnv
    from envs.save_the_city import parallel_env

    base = parallel_env(scenario="2a_3b")
    env = FlatObservationEnv(parallel_env(scenario="2a_3b"))
    obs, _ = env.reset(seed=4)
    raw, _ = base.reset(seed=4)
    assert obs.keys() == raw.keys()
    for agent, flat in obs.items():
        expected = spaces.flatten(base.observation_space(agent), raw[agent])
        np.testing.assert_array_equal(flat, expected.astype(np.float32))
        assert env.observation_space(agent).contains(flat)


def test_anchor_counts_a_whole_episode_when_it_ends_in_a_later_chunk():
    import train_throughput
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    episode = MultiAgentEpisode()
    episode.add_env_reset(observations={"a": 0})
    for t in range(150):
        if t == 120:  # the first 120 steps went out with an earlier sample() call
            episode = episode.cut()
        done = t == 149
        episode.add_env_step(observations={"a": t}, actions={"a": 0}, rewards={"a": 0.0},
                             terminateds={"a": done, "__all__": done})
    logger = MetricsLogger()
    train_throughput.BaseStepsCallback().on_episode_end(episode=episode, metrics_logger=logger)
    assert episode.env_steps() == 30
    assert logger.peek("num_base_env_steps_lifetime") == 150
