"""Saving, loading and exporting an `AdversarialModel`: what is saved comes
back whole (Keras's constructor arguments, the optimizer and its state, the
attack seeds), a format that cannot hold it all is refused, and configs
or weights that are incomplete fail with errors that say what is wrong."""

import keras
import numpy as np
import pytest

import robustlab

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
X = np.random.default_rng(0).random((48, 6), dtype="float32")
Y = np.arange(48) % 3


def classifier():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3)])


def trained(**kwargs):
    model = robustlab.AdversarialModel(classifier(), attack=robustlab.PGD(0.1, steps=2),
                                       **kwargs)
    model.compile(keras.optimizers.Adam(0.01), LOGITS_CE, metrics=["accuracy"])
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    return model


def continue_fit(model):
    history = model.fit(X, Y, batch_size=16, epochs=2, initial_epoch=1, verbose=0).history
    return history, model.get_weights()


# -- export ---------------------------------------------------------------------------


def test_export_after_fit_serves_what_predict_returns(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model = trained()
    try:
        model.export(str(tmp_path / "served"), verbose=False)
    except NotImplementedError as error:  # a backend Keras cannot export from
        pytest.skip(str(error))
    artifact = tf.saved_model.load(str(tmp_path / "served"))  # kept: serve reads its variables
    np.testing.assert_allclose(np.asarray(artifact.serve(X[:5])), model.predict(X[:5], verbose=0),
                               rtol=1e-6)


# -- Keras's constructor arguments ---------------------------------------------------


@pytest.fixture
def mixed_precision_pair(tmp_path):
    """A mixed-precision model after one epoch, and its saved and loaded copy."""
    model = trained(dtype="mixed_float16")
    path = str(tmp_path / "model.keras")
    model.save(path)
    return model, keras.saving.load_model(path)


def test_loading_keeps_the_dtype_policy_and_the_loss_scale_optimizer(mixed_precision_pair):
    model, loaded = mixed_precision_pair
    assert loaded.dtype_policy.name == "mixed_float16"
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 3


def test_a_loaded_mixed_precision_model_trains_on_bit_for_bit(mixed_precision_pair):
    model, loaded = mixed_precision_pair
    (history, weights), (loaded_history, loaded_weights) = (
        continue_fit(model), continue_fit(loaded))
    assert loaded_history == history
    for a, b in zip(loaded_weights, weights):
        np.testing.assert_array_equal(a, b)


def test_trainable_false_survives_the_config():
    model = robustlab.AdversarialModel(classifier(), attack=robustlab.PGD(0.1, steps=2),
                                       trainable=False)
    assert robustlab.AdversarialModel.from_config(model.get_config()).trainable is False


# -- the legacy HDF5 format ------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.h5", "model.hdf5"])
def test_saving_to_legacy_hdf5_is_refused_and_writes_nothing(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(ValueError, match=r"attack seeds.*optimizer state.*\.keras") as raised:
        trained().save(path)
    assert str(raised.value).endswith(f"Received: filepath={path!r}")
    assert list(tmp_path.iterdir()) == []


def test_model_checkpoint_to_legacy_hdf5_is_refused(tmp_path):
    model = robustlab.AdversarialModel(classifier(), attack=robustlab.PGD(0.1, steps=2))
    model.compile("sgd", LOGITS_CE)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.h5"))
    with pytest.raises(ValueError, match="legacy HDF5"):
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0, callbacks=[checkpoint])


# -- incomplete configs and weights ------------------------------------------------------


def config_without(key):
    model = robustlab.AdversarialModel(classifier(), attack=robustlab.PGD(0.1, steps=2))
    config = model.get_config()
    del config[key]
    return config


def test_a_config_without_eval_attack_evaluates_with_the_training_attack():
    loaded = robustlab.AdversarialModel.from_config(config_without("eval_attack"))
    assert loaded.eval_attack == loaded.attack == robustlab.PGD(0.1, steps=2)


def test_a_config_without_awp_has_no_awp():
    assert robustlab.AdversarialModel.from_config(config_without("awp")).awp is None


@pytest.mark.parametrize("key", ["model", "attack"])
def test_a_config_without_the_model_or_the_attack_is_refused(key):
    with pytest.raises(ValueError, match=rf"`config` must hold the key '{key}'") as raised:
        robustlab.AdversarialModel.from_config(config_without(key))
    assert "Received: config with keys [" in str(raised.value)


@pytest.mark.parametrize("attack", [None, "pgd", ["eps", 0.1]])
def test_an_attack_config_that_is_not_a_dict_is_refused(attack):
    config = dict(config_without("eval_attack"), attack=attack)
    with pytest.raises(TypeError, match="`config`.*'attack' as a dict") as raised:
        robustlab.AdversarialModel.from_config(config)
    assert str(raised.value).endswith(f"Received: config with attack={attack!r}")


def test_a_config_that_is_not_a_dict_is_refused():
    with pytest.raises(TypeError, match=r"`config` must be a dict.*Received: config=None$"):
        robustlab.AdversarialModel.from_config(None)


def test_weights_with_only_one_attack_seed_are_refused():
    model = trained()
    store = {}
    model.save_own_variables(store)
    del store["eval_attack_seed"]
    with pytest.raises(ValueError, match=r"both attack seeds.*or neither") as raised:
        model.load_own_variables(store)
    assert str(raised.value).endswith("Received: saved attack seeds ['train_attack_seed']")
