"""Ray Tune's W&B and MLflow logger callbacks, keeping the local defaults of `app.trackers`
after a resume (`train --resume` unpickles them and calls `setup()` again).

A module of its own so that the tracker packages are imported only when a tracker is used.
"""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

# Environment defaults (set only where the user set nothing) of the local modes.
WANDB_OFFLINE_ENV = {"WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}
MLFLOW_LOCAL_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}


def set_env_defaults(env: dict[str, str]) -> None:
    """`os.environ.setdefault` for each item."""
    for key, value in env.items():
        os.environ.setdefault(key, value)


class LocalWandbLoggerCallback(WandbLoggerCallback):
    """Ray's `WandbLoggerCallback`; one made with `mode="offline"` stays offline."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.kwargs.get("mode") == "offline":
            set_env_defaults(WANDB_OFFLINE_ENV)  # Ray asks for an API key unless WANDB_MODE says
        super().setup(*args, **kwargs)


class LocalMLflowLoggerCallback(MLflowLoggerCallback):
    """Ray's `MLflowLoggerCallback`; one with a `file:` tracking URI keeps its file store."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.tracking_uri and self.tracking_uri.startswith("file:"):
            set_env_defaults(MLFLOW_LOCAL_ENV)
        super().setup(*args, **kwargs)
