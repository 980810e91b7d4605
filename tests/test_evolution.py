"""ALMA-EA: settings, evolutionary operators, evaluation and the training/checkpoint loop."""

import numpy as np
import pytest
import torch

from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.app.evaluation import GreedyActor, make_eval_env, run_episode
from rllib_alma_mi.evolution import EvolutionSettings
from rllib_alma_mi.evolution.mi_step import mi_step_on_observations
from rllib_alma_mi.evolution.operators import (
    crossover,
    head_from_state,
    head_of,
    load_head,
    mutate,
    next_generation,
    random_head,
    select_parents,
    tournament,
)
from rllib_alma_mi.evolution.rollouts import evaluate_heads_locally, learner_module_states
from rllib_alma_mi.evolution.state import STATE_KEY, EvolutionState, attached_state
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.nn.allocation import AllocatorNet
from rllib_alma_mi.rllib.greedy import stack_observations

SMALL = {"scenario": "2a_3b", "max_cycles": 30}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def template():
    return head_of(AllocatorNet(6, 3, 4, embed_dim=16, n_heads=2))


def _population(template, n=5, seed=1):
    rng = _gen(seed)
    return [random_head(template, rng) for _ in range(n)]


def _equal(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def _n_weights(head):
    return sum(v.numel() for v in head.values())


# ------------------------------------------------------------------------------- settings
def test_defaults_follow_race():
    s = EvolutionSettings()
    assert (s.population_size, s.elite_fraction, s.tournament_size) == (5, 0.2, 3)
    assert (s.mutation_prob, s.mutation_std, s.super_mutation_prob, s.reset_prob) == (
        0.9,
        0.1,
        0.05,
        0.05,
    )
    assert s.n_elites() == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"population_size": 1}, r"population_size=1 is out of range; it must be >= 2"),
        ({"elite_fraction": 1.5}, r"elite_fraction=1.5 .*<= 1.0"),
        ({"mutation_frac": -0.1}, r"mutation_frac=-0.1 .*>= 0.0"),
        ({"mutation_prob": float("nan")}, r"mutation_prob=nan .*finite"),
        ({"tournament_size": 6}, r"tournament_size=6 .*population_size=5"),
        ({"super_mutation_prob": 0.6, "reset_prob": 0.6}, r"super_mutation_prob \+ reset_prob"),
        ({"episodes_per_eval": True}, r"episodes_per_eval=True must be an integer"),
        ({"inject_rl_every": -1}, r"inject_rl_every=-1"),
        ({"popsize": 3}, r"unknown setting\(s\) \['popsize'\]"),
    ],
)
def test_bad_settings_name_the_key_and_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvolutionSettings.from_dict(kwargs)


def test_config_block_is_off_by_default_and_validated():
    assert AlmaPPOConfig().evolution_config is None
    config = AlmaPPOConfig().evolution(population_size=4, episodes_per_eval=2)
    assert config.evolution_config["population_size"] == 4
    assert config.evolution(enabled=False).evolution_config is None
    with pytest.raises(ValueError, match="elite_fraction"):
        AlmaPPOConfig().evolution(elite_fraction=2.0)


def test_evolution_needs_a_learned_allocator():
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=SMALL)
        .alma(allocation="heuristic")
        .mutual_info(use_mutual_info=False)
        .evolution()
    )
    with pytest.raises(ValueError, match="allocation='learned'"):
        config.validate()


# ------------------------------------------------------------------------------ operators
def test_head_is_the_pointer_head_only(template):
    assert sorted({k.split(".")[0] for k in template}) == [
        "ptr_count",
        "ptr_key",
        "ptr_message",
        "ptr_out",
        "ptr_query",
    ]
    net = AllocatorNet(6, 3, 4, embed_dim=16, n_heads=2)
    encoder_before = {k: v.clone() for k, v in net.state_dict().items() if "ptr_" not in k}
    new = random_head(template, _gen())
    load_head(net, new)
    assert _equal(head_of(net), new)
    for k, v in net.state_dict().items():
        if "ptr_" not in k:
            assert torch.equal(v, encoder_before[k])
    with pytest.raises(ValueError, match="shape"):
        load_head(net, {**new, "ptr_out.bias": torch.zeros(2)})


def test_elites_survive_unchanged_and_rl_head_replaces_the_worst(template):
    pop = _population(template)
    rl = random_head(template, _gen(99))
    fitness = [1.0, 5.0, 2.0, 3.0, 0.0]
    new = next_generation(pop, fitness, rl, EvolutionSettings(), _gen())
    assert len(new) == 5
    assert _equal(new[1], pop[1])  # the one elite (20% of 5), in its slot
    assert new[1]["ptr_out.weight"] is not pop[1]["ptr_out.weight"]  # a copy
    assert _equal(new[4], rl)  # the worst slot: an exact copy of the RL head
    for slot in (0, 2, 3):  # bred children (mutation_prob 0.9: changed w.h.p.)
        assert not any(_equal(new[slot], p) for p in pop)
    two = next_generation(pop, fitness, None, EvolutionSettings(elite_fraction=0.4), _gen())
    assert _equal(two[1], pop[1]) and _equal(two[3], pop[3])
    assert not any(_equal(h, rl) for h in two)


def test_next_generation_is_deterministic_given_the_generator(template):
    pop = _population(template)
    fitness = [1.0, 5.0, 2.0, 3.0, 0.0]
    a = next_generation(pop, fitness, None, EvolutionSettings(), _gen(3))
    b = next_generation(pop, fitness, None, EvolutionSettings(), _gen(3))
    c = next_generation(pop, fitness, None, EvolutionSettings(), _gen(4))
    assert all(_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_equal(x, y) for x, y in zip(a, c, strict=True))


def test_tournament_and_selection():
    fitness = [0.0, 3.0, 1.0, float("nan"), 2.0]
    assert tournament(fitness, 5, _gen()) == 1  # everyone drawn: the best wins
    rng = _gen(7)
    wins = [tournament(fitness, 3, rng) for _ in range(400)]
    assert 3 not in wins and 0 not in wins  # NaN ranks last; 0 is beaten by any other draw
    elites, pairs = select_parents(fitness, EvolutionSettings(elite_fraction=0.4), _gen(), 3)
    assert elites == [1, 4] and len(pairs) == 3


def test_crossover_mixes_whole_output_units(template):
    a = {k: torch.zeros_like(v) for k, v in template.items()}
    b = {k: torch.ones_like(v) for k, v in template.items()}
    child_a, child_b = crossover(a, b, _gen())
    for name in template:
        rows = child_a[name].reshape(child_a[name].shape[0], -1)
        assert torch.all(rows.amin(1) == rows.amax(1))  # a row is never split
        torch.testing.assert_close(child_a[name] + child_b[name], torch.ones_like(a[name]))
    weight, bias = child_a["ptr_query.weight"], child_a["ptr_query.bias"]
    assert torch.equal(weight[:, 0], bias)  # a unit's weight row and bias: one parent
    assert 0 < bias.sum() < bias.numel()  # both parents contribute units


def test_mutation_changes_the_expected_share_of_weights(template):
    settings = EvolutionSettings(mutation_prob=0.9, mutation_frac=0.1)
    rng = _gen(5)
    head = random_head(template, _gen(6))
    changed = []
    for _ in range(200):
        child = mutate(head, rng, settings)
        changed.append(sum(int((child[k] != head[k]).sum()) for k in head))
    share = np.sum(changed) / (200 * _n_weights(head))
    assert abs(share - 0.9 * 0.1) < 0.01
    assert 0.05 < np.mean(np.array(changed) == 0) < 0.2  # about 1 - mutation_prob untouched


def test_a_tiny_mutation_rate_never_rounds_to_zero(template):
    small = {"ptr_out.weight": template["ptr_out.weight"], "ptr_out.bias": template["ptr_out.bias"]}
    settings = EvolutionSettings(mutation_prob=1.0, mutation_frac=0.01)
    rng = _gen(8)
    total = sum(
        int((mutate(small, rng, settings)[k] != small[k]).sum()) for _ in range(500) for k in small
    )
    expected = 500 * 0.01 * _n_weights(small)  # 85
    assert 0.6 * expected < total < 1.4 * expected


def test_super_mutations_and_resets(template):
    head = random_head(template, _gen(6))
    w = head["ptr_query.weight"]
    base = dict(mutation_prob=1.0, mutation_frac=1.0, mutation_std=0.1)
    normal = mutate(head, _gen(1), EvolutionSettings(**base, super_mutation_prob=0, reset_prob=0))
    big = mutate(head, _gen(1), EvolutionSettings(**base, super_mutation_prob=1.0, reset_prob=0))
    rel_normal = ((normal["ptr_query.weight"] - w) / w.abs()).std()
    rel_big = ((big["ptr_query.weight"] - w) / w.abs()).std()
    assert 0.08 < rel_normal < 0.12 and 0.8 < rel_big < 1.2
    huge = {k: torch.full_like(v, 100.0) for k, v in head.items()}
    reset = mutate(huge, _gen(1), EvolutionSettings(**base, super_mutation_prob=0, reset_prob=1))
    assert reset["ptr_query.weight"].abs().max() <= 1 / 4  # U(-1/sqrt(16), 1/sqrt(16))
    assert reset["ptr_count.weight"].abs().max() <= 1.0  # fan_in 1


def test_unmutated_individuals_are_exact_copies(template):
    head = random_head(template, _gen(6))
    same = mutate(head, _gen(), EvolutionSettings(mutation_prob=0.0))
    assert _equal(same, head)


def test_state_round_trip_keeps_population_and_generator(template):
    state = EvolutionState.create(template, EvolutionSettings(population_size=3), seed=4)
    state.generation, state.fitness, state.metrics = 2, [1.0, 2.0, 3.0], {"best_fitness": 3.0}
    state.best = state.population[2]
    back = EvolutionState.from_dict(state.to_dict())
    assert all(_equal(a, b) for a, b in zip(state.population, back.population, strict=True))
    assert _equal(back.best, state.best)
    assert (back.generation, back.fitness, back.metrics) == (2, state.fitness, state.metrics)
    assert torch.equal(torch.rand(4, generator=state.rng), torch.rand(4, generator=back.rng))


# ----------------------------------------------------------------------------- evaluation
def _modules_of_config():
    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=SMALL)
        .alma(embed_dim=16)
        .mutual_info(mi_embed_dim=16)
    )
    config.validate()
    specs = config.rl_module_spec.rl_module_specs
    states = {mid: spec.build().get_state() for mid, spec in specs.items()}
    return config, specs, states


def test_local_evaluation_scores_heads_without_touching_the_weights():
    config, specs, states = _modules_of_config()
    before = {m: {k: np.copy(v) for k, v in s.items()} for m, s in states.items()}
    rl_head = head_from_state(states[ALLOCATOR])
    other = random_head(rl_head, _gen())
    scores = evaluate_heads_locally(
        [rl_head, other, rl_head], specs, states, config.env, config.env_config, seeds=[0]
    )
    assert len(scores) == 3 and all(np.isfinite(scores))
    assert scores[0] == scores[2]  # greedy and the same seed: the same return
    for m, state in states.items():
        for k, v in state.items():
            np.testing.assert_array_equal(v, before[m][k])


def test_evaluation_collects_the_allocator_observations_it_played():
    config, specs, states = _modules_of_config()
    observations = []
    head = head_from_state(states[ALLOCATOR])
    evaluate_heads_locally(
        [head, head], specs, states, config.env, config.env_config, [0, 1], observations
    )
    assert len(observations) >= 4  # at least the reset decision of each of the 4 episodes
    assert all({"entities", "agent_mask", "task_mask"} <= set(o) for o in observations)


def _small_algo(use_mutual_info: bool):
    return (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=SMALL)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .alma(embed_dim=16)
        .mutual_info(use_mutual_info=use_mutual_info, mi_embed_dim=16, mi_weight=1.0)
        .debugging(seed=0)
        .build_algo()
    )


def _changed(before, after):
    return {k for k in before if not np.array_equal(before[k], after[k])}


@pytest.mark.parametrize("use_mutual_info", [True, False])
def test_ea_observations_train_the_encoder_through_the_mi_term_only(
    ray_session, use_mutual_info
):
    algo = _small_algo(use_mutual_info)
    try:
        states = learner_module_states(algo)
        specs = {m: spec for m, spec in algo.config.rl_module_spec.rl_module_specs.items()}
        observations = []
        evaluate_heads_locally(
            [head_from_state(states[ALLOCATOR])], specs, states, algo.config.env,
            algo.config.env_config, [0, 1], observations,
        )
        batch = stack_observations(observations)
        results = algo.learner_group.foreach_learner(
            lambda learner: mi_step_on_observations(learner, batch)
        )
        terms = [r.get() for r in results][0]
        after = learner_module_states(algo)
    finally:
        algo.stop()
    changed = _changed(states[ALLOCATOR], after[ALLOCATOR])
    assert not _changed(states["worker"], after["worker"])
    if not use_mutual_info:
        assert terms is None and not changed
        return
    assert terms.skipped is None and np.isfinite(float(terms.metrics["mi_value"]))
    assert any(k.startswith("net.") for k in changed)  # the shared encoder
    assert any(k.startswith("mi.") for k in changed)  # the MINE critic
    assert not any(k.startswith("net.ptr_") for k in changed)  # the evolved heads
    assert not any(k.startswith("value_") for k in changed)  # the critic of PPO


def test_evaluation_and_evolution_rollouts_play_the_same_greedy_episodes(ray_session):
    """`evaluate` and the population's fitness share one greedy actor; the team return both
    report is the hierarchy's `team_return`, the sum of the base env's mean team reward."""
    algo = _small_algo(use_mutual_info=True)
    try:
        states = learner_module_states(algo)
        rl_head = head_from_state(states[ALLOCATOR])
        assert _equal(head_from_state(algo.get_module(ALLOCATOR).get_state()), rl_head)
        env = make_eval_env(algo.config.env, dict(algo.config.env_config))
        actor = GreedyActor(algo, env)
        summed = []
        base_step = env.base.step

        def summing_step(actions):
            out = base_step(actions)
            summed[-1] += float(np.mean(list(out[1].values())))
            return out

        env.base.step = summing_step
        specs = algo.config.rl_module_spec.rl_module_specs
        evaluated, rolled_out = [], []
        for seed in (0, 1, 2):
            summed.append(0.0)
            evaluated.append(run_episode(env, actor, seed).team_return)
            rolled_out += evaluate_heads_locally(
                [rl_head], specs, states, algo.config.env, algo.config.env_config, [seed]
            )
    finally:
        algo.stop()
    assert evaluated == rolled_out == summed
    assert len(set(evaluated)) > 1  # the seeds give different episodes


# ---------------------------------------------------------------------------- integration
@pytest.mark.slow
def test_training_iteration_runs_a_generation_and_checkpoints_keep_it(ray_session, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    config = (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=SMALL)
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
        .env_runners(num_env_runners=2, num_envs_per_env_runner=1)
        .alma(embed_dim=16)
        .mutual_info(mi_embed_dim=16)
        .evolution(population_size=3, tournament_size=2, episodes_per_eval=1, eval_workers=2)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        initial = [dict(h) for h in attached_state(algo).population]
        result = algo.train()
        evo = result["evolution"]
        for key in ("best_fitness", "mean_fitness", "rl_fitness", "rl_rank", "ea_mi_value"):
            assert np.isfinite(evo[key])
        assert evo["generation"] == 1 and 1 <= evo["rl_rank"] <= 4
        state = attached_state(algo)
        learner_head = head_from_state(algo.get_module(ALLOCATOR).get_state())
        assert any(_equal(h, learner_head) for h in state.population)  # injected RL head
        assert not all(_equal(a, b) for a, b in zip(initial, state.population, strict=True))
        assert STATE_KEY not in algo.get_state(components="learner_group")
        assert STATE_KEY not in algo.get_state(not_components=[STATE_KEY, "learner_group"])
        path = algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        back = attached_state(restored)
        assert back.generation == state.generation and back.metrics == state.metrics
        assert all(_equal(a, b) for a, b in zip(state.population, back.population, strict=True))
        assert torch.equal(back.rng.get_state(), state.rng.get_state())
    finally:
        restored.stop()
