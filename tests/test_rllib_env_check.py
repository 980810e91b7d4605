"""RLlib's own multi-agent environment check on the hierarchy around SaveTheCity."""

from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from envs.save_the_city import parallel_env
from rllib_alma_mi.hierarchy import HierarchicalEnv
from rllib_alma_mi.settings import HierarchySettings


def test_rllib_env_check_passes():
    # RLlib's check steps one action sampled from the *unmasked* action space. Here that first
    # step is the allocator's, on a fixed team where every task is live at reset, so any sampled
    # allocation is valid. (A worker's random action could be masked, which the env rejects.)
    base = parallel_env(scenario="3a_4b", sight_range=4)
    check_multiagent_environments(HierarchicalEnv(base, HierarchySettings()))
