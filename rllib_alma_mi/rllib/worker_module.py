"""The `worker` RLModule: entity attention inside the assigned subtask, shared by all workers."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from rllib_alma_mi.keys import STATE, SUBTASK
from rllib_alma_mi.nn.mi_head import MIHead
from rllib_alma_mi.nn.worker import WorkerNet
from rllib_alma_mi.rllib.acting import NoModeSwitchActing
from rllib_alma_mi.settings import ModelSettings


class WorkerModule(NoModeSwitchActing, TorchRLModule, ValueFunctionAPI):
    """Low-level policy: the agent's row attends over the entities it may use.

    Observation: the contract Dict (entities (E, F), entity_mask, obs_mask restricted to the
    subtask, agent_index, action_mask (A,), optional `state`; with `subtask_mask=False` the
    whole obs_mask and `subtask` (E,) marking the subtask). Output: masked logits (B, A).
    The value head has an encoder of its own, or reads the policy's (`shared_worker_encoder`).
    With MI scheme 1 this module carries the MI term (its hidden state vs. a summary of the
    centralized `state`).
    """

    def setup(self) -> None:
        space = self.observation_space
        cfg = self.model_config
        _, n_features = space["entities"].shape
        n_actions = space["action_mask"].shape[0]
        model = ModelSettings.pick(cfg)
        sizes = {
            "embed_dim": model.embed_dim,
            "n_heads": model.n_heads,
            "relative_scale": model.relative_scale,
            "marks_subtask": SUBTASK in space.spaces,
        }
        self.pi_net = WorkerNet(n_features, n_actions, **sizes)
        shared = model.shared_worker_encoder
        self.vf_net = None if shared else WorkerNet(n_features, n_actions, **sizes)
        self.mi = MIHead.from_model_config(cfg, x_dim=model.embed_dim, n_features=n_features)
        if self.mi is not None and STATE not in space.spaces:
            raise ValueError(
                "mi_scheme=1 needs the centralized state in the worker observations; "
                "AlmaPPOConfig has the hierarchy add it (build through AlmaPPOConfig)"
            )

    @staticmethod
    def _acting_obs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch[Columns.OBS].items() if k != STATE}

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = self._acting_obs(batch)
        hidden = self.pi_net.encode(obs)
        return {Columns.ACTION_DIST_INPUTS: self.pi_net.logits(hidden, obs["action_mask"])}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = self._acting_obs(batch)
        hidden = self.pi_net.encode(obs)
        out = {Columns.ACTION_DIST_INPUTS: self.pi_net.logits(hidden, obs["action_mask"])}
        if self.vf_net is None:
            out[Columns.EMBEDDINGS] = hidden  # PPO's loss hands it to compute_values
        if self.mi is not None:
            out.update(self.mi.inputs_from_worker(hidden, batch[Columns.OBS]))
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if self.vf_net is None:
            if embeddings is None:
                embeddings = self.pi_net.encode(self._acting_obs(batch))
            return self.pi_net.value(embeddings)
        return self.vf_net.value(self.vf_net.encode(self._acting_obs(batch)))
