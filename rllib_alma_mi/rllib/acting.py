"""Forward passes without RLlib's per-call switch of every submodule between train and eval
mode; acting in inference mode."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.rl_module.rl_module import RLModule


class NoModeSwitchActing:
    """Mixin for a `TorchRLModule` whose output does not depend on train/eval mode (no dropout,
    no batch norm).

    RLlib's `forward_exploration`/`forward_inference` call `eval()` and then `train()`, and its
    `forward_train` calls `train()`, each walking every submodule on every call (about 5% of
    the sampling time). Here the acting passes call the module's own passes directly, under
    `torch.inference_mode` (which skips the per-operation bookkeeping that `no_grad` keeps),
    and `forward_train` sets training mode only when it is off. Acting outputs only ever become
    actions and numpy columns, never inputs of a gradient.
    """

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.inference_mode():
            return self._forward_exploration(batch, **kwargs)

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.inference_mode():
            return self._forward_inference(batch, **kwargs)

    def forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if not self.training:
            self.train()
        return RLModule.forward_train(self, batch, **kwargs)
