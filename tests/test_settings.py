"""Settings validation: every bad value names its key and what is allowed."""

import pytest

from rllib_alma_mi.settings import (
    HierarchySettings,
    ModelSettings,
    MutualInfoSettings,
    check_combination,
)


@pytest.mark.parametrize(
    "cls, key, value, message",
    [
        (HierarchySettings, "allocation", "greedy", "allocation='greedy' is not allowed"),
        (HierarchySettings, "alloc_interval", 0, "alloc_interval=0 is out of range"),
        (HierarchySettings, "alloc_interval", 2.5, "alloc_interval=2.5 must be an integer"),
        (HierarchySettings, "alloc_interval", 0, "or None"),
        (HierarchySettings, "worker_reward", "both", "worker_reward='both'"),
        (HierarchySettings, "subtask_mask", "yes", "subtask_mask='yes' must be a bool"),
        (HierarchySettings, "allocator_view", "local", "allocator_view='local'"),
        (ModelSettings, "embed_dim", 0, "embed_dim=0"),
        (ModelSettings, "embed_dim", 130, "divisible by n_heads"),
        (MutualInfoSettings, "mi_measure", "jsd", "mi_measure='jsd' is not allowed"),
        (MutualInfoSettings, "mi_weight", -1.0, "mi_weight=-1.0 is out of range"),
        (MutualInfoSettings, "mi_weight", float("nan"), "mi_weight=nan"),
        (MutualInfoSettings, "mi_scheme", 4, "mi_scheme=4"),
        (MutualInfoSettings, "mi_scheme", True, "mi_scheme=True"),
        (MutualInfoSettings, "mi_target", "state", "mi_target='state'"),
        (MutualInfoSettings, "use_mutual_info", 1, "use_mutual_info=1 must be a bool"),
    ],
)
def test_bad_value_names_key(cls, key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(**{key: value})


def test_allocation_at_reset_and_resolutions_only_is_the_default():
    assert HierarchySettings().alloc_interval is None
    assert HierarchySettings(alloc_interval=None) == HierarchySettings()
    assert HierarchySettings(alloc_interval=5).alloc_interval == 5


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ValueError, match="unknown setting") as error:
        MutualInfoSettings.from_dict({"mi_wieght": 0.1})
    assert "mi_wieght" in str(error.value)
    assert all(repr(key) in str(error.value) for key in MutualInfoSettings.keys())


def test_allocator_schemes_need_a_learned_allocator():
    with pytest.raises(ValueError, match="mi_scheme=3"):
        check_combination(HierarchySettings(allocation="heuristic"), MutualInfoSettings())
    check_combination(HierarchySettings(allocation="none"), MutualInfoSettings(mi_scheme=1))
    check_combination(
        HierarchySettings(allocation="random"), MutualInfoSettings(use_mutual_info=False)
    )


def test_defaults_are_the_plan():
    mi = MutualInfoSettings()
    assert (mi.use_mutual_info, mi.mi_measure, mi.mi_embed_dim, mi.mi_weight) == (
        True,
        "JSD",
        128,
        1e-3,
    )
    assert (mi.mi_scheme, mi.mi_target, mi.module_id) == (3, "task_mean", "allocator")
