"""Smoke tests of the benchmark scripts on tiny budgets (they are also the results' commands)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--rounds", "1",
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


# ------------------------------------------------------------------ benchmarks/lbf.py
def _write_eval(path, returns):
    rows = "".join(f"{i},{1_000_000 + i},{r},0.0,0.0\n" for i, r in enumerate(returns))
    path.write_text("episode,seed,return,solved,completed\n" + rows)


def _write_train(path, steps):
    path.write_text("iter,time,env_steps,return,solved,completed,mi_value\n"
                    f"1,1.0,{steps},0.1,nan,nan,nan\n")


def test_lbf_summary_reports_iqm_mean_and_probability_of_improvement(tmp_path):
    import lbf

    # each seed's mean evaluation return: alma_mi 0.1 0.2 0.3 0.4, anchor 0 0 0.15 0.5,
    # flat 0 0 0 0 (alma_mi beats every flat seed or ties none), alma one seed only
    means = {"alma_mi": [0.1, 0.2, 0.3, 0.4], "anchor": [0.0, 0.0, 0.15, 0.5],
             "flat": [0.0, 0.0, 0.0, 0.0], "alma": [0.3]}
    for method, values in means.items():
        for seed, mean in enumerate(values):
            _write_eval(tmp_path / f"{method}_s{seed}_eval.csv", [mean - 0.05, mean + 0.05])
            _write_train(tmp_path / f"{method}_s{seed}.csv", 2000 + seed)
    _write_eval(tmp_path / "alma_mi_s0_eval_zeroshot.csv", [0.7])
    _write_eval(tmp_path / "alma_mi_s1_eval_zeroshot.csv", [0.9])
    _write_eval(tmp_path / "alma_mi_s0_eval_zeroshot_sampled.csv", [0.6])
    for seed, mean in enumerate([0.8, 0.9]):  # sampled: alma_mi above the anchor at both seeds
        _write_eval(tmp_path / f"alma_mi_s{seed}_eval_sampled.csv", [mean])
        _write_eval(tmp_path / f"anchor_s{seed}_eval_sampled.csv", [mean - 0.5])

    text = lbf.summarize(tmp_path, reps=500)
    with (tmp_path / "summary.csv").open() as f:
        rows = list(__import__("csv").DictReader(f))
    got = {(r["evaluation"], r["method"], r["versus"], r["statistic"]): r for r in rows}

    iqm = got[("task", "alma_mi", "", "iqm")]
    assert float(iqm["point"]) == np.float64(0.25)  # mean of the middle two, 0.2 and 0.3
    assert float(iqm["low"]) <= 0.25 <= float(iqm["high"])
    assert float(got[("task", "anchor", "", "iqm")]["point"]) == np.float64(0.075)
    assert float(got[("task", "anchor", "", "mean")]["point"]) == np.float64(0.1625)
    assert (iqm["env_steps_min"], iqm["env_steps_max"]) == ("2000.0", "2003.0")
    # P(alma_mi > anchor): 0.1 beats two anchor seeds, 0.2/0.3/0.4 beat three: 11 of 16
    p_anchor = got[("task", "alma_mi", "anchor", "p_improvement")]
    assert float(p_anchor["point"]) == 11 / 16
    assert p_anchor["verdict"] == "not established"  # 4 seeds: the interval holds 0.5
    p_flat = got[("task", "alma_mi", "flat", "p_improvement")]
    assert (float(p_flat["point"]), float(p_flat["low"])) == (1.0, 1.0)
    assert p_flat["verdict"] == "improves"
    # one alma seed (0.3): 0.4 beats it, 0.3 ties (half), no interval with one seed
    p_alma = got[("task", "alma_mi", "alma", "p_improvement")]
    assert float(p_alma["point"]) == 1.5 / 4 and p_alma["verdict"].startswith("not established")
    assert float(got[("task", "alma", "", "mean")]["point"]) == np.float64(0.3)
    zero = got[("zero-shot", "alma_mi", "", "mean")]
    assert float(zero["point"]) == np.float64(0.8) and zero["seeds"] == "0 1"
    assert not any(key[0] == "zero-shot" and key[1] == "anchor" for key in got)
    zero_sampled = got[("zero-shot sampled", "alma_mi", "", "mean")]
    assert float(zero_sampled["point"]) == np.float64(0.6) and zero_sampled["seeds"] == "0"
    sampled = got[("sampled", "alma_mi", "", "mean")]
    assert float(sampled["point"]) == pytest.approx(0.85) and sampled["seeds"] == "0 1"
    assert float(got[("sampled", "anchor", "", "iqm")]["point"]) == pytest.approx(0.35)
    p_sampled = got[("sampled", "alma_mi", "anchor", "p_improvement")]
    assert (float(p_sampled["point"]), p_sampled["verdict"]) == (1.0, "improves")
    assert {key[0] for key in got} == {"task", "sampled", "zero-shot", "zero-shot sampled"}
    assert "## sampled" in text
    assert (tmp_path / "summary.md").read_text() == text
    assert "| alma_mi > anchor | 4 vs 4 | 0.688" in text


def test_lbf_training_curve_reads_milestones_and_the_step_count_that_reaches_the_target(
    tmp_path,
):
    import lbf

    # 10 iterations of 40k steps; returns climb 0.1 per iteration from 0.1 to 1.0, one NaN
    # (an iteration without a finished episode) at iteration 3
    returns = [0.1, 0.2, float("nan"), 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    path = tmp_path / "alma_mi_s4.csv"
    path.write_text(",".join(lbf.COLUMNS) + "\n" + "".join(
        f"{i + 1},{60.0 * (i + 1)},{40_000 * (i + 1)},{r},nan,nan,nan\n"
        for i, r in enumerate(returns)))
    curve = lbf.training_curve(path, "alma_mi", 4)
    assert (curve.env_steps, curve.minutes) == (400_000, 10.0)
    assert curve.last_10 == pytest.approx(np.nanmean(returns))
    # 100k: iterations 1-2 (0.1, 0.2); 200k: 1-5 without the NaN; 500k: iterations 6-10
    assert curve.at_milestones == pytest.approx((0.15, 0.3, 0.8))
    # never 0.95 over 5 iterations: the best window (0.6 .. 1.0) averages 0.8
    assert np.isnan(curve.steps_to_reach)
    path.write_text(path.read_text().replace(",0.6,", ",5.0,"))  # iteration 6: 5.0
    # iterations 2-6 (0.2, NaN, 0.4, 0.5, 5.0) average 1.525: reached at iteration 6
    assert lbf.training_curve(path, "alma_mi", 4).steps_to_reach == 240_000
    assert lbf.training_table(tmp_path).count("\n") == 2  # no evaluation yet: still training
    (tmp_path / "alma_mi_s5.csv").write_text(",".join(lbf.COLUMNS) + "\n")  # just started
    _write_eval(tmp_path / "alma_mi_s4_eval.csv", [1.0])
    table = lbf.training_table(tmp_path)
    assert "| alma_mi | 4 | 400000 | 10.0 |" in table and table.count("\n") == 3


def test_lbf_summary_without_evaluation_files_names_the_missing_files(tmp_path):
    import lbf

    with pytest.raises(ValueError, match="_eval.csv"):
        lbf.summarize(tmp_path)


def test_lbf_anchor_greedy_and_sampled_evaluations_replay_the_same_episodes_per_seed():
    import lbf
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    from envs.lbf import flat_parallel_env

    env_config = {"env_id": "Foraging-8x8-2p-2f-coop-v3", "max_episode_steps": 25}
    env = flat_parallel_env(**env_config)
    torch.manual_seed(0)
    module = PPOConfig().get_default_rl_module_spec()
    module.observation_space = env.observation_space("agent_0")
    module.action_space = env.action_space("agent_0")
    module = module.build()

    class Recording:
        """The module, recording every observation batch it is asked to act on."""

        def __init__(self):
            self.seen = []

        def eval(self):
            module.eval()

        def forward_inference(self, batch):
            self.seen.append(batch["obs"].clone())
            return module.forward_inference(batch)

        def forward_exploration(self, batch):
            self.seen.append(batch["obs"].clone())
            return module.forward_exploration(batch)

        def get_exploration_action_dist_cls(self):
            return module.get_exploration_action_dist_cls()

    first, second = Recording(), Recording()
    episodes = lbf.evaluate_anchor(first, env_config, 3)
    again = lbf.evaluate_anchor(second, env_config, 3)
    assert [e.seed for e in episodes] == lbf.evaluation_seeds(3) == [1_000_000, 1_000_001,
                                                                     1_000_002]
    assert [(e.team_return, e.steps, e.solved) for e in episodes] == [
        (e.team_return, e.steps, e.solved) for e in again]
    assert len(first.seen) == len(second.seen) == sum(e.steps for e in episodes)
    assert all(torch.equal(a, b) for a, b in zip(first.seen, second.seen, strict=True))
    starts = np.cumsum([0] + [e.steps for e in episodes[:-1]])
    assert not torch.equal(first.seen[starts[0]], first.seen[starts[1]])  # seeds differ

    # Sampled: the same episodes again from another state of torch's generator (each episode
    # seeds it with its env seed), and other episodes than the greedy ones.
    sampled, again = Recording(), Recording()
    episodes = lbf.evaluate_anchor(sampled, env_config, 3, sample=True)
    torch.manual_seed(12345)
    assert [(e.team_return, e.steps) for e in lbf.evaluate_anchor(again, env_config, 3, True)
            ] == [(e.team_return, e.steps) for e in episodes]
    assert all(torch.equal(a, b) for a, b in zip(sampled.seen, again.seen, strict=True))
    assert len(sampled.seen) != len(first.seen) or not all(
        torch.equal(a, b) for a, b in zip(sampled.seen, first.seen, strict=True))


@pytest.mark.usefixtures("ray_session")
def test_lbf_runs_write_a_sampled_evaluation_and_a_rerun_fills_in_a_missing_one(
    tmp_path, capsys
):
    """A tiny anchor and alma_mi run each write their greedy and sampled evaluation CSVs on
    the same seeds, and alma_mi its greedy and sampled zero-shot ones (the anchor cannot read
    the changed task); with the sampled CSVs deleted, a rerun writes them again from the
    checkpoints (the same episodes) without training; the summary has sampled rows."""
    import csv

    import lbf
    import torch

    args = lbf.parse_args([
        "--env-arg", "max_episode_steps=25", "--budget", "1", "--batch", "100",
        "--minibatch", "50", "--epochs", "1", "--env-runners", "0", "--envs-per-runner", "1",
        "--eval-episodes", "3", "--out", str(tmp_path), "--zero-shot-env-arg", "players=3"])
    env_config = {"env_id": args.env_id, **dict(args.env_arg)}
    methods = ("anchor", "alma_mi")
    threads = torch.get_num_threads()  # train() sets the learner's thread count
    try:
        for method in methods:
            lbf.train(method, 0, env_config, args)
        paths = {m: lbf.run_paths(tmp_path, m, 0) for m in methods}
        written = {}
        for method, p in paths.items():
            for key in ("eval", "sampled"):
                with p[key].open(newline="") as f:
                    rows = list(csv.DictReader(f))
                assert [int(r["seed"]) for r in rows] == lbf.evaluation_seeds(3), (method, key)
            zero_shot = [p[k].is_file() for k in ("zeroshot", "zeroshot_sampled")]
            assert zero_shot == [method == "alma_mi"] * 2, method
            written[method] = {k: p[k].read_text() for k in ("train", "eval", "sampled")}
            p["sampled"].unlink()
        capsys.readouterr()
        for method in methods:
            lbf.train(method, 0, env_config, args)
        printed = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    assert " iter " not in printed and "resumed" not in printed  # no training on the rerun
    for method, p in paths.items():
        assert f"only the missing {p['sampled'].name}\n" in printed
        assert {k: p[k].read_text() for k in ("train", "eval", "sampled")} == written[method]
    text = lbf.summarize(tmp_path, reps=200)
    assert "## sampled" in text
    with (tmp_path / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows if r["evaluation"] == "sampled"} == set(methods)


@pytest.mark.usefixtures("ray_session")
def test_lbf_benchmark_runs_rware_ids_through_the_rware_adapters(tmp_path):
    """An `rware-...` id trains the anchor on `envs.rware.flat_parallel_env` and ALMA on the
    registered `rware` env; their evaluations have no success measure (NaN) and the summary
    names RWARE."""
    import csv

    import lbf
    import torch

    args = lbf.parse_args([
        "--env-id", "rware-tiny-2ag-v2", "--env-arg", "max_steps=20", "--budget", "1",
        "--batch", "100", "--minibatch", "50", "--epochs", "1", "--env-runners", "0",
        "--envs-per-runner", "1", "--eval-episodes", "2", "--out", str(tmp_path)])
    env_config = {"env_id": args.env_id, **dict(args.env_arg)}
    assert lbf.family(env_config) == "rware"
    assert lbf.family({"env_id": "Foraging-8x8-2p-2f-coop-v3"}) == "lbf"
    lbf.record_task(tmp_path, env_config, {})
    threads = torch.get_num_threads()
    try:
        for method in ("anchor", "alma_mi"):
            lbf.train(method, 0, env_config, args)
    finally:
        torch.set_num_threads(threads)
    for method in ("anchor", "alma_mi"):
        with lbf.run_paths(tmp_path, method, 0)["eval"].open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["seed"]) for r in rows] == lbf.evaluation_seeds(2), method
        assert all(np.isfinite(float(r["return"])) and float(r["return"]) >= 0
                   for r in rows), method
        assert all(r["solved"] == r["completed"] == "nan" for r in rows), method
    text = lbf.summarize(tmp_path, reps=200)
    assert text.startswith("# RWARE:") and "env steps to" not in text  # no bounded return


def test_lbf_resume_cuts_the_training_csv_back_to_the_checkpoint(tmp_path):
    import lbf

    path = tmp_path / "alma_mi_s0.csv"
    rows = [f"{i},{1.5 * i},{400 * i},0.1,0.0,0.5,nan\n" for i in range(1, 8)]
    path.write_text(",".join(lbf.COLUMNS) + "\n" + "".join(rows))
    assert lbf.cut_training_csv(path, 4) == (6.0, 1600.0)
    lines = path.read_text().splitlines()
    assert lines == [",".join(lbf.COLUMNS)] + [r.strip() for r in rows[:4]]
    assert lbf.cut_training_csv(path, 0) == (0.0, 0)
    assert path.read_text().splitlines() == [",".join(lbf.COLUMNS)]
    with pytest.raises(ValueError, match=r"iterations 1\.\.2"):
        lbf.cut_training_csv(path, 2)  # the checkpoint is ahead of the CSV


def test_lbf_rerun_skips_evaluated_runs_fills_in_missing_evaluations_and_resumes(tmp_path):
    import lbf

    paths = lbf.run_paths(tmp_path, "anchor", 3)
    assert lbf.run_state(paths, zero_shot=False) == "fresh"
    paths["train"].write_text("partial")
    assert lbf.run_state(paths, zero_shot=False) == "fresh"  # no checkpoint yet
    paths["checkpoint"].mkdir(parents=True)
    assert lbf.run_state(paths, zero_shot=False) == "fresh"  # a save that never finished
    (paths["checkpoint"] / lbf.CHECKPOINT_MARKER).write_text("{}")
    assert lbf.run_state(paths, zero_shot=False) == "resume"
    _write_eval(paths["eval"], [0.5])
    assert lbf.run_state(paths, zero_shot=False) == "evaluate"  # its sampled CSV is missing
    assert lbf.missing_evaluations(paths, zero_shot=False) == ["sampled"]
    _write_eval(paths["sampled"], [0.5])
    assert lbf.run_state(paths, zero_shot=False) == "done"
    assert lbf.run_state(paths, zero_shot=True) == "evaluate"
    assert lbf.missing_evaluations(paths, zero_shot=True) == ["zeroshot", "zeroshot_sampled"]
    _write_eval(paths["zeroshot"], [0.5])
    assert lbf.missing_evaluations(paths, zero_shot=True) == ["zeroshot_sampled"]
    _write_eval(paths["zeroshot_sampled"], [0.5])
    assert lbf.run_state(paths, zero_shot=True) == "done"


def test_lbf_evaluation_returns_of_both_envs_are_every_agents_reward_summed():
    """The alma/flat evaluation return (hierarchy team_return times the team size) and the
    anchor's (rewards summed over agents of `flat_parallel_env`) are the same quantity."""
    from envs.lbf import flat_parallel_env
    from rllib_alma_mi.registry import HIERARCHY_KEY, make_env

    task = {"env_id": "Foraging-8x8-2p-2f-coop-v3"}
    hierarchy = make_env("lbf", {**task, HIERARCHY_KEY: {"allocation": "heuristic"}})
    flat = flat_parallel_env(**task)
    totals = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        obs, _ = hierarchy.reset(seed=seed)
        team_size, played = len(hierarchy.base.agents), []
        while True:
            actions = {}
            for agent, o in obs.items():  # load when possible, else a random valid action
                valid = np.flatnonzero(o["action_mask"])
                actions[agent] = 5 if 5 in valid else int(rng.choice(valid))
            played.append(actions)
            obs, _, terms, truncs, infos = hierarchy.step(actions)
            if terms["__all__"] or truncs["__all__"]:
                break
        stats = next(i for i in infos.values() if "team_return" in i)
        flat.reset(seed=seed)
        flat_total = sum(sum(flat.step(a)[1].values()) for a in played)
        assert not flat.agents  # the flat env ended with the same actions
        assert stats["team_return"] * team_size == pytest.approx(flat_total)
        totals.append(flat_total)
    assert max(totals) > 0  # some food was collected, so the comparison is not 0 == 0


def test_lbf_rerun_into_an_output_of_another_task_is_refused(tmp_path):
    import lbf
    import yaml

    task = {"env_id": "Foraging-8x8-2p-2f-coop-v3"}
    lbf.record_task(tmp_path, task, {})
    lbf.record_task(tmp_path, task, {"players": 3})  # zero-shot added later: accepted
    lbf.record_task(tmp_path, task, {})  # a rerun without zero-shot keeps the recorded one
    assert yaml.safe_load((tmp_path / "task.yaml").read_text())["zero_shot"] == {"players": 3}
    with pytest.raises(ValueError, match="--env-id/--env-arg"):
        lbf.record_task(tmp_path, {**task, "max_num_food": 5}, {})
    with pytest.raises(ValueError, match="--zero-shot-env-arg"):
        lbf.record_task(tmp_path, task, {"players": 4})


# ------------------------------------------------------------ benchmarks/learning_1m_table.py
def test_learning_1m_table_reads_each_runs_evaluations(tmp_path):
    import json

    import learning_1m_table

    runs = tmp_path / "runs"
    for method, seed, completed in (("flat", 0, 0.7), ("flat", 1, 0.8), ("alma", 0, 0.9),
                                    ("alma", 1, 0.95)):
        trial = runs / f"{method}_s{seed}" / "trial_0"
        trial.mkdir(parents=True)
        (trial / "progress.csv").write_text(
            f"x,env_runners/num_base_env_steps_lifetime\n1,500\n2,{1000 + seed}\n")
        summary = {"summary": {"all": {"tasks_completed_frac": completed, "solved_rate": 0.5}}}
        (trial / "eval.json").write_text(json.dumps(summary))
    (runs / "notes").mkdir()  # not a run: ignored
    text = learning_1m_table.summarize(runs, tmp_path, reps=200)
    assert "| flat | 0 1 | 1000–1001 | 75.0 [70.0, 80.0]" in text
    assert "| alma > flat | 2 vs 2 | 1.000 [1.000, 1.000] | improves |" in text
    assert "zero-shot" not in text  # no zero_shot.json anywhere
    assert (tmp_path / "summary.md").read_text() == text
    assert "teams 2-5: solved %" in (tmp_path / "summary.csv").read_text()

    text = learning_1m_table.summarize(runs, tmp_path, reps=200, versus=[("flat", "alma")])
    assert "| flat > alma | 2 vs 2 | 0.000 [0.000, 0.000] |" in text
    assert "alma > flat" not in text
    with pytest.raises(ValueError, match=r"--versus names \['heuristic'\]"):
        learning_1m_table.summarize(runs, tmp_path, reps=200, versus=[("alma", "heuristic")])
    with pytest.raises(ValueError, match="METHOD>METHOD"):
        learning_1m_table.parse_pair("alma")
    assert "# Representation" not in text  # no probe and no mi_value logged


def test_learning_1m_table_reports_probes_and_the_last_mi_values(tmp_path):
    import json

    import learning_1m_table

    runs = tmp_path / "runs"
    for method, seed, r2, mi in (("alma", 0, 0.1, ""), ("alma", 1, 0.2, ""),
                                 ("alma_mi", 0, 0.3, "0.5"), ("alma_mi", 1, 0.4, "0.7")):
        trial = runs / f"{method}_s{seed}" / "trial_0"
        trial.mkdir(parents=True)
        # 12 iterations: the first two (mi 9.0) fall outside the window of the last 10
        lines = [f"{i},{i * 100},{9.0 if mi and i < 2 else mi}" for i in range(12)]
        (trial / "progress.csv").write_text(
            "x,env_runners/num_base_env_steps_lifetime,learners/allocator/mi_value\n"
            + "\n".join(lines) + "\n")
        summary = {"summary": {"all": {"tasks_completed_frac": 0.5, "solved_rate": 0.5}}}
        (trial / "eval.json").write_text(json.dumps(summary))
        (trial / "probe_allocator.json").write_text(
            json.dumps({"r2_representation": r2, "r2_observation": 0.25}))
    found = learning_1m_table.collect_representation(runs)
    assert found["probe of the allocator: R² from its representation"] == {
        "alma": {0: (0.1, 1100.0), 1: (0.2, 1100.0)},
        "alma_mi": {0: (0.3, 1100.0), 1: (0.4, 1100.0)}}
    mi = found["mi_value of the allocator, last 10 iterations (nats)"]
    assert list(mi) == ["alma_mi"]  # alma logs none
    assert mi["alma_mi"][0] == pytest.approx((0.5, 1100.0))
    assert mi["alma_mi"][1] == pytest.approx((0.7, 1100.0))
    assert not any("worker" in label for label in found)
    text = learning_1m_table.summarize(runs, tmp_path, reps=200, versus=[("alma_mi", "alma")])
    representation = text[text.index("# Representation"):]
    assert "| alma_mi > alma | 2 vs 2 | 1.000 [1.000, 1.000] | improves |" in representation
    assert "R² from its observation" in representation
    assert "R² from its representation" in (tmp_path / "summary.csv").read_text()
