"""Environments known to the hierarchy: built-ins and users' own contract environments."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ray.rllib.env.env_context import EnvContext
from ray.tune.registry import register_env as _tune_register_env

from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.settings import HierarchySettings

HIERARCHY_KEY = "_hierarchy"
# In the hierarchy block, beside the HierarchySettings: whether observations carry the
# centralized state (derived from the MI settings by AlmaPPOConfig, not a user setting).
INCLUDE_STATE = "include_state"
CONFIG_DICT = "config_dict"  # RLlib's convention: creator(env_config)
KEYWORDS = "keywords"  # a PettingZoo factory's convention: creator(**env_config)
_CREATORS: dict[str, BaseEnvCreator] = {}
_CHECKED: set[tuple[str, str]] = set()


def creator_convention(name: str, creator: Callable[..., Any]) -> str:
    """How `creator` takes the env settings, read from its signature.

    `CONFIG_DICT` when its only parameter is one required positional parameter (RLlib's
    `lambda cfg: MyEnv(**cfg)`, `def make(env_config)`): it is called with the settings as
    one `EnvContext` (a dict). `KEYWORDS` otherwise (`parallel_env(n_agents=2, **kwargs)`,
    an env class, `lambda **kw: ...`): it is called as `creator(**settings)`. A `*args`
    parameter leaves it undecidable and raises ValueError.
    """
    fix = (
        f"register_env({name!r}, ...): wrap the creator as `lambda cfg: creator(cfg)` "
        "(RLlib's convention: one dict of settings) or `lambda **kw: creator(**kw)` "
        "(keyword settings, as PettingZoo's parallel_env)"
    )
    try:
        params = list(inspect.signature(creator).parameters.values())
    except (TypeError, ValueError):
        raise ValueError(f"{fix}: the creator's signature cannot be read") from None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise ValueError(f"{fix}: a creator taking *args could be either") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) == 1 and params[0].kind in positional and params[0].default is params[0].empty:
        return CONFIG_DICT
    return KEYWORDS


class BaseEnvCreator:
    """A registered creator called with keyword settings, whichever convention it follows:
    `BaseEnvCreator(creator, convention)(**settings)` -> the base `ParallelEnv`."""

    def __init__(self, creator: Callable[..., Any], convention: str):
        self.creator = creator
        self.convention = convention
        if convention == KEYWORDS:
            # `inspect.signature` of this object then lists the env's own settings.
            self.__signature__ = inspect.signature(creator)

    def __call__(self, **kwargs: Any) -> Any:
        return self.build(EnvContext(kwargs, worker_index=0))

    def build(self, context: EnvContext) -> Any:
        """The base env for `context` (the settings, with RLlib's worker/vector indices)."""
        if self.convention == KEYWORDS:
            return self.creator(**context)
        return self.creator(context)


def hierarchy_block(env_config: dict[str, Any]) -> tuple[HierarchySettings, bool]:
    """The hierarchy settings and `include_state` that `AlmaPPOConfig` wrote into an
    `env_config` (defaults when it holds no hierarchy block)."""
    block = dict(env_config.get(HIERARCHY_KEY, {}))
    include_state = bool(block.pop(INCLUDE_STATE, False))
    return HierarchySettings.from_dict(block), include_state


class _HierarchyCreator:
    """Picklable RLlib env creator: `env_config` = the user's env kwargs + the hierarchy block."""

    def __init__(self, creator: BaseEnvCreator):
        self.creator = creator

    def __call__(self, env_config: dict[str, Any]) -> HierarchicalEnv:
        kwargs = {k: v for k, v in env_config.items() if k != HIERARCHY_KEY}
        settings, include_state = hierarchy_block(env_config)
        if isinstance(env_config, EnvContext):  # keep RLlib's worker/vector indices
            context = env_config.copy_with_overrides(env_config=kwargs)
        else:
            context = EnvContext(kwargs, worker_index=0)
        return HierarchicalEnv(
            self.creator.build(context), settings, include_state=include_state
        )


def register_env(name: str, creator: Callable[..., Any]) -> None:
    """Make a contract `ParallelEnv` factory trainable as `AlmaPPOConfig().environment(name)`.

    Both conventions work (see `creator_convention`): RLlib's `creator(env_config)`, which
    receives the user's `env_config` (without the hierarchy block) as an `EnvContext`, and a
    PettingZoo factory `creator(**env_config)`. It must return a PettingZoo ParallelEnv that
    meets the entity-task contract (`envs.contract.check_env` runs on it when an algorithm is
    built).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_env: name must be a non-empty string, got {name!r}")
    if not callable(creator):
        raise ValueError(f"register_env: creator for {name!r} must be callable, got {creator!r}")
    base = BaseEnvCreator(creator, creator_convention(name, creator))
    _CREATORS[name] = base
    _CHECKED.difference_update({key for key in _CHECKED if key[0] == name})
    _tune_register_env(name, _HierarchyCreator(base))


def registered_envs() -> list[str]:
    return sorted(_CREATORS)


def base_env_creator(name: str) -> BaseEnvCreator:
    """The registered creator of `name`, called as `base_env_creator(name)(**env_config)`."""
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
