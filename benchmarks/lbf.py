"""Level-Based Foraging and RWARE: the field's IPPO anchor against ALMA (+ MINE) and flat PPO.

For one task (`--env-id`: an LBF id, `Foraging-...`, or an RWARE id, `rware-...`, run
through `envs.lbf` or `envs.rware`), each seed and each method, trains until the wrapped
environment has taken `--budget` steps and writes one CSV row per iteration to
`OUT/<method>_s<seed>.csv`:

    iter, time, env_steps, return, solved, completed, mi_value

`return` is the mean episodic return summed over agents, as EPyMARL reports it (1.0 when
every food item is collected, LBF's normalised reward; RWARE's is the number of shelves
delivered, +1 to the robot that delivers). Methods:

- `anchor`: stock RLlib `PPOConfig`, one policy shared by every agent, RLlib's default MLP
  over the package's own vector observation (IPPO with parameter sharing, EPyMARL's baseline);
  `env_steps` is RLlib's `num_env_steps_sampled_lifetime`, `return` its
  `episode_return_mean` (the sum of every agent's rewards). `solved` and `completed` are
  not reported.
- `alma_mi`: `AlmaPPOConfig` defaults (learned allocation, MINE on the allocator).
- `alma`: the same without the MINE term.
- `flat`: PPO with the project's entity network and no allocator (`allocation="none"`).

For the last three `env_steps` is the wrapped env's step count of finished episodes
(`num_base_env_steps_lifetime`) and `return` is the hierarchy's `team_return` (per-step mean
over agents) times the number of agents. Every method gets the same `--batch`,
`--minibatch`, `--epochs`, `--lr`, `--entropy` and env runners; the batch counts RLlib env
steps, which for `alma*` include the allocator's decisions. The local learner of every
method uses the torch thread count AlmaPPO's learner sets for itself.

Evaluation. After training, `--eval-episodes` episodes on fixed seeds (episode i reset with
seed `EVALUATION_FIRST_SEED + i`, the same for every method) are played twice:
greedily (argmax actions, the allocator's most likely allocation) into
`OUT/<method>_s<seed>_eval.csv`, and with the policies' own sampling (the allocator and the
workers, or the anchor's shared module, sample from their action distributions as in
training; torch's generator seeded with each episode's env seed) into
`OUT/<method>_s<seed>_eval_sampled.csv`. Both have the columns
`episode, seed, return, solved, completed`, where `return` is the same quantity as above
(every agent's reward summed over the episode; `solved` and `completed` are NaN for
RWARE, which has no terminal success and whose requests never run out).
`--zero-shot-env-arg KEY=VALUE` (repeatable) also evaluates the checkpoint on the task
modified by those arguments, greedily into `OUT/<method>_s<seed>_eval_zeroshot.csv` and with
sampled actions into `OUT/<method>_s<seed>_eval_zeroshot_sampled.csv` (same episode seeds);
the anchor's MLP is tied to its observation size and is skipped there.

Resume. A checkpoint is saved every `--checkpoint-every` iterations and at the end under
`OUT/checkpoints/<method>_s<seed>/`. On a rerun with the same `--out`, a run whose greedy
evaluation CSV exists is finished: it is skipped, except that its missing sampled or
zero-shot CSV is filled in from its checkpoint (no training); a run with a checkpoint and no
evaluation CSV is restored, its training CSV cut back to the checkpoint's iteration and
continued.

`--summarize OUT` (no training) writes `OUT/summary.md` and `OUT/summary.csv`: per
evaluation (`task`: greedy, `sampled`, `zero-shot`, `zero-shot sampled`) and method the IQM
and mean over seeds of each seed's mean evaluation return with 95% stratified bootstrap
intervals, and the probability that `alma_mi` improves on each other method; `summary.md`
ends with a table of each run's training curve (`training_curve`).

    python benchmarks/lbf.py --env-id Foraging-8x8-2p-2f-coop-v3 --seeds 0 1 2 \\
        --budget 2000000 --out results/lbf --zero-shot-env-arg players=3
    python benchmarks/lbf.py --summarize results/lbf
    python benchmarks/lbf.py --env-id rware-tiny-2ag-v2 --budget 1000000 \\
        --out results/rware/rware-tiny-2ag-v2
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

METHODS = ("anchor", "alma_mi", "alma", "flat")
COLUMNS = ("iter", "time", "env_steps", "return", "solved", "completed", "mi_value")
EVAL_COLUMNS = ("episode", "seed", "return", "solved", "completed")
NAN = float("nan")
CHECKPOINT_MARKER = "rllib_checkpoint.json"


def family(env_config: dict[str, Any]) -> str:
    """The benchmark of `env_config`'s `env_id`: "rware" for Multi-Robot Warehouse ids
    (`rware-...`), "lbf" for every other (Level-Based Foraging). It names the adapter module
    (`envs.<family>`) and the registered RLlib env."""
    return "rware" if str(env_config.get("env_id", "")).startswith("rware") else "lbf"


def adapter(env_config: dict[str, Any]) -> Any:
    """The adapter module of `env_config`'s benchmark (`envs.lbf` or `envs.rware`)."""
    return importlib.import_module(f"envs.{family(env_config)}")


def _anchor_config(env_config: dict[str, Any]):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    name = f"{family(env_config)}_flat"
    flat_parallel_env = adapter(env_config).flat_parallel_env
    register_env(name, lambda cfg: ParallelPettingZooEnv(flat_parallel_env(**cfg)))
    return (
        PPOConfig()
        .environment(name, env_config=env_config)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *a, **k: "shared")
    )


def _alma_config(method: str, env_config: dict[str, Any]):
    from rllib_alma_mi import AlmaPPOConfig

    # Every 5 env steps, the default when the table's first runs were made: kept so its
    # seeds stay comparable.
    config = (AlmaPPOConfig().environment(family(env_config), env_config=env_config)
              .alma(alloc_interval=5))
    if method == "alma":
        config.mutual_info(use_mutual_info=False)
    elif method == "flat":
        config.alma(allocation="none").mutual_info(use_mutual_info=False)
    return config


def build(method: str, seed: int, env_config: dict[str, Any], args: argparse.Namespace):
    """The method's algorithm config with the shared training and sampling settings."""
    if method == "anchor":
        config = _anchor_config(env_config)
    else:
        config = _alma_config(method, env_config)
    return (
        config.training(
            train_batch_size_per_learner=args.batch, minibatch_size=args.minibatch,
            num_epochs=args.epochs, lr=args.lr, entropy_coeff=args.entropy,
        )
        .env_runners(
            num_env_runners=args.env_runners, num_envs_per_env_runner=args.envs_per_runner,
            num_cpus_per_env_runner=0.5,
            rollout_fragment_length="auto",
        )
        .debugging(seed=seed)
    )


def _row(method: str, result: dict[str, Any], n_agents: int) -> tuple[float, ...]:
    """(env_steps, return, solved, completed, mi_value) of one iteration's result."""
    runners = result.get("env_runners", {})  # empty when a sample timed out
    if method == "anchor":
        return (runners.get("num_env_steps_sampled_lifetime", 0),
                runners.get("episode_return_mean", NAN), NAN, NAN, NAN)
    return (
        runners.get("num_base_env_steps_lifetime", 0),
        runners.get("team_return", NAN) * n_agents,
        runners.get("solved", NAN),
        runners.get("tasks_completed_frac", NAN),
        result.get("learners", {}).get("allocator", {}).get("mi_value", NAN),
    )


# ----------------------------------------------------------------------------- files
def run_paths(out: Path, method: str, seed: int) -> dict[str, Path]:
    """Where one (method, seed) keeps its training CSV, evaluation CSVs and checkpoint."""
    stem = f"{method}_s{seed}"
    return {
        "train": out / f"{stem}.csv",
        "eval": out / f"{stem}_eval.csv",
        "sampled": out / f"{stem}_eval_sampled.csv",
        "zeroshot": out / f"{stem}_eval_zeroshot.csv",
        "zeroshot_sampled": out / f"{stem}_eval_zeroshot_sampled.csv",
        "checkpoint": out / "checkpoints" / stem,
    }


def has_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a finished RLlib checkpoint."""
    return (directory / CHECKPOINT_MARKER).is_file()


def write_csv_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV through a temporary sibling renamed into place, so an interrupted write
    never leaves a partial file (an evaluation CSV marks its run as finished)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def cut_training_csv(path: Path, iteration: int) -> tuple[float, float]:
    """Keep the header and the rows of iterations 1..`iteration` of a training CSV (rows
    written after the checkpoint being resumed are dropped); returns the kept last row's
    (time, env_steps), (0.0, 0) for iteration 0."""
    if not path.is_file():
        raise ValueError(f"{path}: the training CSV of a checkpointed run is missing; delete "
                         f"its checkpoint directory to start the run again")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{path}: expected the header {','.join(COLUMNS)}; got "
                         f"{','.join(rows[0]) if rows else 'an empty file'}")
    kept = [row for row in rows[1:] if row and int(row[0]) <= iteration]
    if [int(row[0]) for row in kept] != list(range(1, iteration + 1)):
        raise ValueError(
            f"{path}: the rows of iterations 1..{iteration} (the checkpoint's) are not all "
            "there; delete the CSV and the checkpoint directory to start the run again"
        )
    write_csv_atomic(path, COLUMNS, kept)
    if not kept:
        return 0.0, 0
    return float(kept[-1][1]), float(kept[-1][2])


def record_task(out: Path, env_config: dict[str, Any], zero_shot: dict[str, Any]) -> None:
    """Record in `out/task.yaml` the task and zero-shot changes the runs under `out` use; a
    rerun into the same `out` with another task or other zero-shot changes raises ValueError
    (their results would be mixed). Zero-shot changes may be added to a task that had none."""
    path = out / "task.yaml"
    recorded = yaml.safe_load(path.read_text()) if path.is_file() else None
    if recorded is not None:
        if recorded["env_config"] != env_config:
            raise ValueError(
                f"{out} holds runs of the task {recorded['env_config']}, not {env_config} "
                "(--env-id/--env-arg); pass another --out"
            )
        if recorded["zero_shot"] and zero_shot and recorded["zero_shot"] != zero_shot:
            raise ValueError(
                f"{out} holds zero-shot evaluations on {recorded['zero_shot']}, not "
                f"{zero_shot} (--zero-shot-env-arg); pass another --out"
            )
        zero_shot = zero_shot or recorded["zero_shot"]
    path.write_text(yaml.safe_dump({"env_config": env_config, "zero_shot": zero_shot}))


def missing_evaluations(paths: dict[str, Path], zero_shot: bool) -> list[str]:
    """The keys of `paths` ("eval", "sampled", and "zeroshot", "zeroshot_sampled" when
    `zero_shot`) whose evaluation CSV does not exist yet."""
    keys = ("eval", "sampled") + (("zeroshot", "zeroshot_sampled") if zero_shot else ())
    return [key for key in keys if not paths[key].is_file()]


def run_state(paths: dict[str, Path], zero_shot: bool) -> str:
    """What a rerun does with one (method, seed): "done" (skip), "evaluate" (trained: only
    its missing sampled or zero-shot evaluation, from the checkpoint), "resume" (restore the
    checkpoint and go on) or "fresh"."""
    if paths["eval"].is_file():
        return "evaluate" if missing_evaluations(paths, zero_shot) else "done"
    return "resume" if has_checkpoint(paths["checkpoint"]) else "fresh"


# ------------------------------------------------------------------------- evaluation
def evaluation_seeds(episodes: int) -> list[int]:
    """The env seed of each evaluation episode, as the seeded evaluation during training
    lists them (EVALUATION_FIRST_SEED, +1, ...)."""
    from rllib_alma_mi.settings import EvaluationSettings

    return EvaluationSettings(episodes=episodes).episode_seeds()


@dataclass
class EvalEpisode:
    """One evaluation episode: the return summed over agents and the food outcome."""

    seed: int
    team_return: float
    solved: float
    completed: float
    steps: int


def anchor_episode(env: Any, module: Any, seed: int, sample: bool = False) -> EvalEpisode:
    """One episode of `env` (a `flat_parallel_env` of `envs.lbf` or `envs.rware`) from
    `reset(seed=seed)`, every agent acting with `module` on its (obs_dim,) observation (a
    batch of n per step): greedily, the argmax of `forward_inference`'s `action_dist_inputs`;
    with `sample`, a draw from the module's exploration distribution over
    `forward_exploration`'s, torch's generator seeded with `seed`
    (`rllib_alma_mi.rllib.greedy.module_actions`). The return
    is every agent's reward summed over the episode; `completed` is the fraction of LBF's
    food collected; `solved` and `completed` are NaN for RWARE."""
    import torch
    from ray.rllib.core.columns import Columns

    from rllib_alma_mi.rllib.greedy import module_actions, seeded_sampling

    obs, _ = env.reset(seed=seed)
    food_at_start = _food_left(env)
    total, steps, terminated = 0.0, 0, False
    with seeded_sampling(seed):
        while env.agents:
            agents = list(env.agents)
            batch = torch.as_tensor(np.stack([obs[a] for a in agents]))
            actions = module_actions(module, {Columns.OBS: batch}, sample).tolist()
            obs, rewards, terms, _, _ = env.step(dict(zip(agents, actions, strict=True)))
            total += sum(rewards.values())
            steps += 1
            terminated = any(terms.values())
    if not food_at_start:  # RWARE
        return EvalEpisode(seed, total, NAN, NAN, steps)
    return EvalEpisode(seed, total, float(terminated), 1.0 - _food_left(env) / food_at_start,
                       steps)


def _food_left(env: Any) -> int:
    """LBF's uncollected food items in the flat env `env`; 0 for RWARE, which has none."""
    field = getattr(env.env, "field", None)  # ForagingEnv's grid of food levels
    return 0 if field is None else int((field > 0).sum())


def evaluate_anchor(module: Any, env_config: dict[str, Any], episodes: int,
                    sample: bool = False) -> list[EvalEpisode]:
    """Greedy (or, with `sample`, sampled) episodes of the anchor's shared module on the
    evaluation seeds (`anchor_episode`)."""
    env = adapter(env_config).flat_parallel_env(**env_config)
    module.eval()
    try:
        return [anchor_episode(env, module, seed, sample) for seed in evaluation_seeds(episodes)]
    finally:
        env.close()


def load_anchor_module(checkpoint: Path) -> Any:
    """The anchor's trained shared RLModule, read from its algorithm checkpoint (the
    learner's copy, which the checkpoint saved after the last update)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = (checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
            / "shared").resolve()
    if not path.is_dir():
        raise ValueError(f"{path}: the anchor checkpoint holds no 'shared' module; delete "
                         f"{checkpoint} and its CSVs to train the run again")
    return RLModule.from_checkpoint(str(path))


def evaluate_alma(checkpoint: Path, episodes: int, overrides: dict[str, Any] | None = None,
                  sample: bool = False) -> list[EvalEpisode]:
    """Greedy (or, with `sample`, sampled) episodes of an `alma_mi`/`alma`/`flat` checkpoint
    on the evaluation seeds (`rllib_alma_mi.app.evaluation.evaluate`); `overrides` modify the
    training task."""
    from rllib_alma_mi.app.evaluation import evaluate

    first = evaluation_seeds(1)[0]
    result = evaluate(checkpoint, episodes, overrides=overrides, seed=first, sample=sample)
    # team_return sums the per-step mean over agents; every LBF or RWARE agent is live for the
    # whole episode, so times the team size it is every agent's reward summed over the episode.
    return [EvalEpisode(e.seed, e.team_return * e.team_size, e.solved,
                        e.tasks_completed_frac, e.steps) for e in result.episodes]


def write_evaluation(path: Path, episodes: list[EvalEpisode]) -> None:
    """One row per episode: episode, seed, return, solved, completed."""
    rows = [(i, e.seed, e.team_return, e.solved, e.completed) for i, e in enumerate(episodes)]
    write_csv_atomic(path, EVAL_COLUMNS, rows)
    returns = [e.team_return for e in episodes]
    print(f"wrote {path}: mean return {np.mean(returns):.3f} over {len(returns)} episodes",
          flush=True)


def evaluate_run(method: str, paths: dict[str, Path], env_config: dict[str, Any],
                 args: argparse.Namespace, module: Any = None,
                 keys: Sequence[str] = ("eval", "sampled", "zeroshot", "zeroshot_sampled"),
                 ) -> None:
    """Write the run's evaluation CSVs named by `keys` (of `run_paths`): the greedy one,
    the sampled one and, when `--zero-shot-env-arg` asks for them, the zero-shot ones. The
    anchor acts with its trained `module`, or without one with the module restored from its
    checkpoint; the other methods are restored from their checkpoint."""
    zero_shot = dict(args.zero_shot_env_arg)
    for key, sample in (("eval", False), ("sampled", True)):
        if key not in keys:
            continue
        if method == "anchor":
            if module is None:
                module = load_anchor_module(paths["checkpoint"])
            episodes = evaluate_anchor(module, env_config, args.eval_episodes, sample)
        else:
            episodes = evaluate_alma(paths["checkpoint"], args.eval_episodes, sample=sample)
        write_evaluation(paths[key], episodes)
    if not zero_shot or not {"zeroshot", "zeroshot_sampled"} & set(keys):
        return
    if method == "anchor":
        print(f"anchor: no zero-shot evaluation on {zero_shot}: its MLP takes the flat "
              "observation of the training task's size and cannot read another", flush=True)
        return
    for key, sample in (("zeroshot", False), ("zeroshot_sampled", True)):
        if key in keys:
            write_evaluation(paths[key], evaluate_alma(
                paths["checkpoint"], args.eval_episodes, zero_shot, sample=sample))


# ---------------------------------------------------------------------------- training
def train(method: str, seed: int, env_config: dict[str, Any], args: argparse.Namespace) -> None:
    """One run, resumed from its checkpoint when it has one, then its evaluation."""
    import torch

    from rllib_alma_mi.app.checkpoints import save_checkpoint
    from rllib_alma_mi.rllib.learner import learner_threads

    paths = run_paths(args.out, method, seed)
    zero_shot = bool(args.zero_shot_env_arg) and method != "anchor"  # see evaluate_run
    state = run_state(paths, zero_shot)
    if state == "done":
        print(f"{method} s{seed}: {paths['eval']} exists, skipped", flush=True)
        return
    if state == "evaluate":
        missing = missing_evaluations(paths, zero_shot)
        print(f"{method} s{seed}: trained and evaluated; only the missing "
              f"{', '.join(paths[k].name for k in missing)}", flush=True)
        evaluate_run(method, paths, env_config, args, keys=missing)
        return

    n_agents = adapter(env_config).parallel_env(**env_config).n_agents
    config = build(method, seed, env_config, args)
    # The local learner's torch threads as AlmaPPO's learner sets them for every method: with
    # torch's default (one per core) the anchor's tiny MLP updated ~4x slower on 2 busy cores.
    torch.set_num_threads(learner_threads(config))
    algo = config.build_algo()
    try:
        iteration, elapsed, steps = 0, 0.0, 0.0
        if state == "resume":
            algo.restore_from_path(str(paths["checkpoint"].resolve()))
            iteration = algo.iteration
            elapsed, steps = cut_training_csv(paths["train"], iteration)
            print(f"{method} s{seed}: resumed at iter {iteration}, env steps {steps:.0f}",
                  flush=True)
        else:
            write_csv_atomic(paths["train"], COLUMNS, [])
        saved = iteration
        start = time.perf_counter()
        with paths["train"].open("a", newline="") as f:
            writer = csv.writer(f)
            while steps < args.budget:
                result = algo.train()
                iteration += 1
                row = _row(method, result, n_agents)
                steps = row[0]
                now = round(elapsed + time.perf_counter() - start, 1)
                writer.writerow([iteration, now, *row])
                f.flush()
                print(f"{method} s{seed} iter {iteration}: env steps {steps}, "
                      f"return {row[1]:.3f}", flush=True)
                if iteration % args.checkpoint_every == 0:
                    save_checkpoint(algo, paths["checkpoint"])
                    saved = iteration
        if saved != iteration or not has_checkpoint(paths["checkpoint"]):
            save_checkpoint(algo, paths["checkpoint"])
        print("wrote", paths["train"], flush=True)
        module = algo.get_module("shared") if method == "anchor" else None
        if method == "anchor":
            evaluate_run(method, paths, env_config, args, module)
    finally:
        algo.stop()
    if method != "anchor":  # restores the checkpoint in a new Algorithm: free this one first
        evaluate_run(method, paths, env_config, args)


# ---------------------------------------------------------------------------- summary
def _final_env_steps(path: Path) -> float:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["env_steps"]) if rows else NAN


def collect(out: Path, suffix: str) -> dict[str, dict[int, tuple[float, float]]]:
    """{method: {seed: (mean evaluation return, final env steps)}} of the `*<suffix>.csv`
    evaluation files under `out`."""
    found: dict[str, dict[int, tuple[float, float]]] = {}
    for method in METHODS:
        for path in sorted(out.glob(f"{method}_s*{suffix}.csv")):
            tag = path.name[len(method) + 2:-len(suffix) - 4]
            if not tag.isdigit():
                continue
            with path.open(newline="") as f:
                returns = [float(r["return"]) for r in csv.DictReader(f)]
            if not returns:
                raise ValueError(f"{path}: no evaluation episodes; delete it and rerun")
            train_csv = out / f"{method}_s{tag}.csv"
            steps = _final_env_steps(train_csv) if train_csv.is_file() else NAN
            found.setdefault(method, {})[int(tag)] = (float(np.mean(returns)), steps)
    return found


MILESTONES = (100_000, 200_000, 500_000)
REACH = 0.95  # of LBF's normalised return: (nearly) every food item collected
WINDOW = 5  # iterations a training return is averaged over


@dataclass
class TrainingCurve:
    """What one training CSV says of the run: its final env steps and wall-clock, the mean
    return of its last 10 iterations, the return at each of `MILESTONES` (the mean of the
    last `WINDOW` iterations with env_steps <= the milestone; NaN before any) and the env
    steps at which the mean of `WINDOW` consecutive iterations first reaches `reach` (NaN if
    never, or without a `reach`)."""

    method: str
    seed: int
    env_steps: float
    minutes: float
    last_10: float
    at_milestones: tuple[float, ...]
    steps_to_reach: float


def training_curve(path: Path, method: str, seed: int,
                   reach: float | None = REACH) -> TrainingCurve:
    """The `TrainingCurve` of one training CSV (`<method>_s<seed>.csv`)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no training iterations; delete it and rerun the run")
    steps = np.array([float(r["env_steps"]) for r in rows])
    returns = np.array([float(r["return"]) for r in rows])

    def nan_mean(values: np.ndarray) -> float:  # NaN: an iteration without a finished episode
        kept = values[~np.isnan(values)]
        return float(kept.mean()) if kept.size else NAN

    def window_mean(end: int) -> float:  # iterations end-WINDOW+1 .. end
        return nan_mean(returns[max(0, end - WINDOW + 1):end + 1])

    at = []
    for milestone in MILESTONES:
        before = np.flatnonzero(steps <= milestone)
        at.append(window_mean(int(before[-1])) if before.size else NAN)
    reached = [] if reach is None else [
        i for i in range(WINDOW - 1, len(rows)) if window_mean(i) >= reach]
    return TrainingCurve(
        method, seed, float(steps[-1]), float(rows[-1]["time"]) / 60, nan_mean(returns[-10:]),
        tuple(at), float(steps[reached[0]]) if reached else NAN,
    )


def training_table(out: Path, reach: float | None = REACH) -> str:
    """A markdown table of the `TrainingCurve` of every finished run under `out` (a
    `<method>_s<seed>.csv` with its `_eval.csv`: a run still training is left out, as in the
    evaluation tables); without a `reach`, no column of the env steps to reach it."""
    def fmt(value: float, spec: str) -> str:
        return "–" if np.isnan(value) else format(value, spec)

    milestones = " / ".join(f"{m // 1000}k" for m in MILESTONES)
    header = ["method", "seed", "env steps", "wall-clock (min)", "return, last 10 iterations",
              f"return at {milestones}"] + ([] if reach is None else [f"env steps to {reach}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in METHODS:
        for path in sorted(out.glob(f"{method}_s*.csv")):
            tag = path.stem[len(method) + 2:]
            if not tag.isdigit() or not path.with_name(f"{path.stem}_eval.csv").is_file():
                continue
            c = training_curve(path, method, int(tag), reach)
            cells = [method, str(c.seed), f"{c.env_steps:.0f}", f"{c.minutes:.1f}",
                     fmt(c.last_10, ".3f"), " / ".join(fmt(v, ".2f") for v in c.at_milestones)]
            if reach is not None:
                cells.append(fmt(c.steps_to_reach, ".0f"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(out: Path, reps: int = 10_000) -> str:
    """Write `out/summary.md` and `out/summary.csv` from the evaluation CSVs; returns the
    markdown. Scores are each seed's mean evaluation return (summed over agents); the rows'
    `evaluation` is `task` (greedy), `sampled` (the same seeds, sampled actions),
    `zero-shot` (greedy, on the changed task) or `zero-shot sampled`."""
    from rllib_alma_mi.app import seed_table

    versus = [("alma_mi", other) for other in METHODS if other != "alma_mi"]
    rows: list[dict[str, Any]] = []
    for suffix, evaluation in (("_eval", "task"), ("_eval_sampled", "sampled"),
                               ("_eval_zeroshot", "zero-shot"),
                               ("_eval_zeroshot_sampled", "zero-shot sampled")):
        found = collect(out, suffix)
        if not found and suffix == "_eval":
            raise ValueError(f"{out}: no <method>_s<seed>_eval.csv files to summarize")
        rows += seed_table.score_rows(found, evaluation, versus, reps)
    task_file = out / "task.yaml"
    task = yaml.safe_load(task_file.read_text()) if task_file.is_file() else None
    described = "" if task is None else (
        f"Task: {task['env_config']}; zero-shot changes: {task['zero_shot'] or 'none'}.\n\n")
    rware = task is not None and family(task["env_config"]) == "rware"
    title, reach = ("RWARE", None) if rware else ("LBF", REACH)  # RWARE's return is unbounded
    text = (f"# {title}: evaluation return (summed over agents) per seed\n\n" + described +
            "task: greedy evaluation on the training task; sampled: the same episode seeds "
            "with the policies' actions sampled from their distributions; zero-shot: greedy "
            "evaluation on the changed task; zero-shot sampled: the same episodes with sampled "
            "actions.\n\n"
            "P(X > Y): probability that a seed of X beats a seed of Y; "
            "\"not established\" when its interval contains 0.5.\n\n" + seed_table.markdown(rows)
            + f"\n## training\n\nFrom the training CSVs: return is the mean episodic return of "
            f"an iteration; at a step count, the mean of the last {WINDOW} iterations up to it"
            + ("" if reach is None else f"; env steps to {reach}: where the mean of {WINDOW} "
               "consecutive iterations first reaches it") + ".\n\n" + training_table(out, reach))
    (out / "summary.md").write_text(text)
    write_csv_atomic(out / "summary.csv", seed_table.COLUMNS,
                     [[r[c] for c in seed_table.COLUMNS] for r in rows])
    return text


# ------------------------------------------------------------------------------- main
def _env_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options (`argv`, or `sys.argv[1:]`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Foraging-8x8-2p-2f-coop-v3")
    parser.add_argument("--env-arg", type=_env_arg, action="append", default=[],
                        help="a ForagingEnv (or Warehouse) argument overriding the id's, "
                             "e.g. max_num_food=5 (or sensor_range=2)")
    parser.add_argument("--zero-shot-env-arg", type=_env_arg, action="append", default=[],
                        help="also evaluate on the task with this ForagingEnv argument "
                             "changed, e.g. players=3 or field_size=[15,15]")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--batch", type=int, default=4000, help="train_batch_size_per_learner")
    parser.add_argument("--minibatch", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--entropy", type=float, default=0.01)
    parser.add_argument("--env-runners", type=int, default=2)
    parser.add_argument("--envs-per-runner", type=int, default=8)
    parser.add_argument("--eval-episodes", type=_positive, default=100,
                        help="evaluation episodes (greedy, and again sampled) at the end of "
                             "each run")
    parser.add_argument("--checkpoint-every", type=_positive, default=10,
                        help="training iterations between checkpoints")
    parser.add_argument("--out", type=Path, default=Path("results/lbf"))
    parser.add_argument("--summarize", type=Path, metavar="OUT",
                        help="only summarize the evaluation CSVs in OUT (no training)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.summarize is not None:
        print(summarize(args.summarize))
        return
    env_config = {"env_id": args.env_id, **dict(args.env_arg)}
    parallel_env = adapter(env_config).parallel_env
    parallel_env(**env_config).close()  # a bad task fails here, before Ray starts
    if args.zero_shot_env_arg:
        parallel_env(**{**env_config, **dict(args.zero_shot_env_arg)}).close()
    args.out.mkdir(parents=True, exist_ok=True)
    record_task(args.out, env_config, dict(args.zero_shot_env_arg))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for method in args.methods:
            for seed in args.seeds:
                train(method, seed, env_config, args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
