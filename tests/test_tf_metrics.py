"""A model's metrics reset and read in one compiled call each (TensorFlow).

The reference is Keras's own eager `reset_state` and `result` on the same
metrics in the same states: the values must be the same bit for bit.
"""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("the compiled reset and read are TensorFlow's", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from robustlab import backend as _backend  # noqa: E402
from robustlab.backend.tensorflow.metrics import MetricsInOneCall  # noqa: E402
from tests.test_adversarial_model import small_cnn_model  # noqa: E402
from tests.test_tf_tracing import retracing_warnings  # noqa: E402, F401 (a fixture)

RNG = np.random.default_rng(0)
X = RNG.random((40, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 10, 40)


def updated_metrics():
    """Keras metrics with states that are not round numbers."""
    mean = keras.metrics.Mean(name="mean")
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    auc = keras.metrics.AUC(name="auc")
    mean.update_state(RNG.random(7).astype("float32"), sample_weight=RNG.random(7))
    accuracy.update_state(RNG.integers(0, 3, 11), RNG.random((11, 3)))
    auc.update_state(RNG.integers(0, 2, 13), RNG.random(13))
    return [mean, accuracy, auc]


class CountingResets(keras.metrics.Mean):
    """A metric that keeps Python state in its own reset_state."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.resets = 0

    def reset_state(self):
        self.resets += 1
        super().reset_state()


class DictResult(keras.metrics.Mean):
    def result(self):
        return {"half": super().result() / 2, "double": super().result() * 2}


def test_results_are_keras_own_bit_for_bit():
    metrics = updated_metrics()
    expected = {m.name: float(m.result()) for m in metrics}
    ours = {name: float(value) for name, value in MetricsInOneCall(metrics).results().items()}
    assert ours == expected
    assert list(ours) == ["mean", "accuracy", "auc"]


def test_reset_gives_every_variable_its_fresh_value():
    metrics = updated_metrics()
    MetricsInOneCall(metrics).reset()
    for metric, fresh in zip(metrics, [keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy(),
                                       keras.metrics.AUC()]):
        for ours, theirs in zip(metric.variables, fresh.variables):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_each_reset_and_read_is_one_traced_call():
    metrics = MetricsInOneCall(updated_metrics())
    for _ in range(3):
        metrics.reset()
        metrics.results()
    assert metrics._reset.experimental_get_tracing_count() == 1
    assert metrics._results.experimental_get_tracing_count() == 1


def test_many_models_in_one_process_log_no_retracing_warning(retracing_warnings):
    # Each model traces its own reset and read once; TensorFlow counts those
    # traces together (`robustlab/backend/tensorflow/tracing.py`), so a
    # notebook that trains a few models briefly used to log "triggered
    # tf.function retracing".
    for _ in range(8):
        metrics = MetricsInOneCall(updated_metrics())
        metrics.reset()
        metrics.results()
    assert retracing_warnings() == []


def test_a_metric_with_its_own_reset_state_is_reset_eagerly_every_time():
    counting = CountingResets(name="counting")
    metrics = MetricsInOneCall([keras.metrics.Mean(name="mean"), counting])
    for _ in range(3):
        metrics.reset()
    assert counting.resets == 3


def test_a_metric_with_its_own_dict_result_contributes_its_entries_in_order():
    dict_metric = DictResult(name="pair")
    dict_metric.update_state([2.0, 4.0])
    mean = keras.metrics.Mean(name="mean")
    mean.update_state([1.0])
    results = MetricsInOneCall([mean, dict_metric]).results()
    assert list(results) == ["mean", "half", "double"]
    assert [float(v) for v in results.values()] == [1.0, 1.5, 6.0]


def test_other_metrics_or_variables_are_not_served():
    metrics = updated_metrics()
    kept = MetricsInOneCall(metrics)
    assert kept.serves(list(metrics))
    assert not kept.serves(metrics[:2])
    assert not kept.serves(metrics[:2] + [keras.metrics.AUC(name="auc")])


def test_under_a_distribution_strategy_keras_own_eager_reset_runs():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = small_cnn_model()
        assert _backend.get().metrics_in_one_call(model) is None


def _history(model):
    model.fit(X, Y, batch_size=16, epochs=3, validation_data=(X[:16], Y[:16]), verbose=0)
    return model.history.history, model.evaluate(X, Y, batch_size=16, verbose=0,
                                                 return_dict=True)


def test_fit_and_evaluate_log_keras_own_values_bit_for_bit(monkeypatch):
    ours = _history(small_cnn_model())
    assert isinstance(small_cnn_model()._metrics_in_one_call(), MetricsInOneCall)
    monkeypatch.setattr(_backend.get(), "metrics_in_one_call", lambda model: None)
    assert small_cnn_model()._metrics_in_one_call() is None
    theirs = _history(small_cnn_model())
    assert ours == theirs


def test_a_recompiled_model_resets_and_reads_its_new_metrics():
    model = small_cnn_model()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3)])
    logs = model.fit(X, Y, batch_size=16, epochs=1, verbose=0).history
    assert "robust_sparse_top_k_categorical_accuracy" in logs
    assert set(model.get_metrics_result()) == {m.name for m in model.metrics}
    model.reset_metrics()
    for metric in model.metrics:
        for variable in metric.variables:
            assert not np.any(variable.numpy())
