#!/usr/bin/env bash
# Probes of finished runs of benchmarks/run_learning_1m.sh: `rllib-alma-mi probe` of the worker
# and, when the run has one, of the allocator, on 50 greedy episodes of the run's own env
# (probe_worker.json, probe_allocator.json beside eval.json). A probe already written is kept.
#   benchmarks/run_probes.sh OUT "METHOD ..." [SEED ...]
#   e.g. benchmarks/run_probes.sh out/mi_sight2 "alma_mi alma alma_mi_scheme1" 0 1 2 3 4
set -euo pipefail
out=$1; methods=$2; shift 2
seeds=${*:-0 1 2 3 4}
for seed in $seeds; do
  for method in $methods; do
    run="$out/$(basename "$method" .yaml)_s${seed}"
    [ -f "$run/eval.json" ] || { echo "$run: not finished (no eval.json); skipped"; continue; }
    modules=worker
    grep -q '"allocation": "learned"' "$run"/*/params.json && modules="worker allocator"
    for module in $modules; do
      [ -f "$run/probe_$module.json" ] || rllib-alma-mi probe --checkpoint "$run" \
        --module "$module" --episodes 50 --json "$run/probe_$module.json"
    done
  done
done
