"""The per-seed score table: IQM and mean over seeds, per-seed values, P(X > Y)."""

import math

import pytest

from rllib_alma_mi.app import seed_table


def _rows(found, comparisons=(), reps=500):
    rows = seed_table.score_rows(found, "task", comparisons, reps)
    return {(r["method"], r["versus"], r["statistic"]): r for r in rows}


def test_iqm_mean_and_per_seed_values_of_each_method():
    found = {"a": {0: (1.0, 10.0), 1: (2.0, 12.0), 2: (3.0, 11.0), 3: (10.0, 10.0)}}
    got = _rows(found)
    assert got[("a", "", "iqm")]["point"] == pytest.approx(2.5)  # the middle two, 2 and 3
    assert got[("a", "", "mean")]["point"] == pytest.approx(4.0)
    low, high = got[("a", "", "mean")]["low"], got[("a", "", "mean")]["high"]
    assert 1.0 <= low <= 4.0 <= high <= 10.0
    assert got[("a", "", "iqm")]["values"] == "1 2 3 10"
    assert (got[("a", "", "iqm")]["env_steps_min"], got[("a", "", "iqm")]["env_steps_max"]) == (
        10.0, 12.0)


def test_one_seed_has_a_point_but_no_interval():
    got = _rows({"a": {4: (0.5, 1.0)}})
    row = got[("a", "", "iqm")]
    assert row["point"] == 0.5 and math.isnan(row["low"]) and math.isnan(row["high"])


def test_probability_of_improvement_counts_wins_and_half_ties():
    found = {"x": {0: (1.0, 0.0), 1: (3.0, 0.0)}, "y": {0: (1.0, 0.0), 1: (2.0, 0.0)}}
    got = _rows(found, [("x", "y"), ("x", "absent")])
    p = got[("x", "y", "p_improvement")]
    # 1 vs (1, 2): a tie and a loss; 3 vs (1, 2): two wins -> (0.5 + 2) / 4
    assert p["point"] == pytest.approx(0.625)
    assert p["verdict"] == "not established" and p["low"] <= 0.625 <= p["high"]
    assert not any(key[1] == "absent" for key in got)  # a missing method is skipped


def test_a_clear_lead_is_reported_as_improves():
    found = {"x": {s: (10.0 + s, 0.0) for s in range(5)}, "y": {s: (s, 0.0) for s in range(5)}}
    assert _rows(found, [("x", "y"), ("y", "x")])[("x", "y", "p_improvement")]["verdict"] == (
        "improves")
    assert _rows(found, [("y", "x")])[("y", "x", "p_improvement")]["verdict"] == "worse"


def test_markdown_shows_each_evaluation_its_methods_and_comparisons():
    found = {"x": {0: (10.0, 5.0), 1: (30.0, 5.0)}, "y": {0: (20.0, 5.0)}}
    text = seed_table.markdown(seed_table.score_rows(found, "zero-shot", [("x", "y")], 200), 1)
    assert "## zero-shot" in text
    assert "| x | 0 1 | 5 | 20.0 [10.0, 30.0] | 20.0 [10.0, 30.0] | 10.0 30.0 |" in text
    assert "| y | 0 | 5 | 20.0 [–, –] | 20.0 [–, –] | 20.0 |" in text
    assert "| x > y | 2 vs 1 | 0.500 [–, –] | not established" in text


def test_glance_puts_every_evaluation_of_a_method_on_one_row():
    rows = seed_table.score_rows({"x": {0: (10.0, 5.0), 1: (30.0, 5.0)}, "y": {0: (20.0, 5.0)}},
                                 "teams 2-5", [("x", "y")], 200)
    rows += seed_table.score_rows({"x": {0: (40.0, 5.0), 1: (50.0, 5.0)}}, "zero-shot", (), 200)
    lines = seed_table.glance(rows).splitlines()
    assert lines[0] == "| | seeds | teams 2-5 | zero-shot |"
    assert "| x | 2 | 20.0 [10.0, 30.0] (10.0, 30.0) | 45.0 [40.0, 50.0] (40.0, 50.0) |" in lines
    assert "| y | 1 | 20.0 [–, –] (20.0) | – |" in lines  # no zero-shot for y
    assert "| P(x > y) | 2 vs 1 | 0.50 [–, –], not established (an interval needs 2+ seeds " \
           "each) | – |" in lines
