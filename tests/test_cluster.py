"""`rllib-alma-mi train --address HOST:PORT` against a real Ray cluster started here with
`ray start --head`, token authentication on (as Ray 2.60 does when the head has a token)."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
TINY = {
    "name": "tiny",
    "env": "save_the_city",
    "env_config": {"scenario": "2a_3b", "max_cycles": 30},
    "alma": {"embed_dim": 16},
    "mutual_info": {"mi_embed_dim": 16},
    "training": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1},
    # 0 runners x 2 envs x 25 = 50 rows per round; --num-env-runners 2 below changes that.
    "env_runners": {"num_env_runners": 0, "num_envs_per_env_runner": 2,
                    "rollout_fragment_length": 25},
    "stop": {"iterations": 1},
    "checkpoint_every": 1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray's connection/auth settings (a `ray.init()`
    earlier in the session may have set some), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def stop_head(head: subprocess.Popen) -> None:
    """Stop the head's whole process group (its GCS, raylet and workers); never `ray stop`,
    which would stop every Ray on the machine."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=5)  # the head would drain for up to 30 s; its temp dir goes anyway
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(head.pid, signal.SIGKILL)  # what is left of the group
    except ProcessLookupError:
        pass
    head.wait(timeout=30)


def wait_for_head(head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}:\n{log.read_text()}")
        if "Ray runtime started" in log.read_text():
            return
        time.sleep(1)
    pytest.fail(f"the head did not start within {timeout} s:\n{log.read_text()}")


def train(tmp_path: Path, address: str, output: Path, env: dict[str, str]):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    return subprocess.run(
        [sys.executable, "-m", "rllib_alma_mi.app.cli", "train", "--config", str(config),
         "--num-env-runners", "2", "--address", address, "--output", str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def test_train_joins_a_token_authenticated_cluster_with_two_env_runners(tmp_path):
    port = free_port()
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    log = tmp_path / "head.log"
    # A temp dir of its own: `ray start` records its address in TEMP_DIR/ray_current_cluster,
    # and in /tmp/ray that record would send every later `ray.init()` on the machine to this
    # (soon stopped) head. Short, as Ray's socket paths under it must fit in 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-head-", dir="/tmp")
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp_dir],
            env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_head(head, log)
        machine_wide = Path("/tmp/ray/ray_current_cluster")
        assert not machine_wide.exists() or f":{port}" not in machine_wide.read_text()
        address = f"127.0.0.1:{port}"
        # The driver has the head's token but no RAY_AUTH_MODE: what a user on the head
        # machine (~/.ray/auth_token) or with the token in RAY_AUTH_TOKEN_PATH has.
        output = tmp_path / "run"
        done = train(tmp_path, address, output, clean_env(RAY_AUTH_TOKEN_PATH=str(token)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Connecting to existing Ray cluster" in done.stdout + done.stderr
        (trial,) = [p.parent for p in output.glob("*/progress.csv")]
        progress = pd.read_csv(trial / "progress.csv")
        assert progress["training_iteration"].tolist() == [1]
        assert progress["env_runners/num_env_steps_sampled"].iloc[0] > 0
        params = json.loads((trial / "params.json").read_text())
        assert params["num_env_runners"] == 2
        (checkpoint,) = trial.glob("checkpoint_*")
        assert (checkpoint / "rllib_checkpoint.json").is_file()

        # Another token is refused with one line that says where the token goes.
        refused = train(tmp_path, address, tmp_path / "refused",
                        clean_env(RAY_AUTH_TOKEN=secrets.token_hex(32)))
        assert refused.returncode == 2
        error = [line for line in refused.stderr.splitlines()
                 if line.startswith("rllib-alma-mi train: error:")]
        assert len(error) == 1 and "token authentication" in error[0]
        assert "RAY_AUTH_TOKEN" in error[0]
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert head.poll() is not None
