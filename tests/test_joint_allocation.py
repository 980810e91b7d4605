"""The one joint-allocation distribution against the three implementations it replaced.

`reference_*` are the former computations, kept here verbatim as the behaviour to preserve:
`AllocatorNet`'s (mask from the observation), the new stack's `JointAllocation` (KL infinite
where only the other distribution has probability 0) and the old stack's
`AllocationDistribution` (finite KL over the allowed choices; single-choice slots count as that
choice).
"""

import pytest
import torch

from rllib_alma_mi.nn import MASKED_LOGIT, JointAllocationLogits
from rllib_alma_mi.rllib.allocation_dist import JointAllocation

B, N, T = 32, 5, 6


def step_logits(seed: int, single_rows: bool = True) -> torch.Tensor:
    """(B, N, T) logits with masked choices; some steps allow a single task (dead slots)."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(B, N, T, generator=g)
    masked = torch.rand(B, N, T, generator=g) < 0.4
    masked[..., 0] = False
    if single_rows:
        dead = torch.rand(B, N, generator=g) < 0.2
        masked[dead] = True
        masked[dead, 0] = False
    return logits.masked_fill(masked, MASKED_LOGIT)


def valid_allocation(logits: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(logits, -1).reshape(-1, T)
    return torch.multinomial(probs, 1, generator=g).reshape(B, N)


def reference_allocator_net(logits, allowed, allocation):
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, allocation[..., None]).squeeze(-1).sum(-1)
    p_logp = torch.where(allowed, logp.exp() * logp, 0.0)
    return chosen, -p_logp.sum(dim=(-1, -2))


def reference_new_stack_kl(logits, other_logits):
    log_p, log_q = torch.log_softmax(logits, -1), torch.log_softmax(other_logits, -1)
    probs = log_p.exp()
    terms = probs * (log_p - log_q)
    terms = torch.where(log_q.exp() == 0, torch.inf, terms)
    return torch.where(probs == 0, 0.0, terms).sum((-1, -2))


def reference_old_stack(logits, other_logits, actions):
    allowed = logits > MASKED_LOGIT
    single = allowed.sum(-1) == 1
    actions = torch.where(single, allowed.long().argmax(-1), actions)
    logp = torch.log_softmax(logits, dim=-1)
    log_prob = logp.gather(-1, actions[..., None]).squeeze(-1).sum(-1)
    entropy = -torch.where(allowed, logp.exp() * logp, 0.0).sum(dim=(-1, -2))
    logq = torch.log_softmax(other_logits, dim=-1)
    kl = torch.where(allowed, logp.exp() * (logp - logq), 0.0).sum(dim=(-1, -2))
    return log_prob, entropy, kl


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_prob_and_entropy_equal_all_three_former_implementations(seed):
    logits = step_logits(seed)
    allocation = valid_allocation(logits, seed)
    dist = JointAllocationLogits(logits)
    net_logp, net_entropy = reference_allocator_net(logits, logits > MASKED_LOGIT, allocation)
    old_logp, old_entropy, _ = reference_old_stack(logits, logits, allocation)
    torch.testing.assert_close(dist.log_prob(allocation), net_logp)
    torch.testing.assert_close(dist.log_prob(allocation), old_logp)
    torch.testing.assert_close(dist.entropy(), net_entropy)
    torch.testing.assert_close(dist.entropy(), old_entropy)
    new_stack = JointAllocation(logits.flatten(1), T)
    torch.testing.assert_close(new_stack.logp(allocation), net_logp)
    torch.testing.assert_close(new_stack.entropy(), net_entropy)


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_equals_the_former_kl_where_both_allow_the_same_choices(seed):
    """Same masks (the same observation, as in PPO): all three former KLs agree with it."""
    logits = step_logits(seed)
    g = torch.Generator().manual_seed(seed + 100)
    other = (logits + torch.randn(logits.shape, generator=g)).masked_fill(
        logits == MASKED_LOGIT, MASKED_LOGIT
    )
    kl = JointAllocationLogits(logits).kl(JointAllocationLogits(other))
    torch.testing.assert_close(kl, reference_new_stack_kl(logits, other))
    torch.testing.assert_close(kl, reference_old_stack(logits, other, logits.argmax(-1))[2])
    assert torch.isfinite(kl).all()


def test_kl_is_infinite_only_where_the_other_rules_out_a_choice_this_one_allows():
    """The one place the former stacks differed (inf on the new stack, a huge finite number on
    the old): now inf on both, as torch's Categorical."""
    logits = step_logits(5, single_rows=False)
    other = logits.clone()
    other[0, 0, 1:] = MASKED_LOGIT  # the other allows only task 0 at slot 0 of sample 0
    kl = JointAllocationLogits(logits).kl(JointAllocationLogits(other))
    rules_out = (logits[0, 0, 1:] > MASKED_LOGIT).any()
    assert bool(torch.isinf(kl[0])) == bool(rules_out)
    assert torch.isfinite(kl[1:]).all()
    torch.testing.assert_close(kl[1:], torch.zeros(B - 1))


def test_single_choice_slots_count_as_that_choice_whatever_the_stored_action():
    logits = step_logits(7)
    allocation = valid_allocation(logits, 7)
    single = (logits > MASKED_LOGIT).sum(-1) == 1
    assert single.any()
    scrambled = allocation.masked_fill(single, T - 1)
    dist = JointAllocationLogits(logits)
    torch.testing.assert_close(dist.log_prob(scrambled), dist.log_prob(allocation))


def test_gradients_reach_only_allowed_logits():
    logits = step_logits(3).requires_grad_(True)
    dist = JointAllocationLogits(logits)
    (dist.log_prob(valid_allocation(logits.detach(), 3)) + dist.entropy()).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[logits.detach() == MASKED_LOGIT] == 0).all()
