"""SaveTheCity scenarios: which teams an episode draws, and the episode's starting layout.

A scenario is a name (``"L-Ha_L-Hb"``: teams of L..H agents facing one building more than
agents; ``"Na_Mb"``: N agents, M buildings), or an explicit ``{"agent_types": [...],
"n_buildings": M}`` (a bare list of type names means ``n_buildings = len + 1``). Teams drawn
from a name have at least min(3, n) distinct types, as in ALMA, and are shuffled over the
agent slots; an explicit list keeps its order.

``draw_episode`` draws a random start from a scenario, ``parse_layout`` reads a hand-made one
(``reset(options={"layout": ...})``); both return an ``EpisodeSetup``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from envs.save_the_city.constants import AGENT_TYPES, GRID_SIZE, LATTICE, MAX_TEAM

# Building draws of ALMA's release.
INIT_FIRE_CHANCE = 0.4
IGNITE_PERIODS = {"fast": (60, 80), "slow": (10, 30)}
HEALTH_RANGES = ((0.25, 0.40), (0.60, 0.75))

_SCENARIO_RE = re.compile(r"^(\d+)(?:-(\d+))?a_(\d+)(?:-(\d+))?b$")


@dataclass(frozen=True)
class Scenario:
    """Which teams an episode may draw and how many buildings they face."""

    teams: tuple[tuple[int, ...], ...]  # candidate compositions (agent type ids)
    n_buildings: int | None  # None: n_agents + 1
    max_agents: int
    max_buildings: int
    shuffle: bool  # shuffle the slot order of a drawn composition


class EpisodeSetup(NamedTuple):
    """An episode's start: n agents and n_b buildings."""

    team: np.ndarray  # (n,) int64 agent type ids, in slot order
    agent_pos: np.ndarray  # (n, 2) int64 cells
    b_pos: np.ndarray  # (n_b, 2) int64 cells
    health: np.ndarray  # (n_b,) float64 in (0, 1)
    fire: np.ndarray  # (n_b,) float64 in [0, 1]
    fast: np.ndarray  # (n_b,) bool: fast burn
    period: np.ndarray  # (n_b,) int64 ignition period in steps


def _diverse_teams(lo: int, hi: int) -> tuple[tuple[int, ...], ...]:
    """All type multisets of size lo..hi with at least min(3, n) distinct types (as ALMA)."""
    teams = []
    for n in range(lo, hi + 1):
        for combo in itertools.combinations_with_replacement(range(len(AGENT_TYPES)), n):
            if len(set(combo)) >= min(len(AGENT_TYPES), n):
                teams.append(combo)
    return tuple(teams)


def _scenario_error(value: Any, why: str) -> ValueError:
    return ValueError(
        f"scenario={value!r}: {why}. Allowed: 'L-Ha_L-Hb' (teams of L..H agents facing n+1 "
        f"buildings, e.g. '2-5a_2-5b'), 'Na_Mb' (N agents, M buildings, e.g. '3a_4b'), or "
        f"{{'agent_types': [names from {AGENT_TYPES}], 'n_buildings': M}}"
    )


def _check_counts(value: Any, n_agents: int, n_buildings: int) -> None:
    if not 1 <= n_agents <= MAX_TEAM:
        raise _scenario_error(value, f"the team size must be in [1, {MAX_TEAM}]")
    if not 1 <= n_buildings <= len(LATTICE) ** 2:
        raise _scenario_error(value, f"the building count must be in [1, {len(LATTICE) ** 2}]")


def parse_scenario(value: Any) -> Scenario:
    """Read a scenario name, ``{"agent_types": [...], "n_buildings": M}`` or list of types."""
    if isinstance(value, str):
        return _parse_scenario_name(value)
    if isinstance(value, Mapping):
        unknown = set(value) - {"agent_types", "n_buildings"}
        if unknown or "agent_types" not in value:
            raise _scenario_error(value, f"unknown keys {sorted(unknown)} or no 'agent_types'")
        names = value["agent_types"]
        n_buildings = value.get("n_buildings")
    elif isinstance(value, Sequence):
        names, n_buildings = value, None
    else:
        raise _scenario_error(value, f"unsupported type {type(value).__name__}")
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise _scenario_error(value, "'agent_types' must be a list of type names")
    bad = [n for n in names if n not in AGENT_TYPES]
    if bad:
        raise _scenario_error(value, f"unknown agent types {bad}")
    if n_buildings is None:
        n_buildings = len(names) + 1
    if isinstance(n_buildings, bool) or not isinstance(n_buildings, int | np.integer):
        raise _scenario_error(value, f"'n_buildings' must be an int, got {n_buildings!r}")
    _check_counts(value, len(names), int(n_buildings))
    team = tuple(AGENT_TYPES.index(n) for n in names)
    return Scenario((team,), int(n_buildings), len(team), int(n_buildings), shuffle=False)


def _parse_scenario_name(value: str) -> Scenario:
    match = _SCENARIO_RE.match(value)
    if match is None:
        raise _scenario_error(value, "not a scenario name")
    a_lo, a_hi, b_lo, b_hi = match.groups()
    if a_hi is None and b_hi is None:
        n_agents, n_buildings = int(a_lo), int(b_lo)
        _check_counts(value, n_agents, n_buildings)
        teams = _diverse_teams(n_agents, n_agents)
        return Scenario(teams, n_buildings, n_agents, n_buildings, shuffle=True)
    if (a_lo, a_hi) != (b_lo, b_hi):
        raise _scenario_error(value, "a range form must repeat the agent range for buildings")
    lo, hi = int(a_lo), int(a_hi)
    if lo > hi:
        raise _scenario_error(value, "the range is empty")
    _check_counts(value, hi, hi + 1)
    _check_counts(value, lo, lo + 1)
    return Scenario(_diverse_teams(lo, hi), None, hi, hi + 1, shuffle=True)


@functools.cache
def spawn_cells(n_agents: int) -> np.ndarray:
    """(K, 2) free non-lattice cells of the smallest centred square that holds n_agents."""
    lattice = set(itertools.product(LATTICE, LATTICE))
    centre = GRID_SIZE // 2
    for half in range(1, centre + 1):
        span = range(centre - half, centre + half)
        cells = [(x, y) for x in span for y in span if (x, y) not in lattice]
        if len(cells) >= n_agents:
            out = np.array(cells, dtype=np.int64)
            out.flags.writeable = False  # shared by every env through the cache
            return out
    raise ValueError(f"cannot place {n_agents} agents on a {GRID_SIZE}x{GRID_SIZE} grid")


def draw_episode(scenario: Scenario, rng: np.random.Generator) -> EpisodeSetup:
    """A random start: a team of the scenario, agents near the centre, buildings on the
    lattice with ALMA's health, fire and ignition draws."""
    team = np.array(scenario.teams[rng.integers(len(scenario.teams))], dtype=np.int64)
    if scenario.shuffle:
        team = rng.permutation(team)
    n = len(team)
    n_b = scenario.n_buildings if scenario.n_buildings is not None else n + 1
    cells = spawn_cells(n)
    agent_pos = cells[rng.choice(len(cells), size=n, replace=False)]
    lattice_idx = rng.choice(len(LATTICE) ** 2, size=n_b, replace=False)
    b_pos = np.stack([np.take(LATTICE, lattice_idx // len(LATTICE)),
                      np.take(LATTICE, lattice_idx % len(LATTICE))], axis=1)
    fast = rng.random(n_b) < 0.5
    low_health = rng.random(n_b) < 0.5
    lo = np.where(low_health, HEALTH_RANGES[0][0], HEALTH_RANGES[1][0])
    hi = np.where(low_health, HEALTH_RANGES[0][1], HEALTH_RANGES[1][1])
    health = rng.uniform(lo, hi)
    period = np.where(
        fast,
        rng.integers(IGNITE_PERIODS["fast"][0], IGNITE_PERIODS["fast"][1] + 1, size=n_b),
        rng.integers(IGNITE_PERIODS["slow"][0], IGNITE_PERIODS["slow"][1] + 1, size=n_b),
    )
    fire = (rng.random(n_b) < INIT_FIRE_CHANCE).astype(np.float64)
    return EpisodeSetup(team, agent_pos, b_pos, health, fire, fast, period)


def parse_layout(layout: Any, max_agents: int, max_buildings: int) -> EpisodeSetup:
    """Read a hand-made start (the format is in ``SaveTheCityEnv.reset``)."""
    if not isinstance(layout, Mapping) or set(layout) != {"agents", "buildings"}:
        raise ValueError("options['layout'] must be a dict with keys 'agents' and 'buildings'")
    agents, blds = list(layout["agents"]), list(layout["buildings"])
    if not 1 <= len(agents) <= max_agents:
        raise ValueError(f"layout['agents']: expected 1..{max_agents} agents, "
                         f"got {len(agents)}")
    if not 1 <= len(blds) <= max_buildings:
        raise ValueError(f"layout['buildings']: expected 1..{max_buildings} buildings, "
                         f"got {len(blds)}")
    team, agent_pos = [], []
    for k, spec in enumerate(agents):
        if len(spec) != 3 or spec[0] not in AGENT_TYPES:
            raise ValueError(f"layout['agents'][{k}]={spec!r}: expected (type, x, y) with "
                             f"type in {AGENT_TYPES}")
        team.append(AGENT_TYPES.index(spec[0]))
        agent_pos.append((int(spec[1]), int(spec[2])))
    b_pos, health, fire, fast, period = [], [], [], [], []
    for k, spec in enumerate(blds):
        unknown = set(spec) - {"pos", "health", "fire", "fast_burn", "ignite_period"}
        if unknown or "pos" not in spec or "health" not in spec:
            raise ValueError(f"layout['buildings'][{k}]: needs 'pos' and 'health', "
                             f"unknown keys {sorted(unknown)}")
        is_fast = bool(spec.get("fast_burn", True))
        h, f = float(spec["health"]), float(spec.get("fire", 0.0))
        if not 0.0 < h < 1.0 or not 0.0 <= f <= 1.0:
            raise ValueError(f"layout['buildings'][{k}]: health must be in (0, 1) and fire "
                             f"in [0, 1], got health={h}, fire={f}")
        default_period = IGNITE_PERIODS["fast" if is_fast else "slow"][1]
        p = int(spec.get("ignite_period", default_period))
        if p < 1:
            raise ValueError(f"layout['buildings'][{k}]: ignite_period must be >= 1, got {p}")
        b_pos.append(tuple(int(v) for v in spec["pos"]))
        health.append(h)
        fire.append(f)
        fast.append(is_fast)
        period.append(p)
    cells = agent_pos + b_pos
    if len(set(cells)) != len(cells) or any(
        not (0 <= x < GRID_SIZE and 0 <= y < GRID_SIZE) for x, y in cells
    ):
        raise ValueError(f"layout: positions must be distinct cells inside the "
                         f"{GRID_SIZE}x{GRID_SIZE} grid, got {cells}")
    return EpisodeSetup(
        np.array(team, dtype=np.int64), np.array(agent_pos, dtype=np.int64),
        np.array(b_pos, dtype=np.int64), np.array(health, dtype=np.float64),
        np.array(fire, dtype=np.float64), np.array(fast, dtype=bool),
        np.array(period, dtype=np.int64),
    )
