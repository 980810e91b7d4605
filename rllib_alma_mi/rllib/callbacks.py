"""Episode metrics of task-allocation environments, reported under `result["env_runners"]`."""

from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_alma_mi.hierarchy import EPISODE_STATS


class TaskMetricsCallback(RLlibCallback):
    """Logs `solved`, `tasks_completed_frac`, `tasks_burned_frac` and `base_env_steps`.

    The hierarchy writes these into every agent's info at the episode's last step.
    `base_env_steps` counts the wrapped environment's steps (RLlib's own step counters also
    count the allocation steps); its lifetime sum is `num_base_env_steps_lifetime`.
    """

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        last_infos = episode.get_infos(-1)
        stats = next((i for i in last_infos.values() if "base_env_steps" in i), None)
        if stats is None:
            return
        for key in EPISODE_STATS:
            if key in stats:
                metrics_logger.log_value(key, float(stats[key]), window=100)
        steps = int(stats["base_env_steps"])
        metrics_logger.log_value("base_env_steps", steps, window=100)
        metrics_logger.log_value("num_base_env_steps_lifetime", steps, reduce="lifetime_sum")
