import re
import textwrap
from pathlib import Path

import pytest
import yaml

from datapruning.config import (
    DataConfig,
    ModelConfig,
    PipelineConfig,
    TrainConfig,
    apply_override,
    load_config,
    parse_config,
    sparsity_config,
)
from datapruning.data.sources import SOURCES
from datapruning.errors import ConfigError
from datapruning.models import MODELS
from datapruning.scores import STRATEGIES
from datapruning.scoring import METRICS

VALID = """
name: small-run
output_dir: out
dataset:
  name: digits
  params:
    seed: 3
model:
  name: mlp
  params:
    hidden: 32
train:
  epochs: 4
  batch_size: 50
  lr: 0.1
  targets: [0.9, 0.5, 0.9]
kd:
  alpha: 0.3
  temperature: 2
scoring:
  metric: el2n
  seeds: 2
  epochs: 3
students:
  fractions: [0.25, 1.0]
  strategies: [easy, hard]
  kd: [true]
  seeds: [0, 1]
report:
  target_drop: 0.02
"""


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_error(tmp_path, text, overrides=None):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides=overrides)
    return str(info.value)


def test_load_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, VALID))
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == "small-run"
    assert cfg.output_dir == Path("out")
    assert cfg.run_root == Path("out") / "small-run"
    assert cfg.dataset.name == "digits"
    assert cfg.dataset.params == {"seed": 3}
    assert cfg.model.name == "mlp"
    assert cfg.model.params == {"hidden": 32}
    assert cfg.train.epochs == 4
    assert cfg.train.batch_size == 50
    assert cfg.train.lr == 0.1
    assert cfg.train.targets == [0.5, 0.9]  # sorted, duplicates dropped
    assert cfg.kd.alpha == 0.3
    assert cfg.kd.temperature == 2.0
    assert cfg.scoring.seeds == 2
    assert cfg.students.fractions == [0.25, 1.0]
    assert cfg.students.strategies == ["easy", "hard"]
    assert cfg.students.kd == [True]
    assert cfg.students.seeds == [0, 1]
    assert cfg.report.target_drop == 0.02
    # Untouched keys keep their defaults.
    assert cfg.train.momentum == PipelineConfig().train.momentum


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == PipelineConfig()
    assert cfg.dataset.name == "mnist1d"
    assert cfg.model.name is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_not_yaml(tmp_path):
    message = config_error(tmp_path, "train: {epochs: [1, 2\n")
    assert "not valid YAML" in message
    assert "config.yaml" in message


def test_top_level_not_a_mapping(tmp_path):
    assert "mapping" in config_error(tmp_path, "- a\n- b\n")
    assert "mapping" in config_error(tmp_path, "just a string\n")


def test_unknown_top_level_key(tmp_path):
    message = config_error(tmp_path, "trian:\n  epochs: 3\n")
    assert "unknown key 'trian'" in message
    assert "config.yaml" in message


def test_unknown_key_in_a_section(tmp_path):
    message = config_error(tmp_path, "train:\n  epoch: 3\n")
    assert "unknown key 'train.epoch'" in message


def test_wrong_type(tmp_path):
    message = config_error(tmp_path, "train:\n  epochs: many\n")
    assert "train.epochs" in message
    message = config_error(tmp_path, "students:\n  fractions: 0.5\n")
    assert "students.fractions" in message


@pytest.mark.parametrize(
    "text",
    ["train:\n  epochs: 0\n", "train:\n  lr: -1\n", "kd:\n  alpha: 1.5\n", "name: 'a b'\n"],
)
def test_out_of_range_values(tmp_path, text):
    key = text.split(":")[0]
    assert key in config_error(tmp_path, text)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fraction_outside_unit_interval(tmp_path, fraction):
    message = config_error(tmp_path, f"students:\n  fractions: [0.5, {fraction}]\n")
    assert "students.fractions" in message
    assert str(fraction) in message
    assert "(0, 1]" in message


def test_target_outside_unit_interval(tmp_path):
    message = config_error(tmp_path, "train:\n  targets: [0.5, 1.2]\n")
    assert "train.targets" in message
    assert "1.2" in message


@pytest.mark.parametrize(
    ("text", "key", "bad", "registry"),
    [
        ("dataset:\n  name: imagenet\n", "dataset.name", "imagenet", SOURCES),
        ("model:\n  name: resnet9000\n", "model.name", "resnet9000", MODELS),
        ("scoring:\n  metric: vibes\n", "scoring.metric", "vibes", METRICS),
        (
            "students:\n  strategies: [hard, middle]\n",
            "students.strategies",
            "middle",
            (*STRATEGIES, "rs2", "infobatch"),
        ),
    ],
)
def test_unknown_names_list_the_choices(tmp_path, text, key, bad, registry):
    message = config_error(tmp_path, text)
    assert key in message
    assert f"'{bad}'" in message
    assert ", ".join(sorted(registry)) in message


def test_apply_override_sets_nested_values_parsed_as_yaml():
    raw = {"train": {"epochs": 5}}
    apply_override(raw, "train.epochs=3")
    apply_override(raw, "train.lr=0.5")
    apply_override(raw, "students.fractions=[0.1, 0.2]")
    apply_override(raw, "dataset.params.num_samples=200")
    apply_override(raw, "name=run-2")
    apply_override(raw, "train.nesterov=false")
    assert raw == {
        "train": {"epochs": 3, "lr": 0.5, "nesterov": False},
        "students": {"fractions": [0.1, 0.2]},
        "dataset": {"params": {"num_samples": 200}},
        "name": "run-2",
    }


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "  =3"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match=re.escape("key.sub=value")):
        apply_override({}, bad)


def test_override_through_a_value_is_refused():
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_override({"name": "x"}, "name.sub=1")


def test_override_with_invalid_yaml_value():
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_override({}, "train.targets=[0.5")


def test_load_config_with_overrides(tmp_path):
    path = write(tmp_path, VALID)
    cfg = load_config(path, overrides=["train.epochs=9", "dataset.name=mnist1d", "kd.alpha=1"])
    assert cfg.train.epochs == 9
    assert cfg.dataset.name == "mnist1d"
    assert cfg.kd.alpha == 1.0
    assert cfg.model.params == {"hidden": 32}  # untouched
    # The file itself is unchanged.
    assert load_config(path).train.epochs == 4


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(ConfigError, match=re.escape("unknown key 'train.epoch'")):
        load_config(path, overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match=re.escape("students.fractions")):
        load_config(path, overrides=["students.fractions=[2]"])


def test_parse_config_names_its_source():
    with pytest.raises(ConfigError, match=r"^mine: unknown key 'bogus'"):
        parse_config({"bogus": 1}, source="mine")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("scoring:\n  grand_layer: last\n", ["scoring.grand_layer moved to", "params.grand.layer"]),
        ("scoring:\n  proto:\n    k: 5\n", ["scoring.proto moved to", "scoring.params.proto"]),
        ("scoring:\n  params:\n    vibes: {}\n", ["unknown key", "scoring.params.vibes"]),
        ("scoring:\n  params:\n    grand: {layer: middle}\n", ["scoring.params.grand.layer"]),
        ("scoring:\n  params:\n    proto: {kk: 3}\n", ["unknown key", "scoring.params.proto.kk"]),
    ],
)
def test_metric_settings_live_under_their_registry_entry(tmp_path, text, fragments):
    message = config_error(tmp_path, text)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_metric_params_are_each_metrics_own_model():
    from datapruning.scoring.params import GrandParams, NoParams, ProtoParams

    cfg = parse_config({"scoring": {"params": {"grand": {"layer": "last"}, "proto": {"k": 7}}}})
    assert cfg.scoring.params_for("grand") == GrandParams(layer="last")
    assert cfg.scoring.params_for("proto") == ProtoParams(k=7)
    assert cfg.scoring.params_for("el2n") == NoParams()
    for name, metric in METRICS.items():
        assert isinstance(cfg.scoring.params_for(name), metric.params_model)


def test_shipped_configs_load():
    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        load_config(path)


def test_a_data_config_without_a_proxy_dumps_as_before_the_proxy_existed():
    # Config hashes (resume points, the pipeline's cached cells) are taken from these dumps.
    assert (
        "proxy" not in DataConfig().model_dump()
        and "proxy_every"
        not in TrainConfig(data=DataConfig(mode="online", keep=0.5)).model_dump(mode="json")["data"]
    )
    spec = DataConfig(mode="online", keep=0.5, proxy=ModelConfig(name="mlp"), proxy_every=2)
    dumped = spec.model_dump(mode="json")
    assert dumped["proxy"] == {"name": "mlp", "params": {}} and dumped["proxy_every"] == 2
    assert DataConfig(**dumped) == spec


@pytest.mark.parametrize(
    "train_sparsity", ["{scope: nm}", "{scope: nm, mode: dynamic}", "{scope: nm, n: 1, m: 4}"]
)
def test_a_sweep_of_sparsity_targets_under_nm_is_refused_at_load(train_sparsity):
    # Before: the cell was named -sp0.9-, recorded target 0.9 and trained at 2:4.
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "train": yaml.safe_load(f"{{sparsity: {train_sparsity}}}"),
                "sweep": {"sparsity": [0.9]},
            }
        )
    message = str(info.value)
    assert "sweep.sparsity [0.9]" in message and "train.sparsity.scope nm" in message
    assert len(message.splitlines()) == 1


def test_a_sweep_dataset_that_turns_nm_on_is_refused_too():
    raw = {
        "sweep": {
            "sparsity": [0.5],
            "datasets": [{"name": "digits", "train": {"sparsity": {"scope": "nm"}}}],
        }
    }
    with pytest.raises(ConfigError, match=re.escape("train.sparsity.scope nm")):
        parse_config(raw)


def test_derived_configs_are_validated():
    from datapruning._sections import derive

    nm = sparsity_config(scope="nm")
    with pytest.raises(ValueError, match="target applies to gradual magnitude"):
        derive(nm, target=0.9)  # model_copy(update=...) took it silently
    assert derive(sparsity_config(), target=0.9).target == 0.9
