import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (2 CPUs, no dashboard). `address="local"` starts a
    fresh one even when another Ray cluster runs on the machine."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


SMALL_CITY = {"scenario": "2a_3b", "max_cycles": 40}
TINY_CITY = {"scenario": "2a_3b", "max_cycles": 30}
OLD_STACK = {"enable_rl_module_and_learner": False, "enable_env_runner_and_connector_v2": False}


def small_config(
    *,
    env: str = "save_the_city",
    env_config: dict | None = None,
    batch: int = 400,
    runners: int = 0,
    envs_per_runner: int = 2,
    width: int = 32,
    seed: int = 0,
    old_stack: bool = False,
    **settings,
):
    """A fast `AlmaPPOConfig` for tests: one epoch over `batch` env steps in minibatches of
    half of it, networks (and the MINE critic) `width` wide, seeded. `settings` go to
    `.alma()` or `.mutual_info()` by their key."""
    from rllib_alma_mi import AlmaPPOConfig
    from rllib_alma_mi.settings import ALMA_KEYS

    config = (
        AlmaPPOConfig()
        .environment(env, env_config=dict(SMALL_CITY if env_config is None else env_config))
        .training(train_batch_size_per_learner=batch, minibatch_size=batch // 2, num_epochs=1)
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs_per_runner)
        .alma(embed_dim=width, **{k: v for k, v in settings.items() if k in ALMA_KEYS})
        .mutual_info(
            mi_embed_dim=width, **{k: v for k, v in settings.items() if k not in ALMA_KEYS}
        )
        .debugging(seed=seed)
    )
    if old_stack:
        config.api_stack(**OLD_STACK)
    return config


def tiny_config(**kwargs):
    """`small_config` at half the batch, one env, 16 wide, on 30-step episodes."""
    kwargs = {"batch": 200, "envs_per_runner": 1, "width": 16, "env_config": TINY_CITY, **kwargs}
    return small_config(**kwargs)
