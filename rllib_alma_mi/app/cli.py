"""Command line of rllib_alma_mi: train, evaluate, sweep, plot, summarize, render.

    rllib-alma-mi train [--config FILE.yaml] [--set section.key=value ...] [--stop-iters N]
                        [--logger wandb|mlflow ...]
    rllib-alma-mi evaluate --checkpoint PATH --episodes N [--env-config key=value ...] [--sample]
    rllib-alma-mi sweep --config FILE.yaml --grid mi_weight=0.0001,0.001 --seeds 3
    rllib-alma-mi plot RUN_DIR ... --metric solved --out curves.png [--x env_steps] [--stat t]
    rllib-alma-mi summarize RUN_DIR ... [--compare A B] [--marl-eval FILE.json] [--stat t]
    rllib-alma-mi render --checkpoint PATH --out episode.gif [--seed S]
    rllib-alma-mi export --checkpoint PATH --out DIR [--format torchscript|onnx]

Bad input (an invalid experiment file, `--set`, `--grid` or `--env-config` value, a path
without runs or checkpoints) exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import ray.rllib  # it sets its logger's level on import; `_init_ray` overrides that after
from ray.tune import Callback
from rich.console import Console
from rich.table import Table

from rllib_alma_mi.app import evaluation as ev
from rllib_alma_mi.app import reports
from rllib_alma_mi.app import tune as tuning
from rllib_alma_mi.app.evaluation import EvaluationError
from rllib_alma_mi.app.export import ExportError, check_format, export_checkpoint
from rllib_alma_mi.app.marl_eval import to_marl_eval
from rllib_alma_mi.app.overrides import add_loggers, load_experiment, parse_grid
from rllib_alma_mi.app.plotting import (
    SOURCES,
    SUMMARY_METRICS,
    PlotError,
    export_curves,
    plot_runs,
    summarize_runs,
)
from rllib_alma_mi.app.probe import PROBED_MODULES, probe
from rllib_alma_mi.app.rendering import record_episode
from rllib_alma_mi.app.schema import TRACKERS, ConfigError
from rllib_alma_mi.app.trackers import tracker_callbacks
from rllib_alma_mi.app.yaml_io import parse_value

USAGE_ERROR = 2
INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input not covered by a module's own error type."""


# Bad input: reported in one line with exit status 2.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, EvaluationError, ExportError, PlotError, UsageError
)


# ----------------------------------------------------------------------------------- progress
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(result: Mapping[str, Any], stop: Mapping[str, Any], tag: str = "") -> str:
    """One line per training iteration: iteration, env steps, return, solved rate, tasks
    completed, mi_value, env steps per second and the time left to the first budget met."""
    runners = result.get("env_runners", {})
    learners = result.get("learners", {})
    it = int(result.get("training_iteration", 0))
    elapsed = float(result.get("time_total_s", 0.0)) or math.nan
    steps = runners.get("num_base_env_steps_lifetime")
    rate = steps / elapsed if steps is not None and elapsed > 0 else None
    carriers = [learners[m] for m in ("allocator", "worker") if "mi_value" in learners.get(m, {})]
    mi = carriers[0]["mi_value"] if carriers else None
    left = []
    if "iterations" in stop and it:
        left.append((stop["iterations"] - it) * elapsed / it)
    if "timesteps" in stop and rate:
        left.append((stop["timesteps"] - (steps or 0)) / rate)
    if "time_s" in stop:
        left.append(stop["time_s"] - elapsed)
    total = f"/{stop['iterations']}" if "iterations" in stop else ""
    parts = [
        f"iter {it}{total}",
        f"env steps {_fmt(steps, ',.0f')}",
        f"return {_fmt(runners.get('team_return', runners.get('episode_return_mean')), '.2f')}",
        f"solved {_fmt(runners.get('solved'), '.2f')}",
        f"tasks done {_fmt(runners.get('tasks_completed_frac'), '.2f')}",
        f"mi_value {_fmt(mi, '.3f')}",
        f"{_fmt(rate, ',.0f')} steps/s",
        f"ETA {_duration(min(left) if left else None)}",
    ]
    return (f"[{tag}] " if tag else "") + " | ".join(parts)


class ProgressLine(Callback):
    """Tune callback: prints `progress_line` with rich for every result of every trial."""

    def __init__(self, stop: Mapping[str, Any]):
        self.stop = dict(stop)
        self._console: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"stop": self.stop, "_console": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if self._console is None:
            self._console = Console(highlight=False, soft_wrap=True)
        tag = str(trial.experiment_tag) if len(trials) > 1 else ""
        self._console.print(progress_line(result, self.stop, tag), markup=False)


# ----------------------------------------------------------------------------------- ray
def _init_ray(address: str | None, verbose: bool) -> None:
    """Start a local Ray, or join the cluster at `address` (or `RAY_ADDRESS`); without
    --verbose only errors of Ray's own loggers are shown."""
    if not verbose:  # Tune's own report (its header box, tables) gives way to ProgressLine
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address and address != "local":
            _join_cluster(address, verbose)
        else:
            ray.init(
                address="local",  # a fresh Ray of its own, even beside a running cluster
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.WARNING,
            )
    if not verbose:
        for name in ("ray", "ray.rllib", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _join_cluster(address: str, verbose: bool) -> None:
    """`ray.init(address)` with Ray's token authentication handled as for `address="auto"`.

    Ray 2.60 turns token authentication on for a cluster whose head finds a token when it
    starts (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`, which any local
    `ray.init()` creates). A driver joining `auto` switches to token mode when it has a token
    itself, but one given an explicit `HOST:PORT` does not, and the head then rejects it
    (`InvalidAuthToken`). Here a driver with a token always sends it (a head without
    authentication ignores it); `RAY_AUTH_MODE` set by the user is respected.
    """
    import ray

    host, sep, port = address.rpartition(":")
    if sep and host and port.isdigit() and "://" not in address:
        try:  # Ray itself retries an unreachable GCS for minutes before giving up
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise UsageError(
                f"--address {address}: no Ray head answers there ({exc.strerror or exc}); "
                "start one with `ray start --head --port PORT` and pass HOST:PORT, or drop "
                "--address to train on a local Ray"
            ) from None
    if not address.startswith("ray://"):
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )
        except ImportError:  # another Ray version: its own defaults apply
            pass
        else:
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        ray.init(address=address, log_to_driver=verbose)
    except ConnectionError as exc:
        chain, cause = [], exc
        while cause is not None:
            chain.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        if any("InvalidAuthToken" in text for text in chain):
            raise UsageError(
                f"--address {address}: the cluster uses Ray's token authentication and this "
                "machine has no token or another one; give it the head's token (the output "
                "of `ray get-auth-token` on the head) as RAY_AUTH_TOKEN, or in the file "
                "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
            ) from None
        raise UsageError(
            f"--address {address}: cannot join a Ray cluster there ({exc}); start one with "
            "`ray start --head --port PORT` and pass HOST:PORT, or drop --address to train "
            "on a local Ray"
        ) from None


def _overrides(args: argparse.Namespace) -> list[str]:
    """`--set` plus the shortcut flags, as `--set` assignments (validated the same way)."""
    sets = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        sets.append(f"seed={args.seed}")
    if getattr(args, "num_env_runners", None) is not None:
        sets.append(f"env_runners.num_env_runners={args.num_env_runners}")
    if getattr(args, "checkpoint_every", None) is not None:
        sets.append(f"checkpoint_every={args.checkpoint_every}")
    if getattr(args, "stop_iters", None) is not None:
        sets.append(f"stop={{iterations: {args.stop_iters}}}")
    if getattr(args, "stop_timesteps", None) is not None:
        sets.append(f"stop={{timesteps: {args.stop_timesteps}}}")
    return sets


def _experiment(args: argparse.Namespace) -> Any:
    """The validated experiment of `--config`, `--set` and the shortcut flags, `--logger`s
    added to its `loggers`."""
    return add_loggers(load_experiment(args.config, _overrides(args)), args.logger or [])


def _callbacks(spec: Any, output: Path) -> list[Any]:
    """The progress line and the experiment's trackers (made before Ray starts, so that its
    workers inherit the trackers' local defaults)."""
    trackers, notes = tracker_callbacks(spec.loggers, output, spec.name)
    for note in notes:
        print(f"logging to {note}")
    return [ProgressLine(spec.stop), *trackers]


def _output_dir(given: str | None, name: str) -> Path:
    out = Path(given) if given else Path("out") / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    return out.resolve()


def _report(results: Any, output: Path) -> int:
    """Print where the results are; 0 when every trial finished, 1 on errors, 130 if stopped."""
    errors, unfinished = [], []
    for result in results:
        if result.error is not None:
            errors.append(result)
        elif not result.metrics.get("done", False):
            unfinished.append(result)
        checkpoint = result.checkpoint.path if result.checkpoint else "none"
        print(f"trial {result.path}\n  last checkpoint: {checkpoint}")
    print(f"results (progress.csv, TensorBoard events) under {output}")
    print(f"  tensorboard --logdir {output}")
    for result in errors:
        first = str(result.error).strip().splitlines()
        print(f"error: trial {Path(result.path).name} failed: {first[-1] if first else ''} "
              f"(details: {Path(result.path) / 'error.txt'})", file=sys.stderr)
    if errors:
        return 1
    if unfinished:
        print(f"interrupted; continue with: rllib-alma-mi train --resume {output}")
        return INTERRUPTED
    return 0


# ----------------------------------------------------------------------------------- verbs
def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        given = [f for f in ("config", "set", "stop_iters", "stop_timesteps", "seed",
                             "num_env_runners", "checkpoint_every", "output", "logger")
                 if getattr(args, f) not in (None, [])]
        if given:
            raise UsageError(
                f"--resume continues a run with its saved settings; drop "
                f"{', '.join('--' + g.replace('_', '-') for g in given)}"
            )
        output = Path(args.resume).resolve()
        if not tuning.is_run_dir(output):
            raise UsageError(f"--resume {args.resume}: no Tune run there (no tuner.pkl)")
        _init_ray(args.address, args.verbose)
        print(f"resuming {output} from its last checkpoints")
        return _report(tuning.restore_tuner(output).fit(), output)

    spec = _experiment(args)
    output = _output_dir(args.output, spec.name)
    if tuning.is_run_dir(output):
        raise UsageError(
            f"--output {output}: already holds a run; continue it with --resume {output} "
            "or pick another --output"
        )
    callbacks = _callbacks(spec, output)
    _init_ray(args.address, args.verbose)
    seed = [spec.seed] if spec.seed is not None else None
    tuner = tuning.make_tuner(tuning.param_space(spec, seeds=seed), output, spec.stop,
                              spec.checkpoint_every, callbacks)
    print(f"training {spec.name} ({spec.env}, stop {spec.stop}) into {output}")
    return _report(tuner.fit(), output)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be at least 1")
    spec = _experiment(args)
    grid = parse_grid(spec.to_dict(), args.grid or [], spec.name)
    base = spec.seed or 0
    seeds = [base + i for i in range(args.seeds)]
    output = _output_dir(args.output, f"{spec.name}_sweep")
    if tuning.is_run_dir(output):
        raise UsageError(f"--output {output}: already holds a run; pick another --output")
    callbacks = _callbacks(spec, output)
    _init_ray(args.address, args.verbose)
    n_trials = math.prod(len(v) for v in grid.values()) * len(seeds)
    tuner = tuning.make_tuner(tuning.param_space(spec, grid, seeds), output, spec.stop,
                              spec.checkpoint_every, callbacks)
    varied = ", ".join(f"{s}.{k}={v}" for (s, k), v in grid.items()) or "no grid"
    print(f"sweeping {spec.name}: {varied}, seeds {seeds} -> {n_trials} trials into {output}")
    return _report(tuner.fit(), output)


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item}: expected key=value, e.g. {flag} sight_range=2")
        out[key.strip()] = parse_value(value)
    return out


def _print_evaluation(evaluation: Any) -> None:
    summary = evaluation.summary()
    table = Table(title=f"{evaluation.mode} evaluation, iteration "
                        f"{evaluation.training_iteration}")
    for column in ("team", "episodes", "return", "± std", "solved", "completed", "burned",
                   "steps"):
        table.add_column(column, justify="right")
    rows = [(n, s) for n, s in summary["by_team_size"].items()] + [("all", summary["all"])]
    for name, s in rows:
        table.add_row(
            name, str(s["episodes"]), f"{s['return_mean']:.2f}", f"{s['return_std']:.2f}",
            f"{s['solved_rate']:.2f}", f"{s['tasks_completed_frac']:.2f}",
            f"{s['tasks_burned_frac']:.2f}", f"{s['steps_mean']:.1f}",
        )
    console = Console(highlight=False)
    console.print(table)
    console.print(f"checkpoint {evaluation.checkpoint}; env {evaluation.env} "
                  f"{evaluation.env_config}; return = team return, solved/completed/burned "
                  "= fractions", markup=False)


def _write_json(out: str, data: dict[str, Any]) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes}: must be at least 1")
    overrides = _key_values(args.env_config, "--env-config")
    ev.find_checkpoint(args.checkpoint)
    _init_ray(None, args.verbose)
    evaluation = ev.evaluate(
        args.checkpoint, args.episodes, overrides, seed=args.seed, allocation=args.allocation,
        sample=args.sample,
    )
    _print_evaluation(evaluation)
    if args.json:
        _write_json(args.json, evaluation.to_dict())
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    if args.episodes < 4:
        raise UsageError(f"--episodes {args.episodes}: the probe needs at least 4 (it fits on "
                         "the first episodes and scores on the rest)")
    overrides = _key_values(args.env_config, "--env-config")
    ev.find_checkpoint(args.checkpoint)
    _init_ray(None, args.verbose)
    result = probe(args.checkpoint, args.module, args.episodes, args.seed, overrides)
    print(f"{result.module} of {result.checkpoint}, env {result.env_config}")
    print(f"  target: {result.target}; {result.samples_train} samples fitted, "
          f"{result.samples_test} scored")
    print(f"  R² from the {result.module}'s representation: {result.r2_representation:.3f}")
    print(f"  R² from its raw observation:           {result.r2_observation:.3f}")
    if args.json:
        _write_json(args.json, result.to_dict())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    overrides = _key_values(args.env_config, "--env-config")
    ev.find_checkpoint(args.checkpoint)
    _init_ray(None, args.verbose)
    path, frames, stats = record_episode(args.checkpoint, args.out, overrides, args.seed,
                                         args.fps)
    print(f"wrote {path}: {frames} frames; team of {stats.team_size}, return "
          f"{stats.team_return:.2f}, solved {stats.solved:.0f}, tasks completed "
          f"{stats.tasks_completed_frac:.2f}, {stats.steps} steps")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_format(args.format)
    ev.find_checkpoint(args.checkpoint)
    _init_ray(None, args.verbose)
    manifest = export_checkpoint(args.checkpoint, args.out, args.format)
    models = ", ".join(f"{name}: {file}" for name, file in manifest.models.items())
    print(f"wrote {args.out}: {args.format} models ({models}) and manifest.json; "
          f"allocation {manifest.hierarchy['allocation']!r}, run them with "
          "rllib_alma_mi.deploy.TeamPolicy.load")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    out = args.out or str(Path(args.runs[0]) / f"{args.metric}.png")
    if args.stat == "t":
        summary, note = plot_runs(args.runs, args.metric, out, x=args.x, source=args.source)
        written, what = [Path(out)], "mean"
    else:
        summary, written, note = reports.plot_iqm(args.runs, args.metric, out, x=args.x,
                                                  source=args.source, window=args.window)
        what = "IQM"
    print(f"from {note}")
    for label, n, last in summary:
        print(f"{label}: {n} seed{'s' if n != 1 else ''}, last {what} {args.metric} {last:.4g}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _console() -> Console:
    # Piped output (files, logs) gets a wide console so the configuration labels stay whole.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _print_t_table(args: argparse.Namespace) -> Any:
    window = 10 if args.window is None else args.window
    summary = summarize_runs(args.runs, window=window, source=args.source)
    table = Table(title=f"last {window} rows per seed; mean ± 95% t-interval")
    for column in ("config", "seeds", "env steps", "wall-clock", "completed %", "solved %",
                   "team return"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for _, row in summary.iterrows():
        cells = [f"{row[m]:.1f} ± {row[m + '_ci95']:.1f}" for m in SUMMARY_METRICS]
        table.add_row(row["config"], str(row["seeds"]), f"{row['env_steps']:,.0f}",
                      _duration(row["wall_clock_s"]), *cells)
    _console().print(table)
    return summary


def _interval_text(point: float, low: float, high: float) -> str:
    if math.isnan(point):
        return "-"
    if math.isnan(low):
        return f"{point:.1f} (1 seed)"
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def _print_bootstrap_table(args: argparse.Namespace) -> Any:
    summary = reports.summarize(args.runs, window=args.window, source=args.source)
    window = summary.attrs["window"]
    rows_of = "evaluation" if summary.attrs["source"] == "evaluation" else "iteration"
    table = Table(title=f"last {window} {rows_of}{'s' if window != 1 else ''} per seed; IQM "
                        "and mean over seeds [95% stratified bootstrap interval]")
    names = {"tasks_completed": "completed %", "solved": "solved %", "return": "team return"}
    table.add_column("config", justify="left")
    for column in ("seeds", "env steps", "wall-clock"):
        table.add_column(column, justify="right")
    for metric in SUMMARY_METRICS:
        table.add_column(f"{names[metric]} IQM", justify="right")
        table.add_column(f"{names[metric]} mean", justify="right")
    for _, row in summary.iterrows():
        cells = []
        for metric in SUMMARY_METRICS:
            for stat in ("iqm", "mean"):
                key = f"{metric}_{stat}"
                cells.append(_interval_text(row[key], row[f"{key}_low"], row[f"{key}_high"]))
        table.add_row(row["config"], str(row["seeds"]), f"{row['env_steps']:,.0f}",
                      _duration(row["wall_clock_s"]), *cells)
    _console().print(table)
    if summary["seeds"].min() < 10:
        print("note: with fewer than 10 seeds a bootstrap interval is narrower than a 95% "
              "interval (docs/evaluation_protocol.md); read it as a description of these seeds")
    return summary


def cmd_summarize(args: argparse.Namespace) -> int:
    if args.window is not None and args.window < 1:
        raise UsageError(f"--window {args.window}: must be at least 1")
    summary = _print_t_table(args) if args.stat == "t" else _print_bootstrap_table(args)
    print(f"from {summary.attrs['note']}")
    if args.compare:
        a, b = args.compare
        found, _ = reports.compare(args.runs, a, b, window=args.window, source=args.source)
        for metric, interval in found.items():
            if interval is None:
                print(f"P({a} > {b}) on {metric}: not logged")
                continue
            verdict = ("not established: the interval includes 0.5" if interval.contains(0.5)
                       else "established: the interval excludes 0.5")
            print(f"P({a} > {b}) on {metric}: {interval.point:.2f} "
                  f"[{interval.low:.2f}, {interval.high:.2f}] ({verdict})")
    if args.csv:
        path = Path(args.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(path, index=False, float_format="%.4g")
        print(f"wrote {path}")
    if args.marl_eval:
        records, note = reports.marl_eval_records(args.runs, source=args.source)
        try:
            path = to_marl_eval(records, args.marl_eval)
        except ValueError as exc:
            raise UsageError(f"--marl-eval {args.marl_eval}: {exc}") from None
        print(f"wrote {path} (marl-eval layout, {len(records)} records from {note})")
    if args.export:
        trials = export_curves(args.runs, args.export)
        print(f"wrote the configs and learning curves of {len(trials)} trials under {args.export}")
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllib-alma-mi",
        description="ALMA task allocation with a MINE auxiliary loss on RLlib.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and the trials' own log output")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def source_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=SOURCES, default="auto",
                       help="episode metrics from the evaluation during training or from the "
                            "training episodes (auto: evaluation when every run has it)")

    def experiment_flags(p: argparse.ArgumentParser, default_help: str) -> None:
        p.add_argument("--config", metavar="FILE.yaml", help=default_help)
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. mutual_info.mi_weight=0.01 (repeatable)")
        stop = p.add_mutually_exclusive_group()
        stop.add_argument("--stop-iters", type=int, metavar="N",
                          help="stop after N training iterations")
        stop.add_argument("--stop-timesteps", type=int, metavar="N",
                          help="stop after N environment steps")
        p.add_argument("--output", metavar="DIR", help="run directory (default out/NAME_TIME)")
        p.add_argument("--num-env-runners", type=int, metavar="N")
        p.add_argument("--address", metavar="HOST:PORT",
                       help="join an existing Ray cluster (its head's GCS address, 'auto', or "
                            "ray://HOST:PORT with ray[client]); default RAY_ADDRESS, else a "
                            "local Ray")
        p.add_argument("--checkpoint-every", type=int, metavar="K",
                       help="checkpoint every K iterations (and at the end)")
        p.add_argument("--logger", action="append", metavar="|".join(TRACKERS),
                       help="also log to an experiment tracker, added to the file's loggers "
                            "(repeatable); wandb runs offline unless WANDB_MODE or "
                            "WANDB_API_KEY is set, mlflow writes OUTPUT/mlruns unless "
                            "MLFLOW_TRACKING_URI is set")

    train = verbs.add_parser(
        "train", parents=[common], help="train one configuration with Ray Tune"
    )
    experiment_flags(train, "experiment file (default: the embedded save_the_city config)")
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", metavar="DIR",
                       help="continue an interrupted run from its last checkpoint")
    train.set_defaults(func=cmd_train)

    sweep = verbs.add_parser(
        "sweep", parents=[common], help="grid search over settings and seeds"
    )
    experiment_flags(sweep, "experiment file (default: the embedded save_the_city config)")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                       help="values of one setting, e.g. mi_weight=0.0001,0.001 (repeatable)")
    sweep.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="seeds per grid point (the config's seed, +1, ...)")
    sweep.set_defaults(func=cmd_sweep, seed=None)

    evaluate = verbs.add_parser(
        "evaluate", parents=[common], help="greedy (or sampled) episodes with a checkpoint"
    )
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH",
                          help="checkpoint, trial or one-trial run directory")
    evaluate.add_argument("--episodes", type=int, default=20, metavar="N")
    evaluate.add_argument("--env-config", action="append", metavar="KEY=VALUE",
                          help="change the env, e.g. scenario=2-8a_2-8b or sight_range=2")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    evaluate.add_argument("--allocation", choices=("learned", "heuristic", "random"),
                          help="replace the run's allocation rule, keeping its trained workers")
    evaluate.add_argument("--sample", action="store_true",
                          help="sample the allocator's and workers' actions from their "
                               "distributions, as in training, instead of taking the most "
                               "likely ones (torch seeded with each episode's env seed)")
    evaluate.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    probe_verb = verbs.add_parser(
        "probe", parents=[common],
        help="how much of the global state a module's representation carries (linear probe)",
    )
    probe_verb.add_argument("--checkpoint", required=True, metavar="PATH",
                            help="checkpoint, trial or one-trial run directory")
    probe_verb.add_argument("--module", choices=PROBED_MODULES, default=PROBED_MODULES[0])
    probe_verb.add_argument("--episodes", type=int, default=50, metavar="N",
                            help="greedy episodes; the first 70%% fit the probe, the rest "
                                 "score it")
    probe_verb.add_argument("--env-config", action="append", metavar="KEY=VALUE",
                            help="change the env, e.g. sight_range=2")
    probe_verb.add_argument("--seed", type=int, default=1000,
                            help="seed of the first episode")
    probe_verb.add_argument("--json", metavar="OUT.json", help="also write the result as JSON")
    probe_verb.set_defaults(func=cmd_probe)

    render = verbs.add_parser(
        "render", parents=[common], help="one greedy episode as an animated GIF"
    )
    render.add_argument("--checkpoint", required=True, metavar="PATH")
    render.add_argument("--out", required=True, metavar="FILE.gif")
    render.add_argument("--env-config", action="append", metavar="KEY=VALUE")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--fps", type=float, default=None,
                        help="frames per second (default: the env's render_fps)")
    render.set_defaults(func=cmd_render)

    export = verbs.add_parser(
        "export", parents=[common],
        help="write the trained networks as standalone models (run without Ray)",
    )
    export.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="checkpoint, trial or one-trial run directory")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="new or empty directory (or an earlier export, replaced)")
    export.add_argument("--format", default="torchscript", metavar="FORMAT",
                        help="torchscript (needs torch to run) or onnx (needs onnxruntime)")
    export.set_defaults(func=cmd_export)

    plot = verbs.add_parser(
        "plot", parents=[common], help="learning curves over seeds from run directories"
    )
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--metric", default="solved",
                      help="solved, return, tasks_completed, tasks_burned, episode_len, "
                           "mi_value, mi_loss, imitation_loss, the population's "
                           "best_fitness, mean_fitness, rl_fitness, rl_rank, ea_mi_value, "
                           "iteration_time, training_step_time, or a progress.csv column")
    plot.add_argument("--x", default="env_steps",
                      help="env_steps, iterations, time, sampled_steps, or a column")
    plot.add_argument("--out", metavar="FILE.png", help="default RUN_DIR/METRIC.png")
    plot.add_argument("--stat", choices=("iqm", "t"), default="iqm",
                      help="iqm: IQM curves with 95%% bootstrap bands, plus the performance "
                           "profile of the final scores in FILE_profile.png (default); t: mean "
                           "and 95%% t-interval curves")
    plot.add_argument("--window", type=int, metavar="K",
                      help="rows averaged per seed for the profile (default: the last "
                           "evaluation, or the last 10 iterations)")
    source_flag(plot)
    plot.set_defaults(func=cmd_plot)

    summarize = verbs.add_parser(
        "summarize", parents=[common],
        help="final performance per configuration (IQM and mean with 95%% bootstrap "
             "intervals over seeds)",
    )
    summarize.add_argument("runs", nargs="+", metavar="RUN_DIR")
    summarize.add_argument("--window", type=int, metavar="K",
                           help="rows averaged at the end of each seed's run (default: the "
                                "last evaluation, or the last 10 iterations without "
                                "evaluation data)")
    summarize.add_argument("--stat", choices=("iqm", "t"), default="iqm",
                           help="iqm: IQM and mean with stratified bootstrap intervals "
                                "(default); t: mean ± Student-t interval")
    summarize.add_argument("--compare", nargs=2, metavar=("A", "B"),
                           help="probability that a seed of configuration A beats one of B, "
                                "with its bootstrap interval (labels as in the table)")
    summarize.add_argument("--marl-eval", metavar="FILE.json",
                           help="also write the evaluations in marl-eval's JSON layout")
    source_flag(summarize)
    summarize.add_argument("--csv", metavar="OUT.csv", help="also write the table as CSV")
    summarize.add_argument("--export", metavar="DIR",
                           help="also copy each trial's params.json, learning curves and "
                                "evaluate --json and probe --json files (no checkpoints) under "
                                "DIR, where plot and summarize still work")
    summarize.set_defaults(func=cmd_summarize)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    try:
        return args.func(args)
    except INPUT_ERRORS as exc:
        message = " ".join(str(exc).split())
        print(f"rllib-alma-mi {args.verb}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
