"""JointAllocation: the allocator's distribution equals RLlib's MultiCategorical, batched."""

import pytest
import torch
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical

from rllib_alma_mi.nn.attention import MASKED_LOGIT
from rllib_alma_mi.rllib.allocation_dist import JointAllocation, joint_allocation_cls

B, N, T = 16, 5, 6


def step_logits(seed: int) -> torch.Tensor:
    """(B, N*T) logits with masked choices; every step keeps at least one allowed task."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(B, N, T, generator=g)
    masked = torch.rand(B, N, T, generator=g) < 0.5
    masked[..., 0] = False
    return logits.masked_fill(masked, MASKED_LOGIT).flatten(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_logp_entropy_and_kl_equal_rllibs_multicategorical(seed):
    logits, other_logits = step_logits(seed), step_logits(seed + 10)
    ours, other = JointAllocation(logits, T), JointAllocation(other_logits, T)
    rllib = TorchMultiCategorical.from_logits(logits, input_lens=[T] * N)
    rllib_other = TorchMultiCategorical.from_logits(other_logits, input_lens=[T] * N)
    actions = rllib.sample()
    torch.testing.assert_close(ours.logp(actions), rllib.logp(actions))
    torch.testing.assert_close(ours.entropy(), rllib.entropy())
    torch.testing.assert_close(ours.kl(other), rllib.kl(rllib_other))
    # Choices both rule out add nothing (not NaN).
    torch.testing.assert_close(ours.kl(ours), torch.zeros(B))


def test_logp_gradient_is_finite_and_zero_on_masked_choices():
    logits = step_logits(3).requires_grad_(True)
    actions = torch.zeros(B, N, dtype=torch.long)
    JointAllocation(logits, T).logp(actions).sum().backward()
    assert torch.isfinite(logits.grad).all()
    masked = logits.detach() == MASKED_LOGIT
    assert (logits.grad[masked] == 0).all()


def test_partial_class_is_built_once_and_refuses_to_sample():
    cls = joint_allocation_cls(T)
    assert joint_allocation_cls(T) is cls
    dist = cls.from_logits(step_logits(0))
    assert dist.logp(torch.zeros(B, N, dtype=torch.long)).shape == (B,)
    with pytest.raises(NotImplementedError, match="samples autoregressively"):
        dist.sample()
    with pytest.raises(NotImplementedError, match="samples autoregressively"):
        dist.to_deterministic()
