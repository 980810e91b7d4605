"""Old API stack: `TorchModelV2` adapters around the `allocator` and `worker` modules.

Each adapter holds the new stack's RLModule (`AllocatorModule` / `WorkerModule`) under
`.module`, so both stacks run the very same `rllib_alma_mi.nn` networks, value heads and
`MIHead`; a state dict of one loads into the other (`model.module.load_state_dict(...)`).

The MI term is added in `custom_loss()` (`loss + mi_weight * mi_loss`, `mi_weight` from the
`.mutual_info()` settings) and reported by `metrics()`, which RLlib shows at
`result["info"]["learner"][policy_id]["model"]`. Both methods are defined on the adapter
classes themselves: a mixin listed after `TorchModelV2` would be shadowed by
`ModelV2.custom_loss` / `ModelV2.metrics` and silently add nothing.

Observations arrive flattened by RLlib's Dict preprocessor (float32); `ModelV2.__call__`
restores them into `input_dict["obs"]`, a dict of (B, ...) tensors in the Dict's layout
(`agent_index`, a Box of shape (), comes back as (B,) float). Every mask is read as nonzero =
present, and indices are cast back to int64, so the float round trip changes nothing.

Registered names (on import): `alma_allocator` (with the `alma_allocation` action distribution
of `action_dist_v2`) and `alma_worker`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.models import ModelCatalog
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2
from ray.rllib.policy.sample_batch import SampleBatch
from torch import nn

from rllib_alma_mi.keys import MI_LOSS, MI_SKIPPED, MI_VALUE, STATE
from rllib_alma_mi.losses import MutualInfoLoss
from rllib_alma_mi.nn.allocation import MASKED_LOGIT, AllocEncoding
from rllib_alma_mi.rllib.allocator_module import AllocatorModule
from rllib_alma_mi.rllib.old_stack.action_dist import ALLOCATION_DIST
from rllib_alma_mi.rllib.worker_module import WorkerModule

ALLOCATOR_MODEL = "alma_allocator"
WORKER_MODEL = "alma_worker"

TensorDict = dict[str, Any]


class AllocatorContext(NamedTuple):
    """What the allocator's last forward pass leaves for its action distribution.

    obs: the acting observation (no `state`), dict of (B, ...) tensors; enc: its encoding;
    dist_inputs: the (B, N*T) tensor forward() returned (the distribution checks identity).
    """

    obs: TensorDict
    enc: AllocEncoding
    dist_inputs: torch.Tensor


def _without_state(obs: TensorDict) -> TensorDict:
    return {k: v for k, v in obs.items() if k != STATE}


def _batch_size(obs: TensorDict) -> int:
    return int(obs["entities"].shape[0])


def _module_config(model_config: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**model_config.get("custom_model_config", {}), **kwargs}


class _AlmaModelV2(TorchModelV2, nn.Module):
    """Shared plumbing: the wrapped RLModule, the value of the last forward, the MI term.

    Subclasses set `module_class`, implement `forward()` (which stores the observation in
    `self._obs` and the representation the MI term reads in `self._repr`) and
    `_mi_inputs(repr, obs)` (keys `mi_x`, `mi_y`, `mi_mask`).
    """

    module_class: type[TorchRLModule]

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        num_outputs: int,
        model_config: dict[str, Any],
        name: str,
        **kwargs: Any,
    ):
        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)
        nn.Module.__init__(self)
        cfg = _module_config(model_config, kwargs)
        self.original_obs_space = getattr(obs_space, "original_space", obs_space)
        if not isinstance(self.original_obs_space, gym.spaces.Dict):
            raise ValueError(
                f"{type(self).__name__} needs the hierarchy's Dict observation space, got "
                f"{self.original_obs_space}; build the algorithm through AlmaPPOConfig"
            )
        self.module = self.module_class(
            observation_space=self.original_obs_space,
            action_space=action_space,
            model_config=cfg,
        )
        self.mi_weight = float(cfg.get("mi_weight", 0.0))
        self._obs: TensorDict | None = None
        self._repr: Any = None
        self._mi_stats: dict[str, float] = {}
        self._mi_skipped = 0

    def value_function(self) -> torch.Tensor:
        """Value of every row of the last forward pass: (B,)."""
        if self._obs is None:
            raise ValueError("value_function() needs a forward pass first")
        return self.module.compute_values({Columns.OBS: self._obs}, embeddings=self._repr)

    def custom_loss(
        self, policy_loss: list[torch.Tensor], loss_inputs: SampleBatch
    ) -> list[torch.Tensor]:
        """Adds `mi_weight * mi_loss` to every policy loss (PPO has one optimizer).

        The MI inputs come from the representation of the last forward pass, the one that
        computed `policy_loss` on `loss_inputs` (run again here if the batch differs).
        """
        head = self.module.mi
        if head is None:
            return policy_loss
        if self._obs is None or _batch_size(self._obs) != loss_inputs.count:
            self(loss_inputs)
        terms = MutualInfoLoss(head)(self._mi_inputs(self._repr, self._obs), None)
        self._mi_skipped += int(terms.skipped is not None)
        # RLlib averages each stat over the minibatches with np.nanmean and needs the same keys
        # in all of them: a skipped computation reports NaN, which that mean leaves out.
        self._mi_stats = {MI_LOSS: math.nan, MI_VALUE: math.nan}
        self._mi_stats.update({name: float(value) for name, value in terms.metrics.items()})
        self._mi_stats[MI_SKIPPED] = float(self._mi_skipped)
        return [loss + self.mi_weight * terms.loss for loss in policy_loss]

    def metrics(self) -> dict[str, float]:
        """`mi_loss` and `mi_value` of the last loss computation (NaN when it was skipped;
        RLlib's mean over minibatches ignores NaN) and `mi_skipped`, the count of skipped loss
        computations ({} when MI is off)."""
        return dict(self._mi_stats)

    def _mi_inputs(self, representation: Any, obs: TensorDict) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class AllocatorModelV2(_AlmaModelV2):
    """The `allocator` policy's model: ALMA's autoregressive pointer (see `AllocatorNet`).

    forward() returns the per-step conditional logits flattened to (B, N*T). With
    `input_dict["actions"]` (B, N) present (training, log-likelihoods) they are teacher-forced
    on those actions, so a categorical per step over them gives the exact joint log-prob.
    Without actions (acting) it returns masked uniform logits that `AllocationDistribution`
    overwrites with the logits of the allocation it samples.
    """

    module_class = AllocatorModule

    def __init__(self, obs_space, action_space, num_outputs, model_config, name, **kwargs):
        super().__init__(obs_space, action_space, num_outputs, model_config, name, **kwargs)
        self.n_slots, self.n_tasks = self.module.n_slots, self.module.n_tasks
        if num_outputs != self.n_slots * self.n_tasks:
            raise ValueError(
                f"the allocator model outputs N*T = {self.n_slots * self.n_tasks} logits, but "
                f"RLlib asked for {num_outputs}; use the '{ALLOCATION_DIST}' action "
                "distribution (custom_action_dist)"
            )
        self._context: AllocatorContext | None = None

    @property
    def net(self):
        """The `AllocatorNet` shared with the new stack's `AllocatorModule`."""
        return self.module.net

    def forward(
        self, input_dict: Any, state: list[torch.Tensor], seq_lens: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        full_obs = dict(input_dict["obs"])
        obs = _without_state(full_obs)
        enc = self.net.encode(obs)
        actions = input_dict[SampleBatch.ACTIONS] if SampleBatch.ACTIONS in input_dict else None
        if actions is not None:
            _, _, logits = self.net.log_prob(obs, torch.as_tensor(actions).long(), enc=enc)
            dist_inputs = logits.flatten(1)
        else:
            dist_inputs = self._uniform_logits(obs)
        self._obs, self._repr = full_obs, enc
        self._context = AllocatorContext(obs, enc, dist_inputs)
        return dist_inputs, state

    def _mi_inputs(self, representation: AllocEncoding, obs: TensorDict):
        return self.module.mi.inputs_from_allocator(representation, obs)

    def _uniform_logits(self, obs: TensorDict) -> torch.Tensor:
        """Masked uniform logits (B, N*T): 0 on allowed choices, MASKED_LOGIT elsewhere."""
        allowed, _ = self.net.allowed_choices(obs)
        zeros = torch.zeros(allowed.shape, device=allowed.device)
        return zeros.masked_fill(~allowed, MASKED_LOGIT).flatten(1)

    def allocation_context(self, dist_inputs: torch.Tensor) -> AllocatorContext | None:
        """The last forward pass's context if it produced `dist_inputs`, else None."""
        ctx = self._context
        if ctx is not None and ctx.dist_inputs is dist_inputs:
            return ctx
        return None


class WorkerModelV2(_AlmaModelV2):
    """The `worker` policy's model: masked action logits (B, A) from the entity attention.

    With MI scheme 1 this model carries the MI term (hidden state vs. the centralized state).
    """

    module_class = WorkerModule

    def __init__(self, obs_space, action_space, num_outputs, model_config, name, **kwargs):
        super().__init__(obs_space, action_space, num_outputs, model_config, name, **kwargs)
        n_actions = self.module.pi_net.n_actions
        if num_outputs != n_actions:
            raise ValueError(
                f"the worker model outputs {n_actions} logits (one per action of the "
                f"action_mask), but RLlib asked for {num_outputs}"
            )

    def forward(
        self, input_dict: Any, state: list[torch.Tensor], seq_lens: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        full_obs = dict(input_dict["obs"])
        obs = _without_state(full_obs)
        net = self.module.pi_net
        hidden = net.encode(obs)
        logits = net.logits(hidden, obs["action_mask"])
        self._obs, self._repr = full_obs, hidden
        return logits, state

    def _mi_inputs(self, representation: torch.Tensor, obs: TensorDict):
        return self.module.mi.inputs_from_worker(representation, obs)


ModelCatalog.register_custom_model(ALLOCATOR_MODEL, AllocatorModelV2)
ModelCatalog.register_custom_model(WORKER_MODEL, WorkerModelV2)
