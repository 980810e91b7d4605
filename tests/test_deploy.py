"""Exported teams (`rllib-alma-mi export`, `rllib_alma_mi.deploy`): parity with the trained
modules and with the project's greedy evaluation, flat and heuristic allocation, no Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CITY, tiny_config
from ray.rllib.core.columns import Columns

from envs.save_the_city import parallel_env
from rllib_alma_mi.app.checkpoints import save_checkpoint
from rllib_alma_mi.app.cli import main
from rllib_alma_mi.app.evaluation import (
    EvaluationError,
    GreedyActor,
    evaluation_env_config,
    make_eval_env,
)
from rllib_alma_mi.app.evaluation import run_episode as evaluate_episode
from rllib_alma_mi.app.export import ExportError, export_algorithm, export_checkpoint
from rllib_alma_mi.deploy import MANIFEST, DeployError, TeamPolicy, run_episode
from rllib_alma_mi.hierarchy import ALLOCATOR
from rllib_alma_mi.registry import HIERARCHY_KEY

pytestmark = pytest.mark.usefixtures("ray_session")

FORMATS = ("torchscript", "onnx")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def learned(ray_session, tmp_path_factory):
    """One trained iteration of the learned hierarchy, its checkpoint, and both exports (the
    TorchScript one from the checkpoint by the command line, the ONNX one from the same
    weights in memory)."""
    root = tmp_path_factory.mktemp("deploy")
    # Re-allocating every 5 steps gives an untrained team several decisions per episode.
    algo = tiny_config(env_config=SMALL_CITY, alloc_interval=5).build_algo()
    algo.train()
    checkpoint = save_checkpoint(algo, root / "checkpoint")
    exports = {"torchscript": root / "torchscript", "onnx": root / "onnx"}
    assert main(["export", "--checkpoint", checkpoint, "--out", str(exports["torchscript"])]) == 0
    export_algorithm(algo, exports["onnx"], "onnx")
    yield algo, checkpoint, exports
    algo.stop()


@pytest.fixture(scope="module")
def flat(ray_session, tmp_path_factory):
    """The flat method (no allocator, no subtask mask), built without training."""
    algo = tiny_config(env_config=SMALL_CITY, allocation="none", use_mutual_info=False).build_algo()
    out = tmp_path_factory.mktemp("flat") / "team"
    export_algorithm(algo, out, "onnx")
    yield algo, out
    algo.stop()


def hierarchy_observations(algo, seed=0):
    """Worker and allocator observations of one greedy episode of the hierarchy env."""
    env = make_eval_env(algo.config.env, dict(algo.config.env_config))
    actor = GreedyActor(algo, env)
    seen = {"worker": [], "allocator": []}
    obs, _ = env.reset(seed=seed)
    while True:
        for agent, o in obs.items():
            seen["allocator" if agent == ALLOCATOR else "worker"].append(o)
        obs, _, terms, truncs, _ = env.step(actor.act(obs))
        if terms["__all__"] or truncs["__all__"]:
            return seen


def stack(observations, keys):
    return {k: np.stack([np.asarray(o[k]) for o in observations]) for k in keys}


def evaluation_trace(algo, seed, allocation=None):
    """(per-step worker actions, per-step allocation, team return) of the project's greedy
    evaluation (`rllib_alma_mi.app.evaluation`)."""
    env = make_eval_env(algo.config.env, evaluation_env_config(algo, {}, allocation))
    actor = GreedyActor(algo, env)
    actions, allocations = [], []

    class Recorder:
        def act(self, obs):
            chosen = actor.act(obs)
            if ALLOCATOR not in obs:
                actions.append({a: int(x) for a, x in chosen.items()})
                allocations.append(env.allocation())
            return chosen

    stats = evaluate_episode(env, Recorder(), seed)
    return actions, allocations, stats.team_return


def deploy_trace(policy, seed, greedy=True):
    env = parallel_env(**SMALL_CITY)
    actions, allocations = [], []

    def record(chosen):
        actions.append(chosen)
        slot = {a: env.possible_agents.index(a) for a in chosen}
        allocations.append({a: int(policy.allocation()[slot[a]]) for a in chosen})

    result = run_episode(env, policy, seed, greedy=greedy, on_step=record)
    return actions, allocations, result


# ----------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_logits_equal_the_modules_on_episode_observations(learned, fmt):
    algo, _, exports = learned
    policy = TeamPolicy.load(exports[fmt])
    seen = hierarchy_observations(algo)
    worker_obs = {k: v for k, v in stack(seen["worker"], seen["worker"][0]).items()}
    with torch.no_grad():
        want = algo.get_module("worker").forward_inference(
            {Columns.OBS: {k: torch.as_tensor(v) for k, v in worker_obs.items()}}
        )[Columns.ACTION_DIST_INPUTS].numpy()
    got = policy.worker_logits(worker_obs)
    assert got.shape == want.shape == (len(seen["worker"]), 12)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    alloc_obs = stack(seen["allocator"], seen["allocator"][0])
    with torch.no_grad():
        out = algo.get_module("allocator").forward_inference(
            {Columns.OBS: {k: torch.as_tensor(v) for k, v in alloc_obs.items()}}
        )
    want_allocation = out[Columns.ACTIONS].numpy()
    want_logits = out[Columns.ACTION_DIST_INPUTS].numpy().reshape(len(want_allocation), 2, 3)
    assert len(want_allocation) > 1
    _, forced_logits = policy.allocate(alloc_obs, given=want_allocation)
    np.testing.assert_allclose(forced_logits, want_logits, atol=1e-5, rtol=0)
    allocation, logits = policy.allocate(alloc_obs, greedy=True)
    if fmt == "torchscript":
        np.testing.assert_array_equal(allocation, want_allocation)
    else:
        assert_equal_up_to_near_ties(allocation, logits, want_allocation)


def assert_equal_up_to_near_ties(allocation, logits, want_allocation, tol=1e-5):
    """Equal greedy allocations, except where the first differing choice was between tasks
    whose logits tie to float rounding (argmax may break such a tie either way)."""
    for row, want_row, row_logits in zip(allocation, want_allocation, logits, strict=True):
        differ = np.flatnonzero(row != want_row)
        if differ.size:
            step = differ[0]
            gap = row_logits[step, row[step]] - row_logits[step, want_row[step]]
            assert abs(gap) <= tol, (row, want_row, row_logits[step])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_episode_takes_the_evaluations_actions(learned, fmt, seed):
    algo, _, exports = learned
    want_actions, want_allocations, want_return = evaluation_trace(algo, seed)
    actions, allocations, result = deploy_trace(TeamPolicy.load(exports[fmt]), seed)
    assert actions == want_actions
    assert allocations == want_allocations
    assert result.team_return == pytest.approx(want_return, abs=1e-9)
    assert result.allocations > 1  # re-allocated during the episode, not only at the start


def test_heuristic_allocation_takes_the_evaluations_actions(learned):
    algo, _, exports = learned
    want_actions, want_allocations, _ = evaluation_trace(algo, 0, allocation="heuristic")
    policy = TeamPolicy.load(exports["torchscript"], allocation="heuristic")
    actions, allocations, _ = deploy_trace(policy, 0)
    assert actions == want_actions
    assert allocations == want_allocations


def test_flat_export_has_only_the_worker_and_acts_as_the_evaluation(flat):
    algo, out = flat
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["hierarchy"]["allocation"] == "none"
    assert sorted(manifest["models"]) == ["worker"]
    want_actions, _, want_return = evaluation_trace(algo, 0)
    policy = TeamPolicy.load(out)
    actions, allocations, result = deploy_trace(policy, 0)
    assert actions == want_actions
    assert result.allocations == 0
    assert result.team_return == pytest.approx(want_return, abs=1e-9)
    with pytest.raises(DeployError, match="allocation 'none'"):
        TeamPolicy.load(out, allocation="heuristic")


@pytest.fixture(scope="module")
def unmasked(ray_session, tmp_path_factory):
    """The learned hierarchy with `subtask_mask=False` (workers see everything and read which
    entities are their subtask's), its subtask vector set away from its zero start, exported in
    both formats."""
    algo = tiny_config(env_config=SMALL_CITY, subtask_mask=False,
                       use_mutual_info=False).build_algo()
    with torch.no_grad():
        algo.get_module("worker").pi_net.subtask_vector.normal_(generator=torch.manual_seed(0))
    root = tmp_path_factory.mktemp("unmasked")
    for fmt in FORMATS:
        export_algorithm(algo, root / fmt, fmt)
    yield algo, root
    algo.stop()


@pytest.mark.parametrize("fmt", FORMATS)
def test_workers_that_mark_their_subtask_export_with_it_and_act_as_the_evaluation(unmasked, fmt):
    algo, root = unmasked
    policy = TeamPolicy.load(root / fmt)
    workers = hierarchy_observations(algo)["worker"]
    obs = stack(workers, workers[0])
    assert "subtask" in obs
    with torch.no_grad():
        want = algo.get_module("worker").forward_inference(
            {Columns.OBS: {k: torch.as_tensor(v) for k, v in obs.items()}}
        )[Columns.ACTION_DIST_INPUTS].numpy()
    np.testing.assert_allclose(policy.worker_logits(obs), want, atol=1e-5, rtol=0)
    flipped = policy.worker_logits({**obs, "subtask": 1 - obs["subtask"]})
    assert np.abs(flipped - want).max() > 1e-3  # the export reads the marks
    want_actions, want_allocations, want_return = evaluation_trace(algo, 0)
    actions, allocations, result = deploy_trace(policy, 0)
    assert actions == want_actions
    assert allocations == want_allocations
    assert result.team_return == pytest.approx(want_return, abs=1e-9)
    with pytest.raises(DeployError, match="subtask_mask=False"):
        policy.worker_logits({k: v for k, v in obs.items() if k != "subtask"})


def test_sampled_actions_are_allowed_and_reproducible_by_seed(learned):
    _, _, exports = learned
    policy = TeamPolicy.load(exports["onnx"])
    env = parallel_env(**SMALL_CITY)
    runs = []
    for _ in range(2):
        observations, _ = env.reset(seed=5)
        policy.reset(env, seed=5)
        taken = []
        while env.agents:
            actions = policy.act(observations, env, greedy=False)
            for agent, action in actions.items():
                assert observations[agent]["action_mask"][action] == 1
            taken.append(actions)
            observations, *_ = env.step(actions)
        runs.append(taken)
    assert runs[0] == runs[1]
    greedy, _, _ = deploy_trace(policy, 5, greedy=True)
    assert greedy != runs[0]


def test_old_api_stack_checkpoint_exports_and_acts(ray_session, tmp_path):
    algo = (
        tiny_config(env_config=SMALL_CITY)
        .api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
        .training(train_batch_size=200)
        .build_algo()
    )
    try:
        # export_algorithm checks the files against the wrapped modules' acting passes
        export_algorithm(algo, tmp_path / "team", "torchscript")
    finally:
        algo.stop()
    result = run_episode(parallel_env(**SMALL_CITY), TeamPolicy.load(tmp_path / "team"), seed=0)
    assert 0 < result.steps <= SMALL_CITY["max_cycles"] and result.allocations >= 1


# ----------------------------------------------------------------------------------- no Ray
@pytest.mark.parametrize("fmt", FORMATS)
def test_runtime_plays_an_episode_without_importing_ray(learned, fmt):
    _, _, exports = learned
    script = (
        "import sys\n"
        "from rllib_alma_mi.deploy import TeamPolicy, run_episode\n"
        "from envs.save_the_city import parallel_env\n"
        f"policy = TeamPolicy.load({str(exports[fmt])!r})\n"
        f"result = run_episode(parallel_env(**{SMALL_CITY!r}), policy, seed=0)\n"
        "assert result.steps > 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'onnxruntime'}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)}, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == ("['torch']" if fmt == "torchscript" else "['onnxruntime']")


# ----------------------------------------------------------------------------------- errors
def test_export_rejects_a_bad_checkpoint_path_and_an_unknown_format(learned, tmp_path):
    _, checkpoint, _ = learned
    with pytest.raises(EvaluationError, match="no such file or directory"):
        export_checkpoint(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ExportError, match=r"format='tflite' is not known.*torchscript"):
        export_checkpoint(checkpoint, tmp_path / "out", "tflite")
    assert not (tmp_path / "out").exists()
    assert main(["export", "--checkpoint", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "out")]) == 2
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--format", "tflite"]) == 2


def test_export_refuses_a_directory_that_is_not_an_export(learned, tmp_path):
    algo, _, _ = learned
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty and not an export"):
        export_algorithm(algo, tmp_path, "torchscript")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_loading_without_an_export_or_for_another_env_is_a_clear_error(learned, tmp_path):
    _, _, exports = learned
    with pytest.raises(DeployError, match="no manifest.json"):
        TeamPolicy.load(tmp_path)
    policy = TeamPolicy.load(exports["torchscript"])
    bigger = parallel_env(scenario="2-5a_2-5b")
    bigger.reset(seed=0)
    with pytest.raises(DeployError, match="possible agents"):
        policy.reset(bigger, seed=0)


def test_manifest_records_the_hierarchy_and_the_spaces(learned):
    algo, checkpoint, exports = learned
    manifest = json.loads((exports["torchscript"] / MANIFEST).read_text())
    hierarchy = algo.config.env_config[HIERARCHY_KEY]
    assert manifest["hierarchy"]["alloc_interval"] == hierarchy["alloc_interval"]
    assert manifest["spaces"] == {"n_entities": 5, "n_features": manifest["spaces"]["n_features"],
                                  "n_tasks": 3, "n_agents": 2, "n_actions": 12}
    assert manifest["env_config"] == SMALL_CITY
    assert manifest["source"]["checkpoint"] == str(Path(checkpoint).resolve())
