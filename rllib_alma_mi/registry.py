"""Environments known to the hierarchy: built-ins and users' own contract environments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.registry import register_env as _tune_register_env

from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.settings import HierarchySettings

HIERARCHY_KEY = "_hierarchy"
# In the hierarchy block, beside the HierarchySettings: whether observations carry the
# centralized state (derived from the MI settings by AlmaPPOConfig, not a user setting).
INCLUDE_STATE = "include_state"
_CREATORS: dict[str, Callable[..., Any]] = {}
_CHECKED: set[tuple[str, str]] = set()


def hierarchy_block(env_config: dict[str, Any]) -> tuple[HierarchySettings, bool]:
    """The hierarchy settings and `include_state` that `AlmaPPOConfig` wrote into an
    `env_config` (defaults when it holds no hierarchy block)."""
    block = dict(env_config.get(HIERARCHY_KEY, {}))
    include_state = bool(block.pop(INCLUDE_STATE, False))
    return HierarchySettings.from_dict(block), include_state


class _HierarchyCreator:
    """Picklable RLlib env creator: `env_config` = the user's env kwargs + the hierarchy block."""

    def __init__(self, creator: Callable[..., Any]):
        self.creator = creator

    def __call__(self, env_config: dict[str, Any]) -> HierarchicalEnv:
        kwargs = dict(env_config)
        settings, include_state = hierarchy_block(kwargs)
        kwargs.pop(HIERARCHY_KEY, None)
        return HierarchicalEnv(self.creator(**kwargs), settings, include_state=include_state)


def register_env(name: str, creator: Callable[..., Any]) -> None:
    """Make a contract `ParallelEnv` factory trainable as `AlmaPPOConfig().environment(name)`.

    `creator(**env_config)` must return a PettingZoo ParallelEnv that meets the entity-task
    contract (`envs.contract.check_env` runs on it when an algorithm is built).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_env: name must be a non-empty string, got {name!r}")
    if not callable(creator):
        raise ValueError(f"register_env: creator for {name!r} must be callable, got {creator!r}")
    _CREATORS[name] = creator
    _tune_register_env(name, _HierarchyCreator(creator))


def registered_envs() -> list[str]:
    return sorted(_CREATORS)


def base_env_creator(name: str) -> Callable[..., Any]:
    if name not in _CREATORS:
        raise ValueError(
            f"environment {name!r} is not registered; known: {registered_envs()}. Register "
            "your own with rllib_alma_mi.register_env(name, creator)"
        )
    return _CREATORS[name]


def make_env(name: str, env_config: dict[str, Any]) -> HierarchicalEnv:
    """The hierarchy around a fresh base env, checking the base env's contract once per config."""
    kwargs = {k: v for k, v in env_config.items() if k != HIERARCHY_KEY}
    creator = base_env_creator(name)
    key = (name, repr(sorted(kwargs.items())))
    if key not in _CHECKED:
        from envs.contract import check_env

        check_env(creator(**kwargs))
        _CHECKED.add(key)
    return _HierarchyCreator(creator)(dict(env_config))


def _save_the_city(**kwargs: Any):
    from envs.save_the_city import parallel_env

    return parallel_env(**kwargs)


def _mpe_spread(**kwargs: Any):
    from envs.mpe_tasks import parallel_env  # without mpe2 this raises "pip install .[mpe]"

    return parallel_env(**kwargs)


def _lbf(**kwargs: Any):
    from envs.lbf import parallel_env  # without lbforaging this raises "pip install .[lbf]"

    return parallel_env(**kwargs)


def _rware(**kwargs: Any):
    from envs.rware import parallel_env  # without rware this raises "pip install .[rware]"

    return parallel_env(**kwargs)


def register_builtin_envs() -> None:
    register_env("save_the_city", _save_the_city)
    register_env("mpe_spread", _mpe_spread)
    register_env("lbf", _lbf)
    register_env("rware", _rware)


register_builtin_envs()
