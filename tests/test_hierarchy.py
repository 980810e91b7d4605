"""The hierarchy wrapper: allocation timing, masks, rewards, final observations."""

import numpy as np
import pytest
from custom_env import LineVisitEnv

from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.keys import ALLOCATOR, SUBTASK
from rllib_alma_mi.settings import HierarchySettings
from rllib_alma_mi.views import subtask_entities, subtask_obs_mask


def make(include_state=False, **settings):
    return HierarchicalEnv(
        LineVisitEnv(n_agents=2, n_targets=3, length=8),
        HierarchySettings(**settings),
        include_state=include_state,
    )


def first_live_task(obs):
    return int(np.flatnonzero(obs["task_mask"])[0])


def test_allocator_acts_first_then_workers_see_only_their_subtask():
    env = make()
    obs, _ = env.reset(seed=0)
    assert list(obs) == [ALLOCATOR]
    alloc_obs = obs[ALLOCATOR]
    assert env.observation_spaces[ALLOCATOR].contains(alloc_obs)
    obs, rewards, *_ = env.step({ALLOCATOR: np.array([0, 2])})
    assert sorted(obs) == ["agent_0", "agent_1"]
    n = 2
    # agent_0 sees itself and target 0 only; agent_1 itself and target 2
    assert np.flatnonzero(obs["agent_0"]["obs_mask"]).tolist() == [0, n + 0]
    assert np.flatnonzero(obs["agent_1"]["obs_mask"]).tolist() == [1, n + 2]
    assert env.allocation() == {"agent_0": 0, "agent_1": 2}


def test_co_assigned_agents_see_each_other():
    env = make()
    env.reset(seed=0)
    obs, *_ = env.step({ALLOCATOR: np.array([1, 1])})
    assert np.flatnonzero(obs["agent_0"]["obs_mask"]).tolist() == [0, 1, 3]


def test_entities_of_no_task_belong_to_every_subtask():
    # rows 0-1 agents, 2-3 tasks 0-1, 4-5 no task (shared), 5 out of sight
    entity2task = np.zeros((6, 2), dtype=np.int8)
    entity2task[2, 0] = entity2task[3, 1] = 1
    allocation = np.array([0, 1])
    assert np.flatnonzero(subtask_entities(0, allocation, [0, 1], entity2task)).tolist() == [
        0, 2, 4, 5]
    obs_mask = np.array([1, 1, 1, 1, 1, 0], dtype=np.int8)
    seen = subtask_obs_mask(obs_mask, 1, allocation, [0, 1], entity2task)
    assert np.flatnonzero(seen).tolist() == [1, 3, 4]
    # an agent row without a task stays another agent's: not shared
    assert subtask_entities(0, allocation, [0], entity2task)[1] == 0


def test_no_subtask_mask_keeps_full_view_and_marks_the_subtask():
    env = make(subtask_mask=False)
    env.reset(seed=0)
    obs, *_ = env.step({ALLOCATOR: np.array([0, 2])})
    assert obs["agent_0"]["obs_mask"].sum() == 5
    n = 2
    # each worker knows what it was given: itself and its target (no mate on its task)
    assert np.flatnonzero(obs["agent_0"][SUBTASK]).tolist() == [0, n + 0]
    assert np.flatnonzero(obs["agent_1"][SUBTASK]).tolist() == [1, n + 2]
    assert all(env.observation_spaces[a].contains(o) for a, o in obs.items())
    obs, *_ = env.step({"agent_0": 0, "agent_1": 0})
    assert np.flatnonzero(obs["agent_0"][SUBTASK]).tolist() == [0, n + 0]


@pytest.mark.parametrize("settings", [{}, {"allocation": "none"}])
def test_workers_with_the_subtask_mask_or_flat_get_no_subtask_key(settings):
    env = make(**settings)
    obs, _ = env.reset(seed=0)
    if ALLOCATOR in obs:
        obs, *_ = env.step({ALLOCATOR: np.array([0, 2])})
    assert all(SUBTASK not in o for o in obs.values())
    assert all(SUBTASK not in env.observation_spaces[a].spaces for a in obs)


def test_allocator_reacts_every_interval_and_gets_summed_team_reward():
    env = make(alloc_interval=3)
    env.reset(seed=1)
    env.step({ALLOCATOR: np.array([0, 1])})
    for t in range(1, 4):
        obs, rewards, terms, truncs, _ = env.step({"agent_0": 0, "agent_1": 0})
        if t < 3:
            assert ALLOCATOR not in obs
    assert list(obs) == [ALLOCATOR]
    assert rewards[ALLOCATOR] == pytest.approx(0.0)  # nobody moved, nothing visited


def test_by_default_the_allocator_acts_only_at_reset_and_when_a_task_resolves():
    env = make()  # alloc_interval=None
    obs, _ = env.reset(seed=1)
    assert list(obs) == [ALLOCATOR]
    env.step({ALLOCATOR: np.array([0, 1])})
    for _ in range(12):  # past any interval: nobody moves, so no task resolves
        obs, *_ = env.step({"agent_0": 0, "agent_1": 0})
        assert ALLOCATOR not in obs
    base = env.base
    target = base._targets[np.argmin(np.abs(base._targets - base._pos[0]))]
    for _ in range(base.length):  # agent_0 walks to its nearest target
        assert not base._visited.any()
        obs, *_ = env.step({"agent_0": 2 if target > base._pos[0] else 1, "agent_1": 0})
        if ALLOCATOR in obs:
            break
    assert list(obs) == [ALLOCATOR] and base._visited.sum() == 1


def test_masked_allocation_raises():
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="only tasks"):
        env.step({ALLOCATOR: np.array([0, 7])})
    with pytest.raises(ValueError, match="shape"):
        env.step({ALLOCATOR: np.array([0, 1, 2])})


def test_missing_worker_action_raises():
    env = make()
    env.reset(seed=0)
    env.step({ALLOCATOR: np.array([0, 1])})
    with pytest.raises(ValueError, match="missing actions"):
        env.step({"agent_0": 0})


def run_episode(env, seed=0, policy_rng=None):
    rng = policy_rng or np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    total = {}
    while True:
        actions = {}
        for agent, o in obs.items():
            if agent == ALLOCATOR:
                live = np.flatnonzero(o["task_mask"])
                actions[agent] = rng.choice(live, size=len(o["agent_mask"]))
            else:
                actions[agent] = int(rng.choice(np.flatnonzero(o["action_mask"])))
        obs, rewards, terms, truncs, infos = env.step(actions)
        for a, r in rewards.items():
            total[a] = total.get(a, 0.0) + r
        if terms["__all__"] or truncs["__all__"]:
            return obs, total, infos, terms, truncs


def test_final_step_gives_every_agent_that_acted_a_last_observation():
    env = make()
    obs, total, infos, terms, truncs = run_episode(env)
    assert set(obs) == {ALLOCATOR, "agent_0", "agent_1"}
    assert "base_env_steps" in infos[ALLOCATOR]


def test_allocator_return_equals_team_return():
    env = make(worker_reward="team")
    obs, total, *_ = run_episode(env, seed=3)
    assert total[ALLOCATOR] == pytest.approx(total["agent_0"])


def test_random_and_flat_modes_have_no_allocator_agent():
    for allocation in ("random", "none"):
        env = make(allocation=allocation)
        assert ALLOCATOR not in env.possible_agents
        obs, *_ = run_episode(env)
        assert ALLOCATOR not in obs


def test_heuristic_needs_the_env_rule():
    with pytest.raises(ValueError, match="heuristic_allocation"):
        make(allocation="heuristic")


def test_team_view_hides_what_no_agent_sees():
    env = make(allocator_view="team")
    obs, _ = env.reset(seed=0)
    o = obs[ALLOCATOR]
    assert np.array_equal(o["obs_mask"], o["agent_obs_mask"].max(axis=0))
    hidden = o["obs_mask"] == 0
    assert not o["entities"][hidden].any()


def test_state_only_when_asked():
    env = make(include_state=True)
    obs, _ = env.reset(seed=0)
    assert "state" in obs[ALLOCATOR]
    obs, *_ = env.step({ALLOCATOR: np.array([0, 1])})
    assert "state" in obs["agent_0"]
    assert "state" not in make().reset(seed=0)[0][ALLOCATOR]


def test_imitation_needs_the_env_rule():
    with pytest.raises(ValueError, match="imitation_steps=100 needs the environment"):
        make(imitation_steps=100)


def test_imitation_only_with_a_learned_allocator():
    with pytest.raises(ValueError, match="imitation_steps=100 .* allocation='heuristic'"):
        HierarchySettings(allocation="heuristic", imitation_steps=100)


def test_imitation_shows_the_allocator_the_heuristic_allocation():
    from envs.save_the_city import parallel_env

    env = HierarchicalEnv(
        parallel_env(scenario="3a_4b", max_cycles=20), HierarchySettings(imitation_steps=10)
    )
    obs, _ = env.reset(seed=3)
    assert env.observation_spaces[ALLOCATOR].contains(obs[ALLOCATOR])
    heuristic = obs[ALLOCATOR]["heuristic_allocation"]
    np.testing.assert_array_equal(heuristic, env.base.heuristic_allocation())
    assert obs[ALLOCATOR]["task_mask"][heuristic].all()
    plain = HierarchicalEnv(parallel_env(scenario="3a_4b", max_cycles=20), HierarchySettings())
    assert "heuristic_allocation" not in plain.reset(seed=3)[0][ALLOCATOR]


class _ReusedBuffers:
    """SaveTheCity writing every observation and the state into the same arrays each step."""

    def __init__(self, env):
        self.env, self._obs, self._state = env, {}, {}

    def __getattr__(self, name):
        return getattr(self.env, name)

    def _into(self, buffers, fresh):
        for key, value in fresh.items():
            if isinstance(value, dict):
                self._into(buffers.setdefault(key, {}), value)
            elif key in buffers and buffers[key].shape == np.shape(value):
                buffers[key][...] = value
            else:
                buffers[key] = np.array(value)
        return {k: buffers[k] for k in fresh}

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        return self._into(self._obs, obs), infos

    def step(self, actions):
        obs, *rest = self.env.step(actions)
        return (self._into(self._obs, obs), *rest)

    def state(self):
        return self._into(self._state, self.env.state())


def test_observations_stay_as_returned_when_the_env_reuses_its_buffers():
    """RLlib keeps the returned observations in its episodes (and AlmaEnvRunner does not have
    them deep-copied), so the hierarchy's must not change when the env writes its next step."""
    from envs.save_the_city import parallel_env

    settings = HierarchySettings(allocation="heuristic")
    env = HierarchicalEnv(_ReusedBuffers(parallel_env(scenario="3a_4b")), settings,
                          include_state=True)
    obs, _ = env.reset(seed=0)
    snapshots = []
    for _ in range(5):
        snapshots.append((obs, {a: {k: np.array(v) for k, v in o.items() if k != "state"}
                                for a, o in obs.items()}))
        obs, *_ = env.step({a: 0 for a in obs})  # stay
    for returned, copied in snapshots:
        for agent, values in copied.items():
            for key, value in values.items():
                np.testing.assert_array_equal(returned[agent][key], value)
    assert not np.array_equal(snapshots[0][1]["agent_0"]["entities"], obs["agent_0"]["entities"])


def test_allocator_sees_its_current_allocation():
    env = make(alloc_interval=2)
    obs, _ = env.reset(seed=0)
    assert obs[ALLOCATOR]["current_allocation"].tolist() == [-1, -1]
    env.step({ALLOCATOR: np.array([0, 2])})
    obs, *_ = env.step({"agent_0": 0, "agent_1": 0})
    while ALLOCATOR not in obs:
        obs, *_ = env.step({"agent_0": 0, "agent_1": 0})
    assert obs[ALLOCATOR]["current_allocation"].tolist() == [0, 2]
    assert env.observation_spaces[ALLOCATOR].contains(obs[ALLOCATOR])


@pytest.mark.parametrize("name, env_config", [
    ("save_the_city", {}),
    ("mpe_spread", {}),
    ("lbf", {"env_id": "Foraging-2s-8x8-2p-2f-coop-v3"}),
])
def test_built_in_tasks_but_rware_have_no_entity_outside_every_task(name, env_config):
    """Shared entities (no task, see `views.subtask_entities`) change only RWARE's workers:
    every live non-agent entity of the other built-in envs belongs to a task at every step."""
    from rllib_alma_mi.registry import make_env

    env = make_env(name, env_config)
    base, n_slots = env.base, env.n_slots
    obs, _ = base.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        state = base.state()
        shared = state["entity_mask"].astype(bool) & ~state["entity2task"].any(axis=1)
        assert not shared[n_slots:].any()
        if not base.agents:
            obs, _ = base.reset(seed=int(rng.integers(1 << 30)))
            continue
        actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in base.agents}
        obs, *_ = base.step(actions)
