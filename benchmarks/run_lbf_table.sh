#!/usr/bin/env bash
# The LBF table of results/lbf, seed by seed (every method of a seed before the next seed), so
# an interrupted table is whole for the seeds it has. Rerunning continues where it stopped
# (benchmarks/lbf.py resumes from its checkpoints and skips finished runs).
#   benchmarks/run_lbf_table.sh TASK_ID OUT [SEED ...]
set -euo pipefail
task=$1; out=$2; shift 2
seeds=${*:-0 1 2}
for seed in $seeds; do
  python benchmarks/lbf.py --env-id "$task" --methods anchor alma_mi alma flat \
    --seeds "$seed" --budget 1000000 --out "$out"
done
python benchmarks/lbf.py --summarize "$out"
