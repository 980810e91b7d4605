"""SaveTheCity: ALMA's task-allocation benchmark as a PettingZoo ``ParallelEnv``.

Modules: ``constants`` (grid, agent types, actions, entity features), ``scenarios`` (which
teams an episode draws, and its starting layout), ``env`` (the rules: ``SaveTheCityEnv``),
``render`` (the drawing, from ``SaveTheCityEnv.city_view()``) and ``heuristic`` (ALMA's
nearest-building allocation). The rules are described in ``envs.save_the_city.env``. Every
name of ``constants`` is available here too.
"""

from envs.save_the_city import constants
from envs.save_the_city.constants import *  # noqa: F403 - the whole vocabulary, see __all__
from envs.save_the_city.env import SaveTheCityEnv, parallel_env
from envs.save_the_city.heuristic import heuristic_allocation
from envs.save_the_city.render import CityView

__all__ = [
    *constants.__all__,
    "CityView",
    "SaveTheCityEnv",
    "heuristic_allocation",
    "parallel_env",
]
