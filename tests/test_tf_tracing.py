"""robustlab's per-model compiled functions do not set off TensorFlow's
retracing warning (TensorFlow only).

TensorFlow logs "N out of the last M calls to <function> triggered
tf.function retracing" once 5 of the last 40 calls of the `tf.function`s
made from one Python function have traced. Each model traces its own attack,
metrics reset and read, and directional derivatives, so a process that
trained several models briefly used to log it for traces that were all
expected.
"""

import logging

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("the tracing of tf.functions is TensorFlow's", allow_module_level=True)

import tensorflow as tf  # noqa: E402
from tensorflow.python.eager.polymorphic_function import polymorphic_function  # noqa: E402

import robustlab  # noqa: E402
from robustlab.backend.tensorflow.tracing import concrete_function  # noqa: E402
from robustlab.callbacks import HessianProbe, PosteriorTracker  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(0)
X = RNG.random((48, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 10, 48)


@pytest.fixture
def retracing_warnings(monkeypatch):
    """A function returning the retracing warnings TensorFlow logged so far
    in the test, counted by a fresh detector (one that already warned 5
    times for a function stays silent for it)."""
    monkeypatch.setattr(polymorphic_function, "_frequent_tracing_detector_manager",
                        polymorphic_function._FrequentTracingDetectorManager())
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    yield lambda: [m for m in messages if "retracing" in m]
    tf_logger.removeHandler(handler)


def doubled(x):
    return 2.0 * x


def test_the_warning_comes_from_calls_and_not_from_concrete_functions(retracing_warnings):
    x = tf.constant([1.0, 2.0])
    for _ in range(8):
        function = concrete_function(tf.function(doubled), x)
        np.testing.assert_array_equal(function(x).numpy(), [2.0, 4.0])
    assert retracing_warnings() == []
    for _ in range(8):
        tf.function(doubled)(x)
    assert len(retracing_warnings()) >= 1


def test_the_concrete_function_is_the_graph_the_call_runs():
    function = tf.function(doubled)
    x = tf.constant([1.5, -3.0])
    concrete = concrete_function(function, x)
    assert function.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(concrete(x).numpy(), function(x).numpy())
    assert function.experimental_get_tracing_count() == 1


def test_a_python_function_is_refused():
    with pytest.raises(TypeError, match="`function` must be a tf.function.*"
                                        "Received: function of type function"):
        concrete_function(doubled, tf.constant(1.0))


def test_several_short_fits_with_instruments_log_no_retracing_warning(retracing_warnings):
    for seed in range(6):
        net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=seed)
        model = robustlab.AdversarialModel(
            net, attack=robustlab.PGD(0.1, steps=2),
            eval_attack=robustlab.PGD(0.1, step_size=0.05, steps=2), seed=seed)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, metrics=["accuracy"])
        probe = HessianProbe(X[:16], Y[:16], every=1, iterations=2, batch_size=16)
        tracker = PosteriorTracker(probe, batch_size=16, train_size=len(X))
        model.fit(X, Y, batch_size=16, epochs=2, validation_data=(X[:16], Y[:16]),
                  callbacks=[probe, tracker], verbose=0)
        model.evaluate(X[:16], Y[:16], verbose=0)
    assert retracing_warnings() == []


@pytest.mark.parametrize("steps_per_execution", [3, 1])
def test_several_short_fits_of_several_steps_a_call_log_no_retracing_warning(
        retracing_warnings, steps_per_execution):
    # An epoch a call (as `experiments.run` trains): a few calls a model.
    for seed in range(6):
        net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=seed)
        model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.1, steps=2), seed=seed)
        model.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)
        model.fit(X, Y, batch_size=16, epochs=2, validation_data=(X[:16], Y[:16]),
                  verbose=0)
    assert retracing_warnings() == []


def test_products_on_several_models_and_fresh_losses_log_no_retracing_warning(
        retracing_warnings):
    # The first trace on each model is expected, and equal losses share it.
    for _ in range(6):
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10)])
        for _ in range(3):
            operator = robustlab.curvature.HessianOperator(
                net, X[:16], Y[:16],
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            operator.matvec(np.ones(operator.dim))
            operator.gradient()
    assert retracing_warnings() == []
