"""PettingZoo environments that follow the entity-task observation contract (no Ray import)."""

from envs.contract import OBS_KEYS, STATE_KEYS, ContractError, check_env
from envs.save_the_city import (
    ACTION_NAMES,
    AGENT_TYPES,
    FEATURES,
    N_ACTIONS,
    N_FEATURES,
    SaveTheCityEnv,
    heuristic_allocation,
    parallel_env,
)

__all__ = [
    "ACTION_NAMES",
    "AGENT_TYPES",
    "FEATURES",
    "N_ACTIONS",
    "N_FEATURES",
    "OBS_KEYS",
    "STATE_KEYS",
    "ContractError",
    "SaveTheCityEnv",
    "check_env",
    "heuristic_allocation",
    "parallel_env",
]
