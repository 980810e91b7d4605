"""RLlib's `MultiAgentEnvRunner` without two per-step costs that grow with the batch.

In RLlib 2.60 `MultiAgentEnvRunner._sample`
- calls `to_numpy()` at every vector step on every episode finished so far in the current
  `sample()` call, not once per episode, so its cost grows with the square of the episodes per
  call (a fifth of the sampling time at SaveTheCity's default settings);
- logs four step counters per agent and two per env step through the `MetricsLogger`;
- has its vector env deep-copy every sub-env's observations at every step (7% of the sampling
  time), which only guards against envs that reuse their observation buffers.

This runner samples with that conversion off, converts each returned episode once, adds the
step counts up in plain counters, logging each total once per `sample()` call, and turns the
deep copy off for `HierarchicalEnv`s (whose observations are their own copies, never changed
after they are returned). The episodes and the logged totals are the same as the stock
runner's.

As an evaluation runner of `AlmaPPOConfig.seeded_evaluation()` it plays fixed episodes: the
stock runner resets its envs with one seed per `sample()` call and then counts the first
episodes to finish, which depend on the policy (a faster one finishes a second episode on one
env before another env's first); here each episode is its own one-episode call on one env,
reset with that episode's seed from `config.eval_episode_seeds`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.utils.metrics import (
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
)

from rllib_alma_mi.hierarchy import HierarchicalEnv


class AlmaEnvRunner(MultiAgentEnvRunner):
    """`MultiAgentEnvRunner` that converts each sampled episode to numpy once (when
    `config.episodes_to_numpy`, RLlib's default) and logs its step counters once per call."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._convert_episodes = self.episodes_to_numpy
        self.episodes_to_numpy = False  # read by `_sample` at every step
        self._reset_counts()

    def make_env(self) -> None:
        super().make_env()
        envs = getattr(self.env, "envs", None)
        if envs and all(isinstance(e.unwrapped, HierarchicalEnv) for e in envs):
            self.env.copy = False

    def _sample(self, *, num_episodes: int | None = None, **kwargs: Any
                ) -> list[MultiAgentEpisode]:
        seeds = self.episode_seeds(num_episodes)
        if seeds is None:
            return self._sample_converted(num_episodes=num_episodes, **kwargs)
        if self.num_envs != 1:
            raise ValueError(
                f"seeded evaluation plays each episode on one env, but this evaluation runner "
                f"has num_envs_per_env_runner={self.num_envs}; leave evaluation_config's "
                "num_envs_per_env_runner at 1 (as seeded_evaluation() sets it)"
            )
        own_seed, episodes = self._seed, []
        try:
            for seed in seeds:
                self._seed = seed  # a one-episode call resets its env with `self._seed`
                # Sampled (non-greedy) evaluation draws from torch: seed those draws per
                # episode too, without moving the process's own random stream.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    episodes += self._sample_converted(num_episodes=1, **kwargs)
        finally:
            self._seed = own_seed
        return episodes

    def episode_seeds(self, num_episodes: int | None) -> list[int] | None:
        """The seeds of the `num_episodes` episodes this evaluation runner plays, or None
        (not a seeded evaluation: training, or an evaluation without seeds).

        RLlib splits an evaluation's episodes over the remote runners as `episodes // W`,
        one more for the first `episodes % W`; runner i takes the matching contiguous slice
        of the seed list (a local evaluation runner takes them all).
        """
        seeds = getattr(self.config, "eval_episode_seeds", None)
        if not (self.config.in_evaluation and seeds and num_episodes):
            return None
        runners = self.config.evaluation_num_env_runners
        index = max(int(self.worker_index or 0), 1) - 1
        start = 0
        if runners and self.worker_index:
            each, extra = divmod(len(seeds), runners)
            start = index * each + min(index, extra)
        return [seeds[(start + k) % len(seeds)] for k in range(num_episodes)]

    def _sample_converted(self, **kwargs: Any) -> list[MultiAgentEpisode]:
        episodes = super()._sample(**kwargs)
        if self._convert_episodes:
            for episode in episodes:
                episode.to_numpy()
        self._log_counts()
        return episodes

    def _increase_sampled_metrics(self, num_steps, next_obs, episode):
        self._env_steps += num_steps
        self._episodes += int(episode.is_done)
        for agent_id in next_obs:
            self._agent_steps[str(agent_id)] += 1
            self._module_steps[episode.module_for(agent_id)] += 1
        return num_steps

    def _reset_counts(self) -> None:
        self._env_steps = self._episodes = 0
        self._agent_steps: Counter[str] = Counter()
        self._module_steps: Counter[str] = Counter()

    def _log_counts(self) -> None:
        log = self.metrics.log_value
        log(NUM_ENV_STEPS_SAMPLED, self._env_steps, reduce="sum")
        log(
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            self._env_steps,
            reduce="lifetime_sum",
            with_throughput=True,
        )
        if self._episodes:
            log(NUM_EPISODES, self._episodes, reduce="sum")
            log(NUM_EPISODES_LIFETIME, self._episodes, reduce="lifetime_sum")
        for per_call, lifetime, counts in (
            (NUM_AGENT_STEPS_SAMPLED, NUM_AGENT_STEPS_SAMPLED_LIFETIME, self._agent_steps),
            (NUM_MODULE_STEPS_SAMPLED, NUM_MODULE_STEPS_SAMPLED_LIFETIME, self._module_steps),
        ):
            for name, count in counts.items():
                log((per_call, name), count, reduce="sum")
                log((lifetime, name), count, reduce="lifetime_sum")
        self._reset_counts()
