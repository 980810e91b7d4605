"""Tables of final scores per seed: IQM and mean over seeds with 95% stratified bootstrap
intervals, the per-seed values, and probabilities of improvement between methods.

Scores come as ``{method: {seed: (score, env_steps)}}`` (env steps may be NaN), one such
mapping per evaluation (e.g. "task" and "zero-shot"). The rows have the columns of
`COLUMNS`, ready for a CSV; `markdown` renders them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rllib_alma_mi.app.statistics import (
    Interval,
    interval_estimates,
    iqm,
    probability_of_improvement,
)

__all__ = ["COLUMNS", "glance", "markdown", "score_rows", "verdict"]

COLUMNS = ("evaluation", "method", "versus", "seeds", "values", "env_steps_min",
           "env_steps_max", "statistic", "point", "low", "high", "verdict")
NAN = float("nan")
SeedScores = Mapping[str, Mapping[int, tuple[float, float]]]


def verdict(interval: Interval) -> str:
    """"improves" / "worse" when a probability of improvement's interval excludes 0.5."""
    if interval.contains(0.5):
        return "not established"
    return "improves" if interval.low > 0.5 else "worse"


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def score_rows(found: SeedScores, evaluation: str, comparisons: Sequence[tuple[str, str]] = (),
               reps: int = 10_000) -> list[dict[str, Any]]:
    """Rows of `COLUMNS` for one evaluation: per method its IQM and mean over seeds (intervals
    need 2+ seeds), then P(X > Y) for each (X, Y) of `comparisons` whose methods both have
    scores (with an interval when each has 2+ seeds)."""
    rows: list[dict[str, Any]] = []
    scores = {m: np.array([v[0] for _, v in sorted(s.items())]) for m, s in found.items()}
    for method, by_seed in found.items():
        steps = [v[1] for v in by_seed.values()]
        base = {"evaluation": evaluation, "method": method, "versus": "",
                "seeds": " ".join(str(s) for s in sorted(by_seed)),
                "values": " ".join(f"{round(by_seed[s][0], 3):g}" for s in sorted(by_seed)),
                "env_steps_min": min(steps), "env_steps_max": max(steps), "verdict": ""}
        x = scores[method]
        if len(x) >= 2:
            est = interval_estimates({method: x}, ("iqm", "mean"), reps=reps, seed=0)[method]
            values = {k: (i.point, i.low, i.high) for k, i in est.items()}
        else:
            values = {"iqm": (iqm(x), NAN, NAN), "mean": (float(x.mean()), NAN, NAN)}
        for name, (point, low, high) in values.items():
            rows.append({**base, "statistic": name, "point": point, "low": low, "high": high})
    for first, second in comparisons:
        if first not in scores or second not in scores:
            continue
        x, y = scores[first], scores[second]
        row = {"evaluation": evaluation, "method": first, "versus": second,
               "seeds": f"{len(x)} vs {len(y)}", "values": "", "env_steps_min": NAN,
               "env_steps_max": NAN, "statistic": "p_improvement"}
        if len(x) >= 2 and len(y) >= 2:
            p = probability_of_improvement(x, y, reps=reps, seed=0)
            row.update(point=p.point, low=p.low, high=p.high, verdict=verdict(p))
        else:
            point = float(np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y]))
            row.update(point=point, low=NAN, high=NAN,
                       verdict="not established (an interval needs 2+ seeds each)")
        rows.append(row)
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """Per evaluation, a table of methods (IQM and mean with intervals, per-seed values) and
    one of probabilities of improvement."""
    lines: list[str] = []
    for evaluation in dict.fromkeys(r["evaluation"] for r in rows):
        part = [r for r in rows if r["evaluation"] == evaluation]
        lines += [f"## {evaluation}", "",
                  "| method | seeds | env steps | IQM [95% CI] | mean [95% CI] | per seed |",
                  "|---|---|---|---|---|---|"]
        for method in dict.fromkeys(r["method"] for r in part if r["statistic"] != "p_improvement"):
            stat = {r["statistic"]: r for r in part
                    if r["method"] == method and r["statistic"] != "p_improvement"}
            r = stat["iqm"]
            low, high = r["env_steps_min"], r["env_steps_max"]
            steps = ("–" if math.isnan(low) else f"{low:.0f}" if low == high
                     else f"{low:.0f}–{high:.0f}")
            cells = [f"{_fmt(s['point'], digits)} [{_fmt(s['low'], digits)}, "
                     f"{_fmt(s['high'], digits)}]" for s in (stat["iqm"], stat["mean"])]
            values = " ".join(_fmt(float(v), digits) for v in r["values"].split())
            lines.append(f"| {method} | {r['seeds']} | {steps} | {cells[0]} | {cells[1]} | "
                         f"{values} |")
        p_rows = [r for r in part if r["statistic"] == "p_improvement"]
        if p_rows:
            lines += ["", "| P(X > Y) | seeds | P [95% CI] | |", "|---|---|---|---|"]
            for r in p_rows:
                lines.append(f"| {r['method']} > {r['versus']} | {r['seeds']} | "
                             f"{_fmt(r['point'])} [{_fmt(r['low'])}, {_fmt(r['high'])}] | "
                             f"{r['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def glance(rows: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """One table over every evaluation: a row per method ("IQM [95% CI] (per-seed values)")
    and a row per comparison ("P [95% CI]" and its verdict), a column per evaluation."""
    evaluations = list(dict.fromkeys(r["evaluation"] for r in rows))
    cells: dict[str, dict[str, str]] = {}
    seeds: dict[str, str] = {}
    for r in rows:
        if r["statistic"] == "iqm":
            label = r["method"]
            values = ", ".join(_fmt(float(v), digits) for v in r["values"].split())
            text = (f"{_fmt(r['point'], digits)} [{_fmt(r['low'], digits)}, "
                    f"{_fmt(r['high'], digits)}] ({values})")
            seeds[label] = str(len(r["seeds"].split()))
        elif r["statistic"] == "p_improvement":
            label = f"P({r['method']} > {r['versus']})"
            text = (f"{_fmt(r['point'], 2)} [{_fmt(r['low'], 2)}, {_fmt(r['high'], 2)}], "
                    f"{r['verdict']}")
            seeds[label] = r["seeds"]
        else:
            continue
        cells.setdefault(label, {})[r["evaluation"]] = text
    lines = ["| | seeds | " + " | ".join(evaluations) + " |",
             "|---|---|" + "---|" * len(evaluations)]
    for label, by_evaluation in cells.items():
        lines.append(f"| {label} | {seeds[label]} | "
                     + " | ".join(by_evaluation.get(e, "–") for e in evaluations) + " |")
    return "\n".join(lines) + "\n"
