"""Greedy evaluation of a trained checkpoint, also on team sizes and sight ranges not trained on.

Both levels act greedily: the allocator decodes its allocation autoregressively with the most
likely task per agent, workers take the argmax of their masked logits. The reported `return`
is the team return: the sum over env steps of the wrapped environment's team reward (its mean
over live agents), which for SaveTheCity is the return ALMA reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_alma_mi.app.checkpoints import load_algorithm, uses_new_api_stack
from rllib_alma_mi.app.experiment import check_env_config
from rllib_alma_mi.keys import ALLOCATOR, agent_to_module
from rllib_alma_mi.registry import HIERARCHY_KEY, make_env
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
def _stack(observations: list[Any]) -> Any:
    """A list of (nested dict) observations → one batch of tensors with leading axis B."""
    first = observations[0]
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in observations]) for k in first}
    return torch.as_tensor(np.stack([np.asarray(o) for o in observations]))


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
    """Greedy actions of a restored Algorithm for the agents of one `HierarchicalEnv`.

    On the new API stack the modules are rebuilt for `env`'s spaces when they differ from the
    training env's (other team sizes), keeping the trained weights.
    """

    def __init__(self, algo: Any, env: Any):
        self._module_of = agent_to_module
        self.algo = algo
        self.new_stack = uses_new_api_stack(algo)
        agent_of = {agent_to_module(a): a for a in env.possible_agents}
        self.modules: dict[str, Any] = {}
        for module_id, agent in agent_of.items():
            obs_space, act_space = env.observation_spaces[agent], env.action_spaces[agent]
            if self.new_stack:
                module = _rebuild(module_id, algo.get_module(module_id), obs_space, act_space)
                module.eval()
                self.modules[module_id] = module
            else:
                space = algo.get_policy(module_id).observation_space
                if getattr(space, "original_space", space) != obs_space:
                    raise EvaluationError(
                        "evaluating an old-API-stack checkpoint on spaces other than its "
                        "training env's is not supported; keep the team size and scenario"
                    )

    def act(self, observations: dict[str, Any]) -> dict[str, Any]:
        """Greedy actions for the agents in `observations`: the allocator's (N,) allocation,
        each worker's int action (one batched forward pass per module)."""
        if not self.new_stack:
            return {
                agent: self.algo.compute_single_action(
                    obs, policy_id=self._module_of(agent), explore=False
                )
                for agent, obs in observations.items()
            }
        groups: dict[str, list[str]] = defaultdict(list)
        for agent in observations:
            groups[self._module_of(agent)].append(agent)
        actions: dict[str, Any] = {}
        with torch.no_grad():
            for module_id, agents in groups.items():
                batch = {Columns.OBS: _stack([observations[a] for a in agents])}
                out = self.modules[module_id].forward_inference(batch)
                if Columns.ACTIONS in out:
                    chosen = out[Columns.ACTIONS]
                else:
                    chosen = out[Columns.ACTION_DIST_INPUTS].argmax(-1)
                for agent, action in zip(agents, chosen.cpu().numpy(), strict=True):
                    actions[agent] = action
        return actions


# ----------------------------------------------------------------------------------- episodes
class _TeamRewardTap:
    """Transparent proxy of a ParallelEnv that sums its team reward (mean over live agents)."""

    def __init__(self, env: Any):
        self._env = env
        self.total = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def reset(self, *args: Any, **kwargs: Any) -> Any:
        self.total = 0.0
        return self._env.reset(*args, **kwargs)

    def step(self, actions: dict[str, Any]) -> Any:
        out = self._env.step(actions)
        if out[1]:
            self.total += float(np.mean(list(out[1].values())))
        return out


@dataclass
class EpisodeStats:
    """One greedy episode: its seed, team size, team return, length and task outcome."""

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
    env = make_env(env_name, config)
    env.base = _TeamRewardTap(env.base)
    return env


def run_episode(
    env: Any,
    actor: GreedyActor,
    seed: int,
    on_frame: Callable[[Any], None] | None = None,
) -> EpisodeStats:
    """Play one greedy episode; `on_frame(env)` is called whenever the workers are about to
    act (after each allocation and env step) and at the end."""
    obs, _ = env.reset(seed=seed)
    team_size = len(env.base.agents)
    allocations = 0
    infos: dict[str, Any] = {}
    while True:
        if on_frame is not None and any(a != ALLOCATOR for a in obs):
            on_frame(env)
        allocations += ALLOCATOR in obs
        obs, _, terms, truncs, infos = env.step(actor.act(obs))
        if terms.get("__all__") or truncs.get("__all__"):
            break
    if on_frame is not None:
        on_frame(env)
    last = next((i for i in infos.values() if "base_env_steps" in i), {})
    return EpisodeStats(
        seed=seed,
        team_size=team_size,
        team_return=env.base.total,
        steps=int(last.get("base_env_steps", 0)),
        solved=float(last.get("solved", math.nan)),
        tasks_completed_frac=float(last.get("tasks_completed_frac", math.nan)),
        tasks_burned_frac=float(last.get("tasks_burned_frac", math.nan)),
        allocations=allocations,
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
    """The outcome of `evaluate`: per-episode stats and their summaries."""

    checkpoint: str
    training_iteration: int | None
    env: str
    env_config: dict[str, Any]
    episodes: list[EpisodeStats]

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
        block["imitation_steps"] = 0  # a training-time term of the learned allocator only
    config[HIERARCHY_KEY] = block
    return config


def evaluate(
    checkpoint: str | Path,
    episodes: int,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    allocation: str | None = None,
) -> Evaluation:
    """Greedy episodes (seeds `seed`, `seed + 1`, ...) with the policy of `checkpoint`;
    `allocation` swaps the allocation rule (see `evaluation_env_config`)."""
    path, algo = restore(checkpoint)
    try:
        env_config = evaluation_env_config(algo, overrides or {}, allocation)
        env = make_eval_env(algo.config.env, env_config)
        actor = GreedyActor(algo, env)
        stats = [run_episode(env, actor, seed + i) for i in range(episodes)]
        iteration = getattr(algo, "iteration", None)
        env.close()
    finally:
        algo.stop()
    shown = {k: v for k, v in env_config.items() if not k.startswith("_")}
    if allocation is not None:
        shown["allocation"] = allocation
    return Evaluation(str(path), iteration, algo.config.env, shown, stats)
