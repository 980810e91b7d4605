"""Episode metrics of task-allocation environments, reported under `result["env_runners"]`."""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_alma_mi.keys import (
    BASE_ENV_STEPS,
    BASE_ENV_STEPS_LIFETIME,
    EPISODE_STATS,
    TEAM_RETURN,
)


def _final_stats(episode: Any) -> dict[str, Any] | None:
    """The hierarchy's end-of-episode stats from any agent's last info, or None."""
    if hasattr(episode, "get_infos"):  # new API stack: MultiAgentEpisode
        infos = episode.get_infos(-1).values()
    elif hasattr(episode, "last_info_for"):  # old API stack: EpisodeV2
        infos = (episode.last_info_for(a) or {} for a in episode.get_agents())
    else:  # the old stack passes the exception of a failed episode
        return None
    return next((i for i in infos if BASE_ENV_STEPS in i), None)


class TaskMetricsCallback(RLlibCallback):
    """Logs `solved`, `tasks_completed_frac`, `tasks_burned_frac`, `team_return` and
    `base_env_steps` per episode.

    The hierarchy writes these into every agent's info at the episode's last step.
    `base_env_steps` counts the wrapped environment's steps (RLlib's own step counters also
    count the allocation steps); its lifetime sum is `num_base_env_steps_lifetime` (new API
    stack only). On the old API stack the values go to the episode's custom metrics and are
    copied from `custom_metrics/<key>_mean` to `result["env_runners"][<key>]`.
    """

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        stats = _final_stats(episode)
        if stats is None:
            return
        values = {k: float(stats[k]) for k in (*EPISODE_STATS, TEAM_RETURN) if k in stats}
        steps = int(stats[BASE_ENV_STEPS])
        if metrics_logger is None:
            if hasattr(episode, "custom_metrics"):
                episode.custom_metrics.update(values, base_env_steps=steps)
            return
        for key, value in values.items():
            metrics_logger.log_value(key, value, window=100)
        metrics_logger.log_value(BASE_ENV_STEPS, steps, window=100)
        metrics_logger.log_value(BASE_ENV_STEPS_LIFETIME, steps, reduce="lifetime_sum")

    def on_train_result(self, *, result: dict, **kwargs) -> None:
        runners = result.get("env_runners")
        custom = runners.get("custom_metrics") if isinstance(runners, dict) else None
        if not custom:
            return
        for key in (*EPISODE_STATS, TEAM_RETURN, BASE_ENV_STEPS):
            if f"{key}_mean" in custom and key not in runners:
                runners[key] = custom[f"{key}_mean"]


def add_callback(config: Any, callback: type) -> None:
    """Append `callback` to `config.callbacks_class` unless a subclass of it is there already
    (RLlib's default `RLlibCallback` placeholder is dropped)."""
    current = config.callbacks_class
    classes = list(current) if isinstance(current, (list, tuple)) else [current]
    if any(isinstance(c, type) and issubclass(c, callback) for c in classes):
        return
    classes = [c for c in classes if c is not RLlibCallback]
    config.callbacks_class = classes + [callback] if classes else callback
