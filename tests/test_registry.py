"""`register_env`: RLlib's `creator(env_config)` and PettingZoo's `creator(**kwargs)` both work."""

import numpy as np
import pytest
from custom_env import LineVisitEnv
from custom_env import parallel_env as line_visit
from ray.rllib.env.env_context import EnvContext
from ray.tune.registry import ENV_CREATOR, _global_registry

from envs.contract import check_env
from rllib_alma_mi import AlmaPPOConfig, register_env
from rllib_alma_mi.keys import ALLOCATOR
from rllib_alma_mi.registry import (
    CONFIG_DICT,
    HIERARCHY_KEY,
    KEYWORDS,
    base_env_creator,
    creator_convention,
    make_env,
)

SETTINGS = {"n_agents": 2, "n_targets": 3, "length": 8}


def rllib_style(cfg):
    """RLlib's convention; refuses anything but the user's settings as an EnvContext."""
    if not isinstance(cfg, EnvContext) or HIERARCHY_KEY in cfg:
        raise TypeError(f"expected the user's settings as an EnvContext, got {cfg!r}")
    return LineVisitEnv(**cfg)


def one_step_through_hierarchy(env):
    """Reset, allocate every agent to task 0, then step every worker once; the new obs."""
    obs, _ = env.reset(seed=0)
    assert list(obs) == [ALLOCATOR]
    obs, *_ = env.step({ALLOCATOR: np.zeros(len(env.workers), dtype=np.int64)})
    assert sorted(obs) == sorted(env.workers)
    obs, rewards, terms, truncs, _ = env.step({agent: 0 for agent in obs})
    for agent, agent_obs in obs.items():
        assert env.observation_spaces[agent].contains(agent_obs)
    return obs


@pytest.mark.parametrize(
    ("creator", "convention"),
    [
        (lambda cfg: rllib_style(cfg), CONFIG_DICT),
        (rllib_style, CONFIG_DICT),
        (line_visit, KEYWORDS),  # def parallel_env(**kwargs)
        (LineVisitEnv, KEYWORDS),  # the env class itself
        (lambda n_agents=2, **kw: LineVisitEnv(n_agents=n_agents, **kw), KEYWORDS),
    ],
    ids=["rllib-lambda", "rllib-function", "pettingzoo-factory", "env-class", "keywords"],
)
def test_both_conventions_build_check_and_step(creator, convention):
    register_env("registry_test_env", creator)
    assert creator_convention("registry_test_env", creator) == convention
    base = base_env_creator("registry_test_env")(**SETTINGS)
    assert base.n_agents == 2 and base.length == 8  # the settings reached the env
    check_env(base)
    env = make_env("registry_test_env", {**SETTINGS, HIERARCHY_KEY: {"alloc_interval": 2}})
    one_step_through_hierarchy(env)
    # What RLlib's env runners call: the Tune registry's creator with an EnvContext.
    rllib_creator = _global_registry.get(ENV_CREATOR, "registry_test_env")
    context = EnvContext({**SETTINGS, HIERARCHY_KEY: {}}, worker_index=3, vector_index=1)
    env = rllib_creator(context)
    assert env.workers == ["agent_0", "agent_1"]
    one_step_through_hierarchy(env)


def test_config_dict_creator_gets_rllib_indices_without_the_hierarchy_block():
    def creator(cfg):
        env = LineVisitEnv(**cfg)
        env.context = cfg
        return env

    register_env("registry_context_env", creator)
    rllib_creator = _global_registry.get(ENV_CREATOR, "registry_context_env")
    env = rllib_creator(
        EnvContext({**SETTINGS, HIERARCHY_KEY: {}}, worker_index=2, vector_index=5)
    )
    cfg = env.base.context
    assert isinstance(cfg, EnvContext)
    assert dict(cfg) == SETTINGS
    assert (cfg.worker_index, cfg.vector_index) == (2, 5)


@pytest.mark.parametrize(
    "creator",
    [lambda *args, **kwargs: LineVisitEnv(**kwargs), lambda *args: LineVisitEnv()],
    ids=["args-kwargs", "args"],
)
def test_undecidable_creator_is_refused_at_registration(creator):
    with pytest.raises(ValueError, match=r"lambda cfg: creator\(cfg\)") as info:
        register_env("registry_ambiguous_env", creator)
    assert "*args" in str(info.value) and "\n" not in str(info.value)


def test_unreadable_signature_is_refused_at_registration():
    with pytest.raises(ValueError, match="signature cannot be read"):
        register_env("registry_builtin_env", dict)


@pytest.mark.usefixtures("ray_session")
def test_rllib_style_creator_trains_with_a_remote_env_runner():
    """A full build and one iteration: the env runner (another process) builds the env from
    RLlib's EnvContext through the RLlib-style creator (RLlib's documented spelling)."""
    from envs.save_the_city import SaveTheCityEnv

    def creator(cfg):  # local, so Ray ships it by value to the env runner
        if not isinstance(cfg, EnvContext) or HIERARCHY_KEY in cfg:
            raise TypeError(f"expected the settings as an EnvContext, got {cfg!r}")
        return SaveTheCityEnv(**cfg)

    register_env("registry_remote_env", creator)
    config = (
        AlmaPPOConfig()
        .environment("registry_remote_env", env_config={"scenario": "2a_3b", "max_cycles": 30})
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
        .env_runners(num_env_runners=1, num_envs_per_env_runner=1)
        .alma(embed_dim=16)
        .mutual_info(mi_embed_dim=16)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] > 0
        assert "mi_value" in result["learners"][ALLOCATOR]
    finally:
        algo.stop()
