"""MINE: exact pair structure, masks, gradients, stability, errors, memory, accuracy."""

import importlib.util
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rllib_alma_mi.nn.mine import (
    MEASURES,
    MINE,
    negative_expectation,
    positive_expectation,
    sample_blocks,
)

ROOT = Path(__file__).resolve().parents[1]
CRITICS = ("separable", "concat")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference(mine, x, y, mask, nwj_shift=None):
    """Brute force over explicit pairs: positives (i, a, y_i), negatives (i, a, y_j), j != i."""
    n, a = mask.shape
    valid = mask.any(1)
    pos, neg = [], []
    for i in range(n):
        for k in range(a):
            if not mask[i, k]:
                continue
            pos.append(mine.critic(x[i, k], y[i]))
            neg += [mine.critic(x[i, k], y[j]) for j in range(n) if j != i and valid[j]]
    pos, neg = torch.stack(pos), torch.stack(neg)
    if nwj_shift is not None:
        return (pos + nwj_shift).mean() - torch.exp(neg + nwj_shift - 1).mean()
    return (
        positive_expectation(pos, mine.measure).mean()
        - negative_expectation(neg, mine.measure).mean()
    )


@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("measure", MEASURES)
def test_matches_brute_force_pairs_with_masks(measure, critic):
    mine = MINE(3, 2, measure=measure, embed_dim=8, critic=critic)
    x, y = torch.randn(6, 4, 3), torch.randn(6, 2)
    mask = torch.rand(6, 4) < 0.6
    mask[0, 0] = mask[1, 0] = True
    mask[5] = False  # a sample with no valid row is no negative either
    loss, mi = mine(x, y, mask.to(torch.int8))
    expected = reference(mine, x, y, mask)
    torch.testing.assert_close(mi, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, -expected, atol=1e-5, rtol=1e-5)
    shift = 0.0 if measure == "KL" else 1.0
    torch.testing.assert_close(
        mine.nwj_estimate(x, y, mask), reference(mine, x, y, mask, shift), atol=1e-5, rtol=1e-5
    )


def test_shapes_2d_and_3d():
    mine = MINE(5, 3, embed_dim=16)
    loss, mi = mine(torch.randn(20, 5), torch.randn(20, 3))
    assert loss.shape == () and mi.shape == ()
    loss3, _ = mine(torch.randn(20, 4, 5), torch.randn(20, 3), torch.ones(20, 4))
    assert loss3.shape == ()
    # 2D x with a (N,) mask, and 3D x with a per-sample (N,) mask.
    mine(torch.randn(20, 5), torch.randn(20, 3), torch.ones(20))
    mine(torch.randn(20, 4, 5), torch.randn(20, 3), torch.ones(20))


def test_same_y_pairs_are_never_negatives():
    # Two samples, every agent of a sample carries that sample's y. Pairs that share a y
    # (same sample, another agent) are positives in disguise: counting them as negatives
    # would move the estimate; only the other sample's y may serve as a negative.
    mine = MINE(2, 2, measure="KL", embed_dim=8)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = y[:, None, :].expand(2, 5, 2).clone()
    _, mi = mine(x, y)
    t = mine.critic(x[:, 0][:, None, :], y[None, :, :])  # t[i, j] = T(x_i, y_j)
    correct = t.diagonal().mean() - torch.exp(t.flip(1).diagonal() - 1).mean()
    torch.testing.assert_close(mi, correct, atol=1e-5, rtol=1e-5)
    # With same-sample pairs among the negatives (4 of them per row, 5 cross-sample ones).
    flawed_neg = (4 * torch.exp(t.diagonal() - 1) + 5 * torch.exp(t.flip(1).diagonal() - 1)) / 9
    assert not torch.allclose(mi, t.diagonal().mean() - flawed_neg.mean(), atol=1e-4)


def test_masked_rows_values_do_not_matter():
    mine = MINE(4, 3, embed_dim=16, negatives=8)
    x, y = torch.randn(40, 3, 4), torch.randn(40, 3)
    mask = torch.rand(40, 3) < 0.5
    mask[:2] = True
    mask[-3:] = False
    x2, y2 = x.clone(), y.clone()
    x2[~mask] = float("nan")
    y2[~mask.any(1)] = 1e30
    torch.manual_seed(1)
    loss1, _ = mine(x, y, mask)
    torch.manual_seed(1)
    loss2, _ = mine(x2, y2, mask)
    torch.testing.assert_close(loss1, loss2)


def test_all_negatives_used_deterministically_when_few_samples():
    mine = MINE(4, 3, embed_dim=16, negatives=20)
    x, y = torch.randn(21, 2, 4), torch.randn(21, 3)
    assert torch.equal(mine(x, y)[1], mine(x, y)[1])
    torch.testing.assert_close(mine(x, y)[1], reference(mine, x, y, torch.ones(21, 2, dtype=bool)))


def test_chunked_path_equals_single_pass_with_gradients():
    x, y = torch.randn(300, 3, 4, requires_grad=True), torch.randn(300, 5, requires_grad=True)
    mine = MINE(4, 5, embed_dim=8, negatives=16)
    grads = []
    for chunk in (1 << 30, 1000):
        mine.chunk_elements = chunk
        mine.zero_grad()
        x.grad = y.grad = None
        torch.manual_seed(3)
        loss, _ = mine(x, y)
        loss.backward()
        grads.append((loss.detach(), x.grad.clone(), y.grad.clone(), mine.f[0].weight.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_negatives_per_positive_are_bounded_and_uniform():
    # Each positive sees at most `negatives` other samples; over many draws every other
    # valid sample is a block-mate of sample 0 about equally often; invalid ones never.
    valid_idx = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14])
    counts = torch.zeros(15)
    for _ in range(500):
        order, valid = sample_blocks(valid_idx, negatives=4)
        assert order.shape[1] == 5
        assert sorted(order[valid].tolist()) == valid_idx.tolist()
        for blk, ok in zip(order, valid, strict=True):
            members = blk[ok]
            if (members == 0).any():
                counts[members[members != 0]] += 1
    assert counts[0] == counts[3] == counts[13] == 0
    others = counts[valid_idx[1:]]
    assert others.min() > 0.75 * others.mean()
    order, valid = sample_blocks(torch.arange(5), negatives=4)
    assert order.tolist() == [[0, 1, 2, 3, 4]] and valid.all()


@pytest.mark.parametrize("grads_of", ["x", "y", "params"])
def test_chunked_gradients_for_each_input(grads_of):
    x, y = torch.randn(200, 2, 4), torch.randn(200, 5)
    x.requires_grad_(grads_of == "x")
    y.requires_grad_(grads_of == "y")
    mine = MINE(4, 5, embed_dim=8, negatives=16)
    mine.requires_grad_(grads_of == "params")
    results = []
    for chunk in (1 << 30, 1000):
        mine.chunk_elements = chunk
        torch.manual_seed(3)
        loss, _ = mine(x, y)
        target = {"x": x, "y": y, "params": mine.f[0].weight}[grads_of]
        results.append(torch.autograd.grad(loss, target)[0])
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-4)


def test_gradients_reach_upstream_parameters_and_mine():
    upstream = torch.nn.Linear(6, 8)
    mine = MINE(8, 3, embed_dim=16)
    z, y = torch.randn(32, 4, 6), torch.randn(32, 3)
    mask = torch.rand(32, 4) < 0.7
    x = upstream(z)
    loss, _ = mine(x, y, mask)
    x.retain_grad()
    loss.backward()
    assert upstream.weight.grad is not None and upstream.weight.grad.abs().sum() > 0
    assert torch.all(x.grad[~mask] == 0)
    assert x.grad[mask].abs().sum() > 0
    for name, p in mine.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("measure", MEASURES)
def test_finite_on_extreme_inputs(measure, critic):
    mine = MINE(4, 4, measure=measure, embed_dim=16, critic=critic)
    base = torch.randn(64, 2, 4)
    cases = [
        (1e4 * base, torch.randn(64, 4)),
        (base, -1e4 * torch.randn(64, 4)),
        (1e4 * base, 1e4 * base[:, 0]),
        (torch.zeros(64, 2, 4), torch.zeros(64, 4)),
    ]
    for x, y in cases:
        x = x.clone().requires_grad_(True)
        loss, mi = mine(x, y)
        assert torch.isfinite(loss) and torch.isfinite(mi)
        assert torch.isfinite(mine.nwj_estimate(x, y))
        loss.backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in mine.parameters())
        mine.zero_grad()


def test_errors():
    with pytest.raises(ValueError, match="measure"):
        MINE(2, 2, measure="JS")
    with pytest.raises(ValueError, match="critic"):
        MINE(2, 2, critic="bilinear")
    mine = MINE(4, 3, embed_dim=8)
    with pytest.raises(ValueError, match=r"x must have shape .*got \(10, 5\)"):
        mine(torch.randn(10, 5), torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"y must have shape \(10, 3\), got \(9, 3\)"):
        mine(torch.randn(10, 4), torch.randn(9, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        mine(torch.randn(10, 2, 4), torch.randn(10, 3), torch.ones(10, 3))
    with pytest.raises(ValueError, match="at least 2 valid samples"):
        mine(torch.randn(10, 4), torch.randn(10, 3), torch.eye(10)[0])
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN/inf"):
        mine(x, torch.randn(10, 3))
    y = torch.randn(10, 3)
    y[2, 0] = float("inf")
    with pytest.raises(ValueError, match="y contains NaN/inf"):
        mine(torch.randn(10, 4), y)


def test_large_batch_runs_in_bounded_memory():
    # N = 50,000 samples x 8 agents: an N x N score matrix alone would be 10 GB; the inputs
    # and their gradients are 2 x 25 MB here.
    script = textwrap.dedent(
        """
        import torch
        from rllib_alma_mi.nn.mine import MINE

        def status_mb(key):
            with open("/proc/self/status") as f:
                return next(int(v.split()[1]) for v in f if v.startswith(key)) / 1024

        torch.set_num_threads(1)
        x = torch.randn(50_000, 8, 16, requires_grad=True)
        y = torch.randn(50_000, 16)
        mine = MINE(16, 16, embed_dim=32)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_mb("VmRSS")
        loss, mi = mine(x, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        print(status_mb("VmHWM") - before)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 250, f"peak memory grew by {peak_mb:.0f} MB"


def _gaussian_benchmark():
    path = ROOT / "benchmarks" / "mine_gaussian.py"
    spec = importlib.util.spec_from_file_location("mine_gaussian", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gaussian_helpers():
    bench = _gaussian_benchmark()
    rho = bench.rho_for_mi(4.0, 20)
    assert math.isclose(-10 * math.log(1 - rho**2), 4.0)


@pytest.mark.slow
@pytest.mark.parametrize(("measure", "true_mi", "tolerance"), [("KL", 4.0, 0.15),
                                                               ("JSD", 2.0, 0.20)])
def test_gaussian_mi_accuracy(measure, true_mi, tolerance):
    """Each bound against the closed form, one MI level each (`benchmarks/mine_gaussian.py`
    runs the full grid)."""
    bench = _gaussian_benchmark()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = bench.estimate_gaussian_mi(true_mi, measure, steps=1500, batch=512, eval_batches=4)
    finally:
        torch.set_num_threads(threads)
    assert abs(est - true_mi) <= tolerance * true_mi, f"{measure}: {est:.3f} vs {true_mi}"


def test_mi_targets():
    from rllib_alma_mi.nn.mi_targets import MI_TARGETS, GlobalStateEncoder, entity_mean, task_mean

    assert MI_TARGETS == ("task_mean", "entity_mean", "global_state")
    emb = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.int8)
    out = task_mean(emb, mask)
    torch.testing.assert_close(out[0], emb[0, :2].mean(0))
    assert torch.all(out[1] == 0)
    torch.testing.assert_close(entity_mean(emb, mask.float())[2], emb[2].mean(0))
    with pytest.raises(ValueError, match="task_mask"):
        task_mean(emb, mask[:, :3])
    enc = GlobalStateEncoder(6, 16)
    state = {"entities": emb, "entity_mask": mask}
    y = enc(state)
    assert y.shape == (3, 16)
    changed = {"entities": torch.where(mask[..., None] > 0, emb, 1e3), "entity_mask": mask}
    torch.testing.assert_close(enc(changed), y)
    with pytest.raises(ValueError, match="entity_mask"):
        enc({"entities": emb})
