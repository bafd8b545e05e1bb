"""Specifications of adversarial weight perturbation (AWP) in AdversarialModel."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robustlab
from robustlab import attacks
from robustlab.awp import layerwise_relative_perturbation
from tests.conftest import softmax_regression
from tests.test_attacks import B3
from tests.test_attacks import W3
from tests.test_attacks import X6
from tests.test_attacks import Y6
from tests.test_attacks import softmax

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
FIXED_ATTACK = robustlab.PGD(eps=0.1, steps=3, random_start=False)


def awp_model(net, awp, lr=0.5, attack=FIXED_ATTACK, jit_compile="auto"):
    model = robustlab.AdversarialModel(net, attack=attack, awp=awp)
    model.compile(keras.optimizers.SGD(lr), LOGITS_CE, metrics=["accuracy"],
                  jit_compile=jit_compile)
    return model


def cross_entropy_gradients(weights, bias, x, y):
    """Softmax regression: dCE/dW = x^T (p - onehot) / B, dCE/db = mean(p - onehot)."""
    p = softmax(x.astype("float64") @ weights + bias)
    p[np.arange(len(y)), y] -= 1.0
    return x.T.astype("float64") @ p / len(y), p.mean(axis=0)


# -- the perturbation maths --------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    w=hnp.arrays("float32", (3, 4), elements=st.floats(-5, 5, width=32)),
    g=hnp.arrays("float32", (3, 4), elements=st.floats(-5, 5, width=32)),
    gamma=st.floats(0, 0.1),
)
def test_each_perturbed_layer_moves_by_gamma_times_its_norm(w, g, gamma):
    (v,) = layerwise_relative_perturbation([w], [g], gamma, [True])
    v = keras.ops.convert_to_numpy(v)
    if np.linalg.norm(g) > 0:
        # float32 on every backend (JAX has no float64 by default).
        assert np.linalg.norm(v) == pytest.approx(gamma * np.linalg.norm(w), rel=1e-5,
                                                  abs=1e-6)
        # v points along the gradient (an ascent direction).
        assert np.sum(v * g) >= 0
    else:
        np.testing.assert_array_equal(v, 0.0)


def test_unselected_variables_get_no_perturbation():
    perturbations = layerwise_relative_perturbation(
        [np.ones(3), np.ones(2)], [np.ones(3), np.ones(2)], 0.1, [True, False])
    assert perturbations[1] is None


def test_the_default_selection_is_the_kernels():
    net = robustlab.models.small_cnn(filters=(4, 8), dense=16)
    mask = robustlab.AWP(0.01).select(net.trainable_variables)
    chosen = [v.path for v, m in zip(net.trainable_variables, mask) if m]
    assert chosen and all(p.endswith("kernel") for p in chosen)
    assert len(chosen) == 4  # two convolutions and two dense layers
    assert all(robustlab.AWP(0.01, variables="all").select(net.trainable_variables))


# -- the training step -----------------------------------------------------------------


def test_gamma_zero_trains_bitwise_like_plain_pgd(digits):
    def train(awp):
        # With weight decay: regularisation losses are read through the scope.
        net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=1,
                                         weight_decay=5e-4)
        model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.1, steps=3),
                                           awp=awp, seed=1)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOGITS_CE)
        model.fit(digits.x_train[:256], digits.y_train[:256], batch_size=64,
                  epochs=2, verbose=0)
        return model.model.get_weights()

    for plain, zero in zip(train(None), train(robustlab.AWP(gamma=0.0))):
        np.testing.assert_array_equal(plain, zero)


def activity_regularized_net():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(6, activation="relu",
                           activity_regularizer=keras.regularizers.L2(0.5)),
        keras.layers.Dense(3)])


def test_gamma_zero_keeps_activity_regularisation_bitwise_like_plain_pgd():
    # The losses a layer adds in its call (an activity regulariser) count in
    # the training loss with AWP as without it.
    x = np.random.default_rng(0).random((32, 5), dtype="float32")
    y = np.arange(32) % 3

    def train(awp):
        model = awp_model(activity_regularized_net(), awp, lr=0.1)
        logs = model.train_on_batch(x, y, return_dict=True)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return logs, model.model.get_weights()

    (plain_logs, plain), (zero_logs, zero) = train(None), train(robustlab.AWP(gamma=0.0))
    assert plain_logs["loss"] > plain_logs["robust_loss"]  # the activity term is in
    assert zero_logs["loss"] == plain_logs["loss"]
    for a, b in zip(plain, zero):
        np.testing.assert_array_equal(a, b)


def test_evaluate_counts_activity_regularisation_as_keras_does():
    x = np.random.default_rng(1).random((16, 5), dtype="float32")
    y = np.arange(16) % 3
    model = awp_model(activity_regularized_net(), None)
    x_adv = attacks.pgd(model.model, x, y, eps=0.1, steps=3, random_start=False,
                        loss=LOGITS_CE)
    model.model.compile(loss=LOGITS_CE)
    keras_loss = model.model.evaluate(x_adv, y, batch_size=16, verbose=0)
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert logs["loss"] > logs["robust_loss"]
    assert logs["loss"] == pytest.approx(keras_loss, rel=1e-5)


def test_one_awp_step_equals_the_closed_form_update():
    gamma, lr = 0.05, 0.5
    x_adv = attacks.pgd(softmax_regression(W3, B3), X6, Y6, **FIXED_ATTACK.get_config())
    grad_w, _ = cross_entropy_gradients(W3, B3, x_adv, Y6)
    v = gamma * np.linalg.norm(W3) * grad_w / np.linalg.norm(grad_w)  # kernel only
    grad_w_at_v, grad_b_at_v = cross_entropy_gradients(W3 + v, B3, x_adv, Y6)

    model = awp_model(softmax_regression(W3, B3), robustlab.AWP(gamma), lr=lr)
    model.fit(X6, Y6, batch_size=len(X6), epochs=1, shuffle=False, verbose=0)
    w, b = model.model.get_weights()
    np.testing.assert_allclose(w, W3 - lr * grad_w_at_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, B3 - lr * grad_b_at_v, rtol=1e-5, atol=1e-6)


def test_an_awp_step_run_eagerly_equals_the_compiled_one():
    def trained(run_eagerly):
        model = awp_model(softmax_regression(W3, B3), robustlab.AWP(0.05))
        model.compile(keras.optimizers.SGD(0.5), LOGITS_CE, run_eagerly=run_eagerly)
        history = model.fit(X6, Y6, batch_size=len(X6), epochs=1, shuffle=False,
                            verbose=0)
        return model.model.get_weights(), history.history["awp_gamma"]

    (eager_weights, eager_gamma), (weights, gamma) = trained(True), trained(False)
    assert eager_gamma == pytest.approx([0.05]) and gamma == pytest.approx([0.05])
    for a, b in zip(eager_weights, weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_no_trace_of_the_perturbation_remains_after_a_step(jit_compile):
    # With a zero learning rate the update is zero, so the weights after any
    # number of steps must be the weights before: w + v must not leak.
    model = awp_model(softmax_regression(W3, B3),
                      robustlab.AWP(0.5, variables="all"), lr=0.0,
                      jit_compile=jit_compile)
    model.fit(X6, Y6, batch_size=4, epochs=2, verbose=0)
    w, b = model.model.get_weights()
    np.testing.assert_array_equal(w, W3)
    np.testing.assert_array_equal(b, B3)


def test_the_loss_at_the_perturbed_weights_is_higher_on_average(digits):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    model = awp_model(net, robustlab.AWP(0.02), lr=0.05,
                      attack=robustlab.PGD(0.1, steps=3))
    history = model.fit(digits.x_train[:512], digits.y_train[:512], batch_size=64,
                        epochs=3, verbose=0).history
    assert all(p > w for p, w in zip(history["awp_perturbed_loss"],
                                     history["robust_loss"]))


def test_logs_show_gamma_and_both_losses_and_follow_the_warmup(digits):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    model = awp_model(net, robustlab.AWP(0.01, warmup_epochs=2), lr=0.05)
    history = model.fit(digits.x_train[:128], digits.y_train[:128], batch_size=64,
                        epochs=4, verbose=0).history
    np.testing.assert_allclose(history["awp_gamma"], [0, 0, 0.01, 0.01], rtol=1e-6)
    # During the warm-up w + v = w: both losses agree.
    np.testing.assert_allclose(history["awp_perturbed_loss"][:2], history["loss"][:2],
                               rtol=1e-6)


def test_a_schedule_and_set_awp_gamma_change_gamma_during_training(digits):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    model = awp_model(net, robustlab.AWP(0.01, schedule=lambda epoch: 0.001 * epoch))
    history = model.fit(digits.x_train[:128], digits.y_train[:128], batch_size=64,
                        epochs=3, verbose=0).history
    np.testing.assert_allclose(history["awp_gamma"], [0.0, 0.001, 0.002], rtol=1e-5)
    model.set_awp_gamma(0.03)
    assert float(model.awp_gamma.numpy()) == pytest.approx(0.03)


def test_awp_models_save_and_load(tmp_path):
    model = awp_model(softmax_regression(W3, B3), robustlab.AWP(0.01, warmup_epochs=1))
    model.fit(X6, Y6, epochs=1, verbose=0)
    model.save(str(tmp_path / "awp.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "awp.keras"))
    assert loaded.awp == model.awp
    history = loaded.fit(X6, Y6, epochs=1, verbose=0).history
    assert "awp_perturbed_loss" in history


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gamma": -0.01}, ValueError, r"`gamma`.*>= 0.*Received: gamma=-0.01"),
        ({"gamma": float("nan")}, ValueError, r"`gamma`.*finite.*Received: gamma=nan"),
        ({"gamma": 0.01, "warmup_epochs": -1}, ValueError,
         r"`warmup_epochs`.*>= 0.*Received: warmup_epochs=-1"),
        ({"gamma": 0.01, "variables": "("}, ValueError, r"`variables`.*regular"),
        ({"gamma": 0.01, "variables": 3}, TypeError, r"`variables`"),
    ],
)
def test_bad_awp_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        robustlab.AWP(**kwargs)


def test_a_selection_that_matches_nothing_is_rejected():
    with pytest.raises(ValueError, match=r"selects none.*Received: variables='nope'"):
        robustlab.AdversarialModel(softmax_regression(W3, B3), attack=FIXED_ATTACK,
                                   awp=robustlab.AWP(0.01, variables="nope"))


def test_set_awp_gamma_rejects_negative_values_and_models_without_awp():
    model = awp_model(softmax_regression(W3, B3), robustlab.AWP(0.01))
    with pytest.raises(ValueError, match=r"`gamma`.*Received: gamma=-1"):
        model.set_awp_gamma(-1)
    plain = robustlab.AdversarialModel(softmax_regression(W3, B3), attack=FIXED_ATTACK)
    with pytest.raises(ValueError, match=r"has no AWP"):
        plain.set_awp_gamma(0.1)


# -- gamma from a user's callback; the selection over the variables trainable now --


def test_a_gamma_a_callback_sets_at_epoch_begin_is_the_one_in_force():
    class SetGamma(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.set_awp_gamma(0.002 * (epoch + 1))

    model = awp_model(softmax_regression(W3, B3), robustlab.AWP(0.01))
    history = model.fit(X6, Y6, batch_size=len(X6), epochs=2, verbose=0,
                        callbacks=[SetGamma()]).history
    np.testing.assert_allclose(history["awp_gamma"], [0.002, 0.004], rtol=1e-6)


def hidden_and_output_net():
    """A hidden Dense without bias and an output Dense with one: the kernels
    selection at build is (hidden kernel, output kernel, not the bias)."""
    rng = np.random.default_rng(0)
    net = keras.Sequential([keras.Input((X6.shape[1],)),
                            keras.layers.Dense(5, use_bias=False, name="hidden"),
                            keras.layers.Dense(3, name="output")])
    net.set_weights([rng.normal(size=(X6.shape[1], 5)).astype("float32"),
                     rng.normal(size=(5, 3)).astype("float32"),
                     np.full(3, 0.1, "float32")])
    return net


def test_a_variable_frozen_after_build_is_not_perturbed_and_the_rest_are_selected_right():
    frozen_first = hidden_and_output_net()
    frozen_first.get_layer("hidden").trainable = False
    reference = awp_model(frozen_first, robustlab.AWP(0.5), lr=0.1)
    late = robustlab.AdversarialModel(hidden_and_output_net(), attack=FIXED_ATTACK,
                                      awp=robustlab.AWP(0.5))
    late.model.get_layer("hidden").trainable = False
    late.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=["accuracy"])
    expected = reference.fit(X6, Y6, batch_size=len(X6), epochs=2, shuffle=False,
                             verbose=0).history
    history = late.fit(X6, Y6, batch_size=len(X6), epochs=2, shuffle=False,
                       verbose=0).history
    np.testing.assert_allclose(history["awp_perturbed_loss"],
                               expected["awp_perturbed_loss"], rtol=1e-6)
    for a, b in zip(late.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_misaligned_selection_is_an_error_not_a_silent_zip():
    with pytest.raises(ValueError, match=r"aligned.*Received: len\(weights\)=2, "
                                         r"len\(gradients\)=2, len\(mask\)=3"):
        layerwise_relative_perturbation([W3, B3], [W3, B3], 0.1, [True, True, False])
