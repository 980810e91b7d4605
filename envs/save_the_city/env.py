"""SaveTheCity: ALMA's task-allocation benchmark as a PettingZoo ``ParallelEnv``.

A team of firefighters, builders and generalists on a 16x16 grid must save the city's
buildings (one task per building): put out fires and rebuild until every building is
complete (health 1) before it burns down (health 0).

Rules (one step, in this order):

1. Actions are checked against the action mask of the last observation.
2. Moves are applied one agent at a time in slot order. The mask guarantees the destination
   (and, for a double move, the middle cell) was free at the start of the step; a move whose
   cell was taken by an earlier agent in the same step is blocked and the agent stays.
3. Interactions target the adjacent building (4-neighbourhood). On ALMA's lattice at most
   one building is adjacent; with a hand-made layout the lowest building index wins.
   Extinguish (9) needs a burning target and removes ``0.25 * fire_speed`` fire, build (10)
   needs an unresolved target with no fire and adds ``0.125 * build_speed`` health, freeze
   (11, generalist only) needs a burning target. Speeds: firefighter fire 1.0 / build 0.05,
   builder fire 0.05 / build 1.0, generalist 0 / 0. A generalist that extinguishes beside a
   builder adds ``0.45 * 0.25`` fire removal; one that builds beside a firefighter adds
   ``0.45 * 0.125`` health (once per building and step).
4. Buildings: if no fire removal was applied this step, fire grows ``x1.1`` (capped at 1),
   else it drops by the removal (floored at 0). Then health changes by the building
   amount minus ``fire * burn_rate * 0.035``. The burn term is skipped when a generalist
   froze the building in this same step: a freeze lasts one step, so it holds while a
   generalist keeps freezing. Health is clipped to [0, 1]; a building reaching 1 is complete,
   one reaching 0 is burned (its fire is set to 0). Resolved buildings never change again.
5. Unresolved buildings count down to their next ignition (period U[60, 80] steps for fast
   burn, U[10, 30] for slow burn); at zero the fire is set to 1 and the countdown restarts.

Rewards, with ``scale = reward_scale`` (default ``20 / (6 * max_buildings + 20)``):

* team reward (every agent in ``rewards``): ``scale * (sum_b [10 dh_b - 20 burned_b +
  0.5 extinguished_b + 1 completed_b] + 20 [episode ends with every building complete])``;
* ``infos[agent]["task_rewards"][b]``: ``scale * (10 dh_b - 20 burned_b + 0.5 extinguished_b
  + 20 completed_b)``. Hence ``sum(task_rewards) == team_reward + scale * (19 * n_completed -
  20 * solved)`` at every step.

Observation (the entity-task contract, E = max_agents + max_buildings, T = max_buildings):
agent slot i is entity row i, building j is entity row ``max_agents + j`` and task j.
Resolved buildings stay live entities (they still block moves) that keep their task row in
``entity2task``; only ``task_mask`` drops them. With a ``sight_range`` the rows of entities
the agent cannot see (``obs_mask`` 0) are zero in its ``entities``: nothing leaks through the
features. ``state()`` is the same layout, unmasked.

Deterministic setups for tests and demos: ``reset(options={"layout": ...})`` (see
``SaveTheCityEnv.reset``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.contract import ContractParallelEnv, episode_stats
from envs.save_the_city.constants import (
    ACTION_NAMES,
    BUILD,
    BUILDER,
    EXTINGUISH,
    F_BURNED,
    F_COMPLETE,
    F_FAST_BURN,
    F_FIRE,
    F_FROZEN,
    F_HEALTH,
    F_IGNITE_PROGRESS,
    F_IGNITE_RATE,
    F_IS_AGENT,
    F_IS_BUILDING,
    F_ON_FIRE,
    F_TYPE,
    F_X,
    F_Y,
    FIREFIGHTER,
    FREEZE,
    GENERALIST,
    GRID_SIZE,
    MOVE_DELTAS,
    N_ACTIONS,
    N_FEATURES,
    STAY,
)
from envs.save_the_city.heuristic import heuristic_allocation
from envs.save_the_city.render import CityView, draw_city, show_frame
from envs.save_the_city.scenarios import (
    EpisodeSetup,
    draw_episode,
    parse_layout,
    parse_scenario,
)

__all__ = ["SaveTheCityEnv", "parallel_env"]

# Rule constants of ALMA's release.
FIRE_REDUCE_RATE = 0.25
BASE_BUILD_RATE = 0.125
FIRE_GROWTH = 1.1
FIRE_BURN_RATE = 0.035
GENERALIST_HELP = 0.45
FIRE_SPEED = (1.0, 0.05, 0.0)
BUILD_SPEED = (0.05, 1.0, 0.0)
BURN_RATES = {"fast": 1.0, "slow": 0.5}
MIN_IGNITE_PERIOD, MAX_IGNITE_PERIOD = 10, 80

REWARD_HEALTH, REWARD_BURNED, REWARD_EXTINGUISH = 10.0, -20.0, 0.5
REWARD_COMPLETE_TEAM, REWARD_COMPLETE_TASK, REWARD_SOLVED = 1.0, 20.0, 20.0

_PAD = 2  # border of the occupancy grids, so double moves never index outside
_GRID_W = GRID_SIZE + 2 * _PAD  # side of the padded grids (flat index: x * _GRID_W + y)
_NO_CELL = _GRID_W * _GRID_W  # flat cell of padding entities: sees and is seen by nothing
_FAR = -1000  # position of padding entity rows: never within any sight range
_EXT_AMOUNT = tuple(s * FIRE_REDUCE_RATE for s in FIRE_SPEED)
_BUILD_AMOUNT = tuple(s * BASE_BUILD_RATE for s in BUILD_SPEED)
_BG_BITS = (1 << BUILDER) | (1 << GENERALIST)
_FG_BITS = (1 << FIREFIGHTER) | (1 << GENERALIST)
_MOVE_FLAT = tuple(dx * _GRID_W + dy for dx, dy in MOVE_DELTAS)
_MOVE_FLAT_ARRAY = np.array(_MOVE_FLAT[1:], dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _sight_table(sight_range: int) -> np.ndarray:
    """(C, C) bool over flat padded cells (+ the padding cell): Chebyshev distance <= range."""
    x, y = np.divmod(np.arange(_NO_CELL), _GRID_W)
    table = np.zeros((_NO_CELL + 1, _NO_CELL + 1), dtype=bool)
    table[:_NO_CELL, :_NO_CELL] = np.maximum(
        np.abs(x[:, None] - x[None, :]), np.abs(y[:, None] - y[None, :])) <= sight_range
    table.flags.writeable = False
    return table


def parallel_env(**kwargs: Any) -> SaveTheCityEnv:
    """Build a SaveTheCity ``ParallelEnv`` (see ``SaveTheCityEnv`` for the arguments)."""
    allowed = [p for p in inspect.signature(SaveTheCityEnv.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"save_the_city: unknown argument(s) {unknown} "
                         f"(values {[kwargs[k] for k in unknown]}); allowed: {allowed}")
    return SaveTheCityEnv(**kwargs)


class SaveTheCityEnv(ContractParallelEnv):
    """ALMA's SaveTheCity with an optional sight range (see the module docstring for rules).

    Args:
        scenario: "2-5a_2-5b" (default), "2-8a_2-8b", "Na_Mb" or
            ``{"agent_types": [...], "n_buildings": M}``.
        sight_range: None (see everything) or a Chebyshev radius in cells.
        max_cycles: steps before truncation (150).
        reward_scale: reward multiplier; None gives ALMA's ``20 / (6 * max_buildings + 20)``.
        render_mode: None, "rgb_array" or "human".
        invalid_action: "raise" (default: a masked-out action raises ValueError) or "stay"
            (explicit opt-in: a masked-out action is executed as "stay", for tools that
            sample actions without masks).

    Shapes (E = max_agents + max_buildings, F = 16, T = max_buildings, A = 12), per agent:
    ``entities`` (E, F) float32, ``entity_mask`` (E,) int8, ``obs_mask`` (E,) int8,
    ``entity2task`` (E, T) int8, ``task_mask`` (T,) int8, ``agent_index`` () int64,
    ``action_mask`` (A,) int8. ``state()``: ``entities``, ``entity_mask``, ``entity2task``,
    ``task_mask``, unmasked. Actions: Discrete(12), see ``ACTION_NAMES``.

    Observation arrays are fresh every step, except ``agent_index`` (shared read-only
    constants). Teams drawn from a scenario name are shuffled over the agent slots; an
    explicit ``agent_types`` list keeps its order.
    """

    metadata = {
        "name": "save_the_city_v0",
        "render_modes": ["rgb_array", "human"],
        "render_fps": 5,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        scenario: str | Mapping[str, Any] | Sequence[str] = "2-5a_2-5b",
        sight_range: int | None = None,
        max_cycles: int = 150,
        reward_scale: float | None = None,
        render_mode: str | None = None,
        invalid_action: str = "raise",
    ) -> None:
        self._scenario = parse_scenario(scenario)
        self.scenario = scenario
        self.sight_range = self._check_sight(sight_range)
        self.max_cycles = self._check_max_cycles(max_cycles)
        self.render_mode = self._check_choice("render_mode", render_mode,
                                              (None, "rgb_array", "human"))
        self.invalid_action = self._check_choice("invalid_action", invalid_action,
                                                 ("raise", "stay"))
        self.max_agents = self._scenario.max_agents
        self.max_buildings = self._scenario.max_buildings
        self.n_entities = self.max_agents + self.max_buildings
        self.n_tasks = self.max_buildings
        self.reward_scale = self._check_reward_scale(reward_scale, self.max_buildings)

        self.possible_agents = [f"agent_{i}" for i in range(self.max_agents)]
        self.agents: list[str] = []
        self._build_contract_spaces(self.n_entities, N_FEATURES, self.n_tasks, N_ACTIONS,
                                    0.0, 1.0)
        self._agent_index = []
        for i in range(self.max_agents):
            idx = np.array(i, dtype=np.int64)
            idx.flags.writeable = False
            self._agent_index.append(idx)
        self._sight = None if self.sight_range is None else _sight_table(self.sight_range)
        self._rng: np.random.Generator | None = None
        self._assignment: dict[str, int] = {}
        self._figure = None
        self._n = 0

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_choice(name: str, value: Any, allowed: tuple) -> Any:
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not supported; allowed: {allowed}")
        return value

    @staticmethod
    def _check_sight(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(
                f"sight_range={value!r} is invalid; allowed: None (full observability) or an "
                "int >= 0 (Chebyshev radius in cells)"
            )
        return int(value)

    @staticmethod
    def _check_max_cycles(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"max_cycles={value!r} is invalid; allowed: an int >= 1")
        return int(value)

    @staticmethod
    def _check_reward_scale(value: Any, max_buildings: int) -> float:
        if value is None:
            return 20.0 / (6.0 * max_buildings + 20.0)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"reward_scale={value!r} is invalid; allowed: None or a float > 0")
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"reward_scale={value!r} is invalid; allowed: None or a float > 0")
        return float(value)

    # ------------------------------------------------------------------ reset
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Start an episode; returns (observations, infos).

        ``options={"layout": {...}}`` replaces the random draw by a fixed layout::

            {"agents": [("firefighter", x, y), ("generalist", x, y), ...],
             "buildings": [{"pos": (x, y), "health": 0.5, "fire": 0.0,
                            "fast_burn": True, "ignite_period": 70}, ...]}

        ``health`` must be in (0, 1) and ``fire`` in [0, 1] (default 0), ``fast_burn``
        defaults to True and ``ignite_period`` to 80 (fast) / 30 (slow). Buildings may sit
        anywhere on the grid. Other option keys are ignored.
        """
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        layout = (options or {}).get("layout")
        if layout is None:
            self._setup(draw_episode(self._scenario, self._rng))
        else:
            self._setup(parse_layout(layout, self.max_agents, self.max_buildings))
        self._assignment = {}
        obs = self._observe()
        zeros = np.zeros(self.n_tasks, dtype=np.float32)
        infos = {agent: {"task_rewards": zeros.copy()} for agent in self.agents}
        if self.render_mode == "human":
            self.render()
        return obs, infos

    def _setup(self, setup: EpisodeSetup) -> None:
        """Load an episode's initial state into the arrays the step works on."""
        team, agent_pos, b_pos, health, fire, fast, period = setup
        m, b = self.max_agents, self.max_buildings
        n, n_b = len(team), len(b_pos)
        self._n, self._nb = n, n_b
        self.agents = self.possible_agents[:n]
        self._types = [int(t) for t in team]
        self._gen = np.asarray(team) == GENERALIST

        # Entity positions; padding rows sit far away so no sight range ever covers them.
        self._pos = np.full((self.n_entities, 2), _FAR, dtype=np.int64)
        self._pos[:n] = agent_pos
        self._pos[m:m + n_b] = b_pos

        # Building arrays carry one extra always-empty slot (index b): the "no target" value.
        b1 = b + 1
        self._health = np.zeros(b1)
        self._health[:n_b] = health
        self._fire = np.zeros(b1)
        self._fire[:n_b] = fire
        self._burn_k = np.zeros(b1)
        self._burn_k[:n_b] = np.where(fast, BURN_RATES["fast"], BURN_RATES["slow"]) * FIRE_BURN_RATE
        self._period = np.ones(b1)
        self._period[:n_b] = period
        self._timer = self._period.copy()
        self._since = np.zeros(b1)
        self._live = np.zeros(b1, dtype=bool)
        self._live[:n_b] = True
        self._complete = np.zeros(b1, dtype=bool)
        self._burned = np.zeros(b1, dtype=bool)
        self._active = self._live.copy()
        self._frozen = self._never_frozen = np.zeros(b1, dtype=bool)
        self._on_fire = self._fire > 0.0

        # Padded flat grids: cell (x, y) is index (x + _PAD) * _GRID_W + y + _PAD. Occupancy
        # lives in a bytearray (fast scalar access in the move loop) seen by numpy too.
        live_rows = np.r_[0:n, m:m + n_b]
        self._cell = np.full(self.n_entities, _NO_CELL, dtype=np.int64)
        self._cell[live_rows] = (self._pos[live_rows, 0] + _PAD) * _GRID_W + (
            self._pos[live_rows, 1] + _PAD)
        occ = np.ones((_GRID_W, _GRID_W), dtype=np.uint8)
        occ[_PAD:_PAD + GRID_SIZE, _PAD:_PAD + GRID_SIZE] = 0
        occ.ravel()[self._cell[live_rows]] = 1
        self._occ_buf = bytearray(occ.tobytes())
        self._occ = np.frombuffer(self._occ_buf, dtype=np.uint8)
        self._bgrid = np.full(_GRID_W * _GRID_W, b, dtype=np.int64)
        self._bgrid[self._cell[m:m + n_b]] = np.arange(n_b)

        self._entity_mask = np.zeros(self.n_entities, dtype=np.int8)
        self._entity_mask[live_rows] = 1
        self._e2t = np.zeros((self.n_entities, self.n_tasks), dtype=np.int8)
        self._e2t[m + np.arange(n_b), np.arange(n_b)] = 1
        self._task_mask = np.zeros(self.n_tasks, dtype=np.int8)
        self._task_mask[:n_b] = 1

        self._ents = np.zeros((self.n_entities, N_FEATURES), dtype=np.float32)
        ents = self._ents
        ents[:n, F_IS_AGENT] = 1.0
        ents[np.arange(n), F_TYPE + np.asarray(team)] = 1.0
        ents[m:m + n_b, F_IS_BUILDING] = 1.0
        ents[m:m + n_b, F_FAST_BURN] = fast
        rate = (1.0 / np.asarray(period) - 1.0 / MAX_IGNITE_PERIOD) / (
            1.0 / MIN_IGNITE_PERIOD - 1.0 / MAX_IGNITE_PERIOD)
        ents[m:m + n_b, F_IGNITE_RATE] = np.clip(rate, 0.0, 1.0)
        ents[live_rows, F_X:F_Y + 1] = self._pos[live_rows] / (GRID_SIZE - 1)
        self._write_building_features()

        self._t = 0
        self._return = 0.0
        self._done = False
        self._compute_action_masks()

    # ------------------------------------------------------------------ step
    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Advance one step; returns (observations, rewards, terminations, truncations, infos)."""
        if self._done or not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        acts = self._parse_actions(actions)
        self._apply_moves(acts)
        task_r, n_completed = self._update_buildings(*self._interactions(acts))
        self._t += 1

        terminated = not self._active.any()
        solved = terminated and bool(self._complete[:self._nb].all())
        scale = self.reward_scale
        team_r = float(task_r.sum()) + scale * (
            (REWARD_COMPLETE_TEAM - REWARD_COMPLETE_TASK) * n_completed + REWARD_SOLVED * solved)
        self._return += team_r
        truncated = not terminated and self._t >= self.max_cycles

        self._compute_action_masks()
        obs = self._observe()
        agents = self.agents
        task_r32 = task_r[:self.max_buildings].astype(np.float32)
        if terminated or truncated:
            self._done = True
            self.agents = []
            infos = {a: {"task_rewards": task_r32.copy(), **self._episode_stats()}
                     for a in agents}
        else:
            infos = {a: {"task_rewards": task_r32.copy()} for a in agents}
        rewards = dict.fromkeys(agents, team_r)
        terms = dict.fromkeys(agents, terminated)
        truncs = dict.fromkeys(agents, truncated)
        if self.render_mode == "human":
            self.render()
        return obs, rewards, terms, truncs, infos

    def _episode_stats(self) -> dict[str, Any]:
        return episode_stats(self._complete[:self._nb], self._burned[:self._nb])

    def _parse_actions(self, actions: Any) -> list[int]:
        if not isinstance(actions, Mapping):
            raise TypeError(f"actions must be a dict agent -> int, got {type(actions).__name__}")
        acts = []
        mask = self._mask
        for i, agent in enumerate(self.agents):
            try:
                a = actions[agent]
            except KeyError:
                raise ValueError(
                    f"actions has no entry for live agent {agent!r}; every agent in "
                    f"env.agents={self.agents} needs an action"
                ) from None
            if type(a) is not int:
                a = self._to_int_action(agent, a)
            if not 0 <= a < N_ACTIONS:
                raise ValueError(f"action {a} of {agent!r} is outside [0, {N_ACTIONS})")
            if not mask[i, a]:
                if self.invalid_action == "raise":
                    allowed = [int(k) for k in np.flatnonzero(mask[i])]
                    raise ValueError(
                        f"action {a} ({ACTION_NAMES[a]}) of {agent!r} is masked out; allowed "
                        f"actions: {allowed} ({[ACTION_NAMES[k] for k in allowed]})"
                    )
                a = STAY
            acts.append(a)
        if len(actions) != len(acts):
            extra = sorted(set(actions) - set(self.agents), key=str)
            raise ValueError(f"actions for agents not in this episode: {extra}; "
                             f"env.agents={self.agents}")
        return acts

    @staticmethod
    def _to_int_action(agent: str, a: Any) -> int:
        if isinstance(a, np.integer):
            return int(a)
        if isinstance(a, np.ndarray) and a.shape in ((), (1,)) and np.issubdtype(a.dtype,
                                                                                 np.integer):
            return int(a.reshape(()))
        raise TypeError(f"action of {agent!r} must be an int in [0, {N_ACTIONS}), "
                        f"got {a!r} ({type(a).__name__})")

    def _apply_moves(self, acts: list[int]) -> None:
        occ, cell = self._occ_buf, self._cell
        moved = False
        for i, a in enumerate(acts):
            if a == STAY or a >= EXTINGUISH:
                continue
            here = cell.item(i)
            there = here + _MOVE_FLAT[a]
            if occ[there] or (a >= 5 and occ[here + _MOVE_FLAT[a - 4]]):
                continue  # an earlier agent took the cell (or the middle cell) this step
            occ[here] = 0
            occ[there] = 1
            cell[i] = there
            moved = True
        if moved:
            n = self._n
            xy = np.divmod(cell[:n], _GRID_W)
            self._pos[:n, 0] = xy[0] - _PAD
            self._pos[:n, 1] = xy[1] - _PAD
            self._ents[:n, F_X:F_Y + 1] = self._pos[:n] * (1.0 / (GRID_SIZE - 1))

    def _interactions(self, acts: list[int]) -> tuple:
        """Per-building fire removal, building amount and freeze flags of this step."""
        fire_dec = build = frozen = None
        tgt, types = self._tgt, self._types
        for i, a in enumerate(acts):
            if a < EXTINGUISH:
                continue
            if fire_dec is None:
                b1 = self.max_buildings + 1
                fire_dec, build = np.zeros(b1), np.zeros(b1)
                frozen = np.zeros(b1, dtype=bool)
                ext_bits, build_bits = [0] * b1, [0] * b1
            b, t = tgt.item(i), types[i]
            if a == EXTINGUISH:
                fire_dec[b] += _EXT_AMOUNT[t]
                ext_bits[b] |= 1 << t
            elif a == BUILD:
                build[b] += _BUILD_AMOUNT[t]
                build_bits[b] |= 1 << t
            else:
                frozen[b] = True
        if fire_dec is not None:
            for b in range(len(ext_bits)):
                if ext_bits[b] & _BG_BITS == _BG_BITS:
                    fire_dec[b] += GENERALIST_HELP * FIRE_REDUCE_RATE
                if build_bits[b] & _FG_BITS == _FG_BITS:
                    build[b] += GENERALIST_HELP * BASE_BUILD_RATE
        return fire_dec, build, frozen

    def _update_buildings(self, fire_dec, build, frozen) -> tuple[np.ndarray, int]:
        """Fire, health, resolution and ignition; returns (task rewards (B+1,), n completed)."""
        prev_h, prev_f = self._health, self._fire
        if fire_dec is None:
            fire = prev_f * FIRE_GROWTH
            np.minimum(fire, 1.0, out=fire)
            health = prev_h - fire * self._burn_k
            np.maximum(health, 0.0, out=health)
            frozen = self._never_frozen
        else:
            fire = np.where(fire_dec > 0.0, prev_f - fire_dec, prev_f * FIRE_GROWTH)
            np.clip(fire, 0.0, 1.0, out=fire)
            burn = fire * self._burn_k
            burn[frozen] = 0.0
            health = np.clip(prev_h + build - burn, 0.0, 1.0)
        self._frozen = frozen
        scale = self.reward_scale
        task_r = (health - prev_h) * (REWARD_HEALTH * scale)
        # Events; padding slots and resolved buildings can never trigger one.
        extinguished = self._on_fire > (fire > 0.0)
        burned = (health <= 0.0) & self._active
        completed = (health >= 1.0) > self._complete
        n_completed = int(np.count_nonzero(completed))
        n_burned = int(np.count_nonzero(burned))
        if n_completed or n_burned or np.count_nonzero(extinguished):
            fire[burned] = 0.0
            task_r += scale * (REWARD_BURNED * burned + REWARD_EXTINGUISH * extinguished
                               + REWARD_COMPLETE_TASK * completed)
            if n_completed or n_burned:
                self._resolve(completed, burned)
        self._health, self._fire = health, fire
        self._ignite()
        self._write_building_features()
        return task_r, n_completed

    def _resolve(self, completed: np.ndarray, burned: np.ndarray) -> None:
        self._complete |= completed
        self._burned |= burned
        self._active = self._live & ~(self._complete | self._burned)
        self._since[~self._active] = 0.0
        m = self.max_agents
        for b in np.flatnonzero(completed | burned):
            self._bgrid[self._cell[m + b]] = self.max_buildings
            self._task_mask[b] = 0
        b = self.max_buildings
        self._ents[m:m + b, F_COMPLETE] = self._complete[:b]
        self._ents[m:m + b, F_BURNED] = self._burned[:b]

    def _ignite(self) -> None:
        active = self._active
        self._timer -= active
        self._since += active
        ignite = active & (self._timer <= 0.0)
        if np.count_nonzero(ignite):
            self._fire[ignite] = 1.0
            self._timer[ignite] = self._period[ignite]
            self._since[ignite] = 0.0

    def _write_building_features(self) -> None:
        m, b = self.max_agents, self.max_buildings
        ents = self._ents
        self._on_fire = self._fire > 0.0
        ents[m:, F_HEALTH] = self._health[:b]
        ents[m:, F_FIRE] = self._fire[:b]
        ents[m:, F_ON_FIRE] = self._on_fire[:b]
        ents[m:, F_FROZEN] = self._frozen[:b]
        ents[m:, F_IGNITE_PROGRESS] = (self._since / self._period)[:b]

    # ------------------------------------------------------------------ observations
    def _compute_action_masks(self) -> None:
        """Action masks (n, 12) and interaction targets (n,) of the live agents."""
        n = self._n
        around = self._cell[:n, None] + _MOVE_FLAT_ARRAY  # (n, 8) cells reached by moves
        free = self._occ.take(around) == 0
        free[:, 4:] &= free[:, :4] & self._gen[:, None]
        tgt = np.minimum.reduce(self._bgrid.take(around[:, :4]), axis=1)
        burning = self._on_fire.take(tgt)
        mask = np.empty((n, N_ACTIONS), dtype=np.int8)
        mask[:, 0] = 1
        mask[:, 1:9] = free
        mask[:, EXTINGUISH] = burning
        mask[:, BUILD] = (tgt < self.max_buildings) & ~burning
        mask[:, FREEZE] = burning & self._gen
        self._mask, self._tgt = mask, tgt

    def _visibility(self) -> np.ndarray:
        """(n, E) int8: 1 where agent i sees entity j (live and within sight range)."""
        n = self._n
        if self.sight_range is None:
            return self._entity_mask[None].repeat(n, axis=0)
        cell = self._cell
        return self._sight[cell[:n, None], cell[None, :]].view(np.int8)

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        n = self._n
        vis = self._visibility()
        if self.sight_range is None:
            ents = self._ents[None].repeat(n, axis=0)
        else:
            ents = self._ents[None] * vis[:, :, None]
        live = self._entity_mask[None].repeat(n, axis=0)
        e2t = self._e2t[None].repeat(n, axis=0)
        tmask = self._task_mask[None].repeat(n, axis=0)
        amask, index = self._mask, self._agent_index
        return {
            agent: {
                "entities": ents[i],
                "entity_mask": live[i],
                "obs_mask": vis[i],
                "entity2task": e2t[i],
                "task_mask": tmask[i],
                "agent_index": index[i],
                "action_mask": amask[i],
            }
            for i, agent in enumerate(self.agents)
        }

    def state(self) -> dict[str, np.ndarray]:
        """Global unmasked state: entities (E, F), entity_mask (E,), entity2task (E, T),
        task_mask (T,)."""
        if self._n == 0:
            raise RuntimeError("state() called before reset()")
        return {
            "entities": self._ents.copy(),
            "entity_mask": self._entity_mask.copy(),
            "entity2task": self._e2t.copy(),
            "task_mask": self._task_mask.copy(),
        }

    # ------------------------------------------------------------------ allocation helpers
    def set_assignment(self, mapping: Mapping[str, int] | None) -> None:
        """Record each agent's assigned task index (drawn by ``render()``); None clears."""
        if mapping is None:
            self._assignment = {}
            return
        checked = {}
        for agent, task in mapping.items():
            if agent not in self.possible_agents:
                raise ValueError(f"set_assignment: unknown agent {agent!r}; "
                                 f"allowed: {self.possible_agents}")
            if isinstance(task, bool) or not isinstance(task, int | np.integer) or not (
                0 <= task < self.n_tasks
            ):
                raise ValueError(f"set_assignment: task {task!r} of {agent!r} must be an int "
                                 f"in [0, {self.n_tasks})")
            checked[agent] = int(task)
        self._assignment = checked

    def heuristic_allocation(self, generalist_prefers_fire: bool = True) -> np.ndarray:
        """ALMA's nearest-building rule on this env's state: (max_agents,) int64 task indices."""
        return heuristic_allocation(self.state(), self.max_agents, generalist_prefers_fire)

    # ------------------------------------------------------------------ rendering
    def city_view(self) -> CityView:
        """Read-only snapshot of the episode for drawing (see ``render.CityView``)."""
        if self._n == 0:
            raise RuntimeError("city_view() called before reset()")
        m, n, nb = self.max_agents, self._n, self._nb

        def frozen_copy(a: np.ndarray) -> np.ndarray:
            a = np.array(a)
            a.flags.writeable = False
            return a

        return CityView(
            agent_pos=frozen_copy(self._pos[:n]),
            agent_types=tuple(self._types),
            building_pos=frozen_copy(self._pos[m:m + nb]),
            health=frozen_copy(self._health[:nb]),
            fire=frozen_copy(self._fire[:nb]),
            fast_burn=frozen_copy(self._ents[m:m + nb, F_FAST_BURN] > 0),
            frozen=frozen_copy(self._frozen[:nb]),
            complete=frozen_copy(self._complete[:nb]),
            burned=frozen_copy(self._burned[:nb]),
            assignment=tuple((self.possible_agents.index(agent), task)
                             for agent, task in self._assignment.items()),
            sight_range=self.sight_range,
            t=self._t,
            max_cycles=self.max_cycles,
            episode_return=self._return,
        )

    def render(self) -> np.ndarray | None:
        """"rgb_array": (H, W, 3) uint8 picture; "human": show it with matplotlib."""
        if self.render_mode is None:
            raise ValueError("render() needs render_mode='rgb_array' or 'human' at construction")
        if self._n == 0:
            raise RuntimeError("render() called before reset()")
        image = draw_city(self.city_view())
        if self.render_mode == "rgb_array":
            return image
        self._figure = show_frame(image, self._figure, self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self._figure)
            self._figure = None
