"""The marl-eval JSON export: layout, round trip, score matrices and layout checks."""

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rllib_alma_mi.app.marl_eval import (
    ABSOLUTE,
    absolute_scores,
    layout_from_records,
    load_marl_eval,
    records_from_layout,
    step_counts,
    step_scores,
    to_marl_eval,
    validate_layout,
)


def make_records(
    tasks=("3a_4b", "4a_5b"), algorithms=("ALMA", "ALMA+MI"), runs=3, steps=4, episodes=5, seed=0
):
    """A complete experiment: every run logs ``steps`` evaluations and its absolute metrics."""
    rng = np.random.default_rng(seed)
    records = []
    for task in tasks:
        for algorithm in algorithms:
            for run in range(runs):
                for k in range(steps):
                    records.append(
                        {
                            "env": "SaveTheCity",
                            "task": task,
                            "algorithm": algorithm,
                            "run": f"seed_{run}",
                            "step": k,
                            "step_count": 1000 * (k + 1),
                            "metrics": {
                                "return": rng.normal(size=episodes).tolist(),
                                "win_rate": [float(rng.random())],
                            },
                        }
                    )
                records.append(
                    {
                        "env": "SaveTheCity",
                        "task": task,
                        "algorithm": algorithm,
                        "run": f"seed_{run}",
                        "step": ABSOLUTE,
                        "step_count": None,
                        "metrics": {
                            "return": rng.normal(size=10 * episodes).tolist(),
                            "win_rate": [float(rng.random())],
                        },
                    }
                )
    return records


def test_written_file_has_the_marl_eval_layout(tmp_path):
    path = to_marl_eval(
        make_records(runs=2, steps=2, episodes=3), tmp_path / "out" / "metrics.json"
    )
    raw = json.loads(path.read_text())
    assert list(raw) == ["SaveTheCity"]
    assert list(raw["SaveTheCity"]) == ["3a_4b", "4a_5b"]
    assert list(raw["SaveTheCity"]["3a_4b"]) == ["ALMA", "ALMA+MI"]
    run = raw["SaveTheCity"]["3a_4b"]["ALMA"]["seed_0"]
    assert list(run) == ["step_0", "step_1", ABSOLUTE]
    assert run["step_1"]["step_count"] == 2000 and isinstance(run["step_1"]["step_count"], int)
    assert set(run["step_1"]) == {"step_count", "return", "win_rate"}
    assert len(run["step_1"]["return"]) == 3 and len(run["step_1"]["win_rate"]) == 1
    assert set(run[ABSOLUTE]) == {"return", "win_rate"} and len(run[ABSOLUTE]["return"]) == 30


def test_records_survive_the_json_round_trip(tmp_path):
    records = make_records()
    path = to_marl_eval(records, tmp_path / "metrics.json")
    assert records_from_layout(load_marl_eval(path)) == records


@settings(max_examples=25, deadline=None)
@given(
    tasks=st.integers(1, 3),
    algorithms=st.integers(1, 3),
    runs=st.integers(1, 4),
    steps=st.integers(1, 4),
    episodes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    order=st.randoms(use_true_random=False),
)
def test_layout_round_trip_does_not_depend_on_record_order(
    tasks, algorithms, runs, steps, episodes, seed, order
):
    records = make_records(
        tuple(f"task{i}" for i in range(tasks)),
        tuple(f"algo{i}" for i in range(algorithms)),
        runs,
        steps,
        episodes,
        seed,
    )
    shuffled = copy.deepcopy(records)
    order.shuffle(shuffled)
    layout = layout_from_records(shuffled)
    key = lambda r: (r["task"], r["algorithm"], r["run"], str(r["step"]))
    assert sorted(records_from_layout(layout), key=key) == sorted(records, key=key)
    assert json.loads(json.dumps(layout)) == layout


def test_score_matrices_are_episode_means_with_runs_by_tasks(tmp_path):
    records = make_records(runs=3, steps=4)
    data = load_marl_eval(to_marl_eval(records, tmp_path / "m.json"))
    final = absolute_scores(data, "SaveTheCity", "return")
    curves = step_scores(data, "SaveTheCity", "return")
    assert set(final) == {"ALMA", "ALMA+MI"}
    assert final["ALMA"].shape == (3, 2) and curves["ALMA"].shape == (3, 2, 4)
    expected = next(
        r
        for r in records
        if r["task"] == "4a_5b"
        and r["algorithm"] == "ALMA+MI"
        and r["run"] == "seed_2"
        and r["step"] == ABSOLUTE
    )
    assert final["ALMA+MI"][2, 1] == pytest.approx(np.mean(expected["metrics"]["return"]))
    step = next(
        r
        for r in records
        if r["task"] == "3a_4b"
        and r["algorithm"] == "ALMA"
        and r["run"] == "seed_1"
        and r["step"] == 3
    )
    assert curves["ALMA"][1, 0, 3] == pytest.approx(np.mean(step["metrics"]["return"]))
    np.testing.assert_array_equal(step_counts(data, "SaveTheCity"), [1000, 2000, 3000, 4000])
    with pytest.raises(ValueError, match="metric 'reward' not logged"):
        absolute_scores(data, "SaveTheCity", "reward")
    with pytest.raises(ValueError, match="environment 'LBF' not in the data"):
        absolute_scores(data, "LBF", "return")


# ----------------------------------------------------------------------------- layout checks
def layout():
    return layout_from_records(make_records(runs=2, steps=2))


def run_of(data, task="3a_4b", algorithm="ALMA", run="seed_0"):
    return data["SaveTheCity"][task][algorithm][run]


def test_a_run_without_absolute_metrics_is_rejected():
    data = layout()
    del run_of(data)[ABSOLUTE]
    with pytest.raises(ValueError, match=r"\['seed_0'\] has no 'absolute_metrics'"):
        validate_layout(data)
    records = [r for r in make_records(runs=2, steps=2) if r["step"] != ABSOLUTE]
    with pytest.raises(ValueError, match="has no 'absolute_metrics'"):
        layout_from_records(records)


@pytest.mark.parametrize("value", [[], [float("nan")], [1.0, "x"], 3.0, [True]])
def test_bad_metric_values_are_rejected(value):
    data = layout()
    run_of(data)["step_1"]["return"] = value
    with pytest.raises(ValueError, match=r"\['step_1'\]\['return'\]"):
        validate_layout(data)


def test_inconsistent_experiments_are_rejected():
    data = layout()
    del data["SaveTheCity"]["4a_5b"]["ALMA"]["seed_1"]
    with pytest.raises(ValueError, match="runs 1 differ from 2"):
        validate_layout(data)

    data = layout()
    del data["SaveTheCity"]["4a_5b"]["ALMA+MI"]
    with pytest.raises(ValueError, match="algorithms"):
        validate_layout(data)

    data = layout()
    run = run_of(data, algorithm="ALMA+MI")
    run["step_7"] = run.pop("step_1")
    run[ABSOLUTE] = run.pop(ABSOLUTE)
    with pytest.raises(ValueError, match="steps"):
        validate_layout(data)

    data = layout()
    del run_of(data)[ABSOLUTE]["win_rate"]
    with pytest.raises(ValueError, match="same metrics"):
        validate_layout(data)


def test_names_marl_eval_cannot_read_are_rejected():
    data = layout()
    data["SaveTheCity"]["3a_4b"]["A,B"] = data["SaveTheCity"]["3a_4b"].pop("ALMA")
    with pytest.raises(ValueError, match="contains a comma"):
        validate_layout(data)

    data = layout()
    data["SaveTheCity"]["3a_4b"]["alma"] = copy.deepcopy(data["SaveTheCity"]["3a_4b"]["ALMA"])
    with pytest.raises(ValueError, match="lower-cased"):
        validate_layout(data)

    data = layout()
    run_of(data)["final"] = run_of(data).pop("step_1")
    with pytest.raises(ValueError, match="unexpected key 'final'"):
        validate_layout(data)


def test_step_counts_must_increase_and_be_integers():
    data = layout()
    run_of(data)["step_1"]["step_count"] = 1000
    with pytest.raises(ValueError, match="does not increase"):
        validate_layout(data)
    data = layout()
    run_of(data)["step_0"]["step_count"] = 10.5
    with pytest.raises(ValueError, match="non-negative integer"):
        validate_layout(data)
    data = layout()
    run_of(data)[ABSOLUTE]["step_count"] = 1
    with pytest.raises(ValueError, match="metrics only"):
        validate_layout(data)


def test_bad_records_are_rejected():
    good = make_records(runs=1, steps=1)
    with pytest.raises(ValueError, match="records is empty"):
        layout_from_records([])
    with pytest.raises(
        ValueError, match=r"records\[0\]: keys must be exactly.*missing \['metrics'\]"
    ):
        layout_from_records([{k: v for k, v in good[0].items() if k != "metrics"}] + good[1:])
    with pytest.raises(ValueError, match=r"records\[1\] repeats step 0"):
        layout_from_records(good[:1] + good)
    bad = copy.deepcopy(good)
    bad[0]["step"] = -1
    with pytest.raises(ValueError, match=r"records\[0\]\['step'\]"):
        layout_from_records(bad)
    bad = copy.deepcopy(good)
    bad[1]["step_count"] = 5
    with pytest.raises(ValueError, match="step_count None"):
        layout_from_records(bad)
    bad = copy.deepcopy(good)
    bad[0]["metrics"]["step_count"] = [1.0]
    with pytest.raises(ValueError, match="reserved"):
        layout_from_records(bad)


def test_loading_reports_the_file_and_the_problem(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        load_marl_eval(broken)
    data = layout()
    del run_of(data)[ABSOLUTE]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad.json: .*absolute_metrics"):
        load_marl_eval(bad)


def test_invalid_records_leave_the_previous_file_untouched(tmp_path):
    path = to_marl_eval(make_records(runs=1, steps=1), tmp_path / "metrics.json")
    before = path.read_text()
    records = make_records(runs=1, steps=1)
    records[0]["metrics"]["return"] = [float("inf")]
    with pytest.raises(ValueError, match="finite"):
        to_marl_eval(records, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
