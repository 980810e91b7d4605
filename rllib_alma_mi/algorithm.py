"""`AlmaPPOConfig` / `AlmaPPO`: PPO on RLlib's new API stack with the ALMA hierarchy and MINE."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_alma_mi.evolution import (
    EvolutionSettings,
    attach_evolution,
    evolution_state,
    restore_evolution_state,
)
from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.keys import ALLOCATOR, WORKER, agent_to_module
from rllib_alma_mi.registry import HIERARCHY_KEY, INCLUDE_STATE, make_env
from rllib_alma_mi.rllib.allocator_module import AllocatorModule
from rllib_alma_mi.rllib.callbacks import TaskMetricsCallback, add_callback
from rllib_alma_mi.rllib.env_runner import AlmaEnvRunner
from rllib_alma_mi.rllib.learner import AlmaPPOLearner
from rllib_alma_mi.rllib.sharding import AlmaLearnerGroup
from rllib_alma_mi.rllib.worker_module import WorkerModule
from rllib_alma_mi.settings import (
    ALMA_KEYS,
    EvaluationSettings,
    HierarchySettings,
    ModelSettings,
    MutualInfoSettings,
    alma_defaults,
    check_combination,
)


class AlmaPPOConfig(PPOConfig):
    """PPO config with two extra blocks: `.alma(...)` and `.mutual_info(...)`.

    The modules (`allocator`, `worker`), the policy mapping, the hierarchy wrapper and the
    learner are set up from these blocks when the algorithm is built.
    """

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or AlmaPPO)
        for key, value in alma_defaults().items():
            setattr(self, key, value)
        self.training(
            lr=3e-4,
            gamma=0.99,
            lambda_=0.95,
            train_batch_size_per_learner=4000,
            minibatch_size=1000,
            num_epochs=5,
            clip_param=0.2,
            entropy_coeff=0.01,
            vf_loss_coeff=0.5,
            # RLlib clips the squared value error at vf_clip_param (10 by default), which zeroes
            # the critic's gradient whenever a return is more than ~3 from its prediction: the
            # allocator's returns are tens, and its critic learned slowly or not at all.
            vf_clip_param=float("inf"),
            use_kl_loss=False,
            grad_clip=10.0,
            grad_clip_by="global_norm",
        )
        # AlmaPPOLearner drops a module's non-finite update itself (see its docstring); RLlib's
        # own per-tensor finiteness checks before stepping would only repeat that, twice.
        self.framework(torch_skip_nan_gradients=True)
        # PPO samples and updates in turn: two env runners at half a CPU each fill both cores
        # while sampling, and the local learner takes the same cores while it updates.
        # Eight envs per runner batch RLlib's per-step work (connectors, episode bookkeeping,
        # the modules' small forward passes) over twice the rows; with four, sampling took
        # ~30% longer and learning was the same (results/envs_per_runner).
        self.env_runners(
            num_env_runners=2,
            num_envs_per_env_runner=8,
            num_cpus_per_env_runner=0.5,
            rollout_fragment_length="auto",
        )
        # RLlib's env check steps one action sampled from the unmasked action space, which a
        # masked allocation can violate; the contract check of the base env runs instead.
        # Actions are discrete (the contract), so there is nothing to unsquash or clip, and
        # RLlib would still deep-copy every action batch to find that out.
        self.environment(disable_env_checking=True, normalize_actions=False)
        self.callbacks(TaskMetricsCallback)
        self.evolution_config = None  # the `.evolution()` block (off by default)
        # The `.seeded_evaluation()` block: one env seed per evaluation episode (or None). Not
        # named evaluation_*: `update_from_dict` passes those keys to `.evaluation()`.
        self.eval_episode_seeds = None

    # ------------------------------------------------------------------ the two new blocks
    def alma(self, **kwargs: Any) -> AlmaPPOConfig:
        """Hierarchy and model settings: allocation, alloc_interval, worker_reward,
        subtask_mask, allocator_view, imitation_steps, imitation_weight, allocator_credit,
        embed_dim, n_heads, agent_attention, relative_scale,
        shared_worker_encoder, keep_bias."""
        unknown = sorted(set(kwargs) - set(ALMA_KEYS))
        if unknown:
            raise ValueError(
                f"alma(): unknown key(s) {unknown}; allowed keys are {list(ALMA_KEYS)}"
            )
        return self._set_validated(
            kwargs, lambda: (self.hierarchy_settings(), self.model_settings())
        )

    def mutual_info(self, **kwargs: Any) -> AlmaPPOConfig:
        """MINE settings: use_mutual_info, mi_measure, mi_embed_dim, mi_weight, mi_scheme,
        mi_target, mi_detach_target, mi_negatives."""
        allowed = MutualInfoSettings.keys()
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(
                f"mutual_info(): unknown key(s) {unknown}; allowed keys are {list(allowed)}"
            )
        return self._set_validated(kwargs, self.mi_settings)

    def _set_validated(self, kwargs: dict[str, Any], validate) -> AlmaPPOConfig:
        """Set `kwargs`, then validate; a rejected call leaves the config as it was."""
        previous = {key: getattr(self, key) for key in kwargs}
        for key, value in kwargs.items():
            setattr(self, key, value)
        try:
            validate()
        except ValueError:
            for key, value in previous.items():
                setattr(self, key, value)
            raise
        return self

    def evolution(self, enabled: bool = True, **kwargs: Any) -> AlmaPPOConfig:
        """ALMA-EA population of allocator heads (`rllib_alma_mi.evolution`); keys as
        `EvolutionSettings`. `evolution(enabled=False)` turns it off again."""
        settings = EvolutionSettings.from_dict(kwargs)  # raises ValueError on a bad key/value
        self.evolution_config = settings.to_dict() if enabled else None
        return self

    def seeded_evaluation(self, **kwargs: Any) -> AlmaPPOConfig:
        """Evaluation during training on fixed episodes; keys as `EvaluationSettings`.

        Every `interval` iterations RLlib's evaluation env runners play `episodes` episodes,
        episode i reset with seed `seeds[i]`, greedily (`explore=False`) unless `greedy=False`;
        so each evaluation sees the same episodes (the same teams and layouts). Their metrics
        appear under `result["evaluation"]["env_runners"]` (`solved`,
        `tasks_completed_frac`, `team_return`, ...). Each evaluation env runner steps one
        env, so that every listed episode is played to its end; the episodes are split over
        `num_env_runners` runners (0: one runner in the algorithm's process).
        """
        settings = EvaluationSettings.from_dict(kwargs)  # raises ValueError on a bad value
        self.eval_episode_seeds = settings.episode_seeds()
        self.evaluation(
            evaluation_interval=settings.interval,
            evaluation_duration=settings.episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=settings.num_env_runners,
            evaluation_parallel_to_training=False,
            evaluation_config={"explore": not settings.greedy, "num_envs_per_env_runner": 1},
        )
        return self

    def hierarchy_settings(self) -> HierarchySettings:
        return HierarchySettings(**{k: getattr(self, k) for k in HierarchySettings.keys()})

    def model_settings(self) -> ModelSettings:
        return ModelSettings(**{k: getattr(self, k) for k in ModelSettings.keys()})

    def mi_settings(self) -> MutualInfoSettings:
        return MutualInfoSettings(**{k: getattr(self, k) for k in MutualInfoSettings.keys()})

    # ------------------------------------------------------------------ build-time wiring
    def validate(self) -> None:
        attach_evolution(self)
        if self.enable_rl_module_and_learner:
            self._wire_hierarchy()
        else:
            self._wire_old_stack()
        super().validate()

    def _wire_old_stack(self) -> None:
        """Old API stack (ModelV2 + Policy): see `rllib_alma_mi.rllib.old_stack`."""
        from rllib_alma_mi.rllib.old_stack import wire_old_stack

        wire_old_stack(self)

    def prepare_hierarchy(self) -> tuple[HierarchicalEnv, dict[str, dict[str, Any]]]:
        """Validates the blocks, writes the hierarchy block into `env_config`, and returns a
        probe env (for the spaces) and each module's model settings, the same on both API
        stacks: `{module_id: {model settings, mi settings, "mi_enabled": bool}}`."""
        hierarchy, model, mi = self.hierarchy_settings(), self.model_settings(), self.mi_settings()
        check_combination(hierarchy, mi)
        if not isinstance(self.env, str):
            raise ValueError(
                "AlmaPPOConfig needs a registered environment name: call "
                ".environment('save_the_city') or register your own with "
                "rllib_alma_mi.register_env(name, creator)"
            )
        env_kwargs = {k: v for k, v in (self.env_config or {}).items() if k != HIERARCHY_KEY}
        self.env_config = {
            **env_kwargs,
            HIERARCHY_KEY: {**hierarchy.to_dict(), INCLUDE_STATE: mi.needs_state},
        }
        probe = make_env(self.env, self.env_config)
        module_ids = [WORKER] + ([ALLOCATOR] if probe.learned else [])
        settings = {
            module_id: {
                **model.to_dict(),
                **mi.to_dict(),
                "mi_enabled": mi.use_mutual_info and mi.module_id == module_id,
            }
            for module_id in module_ids
        }
        if ALLOCATOR in settings:
            settings[ALLOCATOR]["allocator_credit"] = hierarchy.allocator_credit
        return probe, settings

    def _wire_hierarchy(self) -> None:
        probe, settings = self.prepare_hierarchy()
        module_ids = list(settings)
        specs = {}
        for module_id, model_config in settings.items():
            agent = ALLOCATOR if module_id == ALLOCATOR else probe.workers[0]
            specs[module_id] = RLModuleSpec(
                module_class=AllocatorModule if module_id == ALLOCATOR else WorkerModule,
                observation_space=probe.observation_spaces[agent],
                action_space=probe.action_spaces[agent],
                model_config=model_config,
            )
        self.multi_agent(
            policies=list(module_ids),  # a set would make the module order (and so the
            # initial weights drawn from the seeded RNG) depend on PYTHONHASHSEED
            policy_mapping_fn=agent_to_module,
            policies_to_train=list(module_ids),
        )
        self.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        if self.env_runner_cls is None:
            self.env_runners(env_runner_cls=AlmaEnvRunner)
        add_callback(self, TaskMetricsCallback)

    def get_default_learner_class(self):
        return AlmaPPOLearner

    def build_learner_group(self, *, env=None, spaces=None, rl_module_spec=None,
                            placement_group=None) -> AlmaLearnerGroup:
        """RLlib's learner group, sharding whole episodes over several learners
        (`rllib_alma_mi.rllib.sharding`)."""
        if rl_module_spec is None:
            rl_module_spec = self.get_multi_rl_module_spec(env=env, spaces=spaces)
        return AlmaLearnerGroup(
            config=self.copy(), module_spec=rl_module_spec, placement_group=placement_group
        )


class AlmaPPO(PPO):
    """PPO whose default config is `AlmaPPOConfig` (so its settings reach the learner)."""

    @classmethod
    def get_default_config(cls) -> AlmaPPOConfig:
        return AlmaPPOConfig()

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return evolution_state(self, super().get_state(*args, **kwargs), *args, **kwargs)

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        restore_evolution_state(self, state)
