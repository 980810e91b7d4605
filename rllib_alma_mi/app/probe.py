"""Linear probe: how much of the global state a trained module's agent representation carries.

The MI term is meant to make an agent's representation carry global information its own view
lacks. The probe measures that directly. Greedy episodes are played with a checkpoint. At every
step where the probed module acts, each live agent gives one sample:

- its representation: the worker's hidden state (`WorkerNet.encode`, the input of MI scheme 1)
  or the allocator's agent embedding (`AllocEncoding.agent_emb`, schemes 2 and 3);
- what the module observes: its masked entity features flattened, with the masks;
- the target: the mean of the live entities' features in the centralized `state()` (F,),
  a global summary that the masks hide in part.

A ridge regression is fitted on the first 70% of the episodes' samples (its penalty chosen on
those episodes alone) and scored on the rest: R², pooled over the target's features.
`r2_observation` is the same read-out from the raw observation. A representation computed from
one step's observation cannot hold more about the state than that observation does; its
layers can still make more of it linearly readable, so `r2_representation` may exceed
`r2_observation` without the module knowing more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_alma_mi.app.evaluation import (
    EvaluationError,
    GreedyActor,
    evaluation_env_config,
    make_eval_env,
    restore,
)
from rllib_alma_mi.keys import ALLOCATOR, WORKER
from rllib_alma_mi.rllib.greedy import play_episode, stack_observations

PROBED_MODULES = (WORKER, ALLOCATOR)
TARGET = "mean of the live entities' state features"


def ridge_r2(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    alpha: float = 1.0,
) -> float:
    """R² on (x_test, y_test) of a ridge regression fitted on (x_train, y_train).

    x: (S, P), y: (S, K). Inputs are standardised with the training set's mean and standard
    deviation (constant columns are left centred); the intercept is not penalised. R² is pooled
    over the K outputs: 1 - sum of squared errors / sum of squares around the test mean.
    """
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
            raise ValueError(
                f"ridge_r2: {name} inputs must be (S, P) and (S, K) with the same S >= 2, got "
                f"{x.shape} and {y.shape}"
            )
    if alpha <= 0:
        raise ValueError(f"ridge_r2: alpha must be positive, got {alpha}")
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    y_mean = y_train.mean(0)
    gram = a.T @ a + alpha * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, a.T @ (y_train - y_mean))
    residual = y_test - (b @ weights + y_mean)
    total = ((y_test - y_test.mean(0)) ** 2).sum()
    if total == 0:
        raise ValueError("ridge_r2: the test targets are constant; R² is undefined")
    return float(1.0 - (residual**2).sum() / total)


ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def probe_r2(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, episode: np.ndarray
) -> float:
    """R² on the `test` rows of a ridge read-out of y from x, its penalty picked from `ALPHAS`
    on the `train` rows alone: fitted on their first 70% of episodes, scored on the rest."""
    x_test, y_test = x[test], y[test]
    x, y = x[train], y[train]
    fit, held = split_episodes(episode[train], 0.7)
    scores = [ridge_r2(x[fit], y[fit], x[held], y[held], a) for a in ALPHAS]
    alpha = ALPHAS[int(np.argmax(scores))]
    return ridge_r2(x, y, x_test, y_test, alpha)


def state_summary(state: dict[str, np.ndarray]) -> np.ndarray:
    """The probe's target: the mean of the live entities' features, (E, F) -> (F,)."""
    live = np.asarray(state["entity_mask"]).astype(bool)
    if not live.any():
        raise ValueError("state_summary: the state has no live entity")
    return np.asarray(state["entities"], dtype=np.float64)[live].mean(0)


def observed_features(obs: dict[str, np.ndarray]) -> np.ndarray:
    """What one observation shows, flattened: the entity rows it may read (others zero) and the
    mask of those rows, (E * F + E,)."""
    visible = np.asarray(obs["entity_mask"]).astype(bool) & np.asarray(obs["obs_mask"]).astype(
        bool
    )
    entities = np.where(visible[:, None], np.asarray(obs["entities"], dtype=np.float64), 0.0)
    return np.concatenate([entities.ravel(), visible.astype(np.float64)])


@dataclass
class ProbeSamples:
    """Samples of one module: representations (S, D), observed features (S, P), targets
    (S, F) and the episode each sample came from (S,)."""

    representation: list[np.ndarray]
    observation: list[np.ndarray]
    target: list[np.ndarray]
    episode: list[int]

    def split(self, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Boolean (train, test) row masks: the first episodes train, the rest test."""
        return split_episodes(np.asarray(self.episode), train_fraction)


def split_episodes(episode: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean row masks (first, rest) of `episode` (S,): the rows of the first `fraction` of
    its episodes, and the others; each side holds at least one episode."""
    ids = np.unique(episode)
    n_first = int(round(fraction * len(ids)))
    if not 1 <= n_first < len(ids):
        raise EvaluationError(
            f"the probe needs episodes on both sides of its split: {len(ids)} episode(s) "
            f"with samples at fraction {fraction}; play more episodes"
        )
    first = np.isin(episode, ids[:n_first])
    return first, ~first


@dataclass
class ProbeResult:
    """The probe of one checkpoint's module (see the module docstring)."""

    checkpoint: str
    module: str
    env_config: dict[str, Any]
    episodes: int
    samples_train: int
    samples_test: int
    r2_representation: float
    r2_observation: float
    target: str = TARGET

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worker_samples(module: Any, observations: dict[str, Any]) -> tuple[np.ndarray, list]:
    agents = [a for a in observations if a != ALLOCATOR]
    if not agents:
        return np.zeros((0, 0)), []
    batch = {Columns.OBS: stack_observations([observations[a] for a in agents])}
    hidden = module.pi_net.encode(module._acting_obs(batch))
    return hidden.numpy(), [observations[a] for a in agents]


def _allocator_samples(module: Any, observations: dict[str, Any]) -> tuple[np.ndarray, list]:
    if ALLOCATOR not in observations:
        return np.zeros((0, 0)), []
    obs = observations[ALLOCATOR]
    batch = {Columns.OBS: stack_observations([obs])}
    agent_emb = module.net.encode(module._acting_obs(batch)).agent_emb[0].numpy()  # (N, D)
    live = np.asarray(obs["agent_mask"]).astype(bool)
    return agent_emb[live], [obs] * int(live.sum())


def probe(
    checkpoint: str | Path,
    module: str = WORKER,
    episodes: int = 50,
    seed: int = 1000,
    overrides: dict[str, Any] | None = None,
    train_fraction: float = 0.7,
) -> ProbeResult:
    """Probe `module` ("worker" or "allocator") of `checkpoint` on `episodes` greedy episodes
    (env seeds `seed`, `seed + 1`, ...), the env changed by `overrides` (e.g. sight_range=2)."""
    if module not in PROBED_MODULES:
        raise EvaluationError(f"module={module!r}: probe one of {list(PROBED_MODULES)}")
    path, algo = restore(checkpoint)
    try:
        env_config = evaluation_env_config(algo, overrides or {})
        env = make_eval_env(algo.config.env, env_config)
        actor = GreedyActor(algo, env)
        if module not in actor.modules:
            raise EvaluationError(
                f"{path}: no {module!r} module to probe (a new-API-stack run has a 'worker' "
                "module, and an 'allocator' module when its allocation is learned)"
            )
        net = actor.modules[module]
        collect = _worker_samples if module == WORKER else _allocator_samples
        samples = ProbeSamples([], [], [], [])

        def record(episode: int):
            def before_act(observations: dict[str, Any]) -> None:
                with torch.no_grad():
                    reps, seen = collect(net, observations)
                if not seen:
                    return
                target = state_summary(env.base.state())
                for rep, obs in zip(reps, seen, strict=True):
                    samples.representation.append(rep.astype(np.float64))
                    samples.observation.append(observed_features(obs))
                    samples.target.append(target)
                    samples.episode.append(episode)

            return before_act

        for i in range(episodes):
            play_episode(env, actor.act, seed + i, record(i))
        env.close()
    finally:
        algo.stop()
    train, test = samples.split(train_fraction)
    reps, seen, target = (np.stack(x) for x in
                          (samples.representation, samples.observation, samples.target))
    episode = np.asarray(samples.episode)
    shown = {k: v for k, v in env_config.items() if not k.startswith("_")}
    return ProbeResult(
        checkpoint=str(path),
        module=module,
        env_config=shown,
        episodes=episodes,
        samples_train=int(train.sum()),
        samples_test=int(test.sum()),
        r2_representation=probe_r2(reps, target, train, test, episode),
        r2_observation=probe_r2(seen, target, train, test, episode),
    )
