"""Property-based tests of `.alma()` / `.mutual_info()`: random settings, including junk.

Each random configuration is either accepted (and then the algorithm validates, and for a few
examples builds and trains) or rejected with a `ValueError` that names a key. A rejected call
leaves the config as it was.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from rllib_alma_mi import AlmaPPOConfig
from rllib_alma_mi.settings import (
    ALLOCATIONS,
    ALLOCATOR_CREDITS,
    ALLOCATOR_VIEWS,
    ALMA_KEYS,
    MI_MEASURES,
    MI_SCHEMES,
    MI_TARGETS,
    WORKER_REWARDS,
    MutualInfoSettings,
)

pytestmark = pytest.mark.usefixtures("ray_session")

MI_KEYS = MutualInfoSettings.keys()
ENV_CONFIG = {"scenario": "2a_3b", "max_cycles": 30}

ALMA_VALID = {
    "allocation": st.sampled_from(ALLOCATIONS),
    "alloc_interval": st.none() | st.integers(1, 12),
    "worker_reward": st.sampled_from(WORKER_REWARDS),
    "subtask_mask": st.booleans(),
    "allocator_view": st.sampled_from(ALLOCATOR_VIEWS),
    "imitation_steps": st.sampled_from([0, 0, 1000]),
    "imitation_weight": st.sampled_from([0.0, 1.0]),
    "allocator_credit": st.sampled_from(ALLOCATOR_CREDITS),
    "embed_dim": st.sampled_from([4, 8, 16]),
    "n_heads": st.sampled_from([1, 2, 4]),
    "agent_attention": st.booleans(),
    "relative_scale": st.sampled_from([0.0, 1.0, 15.0]),
    "shared_worker_encoder": st.booleans(),
    "keep_bias": st.sampled_from([0.0, 2.0]),
}
MI_VALID = {
    "use_mutual_info": st.booleans(),
    "mi_measure": st.sampled_from(MI_MEASURES),
    "mi_embed_dim": st.sampled_from([1, 8, 16]),
    "mi_weight": st.sampled_from([0.0, 1e-4, 1e-3, 1e-2, 1.0]),
    "mi_scheme": st.sampled_from(MI_SCHEMES),
    "mi_target": st.sampled_from(MI_TARGETS),
    "mi_detach_target": st.booleans(),
    "mi_negatives": st.integers(1, 200),
}
assert set(ALMA_VALID) == set(ALMA_KEYS) and set(MI_VALID) == set(MI_KEYS)

# Values of the wrong type or out of range: what a YAML file or a typo can produce.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, -0.0, 10**400]),
    st.text(max_size=12),
    st.sampled_from(["", "learned ", "LEARNED", "jsd", "Task_Mean", "3", "1e-3", "True"]),
    st.binary(max_size=4),
    st.lists(st.integers(-2, 5), max_size=3),
    st.tuples(st.sampled_from(MI_MEASURES)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner),
        max_leaves=4,
    ),
    st.sampled_from([np.int64(3), np.float32(1e-3), np.bool_(True), np.array([1, 2]),
                     np.str_("KL"), object(), {"allocation": "learned"}, 3 + 0j]),
)


def _block(valid: dict, junk_ratio: float = 0.5):
    """Random kwargs for one block: known keys with valid or junk values, and unknown keys."""
    def value(key):
        return valid[key] | JUNK if junk_ratio else valid[key]

    known = st.fixed_dictionaries({}, optional={k: value(k) for k in valid})
    if not junk_ratio:
        return known
    unknown = st.dictionaries(st.text(min_size=1, max_size=10), JUNK, max_size=1)
    return st.tuples(known, unknown).map(lambda kv: {**kv[1], **kv[0]})


def _base() -> AlmaPPOConfig:
    return (
        AlmaPPOConfig()
        .environment("save_the_city", env_config=dict(ENV_CONFIG))
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .alma(embed_dim=16)
        .mutual_info(mi_embed_dim=16)
        .debugging(seed=0)
    )


def _snapshot(config) -> dict:
    return {k: getattr(config, k) for k in (*ALMA_KEYS, *MI_KEYS)}


def _same(a: dict, b: dict) -> bool:
    def eq(x, y):
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return type(x) is type(y) and x == y

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


def _assert_names_a_key(error: ValueError, kwargs: dict) -> None:
    """The message names one of the keys the call passed (the one at fault is among them)."""
    text = str(error)
    assert any(str(name) in text or repr(name) in text for name in kwargs), text


def _apply(config, alma: dict, mi: dict) -> bool:
    """Apply both blocks; False (after checking the error) when a block is rejected, True
    (after checking the config holds every value) when both are accepted."""
    for method, kwargs in ((config.alma, alma), (config.mutual_info, mi)):
        before = _snapshot(config)
        try:
            method(**kwargs)
        except ValueError as error:
            _assert_names_a_key(error, kwargs)
            assert _same(_snapshot(config), before), "a rejected call changed the config"
            return False
        after = _snapshot(config)
        assert _same({k: after[k] for k in kwargs}, kwargs), "an accepted value was not set"
    return True


def _validate(config, alma: dict, mi: dict) -> bool:
    """Validate a copy (what build_algo does first); False when a combination is rejected."""
    try:
        config.copy(copy_frozen=False).validate()
    except ValueError as error:
        _assert_names_a_key(error, {**alma, **mi})
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alma=_block(ALMA_VALID), mi=_block(MI_VALID))
@example(alma={"embed_dim": 10**400}, mi={})
@example(alma={}, mi={"mi_weight": 10**400})
@example(alma={}, mi={"mi_scheme": 3.0})
@example(alma={}, mi={"mi_measure": np.array(["KL", "JSD"])})
@example(alma={"embed_dim": 2**40, "n_heads": 1}, mi={})
@example(alma={}, mi={"mi_embed_dim": 10**9})
@example(alma={"allocation": "random"}, mi={"mi_scheme": 3})
@example(alma={"allocation": "none", "allocator_view": "team"}, mi={"use_mutual_info": False})
@example(alma={"allocation": "heuristic", "imitation_steps": 1000}, mi={"use_mutual_info": False})
def test_random_settings_are_accepted_or_rejected_with_a_value_error(alma, mi):
    config = _base()
    if _apply(config, alma, mi):
        _validate(config, alma, mi)


def test_rejected_call_leaves_the_config_as_it_was():
    config = _base().alma(alloc_interval=3).mutual_info(mi_weight=0.01)
    before = _snapshot(config)
    with pytest.raises(ValueError, match="n_heads"):
        config.alma(alloc_interval=7, n_heads=3)  # 16 is not divisible by 3
    with pytest.raises(ValueError, match="mi_measure"):
        config.mutual_info(mi_weight=0.5, mi_measure="kl")
    assert _same(_snapshot(config), before)


@pytest.mark.parametrize(
    "block, kwargs, pattern",
    [
        ("alma", {"embed_dim": 10**400}, r"embed_dim=.* is out of range.*<= 4096"),
        ("alma", {"embed_dim": 2**20, "n_heads": 1}, r"embed_dim=1048576 is out of range"),
        ("mutual_info", {"mi_weight": 10**400}, r"mi_weight=.* out of range.*finite"),
        ("mutual_info", {"mi_scheme": 3.0}, r"mi_scheme=3.0 is not allowed \(float, expected int"),
        ("mutual_info", {"mi_measure": np.array(["KL"])}, r"mi_measure=.*\(ndarray, expected str"),
        ("mutual_info", {"mi_embed_dim": None}, r"mi_embed_dim=None must be an integer"),
        ("alma", {"subtask_mask": "false"}, r"subtask_mask='false' must be a bool.*not str"),
    ],
)
def test_gaps_found_by_fuzzing_now_name_the_key(block, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        getattr(AlmaPPOConfig(), block)(**kwargs)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alma=_block(ALMA_VALID, junk_ratio=0), mi=_block(MI_VALID, junk_ratio=0))
@example(  # the smallest widths and negatives, with the centralized-state target
    alma={"embed_dim": 4, "n_heads": 4, "alloc_interval": 1},
    mi={"mi_embed_dim": 1, "mi_negatives": 1, "mi_target": "global_state", "mi_measure": "KL"},
)
def test_accepted_settings_build_and_train(alma, mi):
    config = _base()
    assume(_apply(config, alma, mi) and _validate(config, alma, mi))
    algo = config.build_algo()
    try:
        result = algo.train()
        for learner in result["learners"].values():
            if "total_loss" in learner:
                assert np.isfinite(learner["total_loss"])
    finally:
        algo.stop()
