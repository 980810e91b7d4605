"""The loss terms: what they compute, and the one policy for batches they cannot use."""

import math

import pytest
import torch

from rllib_alma_mi.keys import IMITATION_LOSS, MI_LOSS, MI_VALUE
from rllib_alma_mi.losses import ImitationLoss, MutualInfoLoss
from rllib_alma_mi.losses.imitation import NO_DECISIONS, NON_FINITE_LOG_PROB
from rllib_alma_mi.losses.mutual_info import (
    NON_FINITE_ESTIMATE,
    NON_FINITE_INPUTS,
    TOO_FEW_SAMPLES,
)
from rllib_alma_mi.nn import MIHead

D = 8


@pytest.fixture
def head():
    torch.manual_seed(0)
    return MIHead(
        scheme=3, target="task_mean", measure="JSD", mi_embed_dim=16, negatives=8,
        detach_target=False, x_dim=D, n_features=4,
    )


def inputs(b=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k, D, generator=g)
    return {"mi_x": x, "mi_y": x.mean(1), "mi_mask": torch.ones(b, k, dtype=torch.bool)}


def test_mi_terms_equal_mine_on_the_valid_rows_under_the_loss_mask(head):
    batch = inputs()
    batch["mi_mask"][0, 1:] = False
    loss_mask = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)
    terms = MutualInfoLoss(head)(batch, loss_mask)
    expected_mask = batch["mi_mask"] & loss_mask[:, None]
    loss, value = head.mine(batch["mi_x"], batch["mi_y"], expected_mask)
    assert terms.skipped is None
    torch.testing.assert_close(terms.loss, loss)
    torch.testing.assert_close(terms.metrics[MI_VALUE], value)
    torch.testing.assert_close(terms.metrics[MI_LOSS], loss.detach())
    terms.loss.backward()
    assert all(p.grad is not None for p in head.mine.parameters())


@pytest.mark.parametrize("valid_samples", [0, 1])
def test_mi_skips_a_batch_with_fewer_than_two_valid_samples(head, valid_samples):
    batch = inputs()
    loss_mask = torch.zeros(6, dtype=torch.bool)
    loss_mask[:valid_samples] = True
    terms = MutualInfoLoss(head)(batch, loss_mask)
    assert terms.skipped == TOO_FEW_SAMPLES and terms.metrics == {}
    assert float(terms.loss) == 0.0 and not terms.loss.requires_grad


def test_mi_skips_non_finite_inputs_in_valid_rows_only(head):
    batch = inputs()
    batch["mi_x"][2, 0, 0] = math.nan
    assert MutualInfoLoss(head)(batch).skipped == NON_FINITE_INPUTS
    batch["mi_mask"][2, 0] = False  # the NaN is now in a padded row: it does not count
    assert MutualInfoLoss(head)(batch).skipped is None
    batch["mi_y"][4, 0] = math.inf
    assert MutualInfoLoss(head)(batch).skipped == NON_FINITE_INPUTS


def test_mi_skips_a_non_finite_estimate(head):
    with torch.no_grad():
        for p in head.mine.parameters():
            p.fill_(math.inf)
    assert MutualInfoLoss(head)(inputs()).skipped == NON_FINITE_ESTIMATE


def test_imitation_is_the_mean_nll_over_real_decisions():
    logp = torch.tensor([-1.0, -3.0, -100.0], requires_grad=True)
    terms = ImitationLoss()(logp, torch.tensor([1, 1, 0]))
    assert terms.skipped is None
    torch.testing.assert_close(terms.loss, torch.tensor(2.0))
    torch.testing.assert_close(terms.metrics[IMITATION_LOSS], torch.tensor(2.0))
    terms.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, -0.5, 0.0]))


def test_imitation_skips_batches_without_decisions_or_with_non_finite_log_probs():
    assert ImitationLoss()(torch.zeros(3), torch.zeros(3)).skipped == NO_DECISIONS
    bad = torch.tensor([-1.0, -math.inf])
    assert ImitationLoss()(bad).skipped == NON_FINITE_LOG_PROB
    assert ImitationLoss()(bad, torch.tensor([1, 0])).skipped is None
