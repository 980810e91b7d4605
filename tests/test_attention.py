"""EntityAttention / EntityEncoder: masking, permutation equivariance, finiteness."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rllib_alma_mi.nn.attention import EntityAttention, EntityEncoder

B, E, F, D = 4, 7, 5, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _mask(*shape, p=0.7):
    return (torch.rand(*shape) < p).to(torch.int8)


def test_attention_shapes_and_masked_queries_are_zero():
    attn = EntityAttention(D, n_heads=4)
    q, k = torch.randn(B, 3, D), torch.randn(B, E, D)
    query_mask = torch.tensor([[1, 0, 1]] * B)
    out = attn(q, k, torch.ones(B, E), query_mask=query_mask)
    assert out.shape == (B, 3, D)
    assert torch.all(out[:, 1] == 0)
    assert torch.all(out[:, 0] != 0)


def test_attention_all_masked_row_is_exact_zero_and_finite_gradients():
    attn = EntityAttention(D)
    q = torch.randn(B, 3, D, requires_grad=True)
    k = torch.randn(B, E, D, requires_grad=True)
    key_mask = torch.ones(B, 3, E, dtype=torch.bool)
    key_mask[:, 1] = False  # query 1 sees nothing
    key_mask[0] = False  # sample 0 sees nothing at all
    out = attn(q, k, key_mask)
    assert torch.all(out[:, 1] == 0) and torch.all(out[0] == 0)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for t in (q.grad, k.grad, *(p.grad for p in attn.parameters())):
        assert torch.isfinite(t).all()


def test_attention_masked_keys_have_no_influence():
    attn = EntityAttention(D)
    q, k = torch.randn(B, 3, D), torch.randn(B, E, D)
    key_mask = _mask(B, 3, E)
    key_mask[..., 0] = 1
    out = attn(q, k, key_mask)
    k2 = k.clone()
    never = ~(key_mask > 0).any(dim=1)  # (B, E) keys no query uses
    k2[never] = float("nan")
    changed = k + 100.0 * torch.randn_like(k)
    # A key masked only for some queries: those queries must not change.
    hidden_for_q0 = key_mask[:, 0] == 0
    k3 = torch.where(hidden_for_q0[..., None], changed, k)
    torch.testing.assert_close(attn(q, k2, key_mask), out)
    torch.testing.assert_close(attn(q, k3, key_mask)[:, 0], out[:, 0])


def test_attention_any_key_count_and_shape_error():
    attn = EntityAttention(D)
    for k in (1, 2, 33):
        assert attn(torch.randn(2, 3, D), torch.randn(2, k, D), torch.ones(2, k)).shape == (2, 3, D)
    with pytest.raises(ValueError, match="key_mask"):
        attn(torch.randn(2, 3, D), torch.randn(2, 4, D), torch.ones(2, 5))
    with pytest.raises(ValueError, match="divisible"):
        EntityAttention(10, n_heads=4)


def test_encoder_permutation_equivariant():
    enc = EntityEncoder(F, D).eval()
    x, live = torch.randn(B, E, F), _mask(B, E)
    attn_mask = _mask(B, E, E)
    perm = torch.randperm(E)
    out = enc(x, live, attn_mask)
    out_p = enc(x[:, perm], live[:, perm], attn_mask[:, perm][:, :, perm])
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)


def test_encoder_padding_rows_zero_and_hidden_entities_have_no_influence():
    enc = EntityEncoder(F, D)
    x, live = torch.randn(B, E, F), _mask(B, E)
    live[:, 0] = 1
    visible = _mask(B, E)  # a (B, E) key mask shared by all queries
    out = enc(x, live, visible)
    assert torch.all(out[live == 0] == 0)
    dead_or_hidden = (live == 0) | (visible == 0)
    x2 = torch.where(dead_or_hidden[..., None], 50.0 * torch.randn_like(x), x)
    out2 = enc(x2, live, visible)
    # Rows of live entities keep their output when only unusable keys change (their own row
    # may change if it is itself a hidden-but-live entity, as it reads its own features).
    rows = (live > 0) & (visible > 0)
    torch.testing.assert_close(out2[rows], out[rows])


def test_encoder_all_masked_finite_gradients():
    enc = EntityEncoder(F, D)
    x = torch.randn(B, E, F, requires_grad=True)
    live = torch.zeros(B, E)
    live[0, :3] = 1
    out = enc(x, live, torch.zeros(B, E, E))
    assert torch.isfinite(out).all()
    assert torch.all(out[1:] == 0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_nn_package_imports_without_ray():
    code = "import sys, rllib_alma_mi.nn; assert 'ray' not in sys.modules, 'nn imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
