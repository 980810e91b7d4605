"""The ALMA hierarchy as an RLlib `MultiAgentEnv` around any contract environment.

An extra agent, `allocator`, acts at reset, whenever a task resolves and, unless
`alloc_interval` is None, every `alloc_interval` env steps. Its action is the joint allocation:
one task index per agent slot (slot i is entity row i). Workers then act inside their subtask
for the following env steps. RLlib sees the allocation as its own step of the multi-agent
episode, so the allocator's transitions are its decisions and its discount applies per
decision, not per env step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.contract import binary_box
from rllib_alma_mi.keys import (
    ALLOCATOR,
    BASE_ENV_STEPS,
    CURRENT_ALLOCATION,
    EPISODE_STATS,
    HEURISTIC_ALLOCATION,
    STATE,
    STATE_KEYS,
    SUBTASK,
    TASK_RETURNS,
    TEAM_RETURN,
)
from rllib_alma_mi.settings import HierarchySettings
from rllib_alma_mi.views import (
    allocation_due,
    allocator_observation,
    live_task_violation,
    random_allocation,
    subtask_entities,
    subtask_obs_mask,
)


class HierarchicalEnv(MultiAgentEnv):
    """Wraps a contract `ParallelEnv` (see `envs.contract`) into the allocator/worker hierarchy.

    Allocator observation (Dict): `entities` (E, F), `entity_mask` (E,), `obs_mask` (E,),
    `entity2task` (E, T), `task_mask` (T,), `agent_mask` (N,) live agent slots,
    `agent_obs_mask` (N, E) what each agent sees, `current_allocation` (N,) each live slot's
    task until now (-1 before the episode's first allocation and for dead slots), `state`
    when `include_state`, and
    `heuristic_allocation` (N,) when the allocator imitates the heuristic (`imitation_steps`).
    Allocator action: MultiDiscrete([T] * N), a task per agent slot (dead slots are ignored).
    Worker observation: the contract observation with `obs_mask` restricted to the worker's
    subtask (itself, its task's entities, agents on the same task, and the entities no task
    owns, such as RWARE's goals), plus `state` when asked.
    With `subtask_mask=False` (ALMA's "no mask" variant) the worker keeps its whole view and
    `subtask` (E,) marks its subtask's entities instead, so it still knows what it was given.

    With `allocator_credit="task"` the allocator's info, wherever its reward is delivered (its
    next decision, the episode's end), holds `task_returns` (T,) float32: each task's reward
    summed over the env steps since its last decision, on the scale of the team reward it
    receives (see `_task_reward_step`).
    """

    def __init__(
        self, base_env, settings: HierarchySettings | None = None, include_state: bool = False
    ):
        super().__init__()
        self.base = base_env
        self.settings = settings or HierarchySettings()
        self.include_state = include_state
        self.workers = list(base_env.possible_agents)
        self.n_slots = len(self.workers)
        space = base_env.observation_space(self.workers[0])
        self._base_obs_space = space
        self.n_entities, self.n_features = space["entities"].shape
        self.n_tasks = space["task_mask"].shape[0]
        if self.n_slots > self.n_entities:
            raise ValueError(
                f"the environment has {self.n_slots} possible agents but only "
                f"{self.n_entities} entity rows; agents must be the first entity rows"
            )
        if not hasattr(base_env, "heuristic_allocation"):
            if self.settings.allocation == "heuristic":
                raise ValueError(
                    "allocation='heuristic' needs the environment to provide "
                    "heuristic_allocation() -> (n_agents,) task indices; this one does not. "
                    "Use allocation='learned' or 'random'."
                )
            if self.settings.imitation:
                raise ValueError(
                    f"imitation_steps={self.settings.imitation_steps} needs the environment to "
                    "provide heuristic_allocation() -> (n_agents,) task indices (the allocation "
                    "to imitate); this one does not. Use imitation_steps=0."
                )
        self.learned = self.settings.allocation == "learned"
        self.task_credit = self.learned and self.settings.allocator_credit == "task"
        self._task_rewards_summed = self.task_credit and _task_rewards_summed(base_env)
        self.flat = self.settings.allocation == "none"
        self.marks_subtask = not self.flat and not self.settings.subtask_mask
        self.possible_agents = ([ALLOCATOR] if self.learned else []) + self.workers
        self.observation_spaces = {w: self._worker_space() for w in self.workers}
        self.action_spaces = {w: base_env.action_space(w) for w in self.workers}
        if self.learned:
            self.observation_spaces[ALLOCATOR] = self._allocator_space()
            self.action_spaces[ALLOCATOR] = gym.spaces.MultiDiscrete([self.n_tasks] * self.n_slots)
        self.agents = []
        self._rng = np.random.default_rng()
        self._allocation = np.zeros(self.n_slots, dtype=np.int64)

    # ----------------------------------------------------------------------------- spaces
    def _state_space(self) -> gym.spaces.Dict:
        s = self._base_obs_space
        return gym.spaces.Dict({k: s[k] for k in STATE_KEYS})

    def _worker_space(self) -> gym.spaces.Dict:
        spaces = dict(self._base_obs_space.spaces)
        if self.marks_subtask:
            spaces[SUBTASK] = binary_box((self.n_entities,))
        if self.include_state:
            spaces[STATE] = self._state_space()
        return gym.spaces.Dict(spaces)

    def _allocator_space(self) -> gym.spaces.Dict:
        s = self._base_obs_space
        spaces = {
            k: s[k] for k in ("entities", "entity_mask", "obs_mask", "entity2task", "task_mask")
        }
        spaces["agent_mask"] = binary_box((self.n_slots,))
        spaces["agent_obs_mask"] = binary_box((self.n_slots, self.n_entities))
        spaces[CURRENT_ALLOCATION] = gym.spaces.Box(
            -1, self.n_tasks - 1, (self.n_slots,), dtype=np.int64
        )
        if self.settings.imitation:
            spaces[HEURISTIC_ALLOCATION] = gym.spaces.Box(
                0, self.n_tasks - 1, (self.n_slots,), dtype=np.int64
            )
        if self.include_state:
            spaces[STATE] = self._state_space()
        return gym.spaces.Dict(spaces)

    # ----------------------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        obs, infos = self.base.reset(seed=seed, options=options)
        self._obs = _owned(obs)
        self._read_base_obs()
        self._t = 0
        self._alloc_reward = 0.0
        self._alloc_task_returns = np.zeros(self.n_tasks)
        self._team_return = 0.0
        self._allocation[:] = 0
        self._allocated = False
        self.agents = ([ALLOCATOR] if self.learned else []) + list(self.base.agents)
        if self.learned:
            self._awaiting_allocation = True
            return {ALLOCATOR: self._allocator_obs()}, {ALLOCATOR: {}}
        self._awaiting_allocation = False
        self._allocate_by_rule()
        return self._worker_obs(), {a: infos.get(a, {}) for a in self._live}

    def step(self, action_dict: dict[str, Any]):
        if self._awaiting_allocation:
            return self._allocation_step(action_dict)
        return self._worker_step(action_dict)

    def _allocation_step(self, action_dict: dict[str, Any]):
        extra = sorted(set(action_dict) - {ALLOCATOR})
        if ALLOCATOR not in action_dict or extra:
            raise ValueError(
                f"an allocation step expects exactly the action of '{ALLOCATOR}', got keys "
                f"{sorted(action_dict)}"
            )
        self._apply_allocation(action_dict[ALLOCATOR])
        self._awaiting_allocation = False
        obs = self._worker_obs()
        zeros = {a: 0.0 for a in obs}
        return obs, zeros, self._not_done(), self._not_done(), {a: {} for a in obs}

    def _worker_step(self, action_dict: dict[str, Any]):
        missing = [a for a in self._live if a not in action_dict]
        unknown = sorted(set(action_dict) - set(self._live))
        if missing or unknown:
            raise ValueError(
                f"worker step: missing actions for {missing}, unexpected actions for {unknown}; "
                f"the live workers are {self._live}"
            )
        prev_task_mask = self._task_mask
        obs, rewards, terms, truncs, infos = self.base.step(action_dict)
        self._obs = _owned(obs)
        self._t += 1
        # The team reward; environments with per-agent rewards (e.g. MPE) give their mean.
        team_reward = float(np.mean([rewards[a] for a in self._live]))
        self._alloc_reward += team_reward
        self._team_return += team_reward
        if self.task_credit:
            self._alloc_task_returns += self._task_reward_step(infos)
        out_rewards = {a: self._worker_reward(a, rewards, infos) for a in self._live}
        terminated = any(terms.values())
        truncated = any(truncs.values()) and not terminated
        done = terminated or truncated or not self.base.agents
        self._read_base_obs()
        if done:
            return self._final_step(out_rewards, infos, terminated, truncated)
        due = allocation_due(self._t, self.settings.alloc_interval, prev_task_mask, self._task_mask)
        if due and self.learned:
            self._awaiting_allocation = True
            out_rewards[ALLOCATOR] = self._take_alloc_reward()
            obs = {ALLOCATOR: self._allocator_obs()}
            return obs, out_rewards, self._not_done(), self._not_done(), {
                ALLOCATOR: self._allocator_info()
            }
        if due:
            self._allocate_by_rule()
        return self._worker_obs(), out_rewards, self._not_done(), self._not_done(), infos

    def _final_step(self, rewards: dict, infos: dict, terminated: bool, truncated: bool):
        stats = {k: infos[self._live[0]][k] for k in EPISODE_STATS if k in infos[self._live[0]]}
        stats[BASE_ENV_STEPS] = self._t
        stats[TEAM_RETURN] = self._team_return
        obs = self._worker_obs()
        out_infos = {a: {**infos.get(a, {}), **stats} for a in obs}
        if self.learned:
            obs[ALLOCATOR] = self._allocator_obs()
            rewards[ALLOCATOR] = self._take_alloc_reward()
            out_infos[ALLOCATOR] = {**stats, **self._allocator_info()}
        terms = {a: terminated for a in obs} | {"__all__": terminated}
        truncs = {a: truncated for a in obs} | {"__all__": truncated}
        self._awaiting_allocation = False
        return obs, rewards, terms, truncs, out_infos

    def _not_done(self) -> dict[str, bool]:
        return {"__all__": False}

    def _take_alloc_reward(self) -> float:
        reward, self._alloc_reward = self._alloc_reward, 0.0
        return reward

    def _allocator_info(self) -> dict[str, np.ndarray]:
        """The allocator's info where its reward is delivered: `task_returns` (T,) float32
        with task credit (then reset for the next interval), else nothing."""
        if not self.task_credit:
            return {}
        returns = self._alloc_task_returns.astype(np.float32)
        self._alloc_task_returns = np.zeros(self.n_tasks)
        return {TASK_RETURNS: returns}

    def _task_reward_step(self, infos: dict) -> np.ndarray:
        """(T,) this step's task rewards on the team reward's scale: as the team reward is the
        mean of the acting agents' rewards, the mean of their `task_rewards`, divided by their
        number when the env's task rewards add up every agent's reward (LBF, RWARE: then
        they sum to the team reward exactly)."""
        rows = [np.asarray(infos[a]["task_rewards"], dtype=np.float64) for a in self._live]
        per_agent = np.mean(rows, axis=0)
        return per_agent / len(rows) if self._task_rewards_summed else per_agent

    def _worker_reward(self, agent: str, rewards: dict, infos: dict) -> float:
        if self.flat or self.settings.worker_reward == "team":
            return float(rewards[agent])
        task_rewards = infos[agent]["task_rewards"]
        return float(task_rewards[self._allocation[self._slot[agent]]])

    # ----------------------------------------------------------------------------- allocation
    def _apply_allocation(self, allocation) -> None:
        alloc = np.asarray(allocation)
        if alloc.shape != (self.n_slots,) or not np.issubdtype(alloc.dtype, np.integer):
            raise ValueError(
                f"allocation must be an integer array of shape ({self.n_slots},), one task per "
                f"agent slot; got {alloc.dtype} array of shape {alloc.shape}"
            )
        live_slots = self._live_slots()
        problem = live_task_violation(alloc, live_slots, self._task_mask)
        if problem:
            raise ValueError(f"allocation {alloc.tolist()} {problem}")
        chosen = alloc[live_slots]
        self._allocation[:] = 0
        self._allocation[live_slots] = chosen
        self._allocated = True
        if hasattr(self.base, "set_assignment"):
            self.base.set_assignment({a: int(self._allocation[self._slot[a]]) for a in self._live})

    def _allocate_by_rule(self) -> None:
        if self.flat:
            return
        if self.settings.allocation == "heuristic":
            alloc = self._heuristic_allocation()
        else:
            alloc = random_allocation(self._rng, self._task_mask, self.n_slots)
        self._apply_allocation(alloc)

    def _heuristic_allocation(self) -> np.ndarray:
        alloc = np.asarray(self.base.heuristic_allocation())
        if alloc.shape != (self.n_slots,) or not np.issubdtype(alloc.dtype, np.integer):
            raise ValueError(
                f"heuristic_allocation() must return an integer array of shape ({self.n_slots},)"
                f", one task per agent slot; got {alloc.dtype} array of shape {alloc.shape}"
            )
        return alloc.astype(np.int64)

    def allocation(self) -> dict[str, int]:
        """The current task of each live worker."""
        return {a: int(self._allocation[self._slot[a]]) for a in self._live}

    # ----------------------------------------------------------------------------- observations
    def _read_base_obs(self) -> None:
        self._live = [a for a in self.workers if a in self._obs]
        self._slot = {}
        for a in self._live:
            slot = int(self._obs[a]["agent_index"])
            if slot >= self.n_slots:
                raise ValueError(
                    f"agent '{a}' has agent_index {slot}, but the hierarchy needs agents in the "
                    f"first {self.n_slots} entity rows (one per possible agent)"
                )
            self._slot[a] = slot
        self._state = {k: np.array(v) for k, v in self.base.state().items()}
        self._task_mask = self._state["task_mask"].astype(bool)

    def _live_slots(self) -> np.ndarray:
        return np.array(sorted(self._slot.values()), dtype=np.int64)

    def _state_obs(self) -> dict[str, np.ndarray]:
        return {k: self._state[k] for k in STATE_KEYS}

    def _allocator_obs(self) -> dict[str, np.ndarray]:
        obs_masks = {slot: self._obs[a]["obs_mask"] for a, slot in self._slot.items()}
        obs = allocator_observation(
            self._state, obs_masks, self.n_slots, self.settings.allocator_view
        )
        current = np.full(self.n_slots, -1, dtype=np.int64)
        if self._allocated:
            live = list(self._slot.values())
            current[live] = self._allocation[live]
        obs[CURRENT_ALLOCATION] = current
        if self.settings.imitation:
            obs[HEURISTIC_ALLOCATION] = self._heuristic_allocation()
        if self.include_state:
            obs[STATE] = self._state_obs()
        return obs

    def _worker_obs(self) -> dict[str, dict[str, np.ndarray]]:
        restrict = self.settings.subtask_mask and not self.flat
        out = {}
        for a in self._live:
            obs = dict(self._obs[a])
            if restrict:
                obs["obs_mask"] = subtask_obs_mask(
                    obs["obs_mask"], self._slot[a], self._allocation, self._slot.values(),
                    self._state["entity2task"],
                )
            elif self.marks_subtask:
                obs[SUBTASK] = subtask_entities(
                    self._slot[a], self._allocation, self._slot.values(),
                    self._state["entity2task"],
                )
            if self.include_state:
                obs[STATE] = self._state_obs()
            out[a] = obs
        return out

    def render(self):
        return self.base.render()

    def close(self):
        self.base.close()


def _task_rewards_summed(base_env) -> bool:
    """The env's `task_rewards_summed_over_agents` (see `envs.contract.ContractParallelEnv`);
    False when it does not say."""
    summed = getattr(base_env, "task_rewards_summed_over_agents", False)
    if not isinstance(summed, bool | np.bool_):
        raise ValueError(
            f"{type(base_env).__name__}.task_rewards_summed_over_agents={summed!r} must be a "
            "bool: True when sum(task_rewards) == sum(rewards.values()), False when the task "
            "rewards split each agent's reward"
        )
    return bool(summed)


def _owned(obs: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Copies of the base env's observation arrays: an env may reuse its buffers, and the
    hierarchy's observations must stay as they were returned (RLlib keeps them in episodes,
    and `AlmaEnvRunner` turns off the vector env's deep copy of every step's observations)."""
    return {agent: {k: np.array(v) for k, v in o.items()} for agent, o in obs.items()}
