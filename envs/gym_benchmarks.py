"""Plumbing shared by the adapters of the field's gymnasium benchmarks (``envs.lbf``,
``envs.rware``): importing the package, resolving a registered id or constructor arguments,
the body of the contract adapter (``TeamTasksEnv``), and the native (flat vector)
observation as a PettingZoo ``ParallelEnv`` for baselines.

Both packages expose one ``gymnasium.Env`` for the whole team: ``Tuple`` observation and
action spaces (one entry per agent), a list of per-agent rewards and one ``done`` flag that
is also set at the step limit (``truncated`` is always False).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from envs.contract import ContractParallelEnv, observations_from_state

__all__ = ["FlatParallelEnv", "TeamTasksEnv", "import_package", "resolve_kwargs"]


def import_package(family: str, module: str, install_hint: str) -> Any:
    """Import ``module``; without it, an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{family}: {install_hint}") from err


def resolve_kwargs(
    family: str,
    env_id: str | None,
    overrides: dict[str, Any],
    env_class: type,
    id_help: str,
) -> dict[str, Any]:
    """Constructor arguments of ``env_class``: the registered ``env_id``'s kwargs updated by
    ``overrides``, or ``overrides`` alone when ``env_id`` is None.

    Raises ValueError for an unknown id, an id of another package, an unknown argument or a
    missing required one; each message names the field and the fix.
    """
    params = inspect.signature(env_class.__init__).parameters
    allowed = [n for n in params if n != "self"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"{family}: unknown argument(s) {unknown}; allowed: env_id and the "
            f"{env_class.__name__} arguments {allowed}"
        )
    if env_id is None:
        kwargs = dict(overrides)
    else:
        if not isinstance(env_id, str):
            raise ValueError(f"{family}: env_id={env_id!r} must be a string; {id_help}")
        try:
            spec = gym.spec(env_id)
        except gym.error.Error as err:
            raise ValueError(f"{family}: env_id={env_id!r} is not registered ({err}); "
                             f"{id_help}") from None
        if _entry_point(spec) is not env_class:
            raise ValueError(f"{family}: env_id={env_id!r} is registered for "
                             f"{spec.entry_point!r}, not {env_class.__name__}; {id_help}")
        kwargs = {**spec.kwargs, **overrides}
    missing = [
        n for n, p in params.items()
        if n != "self" and p.default is inspect.Parameter.empty and n not in kwargs
    ]
    if missing:
        raise ValueError(
            f"{family}: missing argument(s) {missing}; give a registered env_id ({id_help}) "
            f"or every required {env_class.__name__} argument"
        )
    return kwargs


def _entry_point(spec: gym.envs.registration.EnvSpec) -> Any:
    try:
        return gym.envs.registration.load_env_creator(spec.entry_point)
    except Exception:  # noqa: BLE001 - an unloadable entry point is simply not ours
        return None


class FlatParallelEnv(ParallelEnv):
    """A team ``gymnasium.Env`` of LBF or RWARE as a PettingZoo ``ParallelEnv``, with the
    package's own observation per agent (for example LBF's (y, x, level) vector).

    Observations, actions (``Discrete``) and rewards are the wrapped env's, unchanged. The
    wrapped ``done`` becomes a termination when ``is_success(env)`` holds and a truncation
    otherwise (a step or inactivity limit). Every agent is live for the whole episode.
    """

    metadata = {"name": "flat_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, env: gym.Env, name: str, is_success: Callable[[gym.Env], bool]):
        self.env = env
        self.metadata = {**self.metadata, "name": name}
        self._is_success = is_success
        n = len(env.observation_space.spaces)
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self.observation_spaces = dict(zip(self.possible_agents, env.observation_space.spaces,
                                           strict=True))
        self.action_spaces = {}
        for agent, space in zip(self.possible_agents, env.action_space.spaces, strict=True):
            if not isinstance(space, spaces.Discrete):
                raise ValueError(f"{name}: the action space of {agent} is {space}; only "
                                 "Discrete actions are supported (e.g. RWARE's msg_bits=0)")
            self.action_spaces[agent] = space

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, _ = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._by_agent(obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"step: actions missing for live agents {missing}")
        obs, rewards, done, _, _ = self.env.step([int(actions[a]) for a in self.agents])
        terminated = bool(done) and self._is_success(self.env)
        truncated = bool(done) and not terminated
        agents = self.agents
        if done:
            self.agents = []
        return (
            self._by_agent(obs),
            {a: float(r) for a, r in zip(agents, rewards, strict=True)},
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            {a: {} for a in agents},
        )

    def _by_agent(self, obs: tuple) -> dict[str, np.ndarray]:
        return {a: np.asarray(o, dtype=np.float32)
                for a, o in zip(self.possible_agents, obs, strict=True)}

    def close(self) -> None:
        self.env.close()


class TeamTasksEnv(ContractParallelEnv):
    """The body of a contract adapter around a team ``gymnasium.Env`` (``LBFTasks``,
    ``RWARETasks``): every agent is live from reset to the episode's end, rewards are the
    wrapped env's, the wrapped ``done`` ends the episode for all.

    A subclass sets ``family``, calls ``__init__`` (with the function that builds the
    wrapped env from ``env_id`` and ``kwargs``) then ``_build_agents``, and gives
    ``state()``, ``visibility()`` ((n, E) int8), ``_action_masks()`` ((n, A) int8),
    ``_on_reset()`` (after the wrapped reset), ``_team_step(actions) -> (rewards, done,
    task_rewards (T,) float32, terminated)``, ``_episode_stats()`` (the infos added at the
    episode's end) and ``_draw()`` (the ``rgb_array`` picture).
    """

    family: str
    # Each agent's rewards are its own; task_rewards add them up over the agents.
    task_rewards_summed_over_agents = True

    def __init__(
        self,
        env_id: str | None,
        render_mode: str | None,
        kwargs: dict[str, Any],
        make_env: Callable[[str | None, dict[str, Any]], gym.Env],
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"{self.family}: render_mode={render_mode!r} is not supported; "
                             "allowed: None, 'rgb_array'")
        self.render_mode = render_mode
        self.env_id = env_id
        self._env = make_env(env_id, kwargs)

    def _build_agents(
        self, n_agents: int, n_entities: int, n_features: int, n_tasks: int, n_actions: int
    ) -> None:
        """``possible_agents`` agent_0..agent_{n-1} and their contract spaces (features in
        [0, 1])."""
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self._build_contract_spaces(n_entities, n_features, n_tasks, n_actions, 0.0, 1.0)

    @property
    def unwrapped_env(self) -> Any:
        """The wrapped gymnasium env."""
        return self._env

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        return observations_from_state(self.state(), self.visibility(), self._action_masks(),
                                       self.possible_agents, self.possible_agents)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Reset the wrapped env with ``seed`` (``options`` are ignored, as the wrapped env
        does); returns (observations, infos)."""
        self._env.reset(seed=seed)
        self._on_reset()
        self.agents = list(self.possible_agents)
        zeros = np.zeros(self.n_tasks, dtype=np.float32)
        return self._observe(), {a: {"task_rewards": zeros.copy()} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Step the wrapped env with one action per agent; returns (observations, rewards,
        terminations, truncations, infos), rewards exactly the wrapped env's. An episode end
        that is not a termination is a truncation."""
        self._require_actions(actions)
        acting = self.agents
        rewards, done, task_rewards, terminated = self._team_step(
            [int(actions[a]) for a in acting]
        )
        stats = self._episode_stats() if done else {}
        infos = {a: {"task_rewards": task_rewards.copy(), **stats} for a in acting}
        obs = self._observe()
        if done:
            self.agents = []
        return (
            obs,
            {a: float(r) for a, r in zip(acting, rewards, strict=True)},
            dict.fromkeys(acting, terminated),
            dict.fromkeys(acting, done and not terminated),
            infos,
        )

    def render(self) -> np.ndarray:
        """"rgb_array": an (rows * 32, cols * 32, 3) uint8 picture of the grid."""
        if self.render_mode is None:
            raise ValueError("render() needs render_mode='rgb_array' at construction")
        return self._draw()

    def close(self) -> None:
        self._env.close()
