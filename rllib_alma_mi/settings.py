"""Typed, validated settings of the hierarchy and the mutual-information term.

Pure Python (no Ray import): the environment wrapper, the RLlib config and the YAML loader all
validate through these dataclasses, so a bad value fails the same way everywhere: a
`ValueError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from rllib_alma_mi.keys import ALLOCATOR, WORKER

ALLOCATIONS = ("learned", "heuristic", "random", "none")
WORKER_REWARDS = ("task", "team")
ALLOCATOR_VIEWS = ("global", "team")
ALLOCATOR_CREDITS = ("team", "task")
MI_MEASURES = ("JSD", "GAN", "KL")
MI_SCHEMES = (1, 2, 3)
MI_TARGETS = ("task_mean", "entity_mean", "global_state")


# Widths above this would exhaust memory at build time rather than train.
MAX_WIDTH = 4096


def _type_name(value: Any) -> str:
    return type(value).__name__


def _show(value: Any) -> str:
    """A short repr for error messages (some values have none, or a huge one)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{_type_name(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(key: str, value: Any, allowed: tuple) -> None:
    kind = type(allowed[0])
    # The type first: `in` on arbitrary objects (arrays, floats for ints) is not a safe test.
    if isinstance(value, bool) != isinstance(allowed[0], bool) or not isinstance(value, kind):
        raise ValueError(
            f"{key}={_show(value)} is not allowed ({_type_name(value)}, expected {kind.__name__}); "
            f"choose one of {list(allowed)}"
        )
    if value not in allowed:
        raise ValueError(f"{key}={_show(value)} is not allowed; choose one of {list(allowed)}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{key}={_show(value)} must be a bool (True or False), not {_type_name(value)}"
        )


def check_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{key}={_show(value)} must be an integer >= {minimum}, not {_type_name(value)}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{key}={_show(value)} is out of range; it must be >= {minimum}{upper}")


def check_float(
    key: str,
    value: Any,
    minimum: float,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
) -> None:
    """A finite number in [minimum, maximum] (in (minimum, maximum] with `exclusive_minimum`)."""
    lower = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{key}={_show(value)} must be a number {lower}, not {_type_name(value)}"
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    below = value <= minimum if exclusive_minimum else value < minimum
    if not finite or below or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(
            f"{key}={_show(value)} is out of range; it must be finite, {lower}{upper}"
        )


class _Settings:
    """Shared helpers: build from a dict with unknown keys rejected, and dump to a dict."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - set(cls.keys()), key=str)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; allowed keys are {list(cls.keys())}")
        return cls(**values)

    @classmethod
    def pick(cls, values: dict[str, Any]):
        """Built from this class's keys in `values` (others are ignored; missing ones default)."""
        return cls(**{k: values[k] for k in cls.keys() if k in values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HierarchySettings(_Settings):
    """How the allocator drives the low-level workers (see `HierarchicalEnv`).

    allocation: "learned" (the `allocator` module), "heuristic" (the environment's rule),
        "random" (uniform over live tasks) or "none" (flat: no allocator, no subtask mask).
    alloc_interval: when the allocator acts besides reset and the resolution of a task.
        None (default): only then, so every agent keeps its task until some task resolves;
        k: also every k env steps. From scratch the learned allocator does much better with
        None (results/scratch_interval, results/learning_1m); environments whose tasks never
        resolve (MPE simple_spread, RWARE's requests) need an int, or they get one allocation
        per episode.
    worker_reward: "task" (the assigned task's reward, as ALMA) or "team".
    subtask_mask: restrict each worker's view to its subtask (ALMA; entities that belong to no
        task stay visible to all, see `views.subtask_entities`); False = ALMA's "no mask":
        the worker keeps its whole view and its observation marks its subtask's entities.
    allocator_view: "global" (the centralized state) or "team" (the union of the agents' sight).
    imitation_steps: RLlib env steps (its `num_env_steps_sampled_lifetime`, which also counts
        the allocation steps) over which the learned allocator also imitates the environment's
        heuristic allocation, with a weight decaying linearly from `imitation_weight` to 0.
        0 (default) turns it off. The hierarchy then adds the heuristic's allocation to the
        allocator's observation under `heuristic_allocation` (training only; acting never
        reads it). Needs allocation="learned" and an environment with `heuristic_allocation()`.
    imitation_weight: the imitation loss's initial weight (its loss is the negative joint
        log-prob of the heuristic's allocation, per decision).
    allocator_credit: how PPO credits the allocator's N pointer choices. "team" (default): every
        choice is weighted by the one team advantage of the decision. "task": the hierarchy also
        hands the allocator the reward of each task since its last decision
        (`infos["allocator"]["task_returns"]`), the allocator learns a value per task, and each
        agent's choice is weighted by the per-task GAE advantage of the task it chose, in a PPO
        surrogate clipped per choice. Needs allocation="learned" (new API stack only).
    """

    allocation: str = "learned"
    alloc_interval: int | None = None
    worker_reward: str = "task"
    subtask_mask: bool = True
    allocator_view: str = "global"
    imitation_steps: int = 0
    imitation_weight: float = 1.0
    allocator_credit: str = "team"

    def __post_init__(self) -> None:
        check_choice("allocation", self.allocation, ALLOCATIONS)
        if self.alloc_interval is not None:
            try:
                check_int("alloc_interval", self.alloc_interval, 1)
            except ValueError as exc:
                raise ValueError(f"{exc}; or None (allocate only at reset and when a task "
                                 "resolves)") from None
        check_choice("worker_reward", self.worker_reward, WORKER_REWARDS)
        check_bool("subtask_mask", self.subtask_mask)
        check_choice("allocator_view", self.allocator_view, ALLOCATOR_VIEWS)
        check_int("imitation_steps", self.imitation_steps, 0)
        check_float("imitation_weight", self.imitation_weight, 0.0)
        if self.imitation_steps and self.allocation != "learned":
            raise ValueError(
                f"imitation_steps={self.imitation_steps} trains the learned allocator to imitate "
                f"the heuristic, but allocation={self.allocation!r} has no learned allocator; "
                "use allocation='learned' or imitation_steps=0"
            )
        check_choice("allocator_credit", self.allocator_credit, ALLOCATOR_CREDITS)
        if self.allocator_credit == "task" and self.allocation != "learned":
            raise ValueError(
                f"allocator_credit='task' credits the learned allocator's choices per task, but "
                f"allocation={self.allocation!r} has no learned allocator; use "
                "allocation='learned' or allocator_credit='team'"
            )

    @property
    def imitation(self) -> bool:
        """Whether the allocator observes (and imitates) the heuristic's allocation."""
        return self.imitation_steps > 0 and self.imitation_weight > 0


@dataclass(frozen=True)
class ModelSettings(_Settings):
    """Sizes of the entity-attention networks, and the scale of their relative features."""

    embed_dim: int = 64
    n_heads: int = 4
    agent_attention: bool = True
    relative_scale: float = 15.0  # weight of entity-minus-agent features (WorkerNet, AllocatorNet)
    # True: the worker's value head reads the policy's encoder (one encoder to train instead of
    # two: a third off the learner's time, but it learned half as much by 100k steps in
    # results/shared_worker_encoder); False: a second encoder of its own.
    shared_worker_encoder: bool = False
    # Initial value of a learned bias that the allocator's pointer adds to each agent's current
    # task (`current_allocation`), so that keeping an assignment is the easy default for a
    # young allocator; 0 = no such bias (and no parameter).
    keep_bias: float = 0.0

    def __post_init__(self) -> None:
        check_int("embed_dim", self.embed_dim, 1, MAX_WIDTH)
        check_int("n_heads", self.n_heads, 1, MAX_WIDTH)
        if self.embed_dim % self.n_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by n_heads={self.n_heads}; "
                "pick an embed_dim that is a multiple of n_heads"
            )
        check_bool("agent_attention", self.agent_attention)
        check_float("relative_scale", self.relative_scale, 0.0)
        check_bool("shared_worker_encoder", self.shared_worker_encoder)
        check_float("keep_bias", self.keep_bias, 0.0, 100.0)


@dataclass(frozen=True)
class MutualInfoSettings(_Settings):
    """The MINE auxiliary term (RACE): `total = ppo_loss + mi_weight * mi_loss`.

    mi_scheme: 1 = worker hidden state vs the global summary (worker module);
        2 = task embeddings vs the global summary (allocator);
        3 = agent embeddings vs the global summary (allocator, default).
    mi_target: the global summary: "task_mean", "entity_mean" or "global_state"
        (an encoder of the centralized state).
    """

    use_mutual_info: bool = True
    mi_measure: str = "JSD"
    mi_embed_dim: int = 128
    mi_weight: float = 1e-3
    mi_scheme: int = 3
    mi_target: str = "task_mean"
    mi_detach_target: bool = False
    mi_negatives: int = 128

    def __post_init__(self) -> None:
        check_bool("use_mutual_info", self.use_mutual_info)
        check_choice("mi_measure", self.mi_measure, MI_MEASURES)
        check_int("mi_embed_dim", self.mi_embed_dim, 1, MAX_WIDTH)
        check_float("mi_weight", self.mi_weight, 0.0)
        check_choice("mi_scheme", self.mi_scheme, MI_SCHEMES)
        check_choice("mi_target", self.mi_target, MI_TARGETS)
        check_bool("mi_detach_target", self.mi_detach_target)
        check_int("mi_negatives", self.mi_negatives, 1)

    @property
    def module_id(self) -> str:
        """The module that carries the term."""
        return WORKER if self.mi_scheme == 1 else ALLOCATOR

    @property
    def needs_state(self) -> bool:
        """Whether the term reads the centralized state, which the hierarchy then adds to the
        observations (training only)."""
        return self.use_mutual_info and (self.mi_target == "global_state" or self.mi_scheme == 1)


@dataclass(frozen=True)
class EvolutionSettings(_Settings):
    """Settings of the evolutionary population (`AlmaPPOConfig().evolution(...)`).

    population_size: number of EA members (the RL team is extra).
    elite_fraction: share of the population kept unchanged each generation.
    tournament_size: members drawn (without replacement) per tournament.
    mutation_prob: probability that an individual is mutated.
    mutation_frac: probability that a weight of a mutated individual is changed.
    mutation_std: std of the Gaussian noise relative to the weight's magnitude |w|.
    super_mutation_prob: probability that a changed weight gets 10x the noise.
    reset_prob: probability that a changed weight is re-initialised.
    episodes_per_eval: episodes per member per generation (fitness = mean team return).
    generations_every: training iterations between generations.
    inject_rl_every: generations between injections of the RL head (0 = never).
    eval_workers: parallel Ray tasks per evaluation (each plays a chunk of members).
    ea_mi_steps: gradient steps of the allocator's MI term per generation on the allocator
        observations of the evaluation episodes (0 = the EA rollouts train nothing).
    """

    population_size: int = 5
    elite_fraction: float = 0.2
    tournament_size: int = 3
    mutation_prob: float = 0.9
    mutation_frac: float = 0.1
    mutation_std: float = 0.1
    super_mutation_prob: float = 0.05
    reset_prob: float = 0.05
    episodes_per_eval: int = 3
    generations_every: int = 1
    inject_rl_every: int = 1
    eval_workers: int = 2
    ea_mi_steps: int = 1

    def __post_init__(self) -> None:
        check_int("population_size", self.population_size, 2, 1000)
        check_float("elite_fraction", self.elite_fraction, 0.0, 1.0)
        check_int("tournament_size", self.tournament_size, 1, 1000)
        check_float("mutation_prob", self.mutation_prob, 0.0, 1.0)
        check_float("mutation_frac", self.mutation_frac, 0.0, 1.0)
        check_float("mutation_std", self.mutation_std, 0.0, 1e3)
        check_float("super_mutation_prob", self.super_mutation_prob, 0.0, 1.0)
        check_float("reset_prob", self.reset_prob, 0.0, 1.0)
        check_int("episodes_per_eval", self.episodes_per_eval, 1, 10_000)
        check_int("generations_every", self.generations_every, 1)
        check_int("inject_rl_every", self.inject_rl_every, 0)
        check_int("eval_workers", self.eval_workers, 1, 1000)
        check_int("ea_mi_steps", self.ea_mi_steps, 0, 1000)
        if self.tournament_size > self.population_size:
            raise ValueError(
                f"tournament_size={self.tournament_size} is out of range; it must be <= "
                f"population_size={self.population_size}"
            )
        if self.super_mutation_prob + self.reset_prob > 1.0:
            raise ValueError(
                f"super_mutation_prob + reset_prob = "
                f"{self.super_mutation_prob + self.reset_prob} is out of range; "
                "the sum must be <= 1"
            )

    def n_elites(self) -> int:
        if self.elite_fraction == 0:
            return 0
        return min(self.population_size, max(1, round(self.elite_fraction * self.population_size)))


# The keys of `AlmaPPOConfig.alma()` and of an experiment file's `alma:` section.
ALMA_KEYS = HierarchySettings.keys() + ModelSettings.keys()


def alma_defaults() -> dict[str, Any]:
    """Every `.alma()` and `.mutual_info()` key with its default. A run recorded before a key
    existed ran as its default does (new keys default to the old behaviour)."""
    return {
        **HierarchySettings().to_dict(), **ModelSettings().to_dict(),
        **MutualInfoSettings().to_dict(),
    }


def check_combination(hierarchy: HierarchySettings, mi: MutualInfoSettings) -> None:
    """Reject settings that are valid alone but meaningless together."""
    if mi.use_mutual_info and mi.mi_scheme in (2, 3) and hierarchy.allocation != "learned":
        raise ValueError(
            f"mi_scheme={mi.mi_scheme} puts the MI term on the allocator, but "
            f"allocation={hierarchy.allocation!r} has no learned allocator; use "
            "allocation='learned', mi_scheme=1 (worker), or use_mutual_info=False"
        )
    if hierarchy.allocation == "none" and hierarchy.allocator_view != "global":
        raise ValueError(
            "allocator_view only applies with an allocator; with allocation='none' leave it "
            "at 'global'"
        )


# Evaluation episodes are reset with seeds from here on unless a list is given, apart from
# the seeds training starts its environments with (the run's seed plus a few).
EVALUATION_FIRST_SEED = 1_000_000


@dataclass(frozen=True)
class EvaluationSettings(_Settings):
    """Evaluation during training (`AlmaPPOConfig().seeded_evaluation(...)`).

    interval: training iterations between evaluations.
    episodes: episodes per evaluation; every evaluation plays the same ones.
    greedy: True: both levels act greedily (the allocator's most likely allocation, the
        workers' argmax); False: they sample, with each episode's draws seeded by its seed.
    seeds: one environment seed per episode (`episodes` of them); None: `EVALUATION_FIRST_SEED`,
        `EVALUATION_FIRST_SEED + 1`, ...
    num_env_runners: evaluation env runners (0: one in the algorithm's own process).
    """

    interval: int = 10
    episodes: int = 10
    greedy: bool = True
    seeds: tuple[int, ...] | None = None
    num_env_runners: int = 0

    def __post_init__(self) -> None:
        check_int("interval", self.interval, 1)
        check_int("episodes", self.episodes, 1, 100_000)
        check_bool("greedy", self.greedy)
        if self.seeds is not None:
            if not isinstance(self.seeds, (list, tuple)) or not self.seeds:
                raise ValueError(
                    f"seeds={_show(self.seeds)} must be a non-empty list of integer seeds "
                    ">= 0, one per episode; or leave it out"
                )
            for i, seed in enumerate(self.seeds):
                check_int(f"seeds[{i}]", seed, 0)
            if len(self.seeds) != self.episodes:
                raise ValueError(
                    f"seeds has {len(self.seeds)} entries but episodes={self.episodes}; give "
                    "one seed per episode, or leave seeds out"
                )
            object.__setattr__(self, "seeds", tuple(self.seeds))
        check_int("num_env_runners", self.num_env_runners, 0, 1000)

    def episode_seeds(self) -> list[int]:
        """The environment seed of each evaluation episode, in order."""
        if self.seeds is not None:
            return list(self.seeds)
        return [EVALUATION_FIRST_SEED + i for i in range(self.episodes)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"] = None if self.seeds is None else list(self.seeds)
        return out
