"""WorkerNet: action masking, visibility, agent_index handling."""

import pytest
import torch

from rllib_alma_mi.nn.worker import MASKED_LOGIT, WorkerNet

B, E, F, A, D = 8, 9, 5, 6, 32


def make_obs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "entities": torch.randn(B, E, F, generator=g),
        "entity_mask": (torch.rand(B, E, generator=g) < 0.9).to(torch.int8),
        "obs_mask": (torch.rand(B, E, generator=g) < 0.5).to(torch.int8),
        "agent_index": torch.randint(0, 3, (B,), generator=g),
        "action_mask": (torch.rand(B, A, generator=g) < 0.6).float(),
    }


@pytest.fixture
def net():
    torch.manual_seed(0)
    return WorkerNet(F, A, embed_dim=D)


def test_shapes_and_masked_actions(net):
    obs = make_obs()
    obs["action_mask"][:, 0] = 1
    logits, hidden = net(obs)
    assert logits.shape == (B, A) and hidden.shape == (B, D)
    assert net.value(hidden).shape == (B,)
    masked = obs["action_mask"] == 0
    assert torch.all(logits[masked] == MASKED_LOGIT)
    assert torch.all(logits[~masked] > MASKED_LOGIT)
    probs = torch.softmax(logits, -1)
    assert torch.all(probs[masked] == 0)


def test_invisible_entities_have_no_influence(net):
    obs = make_obs()
    logits, hidden = net(obs)
    index = obs["agent_index"]
    own = torch.nn.functional.one_hot(index, E).bool()
    unusable = ~((obs["entity_mask"] > 0) & (obs["obs_mask"] > 0)) & ~own
    changed = dict(obs, entities=torch.where(unusable[..., None], 1e3, obs["entities"]))
    logits2, hidden2 = net(changed)
    torch.testing.assert_close(hidden2, hidden)
    torch.testing.assert_close(logits2, logits)
    # A visible entity does matter.
    visible = ~unusable & ~own
    assert visible.any()
    moved = dict(obs, entities=torch.where(visible[..., None], 1e3, obs["entities"]))
    assert not torch.allclose(net(moved)[1], hidden)


def test_own_row_is_used_even_when_not_in_masks(net):
    obs = make_obs()
    obs["obs_mask"] = torch.zeros(B, E)
    obs["entity_mask"] = torch.zeros(B, E)
    _, hidden = net(obs)
    assert torch.isfinite(hidden).all()
    own = torch.nn.functional.one_hot(obs["agent_index"], E).bool()
    moved = dict(obs, entities=torch.where(own[..., None], 5.0, obs["entities"]))
    assert not torch.allclose(net(moved)[1], hidden)


def test_agent_index_float_and_column_shape(net):
    obs = make_obs()
    ref, _ = net(obs)
    as_float = dict(obs, agent_index=obs["agent_index"].float()[:, None])
    torch.testing.assert_close(net(as_float)[0], ref)


def test_gradients_are_finite(net):
    obs = make_obs()
    logits, hidden = net(obs)
    loss = torch.log_softmax(logits, -1).clamp(min=-50).sum() + net.value(hidden).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_errors(net):
    obs = make_obs()
    with pytest.raises(ValueError, match="agent_index"):
        net(dict(obs, agent_index=torch.full((B,), E)))
    with pytest.raises(ValueError, match="obs_mask"):
        net(dict(obs, obs_mask=torch.ones(B, E + 1)))
    with pytest.raises(ValueError, match="action_mask"):
        net(dict(obs, action_mask=torch.ones(B, A + 1)))


def test_entities_are_embedded_with_their_scaled_difference_to_the_agent():
    """One grid cell (1/15) must reach the first layer as a unit-sized input: with the
    absolute features' weights at zero, the embedding sees only 15 * (entity - agent)."""
    obs = make_obs()
    obs["entity_mask"][:] = 1
    obs["obs_mask"][:] = 1
    torch.manual_seed(0)
    net = WorkerNet(F, A, embed_dim=D, relative_scale=15.0)
    with torch.no_grad():
        net.embed[0].weight[:, : 2 * F] = 0.0  # entity and own columns
    unit = WorkerNet(F, A, embed_dim=D, relative_scale=1.0)
    unit.load_state_dict(net.state_dict())
    scaled = dict(obs, entities=15.0 * obs["entities"])
    torch.testing.assert_close(net.encode(obs), unit.encode(scaled))
    step = dict(obs, entities=obs["entities"].clone())
    step["entities"][..., 0] += 1.0 / 15  # everything one cell further, the agent included
    torch.testing.assert_close(net.encode(step), net.encode(obs))  # relations unchanged


def test_relative_scale_is_validated():
    from rllib_alma_mi.settings import ModelSettings

    with pytest.raises(ValueError, match="relative_scale"):
        ModelSettings(relative_scale=-1.0)
    with pytest.raises(ValueError, match="relative_scale"):
        ModelSettings(relative_scale=float("nan"))


def _unfolded_encode(net, obs):
    """The worker's definition written plainly: embed every entity, attend from the own row."""
    entities, index = obs["entities"], obs["agent_index"].long()
    rows = torch.arange(entities.shape[0])
    own = torch.nn.functional.one_hot(index, entities.shape[1]).bool()
    usable = ((obs["entity_mask"] > 0) & (obs["obs_mask"] > 0)) | own
    entities = entities.masked_fill(~usable[..., None], 0.0)
    own_rows = entities[rows, index][:, None].expand_as(entities)
    emb = net.embed(torch.cat([entities, own_rows, net.relative_scale * (entities - own_rows)], -1))
    own_emb = emb[rows, index][:, None]
    read = net.readout(own_emb, emb, usable)
    return net.hidden(torch.cat([own_emb, read], dim=-1)).squeeze(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_readout_equals_embedding_every_entity_then_attending(seed):
    """encode() folds the key/value projections into the query side; values and gradients
    must equal the plain computation's."""
    torch.manual_seed(seed)
    net = WorkerNet(F, A, embed_dim=D, n_heads=4)
    obs = make_obs(seed)
    padding = obs["entity_mask"] == 0
    padding[torch.arange(B), obs["agent_index"]] = False
    obs["entities"][padding] = float("nan")  # padding may hold anything
    fast = net.encode(obs)
    grads_fast = torch.autograd.grad(fast.square().sum(), list(net.parameters()), allow_unused=True)
    plain = _unfolded_encode(net, obs)
    grads_plain = torch.autograd.grad(
        plain.square().sum(), list(net.parameters()), allow_unused=True
    )
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    names = [name for name, _ in net.named_parameters()]
    for name, g_fast, g_plain in zip(names, grads_fast, grads_plain, strict=True):
        if g_plain is None:  # the heads
            assert g_fast is None, name
            continue
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-5, msg=name)


def test_subtask_marks_start_neutral_then_steer_the_policy_and_are_required():
    obs = make_obs()
    obs["action_mask"][:, 0] = 1
    torch.manual_seed(0)
    plain = WorkerNet(F, A, embed_dim=D)
    torch.manual_seed(0)
    marking = WorkerNet(F, A, embed_dim=D, marks_subtask=True)
    marked = {**obs, "subtask": (torch.rand(B, E) < 0.5).to(torch.int8)}
    # the learned vector starts at zero: the same function as the net without marks
    torch.testing.assert_close(marking(marked)[0], plain(obs)[0])
    logits, _ = marking(marked)
    logits[obs["action_mask"].bool()].sum().backward()
    assert marking.subtask_vector.grad is not None and marking.subtask_vector.grad.abs().sum() > 0
    with torch.no_grad():
        marking.subtask_vector.normal_()
    other = {**marked, "subtask": 1 - marked["subtask"]}
    assert not torch.allclose(marking(marked)[0], marking(other)[0])
    with pytest.raises(ValueError, match="subtask"):
        marking(obs)
    with pytest.raises(ValueError, match="subtask"):
        marking({**obs, "subtask": torch.ones(B, E + 1)})
