"""Fuzzing the config: any value in any field, any config text, any ``--set``.

Each test feeds arbitrary input and accepts exactly two outcomes: a config that
is usable (finite numbers, seeds numpy and torch take, the same config after a
round trip through what a run directory records), or a ``DataPruningError``
with a one-line message. Any other exception is a bug; the inputs that found
one are kept as ``@example``s. The samplers are fuzzed in
tests/data/test_sampler_fuzz.py.

``HYPOTHESIS_PROFILE=ci`` (tests/conftest.py) runs ten times as many examples
as the default run. Measured on the shared 2-core machine (pytest, load 5-9):
this file and the sampler fuzz file together 23-42 s by default, 278 s under
the ci profile.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from fuzz_helper import assert_one_line, budget
from hypothesis import example, given
from hypothesis import strategies as st

from datapruning.cli import _config
from datapruning.config import PipelineConfig, load_config, parse_config
from datapruning.errors import DataPruningError

REPO = Path(__file__).resolve().parents[1]


# --- values -----------------------------------------------------------------

# What YAML can hold, and the edges of it: huge ints, NaN and infinities, empty
# and odd strings, the names and forms the config's fields use.
NAMES = st.sampled_from(
    ["auto", "0.99r", "1.5r", "cpu", "cuda:0", "cuda:x", "adamw", "sgd", "nm", "global",
     "dynamic", "rs2", "subset", "full", "hard", "random", "el2n", "npz:", "npz:x.npz",
     "mnist1d:x", "cifar10:/nonexistent", "a{99999999999}", "(", "[a-", ".*", "~", "",
     " ", "\t", "é", "\x00", "null", "1e400", "-0"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(),  # nan, inf, -inf, subnormals, -0.0
    st.floats(0, 1),
    st.text(max_size=12),
    NAMES,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def rich_config() -> dict[str, Any]:
    """The quickstart config with every section and optional field present, so that
    mutations reach them all (sweep axes, sparsity, RS2 data, betas, a reference)."""
    raw = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    raw["train"].update(
        betas=[0.9, 0.999],
        targets=[0.8, "0.99r"],
        reference="runs/quickstart/full",
        steps=100,
        warmup_epochs=0.5,
        device="cpu",
        precision="fp32",
        checkpoint_every=10,
        data={"mode": "rs2", "fraction": 0.3, "replacement": False, "stratify": True},
        sparsity={"target": 0.5, "initial": 0.1, "start": 10, "end": 0.7, "every": 0.02,
                  "include": ["conv"], "exclude": ["fc"], "rewind": 5, "min_density": 0.02},
    )  # fmt: skip
    raw["kd"].update(teacher_logits="teacher.npy", cache_logits=True)
    raw["sweep"] = {
        "datasets": [{"name": "mnist1d", "params": {"num_samples": 500}}, {"name": "digits"}],
        "models": [{"name": "mlp"}],
        "metrics": ["el2n", "forgetting"],
        "sparsity": [0.0, 0.5],
    }
    return raw


BASE = rich_config()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


PATHS = _paths(BASE)[1:]  # every field, section and list element; not the whole document


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


SECTIONS = [path for path in _paths(BASE) if isinstance(_get(BASE, path), dict)]


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The rich config with one to three fields replaced, removed or added."""
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        path = draw(st.sampled_from(SECTIONS if action == "add" else PATHS))
        value = draw(VALUES)
        try:
            if action == "add":
                section = _get(raw, path)
                if isinstance(section, dict):
                    section[draw(st.text(max_size=10) | NAMES)] = value
                continue
            parent = _get(raw, path[:-1])
            if action == "remove":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation replaced or removed this field's section
    return raw


# --- what a config that loads must be ---------------------------------------


def _floats(node: Any, where: str = "") -> list[tuple[str, float]]:
    if isinstance(node, dict):
        return [f for key, child in node.items() for f in _floats(child, f"{where}.{key}")]
    if isinstance(node, list | tuple):
        return [f for i, child in enumerate(node) for f in _floats(child, f"{where}.{i}")]
    return [(where, node)] if isinstance(node, float) else []


def assert_usable(cfg: PipelineConfig) -> None:
    dumped = cfg.model_dump()
    # dataset.params and model.params are checked by the source and the model when they
    # load (a DataPruningError there); every typed field is checked here.
    for section in (dumped["dataset"], dumped["model"], *(dumped["sweep"]["datasets"] or [])):
        section.pop("params")
    for model in dumped["sweep"]["models"] or []:
        model.pop("params")
    bad = [(where, value) for where, value in _floats(dumped) if not math.isfinite(value)]
    assert not bad, f"a loaded config holds non-finite numbers: {bad}"
    for seed in [cfg.train.seed, cfg.scoring.params.proto.seed, *cfg.students.seeds]:
        np.random.default_rng([seed, 0])
        torch.Generator().manual_seed(seed)
    # What a run directory records reads back as the same config.
    assert parse_config(cfg.model_dump(mode="json")) == cfg


def check_outcome(load: Any) -> PipelineConfig | None:
    try:
        cfg = load()
    except DataPruningError as exc:
        assert_one_line(exc)
        return None
    assert_usable(cfg)
    return cfg


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.yaml"


def test_the_unmutated_rich_config_loads(config_file: Path) -> None:
    config_file.write_text(yaml.safe_dump(BASE))
    cfg = check_outcome(lambda: load_config(config_file))
    assert cfg is not None and cfg.train.data.fraction == 0.3  # the fuzzing starts from a valid one


@budget(120)
@given(raw=mutated_configs())
@example(raw={**BASE, "train": {**BASE["train"], "lr": math.inf}})  # accepted: lr > 0 holds for inf
@example(raw={**BASE, "kd": {**BASE["kd"], "temperature": math.inf}})
@example(raw={**BASE, "train": {**BASE["train"], "warmup_epochs": math.inf}})
@example(raw={**BASE, "train": {**BASE["train"], "seed": -1}})  # numpy takes no negative seed
@example(raw={**BASE, "students": {**BASE["students"], "seeds": [2**64]}})  # nor torch this one
@example(raw={**BASE, "scoring": {**BASE["scoring"], "params": {"proto": {"seed": -5}}}})
@example(  # inf in free-form params became null in the run's JSON record
    raw={**BASE, "dataset": {"name": "mnist1d", "params": {"num_samples": 500, "x": math.inf}}}
)
@example(  # OverflowError from re.compile
    raw={**BASE, "train": {**BASE["train"], "sparsity": {"include": ["a{99999999999}"]}}}
)
def test_any_value_in_any_config_field_loads_or_is_a_clear_error(
    config_file: Path, raw: dict[str, Any]
) -> None:
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True))
    check_outcome(lambda: load_config(config_file))


YAML_SNIPPETS = st.sampled_from(
    ["- 1\n- 2", "train: {epochs: 1}\ntrain: {epochs: 2}", "a: &x [*x]", "? [1]\n: 2",
     "%YAML 1.1\n---\ntrain: {}", "--- 1\n--- 2", "train:\n\tepochs: 1", "\ufeffname: x"]
)  # fmt: skip


@budget(60)
@given(text=st.one_of(st.text(max_size=200), st.text(max_size=200), YAML_SNIPPETS))
@example(text="\x00")
@example(text="- 1\n- 2")  # not a mapping
@example(text="train: !!python/object/apply:os.system [true]")
def test_any_config_text_loads_or_is_a_clear_error(config_file: Path, text: str) -> None:
    config_file.write_text(text, encoding="utf-8")
    check_outcome(lambda: load_config(config_file))


# PyYAML recurses once per level of nesting: past Python's recursion limit it raised
# RecursionError. Not found by the tests above: Hypothesis raises the recursion limit
# while it runs a test. Its parse time grows with the square of the depth (0.4 s at 800).
DEEP = ["[" * 800, "{a: " * 800, "- " * 800]


@pytest.mark.parametrize("text", DEEP, ids=["flow-list", "flow-map", "block-list"])
def test_deeply_nested_yaml_is_a_clear_error(config_file: Path, text: str) -> None:
    config_file.write_text(f"train:\n  targets:\n    {text}\n")
    for load in (
        lambda: load_config(config_file),
        lambda: _config(None, [f"train.targets={text}"]),
    ):
        with pytest.raises(DataPruningError, match="nests too deeply") as caught:
            load()
        assert_one_line(caught.value)
        assert len(str(caught.value)) < 120  # names the file or the key, not the brackets


# --- --set key=value --------------------------------------------------------

KEY_PARTS = st.sampled_from(
    sorted({str(part) for path in PATHS for part in path if isinstance(part, str)})
) | st.text(max_size=6)
KEYS = st.one_of(
    st.sampled_from([".".join(map(str, path)) for path in PATHS]),
    st.lists(KEY_PARTS, min_size=1, max_size=4).map(".".join),
    st.text(max_size=20),
)
VALUE_TEXT = st.one_of(
    VALUES.map(lambda value: yaml.safe_dump(value, default_flow_style=True).removesuffix("\n")),
    VALUES.map(lambda value: yaml.safe_dump(value).strip()),
    st.text(max_size=30),
    st.sampled_from(["[", "{", "'", '"', "&a 1", "*a", "!!python/name:os.system", "---",
                     "a: b: c", "? x", "%TAG", "@", "`", ".nan", "-.inf", "1e400"]),
)  # fmt: skip
OVERRIDES = st.one_of(
    st.builds(lambda key, value: f"{key}={value}", KEYS, VALUE_TEXT),
    st.text(max_size=40),  # anything at all: no '=', an empty key, a lone '='
)


@budget(150)
@given(overrides=st.lists(OVERRIDES, max_size=4))
@example(overrides=["train.lr=.inf"])
@example(overrides=["train.seed=-1"])
@example(overrides=['train.sparsity.include=["a{99999999999}"]'])
@example(overrides=["train=5", "train.epochs=3"])  # a section replaced by a scalar
@example(overrides=["=", "==", ".=1", "train..lr=1", " =1"])
def test_any_set_override_applies_or_is_a_clear_error(overrides: list[str]) -> None:
    # What the CLI does with --set and no config file ...
    check_outcome(lambda: _config(None, overrides))


@budget(60)
@given(overrides=st.lists(OVERRIDES, min_size=1, max_size=3))
def test_any_set_override_on_a_config_file_applies_or_is_a_clear_error(
    config_file: Path, overrides: list[str]
) -> None:
    # ... and on top of a config file.
    config_file.write_text(yaml.safe_dump(BASE))
    check_outcome(lambda: load_config(config_file, overrides))
