"""rllib_alma_mi: ALMA hierarchical task allocation with a MINE auxiliary loss on RLlib.

The RLlib-facing names load on first use, so `rllib_alma_mi.nn` and `rllib_alma_mi.settings`
stay importable without Ray. Loading them registers the built-in environments with Ray Tune.
"""

from importlib import import_module

_LAZY = {
    "AlmaPPO": "rllib_alma_mi.algorithm",
    "AlmaPPOConfig": "rllib_alma_mi.algorithm",
    "HierarchicalEnv": "rllib_alma_mi.hierarchy",
    "load_algorithm": "rllib_alma_mi.app.checkpoints",
    "register_env": "rllib_alma_mi.registry",
    "registered_envs": "rllib_alma_mi.registry",
    "HierarchySettings": "rllib_alma_mi.settings",
    "ModelSettings": "rllib_alma_mi.settings",
    "MutualInfoSettings": "rllib_alma_mi.settings",
    "save_checkpoint": "rllib_alma_mi.app.checkpoints",
}

__all__ = sorted(_LAZY)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'rllib_alma_mi' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
