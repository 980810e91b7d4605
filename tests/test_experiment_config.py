"""Experiment files: validation errors name the source and key, suggest typos, list what is
allowed; overrides, grids and the Tune param space (no Ray runtime needed)."""

from pathlib import Path

import pytest
import yaml

from rllib_alma_mi.app.building import build_config
from rllib_alma_mi.app.experiment import DEFAULT_EXPERIMENT
from rllib_alma_mi.app.overrides import apply_set, load_experiment, parse_grid
from rllib_alma_mi.app.schema import ConfigError, setting_names
from rllib_alma_mi.app.tune import BudgetStopper, param_space
from rllib_alma_mi.app.yaml_io import parse_value
from rllib_alma_mi.settings import EvolutionSettings

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
TINY = {
    "env": "save_the_city",
    "env_config": {"scenario": "2a_3b", "max_cycles": 30},
    "alma": {"embed_dim": 16},
    "mutual_info": {"mi_embed_dim": 16},
    "training": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1},
    "env_runners": {"num_env_runners": 0},
    "stop": {"iterations": 2},
}


def write(tmp_path: Path, data, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_of(tmp_path: Path, data, sets=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, data), sets)
    message = str(info.value)
    assert "\n" not in message
    return message


def with_section(section: str, **values) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    data[section] = {**data.get(section, {}), **values}
    return data


def test_typo_in_a_key_names_file_key_and_suggests(tmp_path):
    message = error_of(tmp_path, with_section("mutual_info", mi_wieght=0.01))
    assert "exp.yaml" in message
    assert "mutual_info.mi_wieght: unknown key" in message
    assert "did you mean 'mi_weight'?" in message
    assert "mi_measure" in message  # the allowed keys are listed


def test_unknown_section_suggests_the_right_one(tmp_path):
    data = dict(TINY, mutal_info={"mi_weight": 0.01})
    message = error_of(tmp_path, data)
    assert "mutal_info: unknown section" in message
    assert "did you mean 'mutual_info'?" in message


@pytest.mark.parametrize(
    "section, values, expected",
    [
        ("training", {"lr": "fast"}, "training.lr='fast' must be a number > 0.0, not str"),
        ("training", {"num_epochs": 1.5}, "training.num_epochs=1.5 must be an integer >= 1"),
        ("training", {"use_gae": "yes"}, "training.use_gae='yes' must be a bool"),
        ("alma", {"embed_dim": "big"}, "embed_dim='big' must be an integer"),
        ("alma", {"subtask_mask": 1}, "subtask_mask=1 must be a bool"),
        ("env_runners", {"rollout_fragment_length": "long"}, "or 'auto'"),
    ],
)
def test_wrong_type(tmp_path, section, values, expected):
    assert expected in error_of(tmp_path, with_section(section, **values))


@pytest.mark.parametrize(
    "section, values, expected",
    [
        (
            "training",
            {"gamma": 1.5},
            "training.gamma=1.5 is out of range; it must be finite, >= 0.0 and <= 1.0",
        ),
        (
            "training",
            {"lr": 0.0},
            "training.lr=0.0 is out of range; it must be finite, > 0.0",
        ),
        ("mutual_info", {"mi_weight": -0.1}, "mi_weight=-0.1 is out of range"),
        ("mutual_info", {"mi_measure": "XYZ"}, "choose one of ['JSD', 'GAN', 'KL']"),
        ("alma", {"allocation": "greedy"}, "['learned', 'heuristic', 'random', 'none']"),
        ("stop", {"iterations": 0}, "stop.iterations=0 is out of range"),
        ("env_runners", {"num_env_runners": -1}, "num_env_runners=-1 is out of range; it must"),
    ],
)
def test_out_of_range_or_not_allowed(tmp_path, section, values, expected):
    assert expected in error_of(tmp_path, with_section(section, **values))


def test_section_must_be_a_mapping(tmp_path):
    assert "training: must be a mapping" in error_of(tmp_path, dict(TINY, training=5))


def test_env_config_typo_and_bad_value(tmp_path):
    message = error_of(tmp_path, dict(TINY, env_config={"scenaro": "2a_3b"}))
    assert "env_config.scenaro: unknown key for env 'save_the_city'" in message
    assert "did you mean 'scenario'?" in message
    message = error_of(tmp_path, dict(TINY, env_config={"scenario": "lots"}))
    assert message.startswith(f"{tmp_path / 'exp.yaml'}: env_config: ")


def test_unknown_env_suggests_a_registered_one(tmp_path):
    message = error_of(tmp_path, dict(TINY, env="save_the_cty", env_config={}))
    assert "did you mean 'save_the_city'?" in message


def test_combinations_are_checked(tmp_path):
    message = error_of(tmp_path, with_section("alma", allocation="heuristic"))
    assert "mi_scheme=3 puts the MI term on the allocator" in message
    message = error_of(tmp_path, with_section("training", minibatch_size=5000))
    assert "minibatch_size" in message and "train_batch_size_per_learner" in message


def test_bad_yaml_reports_the_line(tmp_path):
    message = error_of(tmp_path, "training:\n  lr: [0.1\n")
    assert "not valid YAML" in message and "line" in message
    message = error_of(tmp_path, "- just\n- a list\n")
    assert "must hold a mapping of sections" in message


def test_yaml_exponent_floats_and_empty_sections(tmp_path):
    text = yaml.safe_dump(TINY) + "mutual_info:\n  mi_weight: 1e-4\ntraining:\n"
    spec = load_experiment(write(tmp_path, text))
    assert spec.mutual_info == {"mi_weight": 1e-4}
    assert spec.training == {}  # an empty section takes the library defaults
    assert parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("abc") == "abc" and parse_value("null") is None


def test_set_overrides_are_validated_and_named(tmp_path):
    path = write(tmp_path, TINY)
    spec = load_experiment(path, ["alma.alloc_interval=3", "training.lr=1e-4", "seed=7",
                                  "stop={timesteps: 500}"])
    assert spec.alma["alloc_interval"] == 3 and spec.training["lr"] == 1e-4
    assert spec.seed == 7 and spec.stop == {"timesteps": 500}
    with pytest.raises(ConfigError, match=r"^--set mutual_info.mi_weight=-1: .*out of range"):
        load_experiment(path, ["mutual_info.mi_weight=-1"])
    with pytest.raises(ConfigError, match="did you mean 'training'"):
        load_experiment(path, ["trainig.lr=0.1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_experiment(path, ["training.lr"])
    with pytest.raises(ConfigError, match="seed is a single value"):
        apply_set(TINY, "seed.x=1")


def test_example_configs_are_valid_and_the_default_is_the_embedded_one():
    files = sorted(CONFIGS.glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"save_the_city", "with_mi", "without_mi", "heuristic", "flat", "mpe_spread",
            "evolution"} <= names
    for path in files:
        load_experiment(path)
    assert load_experiment(CONFIGS / "save_the_city.yaml").to_dict() == load_experiment(
        None
    ).to_dict()
    assert load_experiment(None).to_dict() == {**DEFAULT_EXPERIMENT}
    flat = load_experiment(CONFIGS / "flat.yaml")
    assert flat.alma["allocation"] == "none" and not flat.mutual_info["use_mutual_info"]
    # evolution.yaml is with_mi.yaml plus an evolution section holding the library's defaults
    evolution = load_experiment(CONFIGS / "evolution.yaml").to_dict()
    assert evolution.pop("evolution") == EvolutionSettings().to_dict()
    assert {**evolution, "name": "with_mi"} == load_experiment(CONFIGS / "with_mi.yaml").to_dict()


def test_grid_keys_values_and_param_space(tmp_path):
    spec = load_experiment(write(tmp_path, TINY))
    grid = parse_grid(spec.to_dict(), ["mi_weight=0.0001,0.01", "env_config.sight_range=2,4",
                                       "training.lambda_=0.9,0.95"])
    assert grid == {
        ("mutual_info", "mi_weight"): [0.0001, 0.01],
        ("env_config", "sight_range"): [2, 4],
        ("training", "lambda_"): [0.9, 0.95],
    }
    space = param_space(spec, grid, seeds=[0, 1, 2])
    assert space["mi_weight"] == {"grid_search": [0.0001, 0.01]}
    assert space["env_config"]["sight_range"] == {"grid_search": [2, 4]}
    assert space["env_config"]["scenario"] == "2a_3b"
    assert space["lambda"] == {"grid_search": [0.9, 0.95]}
    assert space["seed"] == {"grid_search": [0, 1, 2]}
    with pytest.raises(ConfigError, match=r"--grid mi_weight=0.1,-1 \(value -1\)"):
        parse_grid(spec.to_dict(), ["mi_weight=0.1,-1"])
    with pytest.raises(ConfigError, match="did you mean 'mi_embed_dim'"):
        parse_grid(spec.to_dict(), ["mi_embed_dims=64"])


def test_budget_stopper_reads_nested_and_flat_results():
    stop = BudgetStopper({"iterations": 3, "timesteps": 1000})
    assert not stop("t", {"training_iteration": 2})
    assert stop("t", {"training_iteration": 3})
    nested = {"training_iteration": 1, "env_runners": {"num_base_env_steps_lifetime": 1000}}
    assert stop("t", nested)
    assert stop("t", {"training_iteration": 1, "env_runners/num_base_env_steps_lifetime": 1200})
    assert not stop("t", {"training_iteration": 1, "env_runners": {}})


def test_set_order_does_not_matter_and_combination_errors_name_all_sets(tmp_path):
    path = write(tmp_path, TINY)
    sets = ["alma.allocation=heuristic", "mutual_info.use_mutual_info=false"]
    for order in (sets, sets[::-1]):
        spec = load_experiment(path, order)
        assert spec.alma["allocation"] == "heuristic"
    with pytest.raises(ConfigError, match=r"^--set alma.allocation=heuristic: "):
        load_experiment(path, ["alma.allocation=heuristic"])
    with pytest.raises(ConfigError, match=r"with --set alma.embed_dim=20 --set alma.n_heads=8"):
        load_experiment(path, ["alma.embed_dim=20", "alma.n_heads=8"])


def test_evolution_section_reaches_the_config(tmp_path):
    spec = load_experiment(write(tmp_path, with_section("evolution", population_size=4,
                                                        mutation_std=0.2)))
    assert spec.evolution == {"population_size": 4, "mutation_std": 0.2}
    expected = EvolutionSettings(population_size=4, mutation_std=0.2).to_dict()
    assert build_config(spec).evolution_config == expected
    assert spec.to_dict()["evolution"] == {"population_size": 4, "mutation_std": 0.2}
    off = load_experiment(write(tmp_path, TINY))  # no section: no population
    assert off.evolution is None and "evolution" not in off.to_dict()
    assert build_config(off).evolution_config is None
    everything = load_experiment(write(tmp_path, dict(TINY, evolution={})))
    assert build_config(everything).evolution_config == EvolutionSettings().to_dict()
    empty = load_experiment(write(tmp_path, yaml.safe_dump(TINY) + "evolution:\n"))
    assert empty.evolution is None  # an empty section counts as left out


def test_env_runners_settings_can_be_swept(tmp_path):
    spec = load_experiment(write(tmp_path, TINY))
    grid = parse_grid(spec.to_dict(), ["env_runners.num_envs_per_env_runner=4,8"])
    assert grid == {("env_runners", "num_envs_per_env_runner"): [4, 8]}
    space = param_space(spec, grid, seeds=[0])
    assert space["num_envs_per_env_runner"] == {"grid_search": [4, 8]}
    with pytest.raises(ConfigError, match=r"\(value 0\)"):
        parse_grid(spec.to_dict(), ["env_runners.num_envs_per_env_runner=4,0"])


def test_evolution_typo_names_the_key_and_suggests(tmp_path):
    message = error_of(tmp_path, with_section("evolution", populaton_size=4))
    assert "exp.yaml" in message
    assert "evolution.populaton_size: unknown key" in message
    assert "did you mean 'population_size'?" in message
    assert "tournament_size" in message and "inject_rl_every" in message  # allowed keys


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"population_size": 1}, "evolution: population_size=1 is out of range"),
        ({"mutation_prob": "high"}, "evolution: mutation_prob='high' must be a number"),
        ({"episodes_per_eval": 2.5}, "evolution: episodes_per_eval=2.5 must be an integer"),
        ({"population_size": 4, "tournament_size": 5}, "tournament_size=5 is out of range"),
        ({"super_mutation_prob": 0.6, "reset_prob": 0.6}, "the sum must be <= 1"),
    ],
)
def test_evolution_bad_values(tmp_path, values, expected):
    message = error_of(tmp_path, with_section("evolution", **values))
    assert message.startswith(f"{tmp_path / 'exp.yaml'}: evolution: ")
    assert expected in message


def test_evolution_section_must_be_a_mapping_and_needs_the_learned_allocator(tmp_path):
    assert "evolution: must be a mapping" in error_of(tmp_path, dict(TINY, evolution=5))
    data = with_section("evolution", population_size=4)
    data["alma"] = {**data["alma"], "allocation": "heuristic"}
    data["mutual_info"] = {**data["mutual_info"], "use_mutual_info": False}
    message = error_of(tmp_path, data)
    assert "alma/evolution:" in message and "allocation 'learned'" in message


def test_set_and_grid_over_evolution_keys(tmp_path):
    path = write(tmp_path, TINY)
    spec = load_experiment(path, ["evolution.population_size=3", "evolution.tournament_size=2"])
    assert spec.evolution == {"population_size": 3, "tournament_size": 2}
    assert build_config(spec).evolution_config["population_size"] == 3
    with pytest.raises(ConfigError, match=r"^--set evolution.population_size=1: evolution: "
                                          r"population_size=1 is out of range"):
        load_experiment(path, ["evolution.population_size=1"])
    with pytest.raises(ConfigError, match="did you mean 'mutation_std'"):
        load_experiment(path, ["evolution.mutation_sdt=0.1"])
    on = write(tmp_path, with_section("evolution", population_size=4), "on.yaml")
    assert load_experiment(on, ["evolution=null"]).evolution is None

    off = load_experiment(path)
    grid = parse_grid(off.to_dict(), ["evolution.population_size=4,6"])
    assert grid == {("evolution", "population_size"): [4, 6]}
    space = param_space(off, grid, seeds=[0])
    assert space["evolution_config"] == {**EvolutionSettings().to_dict(),
                                         "population_size": {"grid_search": [4, 6]}}
    assert ("evolution_config", "population_size") in setting_names()
    with pytest.raises(ConfigError, match=r"--grid evolution.population_size=4,1 \(value 1\)"):
        parse_grid(off.to_dict(), ["evolution.population_size=4,1"])
    with pytest.raises(ConfigError, match="write evolution.population_size"):
        parse_grid(off.to_dict(), ["population_size=4"])


@pytest.mark.parametrize(
    "sets",
    [
        ["env_runners.num_env_runners=2"],  # what `--num-env-runners 2` adds
        ["env_runners.num_envs_per_env_runner=16"],
        ["training.train_batch_size_per_learner=300"],
        ["env_runners={num_env_runners: 2}"],  # a whole section: AlmaPPOConfig's "auto"
    ],
)
def test_overrides_of_the_sample_count_derive_the_fragment_length(sets):
    """The default config fixes rollout_fragment_length 25 for 1 x 8 envs and a batch of
    1000; an override that breaks RLlib's batch check gets "auto" instead of an error."""
    config = build_config(load_experiment(None, sets))
    assert config.rollout_fragment_length == "auto"
    config.validate()  # RLlib's own check accepts it


def test_overrides_keep_a_fragment_length_that_still_fits_or_is_given(tmp_path):
    assert load_experiment(None, ["env_runners.num_env_runners=1"]).env_runners[
        "rollout_fragment_length"] == 25  # 1 x 8 x 25 still divides 1000
    given = ["env_runners.num_env_runners=2", "env_runners.rollout_fragment_length=25"]
    with pytest.raises(ConfigError, match="rollout_fragment_length"):
        load_experiment(None, given)  # the user's own fragment length is never replaced
    # A file whose own settings disagree is the file's error, not derived away.
    data = with_section("env_runners", num_env_runners=2, num_envs_per_env_runner=8,
                        rollout_fragment_length=25)
    assert "rollout_fragment_length" in error_of(tmp_path, data)


def test_grid_over_runner_counts_derives_the_fragment_length_for_every_trial():
    spec = load_experiment(None)
    grid = parse_grid(spec.to_dict(), ["env_runners.num_env_runners=1,2"], spec.name)
    assert grid[("env_runners", "rollout_fragment_length")] == ["auto"]
    space = param_space(spec, grid)
    assert space["rollout_fragment_length"] == {"grid_search": ["auto"]}
    assert parse_grid(spec.to_dict(), ["env_runners.num_env_runners=0,1"], spec.name) == {
        ("env_runners", "num_env_runners"): [0, 1]}
