"""Fuzzing the entity-task contract checker with broken variants of a good environment.

Like ``pettingzoo.test``, this module is for environment authors and test suites. A
*corruption* breaks one thing (an observation field, a reward or an info entry of one agent)
in one ``reset()``/``step()`` output; ``BrokenEnv`` wraps a good ``ParallelEnv`` and applies a
corruption once; ``expect_reported`` runs ``envs.contract.check_env`` on it and checks that a
``ContractError`` names the corrupted key; ``fuzz_contract`` does this for every corruption
over randomly drawn variants::

    from envs.testing import fuzz_contract
    fuzz_contract(lambda: MyEnv(max_cycles=10), n_cases=5)

Randomness comes from a ``numpy.random.Generator`` only, so property-based tests can drive
it by drawing the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from envs.contract import OBS_KEYS, ContractError, check_env

__all__ = [
    "ALL_CORRUPTIONS",
    "OBS_CORRUPTIONS",
    "STEP_CORRUPTIONS",
    "BrokenEnv",
    "Corruption",
    "expect_reported",
    "fuzz_contract",
]

# (observations, rewards or None for a reset output, infos, agent, rng) -> the key the error
# must name. It edits the dicts in place; ``observations[agent]`` is already a fresh dict.
Corruption = Callable[
    [dict[str, Any], dict[str, Any] | None, dict[str, Any], str, np.random.Generator], str
]

BINARY_KEYS = ("entity_mask", "obs_mask", "entity2task", "task_mask", "action_mask")
EXPECTED_DTYPE = {key: np.int8 for key in BINARY_KEYS} | {
    "entities": np.float32,
    "agent_index": np.int64,
}
OTHER_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8, bool)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of ``options`` (any objects, unlike ``rng.choice``, which makes an array)."""
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------ corruptions
def non_finite_feature(obs, rewards, infos, agent, rng) -> str:
    """A NaN or infinite value in one cell of ``entities``."""
    ents = obs[agent]["entities"].copy()
    row = int(rng.integers(ents.shape[0]))
    col = int(rng.integers(ents.shape[1]))
    ents[row, col] = _pick(rng, [np.nan, np.inf, -np.inf])
    obs[agent]["entities"] = ents
    return "entities"


def wrong_dtype(obs, rewards, infos, agent, rng) -> str:
    """One observation field cast to another dtype."""
    key = _pick(rng, OBS_KEYS)
    dtype = _pick(rng, [d for d in OTHER_DTYPES if d != EXPECTED_DTYPE[key]])
    obs[agent][key] = np.asarray(obs[agent][key]).astype(dtype)
    return key


def wrong_shape(obs, rewards, infos, agent, rng) -> str:
    """One observation field with a row dropped or added, flattened or batched."""
    key = _pick(rng, OBS_KEYS)
    value = np.asarray(obs[agent][key])
    how = _pick(rng, ["drop", "add", "flatten", "batch"])
    if value.ndim == 0 or how == "batch":
        value = value[None]
    elif how == "drop":
        value = value[:-1]
    elif how == "add":
        value = np.concatenate([value, value[:1]])
    else:
        value = value.reshape(-1) if value.ndim > 1 else value.reshape(1, -1)
    obs[agent][key] = value
    return key


def not_an_array(obs, rewards, infos, agent, rng) -> str:
    """One observation field replaced by a list, None or a string."""
    key = _pick(rng, OBS_KEYS)
    value = np.asarray(obs[agent][key])
    obs[agent][key] = _pick(rng, [value.tolist(), None, str(value.tolist())])
    return key


def missing_key(obs, rewards, infos, agent, rng) -> str:
    """One observation field removed."""
    key = _pick(rng, OBS_KEYS)
    del obs[agent][key]
    return key


def extra_key(obs, rewards, infos, agent, rng) -> str:
    """An observation field the contract does not have."""
    obs[agent]["extra_feature"] = np.zeros(3, dtype=np.float32)
    return "extra_feature"


def non_binary_mask(obs, rewards, infos, agent, rng) -> str:
    """A value other than 0/1 in one cell of a mask."""
    key = _pick(rng, BINARY_KEYS)
    value = obs[agent][key].copy()
    index = tuple(int(rng.integers(n)) for n in value.shape)
    value[index] = _pick(rng, [2, -1, 7])
    obs[agent][key] = value
    return key


def index_out_of_range(obs, rewards, infos, agent, rng) -> str:
    """``agent_index`` outside [0, E)."""
    n_entities = obs[agent]["entities"].shape[0]
    bad = _pick(rng, [n_entities, n_entities + 3, -1, -n_entities - 1, 10**9])
    obs[agent]["agent_index"] = np.int64(bad)
    return "agent_index"


def no_allowed_action(obs, rewards, infos, agent, rng) -> str:
    """An all-zero ``action_mask``."""
    obs[agent]["action_mask"] = np.zeros_like(obs[agent]["action_mask"])
    return "action_mask"


def drop_observation(obs, rewards, infos, agent, rng) -> str:
    """A live agent without an observation."""
    del obs[agent]
    return "observations"


def observation_not_a_dict(obs, rewards, infos, agent, rng) -> str:
    """An observation that is None, a list or an array."""
    obs[agent] = _pick(rng, [None, [1, 2], np.zeros(3, dtype=np.float32)])
    return "observation"


def bad_task_rewards(obs, rewards, infos, agent, rng) -> str:
    """``infos[agent]["task_rewards"]`` missing, non-finite, of the wrong shape or dtype."""
    info = dict(infos.get(agent) or {})
    value = np.asarray(info.get("task_rewards", np.zeros(1, dtype=np.float32)))
    how = _pick(rng, ["nan", "inf", "shape", "int", "list", "missing", "complex"])
    if how == "missing":
        info.pop("task_rewards", None)
    elif how == "nan":
        info["task_rewards"] = np.full_like(value, np.nan)
    elif how == "inf":
        info["task_rewards"] = np.concatenate([value[:-1], [np.inf]]).astype(value.dtype)
    elif how == "shape":
        info["task_rewards"] = np.concatenate([value, value])
    elif how == "int":
        info["task_rewards"] = value.astype(np.int64)
    elif how == "complex":
        info["task_rewards"] = value.astype(np.complex64)
    else:
        info["task_rewards"] = value.tolist()
    infos[agent] = info
    return "task_rewards"


def info_not_a_dict(obs, rewards, infos, agent, rng) -> str:
    """The agent's info missing, or None, a string or an int."""
    if rng.integers(2):
        infos.pop(agent, None)
    else:
        infos[agent] = _pick(rng, [None, "info", 3])
    return "task_rewards"


def bad_reward(obs, rewards, infos, agent, rng) -> str:
    """A non-finite, non-real or non-scalar reward."""
    rewards[agent] = _pick(rng, [
        np.nan, np.inf, -np.inf, np.float32(np.nan), None, "1.0", [1.0], True,
        np.complex128(1.0), np.array([1.0]),
    ])
    return "rewards"


def missing_reward(obs, rewards, infos, agent, rng) -> str:
    """A live agent without a reward."""
    del rewards[agent]
    return "rewards"


OBS_CORRUPTIONS: tuple[Corruption, ...] = (
    non_finite_feature, wrong_dtype, wrong_shape, not_an_array, missing_key, extra_key,
    non_binary_mask, index_out_of_range, no_allowed_action, drop_observation,
    observation_not_a_dict, bad_task_rewards, info_not_a_dict,
)
STEP_CORRUPTIONS: tuple[Corruption, ...] = (bad_reward, missing_reward)  # step() outputs only
ALL_CORRUPTIONS = OBS_CORRUPTIONS + STEP_CORRUPTIONS


# ------------------------------------------------------------------ the broken env
class BrokenEnv:
    """A ``ParallelEnv`` wrapper whose output number ``at_call`` (0 = the first ``reset()``)
    is corrupted once.

    The corruption fires on the first output at or after ``at_call`` that has live agents
    (and, for a ``STEP_CORRUPTIONS`` member, comes from ``step()``), on live agent
    ``agent_pick % n_live``. ``expected_key`` is None until then, afterwards the key the
    checker's error must name. Every other attribute is the wrapped env's.
    """

    def __init__(
        self,
        env: Any,
        corruption: Corruption,
        at_call: int,
        agent_pick: int,
        rng: np.random.Generator,
    ) -> None:
        self._env, self._corruption, self._rng = env, corruption, rng
        self._at_call, self._agent_pick = at_call, agent_pick
        self._calls = 0
        self.expected_key: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple:
        obs, infos = self._env.reset(seed=seed, options=options)
        self._maybe_corrupt(obs, None, infos)
        return obs, infos

    def step(self, actions: Mapping[str, Any]) -> tuple:
        obs, rewards, terms, truncs, infos = self._env.step(actions)
        self._maybe_corrupt(obs, rewards, infos)
        return obs, rewards, terms, truncs, infos

    def _maybe_corrupt(self, obs: dict, rewards: dict | None, infos: dict) -> None:
        self._calls += 1
        live = [a for a in self._env.agents if a in obs]
        fits = rewards is not None or self._corruption not in STEP_CORRUPTIONS
        # The last output of an episode may have no live agent; a reward needs a step output.
        if self.expected_key is not None or self._calls <= self._at_call or not live or not fits:
            return
        agent = live[self._agent_pick % len(live)]
        obs[agent] = dict(obs[agent])
        self.expected_key = self._corruption(obs, rewards, infos, agent, self._rng)


def expect_reported(env: BrokenEnv, n_steps: int, seed: int = 0) -> str:
    """Run ``check_env(env, n_steps, seed)`` and return its ``ContractError`` message.

    Raises AssertionError if the check passes, if the corruption never fired (raise
    ``n_steps`` or lower ``at_call``) or if the message does not name ``env.expected_key``.
    """
    try:
        check_env(env, n_steps=n_steps, seed=seed)
    except ContractError as error:
        message = str(error)
    else:
        message = None
    if env.expected_key is None:
        raise AssertionError(f"the corruption never fired in {n_steps} steps: raise n_steps "
                             "or lower at_call")
    if message is None:
        raise AssertionError(f"check_env accepted an env whose {env.expected_key!r} was "
                             "corrupted")
    if env.expected_key not in message:
        raise AssertionError(f"check_env's error does not name {env.expected_key!r}: {message}")
    return message


def fuzz_contract(
    env_factory: Callable[[], Any],
    n_cases: int = 10,
    max_call: int = 8,
    n_steps: int = 20,
    seed: int = 0,
    corruptions: Sequence[Corruption] = ALL_CORRUPTIONS,
) -> int:
    """Check that ``check_env`` reports every corruption of ``env_factory()``'s outputs.

    First checks a fresh, unbroken env (its ``ContractError`` propagates), then for each
    corruption builds ``n_cases`` ``BrokenEnv`` variants (each on a fresh env) at a random
    output ``0..max_call`` and agent, and calls ``expect_reported``. Episodes should be short
    enough that every corruption fires within ``n_steps`` (AssertionError otherwise).
    Returns the number of variants checked.
    """
    for name, value, low in (("n_cases", n_cases, 1), ("max_call", max_call, 0),
                             ("n_steps", n_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"fuzz_contract: {name}={value!r} must be an int >= {low}")
    if max_call >= n_steps:
        raise ValueError(f"fuzz_contract: max_call={max_call} must be below n_steps={n_steps} "
                         "so that the corruption can fire")
    check_env(env_factory(), n_steps=n_steps, seed=seed)
    rng = np.random.default_rng(seed)
    checked = 0
    for corruption in corruptions:
        for _ in range(n_cases):
            at_call = int(rng.integers(max_call + 1))
            agent_pick = int(rng.integers(1 << 16))
            broken = BrokenEnv(env_factory(), corruption, at_call, agent_pick, rng)
            expect_reported(broken, n_steps=n_steps, seed=seed)
            checked += 1
    return checked
