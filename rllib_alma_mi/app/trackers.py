"""Experiment trackers (Weights & Biases, MLflow) as Ray Tune logger callbacks, local by default.

`tracker_callbacks(["wandb", "mlflow"], output, name)` gives Ray's own
`WandbLoggerCallback`/`MLflowLoggerCallback` for a run directory. Neither makes a network call
unless the environment configures one:

- wandb: offline unless `WANDB_MODE` or `WANDB_API_KEY` is set (a `wandb login` alone does not
  turn it online). Offline, each trial's run is written to `OUTPUT/wandb/offline-run-*-TRIAL_ID`
  (or under `WANDB_DIR`; upload later with `wandb sync`), and W&B's error reporting is off.
  The project is `WANDB_PROJECT`, or else the experiment's name; the group is the run
  directory's name.
- mlflow: a file store at `OUTPUT/mlruns` unless `MLFLOW_TRACKING_URI` is set, with MLflow's
  usage telemetry off (`MLFLOW_DISABLE_TELEMETRY`) and the file store allowed
  (`MLFLOW_ALLOW_FILE_STORE`, which MLflow >= 3.7 asks for). The experiment is
  `MLFLOW_EXPERIMENT_NAME`, or else the experiment's name; one MLflow run per trial.

The local defaults are written to `os.environ` (only where the user set nothing) when the
callbacks are made, before Ray starts, so that Ray's workers inherit them, and again by each
callback's `setup()`, so a resumed run (`train --resume`) keeps them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from rllib_alma_mi.app.schema import TRACKERS, ConfigError

# tracker -> (module to import, extra of this package that installs it)
_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def require_packages(names: list[str]) -> None:
    """Raise a one-line ConfigError naming the extra to install for a tracker not installed."""
    for name in names:
        if name not in _PACKAGES:
            raise ConfigError(f"loggers: {name!r} is not a tracker; allowed: {', '.join(TRACKERS)}")
        module, extra = _PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"loggers: {name} needs the {module} package: pip install "
                f"'rllib-alma-mi[{extra}]' (or pip install {module})"
            ) from None


def wandb_is_offline() -> bool:
    """True when W&B should stay offline: neither WANDB_MODE nor WANDB_API_KEY is set."""
    return not (os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"))


def _wandb_callback(output: Path, name: str) -> tuple[Any, str]:
    from rllib_alma_mi.app import tracker_callbacks as tc

    project = os.environ.get("WANDB_PROJECT") or name
    # The trials' runs go to OUTPUT/wandb/: the trial directories Tune hands the callback are
    # staging copies, synced to OUTPUT before W&B has finished writing.
    kwargs: dict[str, Any] = {} if os.environ.get("WANDB_DIR") else {"dir": str(output)}
    where = os.environ.get("WANDB_DIR") or str(output)
    if wandb_is_offline():
        tc.set_env_defaults(tc.WANDB_OFFLINE_ENV)
        note = (f"W&B offline (project {project}): runs under {where}/wandb/; upload one with "
                "`wandb sync DIR`")
        return tc.LocalWandbLoggerCallback(project=project, mode="offline", **kwargs), note
    mode = os.environ.get("WANDB_MODE", "online")
    note = f"W&B {mode} (project {project}; local files under {where}/wandb/)"
    return tc.LocalWandbLoggerCallback(project=project, **kwargs), note


def _mlflow_callback(output: Path, name: str) -> tuple[Any, str]:
    from rllib_alma_mi.app import tracker_callbacks as tc

    experiment = None if os.environ.get("MLFLOW_EXPERIMENT_NAME") else name
    shown = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    if os.environ.get("MLFLOW_TRACKING_URI"):
        note = f"MLflow at {os.environ['MLFLOW_TRACKING_URI']} (experiment {shown})"
        return tc.LocalMLflowLoggerCallback(experiment_name=experiment), note
    uri = (output / "mlruns").as_uri()
    tc.set_env_defaults(tc.MLFLOW_LOCAL_ENV)
    note = (f"MLflow file store {uri} (experiment {shown}); browse with "
            f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}")
    return tc.LocalMLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment), note


_FACTORIES = {"wandb": _wandb_callback, "mlflow": _mlflow_callback}


def tracker_callbacks(names: list[str], output: Path, name: str) -> tuple[list[Any], list[str]]:
    """Tune logger callbacks for the trackers `names` of a run at `output` (an absolute run
    directory) named `name`, and one line per tracker saying where it writes.

    Sets the local defaults described in the module docstring in `os.environ`; call it before
    Ray starts. Raises ConfigError for an unknown tracker or one whose package is missing.
    """
    require_packages(names)
    callbacks, notes = [], []
    for tracker in names:
        callback, note = _FACTORIES[tracker](output, name)
        callbacks.append(callback)
        notes.append(note)
    return callbacks, notes
