"""The `rllib-alma-mi` console script, verb by verb, on tiny budgets.

One trained run (`conftest.trained_run`, shared with the tracker tests) serves train,
evaluate, render and plot; resume and sweep train their own tiny runs. `train` and the run
that `resume` interrupts run the installed script in a subprocess; the other verbs call the
same `main` in this process (`conftest.run_cli`, on the session's Ray), so the suite pays
Ray's and torch's import and Ray's start once.
"""

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import cli_command, run_cli, tiny_experiment
from PIL import Image

from rllib_alma_mi.app.cli import progress_line
from rllib_alma_mi.app.plotting import (
    aggregate,
    find_trials,
    group_trials,
    summarize_runs,
    t_interval,
)

TINY = tiny_experiment()
PROGRESS = re.compile(r"iter (\d+)/(\d+) \| env steps [\d,]+ \| return \S+ \| solved \S+ \| "
                      r"tasks done \S+ \| mi_value \S+ \| \S+ steps/s \| ETA \d+:\d\d:\d\d")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("*/progress.csv"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli")
    (path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def trained(trained_run):
    """(run directory, completed `train` process): 2 iterations, a checkpoint after each
    (`conftest.trained_run`, shared with the tracker tests)."""
    return trained_run


def test_train_prints_progress_and_writes_checkpoints_csv_tensorboard(trained):
    out, proc = trained
    lines = [m.groups() for m in PROGRESS.finditer(proc.stdout)]
    assert lines == [("1", "2"), ("2", "2")], proc.stdout
    (trial,) = trial_dirs(out)
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
        "checkpoint_000000",
        "checkpoint_000001",
    ]
    assert (trial / "checkpoint_000001" / "rllib_checkpoint.json").is_file()
    table = pd.read_csv(trial / "progress.csv")
    assert table["training_iteration"].tolist() == [1, 2]
    for column in ("env_runners/solved", "env_runners/num_base_env_steps_lifetime",
                   "learners/allocator/mi_value"):
        assert column in table.columns
    assert list(trial.glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {out}" in proc.stdout


@pytest.mark.usefixtures("ray_session")
def test_evaluate_on_bigger_teams_and_another_sight_range(trained, workdir, capsys):
    out, _ = trained
    report = workdir / "eval.json"
    code, stdout, stderr = run_cli(
        capsys, "evaluate", "--checkpoint", str(out), "--episodes", "4",
        "--env-config", "scenario=2-8a_2-8b", "--env-config", "sight_range=2",
        "--json", str(report),
    )
    assert code == 0, stderr[-3000:]
    assert "greedy evaluation" in stdout and "solved" in stdout
    result = json.loads(report.read_text())
    assert result["env_config"]["scenario"] == "2-8a_2-8b"
    assert result["env_config"]["sight_range"] == 2
    assert result["training_iteration"] == 2
    assert result["summary"]["all"]["episodes"] == 4
    sizes = {int(n) for n in result["summary"]["by_team_size"]}
    assert sizes and all(2 <= n <= 8 for n in sizes)
    for episode in result["episodes"]:
        assert 0.0 <= episode["tasks_completed_frac"] <= 1.0 and episode["steps"] <= 30


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("module", ["worker", "allocator"])
def test_probe_reads_the_trained_modules_representations(trained, workdir, capsys, module):
    out, _ = trained
    report = workdir / f"probe_{module}.json"
    code, stdout, stderr = run_cli(
        capsys, "probe", "--checkpoint", str(out), "--module", module, "--episodes", "4",
        "--env-config", "sight_range=2", "--json", str(report),
    )
    assert code == 0, stderr[-3000:]
    assert "R² from the" in stdout
    result = json.loads(report.read_text())
    assert result["module"] == module and result["env_config"]["sight_range"] == 2
    assert result["samples_train"] > 0 and result["samples_test"] > 0
    # Both R² are finite and at most 1 (they may be negative on unseen episodes).
    for key in ("r2_representation", "r2_observation"):
        assert np.isfinite(result[key]) and result[key] <= 1.0


def test_probe_needs_four_episodes(trained, capsys):
    out, _ = trained
    code, _, stderr = run_cli(capsys, "probe", "--checkpoint", str(out), "--episodes", "1")
    assert code != 0 and "at least 4" in stderr


@pytest.mark.usefixtures("ray_session")
def test_evaluate_swaps_the_allocation_rule_and_keeps_the_trained_workers(
    trained, workdir, capsys
):
    out, _ = trained
    report = workdir / "eval_random.json"
    code, _, stderr = run_cli(capsys, "evaluate", "--checkpoint", str(out), "--episodes", "3",
                          "--allocation", "random", "--json", str(report))
    assert code == 0, stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["env_config"]["allocation"] == "random"
    # Without the learned allocator no allocation decision is an agent step.
    assert all(episode["allocations"] == 0 for episode in result["episodes"])
    learned = workdir / "eval_learned.json"
    code, _, stderr = run_cli(capsys, "evaluate", "--checkpoint", str(out), "--episodes", "3",
                          "--allocation", "learned", "--json", str(learned))
    assert code == 0, stderr[-3000:]
    assert all(e["allocations"] > 0 for e in json.loads(learned.read_text())["episodes"])


@pytest.mark.usefixtures("ray_session")
def test_sampled_evaluation_replays_each_seeds_episode_and_differs_from_greedy(
    trained, workdir, capsys
):
    from dataclasses import asdict

    import torch

    from rllib_alma_mi.app import evaluation as ev

    out, _ = trained
    report = workdir / "sampled.json"
    code, stdout, stderr = run_cli(capsys, "evaluate", "--checkpoint", str(out), "--episodes",
                                   "3", "--sample", "--json", str(report))
    assert code == 0, stderr[-3000:]
    assert "sampled evaluation" in stdout and "greedy" not in stdout
    sampled = json.loads(report.read_text())
    assert sampled["mode"] == "sampled"

    _, algo = ev.restore(out)
    try:
        env = ev.make_eval_env(algo.config.env, dict(algo.config.env_config))

        class Recording:
            """`actor`, recording the actions it takes."""

            def __init__(self, actor):
                self.actor, self.actions = actor, []

            def act(self, observations):
                chosen = self.actor.act(observations)
                self.actions.append({a: np.asarray(x).tolist() for a, x in chosen.items()})
                return chosen

        def play(actor, seeds):
            """(episode stats, every action taken) of one episode per seed."""
            played = []
            for seed in seeds:
                recording = Recording(actor)
                played.append((ev.run_episode(env, recording, seed), recording.actions))
            return played

        first = play(ev.GreedyActor(algo, env, sample=True), [0, 1, 2])
        # Seeds 1 and 2 again, now first in their run and from another state of torch's
        # generator: the same episodes, so an episode's sampling depends on its own seed only.
        torch.manual_seed(12345)
        again = play(ev.GreedyActor(algo, env, sample=True), [1, 2])
        greedy = play(ev.GreedyActor(algo, env), [0, 1, 2])
    finally:
        algo.stop()
    assert [asdict(stats) for stats, _ in first] == sampled["episodes"]
    assert [actions for _, actions in again] == [actions for _, actions in first[1:]]
    assert all(len(actions) > 10 for _, actions in first)
    assert [actions for _, actions in greedy] != [actions for _, actions in first]


@pytest.mark.usefixtures("ray_session")
def test_render_writes_an_animated_gif(trained, workdir, capsys):
    out, _ = trained
    gif = workdir / "episode.gif"
    code, _, stderr = run_cli(capsys, "render", "--checkpoint", str(out), "--out", str(gif),
                              "--seed", "3")
    assert code == 0, stderr[-3000:]
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames > 1
        assert image.size[0] >= 256


def test_plot_writes_a_png_and_rejects_unknown_metrics(trained, workdir, capsys):
    out, _ = trained
    png = workdir / "solved.png"
    code, _, stderr = run_cli(capsys, "plot", str(out), "--metric", "solved", "--out", str(png))
    assert code == 0, stderr[-3000:]
    with Image.open(png) as image:
        assert image.format == "PNG"
    code, _, stderr = run_cli(capsys, "plot", str(out), "--metric", "sovled", "--out", str(png))
    assert code == 2
    assert "did you mean 'solved'?" in stderr and "Traceback" not in stderr


@pytest.mark.usefixtures("ray_session")
def test_resume_continues_from_the_last_checkpoint(workdir, capsys):
    out = workdir / "resumable"
    proc = subprocess.Popen(
        cli_command("train", "--config", "tiny.yaml", "--stop-iters", "4", "--output", str(out)),
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    # Tune records a checkpoint only after its files are written; the second one on disk means
    # the first is recorded (Tune asks for iteration 2 after processing iteration 1's save).
    while not list(out.glob("*/checkpoint_000001/rllib_checkpoint.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no second checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    assert f"train --resume {out}" in stdout
    (trial,) = trial_dirs(out)
    # the checkpoint the run reports as its last; one per iteration: checkpoint_00000k = k + 1
    (recorded,) = re.findall(r"last checkpoint: \S*/checkpoint_(\d+)", stdout)
    last_iteration = int(recorded) + 1
    assert 1 <= last_iteration < 4

    code, resumed, stderr = run_cli(capsys, "train", "--resume", str(out))
    assert code == 0, stderr[-3000:]
    iterations = [int(m.group(1)) for m in PROGRESS.finditer(resumed)]
    assert iterations[0] == last_iteration + 1 and iterations[-1] == 4
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    seen = [r["training_iteration"] for r in rows]
    assert seen[-1] == 4 and sorted(set(seen)) == [1, 2, 3, 4]
    code, _, stderr = run_cli(capsys, "plot", str(out), "--metric", "return", "--x", "iterations",
                          "--out", str(workdir / "resumed.png"))
    assert code == 0, stderr[-3000:]


@pytest.mark.usefixtures("ray_session")
def test_sweep_runs_one_trial_per_grid_point_and_seed(workdir, capsys):
    out = workdir / "sweep"
    code, _, stderr = run_cli(capsys, "sweep", "--config", str(workdir / "tiny.yaml"), "--grid",
                              "mi_weight=0.0001,0.01", "--seeds", "2", "--stop-iters", "1",
                              "--output", str(out))
    assert code == 0, stderr[-3000:]
    points = set()
    for trial in trial_dirs(out):
        params = json.loads((trial / "params.json").read_text())
        points.add((params["mi_weight"], params["seed"]))
    assert points == {(0.0001, 0), (0.0001, 1), (0.01, 0), (0.01, 1)}
    code, stdout, stderr = run_cli(capsys, "plot", str(out), "--metric", "mi_value", "--x",
                               "iterations", "--out", str(workdir / "sweep.png"))
    assert code == 0, stderr[-3000:]
    assert "mi_weight=0.0001: 2 seeds" in stdout and "mi_weight=0.01: 2 seeds" in stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config", "broken.yaml"], "not valid YAML (line 3"),
        (["--config", "typo.yaml"], "did you mean 'mi_weight'?"),
        (["--config", "tiny.yaml", "--set", "training.gamma=2"], "training.gamma=2 is out of"),
        (["--config", "tiny.yaml", "--set", "mutual_info.mi_measure=XYZ"], "'JSD', 'GAN', 'KL'"),
        (["--config", "tiny.yaml", "--set", "alma.alloc_interval"], "expected key=value"),
    ],
)
def test_bad_input_exits_2_with_one_line(workdir, args, expected, capsys, monkeypatch):
    (workdir / "broken.yaml").write_text("training:\n  lr: [0.1\nstop: {}\n")
    (workdir / "typo.yaml").write_text(yaml.safe_dump({**TINY, "mutual_info": {"mi_wieght": 1}}))
    monkeypatch.chdir(workdir)
    code, _, stderr = run_cli(capsys, "train", *args, "--output", str(workdir / "never"))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], stderr
    assert "Traceback" not in stderr and not (workdir / "never").exists()


def test_unreachable_address_exits_2_with_one_line(workdir):
    """In a process of its own: this test process already has a Ray of its own."""
    proc = run(workdir, "train", "--config", "tiny.yaml", "--address",
               f"127.0.0.1:{_free_port()}", "--output", str(workdir / "never"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Ray head answers there" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "never").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config", "tiny.yaml", "--logger", "wandbb"],
         "--logger wandbb: 'wandbb' is not allowed; choose one of ['wandb', 'mlflow']; "
         "did you mean 'wandb'?"),
        (["--config", "tiny.yaml", "--logger", "mlflow", "--logger", "mlflow"],
         "'mlflow' is listed twice"),
        (["--config", "bad_logger.yaml"],
         "bad_logger.yaml: loggers[1]='tensorboard' is not allowed; choose one of "
         "['wandb', 'mlflow']"),
        (["--config", "tiny.yaml", "--set", "loggers=mlflow"],
         "loggers='mlflow' must be a list of trackers, e.g. [mlflow]"),
    ],
    ids=["cli_typo", "cli_twice", "yaml_unknown", "set_not_a_list"],
)
def test_bad_logger_exits_2_with_one_line_naming_the_allowed_trackers(
    workdir, args, expected, capsys, monkeypatch
):
    (workdir / "bad_logger.yaml").write_text(
        yaml.safe_dump({**TINY, "loggers": ["mlflow", "tensorboard"]})
    )
    monkeypatch.chdir(workdir)
    code, _, stderr = run_cli(capsys, "train", *args, "--output", str(workdir / "never"))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], stderr
    assert not (workdir / "never").exists()


# ----------------------------------------------------------------------------------- in-process
def test_progress_line_shows_the_run_state():
    result = {
        "training_iteration": 3,
        "time_total_s": 30.0,
        "env_runners": {"num_base_env_steps_lifetime": 6000, "episode_return_mean": -1.5,
                        "solved": 0.25, "tasks_completed_frac": 0.5},
        "learners": {"allocator": {"mi_value": 0.123}},
    }
    line = progress_line(result, {"iterations": 10})
    assert line == ("iter 3/10 | env steps 6,000 | return -1.50 | solved 0.25 | tasks done 0.50 "
                    "| mi_value 0.123 | 200 steps/s | ETA 0:01:10")
    line = progress_line({"training_iteration": 1, "time_total_s": 2.0}, {"timesteps": 100})
    assert "solved - | " in line and "mi_value -" in line and "ETA -" in line


def write_trial(path: Path, params: dict, steps: list, solved: list) -> None:
    path.mkdir(parents=True)
    (path / "params.json").write_text(json.dumps(params))
    pd.DataFrame({
        "training_iteration": range(1, len(steps) + 1),
        "env_runners/num_base_env_steps_lifetime": steps,
        "env_runners/solved": solved,
    }).to_csv(path / "progress.csv", index=False)


def test_plot_groups_seeds_by_config_and_interpolates(tmp_path):
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}, "mi_weight": 0.001}
    write_trial(tmp_path / "a0", {**base, "seed": 0}, [100, 200, 300], [0.0, 0.2, 0.4])
    write_trial(tmp_path / "a1", {**base, "seed": 1}, [150, 250, 350], [0.0, 0.4, 0.6])
    write_trial(tmp_path / "b0", {**base, "mi_weight": 0.01, "seed": 0}, [100, 200], [0.1, 0.1])
    groups = group_trials(find_trials([tmp_path]))
    assert sorted(groups) == ["mi_weight=0.001", "mi_weight=0.01"]
    assert len(groups["mi_weight=0.001"]) == 2
    x, mean, half, n = aggregate(
        groups["mi_weight=0.001"], "env_runners/num_base_env_steps_lifetime",
        "env_runners/solved", points=3,
    )
    assert n == 2 and x.tolist() == [150.0, 225.0, 300.0]
    assert mean.tolist() == pytest.approx([0.05, 0.275, 0.45])
    assert (half > 0).any()


def test_runs_with_and_without_the_population_are_labelled_by_it(tmp_path):
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}, "mi_weight": 0.001}
    evolution = {"population_size": 5, "episodes_per_eval": 3}
    write_trial(tmp_path / "plain", {**base, "seed": 0}, [100, 200], [0.1, 0.2])
    write_trial(tmp_path / "ea", {**base, "seed": 0, "evolution_config": evolution},
                [100, 200], [0.1, 0.3])
    assert sorted(group_trials(find_trials([tmp_path]))) == ["evolution=off", "evolution=on"]
    write_trial(tmp_path / "ea3", {**base, "seed": 0, "evolution_config": {
        **evolution, "population_size": 3}}, [100, 200], [0.1, 0.3])
    assert sorted(group_trials(find_trials([tmp_path]))) == [
        "evolution=off, evolution.population_size=-",
        "evolution=on, evolution.population_size=3",
        "evolution=on, evolution.population_size=5",
    ]


def test_runs_differing_in_an_env_runners_setting_are_labelled_by_it(tmp_path):
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}, "mi_weight": 0.001}
    write_trial(tmp_path / "a", {**base, "num_envs_per_env_runner": 4}, [100, 200], [0.1, 0.2])
    write_trial(tmp_path / "b", {**base, "num_envs_per_env_runner": 8}, [100, 200], [0.1, 0.3])
    assert sorted(group_trials(find_trials([tmp_path]))) == [
        "num_envs_per_env_runner=4", "num_envs_per_env_runner=8"
    ]


def test_a_run_from_before_a_setting_existed_groups_with_that_settings_default(tmp_path):
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}, "mi_weight": 0.001}
    write_trial(tmp_path / "old", base, [100, 200], [0.1, 0.2])
    write_trial(tmp_path / "new", {**base, "allocator_credit": "team"}, [100], [0.1])
    write_trial(tmp_path / "other", {**base, "allocator_credit": "task"}, [100], [0.1])
    groups = group_trials(find_trials([tmp_path]))
    assert sorted(groups) == ["allocator_credit=task", "allocator_credit=team"]
    assert sorted(t.path.name for t in groups["allocator_credit=team"]) == ["new", "old"]


def test_t_interval_matches_the_student_t_quantile():
    values = np.array([[1.0], [2.0], [3.0]])
    mean, half = t_interval(values)
    assert mean[0] == 2.0
    assert half[0] == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))
    assert t_interval(values[:1])[1][0] == 0.0


def test_summarize_averages_each_seeds_last_iterations(tmp_path, capsys):
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}, "mi_weight": 0.001}
    write_trial(tmp_path / "a0", {**base, "seed": 0}, [100, 200, 300], [0.0, 0.2, 0.4])
    write_trial(tmp_path / "a1", {**base, "seed": 1}, [100, 200, 300], [0.0, 0.4, 0.6])
    write_trial(tmp_path / "b0", {**base, "mi_weight": 0.01, "seed": 0}, [100, 200], [0.1, 0.3])
    table = summarize_runs([tmp_path], window=2).set_index("config")
    a = table.loc["mi_weight=0.001"]
    assert a["seeds"] == 2 and a["env_steps"] == 300
    assert a["solved"] == pytest.approx(100 * (0.3 + 0.5) / 2)  # percent
    # seeds at 30% and 50%: standard error 10 points, t(0.975, 1) = 12.706
    assert a["solved_ci95"] == pytest.approx(12.706204736 * 10, rel=1e-6)
    assert np.isnan(a["tasks_completed"])  # not logged by these runs
    assert table.loc["mi_weight=0.01", "solved"] == pytest.approx(20.0)
    out = tmp_path / "summary.csv"
    code, stdout, stderr = run_cli(capsys, "summarize", str(tmp_path), "--window", "2",
                               "--csv", str(out))
    assert code == 0, stderr[-3000:]
    assert "mi_weight=0.001" in stdout and out.is_file()
    # evaluate --json files go with the trial whose checkpoint they evaluated
    evaluation = {"mode": "greedy", "checkpoint": str(tmp_path / "a0" / "checkpoint_000001")}
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    (tmp_path / "experiment_state.json").write_text(json.dumps({"checkpoint": "elsewhere"}))
    (tmp_path / "b0" / "zero_shot.json").write_text(
        json.dumps({**evaluation, "checkpoint": str(tmp_path / "b0")})
    )
    probe = {"checkpoint": str(tmp_path / "b0"), "module": "worker", "r2_representation": 0.1}
    (tmp_path / "probe_worker.json").write_text(json.dumps(probe))
    kept = tmp_path.parent / f"{tmp_path.name}_kept"
    code, _, stderr = run_cli(capsys, "summarize", str(tmp_path), "--window", "2",
                          "--export", str(kept))
    assert code == 0, stderr[-3000:]
    assert sorted(p.name for p in kept.iterdir()) == ["a0", "a1", "b0"]
    assert sorted(p.name for p in (kept / "a0").iterdir()) == [
        "eval.json", "params.json", "progress.csv"
    ]
    assert json.loads((kept / "a0" / "eval.json").read_text()) == evaluation
    assert sorted(p.name for p in (kept / "a1").iterdir()) == ["params.json", "progress.csv"]
    assert (kept / "b0" / "zero_shot.json").is_file()
    assert json.loads((kept / "b0" / "probe_worker.json").read_text()) == probe
    copied = summarize_runs([kept], window=2)
    pd.testing.assert_frame_equal(copied, summarize_runs([tmp_path], window=2))
    assert run_cli(capsys, "summarize", str(tmp_path), "--window", "0")[0] != 0
