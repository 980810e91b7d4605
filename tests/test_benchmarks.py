"""Smoke tests of the benchmark scripts on tiny budgets (they are also the results' commands)."""

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
