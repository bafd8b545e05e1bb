"""robustlab's use of Keras's private API goes through `robustlab._keras_compat`
alone; what it reads is what Keras means by it; and a Keras without one of
the private symbols is refused at import, with a message saying what is
missing, which Keras is installed and which are supported."""

import ast
import importlib
import math
import pathlib
import re

import keras
import numpy as np
import pytest

import robustlab
from robustlab import _keras_compat

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "robustlab"
COMPAT = PACKAGE / "_keras_compat.py"
OTHER_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != COMPAT)

# The private Keras API robustlab uses (see `_keras_compat`'s docstring).
USED_PRIVATE_NAMES = {
    "_compile_config",
    "_compile_loss",
    "_compute_loss",
    "_learning_rate",
    "_loss_tracker",
    "_use_weight_decay",
    "_value",
    "compute_loss_and_updates",
    "no_automatic_dependency_tracking",
    "unscale_loss_for_distribution",
}


def _keras_private_names():
    """The private names Keras's models, layers, optimizers, variables,
    metrics and callbacks define, on the classes and on instances."""
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    net.compile(optimizer="sgd", loss="mse")
    instances = [
        net, keras.optimizers.SGD(0.1), keras.Variable(0.0), keras.metrics.Mean(),
        keras.callbacks.Callback(), keras.random.SeedGenerator(0),
    ]
    names = set()
    for obj in instances:
        names |= set(dir(type(obj))) | set(vars(obj))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_keras_uses(path, keras_private):
    """(line, what) for each use of a Keras private in the module at `path`:
    a `keras.src` reference, an attribute in `USED_PRIVATE_NAMES` or one of
    Keras's private names read from an object (on `self`, only the names
    the module does not set or define itself), a `getattr` of one by name, and an
    import of one by name."""
    source = path.read_text()
    tree = ast.parse(source)
    uses = [
        (source.count("\n", 0, m.start()) + 1, "keras.src")
        for m in re.finditer(r"keras\.src", source)
    ]
    own = {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name) and node.value.id == "self"
    } | {
        node.name for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            on = node.value.id if isinstance(node.value, ast.Name) else None
            if on == "_keras_compat":
                continue
            if node.attr in USED_PRIVATE_NAMES or (
                    node.attr in keras_private
                    and not (on == "self" and node.attr in own)):
                uses.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in USED_PRIVATE_NAMES | keras_private):
            uses.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and any(
                a.name in USED_PRIVATE_NAMES for a in node.names):
            uses.append((node.lineno, ast.unparse(node)))
    return sorted(set(uses))


@pytest.fixture(scope="module")
def keras_private():
    return _keras_private_names()


# -- (a) only _keras_compat touches Keras's private API ------------------------


@pytest.mark.parametrize("path", OTHER_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_keras_compat_uses_a_keras_private(path, keras_private):
    assert _private_keras_uses(path, keras_private) == []


def test_the_scan_finds_each_kind_of_private_use(tmp_path, keras_private):
    module = tmp_path / "module.py"
    module.write_text(
        "from keras.src.utils import tracking\n"
        "from somewhere import unscale_loss_for_distribution\n"
        "loss = model._compute_loss(x=x)\n"
        "tracker = self._loss_tracker\n"
        "schedule = getattr(optimizer, '_learning_rate', None)\n"
        "self._robust_loss_tracker = None\n"
        "kept = self._robust_loss_tracker\n"
        "fine = _keras_compat.unscale_loss_for_distribution\n"
    )
    assert [line for line, _ in _private_keras_uses(module, keras_private)] == [1, 2, 3, 4, 5]


# -- (b) the accessors read what Keras means by them ---------------------------


def _regularised_model(loss):
    """A compiled AdversarialModel around Dense(2) with kernel ones, bias
    zeros and L2(0.1) on the kernel: regularisation loss 0.1 * 4 = 0.4."""
    dense = keras.layers.Dense(
        2, kernel_initializer="ones", kernel_regularizer=keras.regularizers.L2(0.1))
    net = keras.Sequential([keras.Input((2,)), dense])
    model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.1, steps=1))
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    return model


@pytest.fixture
def model():
    return _regularised_model(keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def test_compiled_loss_function_is_the_data_loss_alone(model):
    # Logits (0, log 3): p(class 1) = 3/4.
    y_pred = np.array([[0.0, math.log(3.0)]], "float32")
    loss = _keras_compat.compiled_loss_function(model)(np.array([1]), y_pred)
    assert float(loss) == pytest.approx(math.log(4.0 / 3.0), rel=1e-6)


def test_compute_loss_adds_the_regularisation_losses(model):
    x = np.zeros((1, 2), "float32")  # logits 0: the data loss is log 2
    loss = _keras_compat.compute_loss(
        model, x, np.array([0]), model(x), None, training=False)
    assert float(loss) == pytest.approx(math.log(2.0) + 0.4, rel=1e-6)


def test_loss_tracker_is_the_mean_keras_reports_as_loss(model):
    tracker = _keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    logs = model.evaluate(np.zeros((4, 2), "float32"), np.array([0, 1, 0, 1]),
                          verbose=0, return_dict=True)
    assert float(tracker.result()) == logs["loss"]


def test_saved_compile_arguments_are_what_get_compile_config_saves():
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _regularised_model(loss)
    saved = _keras_compat.saved_compile_arguments(model)
    assert saved["loss"] is loss
    assert saved["metrics"] == ["accuracy"]
    saved["metrics"] = ["changed"]
    assert model.get_compile_config()["metrics"] == ["changed"]


def test_learning_rate_schedule_is_the_schedule_the_optimizer_was_given():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert _keras_compat.learning_rate_schedule(keras.optimizers.SGD(schedule)) is schedule


def test_a_fixed_learning_rate_has_no_schedule():
    assert _keras_compat.learning_rate_schedule(keras.optimizers.SGD(0.1)) is None


def test_mean_metric_function_is_the_wrapped_function_and_its_arguments():
    def hits(y_true, y_pred, k):
        return keras.metrics.sparse_top_k_categorical_accuracy(y_true, y_pred, k=k)

    fn, fn_kwargs = _keras_compat.mean_metric_function(
        keras.metrics.MeanMetricWrapper(hits, name="hits", k=2))
    assert fn is hits and fn_kwargs == {"k": 2}


def test_nnx_enabled_is_keras_own_setting():
    assert _keras_compat.nnx_enabled() is bool(keras.config.is_nnx_enabled())


def test_a_keras_before_nnx_has_it_disabled(monkeypatch):
    # keras.config.is_nnx_enabled exists from Keras 3.11; the JAX trainer
    # called it unguarded (AttributeError on 3.8-3.10, which the pin allows).
    monkeypatch.delattr(keras.config, "is_nnx_enabled")
    assert _keras_compat.nnx_enabled() is False


def test_applies_weight_decay_follows_exclude_from_weight_decay():
    dense = keras.layers.Dense(2)
    dense.build((None, 2))
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    assert _keras_compat.applies_weight_decay(optimizer, dense.kernel) is True
    assert _keras_compat.applies_weight_decay(optimizer, dense.bias) is False


def test_a_variable_holding_its_value_is_not_detached():
    assert _keras_compat.is_detached(keras.Variable(1.0)) is False


def test_no_automatic_dependency_tracking_keeps_assigned_metrics_out_of_metrics():
    class Holder(keras.layers.Layer):
        @_keras_compat.no_automatic_dependency_tracking
        def untracked(self):
            self.items = [keras.metrics.Mean()]

        def tracked(self):
            self.items = [keras.metrics.Mean()]

    holder = Holder()
    holder.untracked()
    assert holder.metrics == []
    holder.tracked()
    assert holder.metrics == holder.items


def test_unscale_loss_for_distribution_is_the_identity_outside_a_strategy():
    value = keras.ops.convert_to_tensor(2.5)
    assert float(_keras_compat.unscale_loss_for_distribution(value)) == 2.5


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX trainer's method")
def test_stateless_loss_and_updates_gives_the_loss_with_regularisation(model):
    x = np.zeros((1, 2), "float32")
    model.optimizer.build(model.trainable_variables)
    loss, (unscaled, y_pred, _, _) = _keras_compat.stateless_loss_and_updates(model)(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.metrics_variables],
        x, np.array([0]), None, training=False,
        optimizer_variables=[v.value for v in model.optimizer.variables],
    )
    assert float(loss) == float(unscaled) == pytest.approx(math.log(2.0) + 0.4, rel=1e-6)
    assert np.asarray(y_pred).tolist() == [[0.0, 0.0]]


# -- (c) a Keras without what the module needs is refused, loudly --------------


def _import_error_without(monkeypatch, owner, name):
    """The error of importing `_keras_compat` with `owner.name` removed;
    the module is imported again, intact, afterwards."""
    monkeypatch.delattr(owner, name)
    try:
        with pytest.raises(ImportError) as info:
            importlib.reload(_keras_compat)
    finally:
        monkeypatch.undo()
        importlib.reload(_keras_compat)
    return str(info.value)


def test_a_keras_without_a_private_function_fails_at_import(monkeypatch):
    loss_module = importlib.import_module("keras.src.losses.loss")
    message = _import_error_without(
        monkeypatch, loss_module, "unscale_loss_for_distribution")
    assert "`keras.src.losses.loss.unscale_loss_for_distribution`" in message
    assert f"Keras {keras.__version__} does not provide" in message
    assert f"known to work with Keras {_keras_compat.SUPPORTED_KERAS}" in message


def test_a_keras_without_a_private_method_fails_at_import(monkeypatch):
    trainer = importlib.import_module("keras.src.trainers.trainer").Trainer
    message = _import_error_without(monkeypatch, trainer, "_compute_loss")
    assert "`Trainer._compute_loss`" in message
    assert f"Keras {keras.__version__} does not provide" in message


def test_a_compiled_model_without_a_private_attribute_fails_when_read(model):
    del model._loss_tracker
    with pytest.raises(AttributeError) as info:
        _keras_compat.loss_tracker(model)
    message = str(info.value)
    assert "`Trainer._loss_tracker`" in message
    assert f"Keras {keras.__version__} does not provide" in message
    assert message.endswith("Received: AdversarialModel without `_loss_tracker`")
