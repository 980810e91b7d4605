"""Runners of the exported model files: TorchScript (torch) or ONNX (onnxruntime).

Each takes a dict of numpy arrays keyed by the model's input names (`manifest.INPUTS`) and
returns its outputs (`manifest.OUTPUTS`) as numpy arrays, in order. torch and onnxruntime are
imported only when a model of their format is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rllib_alma_mi.deploy.manifest import INPUTS, OUTPUTS, DeployError


class TorchScriptModel:
    """A `torch.jit` model file, run on CPU under `torch.inference_mode`."""

    def __init__(self, path: str | Path, name: str):
        try:
            import torch
        except ImportError:
            raise DeployError(
                f"{path}: a TorchScript export needs torch (pip install torch), or export "
                "with --format onnx and run it with onnxruntime"
            ) from None
        self._torch = torch
        self.name = name
        self._module = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in INPUTS[self.name]]
        with torch.inference_mode():
            out = self._module(*args)
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]


class OnnxModel:
    """An ONNX model file, run by onnxruntime's CPU execution provider.

    Inputs the exporter found unused (for example `agent_obs_mask` without agent attention)
    are not in the graph and are not fed.
    """

    def __init__(self, path: str | Path, name: str):
        try:
            import onnxruntime
        except ImportError:
            raise DeployError(
                f"{path}: an ONNX export needs onnxruntime (pip install 'rllib-alma-mi[deploy]' "
                "or pip install onnxruntime)"
            ) from None
        self.name = name
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(list(OUTPUTS[self.name]), {k: inputs[k] for k in self._inputs})


def load_model(path: str | Path, name: str, format: str) -> TorchScriptModel | OnnxModel:
    """The runner of one exported model file."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: the exported {name!r} model is missing; export again")
    if format == "torchscript":
        return TorchScriptModel(path, name)
    return OnnxModel(path, name)
