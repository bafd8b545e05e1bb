"""Specifications of robustlab.attacks: PGD and FGSM on Keras classifiers."""

import gc
import weakref

import keras
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import robustlab
from robustlab import attacks
from robustlab import losses
from tests.conftest import softmax_regression

RNG = np.random.default_rng(1234)
W3 = RNG.normal(size=(6, 3)).astype("float32")
B3 = RNG.normal(size=3).astype("float32")
X6 = RNG.uniform(0.0, 1.0, size=(16, 6)).astype("float32")
Y6 = RNG.integers(0, 3, size=16)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def input_gradient_of_cross_entropy(weights, bias, x, y):
    """d CE(softmax(x W + b), y) / d x = (p - onehot(y)) W^T, per example."""
    p = softmax(x.astype("float64") @ weights + bias)
    p[np.arange(len(y)), y] -= 1.0
    return p @ weights.T


def ulp_slack(x):
    """Float32 rounding of x +/- eps can land one ulp outside the ball."""
    return 4 * np.finfo(np.float32).eps * max(1.0, float(np.max(np.abs(x))))


# -- the projection invariants ---------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    eps=st.floats(0.0, 0.6),
    steps=st.integers(1, 4),
    norm=st.sampled_from(["linf", "l2"]),
    random_start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pgd_stays_inside_the_ball_and_the_value_range(eps, steps, norm, random_start, seed):
    model = softmax_regression(W3, B3)
    x_adv = attacks.pgd(model, X6, Y6, eps=eps, steps=steps, norm=norm,
                        random_start=random_start, seed=seed)
    delta = (x_adv - X6).reshape(len(X6), -1)
    if norm == "linf":
        assert np.max(np.abs(delta)) <= eps + ulp_slack(X6)
    else:
        assert np.max(np.linalg.norm(delta, axis=1)) <= eps * (1 + 1e-5) + ulp_slack(X6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_pgd_iterate_stays_inside_the_ball(norm):
    model = softmax_regression(W3, B3)
    eps = 0.3
    for k in range(1, 7):
        # The same seed gives the same random start, so PGD-k is iterate k.
        x_k = attacks.pgd(model, X6, Y6, eps=eps, step_size=0.2, steps=k,
                          norm=norm, seed=7)
        delta = (x_k - X6).reshape(len(X6), -1)
        size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert size.max() <= eps * (1 + 1e-5) + ulp_slack(X6)
        assert 0.0 <= x_k.min() and x_k.max() <= 1.0


# -- FGSM and closed forms -------------------------------------------------------


def test_fgsm_is_one_signed_gradient_step_clipped_to_the_value_range():
    model = softmax_regression(W3, B3)
    eps = np.float32(0.05)
    grad = input_gradient_of_cross_entropy(W3, B3, X6, Y6)
    expected = np.clip(X6 + eps * np.sign(grad).astype("float32"), 0.0, 1.0)
    np.testing.assert_array_equal(attacks.fgsm(model, X6, Y6, eps=0.05), expected)


def test_pgd_one_step_of_size_eps_without_random_start_equals_fgsm():
    model = softmax_regression(W3, B3)
    pgd = attacks.pgd(model, X6, Y6, eps=0.05, step_size=0.05, steps=1,
                      random_start=False)
    np.testing.assert_array_equal(pgd, attacks.fgsm(model, X6, Y6, eps=0.05))


def two_class_model():
    weights = np.array([[1.0, -0.5], [-2.0, 0.3], [0.5, -0.7], [0.2, -1.0]], "float32")
    return weights, np.array([0.1, -0.2], "float32")


def test_linf_pgd_finds_the_closed_form_worst_case_of_a_linear_model():
    # For two classes the loss only depends on the margin x.(w_y - w_o) + c, so
    # the worst case in the L-inf ball is the corner x - eps sign(w_y - w_o).
    weights, bias = two_class_model()
    x = np.random.default_rng(0).uniform(0, 1, (32, 4)).astype("float32")
    y = np.arange(32) % 2
    direction = weights[:, y].T - weights[:, 1 - y].T
    expected = x - np.float32(0.1) * np.sign(direction)
    x_adv = attacks.pgd(softmax_regression(weights, bias), x, y, eps=0.1, steps=10,
                        value_range=None, seed=3)
    np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-7)


def test_l2_pgd_finds_the_closed_form_worst_case_of_a_linear_model():
    weights, bias = two_class_model()
    x = np.random.default_rng(1).uniform(0, 1, (32, 4)).astype("float32")
    y = np.arange(32) % 2
    direction = weights[:, y].T - weights[:, 1 - y].T
    unit = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    expected = x - 0.25 * unit
    x_adv = attacks.pgd(softmax_regression(weights, bias), x, y, eps=0.25, steps=8,
                        norm="l2", random_start=False, value_range=None)
    np.testing.assert_allclose(x_adv, expected, rtol=0, atol=2e-6)


def test_pgd_ascends_the_loss_on_a_trained_model(digits):
    keras.utils.set_random_seed(0)
    model = robustlab.models.mlp(hidden=(64,), seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    model.fit(digits.x_train, digits.y_train, epochs=15, batch_size=64, verbose=0)
    x, y = digits.x_test[:300], digits.y_test[:300]

    def mean_loss(inputs):
        return float(loss(y, model.predict(inputs, verbose=0)))

    clean = mean_loss(x)
    fgsm = mean_loss(attacks.fgsm(model, x, y, eps=0.1))
    pgd = mean_loss(attacks.pgd(model, x, y, eps=0.1, steps=10, seed=0))
    assert pgd >= fgsm >= clean
    assert pgd > 2 * clean


# -- float16 and bfloat16 inputs ---------------------------------------------------


def test_l2_fgsm_on_float16_inputs_with_a_small_gradient_is_the_normalised_step():
    # Weights of about 1e-5 make the input gradient at most 2.3e-5 per
    # coordinate: its squares (at most 5e-10) are 0 in float16, whose
    # smallest positive number is 6e-8, and the step g / ||g|| must still be
    # taken.
    weights = W3 * np.float32(1e-5)
    model = softmax_regression(weights, B3)
    grad = input_gradient_of_cross_entropy(weights, B3, X6, Y6)
    unit = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    expected = np.clip(X6.astype("float64") + 0.1 * unit, 0.0, 1.0)
    x_adv = attacks.fgsm(model, X6.astype("float16"), Y6, eps=0.1, norm="l2")
    assert x_adv.dtype == np.float16
    # To float16 precision: two of its spacings in [0.5, 1).
    np.testing.assert_allclose(x_adv.astype("float64"), expected, rtol=0, atol=2 * 2.0**-11)


def test_a_zero_radius_l2_attack_leaves_float16_inputs_as_they_are():
    x = X6.astype("float16")
    np.testing.assert_array_equal(
        attacks.pgd(softmax_regression(W3, B3), x, Y6, eps=0.0, norm="l2", steps=2, seed=0),
        x)


@pytest.mark.parametrize("dtype", ["float16", ml_dtypes.bfloat16])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_pgd_on_low_precision_inputs_stays_inside_the_ball_and_the_value_range(
        dtype, norm, eps):
    # Rounded to nearest in bfloat16 (8 significant bits), x + eps lands up
    # to half a spacing, 2**-9 for x in [0.5, 1), outside the ball; the
    # result must lie inside it as closely as a float32 attack's does.
    x = X6.astype(dtype)
    x_adv = attacks.pgd(softmax_regression(W3, B3), x, Y6, eps=eps, steps=4, norm=norm,
                        seed=0)
    assert x_adv.dtype == x.dtype
    delta = x_adv.astype("float64") - x.astype("float64")
    if norm == "linf":
        assert np.max(np.abs(delta)) <= eps + ulp_slack(X6)
    else:
        assert np.max(np.linalg.norm(delta, axis=1)) <= eps * (1 + 1e-5) + ulp_slack(X6)
    assert x_adv.astype("float64").min() >= 0.0 and x_adv.astype("float64").max() <= 1.0


# -- what the attack reads and changes -----------------------------------------------


def test_the_same_seed_gives_the_same_examples_and_another_seed_others():
    model = softmax_regression(W3, B3)
    a = attacks.pgd(model, X6, Y6, eps=0.2, steps=2, seed=5)
    b = attacks.pgd(model, X6, Y6, eps=0.2, steps=2, seed=5)
    c = attacks.pgd(model, X6, Y6, eps=0.2, steps=2, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batching_does_not_change_an_attack_without_random_start():
    model = softmax_regression(W3, B3)
    whole = attacks.pgd(model, X6, Y6, eps=0.2, steps=3, random_start=False)
    batched = attacks.pgd(model, X6, Y6, eps=0.2, steps=3, random_start=False,
                          batch_size=5)
    np.testing.assert_array_equal(whole, batched)


def test_an_int_seed_draws_the_l2_radius_independently_of_the_direction():
    # In one dimension an L2 start is x + eps * s * u: s = +-1 its direction,
    # u ~ U(0, 1) its radius. Independent, "s > 0" and "u > 1/2" agree for
    # each of n examples with probability 1/2: the fraction that agree is
    # Binomial(n, 1/2) / n, with standard deviation 0.5 / sqrt(n) = 0.025
    # for n = 400. A radius drawn from the direction's own bits (u = Phi(z)
    # for the direction's normal z) agrees always.
    attack = robustlab.PGD(eps=1.0, steps=1, norm="l2", value_range=None)
    starts = keras.ops.convert_to_numpy(attacks.perturb(
        lambda z, y: keras.ops.sum(z) * 0.0,  # no gradient: the start stays
        np.zeros((400, 1), "float32"), None, attack, seed=0))[:, 0]
    agree = np.mean((starts > 0) == (np.abs(starts) > 0.5))
    assert abs(agree - 0.5) < 5 * 0.025


def test_the_attack_leaves_the_weights_unchanged():
    model = softmax_regression(W3, B3)
    before = [w.copy() for w in model.get_weights()]
    attacks.pgd(model, X6, Y6, eps=0.2, steps=3, seed=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_attack_runs_dropout_and_batchnorm_in_inference_mode():
    inputs = keras.Input((6,))
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
    outputs = keras.layers.Dense(3)(keras.layers.Dropout(0.5)(hidden))
    model = keras.Model(inputs, outputs)
    stats = [w.copy() for w in model.get_weights()]
    a = attacks.pgd(model, X6, Y6, eps=0.2, steps=3, random_start=False)
    b = attacks.pgd(model, X6, Y6, eps=0.2, steps=3, random_start=False)
    np.testing.assert_array_equal(a, b)  # Dropout would make these differ
    attacks.pgd(model, X6, Y6, eps=0.2, steps=3, random_start=False, training=True)
    for before, after in zip(stats, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # no BatchNorm update


def test_a_softmax_output_is_attacked_as_probabilities():
    logits_model = softmax_regression(W3, B3)
    probs_model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, activation="softmax")]
    )
    probs_model.set_weights([W3, B3])
    assert losses.final_activation_is_softmax(probs_model)
    assert not losses.final_activation_is_softmax(logits_model)
    np.testing.assert_array_equal(
        attacks.pgd(logits_model, X6, Y6, eps=0.1, steps=3, random_start=False),
        attacks.pgd(probs_model, X6, Y6, eps=0.1, steps=3, random_start=False),
    )


@pytest.mark.parametrize(
    "name",
    ["default_classification_loss", "final_activation_is_softmax", "per_example_loss"],
)
def test_the_loss_resolution_stays_importable_from_attacks(name):
    assert getattr(attacks, name) is getattr(losses, name)


def test_one_hot_labels_give_the_same_attack_as_class_indices():
    model = softmax_regression(W3, B3)
    one_hot = np.eye(3, dtype="float32")[Y6]
    np.testing.assert_array_equal(
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, random_start=False),
        attacks.pgd(model, X6, one_hot, eps=0.1, steps=2, random_start=False),
    )


def test_pgd_config_object_calls_pgd():
    model = softmax_regression(W3, B3)
    config = robustlab.PGD(eps=0.1, steps=2, random_start=False)
    np.testing.assert_array_equal(
        config(model, X6, Y6),
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, random_start=False),
    )
    assert robustlab.PGD.from_config(config.get_config()) == config


# -- the compiled attacks kept for each model ----------------------------------------


def test_a_loss_name_built_where_a_freed_one_was_is_still_its_own_loss():
    # A name built at run time is freed after its call, and CPython builds
    # the next string of its size at the same address: the loss must be the
    # new name's, not the freed one's.
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    model.set_weights([W3, B3])
    one_hot = np.eye(3, dtype="float32")[Y6]
    first = "".join(["kl_", "divergence"])
    attacks.loss_gradient(model, X6, one_hot, loss=first)
    address = id(first)
    del first
    names = ["".join(["squared_", "hinge"]) for _ in range(100)]
    # Where the first name is still held, no name is at its address.
    second = next((name for name in names if id(name) == address), names[0])
    np.testing.assert_allclose(
        attacks.loss_gradient(model, X6, one_hot, loss=second),
        attacks.loss_gradient(model, X6, one_hot, loss=keras.losses.squared_hinge),
        rtol=1e-6, atol=1e-7)


def test_an_attacked_model_is_freed_once_deleted():
    model = softmax_regression(W3, B3)
    attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0)
    attacks.loss_gradient(model, X6, Y6)
    model_ref = weakref.ref(model)
    del model
    gc.collect()
    assert model_ref() is None


def test_fresh_equal_keras_losses_share_one_compiled_attack():
    # The inline `loss=keras.losses.X(...)` of a re-run notebook cell.
    model = softmax_regression(W3, B3)
    for _ in range(3):
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(attacks._RUNNERS[model]) == 1


def test_fresh_equal_keras_losses_share_one_compiled_loss_gradient():
    model = softmax_regression(W3, B3)
    for _ in range(3):
        attacks.loss_gradient(
            model, X6, Y6, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(attacks._RUNNERS[model]) == 1


def test_keras_losses_of_different_configs_get_their_own_attacks():
    model = softmax_regression(W3, B3)
    for loss in (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                            reduction="sum")):
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0, loss=loss)
    assert len(attacks._RUNNERS[model]) == 3


class _LogitsCrossEntropy(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def test_each_instance_of_a_user_loss_class_is_its_own_loss():
    # Its config need not show its state, so equal configs are not equal losses.
    model = softmax_regression(W3, B3)
    first, second = _LogitsCrossEntropy(), _LogitsCrossEntropy()
    for loss in (first, second, first):
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0, loss=loss)
    assert len(attacks._RUNNERS[model]) == 2


def test_the_attack_of_a_freed_user_loss_leaves_the_cache():
    model = softmax_regression(W3, B3)
    for _ in range(3):
        attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0, loss=_LogitsCrossEntropy())
        attacks.loss_gradient(
            model, X6, Y6,
            loss=lambda t, p: keras.losses.sparse_categorical_crossentropy(
                t, p, from_logits=True))
    gc.collect()
    assert len(attacks._RUNNERS[model]) == 0


def test_a_user_loss_gives_the_attack_of_the_equal_keras_loss():
    model = softmax_regression(W3, B3)
    np.testing.assert_array_equal(
        attacks.pgd(model, X6, Y6, eps=0.1, steps=3, seed=0, loss=_LogitsCrossEntropy()),
        attacks.pgd(model, X6, Y6, eps=0.1, steps=3, seed=0,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)))


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -0.1}, r"`eps`.*>= 0.*Received: eps=-0.1"),
        ({"eps": float("nan")}, r"`eps`.*finite.*Received: eps=nan"),
        ({"eps": float("inf")}, r"`eps`.*finite.*Received: eps=inf"),
        ({"eps": 0.1, "steps": 0}, r"`steps` must be an integer in \[1, 2147483647\]\. Received: steps=0"),
        # The attack's loop counts in 32-bit integers.
        ({"eps": 0.1, "steps": 2**31},
         r"`steps` must be an integer in \[1, 2147483647\]\. Received: steps=2147483648$"),
        ({"eps": 0.1, "steps": 10**400}, r"`steps` must be an integer in \[1, 2147483647\]"),
        ({"eps": 0.1, "step_size": 0.0}, r"`step_size`.*> 0.*Received: step_size=0.0"),
        ({"eps": 0.1, "step_size": -1.0}, r"`step_size`.*Received: step_size=-1.0"),
        ({"eps": 0.1, "norm": "l1"}, r"`norm`.*Received: norm='l1'"),
        ({"eps": 0.1, "value_range": (1.0, 0.0)}, r"`value_range`.*Received"),
        # Integers too large for a float are not finite numbers.
        ({"eps": 10**400}, r"`eps` must be a finite number >= 0\. Received: eps=10{400}$"),
        ({"eps": 0.1, "step_size": 10**400},
         r"`step_size` must be a finite number > 0\. Received: step_size=10{400}$"),
        ({"eps": 0.1, "value_range": (0, 10**400)},
         r"`value_range` must be .* finite numbers .*Received: value_range=\(0, 10{400}\)$"),
    ],
)
def test_bad_attack_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        robustlab.PGD(**kwargs)


def test_non_integer_steps_raise_type_error():
    with pytest.raises(TypeError, match=r"`steps`.*Received: steps=2.5"):
        robustlab.PGD(eps=0.1, steps=2.5)


def test_a_zero_radius_attack_round_trips_its_config_and_leaves_x():
    # eps = 0 makes the default step 0, which get_config stores.
    for attack in (robustlab.PGD(0.0), attacks.fgsm_config(0.0)):
        assert robustlab.PGD.from_config(attack.get_config()) == attack
    model = softmax_regression(W3, B3)
    np.testing.assert_array_equal(robustlab.PGD(0.0)(model, X6, Y6, seed=0), X6)


def test_a_flag_takes_a_bool_or_the_integers_one_and_zero():
    assert robustlab.PGD(0.1, random_start=0).random_start is False
    assert robustlab.PGD(0.1, random_start=np.True_).random_start is True
    with pytest.raises(TypeError, match="Received: random_start=2"):
        robustlab.PGD(0.1, random_start=2)


def test_a_nonzero_radius_still_needs_a_positive_step():
    with pytest.raises(ValueError, match="Received: step_size=0"):
        robustlab.PGD(eps=0.1, step_size=0.0)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: robustlab.PGD(0.1, random_start="no"), TypeError,
     r"`random_start` must be True or False. Received: random_start='no'"),
    (lambda m: robustlab.PGD(0.1, value_range="01"), ValueError,
     r"`value_range`.*Received: value_range='01'"),
    (lambda m: attacks.fgsm(m, X6, Y6, eps="a"), TypeError, r"`eps`.*Received: eps='a'"),
    (lambda m: attacks.pgd(m, X6, Y6, eps=0.1, loss="nonsense"), ValueError,
     r"`loss` must be a Keras loss.*Received: loss='nonsense'"),
    (lambda m: attacks.pgd(m, (X6 * 255).astype("uint8"), Y6, eps=8.0, value_range=(0, 255)),
     TypeError, r"`x` must hold floating-point inputs.*Received: x of dtype uint8"),
])
def test_bad_attack_calls_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(softmax_regression(W3, B3))


def test_a_negative_seed_is_rejected():
    model = softmax_regression(W3, B3)
    with pytest.raises(ValueError, match=r"`seed`.*>= 0.*Received: seed=-1"):
        attacks.pgd(model, X6, Y6, eps=0.1, seed=-1)
    with pytest.raises(TypeError, match=r"`seed`.*Received: seed=0.5"):
        robustlab.PGD(eps=0.1)(model, X6, Y6, seed=0.5)


def test_inputs_outside_the_value_range_are_rejected():
    model = softmax_regression(W3, B3)
    x = np.concatenate([X6, [[2.0] * 6]]).astype("float32")
    with pytest.raises(ValueError, match=r"value_range=\(0, 1\).*\[0.*, 2\]"):
        attacks.pgd(model, x, np.concatenate([Y6, [0]]), eps=0.1)


def test_labels_that_do_not_fit_the_model_output_are_rejected():
    model = softmax_regression(W3, B3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\].*\[1, 3\]"):
        attacks.pgd(model, X6, np.where(Y6 == 0, 3, Y6), eps=0.1)
    with pytest.raises(ValueError, match=r"one label per input"):
        attacks.pgd(model, X6, Y6[:3], eps=0.1)


def test_a_model_that_is_not_a_classifier_is_rejected():
    regression = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"classifier.*at least 2 classes"):
        attacks.pgd(regression, X6, np.zeros(16), eps=0.1)


def test_inputs_of_another_shape_than_the_models_are_rejected_every_time():
    net = robustlab.models.small_cnn(seed=0)
    x = RNG.uniform(0, 1, (4, 8, 8, 1)).astype("float32")
    y = np.arange(4)
    message = (r"Each example of `x` must have the model's input shape \(8, 8, 1\). "
               r"Received: x with examples of shape \(8, 8\)$")
    with pytest.raises(ValueError, match=message):
        attacks.pgd(net, x[..., 0], y, eps=0.1)
    attacks.pgd(net, x, y, eps=0.1)
    # Once the model has run, Keras would add the missing channel axis
    # itself; the attack still refuses, as it did before.
    with pytest.raises(ValueError, match=message):
        attacks.pgd(net, x[..., 0], y, eps=0.1)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*examples of shape \(16, 16, 1\)"):
        attacks.pgd(net, np.zeros((4, 16, 16, 1), "float32"), y, eps=0.1)


def test_an_input_axis_the_model_leaves_open_takes_any_size():
    net = keras.Sequential([keras.Input((None, 3)), keras.layers.GlobalAveragePooling1D(),
                            keras.layers.Dense(2)])
    for length in (2, 5):
        x = np.full((3, length, 3), 0.5, "float32")
        assert attacks.pgd(net, x, np.zeros(3, int), eps=0.1).shape == x.shape


def test_non_finite_inputs_are_rejected():
    model = softmax_regression(W3, B3)
    x = X6.copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` must be finite"):
        attacks.pgd(model, x, Y6, eps=0.1)


@pytest.mark.parametrize("run", [
    lambda model: attacks.pgd(model, X6, Y6, eps=0.1, steps=2, seed=0),
    lambda model: attacks.fgsm(model, X6, Y6, eps=0.1),
    lambda model: attacks.loss_gradient(model, X6, Y6),
], ids=["pgd", "fgsm", "loss_gradient"])
def test_a_diverged_model_is_named_not_answered_with_nan(run):
    # A model with NaN weights gave all-NaN adversarial examples and
    # gradients without a word (the inputs were checked, the result was not).
    model = softmax_regression(W3, B3)
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    with pytest.raises(ValueError, match=r"is not finite for 16 of 16 examples: the model's loss "
                                         r"or its gradient is NaN or infinite there"):
        run(model)


# -- loss_gradient ------------------------------------------------------------


@pytest.mark.parametrize("one_hot", [False, True])
def test_loss_gradient_is_the_closed_form_of_softmax_regression(one_hot):
    # Cross-entropy of softmax(x W + b): d loss / d x = (softmax - onehot) W^T,
    # per example (the summed loss separates over the batch).
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(5, 4)), rng.normal(size=4)
    model = softmax_regression(weights, bias)
    weights, bias = (w.astype("float64") for w in model.get_weights())
    x = rng.normal(size=(7, 5)).astype("float32")
    y = rng.integers(0, 4, size=7)
    logits = x @ weights + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = (p - np.eye(4)[y]) @ weights.T
    labels = np.eye(4)[y] if one_hot else y
    got = attacks.loss_gradient(model, x, labels, batch_size=3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_loss_gradient_leaves_the_model_unchanged_and_checks_its_labels():
    model = softmax_regression(np.eye(3), np.zeros(3))
    before = [w.copy() for w in model.get_weights()]
    attacks.loss_gradient(model, np.zeros((2, 3), "float32"), np.array([0, 2]))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Labels `y`"):
        attacks.loss_gradient(model, np.zeros((2, 3), "float32"), np.array([0, 5]))


def test_project_names_an_attack_that_is_not_a_pgd():
    # AttributeError: 'NoneType' object has no attribute 'eps' before.
    with pytest.raises(TypeError, match=r"`attack` must be a robustlab.PGD .*Received: attack=None"):
        attacks.project(X6, X6, None)


def test_project_names_arrays_of_different_shapes():
    # TensorFlow's "Incompatible shapes" (JAX: "max got incompatible shapes") before.
    with pytest.raises(ValueError, match=r"`x_adv` and `x` must have the same shape. Received: "
                                         r"x_adv with shape \(3, 6\), x with shape \(16, 6\)"):
        attacks.project(X6[:3], X6, robustlab.PGD(0.1))
