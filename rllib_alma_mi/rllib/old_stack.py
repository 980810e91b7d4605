"""Wiring of `AlmaPPOConfig` for RLlib's old API stack (ModelV2 + Policy).

Selected by `config.api_stack(enable_rl_module_and_learner=False,
enable_env_runner_and_connector_v2=False)`. Every `.alma()` / `.mutual_info()` setting means
what it means on the new stack: the same hierarchy block in `env_config`, the same networks
(`model_v2` wraps the new stack's modules), the MI term on the same module with the same
`mi_weight`, and the same episode metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.rllib.policy.policy import PolicySpec

from rllib_alma_mi.hierarchy import ALLOCATOR
from rllib_alma_mi.registry import HIERARCHY_KEY, make_env
from rllib_alma_mi.rllib.action_dist_v2 import ALLOCATION_DIST
from rllib_alma_mi.rllib.model_v2 import ALLOCATOR_MODEL, WORKER_MODEL
from rllib_alma_mi.settings import check_combination

if TYPE_CHECKING:
    from rllib_alma_mi.config import AlmaPPOConfig


def wire_old_stack(config: AlmaPPOConfig) -> None:
    """Sets the policies (`allocator`, `worker`), their models and the policy mapping.

    Policy `allocator`: model `alma_allocator` with the `alma_allocation` distribution;
    policy `worker` (shared by all low-level agents): model `alma_worker`. The model's
    `custom_model_config` carries the `.alma()` model settings and the `.mutual_info()` block,
    with `mi_enabled` set on the policy that carries the MI term.
    """
    from rllib_alma_mi.config import WORKER, agent_to_module

    if config.enable_env_runner_and_connector_v2:
        raise ValueError(
            "AlmaPPOConfig on the old API stack needs both switches off: "
            ".api_stack(enable_rl_module_and_learner=False, "
            "enable_env_runner_and_connector_v2=False)"
        )
    hierarchy, mi = config.hierarchy_settings(), config.mi_settings()
    model = config.model_settings()
    check_combination(hierarchy, mi)
    if not isinstance(config.env, str):
        raise ValueError(
            "AlmaPPOConfig needs a registered environment name: call "
            ".environment('save_the_city') or register your own with "
            "rllib_alma_mi.register_env(name, creator)"
        )
    env_kwargs = {k: v for k, v in (config.env_config or {}).items() if k != HIERARCHY_KEY}
    config.env_config = {**env_kwargs, HIERARCHY_KEY: hierarchy.to_dict()}
    probe = make_env(config.env, config.env_config)
    worker_id = probe.workers[0]
    policy_ids = [WORKER] + ([ALLOCATOR] if probe.learned else [])
    policies = {}
    for policy_id in policy_ids:
        agent = ALLOCATOR if policy_id == ALLOCATOR else worker_id
        carries_mi = mi.use_mutual_info and mi.module_id == policy_id
        model_config = {
            "custom_model": ALLOCATOR_MODEL if policy_id == ALLOCATOR else WORKER_MODEL,
            "custom_model_config": {
                **model.to_dict(),
                **mi.to_dict(),
                "mi_enabled": carries_mi,
            },
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
    config._ensure_metrics_callback()
