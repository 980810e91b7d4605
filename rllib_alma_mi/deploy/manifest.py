"""The manifest of an exported team: what was exported, for which spaces, in which files.

`manifest.json` sits next to the model files. The exporter (`rllib_alma_mi.app.export`) writes
it and the runtime (`TeamPolicy`) reads it; the names of the models' inputs and outputs below
are the contract between the two.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rllib_alma_mi.settings import HierarchySettings

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
FORMATS = ("torchscript", "onnx")
EXTENSIONS = {"torchscript": ".pt", "onnx": ".onnx"}

# Model names, and their inputs and outputs in call order. Every input is float32 (masks are
# 1.0 = present) except `agent_index`, which is int64; B is the batch.
WORKER = "worker"
ALLOCATOR_ENCODER = "allocator_encoder"
ALLOCATOR_POINTER = "allocator_pointer"
INPUTS = {
    # entities (B, E, F), entity_mask (B, E), obs_mask (B, E), agent_index (B,),
    # action_mask (B, A), subtask (B, E) (read only with subtask_mask=False)
    WORKER: ("entities", "entity_mask", "obs_mask", "agent_index", "action_mask", "subtask"),
    # entities (B, E, F), entity_mask (B, E), obs_mask (B, E), entity2task (B, E, T),
    # task_mask (B, T), agent_mask (B, N), agent_obs_mask (B, N, E)
    ALLOCATOR_ENCODER: (
        "entities", "entity_mask", "obs_mask", "entity2task", "task_mask", "agent_mask",
        "agent_obs_mask",
    ),
    # query (B, D), key (B, T, D), placed (B, T, D), counts (B, T), allowed (B, T)
    ALLOCATOR_POINTER: ("query", "key", "placed", "counts", "allowed"),
}
OUTPUTS = {
    WORKER: ("logits",),  # (B, A), masked entries = float32 min
    # query (B, N, D), key (B, N, T, D), message (B, N, D), allowed (B, N, T) bool,
    # forced (B, N) bool
    ALLOCATOR_ENCODER: ("query", "key", "message", "allowed", "forced"),
    ALLOCATOR_POINTER: ("logits",),  # (B, T), masked entries = float32 min
}
INT_INPUTS = ("agent_index",)


class DeployError(ValueError):
    """An export directory that cannot be loaded, or an env the exported team cannot act in."""


@dataclass(frozen=True)
class Spaces:
    """Sizes the models were exported for: E entity rows, F features, T tasks, N agent slots
    (the env's possible agents), A low-level actions."""

    n_entities: int
    n_features: int
    n_tasks: int
    n_agents: int
    n_actions: int


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs besides the model files.

    hierarchy: the trained `HierarchySettings` (allocation, alloc_interval, subtask_mask,
    allocator_view, ...); model: the network sizes (for the record); models: {model name:
    file name}; env / env_config: the environment the team was trained on (the base env's
    keyword arguments); source: where it came from (checkpoint path, training iteration).
    """

    format: str
    spaces: Spaces
    hierarchy: dict[str, Any]
    models: dict[str, str]
    env: str = ""
    env_config: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DeployError(f"format={self.format!r} is not known; choose one of {list(FORMATS)}")
        try:
            settings = self.settings()
        except ValueError as exc:
            raise DeployError(f"manifest 'hierarchy' block: {exc}") from None
        needed = [WORKER] + (
            [ALLOCATOR_ENCODER, ALLOCATOR_POINTER] if settings.allocation == "learned" else []
        )
        missing = [name for name in needed if name not in self.models]
        if missing:
            raise DeployError(
                f"manifest 'models' lacks {missing} (allocation={settings.allocation!r} needs "
                f"{needed}); export the checkpoint again"
            )

    def settings(self) -> HierarchySettings:
        """The hierarchy settings, validated."""
        return HierarchySettings.from_dict(self.hierarchy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The manifest in `directory`; DeployError when there is none or it is malformed."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            what = "no such directory" if not directory.exists() else f"no {MANIFEST} in it"
            raise DeployError(
                f"{directory}: {what}; export a checkpoint first with "
                "`rllib-alma-mi export --checkpoint DIR --out DIR`"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DeployError(f"{path}: not valid JSON ({exc})") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise DeployError(
                f"{path}: format_version {version!r}, this runtime reads version "
                f"{FORMAT_VERSION}; export the checkpoint again with this version"
            )
        try:
            spaces = Spaces(**data.pop("spaces"))
            return cls(spaces=spaces, **data)
        except (KeyError, TypeError) as exc:
            raise DeployError(f"{path}: malformed manifest ({exc}); export again") from None
