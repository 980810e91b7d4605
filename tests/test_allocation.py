"""AllocatorNet: masks, teacher forcing == sampling, conditioning, invariances, errors."""

import pytest
import torch

from rllib_alma_mi.nn.allocation import MASKED_LOGIT, AllocatorNet

B, E, F, N, T, D = 16, 10, 6, 3, 4, 32


def make_obs(b=B, seed=0, all_dead=False, no_tasks=False):
    g = torch.Generator().manual_seed(seed)
    entity2task = torch.zeros(b, E, T, dtype=torch.int8)
    owner = torch.randint(0, T, (b, E), generator=g)
    entity2task[:, N:] = torch.nn.functional.one_hot(owner[:, N:], T).to(torch.int8)
    task_mask = (torch.rand(b, T, generator=g) < 0.6).to(torch.int8)
    agent_mask = (torch.rand(b, N, generator=g) < 0.7).float()
    if no_tasks:
        task_mask.zero_()
    if all_dead:
        agent_mask.zero_()
    return {
        "entities": torch.randn(b, E, F, generator=g),
        "entity_mask": (torch.rand(b, E, generator=g) < 0.9).to(torch.int8),
        "obs_mask": torch.ones(b, E, dtype=torch.bool),
        "entity2task": entity2task,
        "task_mask": task_mask,
        "agent_mask": agent_mask,
        "agent_obs_mask": (torch.rand(b, N, E, generator=g) < 0.5).to(torch.int8),
    }


@pytest.fixture
def net():
    torch.manual_seed(0)
    return AllocatorNet(F, N, T, embed_dim=D)


def test_encoding_shapes_and_value(net):
    enc = net.encode(make_obs())
    assert enc.entity_emb.shape == (B, E, D)
    assert enc.agent_emb.shape == (B, N, D)
    assert enc.task_emb.shape == (B, T, D)


def test_sample_respects_masks_and_dead_agents_take_task_zero(net):
    for seed in range(10):
        obs = make_obs(b=64, seed=seed)
        with torch.no_grad():
            alloc, log_prob, entropy, logits = net.sample(obs)
        live_task = obs["task_mask"].bool()
        alive = obs["agent_mask"].bool()
        chosen_live = live_task.gather(1, alloc)
        has_task = live_task.any(1, keepdim=True)
        assert torch.all(chosen_live | ~alive | ~has_task)
        assert torch.all(alloc[~alive] == 0)
        assert torch.all(alloc[~has_task.expand_as(alloc)] == 0)
        assert alloc.dtype == torch.int64 and alloc.shape == (64, N)
        masked = ~(alive[:, :, None] & live_task[:, None, :])
        forced = masked.all(-1)
        assert torch.all(logits[masked & ~forced[..., None]] == MASKED_LOGIT)
        assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()


def test_teacher_forcing_matches_sampling(net):
    obs = make_obs(b=64)
    with torch.no_grad():
        alloc, log_prob, entropy, logits = net.sample(obs)
        lp, ent, tf_logits = net.log_prob(obs, alloc)
    torch.testing.assert_close(lp, log_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(tf_logits, logits, atol=1e-5, rtol=0)


def test_joint_log_prob_is_a_multicategorical_sum(net):
    obs = make_obs(b=32)
    alloc, log_prob, _, logits = net.sample(obs)
    per_step = torch.log_softmax(logits, dim=-1).gather(-1, alloc[..., None]).squeeze(-1)
    torch.testing.assert_close(per_step.sum(-1), log_prob)
    # What MultiCategorical computes from logits.reshape(B, N * T) split into N chunks.
    flat = logits.reshape(32, N * T)
    chunks = torch.split(flat, T, dim=1)
    mc = sum(
        torch.distributions.Categorical(logits=c).log_prob(alloc[:, i])
        for i, c in enumerate(chunks)
    )
    torch.testing.assert_close(mc, log_prob)


def test_dead_agent_rows_have_zero_log_prob_and_entropy(net):
    obs = make_obs(b=32)
    _, _, logits = net.log_prob(obs, torch.zeros(32, N, dtype=torch.long))
    logp = torch.log_softmax(logits, -1)
    dead = ~obs["agent_mask"].bool()
    assert torch.all(logp[dead][:, 0] == 0)
    all_dead = make_obs(b=8, all_dead=True)
    alloc, log_prob, entropy, _ = net.sample(all_dead)
    assert torch.all(alloc == 0) and torch.all(log_prob == 0) and torch.all(entropy == 0)


def test_deterministic_is_stepwise_argmax(net):
    obs = make_obs(b=32)
    alloc, _, _, logits = net.sample(obs, deterministic=True)
    assert torch.equal(alloc, logits.argmax(-1))
    again, *_ = net.sample(obs, deterministic=True)
    assert torch.equal(again, alloc)


def test_later_agents_condition_on_earlier_choices(net):
    obs = make_obs(b=1, seed=3)
    obs["agent_mask"][:] = 1
    obs["task_mask"][:] = 1
    a = torch.tensor([[0, 0, 0]])
    b = torch.tensor([[1, 0, 0]])
    _, _, logits_a = net.log_prob(obs, a)
    _, _, logits_b = net.log_prob(obs, b)
    torch.testing.assert_close(logits_a[:, 0], logits_b[:, 0])
    assert not torch.allclose(logits_a[:, 1], logits_b[:, 1])


def test_no_live_task_stays_finite_with_gradients(net):
    obs = make_obs(b=8, no_tasks=True)
    alloc, log_prob, entropy, logits = net.sample(obs)
    assert torch.all(alloc == 0) and torch.all(log_prob == 0) and torch.all(entropy == 0)
    lp, ent, tf_logits = net.log_prob(obs, alloc)
    (lp.sum() + ent.sum() + net.encode(obs).relation.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert torch.isfinite(torch.log_softmax(tf_logits, -1)).all()


def test_gradients_reach_agent_attention_through_log_prob(net):
    obs = make_obs(b=16)
    obs["agent_mask"][:] = 1
    obs["task_mask"][:, :2] = 1
    alloc, *_ = net.sample(obs)
    lp, ent, _ = net.log_prob(obs, alloc)
    (lp.sum() + ent.sum()).backward()
    for module in (net.encoder, net.agent_attn, net.ptr_query, net.ptr_message, net.ptr_count):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_permuting_non_agent_entities_leaves_distribution_unchanged(net):
    net.eval()
    obs = make_obs(b=8)
    perm = torch.cat([torch.arange(N), N + torch.randperm(E - N)])
    permuted = dict(obs)
    for key in ("entities", "entity_mask", "obs_mask", "entity2task"):
        permuted[key] = obs[key][:, perm]
    permuted["agent_obs_mask"] = obs["agent_obs_mask"][:, :, perm]
    alloc = net.sample(obs)[0]
    lp, ent, logits = net.log_prob(obs, alloc)
    lp_p, ent_p, logits_p = net.log_prob(permuted, alloc)
    torch.testing.assert_close(logits_p, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp_p, lp, atol=1e-5, rtol=1e-5)


def test_invisible_entities_do_not_matter(net):
    obs = make_obs(b=8)
    obs["obs_mask"] = (torch.rand(8, E) < 0.6) | (torch.arange(E) < N)
    alloc = net.sample(obs)[0]
    _, _, logits = net.log_prob(obs, alloc)
    changed = dict(obs)
    hidden = ~obs["obs_mask"]
    changed["entities"] = torch.where(hidden[..., None], 1e3, obs["entities"])
    _, _, logits2 = net.log_prob(changed, alloc)
    torch.testing.assert_close(logits2, logits)


def test_shape_errors_name_the_key(net):
    obs = make_obs(b=4)
    bad = dict(obs, task_mask=torch.ones(4, T + 1))
    with pytest.raises(ValueError, match="task_mask.*expected"):
        net.encode(bad)
    bad = dict(obs)
    del bad["agent_obs_mask"]
    with pytest.raises(ValueError, match="agent_obs_mask"):
        net.encode(bad)
    with pytest.raises(ValueError, match="entities"):
        net.encode(dict(obs, entities=torch.randn(4, E, F + 1)))
    with pytest.raises(ValueError, match="allocation"):
        net.log_prob(obs, torch.zeros(4, N + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="task indices"):
        net.log_prob(obs, torch.full((4, N), T))


def test_without_agent_attention_needs_no_agent_obs_mask():
    torch.manual_seed(0)
    net = AllocatorNet(F, N, T, embed_dim=D, agent_attention=False)
    obs = make_obs(b=4)
    del obs["agent_obs_mask"]
    alloc, log_prob, _, _ = net.sample(obs)
    torch.testing.assert_close(net.log_prob(obs, alloc)[0], log_prob)


def test_agent_task_relation_reads_only_differences_of_visible_task_entities(net):
    obs = make_obs()
    enc = net.encode(obs)
    assert enc.relation.shape == (B, N, T, D)
    shifted = dict(obs, entities=obs["entities"] + 0.5)  # every entity moved alike
    torch.testing.assert_close(net.encode(shifted).relation, enc.relation)
    # An invisible entity's features do not reach the relation.
    hidden = dict(obs, entity_mask=obs["entity_mask"].clone())
    hidden["entity_mask"][:, -1] = 0
    base = net.encode(hidden).relation
    moved = dict(hidden, entities=hidden["entities"].clone())
    moved["entities"][:, -1] += 3.0
    torch.testing.assert_close(net.encode(moved).relation, base)
    # A visible task entity moving does change its task's relation to the agents.
    visible = dict(obs, entity_mask=torch.ones(B, E, dtype=torch.int8))
    before = net.encode(visible).relation
    nudged = dict(visible, entities=visible["entities"].clone())
    nudged["entities"][:, -1, 0] += 1.0 / 15
    owner = visible["entity2task"][:, -1].argmax(-1)
    after = net.encode(nudged).relation
    rows = torch.arange(B)
    assert not torch.allclose(after[rows, :, owner], before[rows, :, owner])


def test_keep_bias_favours_each_agents_current_task_and_is_learned():
    torch.manual_seed(0)
    kept = AllocatorNet(F, N, T, embed_dim=D, keep_bias=3.0)
    obs = make_obs(b=256, seed=1)
    current = torch.randint(0, T, (256, N))
    obs["current_allocation"] = current.masked_fill(torch.rand(256, N) < 0.3, -1)
    alloc, log_prob, _, logits = kept.sample(obs)
    with torch.no_grad():
        kept.keep_bias.zero_()
        _, _, plain_logits = kept.log_prob(obs, alloc)
        kept.keep_bias.fill_(3.0)
    allowed, _ = kept.allowed_choices(obs)
    has = (obs["current_allocation"] >= 0)[..., None] & allowed
    onehot = torch.nn.functional.one_hot(obs["current_allocation"].clamp(min=0), T).bool()
    diff = (logits - plain_logits)
    assert torch.allclose(diff[has & onehot], torch.tensor(3.0))
    assert torch.all(diff[allowed & ~(has & onehot)] == 0)
    lp, _, _ = kept.log_prob(obs, alloc)
    torch.testing.assert_close(lp, log_prob)
    lp.sum().backward()
    assert kept.keep_bias.grad is not None and kept.keep_bias.grad != 0
    assert AllocatorNet(F, N, T, embed_dim=D).keep_bias is None
