"""Run a trained team without Ray: the exported allocator and worker networks in a contract env.

    rllib-alma-mi export --checkpoint CKPT --out team/ [--format torchscript|onnx]

    from rllib_alma_mi.deploy import TeamPolicy, run_episode
    policy = TeamPolicy.load("team/")
    result = run_episode(env, policy, seed=0)          # env: the contract ParallelEnv

Needs numpy and torch (TorchScript exports) or onnxruntime (ONNX exports); never imports Ray.
"""

from rllib_alma_mi.deploy.episode import EpisodeResult, run_episode
from rllib_alma_mi.deploy.manifest import FORMATS, MANIFEST, DeployError, Manifest, Spaces
from rllib_alma_mi.deploy.policy import TeamPolicy

__all__ = [
    "FORMATS",
    "MANIFEST",
    "DeployError",
    "EpisodeResult",
    "Manifest",
    "Spaces",
    "TeamPolicy",
    "run_episode",
]
