"""Export a trained checkpoint's networks as standalone TorchScript or ONNX models.

The export directory holds the worker network, the allocator's encoder and pointer step (with a
learned allocator) and `manifest.json` (hierarchy and model settings, the spaces' sizes, the
format); `rllib_alma_mi.deploy.TeamPolicy` runs them without Ray. The allocator's
autoregressive loop stays in Python around the pointer step, as `AllocatorNet.sample` runs it,
so greedy and sampled allocations are decided the same way as in training.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rllib_alma_mi.deploy.manifest import (
    ALLOCATOR_ENCODER,
    ALLOCATOR_POINTER,
    EXTENSIONS,
    FORMATS,
    INPUTS,
    MANIFEST,
    OUTPUTS,
    WORKER,
    DeployError,
    Manifest,
    Spaces,
)
from rllib_alma_mi.nn.allocation import AllocatorNet
from rllib_alma_mi.nn.attention import MASKED_LOGIT, as_bool
from rllib_alma_mi.nn.worker import WorkerNet
from rllib_alma_mi.registry import hierarchy_block, make_env
from rllib_alma_mi.settings import ModelSettings

ONNX_OPSET = 17
# The largest difference between an exported model's outputs and the module's that the export's
# own check accepts (float rounding of reordered operations is ~1e-7).
TOLERANCE = 1e-4


class ExportError(ValueError):
    """A bad export request (format, output directory) or an export that does not reproduce
    the trained modules."""


# ----------------------------------------------------------------------------------- graphs
class WorkerGraph(nn.Module):
    """The worker's acting pass (`WorkerModule`): inputs `INPUTS["worker"]` -> logits (B, A)."""

    def __init__(self, net: WorkerNet):
        super().__init__()
        self.net = net

    def forward(self, entities, entity_mask, obs_mask, agent_index, action_mask, subtask):
        obs = {
            "entities": entities,
            "entity_mask": entity_mask,
            "obs_mask": obs_mask,
            "agent_index": agent_index,
            "subtask": subtask,
        }
        return self.net.logits(self.net.encode(obs), action_mask)


class AllocatorEncoderGraph(nn.Module):
    """The allocator's encoder and the pointer's per-step inputs: `INPUTS["allocator_encoder"]`
    -> query (B, N, D), key (B, N, T, D) (task keys plus slot i's relation to each task),
    message (B, N, D), allowed (B, N, T), forced (B, N), as `AllocatorNet.sample` uses them."""

    def __init__(self, net: AllocatorNet):
        super().__init__()
        if net.keep_bias is not None:
            raise ExportError(
                "this allocator has a keep bias (keep_bias > 0), which the exported pointer "
                "does not carry yet; export a model trained with keep_bias=0"
            )
        self.net = net

    def forward(
        self, entities, entity_mask, obs_mask, entity2task, task_mask, agent_mask, agent_obs_mask
    ):
        obs = {
            "entities": entities,
            "entity_mask": entity_mask,
            "obs_mask": obs_mask,
            "entity2task": entity2task,
            "task_mask": task_mask,
            "agent_mask": agent_mask,
            "agent_obs_mask": agent_obs_mask,
        }
        enc = self.net.encode(obs)
        query, key, message = self.net._pointer_inputs(enc)
        allowed, forced = self.net.allowed_choices(obs)
        return query, key[:, None] + enc.relation, message, allowed, forced


class AllocatorPointerGraph(nn.Module):
    """One pointer step of `AllocatorNet.sample`: query (B, D), key (B, T, D), placed
    (B, T, D), counts (B, T), allowed (B, T) -> masked logits (B, T)."""

    def __init__(self, net: AllocatorNet):
        super().__init__()
        self.net = net

    def forward(self, query, key, placed, counts, allowed):
        logits = self.net._raw_logits(query, key, placed, counts)
        return logits.masked_fill(~as_bool(allowed), MASKED_LOGIT)


# ----------------------------------------------------------------------------------- inputs
def example_inputs(name: str, spaces: Spaces, embed_dim: int, batch: int = 3,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of model `name` (masks of 0/1 with every agent slot and task 0 live)."""
    g = torch.Generator().manual_seed(seed)
    e, f, t, n, a, d = (spaces.n_entities, spaces.n_features, spaces.n_tasks, spaces.n_agents,
                        spaces.n_actions, embed_dim)

    def mask(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) > 0.3).float()

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    if name == WORKER:
        action_mask = mask(batch, a)
        action_mask[:, 0] = 1.0
        return {
            "entities": randn(batch, e, f),
            "entity_mask": mask(batch, e),
            "obs_mask": mask(batch, e),
            "agent_index": torch.randint(0, n, (batch,), generator=g),
            "action_mask": action_mask,
            "subtask": mask(batch, e),
        }
    if name == ALLOCATOR_ENCODER:
        task_mask = mask(batch, t)
        task_mask[:, 0] = 1.0
        return {
            "entities": randn(batch, e, f),
            "entity_mask": mask(batch, e),
            "obs_mask": mask(batch, e),
            "entity2task": mask(batch, e, t),
            "task_mask": task_mask,
            "agent_mask": torch.ones(batch, n),
            "agent_obs_mask": mask(batch, n, e),
        }
    allowed = mask(batch, t)
    allowed[:, 0] = 1.0
    return {
        "query": randn(batch, d),
        "key": randn(batch, t, d),
        "placed": randn(batch, t, d),
        "counts": torch.randint(0, n, (batch, t), generator=g).float(),
        "allowed": allowed,
    }


# ----------------------------------------------------------------------------------- writing
def _save(graph: nn.Module, name: str, path: Path, format: str, example: dict) -> None:
    args = tuple(example[k] for k in INPUTS[name])
    graph = graph.eval()
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing records the shape checks of the nets as constants (their inputs here are
        # valid) and warns about it; both exporters warn that they are deprecated.
        warnings.simplefilter("ignore")
        if format == "torchscript":
            torch.jit.trace(graph, args, check_trace=False).save(str(path))
        else:
            names = list(INPUTS[name]) + list(OUTPUTS[name])
            torch.onnx.export(
                graph,
                args,
                str(path),
                dynamo=False,
                input_names=list(INPUTS[name]),
                output_names=list(OUTPUTS[name]),
                dynamic_axes={k: {0: "batch"} for k in names},
                opset_version=ONNX_OPSET,
            )


def _modules(algo: Any, allocation: str) -> dict[str, Any]:
    """The trained RLModules by module id (either API stack)."""
    from rllib_alma_mi.app.checkpoints import uses_new_api_stack

    ids = ["worker"] + (["allocator"] if allocation == "learned" else [])
    if uses_new_api_stack(algo):
        return {i: algo.get_module(i) for i in ids}
    return {i: algo.get_policy(i).model.module for i in ids}


def _spaces(worker: Any, n_agents: int) -> Spaces:
    space = worker.observation_space
    e, f = space["entities"].shape
    return Spaces(
        n_entities=int(e),
        n_features=int(f),
        n_tasks=int(space["task_mask"].shape[0]),
        n_agents=int(n_agents),
        n_actions=int(space["action_mask"].shape[0]),
    )


def _prepare_out(out: Path) -> Path:
    """A fresh temporary sibling of `out` to write into; `out` must be new, empty or an export."""
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out}: is a file; pass a directory")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise ExportError(
                f"--out {out}: not empty and not an export (no {MANIFEST}); pick a new or empty "
                "directory"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.exporting-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not known; choose one of {list(FORMATS)}")


def export_algorithm(
    algo: Any, out: str | Path, format: str = "torchscript", source: str | None = None
) -> Manifest:
    """Export the networks of a built or restored AlmaPPO `algo` into the directory `out`.

    Writes one file per model plus `manifest.json`, checks that the files reproduce the
    modules' outputs (within TOLERANCE) and replaces an earlier export in `out` only then.
    """
    check_format(format)
    out = Path(out).resolve()
    env_config = dict(algo.config.env_config or {})
    hierarchy, _ = hierarchy_block(env_config)
    modules = _modules(algo, hierarchy.allocation)
    probe = make_env(algo.config.env, env_config)
    spaces = _spaces(modules["worker"], probe.n_slots)
    probe.close()
    model_config = dict(modules["worker"].model_config)
    model = ModelSettings.pick(model_config).to_dict()
    embed_dim = model["embed_dim"]
    graphs = {WORKER: WorkerGraph(modules["worker"].pi_net)}
    if hierarchy.allocation == "learned":
        net = modules["allocator"].net
        graphs[ALLOCATOR_ENCODER] = AllocatorEncoderGraph(net)
        graphs[ALLOCATOR_POINTER] = AllocatorPointerGraph(net)
    files = {name: name + EXTENSIONS[format] for name in graphs}
    manifest = Manifest(
        format=format,
        spaces=spaces,
        hierarchy=hierarchy.to_dict(),
        models=files,
        env=str(algo.config.env),
        env_config={k: v for k, v in env_config.items() if not k.startswith("_")},
        model=model,
        source={"checkpoint": source, "training_iteration": getattr(algo, "iteration", None)},
    )
    tmp = _prepare_out(out)
    try:
        for name, graph in graphs.items():
            _save(graph, name, tmp / files[name], format,
                  example_inputs(name, spaces, embed_dim, batch=2))
        manifest.write(tmp)
        _verify(tmp, modules, spaces, embed_dim)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _verify(directory: Path, modules: dict[str, Any], spaces: Spaces, embed_dim: int) -> None:
    """The exported files against the modules' acting passes, on random inputs."""
    from ray.rllib.core.columns import Columns

    from rllib_alma_mi.deploy import TeamPolicy

    policy = TeamPolicy.load(directory)
    checks = []
    batch = example_inputs(WORKER, spaces, embed_dim, batch=5, seed=1)
    with torch.no_grad():
        expected = modules["worker"].forward_inference({Columns.OBS: batch})
    got = policy.worker_logits({k: v.numpy() for k, v in batch.items()})
    checks.append((WORKER, expected[Columns.ACTION_DIST_INPUTS].numpy(), got))
    if "allocator" in modules:
        batch = example_inputs(ALLOCATOR_ENCODER, spaces, embed_dim, batch=5, seed=1)
        with torch.no_grad():
            expected = modules["allocator"].forward_inference({Columns.OBS: batch})
        # Teacher-forced on the module's allocation: where two tasks' logits tie to float
        # rounding, argmax may break the tie differently, and every later step would differ.
        _, logits = policy.allocate(
            {k: v.numpy() for k, v in batch.items()}, given=expected[Columns.ACTIONS].numpy()
        )
        checks.append(("allocator", expected[Columns.ACTION_DIST_INPUTS].numpy(),
                       logits.reshape(logits.shape[0], -1)))
    for name, want, have in checks:
        diff = float(np.max(np.abs(want - have)))
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the exported {name!r} model's logits differ from the module's by {diff:.3g} "
                f"(more than {TOLERANCE}); this export cannot be trusted"
            )


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, format: str = "torchscript"
) -> Manifest:
    """Restore `checkpoint` (a checkpoint, trial or one-trial run directory) and export its
    networks into `out` (see `export_algorithm`)."""
    from rllib_alma_mi.app.evaluation import restore

    check_format(format)
    path, algo = restore(checkpoint)
    try:
        return export_algorithm(algo, out, format, source=str(path))
    except DeployError as exc:
        raise ExportError(str(exc)) from None
    finally:
        algo.stop()
