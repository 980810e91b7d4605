"""Wiring of `AlmaPPOConfig` for RLlib's old API stack (ModelV2 + Policy).

Selected by `config.api_stack(enable_rl_module_and_learner=False,
enable_env_runner_and_connector_v2=False)`. Every `.alma()` / `.mutual_info()` setting means
what it means on the new stack: the same hierarchy block in `env_config`, the same networks
(`model_v2` wraps the new stack's modules), the MI term on the same module with the same
`mi_weight`, and the same episode metrics.
"""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.policy.policy import PolicySpec

from rllib_alma_mi.keys import ALLOCATOR, agent_to_module
from rllib_alma_mi.rllib.callbacks import TaskMetricsCallback, add_callback
from rllib_alma_mi.rllib.old_stack.action_dist import ALLOCATION_DIST
from rllib_alma_mi.rllib.old_stack.model_v2 import ALLOCATOR_MODEL, WORKER_MODEL


def wire_old_stack(config: PPOConfig) -> None:
    """Sets the policies (`allocator`, `worker`), their models and the policy mapping of an
    `AlmaPPOConfig`.

    Policy `allocator`: model `alma_allocator` with the `alma_allocation` distribution;
    policy `worker` (shared by all low-level agents): model `alma_worker`. The model's
    `custom_model_config` carries the `.alma()` model settings and the `.mutual_info()` block,
    with `mi_enabled` set on the policy that carries the MI term.
    """
    if config.enable_env_runner_and_connector_v2:
        raise ValueError(
            "AlmaPPOConfig on the old API stack needs both switches off: "
            ".api_stack(enable_rl_module_and_learner=False, "
            "enable_env_runner_and_connector_v2=False)"
        )
    if config.imitation_steps:
        raise ValueError(
            f"imitation_steps={config.imitation_steps}: the allocator's imitation term exists "
            "on the new API stack only; use imitation_steps=0 on the old stack"
        )
    if config.allocator_credit != "team":
        raise ValueError(
            f"allocator_credit={config.allocator_credit!r}: per-task credit of the allocator "
            "exists on the new API stack only; use allocator_credit='team' on the old stack"
        )
    probe, settings = config.prepare_hierarchy()
    policy_ids = list(settings)
    policies = {}
    for policy_id, custom_model_config in settings.items():
        agent = ALLOCATOR if policy_id == ALLOCATOR else probe.workers[0]
        model_config = {
            "custom_model": ALLOCATOR_MODEL if policy_id == ALLOCATOR else WORKER_MODEL,
            "custom_model_config": custom_model_config,
        }
        if policy_id == ALLOCATOR:
            model_config["custom_action_dist"] = ALLOCATION_DIST
        policies[policy_id] = PolicySpec(
            observation_space=probe.observation_spaces[agent],
            action_space=probe.action_spaces[agent],
            config={"model": model_config},
        )
    config.multi_agent(
        policies=policies,
        policy_mapping_fn=agent_to_module,
        policies_to_train=list(policy_ids),
    )
    add_callback(config, TaskMetricsCallback)
