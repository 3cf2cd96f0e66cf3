import random
from dataclasses import replace

import numpy as np
import pytest

from datapruning.data.dataset import Dataset
from datapruning.data.sources import SOURCES, load_dataset
from datapruning.errors import ConfigError, DataPruningError, UnknownNameError


@pytest.fixture(scope="module")
def mnist1d_default():
    return load_dataset("mnist1d")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_registry_lists_the_bundled_sources():
    assert {"mnist1d", "digits"} <= set(SOURCES)


def test_mnist1d_default_shape(mnist1d_default):
    ds = mnist1d_default
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (4000, 40)
    assert ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,)
    assert ds.y_test.shape == (1000,)
    assert ds.input_shape == (40,)
    assert ds.num_train == 4000
    assert ds.num_classes == 10
    assert ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert ds.default_model == "convnet1d"
    assert "4000 train / 1000 test" in ds.describe()


def test_mnist1d_num_samples_option():
    ds = load_dataset("mnist1d", {"num_samples": 200})
    assert len(ds.y_train) == 160
    assert len(ds.y_test) == 40
    assert ds.x_train.shape[1] == 40
    assert ds.params["num_samples"] == 200
    ds = load_dataset("mnist1d", {"num_samples": 200, "train_split": 0.5})
    assert len(ds.y_train) == len(ds.y_test) == 100


def test_mnist1d_is_deterministic_for_a_seed():
    a = load_dataset("mnist1d", {"num_samples": 200, "seed": 3})
    b = load_dataset("mnist1d", {"num_samples": 200, "seed": 3})
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.fingerprint == b.fingerprint


def test_mnist1d_different_seed_gives_different_data():
    a = load_dataset("mnist1d", {"num_samples": 200, "seed": 1})
    b = load_dataset("mnist1d", {"num_samples": 200, "seed": 2})
    assert not np.array_equal(a.x_train, b.x_train)
    assert a.fingerprint != b.fingerprint


def test_fingerprint_is_stable_and_identifies_the_training_set(digits):
    fp = digits.fingerprint
    assert fp.startswith("v2:") and len(fp) == 19  # the version, then 16 hex digits
    int(fp.removeprefix("v2:"), 16)
    assert digits.fingerprint == fp
    assert load_dataset("digits").fingerprint == fp
    # A copy of the arrays hashes the same.
    copy = replace(digits, x_train=digits.x_train.copy(), y_train=digits.y_train.copy())
    assert copy.fingerprint == fp
    # One changed label or one changed value changes it.
    y = digits.y_train.copy()
    y[0] = (y[0] + 1) % 10
    assert replace(digits, y_train=y).fingerprint != fp
    x = digits.x_train.copy()
    x[5, 3] += 0.5
    assert replace(digits, x_train=x).fingerprint != fp
    # Fewer examples change it too.
    assert (
        replace(digits, x_train=digits.x_train[:-1], y_train=digits.y_train[:-1]).fingerprint != fp
    )
    # The test split is not part of the fingerprint.
    assert replace(digits, x_test=digits.x_test[:10], y_test=digits.y_test[:10]).fingerprint == fp


def test_loading_mnist1d_restores_global_rngs():
    np.random.seed(1234)
    random.seed(99)
    np_state = np.random.get_state()
    py_state = random.getstate()
    expected_np = np.random.RandomState()
    expected_np.set_state(np_state)
    expected_py = random.Random()
    expected_py.setstate(py_state)

    load_dataset("mnist1d", {"num_samples": 100, "seed": 5})

    after = np.random.get_state()
    assert after[0] == np_state[0]
    np.testing.assert_array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
    assert random.getstate() == py_state
    # The next draws are the ones the caller would have got without the load.
    np.testing.assert_array_equal(np.random.random(5), expected_np.random_sample(5))
    assert [random.random() for _ in range(5)] == [expected_py.random() for _ in range(5)]


def test_digits(digits):
    assert digits.x_train.shape == (1347, 64)
    assert digits.x_test.shape == (450, 64)
    assert digits.num_classes == 10
    assert digits.default_model == "mlp"
    assert digits.x_train.dtype == np.float32
    assert digits.y_train.dtype == np.int64
    assert digits.x_train.min() >= 0.0
    assert digits.x_train.max() <= 1.0
    assert digits.x_train.max() == 1.0
    # Stratified split: every class appears in both splits.
    assert set(np.unique(digits.y_train)) == set(range(10))
    assert set(np.unique(digits.y_test)) == set(range(10))


def test_digits_split_depends_on_seed(digits):
    same = load_dataset("digits", {"seed": 0})
    other = load_dataset("digits", {"seed": 1})
    np.testing.assert_array_equal(same.x_train, digits.x_train)
    assert other.fingerprint != digits.fingerprint
    smaller = load_dataset("digits", {"test_fraction": 0.5})
    assert len(smaller.y_test) + len(smaller.y_train) == 1797
    assert abs(len(smaller.y_test) - 1797 / 2) <= 1


def test_unknown_dataset_names_the_choices():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "'imagenet'" in message
    for name in SOURCES:
        assert name in message
    assert isinstance(info.value, DataPruningError)
    assert info.value.choices == sorted(SOURCES)


def test_unknown_option_raises_config_error():
    with pytest.raises(ConfigError, match="bogus"):
        load_dataset("mnist1d", {"bogus": 1})
    with pytest.raises(ConfigError, match="num_sample"):
        load_dataset("mnist1d", {"num_sample": 100})
    with pytest.raises(ConfigError, match="num_samples"):
        load_dataset("mnist1d", {"num_samples": 5})
    with pytest.raises(ConfigError, match="multiple of 10"):
        load_dataset("mnist1d", {"num_samples": 205})
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("digits", {"test_fraction": 1.5})
