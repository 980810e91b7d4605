#!/usr/bin/env bash
# SaveTheCity at 1M env steps, seed by seed (every method of a seed before the next seed), so an
# interrupted table is whole for the seeds it has. A method is a config of examples/configs
# (flat, with_mi, without_mi, heuristic) or the path of a YAML config (its file name without
# .yaml names the method); each run goes to OUT/METHOD_sSEED. Rerunning continues
# where it stopped: an unfinished run resumes from its last checkpoint (`train --resume`; a
# finished one returns at once), and each finished run is evaluated once, greedily on 100 fixed
# episodes, on its training teams (eval.json) and zero-shot on teams of 2-8 (zero_shot.json).
#   benchmarks/run_learning_1m.sh OUT "METHOD ..." [SEED ...]
#   e.g. benchmarks/run_learning_1m.sh out/learning_1m "flat with_mi" 0 1 2 3 4
set -euo pipefail
out=$1; methods=$2; shift 2
seeds=${*:-0 1 2 3 4}
cli=rllib-alma-mi
for seed in $seeds; do
  for method in $methods; do
    config="examples/configs/$method.yaml"
    if [[ $method == *.yaml ]]; then config=$method; method=$(basename "$method" .yaml); fi
    run="$out/${method}_s${seed}"
    if [ -f "$run/tuner.pkl" ]; then
      $cli train --resume "$run"
    else
      $cli train --config "$config" --stop-timesteps 1000000 \
        --seed "$seed" --output "$run"
    fi
    [ -f "$run/eval.json" ] || $cli evaluate --checkpoint "$run" --episodes 100 \
      --json "$run/eval.json"
    [ -f "$run/zero_shot.json" ] || $cli evaluate --checkpoint "$run" --episodes 100 \
      --env-config scenario=2-8a_2-8b --json "$run/zero_shot.json"
  done
done
