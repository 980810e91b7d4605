"""Advantages are standardised over the real rows of a minibatch, not PPO's artificial ones."""

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from rllib_alma_mi.rllib.learner import renormalized_advantages


def test_real_rows_have_zero_mean_and_unit_std():
    adv = torch.tensor([1.0, 2.0, 3.0, -50.0, 4.0, -50.0])
    mask = torch.tensor([1, 1, 1, 0, 1, 0]).bool()
    out = renormalized_advantages({Postprocessing.ADVANTAGES: adv, Columns.LOSS_MASK: mask})
    real = out[Postprocessing.ADVANTAGES][mask]
    torch.testing.assert_close(real.mean(), torch.tensor(0.0))
    torch.testing.assert_close(real.std(), torch.tensor(1.0))


def test_without_loss_mask_the_batch_is_left_alone():
    batch = {Postprocessing.ADVANTAGES: torch.tensor([1.0, 5.0])}
    assert renormalized_advantages(batch) is batch
