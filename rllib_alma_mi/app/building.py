"""The `AlmaPPOConfig` of a validated experiment."""

from __future__ import annotations

from rllib_alma_mi.algorithm import AlmaPPOConfig
from rllib_alma_mi.app.schema import ExperimentSpec


def build_config(spec: ExperimentSpec) -> AlmaPPOConfig:
    """The `AlmaPPOConfig` of an experiment (not yet validated by RLlib, so Tune can vary it)."""
    config = (
        AlmaPPOConfig()
        .environment(spec.env, env_config=dict(spec.env_config))
        .alma(**spec.alma)
        .mutual_info(**spec.mutual_info)
        .training(**spec.training)
        .env_runners(**spec.env_runners)
        .debugging(seed=spec.seed)
    )
    if spec.evolution is not None:
        config.evolution(**spec.evolution)
    if spec.evaluation is not None:
        config.seeded_evaluation(**spec.evaluation)
    return config
