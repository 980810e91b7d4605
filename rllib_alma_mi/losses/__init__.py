"""Loss terms added to PPO's, in pure PyTorch: a class each, returning named terms.

Every API stack (the new stack's learner, the old stack's `custom_loss`) and the evolution's
MI step compute their extra terms through these classes, so a term means the same thing and
fails the same way everywhere: a batch the term cannot use (too few valid rows, non-finite
inputs or estimate) is skipped with its reason in `LossTerms.skipped`, and the caller counts
it; training never stops on it.
"""

from rllib_alma_mi.losses.imitation import ImitationLoss
from rllib_alma_mi.losses.mutual_info import MutualInfoLoss
from rllib_alma_mi.losses.per_choice import PerChoiceInputs, PerChoicePPOLoss
from rllib_alma_mi.losses.task_credit import choice_advantages, per_task_gae, standardized
from rllib_alma_mi.losses.terms import LossTerms

__all__ = [
    "ImitationLoss",
    "LossTerms",
    "MutualInfoLoss",
    "PerChoiceInputs",
    "PerChoicePPOLoss",
    "choice_advantages",
    "per_task_gae",
    "standardized",
]
