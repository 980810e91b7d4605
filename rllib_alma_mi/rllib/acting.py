"""Acting passes without RLlib's per-call switch of every submodule to eval mode and back."""

from __future__ import annotations

from typing import Any


class NoModeSwitchActing:
    """Mixin for a `TorchRLModule` whose output does not depend on train/eval mode (no dropout,
    no batch norm): `forward_exploration` and `forward_inference` call the module's own passes
    directly. RLlib's versions call `eval()` and then `train()`, each of which walks every
    submodule, at every env-runner step; that was about 5% of the sampling time here."""

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_exploration(batch, **kwargs)

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_inference(batch, **kwargs)
