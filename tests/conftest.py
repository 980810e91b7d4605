import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # `make test` runs two workers
if XDIST_WORKER:
    # One torch thread per worker (read when torch is imported, after this): two workers at
    # torch's default of a thread per core would oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The longest files first, so that no long file starts when the other worker is nearly done;
# the tracker tests last, when the CLI tests' worker has made the run they share.
FIRST = ("test_cli.py", "test_learning.py", "test_cluster.py", "test_training.py",
         "test_reliability.py", "test_evolution.py", "test_benchmarks.py", "test_learners.py",
         "test_mine.py")
LAST = ("test_trackers.py",)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        if name in FIRST:
            return FIRST.index(name)
        return len(FIRST) + 1 if name in LAST else len(FIRST)

    items.sort(key=rank)


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
    half of it, networks (and the MINE critic, unless `mi_embed_dim` is given) `width` wide,
    seeded. `settings` go to `.alma()` or `.mutual_info()` by their key."""
    from rllib_alma_mi import AlmaPPOConfig
    from rllib_alma_mi.settings import ALMA_KEYS

    config = (
        AlmaPPOConfig()
        .environment(env, env_config=dict(SMALL_CITY if env_config is None else env_config))
        .training(train_batch_size_per_learner=batch, minibatch_size=batch // 2, num_epochs=1)
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs_per_runner)
        .alma(embed_dim=width, **{k: v for k, v in settings.items() if k in ALMA_KEYS})
        .mutual_info(
            **{"mi_embed_dim": width, **{k: v for k, v in settings.items() if k not in ALMA_KEYS}}
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


def train_once(config) -> dict:
    """Build the algorithm of `config`, train one iteration and stop it; returns the result."""
    algo = config.build_algo()
    try:
        return algo.train()
    finally:
        algo.stop()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`rllib-alma-mi ARGS` through the console script's `main` in this process (no new
    interpreter to import Ray and torch again): (exit status, stdout, stderr)."""
    from rllib_alma_mi.app.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def check_install_hint(monkeypatch, modules: list[str], extra: str, make_env) -> None:
    """With the `modules` made unimportable, `make_env()` raises an ImportError that says
    `pip install .[extra]`."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install \.\[{extra}\]"):
        make_env()


def check_rgb_array_render(make_env, shape: tuple[int, int, int]):
    """Reset `make_env(render_mode="rgb_array")` with seed 0 and render it: the frame is
    `shape` uint8, and `render()` of `make_env()` raises a ValueError naming render_mode.
    Returns (env, frame)."""
    env = make_env(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == shape and frame.dtype == np.uint8
    with pytest.raises(ValueError, match="render_mode"):
        make_env().render()
    return env, frame


def check_rllib_env_checks(contract_env, flat_env) -> None:
    """RLlib's multi-agent env check passes on `contract_env` under the hierarchy (default
    settings) and on `flat_env` as a plain PettingZoo env."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from rllib_alma_mi.hierarchy import HierarchicalEnv
    from rllib_alma_mi.settings import HierarchySettings

    check_multiagent_environments(HierarchicalEnv(contract_env, HierarchySettings()))
    check_multiagent_environments(ParallelPettingZooEnv(flat_env))


# A one-process experiment file that trains in seconds (the CLI tests' base).
TINY_EXPERIMENT = {
    "name": "tiny",
    "env": "save_the_city",
    "env_config": {"scenario": "2a_3b", "max_cycles": 30},
    "alma": {"embed_dim": 16, "imitation_steps": 1000},
    "mutual_info": {"mi_embed_dim": 16},
    "training": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1},
    "env_runners": {"num_env_runners": 0, "num_envs_per_env_runner": 2},
    "stop": {"iterations": 2},
    "checkpoint_every": 1,
}


def tiny_experiment(**sections) -> dict:
    """A deep copy of `TINY_EXPERIMENT` with `sections` replaced."""
    import copy

    return {**copy.deepcopy(TINY_EXPERIMENT), **copy.deepcopy(sections)}


# Variables that would send a tracker to a server or elsewhere: the trained run sets none.
TRACKER_ENV = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ERROR_REPORTING",
               "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_DISABLE_TELEMETRY")
TRACKERS = tuple(name for name in ("wandb", "mlflow") if importlib.util.find_spec(name))


def cli_command(*args: str) -> list[str]:
    """The installed console script (or `python -m` of its module) with `args`."""
    script = Path(sys.executable).with_name("rllib-alma-mi")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "rllib_alma_mi.app.cli", *args]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(run directory, completed process) of `train` on `TINY_EXPERIMENT` (2 iterations, a
    checkpoint after each) with every installed tracker (`TRACKERS`), run as a user would: the
    installed script, in an environment that configures no tracker and has no stored login.
    The CLI's train/evaluate/render/plot tests and the tracker tests all read this one run;
    under pytest-xdist the first worker to ask trains it and the others wait for it (a file
    lock in the directory that all of this session's workers share)."""
    if not XDIST_WORKER:
        return _train_tiny_experiment(tmp_path_factory.mktemp("trained"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    path, record = shared / "trained", shared / "trained.json"
    with FileLock(str(shared / "trained.lock")):
        if not record.exists():
            path.mkdir()
            out, proc = _train_tiny_experiment(path)
            record.write_text(json.dumps(
                {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                 "stderr": proc.stderr}))
    return path / "run", subprocess.CompletedProcess(**json.loads(record.read_text()))


def _train_tiny_experiment(path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    import yaml

    (path / "tiny.yaml").write_text(yaml.safe_dump(TINY_EXPERIMENT))
    env = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    env.update(RAY_ADDRESS="local", HOME=str(path))
    out = path / "run"
    loggers = [arg for name in TRACKERS for arg in ("--logger", name)]
    proc = subprocess.run(
        cli_command("train", "--config", "tiny.yaml", "--output", str(out), *loggers),
        cwd=path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc
