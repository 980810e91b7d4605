"""Evaluation of a trained checkpoint, also on team sizes and sight ranges not trained on.

Greedy (the default), both levels take their most likely action: the allocator decodes its
allocation autoregressively with the most likely task per agent, workers take the argmax of
their masked logits. Sampled (`sample=True`), both sample from their action distributions as
in training, with torch's generator seeded per episode by the episode's env seed
(`rllib_alma_mi.rllib.greedy`). The reported `return` is the team return `HierarchicalEnv`
reports at an episode's end: the sum over env steps of the wrapped environment's team reward
(its mean over live agents), which for SaveTheCity is the return ALMA reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rllib_alma_mi.app.checkpoints import load_algorithm, uses_new_api_stack
from rllib_alma_mi.app.experiment import check_env_config
from rllib_alma_mi.keys import (
    ALLOCATOR,
    BASE_ENV_STEPS,
    SOLVED,
    TASKS_BURNED,
    TASKS_COMPLETED,
    agent_to_module,
)
from rllib_alma_mi.registry import HIERARCHY_KEY, make_env
from rllib_alma_mi.rllib.greedy import GreedyModuleActor, play_episode, seeded_sampling
from rllib_alma_mi.settings import ALLOCATIONS

CHECKPOINT_MARKER = "rllib_checkpoint.json"


class EvaluationError(ValueError):
    """No usable checkpoint at a path, or a policy that cannot act in the requested env."""


# ----------------------------------------------------------------------------------- paths
def _checkpoint_index(path: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in path.name if ch.isdigit())
    return (int(digits) if digits else -1, path.name)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory at `path`, or the latest one of the single trial under it.

    `path` may be a checkpoint directory, a Tune trial directory or a one-trial run directory.
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or directory")
    if (path / CHECKPOINT_MARKER).is_file():
        return path
    found = [m.parent for m in path.rglob(CHECKPOINT_MARKER)]
    if not found:
        raise EvaluationError(
            f"{path}: no checkpoint in it or below (looked for {CHECKPOINT_MARKER}); pass a "
            "checkpoint_* directory or a run trained with checkpoints"
        )
    trials = sorted({c.parent for c in found})
    if len(trials) > 1:
        listing = ", ".join(str(t) for t in trials[:4]) + (" ..." if len(trials) > 4 else "")
        raise EvaluationError(
            f"{path}: holds {len(trials)} trials; pass one trial or checkpoint directory: "
            f"{listing}"
        )
    return max(found, key=_checkpoint_index)


# ----------------------------------------------------------------------------------- acting
def _rebuild(module_id: str, module: Any, obs_space: Any, act_space: Any) -> Any:
    """`module` built for other spaces (another team size or scenario), with its weights."""
    if module.observation_space == obs_space and module.action_space == act_space:
        return module
    new = type(module)(
        observation_space=obs_space,
        action_space=act_space,
        model_config=dict(module.model_config),
    )
    try:
        new.load_state_dict(module.state_dict())
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "mismatch" in ln or "key" in ln), lines[-1])
        raise EvaluationError(
            f"the trained '{module_id}' module cannot act in this environment: its weights "
            f"depend on the spaces it was trained on ({detail})"
        ) from None
    return new


class GreedyActor:
    """Greedy (or, with `sample`, sampled) actions of a restored Algorithm for the agents of
    one `HierarchicalEnv`.

    On the new API stack the modules are rebuilt for `env`'s spaces when they differ from the
    training env's (other team sizes), keeping the trained weights, and act through
    `GreedyModuleActor`; on the old stack the policies act through `compute_single_action`
    (`explore=sample`). Sampled actions come from torch's global generator (`run_episode`
    seeds it per episode).
    """

    def __init__(self, algo: Any, env: Any, sample: bool = False):
        self.algo = algo
        self.sample = sample
        self.new_stack = uses_new_api_stack(algo)
        agent_of = {agent_to_module(a): a for a in env.possible_agents}
        modules: dict[str, Any] = {}
        for module_id, agent in agent_of.items():
            obs_space, act_space = env.observation_spaces[agent], env.action_spaces[agent]
            if self.new_stack:
                module = _rebuild(module_id, algo.get_module(module_id), obs_space, act_space)
                module.eval()
                modules[module_id] = module
            else:
                space = algo.get_policy(module_id).observation_space
                if getattr(space, "original_space", space) != obs_space:
                    raise EvaluationError(
                        "evaluating an old-API-stack checkpoint on spaces other than its "
                        "training env's is not supported; keep the team size and scenario"
                    )
        self._modules = GreedyModuleActor(modules, sample) if self.new_stack else None

    @property
    def modules(self) -> dict[str, Any]:
        """The RLModules acting, by module id (empty for an old-API-stack checkpoint)."""
        return {} if self._modules is None else self._modules.modules

    def act(self, observations: dict[str, Any]) -> dict[str, Any]:
        """Actions for the agents in `observations`: the allocator's (N,) allocation, each
        worker's int action."""
        if self._modules is not None:
            return self._modules.act(observations)
        return {
            agent: self.algo.compute_single_action(
                obs, policy_id=agent_to_module(agent), explore=self.sample
            )
            for agent, obs in observations.items()
        }


# ----------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeStats:
    """One evaluation episode: its seed, team size, team return, length and task outcome."""

    seed: int
    team_size: int
    team_return: float
    steps: int
    solved: float
    tasks_completed_frac: float
    tasks_burned_frac: float
    allocations: int


def make_eval_env(env_name: str, env_config: dict[str, Any], render: bool = False) -> Any:
    """The hierarchy env of a checkpoint's config; with `render`, frames are rgb arrays.

    The env kwargs are checked first: a bad `--env-config` raises `ConfigError`.
    """
    kwargs = {k: v for k, v in env_config.items() if not k.startswith("_")}
    check_env_config("--env-config", env_name, kwargs)
    config = dict(env_config)
    if render:
        config["render_mode"] = "rgb_array"
    return make_env(env_name, config)


def run_episode(
    env: Any,
    actor: GreedyActor,
    seed: int,
    on_frame: Callable[[Any], None] | None = None,
) -> EpisodeStats:
    """Play one episode from `env.reset(seed=seed)` with `actor` (greedy or sampled: a sampled
    actor draws from torch's generator seeded with `seed`, so the episode depends on `seed`
    alone); `on_frame(env)` is called whenever the workers are about to act (after each
    allocation and env step) and at the end."""

    def before_act(obs: dict[str, Any]) -> None:
        if any(a != ALLOCATOR for a in obs):
            on_frame(env)

    with seeded_sampling(seed):
        episode = play_episode(env, actor.act, seed, None if on_frame is None else before_act)
    if on_frame is not None:
        on_frame(env)
    stats = episode.stats
    return EpisodeStats(
        seed=seed,
        team_size=episode.team_size,
        team_return=episode.team_return,
        steps=int(stats.get(BASE_ENV_STEPS, 0)),
        solved=float(stats.get(SOLVED, math.nan)),
        tasks_completed_frac=float(stats.get(TASKS_COMPLETED, math.nan)),
        tasks_burned_frac=float(stats.get(TASKS_BURNED, math.nan)),
        allocations=episode.allocations,
    )


def summarize(episodes: list[EpisodeStats]) -> dict[str, float]:
    """Means over episodes (and the return's standard deviation)."""
    returns = np.array([e.team_return for e in episodes])
    return {
        "episodes": len(episodes),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "solved_rate": float(np.mean([e.solved for e in episodes])),
        "tasks_completed_frac": float(np.mean([e.tasks_completed_frac for e in episodes])),
        "tasks_burned_frac": float(np.mean([e.tasks_burned_frac for e in episodes])),
        "steps_mean": float(np.mean([e.steps for e in episodes])),
    }


@dataclass
class Evaluation:
    """The outcome of `evaluate`: per-episode stats and their summaries; `mode` is "greedy"
    or "sampled"."""

    checkpoint: str
    training_iteration: int | None
    env: str
    env_config: dict[str, Any]
    episodes: list[EpisodeStats]
    mode: str = "greedy"

    def summary(self) -> dict[str, Any]:
        by_size: dict[int, list[EpisodeStats]] = defaultdict(list)
        for episode in self.episodes:
            by_size[episode.team_size].append(episode)
        return {
            "all": summarize(self.episodes),
            "by_team_size": {str(n): summarize(eps) for n, eps in sorted(by_size.items())},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "checkpoint": self.checkpoint,
            "training_iteration": self.training_iteration,
            "env": self.env,
            "env_config": self.env_config,
            "summary": self.summary(),
            "episodes": [asdict(e) for e in self.episodes],
        }


def restore(checkpoint: str | Path) -> tuple[Path, Any]:
    """(checkpoint dir, restored Algorithm) for a checkpoint, trial or run directory."""
    path = find_checkpoint(checkpoint).resolve()
    try:
        return path, load_algorithm(path)
    except RuntimeError as exc:
        if "loading state_dict" not in str(exc):
            raise
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise EvaluationError(
            f"{path}: the checkpoint's weights do not fit the installed modules (saved by "
            f"another version of the code?): {' '.join(lines[:2])}"
        ) from None


def evaluation_env_config(
    algo: Any, overrides: dict[str, Any], allocation: str | None = None
) -> dict[str, Any]:
    """The training env_config (with its hierarchy block) updated by `overrides`.

    `allocation` ("learned", "heuristic" or "random") replaces the trained run's allocation
    rule, keeping its trained workers: the ablation of the allocator itself.
    """
    config = {**dict(algo.config.env_config), **overrides}
    if allocation is None:
        return config
    trained = config.get(HIERARCHY_KEY, {}).get("allocation", "learned")
    swappable = tuple(a for a in ALLOCATIONS if a != "none")
    if allocation not in swappable or trained == "none":
        raise EvaluationError(
            f"allocation={allocation!r}: a run trained with allocation {trained!r} can be "
            f"evaluated with one of {list(swappable) if trained != 'none' else []}"
        )
    if allocation == "learned" and trained != "learned":
        raise EvaluationError(
            f"allocation='learned' needs a run trained with the learned allocator, this one "
            f"used {trained!r}"
        )
    block = {**config.get(HIERARCHY_KEY, {}), "allocation": allocation}
    if allocation != "learned":
        # Training-time terms of the learned allocator only.
        block["imitation_steps"] = 0
        block["allocator_credit"] = "team"
    config[HIERARCHY_KEY] = block
    return config


def evaluate(
    checkpoint: str | Path,
    episodes: int,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    allocation: str | None = None,
    *,
    sample: bool = False,
) -> Evaluation:
    """Episodes (env seeds `seed`, `seed + 1`, ...) with the policy of `checkpoint`;
    `allocation` swaps the allocation rule (see `evaluation_env_config`).

    Greedy by default. With `sample`, the allocator and the workers sample from their action
    distributions as in training; before each episode torch's global generator is seeded with
    that episode's env seed (and restored afterwards), so the same checkpoint, seeds and
    `sample=True` give the same episodes, and an episode does not depend on the others."""
    path, algo = restore(checkpoint)
    try:
        env_config = evaluation_env_config(algo, overrides or {}, allocation)
        env = make_eval_env(algo.config.env, env_config)
        actor = GreedyActor(algo, env, sample=sample)
        stats = [run_episode(env, actor, seed + i) for i in range(episodes)]
        iteration = getattr(algo, "iteration", None)
        env.close()
    finally:
        algo.stop()
    shown = {k: v for k, v in env_config.items() if not k.startswith("_")}
    if allocation is not None:
        shown["allocation"] = allocation
    mode = "sampled" if sample else "greedy"
    return Evaluation(str(path), iteration, algo.config.env, shown, stats, mode)
