"""The attack, the training step and the directional derivatives on JAX
differentiate max pooling with one select per window
(`with_cheap_max_pool_derivatives`): the numbers are those of JAX's own
rule bit for bit, and a function that writes Keras state while it runs
(a training-mode forward pass through BatchNorm or Dropout) keeps JAX's own
rule and writes where it would have.
"""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("the rewrite is of JAX programs", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import robustlab  # noqa: E402
from robustlab.backend.jax import autodiff, directional, tiled_max, trainer  # noqa: E402
from tests.jaxpr_primitives import primitives  # noqa: E402

WINDOWED_SELECTS = {"select_and_gather_add", "select_and_scatter_add"}


def pooled_cnn(*extra_layers, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    # Pointwise, so that the duplicated rows of X reach the pool as ties.
    hidden = keras.layers.Conv2D(4, 1, activation="relu")(inputs)
    for layer in extra_layers:
        hidden = layer(hidden)
    pooled = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(hidden))
    # The input also reaches the logits unpooled: which of a window's tied
    # elements a gradient goes to then changes the attack's examples and,
    # through them, the weights (through the pool alone, the two choices
    # would train alike by symmetry).
    features = keras.layers.Concatenate()([pooled, keras.layers.Flatten()(inputs)])
    return keras.Model(inputs, keras.layers.Dense(10)(features))


RNG = np.random.default_rng(0)
X = RNG.random((32, 8, 8, 1)).astype("float32")
# Ties inside the pool's windows (each window's two rows are equal): where
# JAX's rule picks the first maximum, the choice shows.
X[:, ::2, :, :] = X[:, 1::2, :, :]
Y = (np.arange(32) % 10).astype("int32")


def summed_loss(model, training=False):
    def loss(z):
        logits = model(z, training=training)
        return jnp.sum(keras.losses.sparse_categorical_crossentropy(Y, logits, from_logits=True))

    return loss


# -- keras_writes_recorded ------------------------------------------------------------

def test_a_block_reads_what_the_active_scope_maps():
    variable = keras.Variable(1.0)
    with keras.StatelessScope(state_mapping=[(variable, 5.0)]):
        with robustlab._keras_compat.keras_writes_recorded() as record:
            assert float(variable.value) == 5.0
    assert record.written is False
    assert float(variable.value) == 1.0


def test_a_write_in_the_block_is_recorded_and_kept_from_the_active_scope():
    variable = keras.Variable(1.0)
    with keras.StatelessScope(state_mapping=[(variable, 5.0)]) as outer:
        with robustlab._keras_compat.keras_writes_recorded() as record:
            variable.assign(7.0)
            assert float(variable.value) == 7.0
        assert float(outer.get_current_value(variable)) == 5.0
    assert record.written is True
    assert float(variable.value) == 1.0


def test_without_an_active_scope_a_write_goes_nowhere_but_is_recorded():
    variable = keras.Variable(1.0)
    with robustlab._keras_compat.keras_writes_recorded() as record:
        variable.assign(3.0)
    assert record.written is True
    assert float(variable.value) == 1.0


def test_a_loss_is_recorded_where_the_active_scope_collects_losses():
    layer = keras.layers.ActivityRegularization(l1=1.0)
    layer.build((2,))
    with keras.StatelessScope(collect_losses=True) as outer:
        with robustlab._keras_compat.keras_writes_recorded() as record:
            layer(jnp.ones((1, 2)))
    assert record.written is True
    assert outer.losses == []


# -- with_cheap_max_pool_derivatives --------------------------------------------------

def test_the_input_gradient_runs_no_windowed_select():
    loss = summed_loss(pooled_cnn())
    assert WINDOWED_SELECTS & primitives(jax.grad(loss), X)
    assert not WINDOWED_SELECTS & primitives(lambda z: autodiff.input_gradient(loss, z), X)


def test_the_input_gradient_is_jax_own_bit_for_bit():
    loss = summed_loss(pooled_cnn())
    ours = jax.jit(lambda z: autodiff.input_gradient(loss, z))(X)
    theirs = jax.jit(jax.grad(loss))(X)
    np.testing.assert_array_equal(ours, theirs)


def test_a_function_that_writes_keras_state_keeps_jax_rule_and_its_writes():
    model = pooled_cnn(keras.layers.BatchNormalization())
    loss = summed_loss(model, training=True)
    (batch_norm,) = [layer for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization)]
    moving_mean = batch_norm.moving_mean
    mapping = [(v, v.value) for v in model.variables]
    written = []

    def gradient(gradient_fn):
        def fn(x):
            with keras.StatelessScope(state_mapping=mapping) as scope:
                before = scope.get_current_value(moving_mean)
                result = gradient_fn(x)
            # The training-mode pass wrote the statistics into the scope (a
            # value of the gradient's trace, which no caller may read: the
            # attack drops the scope, keeping only its seed).
            written.append(scope.get_current_value(moving_mean) is not before)
            return result
        return fn

    ours = gradient(lambda z: autodiff.input_gradient(loss, z))
    theirs = gradient(jax.grad(loss))
    assert WINDOWED_SELECTS & primitives(ours, X)
    np.testing.assert_array_equal(jax.jit(ours)(X), jax.jit(theirs)(X))
    assert written and all(written)


# -- where it is used ---------------------------------------------------------------

def adversarial(model, attack_training_mode=False):
    net = robustlab.AdversarialModel(
        model, attack=robustlab.PGD(eps=0.1, steps=3, step_size=0.05), seed=1,
        attack_training_mode=attack_training_mode)
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    return net


def jax_own_rule(monkeypatch):
    """Every use of the rewrite replaced by the function itself."""
    for module in (autodiff, directional, trainer):
        monkeypatch.setattr(module, "with_cheap_max_pool_derivatives", lambda fn: fn)


def traces_counted(monkeypatch):
    counts = {"traced": 0}
    real = tiled_max.trace

    def counted(fn, *args):
        counts["traced"] += 1
        return real(fn, *args)

    monkeypatch.setattr(tiled_max, "trace", counted)
    return counts


def fitted(model_factory, monkeypatch=None, attack_training_mode=False):
    net = adversarial(model_factory(), attack_training_mode)
    history = net.fit(X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                      validation_data=(X, Y))
    return net, history.history


@pytest.mark.parametrize("extra, attack_training_mode", [
    ((), False),
    ((), True),
    # Training-mode attack through BatchNorm and Dropout: JAX's own rule in
    # the attack (it writes the statistics and the seed), the cheap one in
    # the weights' gradient (Keras's stateless loss writes only its own scope).
    (("batchnorm", "dropout"), True),
])
def test_fit_gives_jax_own_rule_numbers(monkeypatch, extra, attack_training_mode):
    def factory():
        layers = {"batchnorm": keras.layers.BatchNormalization,
                  "dropout": lambda: keras.layers.Dropout(0.2, seed=3)}
        return pooled_cnn(*(layers[name]() for name in extra))

    counts = traces_counted(monkeypatch)
    ours, ours_history = fitted(factory, attack_training_mode=attack_training_mode)
    assert counts["traced"] > 0
    with monkeypatch.context() as patch:
        jax_own_rule(patch)
        theirs, theirs_history = fitted(factory, attack_training_mode=attack_training_mode)
    # The same elements are selected; the sums that follow (a bias's
    # gradient over the batch) may be fused in another order, a last-digit
    # difference (3e-8 in the weights after these two epochs; none in the
    # digits setting's 20 epochs).
    # Picking the last of tied elements instead (every window has a tie)
    # moves the weights by about 3e-4 here.
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours_history.keys() == theirs_history.keys()
    for key in ours_history:
        np.testing.assert_allclose(ours_history[key], theirs_history[key], rtol=1e-5)


def test_directional_derivatives_are_jax_own_bit_for_bit(monkeypatch):
    model = pooled_cnn()
    per_example = lambda y, p: keras.losses.sparse_categorical_crossentropy(  # noqa: E731
        y, p, from_logits=True)
    tangents = [np.random.default_rng(i).standard_normal(v.shape).astype("float32")
                for i, v in enumerate(model.trainable_variables)]
    ours = directional.make_directional_derivative(model, per_example)(X, Y, tangents)
    with monkeypatch.context() as patch:
        jax_own_rule(patch)
        theirs = directional.make_directional_derivative(model, per_example)(X, Y, tangents)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
