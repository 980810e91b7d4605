"""Experiment trackers: the `loggers` key and `--logger`, their errors, the local defaults that
keep W&B and MLflow off the network, and a two-iteration `train` whose metrics reach both."""

import os
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TRACKER_ENV, TRACKERS, tiny_experiment

from rllib_alma_mi.app.overrides import add_loggers, load_experiment
from rllib_alma_mi.app.schema import ConfigError
from rllib_alma_mi.app.trackers import require_packages, tracker_callbacks

HAVE = {name: name in TRACKERS for name in ("wandb", "mlflow")}
NEEDS = {
    name: pytest.mark.skipif(not HAVE[name], reason=f"{name} is not installed (pip install "
                                                    f"'rllib-alma-mi[{name}]')")
    for name in HAVE
}
TINY = tiny_experiment(stop={"iterations": 1})
# Our metrics, as the trackers name them (Tune's nested result flattened with "/").
METRICS = ("env_runners/tasks_completed_frac", "env_runners/solved",
           "learners/allocator/mi_value")


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def clean_env(monkeypatch):
    """No tracker variable set; the environment is restored afterwards (the trackers' local
    defaults are written to `os.environ`)."""
    saved = dict(os.environ)
    for key in TRACKER_ENV:
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


# ----------------------------------------------------------------------------------- schema
def test_loggers_key_lists_trackers_and_defaults_to_none(tmp_path):
    assert load_experiment(write(tmp_path, TINY)).loggers == []
    both = load_experiment(write(tmp_path, {**TINY, "loggers": ["wandb", "mlflow"]}))
    assert both.loggers == ["wandb", "mlflow"] and both.to_dict()["loggers"] == both.loggers
    assert "loggers" not in load_experiment(write(tmp_path, TINY)).to_dict()
    assert load_experiment(write(tmp_path, {**TINY, "loggers": None})).loggers == []
    assert load_experiment(write(tmp_path, TINY), ["loggers=[mlflow]"]).loggers == ["mlflow"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (["mlfow"], "loggers[0]='mlfow' is not allowed; choose one of ['wandb', 'mlflow']; "
                    "did you mean 'mlflow'?"),
        (["wandb", "comet"], "loggers[1]='comet' is not allowed; choose one of ['wandb', "
                             "'mlflow']"),
        ("wandb", "loggers='wandb' must be a list of trackers, e.g. [mlflow]; allowed: wandb, "
                  "mlflow"),
        ([1], "loggers[0]=1 is not allowed (int, expected str)"),
        (["mlflow", "mlflow"], "loggers[1]='mlflow' is listed twice"),
    ],
)
def test_bad_loggers_in_a_file_name_the_key_and_the_allowed_trackers(tmp_path, value, expected):
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, {**TINY, "loggers": value}))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "tiny.yaml")) and expected in message
    assert "\n" not in message


def test_logger_flags_add_to_the_files_trackers(tmp_path):
    spec = load_experiment(write(tmp_path, {**TINY, "loggers": ["mlflow"]}))
    assert add_loggers(spec, ["wandb", "mlflow"]).loggers == ["mlflow", "wandb"]
    assert add_loggers(spec, []).loggers == ["mlflow"]
    with pytest.raises(ConfigError, match=r"^--logger tensorboard: 'tensorboard' is not "
                                          r"allowed; choose one of \['wandb', 'mlflow'\]"):
        add_loggers(spec, ["tensorboard"])


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_tracker_package_names_the_extra_to_install(monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import tracker` raises ImportError
    with pytest.raises(ConfigError) as info:
        require_packages([tracker])
    assert str(info.value) == (f"loggers: {tracker} needs the {tracker} package: pip install "
                               f"'rllib-alma-mi[{tracker}]' (or pip install {tracker})")


# ----------------------------------------------------------------------------------- defaults
@NEEDS["wandb"]
def test_wandb_is_offline_unless_a_mode_or_api_key_is_set(clean_env, tmp_path):
    (callback,), (note,) = tracker_callbacks(["wandb"], tmp_path, "tiny")
    assert callback.kwargs == {"mode": "offline", "dir": str(tmp_path)}
    assert callback.project == "tiny" and "offline" in note
    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"

    for configured in ({"WANDB_MODE": "online"}, {"WANDB_API_KEY": "x" * 40}):
        for key in TRACKER_ENV:
            clean_env.delenv(key, raising=False)
        for key, value in configured.items():
            clean_env.setenv(key, value)
        clean_env.setenv("WANDB_PROJECT", "theirs")
        (callback,), _ = tracker_callbacks(["wandb"], tmp_path, "tiny")
        assert "mode" not in callback.kwargs and callback.project == "theirs"
        assert os.environ.get("WANDB_MODE") == configured.get("WANDB_MODE")


@NEEDS["mlflow"]
def test_mlflow_uses_a_file_store_in_the_run_unless_a_tracking_uri_is_set(clean_env, tmp_path):
    (callback,), _ = tracker_callbacks(["mlflow"], tmp_path, "tiny")
    assert callback.tracking_uri == (tmp_path / "mlruns").as_uri()
    assert callback.experiment_name == "tiny"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"

    clean_env.delenv("MLFLOW_DISABLE_TELEMETRY")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://tracking.invalid:5000")
    clean_env.setenv("MLFLOW_EXPERIMENT_NAME", "theirs")
    (callback,), _ = tracker_callbacks(["mlflow"], tmp_path, "tiny")
    assert callback.tracking_uri is None and callback.experiment_name is None
    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ  # their server, their settings


# ----------------------------------------------------------------------------------- a run
def wandb_history(path: Path) -> list[dict[str, str]]:
    """The `wandb.log` rows of an offline run's transaction log (`run-ID.wandb`: a LevelDB-style
    log of 32 KiB blocks holding protobuf `Record`s), as {metric: JSON value}."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a W&B transaction log"
    rows, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # no room for a record header: the block is padded
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json
                             for item in record.history.item})
    return rows


@pytest.fixture
def tracked_run(trained_run):
    """(run directory, progress.csv table) of the session's two-iteration `train`
    (`conftest.trained_run`), which runs with every installed tracker."""
    if not TRACKERS:
        pytest.skip("neither wandb nor mlflow is installed")
    out, _ = trained_run
    (progress,) = out.glob("*/progress.csv")
    return out, pd.read_csv(progress)


@NEEDS["mlflow"]
def test_train_with_mlflow_writes_our_metrics_to_the_file_store_in_the_run(tracked_run,
                                                                           clean_env):
    from mlflow.tracking import MlflowClient

    out, progress = tracked_run
    clean_env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["mi_embed_dim"] == "16"  # the trial's config
    for metric in METRICS:
        points = client.get_metric_history(mlflow_run.info.run_id, metric)
        assert sorted(p.step for p in points) == [1, 2]
        for point in points:
            assert point.value == pytest.approx(progress[metric].iloc[point.step - 1])


@NEEDS["wandb"]
def test_train_with_wandb_writes_an_offline_run_with_our_metrics(tracked_run):
    out, progress = tracked_run
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    trial_id = progress["trial_id"].iloc[0]
    assert run_dir.name.endswith(trial_id)
    rows = wandb_history(run_dir / f"run-{trial_id}.wandb")
    assert [yaml.safe_load(row["training_iteration"]) for row in rows] == [1, 2]
    for i, row in enumerate(rows):
        for metric in METRICS:
            assert float(row[metric]) == pytest.approx(progress[metric].iloc[i])
