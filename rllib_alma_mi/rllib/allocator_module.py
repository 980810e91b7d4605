"""The `allocator` RLModule: ALMA's autoregressive pointer allocator with a value head."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from rllib_alma_mi.keys import HEURISTIC_ALLOCATION, TRAINING_ONLY_KEYS
from rllib_alma_mi.nn.allocation import AllocatorNet
from rllib_alma_mi.nn.mi_head import MIHead
from rllib_alma_mi.nn.mi_targets import GlobalStateEncoder
from rllib_alma_mi.nn.task_value import TaskValueNet
from rllib_alma_mi.rllib.acting import NoModeSwitchActing
from rllib_alma_mi.rllib.allocation_dist import joint_allocation_cls
from rllib_alma_mi.settings import ALLOCATOR_CREDITS, ModelSettings, check_choice

# forward_train output: joint log-prob (B,) of the heuristic's allocation, when observed.
IMITATION_LOGP = "imitation_logp"


class AllocatorModule(NoModeSwitchActing, TorchRLModule, ValueFunctionAPI):
    """Joint allocation policy over the hierarchy's allocator observation.

    Observation: the Dict of `HierarchicalEnv` (entities (E, F), masks, agent_mask (N,),
    agent_obs_mask (N, E), optional `state` and `heuristic_allocation`). Action: (N,) task
    indices.
    Exploration/inference sample autoregressively and return the actions, their joint log-prob
    and the per-step conditional logits (B, N*T); training recomputes those logits in one
    teacher-forced pass, so `JointAllocation` over them gives the exact joint log-prob; with
    `heuristic_allocation` observed it also gives that allocation's joint log-prob
    (`imitation_logp`, for the learner's imitation term).

    model_config: `embed_dim`, `n_heads`, `agent_attention`, `relative_scale`, the MI
    settings (`mi_*`, `use_mutual_info`) when this module carries the MI term, and
    `allocator_credit` ("team" when absent).

    Critic: with "team" credit a deep-sets encoder of the visible entities and a linear value
    (B,). With "task" credit a value per task (`compute_task_values`, (B, T), `TaskValueNet`)
    instead, and `compute_values` is their sum over the live tasks, so RLlib's GAE over the
    team reward still has the team value it expects.
    """

    def setup(self) -> None:
        space = self.observation_space
        cfg = self.model_config
        self.n_entities, self.n_features = space["entities"].shape
        self.n_tasks = space["task_mask"].shape[0]
        self.n_slots = space["agent_mask"].shape[0]
        model = ModelSettings.pick(cfg)
        embed_dim = model.embed_dim
        self.net = AllocatorNet(
            self.n_features,
            self.n_slots,
            self.n_tasks,
            embed_dim=embed_dim,
            n_heads=model.n_heads,
            agent_attention=model.agent_attention,
            relative_scale=model.relative_scale,
            keep_bias=model.keep_bias,
        )
        self.allocator_credit = cfg.get("allocator_credit", "team")
        check_choice("allocator_credit", self.allocator_credit, ALLOCATOR_CREDITS)
        if self.allocator_credit == "task":
            self.task_value_net = TaskValueNet(self.n_features, embed_dim)
        else:
            self.value_net = GlobalStateEncoder(self.n_features, embed_dim)
            self.value_out = torch.nn.Linear(embed_dim, 1)
        self.mi = MIHead.from_model_config(cfg, x_dim=embed_dim, n_features=self.n_features)
        # Whether forward_train scores the heuristic's allocation; the learner turns it off
        # once the imitation weight has decayed to 0.
        self.imitating = True

    def _acting_obs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # Acting never reads the centralized `state` nor the heuristic's allocation.
        return {k: v for k, v in batch[Columns.OBS].items() if k not in TRAINING_ONLY_KEYS}

    @torch.no_grad()
    def _act(self, batch: dict[str, Any], deterministic: bool) -> dict[str, Any]:
        obs = self._acting_obs(batch)
        allocation, log_prob, _, logits = self.net.sample(obs, deterministic=deterministic)
        return {
            Columns.ACTIONS: allocation,
            Columns.ACTION_LOGP: log_prob,
            Columns.ACTION_DIST_INPUTS: logits.flatten(1),
        }

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, deterministic=True)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, deterministic=False)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, deterministic=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = self._acting_obs(batch)
        enc = self.net.encode(obs)
        _, _, logits = self.net.log_prob(obs, batch[Columns.ACTIONS].long(), enc=enc)
        out = {Columns.ACTION_DIST_INPUTS: logits.flatten(1)}
        if self.imitating and HEURISTIC_ALLOCATION in batch[Columns.OBS]:
            target = batch[Columns.OBS][HEURISTIC_ALLOCATION].long()
            out[IMITATION_LOGP], _, _ = self.net.log_prob(obs, target, enc=enc)
        if self.mi is not None:
            out.update(self.mi.inputs_from_allocator(enc, batch[Columns.OBS]))
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """The team value (B,)."""
        if self.allocator_credit == "task":
            return self.compute_task_values(batch).sum(dim=-1)
        obs = batch[Columns.OBS]
        visible = obs["entity_mask"].bool() & obs["obs_mask"].bool()
        pooled = self.value_net({"entities": obs["entities"], "entity_mask": visible})
        return self.value_out(pooled).squeeze(-1)

    def compute_task_values(self, batch: dict[str, Any]) -> torch.Tensor:
        """The value of each task (B, T), 0 for tasks that are not live; "task" credit only."""
        if self.allocator_credit != "task":
            raise ValueError(
                "compute_task_values needs the per-task critic of allocator_credit='task'; this "
                f"module was built with allocator_credit={self.allocator_credit!r}"
            )
        obs = batch[Columns.OBS]
        visible = obs["entity_mask"].bool() & obs["obs_mask"].bool()
        return self.task_value_net(
            obs["entities"], visible, obs["entity2task"], obs["task_mask"]
        )

    def live_choices(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, N) bool: the pointer steps that choose (a live agent in a sample with a live
        task); the others are forced to task 0 and carry no decision."""
        _, forced = self.net.allowed_choices(self._acting_obs(batch))
        return ~forced

    def _dist_cls(self):
        return joint_allocation_cls(self.n_tasks)

    def get_train_action_dist_cls(self):
        return self._dist_cls()

    def get_exploration_action_dist_cls(self):
        return self._dist_cls()

    def get_inference_action_dist_cls(self):
        return self._dist_cls()
