"""The SaveTheCity table of results/learning_1m from its runs' evaluations.

Reads every `RUNS/<method>_s<seed>/` that `benchmarks/run_learning_1m.sh` wrote (or that
`rllib-alma-mi summarize --export` copied, with the two JSON files beside its progress.csv):
`eval.json` (greedy, 100 fixed episodes on the training teams) and `zero_shot.json` (the same
on teams of 2-8), and writes `OUT/summary.md` and `OUT/summary.csv` (OUT defaults to RUNS'
parent): per evaluation and method, the IQM and mean over seeds of buildings completed and of
episodes solved (percent) with 95% stratified bootstrap intervals and the per-seed values,
and P(X > Y) for the pairs of `--versus` (default: every method against flat).

    python benchmarks/learning_1m_table.py results/learning_1m/runs
    python benchmarks/learning_1m_table.py results/mi_sight2/runs \
        --versus "alma_mi>alma" "alma_mi_scheme1>alma"   # quoted: > is a redirection
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

from rllib_alma_mi.app import seed_table

EVALUATIONS = {"eval.json": "teams 2-5", "zero_shot.json": "zero-shot, teams 2-8"}
METRICS = {"completed": "tasks_completed_frac", "solved": "solved_rate"}
REFERENCE = "flat"
RUN_NAME = re.compile(r"(?P<method>.+)_s(?P<seed>\d+)")
STEPS_COLUMN = "env_runners/num_base_env_steps_lifetime"


def _find(run: Path, name: str) -> Path | None:
    found = sorted(run.rglob(name))
    if len(found) > 1:
        raise ValueError(f"{run}: more than one {name} ({[str(p) for p in found]})")
    return found[0] if found else None


def _final_env_steps(run: Path) -> float:
    progress = _find(run, "progress.csv")
    if progress is None:
        return float("nan")
    with progress.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1][STEPS_COLUMN]) if rows and rows[-1].get(STEPS_COLUMN) else float("nan")


def collect(runs: Path) -> dict[tuple[str, str], dict[str, dict[int, tuple[float, float]]]]:
    """{(evaluation file, metric): {method: {seed: (percent, final env steps)}}}."""
    found: dict[tuple[str, str], dict[str, dict[int, tuple[float, float]]]] = {}
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        name = RUN_NAME.fullmatch(run.name)
        if name is None:
            continue
        method, seed = name["method"], int(name["seed"])
        steps = _final_env_steps(run)
        for file in EVALUATIONS:
            path = _find(run, file)
            if path is None:
                continue
            summary = json.loads(path.read_text())["summary"]["all"]
            for metric, key in METRICS.items():
                found.setdefault((file, metric), {}).setdefault(method, {})[seed] = (
                    100.0 * float(summary[key]), steps)
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
    rows: list[dict[str, Any]] = []
    for (file, metric), scores in found.items():
        pairs = [(m, REFERENCE) for m in scores if m != REFERENCE] if versus is None else [
            (x, y) for x, y in versus if x in scores and y in scores]
        rows += seed_table.score_rows(scores, f"{EVALUATIONS[file]}: {metric} %", pairs, reps)
    text = ("# SaveTheCity at 1M env steps: greedy evaluation on 100 fixed episodes per seed\n\n"
            "completed: buildings completed; solved: episodes with every building completed "
            "(percent). P(X > Y): probability that a seed of X beats a seed of Y; \"not "
            "established\" when its interval contains 0.5.\n\n"
            "## At a glance: IQM [95% CI] (per seed)\n\n" + seed_table.glance(rows) + "\n"
            + seed_table.markdown(rows, 1))
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
