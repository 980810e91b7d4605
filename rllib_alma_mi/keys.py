"""Every name that crosses a module boundary: module and agent ids, observation keys, the
episode statistics the hierarchy reports, and the metric names the learner logs.

Pure Python (no Ray). Other modules import these rather than spelling the strings.
"""

from __future__ import annotations

from typing import Any

# Module ids (one MultiRLModule, two modules) and the allocator's agent id.
ALLOCATOR = "allocator"
WORKER = "worker"
MODULE_IDS = (ALLOCATOR, WORKER)

# Observation keys the hierarchy adds to the contract's (see the README's contract section).
STATE = "state"  # the centralized state, training only
HEURISTIC_ALLOCATION = "heuristic_allocation"  # the imitation target, training only
AGENT_MASK = "agent_mask"
AGENT_OBS_MASK = "agent_obs_mask"
CURRENT_ALLOCATION = "current_allocation"  # each slot's task now, -1 before the first
SUBTASK = "subtask"  # a worker's subtask entities, when it sees beyond them (subtask_mask off)
TRAINING_ONLY_KEYS = (STATE, HEURISTIC_ALLOCATION)
# The keys of `env.state()` in the contract.
STATE_KEYS = ("entities", "entity_mask", "entity2task", "task_mask")

# Episode statistics: the contract env's (last step's infos) and those the hierarchy adds.
SOLVED = "solved"
TASKS_COMPLETED = "tasks_completed_frac"
TASKS_BURNED = "tasks_burned_frac"
EPISODE_STATS = (SOLVED, TASKS_COMPLETED, TASKS_BURNED)
# The allocator's info with allocator_credit="task": each task's reward since its last decision.
TASK_RETURNS = "task_returns"
TEAM_RETURN = "team_return"  # the team's return, comparable across methods
BASE_ENV_STEPS = "base_env_steps"  # the wrapped env's steps in the episode
BASE_ENV_STEPS_LIFETIME = "num_base_env_steps_lifetime"

# Metrics the learner logs under result["learners"][module_id].
MI_LOSS = "mi_loss"
MI_VALUE = "mi_value"
MI_SKIPPED = "mi_skipped"
IMITATION_LOSS = "imitation_loss"
IMITATION_WEIGHT = "imitation_weight"
IMITATION_SKIPPED = "imitation_skipped"
PER_CHOICE_POLICY_LOSS = "per_choice_policy_loss"
TASK_VF_LOSS = "task_vf_loss"
TASK_VF_EXPLAINED_VAR = "task_vf_explained_var"


def agent_to_module(agent_id: str, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping: the allocator agent to `allocator`, every low-level agent to `worker`."""
    return ALLOCATOR if agent_id == ALLOCATOR else WORKER
