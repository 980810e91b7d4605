"""`TeamPolicy`: an exported team (allocator and workers) acting in a contract environment.

It follows the hierarchy the team was trained in (`rllib_alma_mi.hierarchy.HierarchicalEnv`):
the allocation is decided at the first step, whenever a task resolves and every
`alloc_interval` env steps (unless it is None), by the learned allocator (autoregressive
masked pointer over the agent slots), the environment's `heuristic_allocation()`, a uniform
random draw, or not at all (the flat method, `allocation="none"`); each worker acts on its
own observation with `obs_mask` restricted to its subtask (`rllib_alma_mi.views`), unless the
team was trained without the subtask mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rllib_alma_mi.deploy.backends import load_model
from rllib_alma_mi.deploy.manifest import (
    ALLOCATOR_ENCODER,
    ALLOCATOR_POINTER,
    INPUTS,
    INT_INPUTS,
    WORKER,
    DeployError,
    Manifest,
)
from rllib_alma_mi.keys import SUBTASK
from rllib_alma_mi.views import (
    allocation_due,
    allocator_observation,
    live_task_violation,
    random_allocation,
    subtask_entities,
    subtask_obs_mask,
)


def _as_inputs(batch: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays a model takes: float32, except the int64 `agent_index` (shape (B,))."""
    out = {}
    for name in names:
        if name not in batch:
            continue  # left to the model runner: it reports a missing input
        value = np.asarray(batch[name])
        if name in INT_INPUTS:
            out[name] = value.astype(np.int64).reshape(value.shape[0])
        else:
            out[name] = value.astype(np.float32)
    return out


def _allocation_rule(trained: str, requested: str | None) -> str:
    """The allocation rule to act with: the trained one, or a swap among the hierarchical ones."""
    if requested is None or requested == trained:
        return trained
    swappable = ("learned", "heuristic", "random")
    if requested not in swappable or trained == "none":
        allowed = [trained] + ([] if trained == "none" else [a for a in swappable if a != trained])
        raise DeployError(
            f"allocation={requested!r}: a team trained with allocation {trained!r} can act "
            f"with one of {allowed}"
        )
    if requested == "learned":
        raise DeployError(
            f"allocation='learned' needs a team trained with the learned allocator, this one "
            f"used {trained!r}"
        )
    return requested


def _choose(logits: np.ndarray, greedy: bool, rng: np.random.Generator) -> np.ndarray:
    """Argmax (the first one on ties, as torch) or a draw from softmax(logits), per row."""
    if greedy:
        return logits.argmax(axis=-1)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p], dtype=np.int64)


class TeamPolicy:
    """The exported allocator and worker networks, and the hierarchy's schedule and views.

    Use: `policy = TeamPolicy.load(directory)`; per episode `observations, _ =
    env.reset(seed=s)`, `policy.reset(env, seed=s)`, then `policy.act(observations, env)` for
    every step. `env` is the contract `ParallelEnv` (not wrapped in the hierarchy);
    observations are its per-agent Dicts. Or `run_episode(env, policy, seed)`.
    Lower level: `worker_logits(batch)` and `allocate(batch, greedy)` run the networks on
    batches of worker / allocator observations.
    """

    def __init__(self, manifest: Manifest, directory: str | Path, allocation: str | None = None):
        self.manifest = manifest
        self.directory = Path(directory)
        self.settings = manifest.settings()
        # The workers read `subtask` only when they see beyond it (the hierarchy's rule).
        self._marks_subtask = self.settings.allocation != "none" and not self.settings.subtask_mask
        self.spaces = manifest.spaces
        self.allocation_rule = _allocation_rule(self.settings.allocation, allocation)
        self._models = {
            name: load_model(self.directory / file, name, manifest.format)
            for name, file in manifest.models.items()
            if name == WORKER or self.allocation_rule == "learned"
        }
        self._alloc_rng = np.random.default_rng()
        self._sample_rng = np.random.default_rng()
        self._allocation = np.zeros(self.spaces.n_agents, dtype=np.int64)
        self._t: int | None = None
        self._prev_task_mask: np.ndarray | None = None
        self.decisions = 0  # allocations decided since reset()
        self._ready = False

    @classmethod
    def load(cls, directory: str | Path, allocation: str | None = None) -> TeamPolicy:
        """The team exported into `directory` (by `rllib-alma-mi export`).

        `allocation` ("learned", "heuristic" or "random") replaces the trained allocation
        rule of a hierarchical team, keeping its workers (as `rllib-alma-mi evaluate
        --allocation`); None keeps the trained rule.
        """
        return cls(Manifest.read(directory), directory, allocation)

    # ----------------------------------------------------------------------------- networks
    def worker_logits(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Masked action logits (B, A) of a batch of worker observations (entities (B, E, F),
        entity_mask (B, E), obs_mask (B, E) already restricted to the subtask, agent_index
        (B,), action_mask (B, A), subtask (B, E) the subtask's entities, read only by a team
        trained with subtask_mask=False)."""
        if SUBTASK not in batch:
            if self._marks_subtask:
                raise DeployError(
                    f"the worker batch has no {SUBTASK!r} (B, E): this team was trained with "
                    "subtask_mask=False, so its workers read which entities are their subtask's"
                )
            batch = {**batch, SUBTASK: np.ones_like(np.asarray(batch["obs_mask"]))}  # unread
        return self._models[WORKER](_as_inputs(batch, INPUTS[WORKER]))[0]

    def allocate(
        self,
        batch: Mapping[str, Any],
        greedy: bool = True,
        rng: np.random.Generator | None = None,
        given: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The learned allocator on a batch of allocator observations (the keys of
        `views.allocator_observation`, each with a leading B axis).

        Returns the allocation (B, N) int64 and the per-step conditional logits (B, N, T)
        that chose it: agent slot i picks its task seeing the tasks of slots 0..i-1.
        Dead slots, and every slot of a sample without a live task, get task 0.
        With `given` (B, N), that allocation is followed instead of choosing (teacher
        forcing), and the logits are the ones each of its steps saw.
        """
        if self.allocation_rule != "learned":
            raise DeployError(
                f"allocate() runs the learned allocator; this team was trained with "
                f"allocation={self.allocation_rule!r}"
            )
        rng = rng if rng is not None else self._sample_rng
        query, key, message, allowed, forced = self._models[ALLOCATOR_ENCODER](
            _as_inputs(batch, INPUTS[ALLOCATOR_ENCODER])
        )
        b, n, t, d = key.shape
        placed = np.zeros((b, t, d), dtype=np.float32)
        counts = np.zeros((b, t), dtype=np.float32)
        choices, step_logits = [], []
        pointer = self._models[ALLOCATOR_POINTER]
        for i in range(n):
            inputs = {
                "query": np.ascontiguousarray(query[:, i]),
                "key": np.ascontiguousarray(key[:, i]),
                "placed": placed,
                "counts": counts,
                "allowed": allowed[:, i].astype(np.float32),
            }
            logits = pointer(inputs)[0]
            picked = _choose(logits, greedy, rng) if given is None else given[:, i]
            choice = np.where(forced[:, i], 0, picked)
            here = (np.arange(t) == choice[:, None]) & ~forced[:, i, None]  # (B, T)
            placed = placed + here[..., None].astype(np.float32) * message[:, i, None, :]
            counts = counts + here
            choices.append(choice)
            step_logits.append(logits)
        return np.stack(choices, axis=1).astype(np.int64), np.stack(step_logits, axis=1)

    # ----------------------------------------------------------------------------- acting
    def reset(self, env: Any, seed: int | None = None) -> None:
        """Start an episode of `env` (call after `env.reset`). `seed` seeds the random
        allocation rule (the same draws as the hierarchy with that reset seed) and sampling."""
        self._check_env(env)
        if seed is not None:
            self._alloc_rng = np.random.default_rng(seed)
            self._sample_rng = np.random.default_rng([seed, 1])
        self._allocation[:] = 0
        self._t = None
        self._prev_task_mask = None
        self.decisions = 0
        self._ready = True

    def act(
        self, observations: Mapping[str, Mapping[str, Any]], env: Any, greedy: bool = True
    ) -> dict[str, int]:
        """Actions {agent: int} of the live agents in `observations` (the env's last
        observations), re-allocating first when the hierarchy would."""
        if not self._ready:
            raise DeployError("call policy.reset(env, seed) after env.reset() and before act()")
        live = [a for a in env.possible_agents if a in observations]
        if not live:
            raise DeployError("act() got no observation of a live agent of this env")
        slots = self._slots(observations, live)
        flat = self.allocation_rule == "none"
        state = None if flat else env.state()
        if not flat:
            task_mask = np.asarray(state["task_mask"]).astype(bool)
            if self._t is None:
                due = True
                self._t = 0
            else:
                self._t += 1
                due = allocation_due(
                    self._t, self.settings.alloc_interval, self._prev_task_mask, task_mask
                )
            self._prev_task_mask = task_mask
            if due:
                self._reallocate(observations, env, state, slots, greedy)
        rows = []
        for a in live:
            obs = dict(observations[a])
            if not flat and self.settings.subtask_mask:
                obs["obs_mask"] = subtask_obs_mask(
                    np.asarray(obs["obs_mask"]), slots[a], self._allocation, slots.values(),
                    np.asarray(state["entity2task"]),
                )
            elif self._marks_subtask:
                obs[SUBTASK] = subtask_entities(
                    slots[a], self._allocation, slots.values(), np.asarray(state["entity2task"])
                )
            rows.append(obs)
        batch = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in INPUTS[WORKER]
                 if k in rows[0]}
        chosen = _choose(self.worker_logits(batch), greedy, self._sample_rng)
        return {a: int(c) for a, c in zip(live, chosen, strict=True)}

    def allocation(self) -> np.ndarray:
        """The current task of every agent slot (N,) (0 for dead slots and the flat method)."""
        return self._allocation.copy()

    def _reallocate(self, observations, env, state, slots: dict[str, int], greedy: bool) -> None:
        n = self.spaces.n_agents
        rule = self.allocation_rule
        if rule == "learned":
            obs_masks = {slots[a]: np.asarray(observations[a]["obs_mask"]) for a in slots}
            obs = allocator_observation(state, obs_masks, n, self.settings.allocator_view)
            batch = {k: np.asarray(v)[None] for k, v in obs.items()}
            allocation = self.allocate(batch, greedy=greedy)[0][0]
        elif rule == "heuristic":
            allocation = np.asarray(env.heuristic_allocation())
            if allocation.shape != (n,) or not np.issubdtype(allocation.dtype, np.integer):
                raise DeployError(
                    f"heuristic_allocation() must return an integer array of shape ({n},), "
                    f"one task per agent slot; got {allocation.dtype} array of shape "
                    f"{allocation.shape}"
                )
        else:
            allocation = random_allocation(self._alloc_rng, state["task_mask"], n)
        live_slots = np.array(sorted(slots.values()), dtype=np.int64)
        problem = live_task_violation(allocation, live_slots, state["task_mask"])
        if problem:
            raise DeployError(f"the {rule} allocation {allocation.tolist()} {problem}")
        chosen = allocation[live_slots]
        self._allocation[:] = 0
        self._allocation[live_slots] = chosen
        self.decisions += 1
        if hasattr(env, "set_assignment"):
            env.set_assignment({a: int(self._allocation[s]) for a, s in slots.items()})

    # ----------------------------------------------------------------------------- checks
    def _slots(self, observations, live: list[str]) -> dict[str, int]:
        slots = {}
        for a in live:
            slot = int(np.asarray(observations[a]["agent_index"]))
            if not 0 <= slot < self.spaces.n_agents:
                raise DeployError(
                    f"agent {a!r} has agent_index {slot}; the exported team needs agents in the "
                    f"first {self.spaces.n_agents} entity rows (one per possible agent)"
                )
            slots[a] = slot
        return slots

    def _check_env(self, env: Any) -> None:
        s = self.spaces
        agents = list(env.possible_agents)
        if len(agents) != s.n_agents:
            raise DeployError(
                f"the env has {len(agents)} possible agents, the team was exported for "
                f"{s.n_agents}; use the training env's settings (manifest 'env_config')"
            )
        space = env.observation_space(agents[0])
        expected = {
            "entities": (s.n_entities, s.n_features),
            "task_mask": (s.n_tasks,),
            "action_mask": (s.n_actions,),
        }
        for key, shape in expected.items():
            got = tuple(space[key].shape)
            if got != shape:
                raise DeployError(
                    f"the env's observation {key!r} has shape {got}, the team was exported for "
                    f"{shape}; use the training env's settings (manifest 'env_config')"
                )
        if self.allocation_rule == "heuristic" and not hasattr(env, "heuristic_allocation"):
            raise DeployError(
                "this team allocates with the environment's heuristic_allocation(), which this "
                "env does not provide"
            )
