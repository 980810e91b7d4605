"""The SaveTheCity table of results/learning_1m from its runs' evaluations.

Reads every `RUNS/<method>_s<seed>/` that `benchmarks/run_learning_1m.sh` wrote (or that
`rllib-alma-mi summarize --export` copied, with the two JSON files beside its progress.csv):
`eval.json` (greedy, 100 fixed episodes on the training teams) and `zero_shot.json` (the same
on teams of 2-8), and writes `OUT/summary.md` and `OUT/summary.csv` (OUT defaults to RUNS'
parent): per evaluation and method, the IQM and mean over seeds of buildings completed and of
episodes solved (percent) with 95% stratified bootstrap intervals and the per-seed values,
and P(X > Y) for the pairs of `--versus` (default: every method against flat). Runs that
hold probes (`probe_allocator.json`, `probe_worker.json` from `benchmarks/run_probes.sh`) or
log `mi_value` add a section on the representation: the probes' R² (`rllib-alma-mi probe`)
and the final MI estimate, with the same statistics.

    python benchmarks/learning_1m_table.py results/learning_1m/runs
    python benchmarks/learning_1m_table.py results/mi_sight2/runs \
        --versus "alma_mi>alma" "alma_mi_scheme1>alma"   # quoted: > is a redirection
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rllib_alma_mi.app import seed_table

EVALUATIONS = {"eval.json": "teams 2-5", "zero_shot.json": "zero-shot, teams 2-8"}
METRICS = {"completed": "tasks_completed_frac", "solved": "solved_rate"}
REFERENCE = "flat"
RUN_NAME = re.compile(r"(?P<method>.+)_s(?P<seed>\d+)")
STEPS_COLUMN = "env_runners/num_base_env_steps_lifetime"
PROBES = {"probe_allocator.json": "allocator", "probe_worker.json": "worker"}
PROBE_METRICS = {"r2_representation": "R² from its representation",
                 "r2_observation": "R² from its observation"}
MI_WINDOW = 10
MI_COLUMNS = {module: f"learners/{module}/mi_value" for module in PROBES.values()}
Found = dict[str, dict[str, dict[int, tuple[float, float]]]]


def _find(run: Path, name: str) -> Path | None:
    found = sorted(run.rglob(name))
    if len(found) > 1:
        raise ValueError(f"{run}: more than one {name} ({[str(p) for p in found]})")
    return found[0] if found else None


def _progress(run: Path) -> list[dict[str, str]]:
    progress = _find(run, "progress.csv")
    if progress is None:
        return []
    with progress.open(newline="") as f:
        return list(csv.DictReader(f))


def _final_env_steps(rows: list[dict[str, str]]) -> float:
    return float(rows[-1][STEPS_COLUMN]) if rows and rows[-1].get(STEPS_COLUMN) else float("nan")


def _runs(runs: Path) -> Iterator[tuple[str, int, Path, list[dict[str, str]]]]:
    """(method, seed, run directory, progress rows) of each `<method>_s<seed>/` in `runs`."""
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        name = RUN_NAME.fullmatch(run.name)
        if name is not None:
            yield name["method"], int(name["seed"]), run, _progress(run)


def collect(runs: Path) -> dict[tuple[str, str], Found]:
    """{(evaluation file, metric): {method: {seed: (percent, final env steps)}}}."""
    found: dict[tuple[str, str], Found] = {}
    for method, seed, run, progress in _runs(runs):
        steps = _final_env_steps(progress)
        for file in EVALUATIONS:
            path = _find(run, file)
            if path is None:
                continue
            summary = json.loads(path.read_text())["summary"]["all"]
            for metric, key in METRICS.items():
                found.setdefault((file, metric), {}).setdefault(method, {})[seed] = (
                    100.0 * float(summary[key]), steps)
    return found


def collect_representation(runs: Path) -> dict[str, Found]:
    """{label: {method: {seed: (value, final env steps)}}}: each probe's R² from the
    representation and from the observation, and `mi_value` averaged over the last
    `MI_WINDOW` iterations that logged it."""
    found: dict[str, Found] = {}
    for method, seed, run, progress in _runs(runs):
        steps = _final_env_steps(progress)
        for file, module in PROBES.items():
            path = _find(run, file)
            if path is None:
                continue
            probe = json.loads(path.read_text())
            for key, label in PROBE_METRICS.items():
                found.setdefault(f"probe of the {module}: {label}", {}).setdefault(
                    method, {})[seed] = (float(probe[key]), steps)
        for module, column in MI_COLUMNS.items():
            logged = [float(r[column]) for r in progress if r.get(column)]
            logged = [v for v in logged if v == v][-MI_WINDOW:]
            if logged:
                found.setdefault(f"mi_value of the {module}, last {MI_WINDOW} iterations (nats)",
                                 {}).setdefault(method, {})[seed] = (sum(logged) / len(logged),
                                                                     steps)
    return found


def parse_pair(text: str) -> tuple[str, str]:
    """'X>Y' as (X, Y)."""
    x, sep, y = text.partition(">")
    if not sep or not x or not y or ">" in y:
        raise ValueError(f"--versus {text!r}: give each pair as METHOD>METHOD, e.g. alma>flat")
    return x, y


def summarize(
    runs: Path, out: Path, reps: int = 10_000, versus: list[tuple[str, str]] | None = None
) -> str:
    """Write `out/summary.md` and `out/summary.csv`; returns the markdown. `versus`: the
    (X, Y) pairs of P(X > Y); by default every method against flat."""
    found = collect(runs)
    if not found:
        raise ValueError(f"{runs}: no <method>_s<seed>/ directory with an eval.json")
    methods = {m for scores in found.values() for m in scores}
    unknown = sorted({m for pair in versus or [] for m in pair} - methods)
    if unknown:
        raise ValueError(f"--versus names {unknown}, which have no runs in {runs} "
                         f"(methods found: {sorted(methods)})")

    def pairs_of(scores: Found) -> list[tuple[str, str]]:
        if versus is None:
            return [(m, REFERENCE) for m in scores if m != REFERENCE]
        return [(x, y) for x, y in versus if x in scores and y in scores]

    rows: list[dict[str, Any]] = []
    for (file, metric), scores in found.items():
        rows += seed_table.score_rows(scores, f"{EVALUATIONS[file]}: {metric} %",
                                      pairs_of(scores), reps)
    text = ("# SaveTheCity at 1M env steps: greedy evaluation on 100 fixed episodes per seed\n\n"
            "completed: buildings completed; solved: episodes with every building completed "
            "(percent). P(X > Y): probability that a seed of X beats a seed of Y; \"not "
            "established\" when its interval contains 0.5.\n\n"
            "## At a glance: IQM [95% CI] (per seed)\n\n" + seed_table.glance(rows) + "\n"
            + seed_table.markdown(rows, 1))
    representation: list[dict[str, Any]] = []
    for label, scores in collect_representation(runs).items():
        representation += seed_table.score_rows(scores, label, pairs_of(scores), reps)
    if representation:
        text += ("\n# Representation\n\nProbe: R² on held-out episodes of a ridge read-out of "
                 "the mean live-entity state features (`rllib-alma-mi probe`); from the "
                 "observation: the same read-out from what the module sees in one step (a "
                 "module without memory holds no more than that, though its layers can make "
                 "more of it linearly readable).\n\n" + seed_table.markdown(representation, 3))
        rows += representation
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(seed_table.COLUMNS)
        writer.writerows([r[c] for c in seed_table.COLUMNS] for r in rows)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="directory of <method>_s<seed>/ runs")
    parser.add_argument("--out", type=Path, help="default: the runs directory's parent")
    parser.add_argument("--versus", nargs="+", type=parse_pair, metavar="X>Y",
                        help="pairs for P(X > Y); default: every method against flat")
    args = parser.parse_args()
    print(summarize(args.runs, args.out or args.runs.parent, versus=args.versus))


if __name__ == "__main__":
    main()
