"""Acting passes in inference mode, without RLlib's per-call switch of every submodule to eval
mode and back."""

from __future__ import annotations

from typing import Any

import torch


class NoModeSwitchActing:
    """Mixin for a `TorchRLModule` whose output does not depend on train/eval mode (no dropout,
    no batch norm): `forward_exploration` and `forward_inference` call the module's own passes
    directly, under `torch.inference_mode`. RLlib's versions call `eval()` and then `train()`,
    each of which walks every submodule, at every env-runner step (about 5% of the sampling
    time here), and run under `no_grad`, whose per-operation bookkeeping inference mode skips
    (the allocator's acting pass is about a fifth faster). Acting outputs only ever become
    actions and numpy columns, never inputs of a gradient."""

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.inference_mode():
            return self._forward_exploration(batch, **kwargs)

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.inference_mode():
            return self._forward_inference(batch, **kwargs)
