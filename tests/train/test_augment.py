"""Per-batch augmentation: the recipes, their seeding, resume, and KD with an online teacher."""

import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from weights_helper import assert_same_weights

from datapruning.config import KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import Dataset, load_dataset
from datapruning.errors import DataPruningError
from datapruning.train import augment as augment_module
from datapruning.train.augment import AUGMENT_CHOICES, AUGMENTS, Augmenter, Recipe, resolve_recipe
from datapruning.train.loop import RESUME_NAME, train

MLP = ModelConfig(name="mlp", params={"hidden": 32})


def images(n=96, size=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, 3, size, size)).astype(np.float32) * 0.2
    x[np.arange(n), y] += 0.8  # the label is the brightest channel
    y = y.astype(np.int64)
    return Dataset("tiny", x, y, x[:24], y[:24], 3, default_augment="crop_flip")


def cfg(**overrides):
    base = {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


def test_config_choices_are_the_registry():
    literal = typing.get_args(TrainConfig.model_fields["augment"].annotation)
    assert set(literal) == {*AUGMENT_CHOICES, *AUGMENTS}


def test_crop_flip_takes_a_padded_crop_of_each_image_and_maybe_flips_it():
    x = torch.rand(64, 3, 32, 32)
    out = Augmenter(AUGMENTS["crop_flip"], 0, torch.device("cpu"))(x)
    assert out.shape == x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    flipped = 0
    for i in range(len(x)):  # each output is one of the 9 x 9 crops, flipped or not
        found = [
            flip
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(
                out[i],
                padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1)
                if flip
                else padded[i, :, dy : dy + 32, dx : dx + 32],
            )
        ]
        assert found, i
        flipped += found[0]
    assert 10 < flipped < 54  # about half
    assert not torch.equal(out, x)


def test_shift_noise_shifts_each_signal_and_adds_small_noise():
    x = torch.randn(32, 40)
    out = Augmenter(AUGMENTS["shift_noise"], 0, torch.device("cpu"))(x)
    assert out.shape == x.shape
    for i in range(len(x)):
        errors = [(out[i] - x[i].roll(s)).abs().max().item() for s in range(-4, 5)]
        assert min(errors) < 0.5 * x[i].std().item()


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_recipes_are_seeded(name):
    x = torch.rand(16, 3, 8, 8) if name == "crop_flip" else torch.rand(16, 40)
    a = Augmenter(AUGMENTS[name], 3, torch.device("cpu"))
    b = Augmenter(AUGMENTS[name], 3, torch.device("cpu"))
    c = Augmenter(AUGMENTS[name], 4, torch.device("cpu"))
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, c(x))
    assert not torch.equal(first, a(x))  # the next batch draws new views
    # The generator's state restores the stream exactly (the resume state holds it).
    state = a.state_dict()
    after = a(x)
    b.load_state_dict(state)
    assert torch.equal(after, b(x))
    # It leaves the global RNG alone.
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a(x)
    assert torch.equal(torch.rand(3), expected)


def test_auto_follows_the_dataset_and_bad_shapes_are_refused():
    assert resolve_recipe("auto", "crop_flip", (3, 32, 32)).name == "crop_flip"
    assert resolve_recipe("auto", "none", (40,)) is None
    assert resolve_recipe("none", "crop_flip", (3, 32, 32)) is None
    assert resolve_recipe("shift_noise", "none", (40,)).name == "shift_noise"
    with pytest.raises(DataPruningError, match=r"crop_flip does not fit inputs of shape \(64,\)"):
        resolve_recipe("crop_flip", "none", (64,))
    assert load_dataset("digits").default_augment == "none"
    assert load_dataset("mnist1d").default_augment == "none"


def test_natural_image_sources_default_to_crop_flip(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            pixels = np.full((32, 32, 3), 20 * i + (100 if label == "dog" else 0), np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    data = load_dataset("imagefolder", {"root": str(tmp_path)})
    assert data.default_augment == "crop_flip"


def test_training_augments_and_is_deterministic_for_a_seed():
    data = images()
    plain = train(data, MLP, cfg(augment="none"), progress=False)
    a = train(data, MLP, cfg(), progress=False)  # auto: this dataset's crop_flip
    b = train(data, MLP, cfg(), progress=False)
    assert a.summary["augment"] == "crop_flip" and plain.summary["augment"] is None
    assert_same_weights(a.model, b.model)
    assert not torch.equal(
        a.model.state_dict()["net.1.weight"], plain.model.state_dict()["net.1.weight"]
    )
    other_seed = train(data, MLP, cfg(seed=1), progress=False)
    assert not torch.equal(
        a.model.state_dict()["net.1.weight"], other_seed.model.state_dict()["net.1.weight"]
    )


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [5, 6])  # mid-epoch, and at an epoch's end
def test_resume_with_augmentation_is_bit_exact(tmp_path, monkeypatch, checkpoint_every):
    import datapruning.train.loop as loop

    data = images()
    train_cfg = cfg(epochs=4, checkpoint_every=checkpoint_every, deterministic=True)
    whole = train(data, MLP, train_cfg, run_dir=tmp_path / "a", progress=False)
    calls = {"n": 0}
    real = loop.evaluate

    def crash_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise Crash
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "evaluate", crash_second)
        with pytest.raises(Crash):
            train(data, MLP, train_cfg, run_dir=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / RESUME_NAME).exists()
    resumed = train(data, MLP, train_cfg, run_dir=tmp_path / "b", progress=False)
    assert resumed.summary["resumed_from_step"] > 0
    assert_same_weights(whole.model, resumed.model)


@pytest.fixture(scope="module")
def teacher():
    return train(images(), MLP, cfg(epochs=4, augment="none"), progress=False).model


def test_online_teacher_kd_equals_cached_kd_when_augmentation_is_identity(teacher, monkeypatch):
    data = images()
    kd = KDConfig(alpha=0.7, temperature=2.0)
    cached = train(data, MLP, cfg(augment="none"), teacher=teacher, kd=kd, progress=False)
    assert cached.summary["kd_teacher"] == "cached"
    # An identity recipe takes the online path: the teacher runs on each batch.
    identity = Recipe("crop_flip", "identity", lambda x, generator: x, (4,))
    monkeypatch.setitem(augment_module.AUGMENTS, "crop_flip", identity)
    online = train(data, MLP, cfg(augment="crop_flip"), teacher=teacher, kd=kd, progress=False)
    assert online.summary["kd_teacher"] == "online"
    assert online.summary["kd"]["cached_logits"] is False
    assert online.summary["teacher_logits_seconds"] == 0.0
    for key, value in cached.model.state_dict().items():
        torch.testing.assert_close(online.model.state_dict()[key], value, rtol=0, atol=1e-6)
    assert online.summary["final_test_acc"] == cached.summary["final_test_acc"]


def test_online_teacher_sees_the_augmented_batch(teacher, monkeypatch):
    import datapruning.train.step as step

    seen = []
    real = step.TrainStep._teach

    def recording(self, x):
        seen.append(x.clone())
        return real(self, x)

    monkeypatch.setattr(step.TrainStep, "_teach", recording)
    data = images()
    run = train(data, MLP, cfg(epochs=1), teacher=teacher, kd=KDConfig(alpha=0.5), progress=False)
    assert run.summary["kd_teacher"] == "online" and len(seen) == run.summary["steps"]
    # The batches the teacher saw are crops of the training images: only the centred,
    # unflipped ones (1 in 18 here) equal a training image.
    flat = torch.as_tensor(data.x_train).flatten(1)
    rows = torch.cat([batch.flatten(1) for batch in seen])
    unchanged = sum(bool((flat == row).all(dim=1).any()) for row in rows)
    assert unchanged < 0.2 * len(rows)


def test_augmentation_with_cached_logits_only_is_refused(teacher, tmp_path):
    from datapruning.train.evaluation import predict
    from datapruning.train.kd import save_teacher_logits

    data = images()
    path = save_teacher_logits(
        tmp_path / "t.npy", predict(teacher, torch.as_tensor(data.x_train)), data
    )
    with pytest.raises(DataPruningError, match="cannot follow augmented inputs"):
        train(data, MLP, cfg(), teacher=path, kd=KDConfig(), progress=False)
    run = train(data, MLP, cfg(augment="none"), teacher=path, kd=KDConfig(), progress=False)
    assert run.summary["kd_teacher"] == "cached"


def test_pipeline_students_read_the_checkpoint_when_they_augment():
    # orchestration.run_student hands an augmenting KD student the teacher's run
    # directory (online teacher) instead of the logits file.
    from datapruning.pipeline.train_cells import augments

    assert augments(TrainConfig(), images())
    assert not augments(TrainConfig(augment="none"), images())
    assert not augments(TrainConfig(), load_dataset("digits"))
