"""The entity-task observation contract: its spaces, the base and helpers of the
environments that meet it, and its checker.

The contract is specified in the README, section "The entity-task observation contract".
``contract_spaces`` builds its spaces, ``ContractParallelEnv`` sets them per agent,
``observations_from_state`` and ``episode_stats`` build its observations and its infos at
an episode's end.

``check_env(env)`` resets and steps any PettingZoo ``ParallelEnv`` with random valid actions
and raises ``ContractError`` at the first violation, naming the key, the expected and the
observed value. Beyond the table of the contract it enforces:

* ``obs_mask`` only marks live entities and always marks the observer (``agent_index``),
  which must be a live entity;
* ``entity2task`` only marks live entities and every entity row belongs to at most one task;
* a task with ``task_mask`` 1 has at least one live entity in ``entity2task`` (a resolved task
  may keep its entities);
* ``action_mask`` allows at least one action and the action space is ``Discrete(A)``;
* ``infos[agent]["task_rewards"]`` is a finite float (T,) array at reset and at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = [
    "OBS_KEYS",
    "STATE_KEYS",
    "ContractError",
    "ContractParallelEnv",
    "check_env",
    "contract_spaces",
    "episode_stats",
    "observations_from_state",
]


def binary_box(shape: tuple[int, ...]) -> spaces.Box:
    """A 0/1 int8 mask space."""
    return spaces.Box(0, 1, shape=shape, dtype=np.int8)


def contract_spaces(
    n_entities: int,
    n_features: int,
    n_tasks: int,
    n_actions: int,
    feature_low: float = -np.inf,
    feature_high: float = np.inf,
) -> tuple[spaces.Dict, spaces.Dict]:
    """(observation space, state space) of the entity-task contract for these sizes."""
    state = {
        "entities": spaces.Box(
            feature_low, feature_high, shape=(n_entities, n_features), dtype=np.float32
        ),
        "entity_mask": binary_box((n_entities,)),
        "entity2task": binary_box((n_entities, n_tasks)),
        "task_mask": binary_box((n_tasks,)),
    }
    observation = spaces.Dict(
        {
            **state,
            "obs_mask": binary_box((n_entities,)),
            "agent_index": spaces.Box(0, n_entities - 1, shape=(), dtype=np.int64),
            "action_mask": binary_box((n_actions,)),
        }
    )
    return observation, spaces.Dict(state)


class ContractParallelEnv(ParallelEnv):
    """Base of the contract environments: the same observation space (``contract_spaces``)
    and ``Discrete(A)`` action space for every agent of ``possible_agents``, and the check of
    the actions given to ``step``.

    ``task_rewards_summed_over_agents`` says how ``task_rewards`` add up: False (here) when
    they split the reward each agent receives (the team reward of SaveTheCity, the global part
    of MPE's), True when they add up the rewards of all agents, ``sum(task_rewards) ==
    sum(rewards.values())`` (LBF, RWARE). Consumers that want them on the scale of one agent's
    reward (the allocator's per-task credit) divide by the live agents in the second case."""

    task_rewards_summed_over_agents: bool = False

    def _build_contract_spaces(
        self, n_entities: int, n_features: int, n_tasks: int, n_actions: int,
        feature_low: float = -np.inf, feature_high: float = np.inf,
    ) -> None:
        """Set ``observation_spaces``, ``action_spaces`` (per agent of ``possible_agents``)
        and ``state_space`` for E entities, F features, T tasks and A actions."""
        observation, self.state_space = contract_spaces(
            n_entities, n_features, n_tasks, n_actions, feature_low, feature_high
        )
        self.observation_spaces = {agent: observation for agent in self.possible_agents}
        self.action_spaces = {agent: spaces.Discrete(n_actions) for agent in self.possible_agents}

    def observation_space(self, agent: str) -> spaces.Dict:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    def _require_actions(self, actions: Mapping[str, Any]) -> None:
        """Raise unless an episode is running and ``actions`` has an entry per live agent."""
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            n_actions = self.action_spaces[missing[0]].n
            raise ValueError(f"step: actions missing for live agents {missing}; expected one "
                             f"Discrete({n_actions}) action per agent in {self.agents}")


def observations_from_state(
    state: Mapping[str, np.ndarray],
    visibility: np.ndarray,
    action_masks: np.ndarray,
    agents: list[str],
    possible_agents: list[str],
) -> dict[str, dict[str, np.ndarray]]:
    """The contract observation of each agent in ``agents`` from the global ``state()``.

    Agent ``i`` (its index in ``possible_agents``) sees the state's ``entities`` rows where
    ``visibility[i]`` is 1 and zeros elsewhere; its ``obs_mask`` is ``visibility[i]`` and its
    ``action_mask`` ``action_masks[i]``. Shapes: ``visibility`` (n, E) int8, ``action_masks``
    (n, A) int8; every returned array is a fresh copy.
    """
    obs = {}
    for agent in agents:
        i = possible_agents.index(agent)
        obs[agent] = {
            "entities": np.where(visibility[i][:, None] == 1, state["entities"], np.float32(0)),
            "entity_mask": state["entity_mask"].copy(),
            "obs_mask": visibility[i].copy(),
            "entity2task": state["entity2task"].copy(),
            "task_mask": state["task_mask"].copy(),
            "agent_index": np.array(i, dtype=np.int64),
            "action_mask": action_masks[i].copy(),
        }
    return obs


def episode_stats(completed: np.ndarray, burned: np.ndarray | None = None) -> dict[str, Any]:
    """The contract's infos at an episode's end from (T',) bool arrays over the episode's
    tasks: ``solved`` (every task completed), ``tasks_completed_frac`` and
    ``tasks_burned_frac`` (0.0 when ``burned`` is None: no task can fail)."""
    return {
        "solved": bool(np.all(completed)),
        "tasks_completed_frac": float(np.mean(completed)),
        "tasks_burned_frac": 0.0 if burned is None else float(np.mean(burned)),
    }


OBS_KEYS = (
    "entities", "entity_mask", "obs_mask", "entity2task", "task_mask", "agent_index",
    "action_mask",
)
STATE_KEYS = ("entities", "entity_mask", "entity2task", "task_mask")
_BINARY_KEYS = ("entity_mask", "obs_mask", "entity2task", "task_mask", "action_mask")


class ContractError(ValueError):
    """An environment breaks the entity-task observation contract."""


@dataclass(frozen=True)
class _Dims:
    """E entities, F features, T tasks, A actions."""

    E: int
    F: int
    T: int
    A: int

    def layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        int8 = np.dtype(np.int8)
        return {
            "entities": ((self.E, self.F), np.dtype(np.float32)),
            "entity_mask": ((self.E,), int8),
            "obs_mask": ((self.E,), int8),
            "entity2task": ((self.E, self.T), int8),
            "task_mask": ((self.T,), int8),
            "agent_index": ((), np.dtype(np.int64)),
            "action_mask": ((self.A,), int8),
        }


def check_env(env: Any, n_steps: int = 50, seed: int = 0) -> None:
    """Verify a ParallelEnv against the contract over ``n_steps`` random valid steps.

    Resets with ``seed`` (and again whenever the episode ends). Raises ``ContractError``.
    """
    dims = _check_spaces(env)
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    _check_output(env, dims, "reset()", obs, infos)
    for step in range(n_steps):
        if not env.agents:
            obs, infos = env.reset()
            _check_output(env, dims, "reset()", obs, infos)
            continue
        actions = {agent: _random_action(rng, obs[agent]) for agent in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        where = f"step {step + 1}"
        _check_output(env, dims, where, obs, infos)
        _check_step_dicts(where, actions, rewards, terms, truncs)


def _fail(message: str) -> None:
    raise ContractError(message)


# ---------------------------------------------------------------------- spaces
def _check_spaces(env: Any) -> _Dims:
    agents = list(getattr(env, "possible_agents", None) or [])
    if not agents:
        _fail("env.possible_agents: expected a non-empty list of agent ids, got "
              f"{getattr(env, 'possible_agents', None)!r}")
    dims = None
    for agent in agents:
        space = env.observation_space(agent)
        where = f"observation_space({agent!r})"
        if not isinstance(space, spaces.Dict):
            _fail(f"{where}: expected a gymnasium.spaces.Dict, got {type(space).__name__}")
        keys = set(space.spaces)
        if keys != set(OBS_KEYS):
            _fail(f"{where}: expected exactly the keys {sorted(OBS_KEYS)}, got {sorted(keys)} "
                  f"(missing {sorted(set(OBS_KEYS) - keys)}, extra {sorted(keys - set(OBS_KEYS))})")
        for key in OBS_KEYS:
            if not isinstance(space[key], spaces.Box):
                _fail(f"{where}[{key!r}]: expected a Box, got {type(space[key]).__name__}")
        if dims is None:
            dims = _dims_from(space, where)
        for key, (shape, dtype) in dims.layout().items():
            _expect(f"{where}[{key!r}]", space[key].shape, space[key].dtype, shape, dtype)
        action_space = env.action_space(agent)
        if not isinstance(action_space, spaces.Discrete) or action_space.n != dims.A:
            _fail(f"action_space({agent!r}): expected Discrete({dims.A}) to match action_mask, "
                  f"got {action_space}")
    return dims


def _dims_from(space: spaces.Dict, where: str) -> _Dims:
    ent = space["entities"].shape
    tmask, amask = space["task_mask"].shape, space["action_mask"].shape
    if len(ent) != 2 or len(tmask) != 1 or len(amask) != 1:
        _fail(f"{where}: expected entities (E, F), task_mask (T,), action_mask (A,), got "
              f"{ent}, {tmask}, {amask}")
    return _Dims(E=ent[0], F=ent[1], T=tmask[0], A=amask[0])


def _expect(where: str, shape: tuple, dtype: Any, want_shape: tuple, want_dtype: Any) -> None:
    if np.dtype(dtype) != want_dtype:
        _fail(f"{where}: expected dtype {np.dtype(want_dtype)}, got {np.dtype(dtype)}")
    if tuple(shape) != tuple(want_shape):
        _fail(f"{where}: expected shape {tuple(want_shape)}, got {tuple(shape)}")


# ---------------------------------------------------------------------- outputs
def _check_output(env: Any, dims: _Dims, where: str, obs: Any, infos: Any) -> None:
    possible = set(env.possible_agents)
    live = list(env.agents)
    if not set(live) <= possible:
        _fail(f"{where}: env.agents: expected a subset of possible_agents {sorted(possible)}, "
              f"got {live}")
    if not isinstance(obs, Mapping) or not isinstance(infos, Mapping):
        _fail(f"{where}: observations and infos: expected dicts, got "
              f"{type(obs).__name__} and {type(infos).__name__}")
    for agent in live:
        if agent not in obs:
            _fail(f"{where}: observations: expected an entry for {agent!r} (in env.agents), "
                  f"got keys {sorted(obs)}")
    for agent, agent_obs in obs.items():
        if agent not in possible:
            continue  # extra keys (e.g. a "common" entry) are allowed by PettingZoo
        _check_observation(env, dims, f"{where}: observation", agent, agent_obs)
        _check_info(dims, where, agent, infos)
    _check_state(env, dims, where)


def _check_observation(env: Any, dims: _Dims, where: str, agent: str, obs: Any) -> None:
    if not isinstance(obs, Mapping):
        _fail(f"{where} of {agent}: expected a dict, got {type(obs).__name__}")
    keys = set(obs)
    if keys != set(OBS_KEYS):
        _fail(f"{where} of {agent}: expected exactly the keys {sorted(OBS_KEYS)}, got "
              f"{sorted(keys)} (missing {sorted(set(OBS_KEYS) - keys)}, "
              f"extra {sorted(keys - set(OBS_KEYS))})")
    arrays = {}
    for key, (shape, dtype) in dims.layout().items():
        value = obs[key]
        if not isinstance(value, np.ndarray | np.generic):
            _fail(f"{where}[{key!r}] of {agent}: expected a numpy array, got "
                  f"{type(value).__name__}")
        value = np.asarray(value)
        _expect(f"{where}[{key!r}] of {agent}", value.shape, value.dtype, shape, dtype)
        arrays[key] = value
    _check_values(f"{where}", f" of {agent}", dims, arrays)
    index = int(arrays["agent_index"])
    if arrays["obs_mask"][index] != 1:
        _fail(f"{where}['obs_mask'] of {agent}: expected 1 at agent_index {index} (an agent "
              f"always sees itself), got {arrays['obs_mask'][index]}")
    if np.any(arrays["obs_mask"] > arrays["entity_mask"]):
        bad = np.flatnonzero(arrays["obs_mask"] > arrays["entity_mask"]).tolist()
        _fail(f"{where}['obs_mask'] of {agent}: expected 0 where entity_mask is 0, got 1 at "
              f"rows {bad}")
    if not arrays["action_mask"].any():
        _fail(f"{where}['action_mask'] of {agent}: expected at least one allowed action, "
              "got all zeros")
    space = env.observation_space(agent)
    for key in OBS_KEYS:
        if not space[key].contains(arrays[key]):
            _fail(f"{where}[{key!r}] of {agent}: expected a value inside "
                  f"observation_space({agent!r})[{key!r}] (low {space[key].low.min()}, high "
                  f"{space[key].high.max()}), got min {arrays[key].min()}, "
                  f"max {arrays[key].max()}")


def _check_values(where: str, owner: str, dims: _Dims, arrays: dict[str, np.ndarray]) -> None:
    """Checks shared by observations and the state (keys present in `arrays`)."""
    ents = arrays["entities"]
    if not np.isfinite(ents).all():
        rows = sorted(set(np.argwhere(~np.isfinite(ents))[:, 0].tolist()))
        _fail(f"{where}['entities']{owner}: expected finite features, got non-finite values "
              f"in rows {rows}")
    for key in _BINARY_KEYS:
        if key in arrays and not np.isin(arrays[key], (0, 1)).all():
            _fail(f"{where}[{key!r}]{owner}: expected only 0/1, got values "
                  f"{sorted(np.unique(arrays[key]).tolist())}")
    live = arrays["entity_mask"].astype(bool)
    if "agent_index" in arrays:
        index = int(arrays["agent_index"])
        if not 0 <= index < dims.E:
            _fail(f"{where}['agent_index']{owner}: expected a value in [0, {dims.E}), "
                  f"got {index}")
        if not live[index]:
            _fail(f"{where}['agent_index']{owner}: expected to point at a live entity "
                  f"(entity_mask 1), got row {index} with entity_mask 0")
    e2t = arrays["entity2task"].astype(bool)
    if e2t[~live].any():
        rows = np.flatnonzero(e2t.any(axis=1) & ~live).tolist()
        _fail(f"{where}['entity2task']{owner}: expected rows only for live entities, got "
              f"entries in rows {rows} whose entity_mask is 0")
    per_row = e2t.sum(axis=1)
    if (per_row > 1).any():
        _fail(f"{where}['entity2task']{owner}: expected at most one task per entity, got "
              f"{int(per_row.max())} in row {int(per_row.argmax())}")
    tasks_with_entities = e2t.any(axis=0)
    orphan = arrays["task_mask"].astype(bool) & ~tasks_with_entities
    if orphan.any():
        _fail(f"{where}['task_mask']{owner}: expected live tasks to have a live entity in "
              f"entity2task, got tasks {np.flatnonzero(orphan).tolist()} without one")


def _check_info(dims: _Dims, where: str, agent: str, infos: Mapping) -> None:
    info = infos.get(agent)
    if not isinstance(info, Mapping) or "task_rewards" not in info:
        _fail(f"{where}: infos[{agent!r}]['task_rewards']: expected a float array of shape "
              f"({dims.T},), got {'no entry' if not isinstance(info, Mapping) else 'no key'}")
    value = info["task_rewards"]
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        _fail(f"{where}: infos[{agent!r}]['task_rewards']: expected a float numpy array, got "
              f"{type(value).__name__} {getattr(value, 'dtype', '')}")
    if value.shape != (dims.T,):
        _fail(f"{where}: infos[{agent!r}]['task_rewards']: expected shape ({dims.T},), got "
              f"{value.shape}")
    if not np.isfinite(value).all():
        _fail(f"{where}: infos[{agent!r}]['task_rewards']: expected finite values, got {value}")


def _check_state(env: Any, dims: _Dims, where: str) -> None:
    if not callable(getattr(env, "state", None)):
        _fail("env.state: expected a method returning the global state dict, got none")
    state = env.state()
    if not isinstance(state, Mapping) or not set(STATE_KEYS) <= set(state):
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        _fail(f"{where}: state(): expected the keys {sorted(STATE_KEYS)}, got {got}")
    layout = dims.layout()
    arrays = {}
    for key in STATE_KEYS:
        value = state[key]
        if not isinstance(value, np.ndarray):
            _fail(f"{where}: state()[{key!r}]: expected a numpy array, got {type(value).__name__}")
        _expect(f"{where}: state()[{key!r}]", value.shape, value.dtype, *layout[key])
        arrays[key] = value
    _check_values(f"{where}: state()", "", dims, arrays)


def _check_step_dicts(where: str, actions: dict, rewards: Any, terms: Any, truncs: Any) -> None:
    for name, value in (("rewards", rewards), ("terminations", terms), ("truncations", truncs)):
        if not isinstance(value, Mapping):
            _fail(f"{where}: {name}: expected a dict, got {type(value).__name__}")
        missing = [agent for agent in actions if agent not in value]
        if missing:
            _fail(f"{where}: {name}: expected an entry for every agent that acted, "
                  f"missing {missing}")
    for agent, reward in rewards.items():
        real = isinstance(reward, int | float | np.integer | np.floating)  # not complex
        if isinstance(reward, bool) or not real:
            _fail(f"{where}: rewards[{agent!r}]: expected a real number, got {reward!r}")
        if not np.isfinite(reward):
            _fail(f"{where}: rewards[{agent!r}]: expected a finite number, got {reward}")


def _random_action(rng: np.random.Generator, obs: Mapping) -> int:
    allowed = np.flatnonzero(np.asarray(obs["action_mask"]))
    return int(rng.choice(allowed))
