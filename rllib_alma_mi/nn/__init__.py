"""Pure-PyTorch networks: entity attention, ALMA allocator and its joint-allocation
distribution, worker policy, MINE and its pairing with a global summary."""

from rllib_alma_mi.nn.allocation import AllocatorNet, AllocEncoding
from rllib_alma_mi.nn.attention import MASKED_LOGIT, EntityAttention, EntityEncoder, masked_mean
from rllib_alma_mi.nn.joint_allocation import JointAllocationLogits
from rllib_alma_mi.nn.mi_head import MIHead
from rllib_alma_mi.nn.mi_targets import (
    MI_TARGETS,
    GlobalStateEncoder,
    entity_mean,
    task_mean,
)
from rllib_alma_mi.nn.mine import MEASURES, MINE
from rllib_alma_mi.nn.task_value import TaskValueNet
from rllib_alma_mi.nn.worker import WorkerNet

__all__ = [
    "MASKED_LOGIT",
    "MEASURES",
    "MINE",
    "MI_TARGETS",
    "AllocEncoding",
    "AllocatorNet",
    "EntityAttention",
    "EntityEncoder",
    "GlobalStateEncoder",
    "JointAllocationLogits",
    "MIHead",
    "TaskValueNet",
    "WorkerNet",
    "entity_mean",
    "masked_mean",
    "task_mean",
]
