"""Evaluation during training on fixed seeds, and the reports built on it: the `evaluation:`
section's validation, the same episodes at every evaluation, metrics under
result["evaluation"], and `summarize --compare / --marl-eval` and `plot` on run directories."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli
from PIL import Image

from rllib_alma_mi.app.building import build_config
from rllib_alma_mi.app.experiment import validate
from rllib_alma_mi.app.marl_eval import absolute_scores, load_marl_eval, step_scores
from rllib_alma_mi.app.overrides import load_experiment
from rllib_alma_mi.app.plotting import find_trials, select_source
from rllib_alma_mi.app.reports import compare, marl_eval_records, summarize
from rllib_alma_mi.app.schema import ConfigError
from rllib_alma_mi.registry import make_env
from rllib_alma_mi.rllib.env_runner import AlmaEnvRunner
from rllib_alma_mi.settings import EVALUATION_FIRST_SEED, EvaluationSettings

TINY = {
    "name": "tiny",
    "env": "save_the_city",
    "env_config": {"scenario": "2-5a_2-5b", "max_cycles": 30},
    "alma": {"embed_dim": 16, "imitation_steps": 1000},
    "mutual_info": {"mi_embed_dim": 16},
    "training": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1},
    "env_runners": {"num_env_runners": 0, "num_envs_per_env_runner": 2},
    "evaluation": {"interval": 1, "episodes": 4},
    "stop": {"iterations": 2},
}
METRICS = ("solved", "tasks_completed_frac", "team_return")


def error_of(tmp_path: Path, evaluation) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**TINY, "evaluation": evaluation}))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return str(info.value)


# ----------------------------------------------------------------------------------- schema
@pytest.mark.parametrize(
    "evaluation, expected",
    [
        ({"intervall": 2}, "evaluation.intervall: unknown key; did you mean 'interval'?"),
        ({"episodes": 0}, "evaluation: episodes=0 is out of range"),
        ({"greedy": "yes"}, "evaluation: greedy='yes' must be a bool"),
        ({"episodes": 3, "seeds": [1, 2]}, "seeds has 2 entries but episodes=3"),
        ({"episodes": 2, "seeds": [1, -2]}, "seeds[1]=-2 is out of range"),
        ({"seeds": 5}, "seeds=5 must be a non-empty list"),
        (7, "evaluation: must be a mapping"),
    ],
)
def test_evaluation_section_errors_name_the_key_and_the_fix(tmp_path, evaluation, expected):
    message = error_of(tmp_path, evaluation)
    assert expected in message and "exp.yaml" in message and "\n" not in message


def test_evaluation_section_reaches_rllibs_evaluation_settings(tmp_path):
    spec = load_experiment(None)  # the default config evaluates
    config = build_config(spec)
    assert (config.evaluation_interval, config.evaluation_duration) == (10, 10)
    assert config.evaluation_duration_unit == "episodes"
    assert config.evaluation_config == {"explore": False, "num_envs_per_env_runner": 1}
    assert config.eval_episode_seeds == [EVALUATION_FIRST_SEED + i for i in range(10)]
    off = load_experiment(None, ["evaluation=null"])
    assert off.evaluation is None and build_config(off).evaluation_interval is None
    sampled = build_config(validate({**TINY, "evaluation": {"greedy": False, "episodes": 2,
                                                            "seeds": [7, 3]}}, "t"))
    assert sampled.evaluation_config["explore"] is True and sampled.eval_episode_seeds == [7, 3]
    # survives the round trip through a Tune param space (config dict -> config)
    again = type(sampled)().update_from_dict(sampled.to_dict())
    assert again.eval_episode_seeds == [7, 3] and again.evaluation_interval == 10


# ----------------------------------------------------------------------------------- fixed seeds
def _first_entities(episode) -> np.ndarray:
    return np.asarray(episode.get_observations(0)["allocator"]["entities"])


def test_every_evaluation_plays_the_episodes_of_its_seed_list(ray_session):
    seeds = [11, 5, 11, 40]
    config = build_config(validate({**TINY, "evaluation": {"episodes": 4, "seeds": seeds}}, "t"))
    config.validate()
    runner = AlmaEnvRunner(config=config.get_evaluation_config_object())
    first = runner.sample(num_episodes=4)
    # other weights: the policy changes, the episodes do not
    state = runner.module.get_state()
    for module_state in state.values():
        for key, value in module_state.items():
            module_state[key] = value + 0.5 * np.random.default_rng(0).normal(size=value.shape)
    runner.module.set_state(state)
    second = runner.sample(num_episodes=4)
    assert len(first) == len(second) == 4
    env = make_env(config.env, config.env_config)
    for seed, a, b in zip(seeds, first, second, strict=True):
        expected, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(_first_entities(a), expected["allocator"]["entities"])
        np.testing.assert_array_equal(_first_entities(b), expected["allocator"]["entities"])
        assert a.is_done and b.is_done
    assert not np.array_equal(_first_entities(first[0]), _first_entities(first[1]))


def test_remote_runners_split_the_seed_list_as_rllib_splits_the_episodes():
    class Config:
        in_evaluation = True
        eval_episode_seeds = list(range(100, 107))
        evaluation_num_env_runners = 3

    runner = AlmaEnvRunner.__new__(AlmaEnvRunner)
    runner.config = Config()
    slices = []
    for index in (1, 2, 3):  # RLlib: 7 // 3 each, one more for the first 7 % 3
        runner.worker_index = index
        slices.append(runner.episode_seeds(7 // 3 + (index <= 7 % 3)))
    assert slices == [[100, 101, 102], [103, 104], [105, 106]]
    Config.in_evaluation = False
    assert runner.episode_seeds(3) is None


def test_tiny_run_reports_evaluation_metrics_and_repeats_them_exactly(ray_session):
    algo = build_config(validate(TINY, "tiny")).build_algo()
    try:
        for _ in range(2):
            result = algo.train()
            runners = result["evaluation"]["env_runners"]
            assert runners["num_episodes"] == 4
            for key in METRICS:
                assert np.isfinite(runners[key])
            assert 0.0 <= runners["tasks_completed_frac"] <= 1.0
        again = [algo.evaluate()["env_runners"] for _ in range(2)]
    finally:
        algo.stop()
    for key in (*METRICS, "episode_return_mean", "episode_len_mean"):
        assert again[0][key] == again[1][key], key


# ----------------------------------------------------------------------------------- reports
def write_trial(path: Path, params: dict, solved_eval: list, interval: int = 2,
                iterations: int = 6) -> None:
    """A trial dir: `iterations` rows, evaluation every `interval` (RLlib repeats the last
    evaluation in between), training metrics that differ from the evaluation's."""
    path.mkdir(parents=True)
    (path / "params.json").write_text(json.dumps({**params, "evaluation_interval": interval}))
    rows, last = [], None
    for it in range(1, iterations + 1):
        if it % interval == 0:
            last = solved_eval[it // interval - 1]
        row = {"training_iteration": it, "time_total_s": 10.0 * it,
               "env_runners/num_base_env_steps_lifetime": 100 * it,
               "env_runners/solved": 0.0, "env_runners/team_return": -50.0}
        if last is not None:
            row.update({"evaluation/env_runners/solved": last,
                        "evaluation/env_runners/team_return": 10 * last,
                        "evaluation/env_runners/num_base_env_steps_lifetime": 9})
        rows.append(row)
    pd.DataFrame(rows).to_csv(path / "progress.csv", index=False)


@pytest.fixture
def runs(tmp_path) -> Path:
    base = {"env": "save_the_city", "env_config": {"scenario": "2a_3b"}}
    for seed, final in enumerate([0.6, 0.7, 0.8]):
        write_trial(tmp_path / f"a{seed}", {**base, "mi_weight": 0.01, "seed": seed},
                    [0.1, 0.3, final])
    for seed, final in enumerate([0.1, 0.2, 0.3]):
        write_trial(tmp_path / f"b{seed}", {**base, "mi_weight": 0.001, "seed": seed},
                    [0.1, 0.1, final])
    return tmp_path


def test_evaluation_rows_are_the_iterations_that_evaluated(runs):
    trials, source, _ = select_source(find_trials([runs]))
    assert source == "evaluation"
    (a0,) = [t for t in trials if t.path.name == "a0"]
    assert a0.table["training_iteration"].tolist() == [2, 4, 6]
    assert a0.table["env_runners/solved"].tolist() == [0.1, 0.3, 0.6]
    assert a0.table["env_runners/num_base_env_steps_lifetime"].tolist() == [200, 400, 600]


def test_summarize_gives_iqm_with_bootstrap_intervals_from_the_last_evaluation(runs):
    table = summarize([runs], reps=1000).set_index("config")
    a = table.loc["mi_weight=0.01"]
    assert a["seeds"] == 3 and table.attrs["source"] == "evaluation"
    assert a["solved_iqm"] == pytest.approx(70.0) and a["solved_mean"] == pytest.approx(70.0)
    assert 60.0 <= a["solved_iqm_low"] <= 70.0 <= a["solved_iqm_high"] <= 80.0
    assert a["return_mean"] == pytest.approx(7.0)


def test_compare_gives_the_probability_of_improvement(runs, capsys):
    found, note = compare([runs], "mi_weight=0.01", "mi_weight=0.001", reps=1000)
    assert "evaluation" in note
    solved = found["solved"]
    assert solved.point == pytest.approx(1.0) and not solved.contains(0.5)
    assert found["tasks_completed"] is None  # not logged by these runs
    code, out, err = run_cli(capsys, "summarize", str(runs), "--compare", "mi_weight=0.01",
                             "mi_weight=0.001")
    assert code == 0, err[-3000:]
    assert "P(mi_weight=0.01 > mi_weight=0.001) on solved: 1.00 [1.00, 1.00]" in out
    assert "established: the interval excludes 0.5" in out
    code, _, err = run_cli(capsys, "summarize", str(runs), "--compare", "mi_weight=0.1",
                           "mi_weight=0.001")
    assert code == 2 and "did you mean 'mi_weight=0.01'?" in err


def test_marl_eval_export_loads_back_with_every_evaluation(runs, tmp_path, capsys):
    out = tmp_path / "export" / "metrics.json"
    code, _, err = run_cli(capsys, "summarize", str(runs), "--marl-eval", str(out))
    assert code == 0, err[-3000:]
    data = load_marl_eval(out)
    assert list(data) == ["save_the_city"] and list(data["save_the_city"]) == ["2a_3b"]
    algorithms = data["save_the_city"]["2a_3b"]
    assert sorted(algorithms) == ["mi_weight=0.001", "mi_weight=0.01"]
    run = algorithms["mi_weight=0.01"]["seed_2"]
    assert list(run) == ["step_0", "step_1", "step_2", "absolute_metrics"]
    assert run["step_1"] == {"step_count": 400, "return": [3.0], "solved": [0.3]}
    assert run["absolute_metrics"] == {"return": [8.0], "solved": [0.8]}
    finals = absolute_scores(data, "save_the_city", "solved")
    np.testing.assert_allclose(finals["mi_weight=0.01"][:, 0], [0.6, 0.7, 0.8])
    assert step_scores(data, "save_the_city", "solved")["mi_weight=0.001"].shape == (3, 1, 3)
    records, _ = marl_eval_records([runs])
    assert len(records) == 6 * 4


def test_plot_writes_the_iqm_curves_and_the_performance_profile(runs, tmp_path, capsys):
    png = tmp_path / "fig" / "solved.png"
    code, out, err = run_cli(capsys, "plot", str(runs), "--metric", "solved", "--out", str(png))
    assert code == 0, err[-3000:]
    profile = png.with_name("solved_profile.png")
    for path in (png, profile):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert "last IQM solved 0.7" in out and f"wrote {profile}" in out
    code, out, _ = run_cli(capsys, "plot", str(runs), "--metric", "solved", "--stat", "t",
                           "--out", str(tmp_path / "t.png"))
    assert code == 0 and "last mean solved 0.7" in out


def test_runs_without_evaluation_data_fall_back_to_training_and_say_so(tmp_path, capsys):
    path = tmp_path / "old"
    path.mkdir()
    (path / "params.json").write_text(json.dumps({"env": "save_the_city", "seed": 0}))
    pd.DataFrame({"training_iteration": [1, 2], "time_total_s": [1.0, 2.0],
                  "env_runners/num_base_env_steps_lifetime": [100, 200],
                  "env_runners/solved": [0.25, 0.75]}).to_csv(path / "progress.csv", index=False)
    code, out, err = run_cli(capsys, "summarize", str(tmp_path), "--window", "1")
    assert code == 0, err[-3000:]
    assert "no evaluation data" in out and "75.0 (1 seed)" in out
    code, _, err = run_cli(capsys, "summarize", str(tmp_path), "--source", "evaluation")
    assert code == 2 and "no evaluation data" in err


def test_evaluation_settings_seeds():
    assert EvaluationSettings(episodes=3).episode_seeds() == [
        EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + 1, EVALUATION_FIRST_SEED + 2]
    assert EvaluationSettings(episodes=2, seeds=[4, 4]).to_dict()["seeds"] == [4, 4]
