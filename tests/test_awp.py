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


def mean_cross_entropy(weights, bias, x, y):
    p = softmax(x.astype("float64") @ weights + bias)
    return -np.mean(np.log(p[np.arange(len(y)), y]))


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


# ||w|| 277 squares to over float16's 65504; |g| 1e-4 squares to below its
# smallest subnormal; |g| 100 overflows too.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("w_entry, g_entry", [(0.5, 100.0), (0.5, 1e-4), (80.0, 1.0)])
def test_half_precision_norms_do_not_overflow_or_flush_to_zero(dtype, w_entry, g_entry):
    w, g = np.full((3, 4), w_entry), np.full((3, 4), g_entry)
    (v,) = layerwise_relative_perturbation(
        [keras.ops.convert_to_tensor(w, dtype)], [keras.ops.convert_to_tensor(g, dtype)],
        0.01, [True])
    assert keras.backend.standardize_dtype(v.dtype) == dtype
    v = np.asarray(keras.ops.convert_to_numpy(v), "float64")
    # Every entry of v is gamma * ||w|| / sqrt(12), rounded to the dtype's
    # 11 (float16) or 8 (bfloat16) bits.
    np.testing.assert_allclose(v, 0.01 * np.linalg.norm(w) / np.sqrt(12.0),
                               rtol=2.0**-8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_network_trains_with_awp(dtype):
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype=dtype)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=1),
                                       awp=robustlab.AWP(0.01))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    x = np.random.default_rng(0).random((8, 4), dtype="float32")
    history = model.fit(x, np.arange(8) % 3, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["awp_perturbed_loss"]))


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


def test_the_direction_of_v_is_the_gradient_of_the_loss_with_its_regularisation():
    # With an L2 kernel regulariser l ||W||^2 the training objective is
    # CE + l ||W||^2, and v follows its gradient dCE/dW + 2 l W (Wu et al.'s
    # reference code would follow dCE/dW alone). The logged perturbed loss
    # is the cross-entropy alone, at w + v.
    gamma, l2 = 0.5, 0.1
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        3, kernel_regularizer=keras.regularizers.L2(l2))])
    net.set_weights([W3, B3])
    grad_w = cross_entropy_gradients(W3, B3, X6, Y6)[0] + 2 * l2 * W3
    v = gamma * np.linalg.norm(W3) * grad_w / np.linalg.norm(grad_w)
    model = awp_model(net, robustlab.AWP(gamma), attack=robustlab.PGD(0.0, steps=1))
    logs = model.train_on_batch(X6, Y6, return_dict=True)
    assert logs["awp_perturbed_loss"] == pytest.approx(
        mean_cross_entropy(W3 + v, B3, X6, Y6), rel=1e-5)


def confident_float16_regression():
    """Softmax regression computing in float16 with logits of about
    (8, -8, -8) for every input of X6 (a kernel of about 1e-3, a large bias):
    class 0 has probability 1 - 2e^-16. The gradient of the mean loss with
    respect to each logit, (p - onehot) / 16, is at most about 1.5e-8, below
    half of float16's smallest number (2^-25 = 3e-8): float16 rounds it to 0
    unless the loss is scaled (by 2^15, a LossScaleOptimizer's first scale,
    it is about 5e-4)."""
    net = keras.Sequential([keras.Input((6,)),
                            keras.layers.Dense(3, dtype="mixed_float16")])
    net.set_weights([W3 * np.float32(1e-3), np.array([8.0, -8.0, -8.0], "float32")])
    return net


def test_under_mixed_float16_v_follows_the_gradient_of_the_scaled_loss():
    gamma = 1000.0  # the loss at w + v is 1e4 times the loss at w
    net = confident_float16_regression()
    kernel, bias = net.get_weights()
    y = np.zeros(len(X6), int)
    grad_w, _ = cross_entropy_gradients(kernel, bias, X6, y)  # eps = 0: x_adv = x
    v = gamma * np.linalg.norm(kernel) * grad_w / np.linalg.norm(grad_w)
    model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.0, steps=1),
                                       awp=robustlab.AWP(gamma))
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5)),
                  LOGITS_CE)
    logs = model.train_on_batch(X6, y, return_dict=True)
    # float16 rounds logits near 8 by up to 2^-8: the loss, about
    # exp(-margin), to within 1e-2 (relative).
    assert logs["awp_perturbed_loss"] == pytest.approx(
        mean_cross_entropy(kernel + v, bias, X6, y), rel=1e-2)


def test_a_step_whose_scaled_gradient_overflows_is_skipped_with_finite_logs():
    # Scaled by 2^60, the logits' gradient (about 1.5e-8) is beyond float16's
    # largest number: the LossScaleOptimizer skips the step and halves the
    # scale, as Keras does; v is 0, so the loss at w + v is the loss at w.
    net = confident_float16_regression()
    weights = net.get_weights()
    model = robustlab.AdversarialModel(net, attack=robustlab.PGD(0.0, steps=1),
                                       awp=robustlab.AWP(1000.0))
    model.compile(keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.5), initial_scale=2.0**60), LOGITS_CE)
    logs = model.train_on_batch(X6, np.zeros(len(X6), int), return_dict=True)
    assert np.isfinite(logs["awp_perturbed_loss"])
    assert logs["awp_perturbed_loss"] == logs["robust_loss"]
    for before, after in zip(weights, net.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale)) == 2.0**59


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
        ({"gamma": 10**400}, ValueError,  # too large for a float: not finite
         r"`gamma` must be a finite number >= 0\. Received: gamma=10{400}$"),
        ({"gamma": 0.01, "warmup_epochs": -1}, ValueError,
         r"`warmup_epochs`.*>= 0.*Received: warmup_epochs=-1"),
        ({"gamma": 0.01, "variables": "("}, ValueError, r"`variables`.*regular"),
        ({"gamma": 0.01, "variables": 3}, TypeError, r"`variables`"),
    ],
)
def test_bad_awp_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        robustlab.AWP(**kwargs)


def test_a_schedule_that_returns_an_integer_too_large_for_a_float_is_refused():
    awp = robustlab.AWP(0.01, schedule=lambda epoch: 10**400)
    with pytest.raises(ValueError, match=r"`schedule\(0\)` must be a finite number >= 0\. "
                                         r"Received: schedule\(0\)=10{400}$"):
        awp.gamma_at(0)


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


@pytest.mark.parametrize("gamma", ["0.1", None, [0.1, 0.2]])
def test_a_gamma_that_is_not_a_number_is_named(gamma):
    # A list broadcast into a perturbation of another shape on TensorFlow and
    # failed on JAX; a string or None failed inside the backend.
    with pytest.raises(TypeError, match=r"`gamma` must be a number or a scalar tensor. "
                                        r"Received: gamma="):
        layerwise_relative_perturbation([W3], [W3], gamma, [True])
