"""The adversarial train and test steps on JAX (stateless, the state passed
in and out), and the functions that run them, jit-compiled as Keras's JAX
trainer compiles them."""

import jax
import keras
from jax.experimental import io_callback

from robustlab import _keras_compat
from robustlab.backend.jax.autodiff import run_stateless, with_cheap_max_pool_derivatives

__all__ = [
    "adversarial_test_step",
    "adversarial_train_step",
    "can_observe_iterates_in_step",
    "steps_function",
    "wait_for_iterate_observers",
]


def _craft(model, trainable, non_trainable, x, y, training_attack=True):
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    x_adv, updated = run_stateless(
        variables,
        list(trainable) + list(non_trainable),
        lambda: model.craft_adversarial_batch(x, y, training_attack),
        keep=model.attack_seed_variables,
    )
    return x_adv, updated[len(trainable):]


def _non_trainable_value(model, variable, non_trainable):
    """The value `variable` (a non-trainable variable of `model`) has in the
    step's state."""
    for ref, value in zip(model.non_trainable_variables, non_trainable):
        if ref is variable:
            return value
    raise KeyError(variable.path)


def adversarial_train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_adv, non_trainable = _craft(model, trainable, non_trainable, x, y)
    compute_loss_and_updates = _keras_compat.stateless_loss_and_updates(model)

    def loss_and_updates(weights, non_trainable, metrics_vars, x, y, sample_weight,
                         optimizer_vars):
        return compute_loss_and_updates(
            weights, non_trainable, metrics_vars, x, y, sample_weight,
            training=True, optimizer_variables=optimizer_vars,
        )

    grad_fn = jax.value_and_grad(
        with_cheap_max_pool_derivatives(loss_and_updates), has_aux=True
    )

    def loss_and_gradients(weights):
        return grad_fn(
            weights, non_trainable, metrics_vars, x_adv, y, sample_weight, optimizer_vars
        )

    perturbed_loss = gamma = None
    if model.awp is None:
        (_, aux), gradients = loss_and_gradients(trainable)
        unscaled, y_pred_at_w, non_trainable, metrics_vars = aux
    else:
        # The statistics updates of the pass at w are dropped (only the pass
        # at w + v moves BatchNorm), as on TensorFlow. The gradient is of the
        # scaled loss (Keras's `compute_loss_and_updates` scales it), which
        # under mixed precision does not underflow; where it overflows, v is
        # 0 and the optimizer skips the step (`model.awp_perturbation`).
        (_, aux_w), gradients_w = loss_and_gradients(trainable)
        y_pred_at_w = aux_w[1]
        gamma = _non_trainable_value(model, model.awp_gamma, non_trainable)
        deltas = model.awp_perturbation(trainable, gradients_w, gamma)
        perturbed = [w if d is None else w + d for w, d in zip(trainable, deltas)]
        (_, aux), gradients = loss_and_gradients(perturbed)
        unscaled, y_pred, non_trainable, metrics_vars = aux
        perturbed_loss = model.data_loss(y, y_pred, sample_weight)

    observers = model.iterate_observers
    handoff = observers.handoff_in_step()
    if handoff:
        # Read before the update: the rate this step uses (a schedule's
        # value at the step's own `iterations`).
        learning_rate, _ = run_stateless(
            model.optimizer.variables, optimizer_vars,
            lambda: keras.ops.convert_to_tensor(model.optimizer.learning_rate))
    # The update starts from the unperturbed weights: restoring w is exact.
    trainable, optimizer_vars = model.optimizer.stateless_apply(
        optimizer_vars, gradients, trainable
    )
    if handoff:
        # Ordered: the host sees the iterates in the order of the steps.
        io_callback(observers.dispatch, None, learning_rate, *trainable, ordered=True)
    weights_finite = model.all_finite(trainable)
    logs, metrics_vars = run_stateless(
        model.metrics_variables,
        metrics_vars,
        lambda: model.update_training_metrics(
            y, y_pred_at_w, sample_weight, unscaled, x.shape[0],
            perturbed_loss=perturbed_loss, gamma=gamma, weights_finite=weights_finite,
        ),
        keep=model.metrics_variables,
    )
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def can_observe_iterates_in_step(model):
    """Whether the compiled step can hand iterates to the host: not under a
    Keras distribution (ordered host calls need a single device)."""
    return keras.distribution.distribution() is None


def steps_function(model, step):
    """Keras's JAX `train_function`, `test_function` or (for
    `model.predict_step`) `predict_function` of `step`, built as Keras
    builds it (the step jit-compiled with the state it receives donated,
    `steps_per_execution` steps a call, a prediction's outputs
    concatenated), which also keeps the state when an exception ends the
    call; or None where Keras's own is used: under `run_eagerly` or
    without `jit_compile` (nothing is donated), under a Keras distribution
    (whose state shardings Keras sets) and with Flax NNX.

    Each step donates the buffers of the state it receives, and Keras
    records the state a step returns only after the call has returned: a
    `KeyboardInterrupt` that fell in between (Ctrl-C while a step is
    dispatched is raised right there), or an error from the data after
    some steps of a call, left the variables detached or holding deleted
    buffers, and the model unusable. Here each step's result is appended
    to the call's list of states by `list.extend` over `map`, in C: no
    Python runs between the step's return and the append, so no
    interrupt can fall there. The state is recorded for Keras before the
    call returns (`_keras_compat.keep_jax_state`), and on any exception the
    newest state of the call whose buffers are intact (the last completed
    step's; the state received where the data failed before a step) is
    attached to the variables. The same steps run on the same values:
    the numbers are Keras's own, bit for bit.
    """
    if (model.run_eagerly or not model.jit_compile
            or keras.distribution.distribution() is not None
            or _keras_compat.nnx_enabled()):
        return None
    predicts = step == model.predict_step
    if predicts:
        def predict_step(state, data):
            # As Keras's: the state goes back whole, the weights unchanged.
            outputs, non_trainable = step(state, data)
            return outputs, (state[0], non_trainable)

        compiled = jax.jit(predict_step, donate_argnums=0)
        concatenated = jax.jit(
            lambda outputs: jax.tree_util.tree_map(lambda *parts: jax.numpy.concatenate(parts),
                                                   *outputs))
    else:
        compiled = jax.jit(step, donate_argnums=0)
    steps = model.steps_per_execution

    def function(state, iterator):
        states = [(None, state)]
        try:
            states.extend(map(compiled, (state,), (next(iterator),)))
            for _ in range(steps - 1):
                try:
                    data = next(iterator)
                except StopIteration:
                    break
                states.extend(map(compiled, (states[-1][1],), (data,)))
            _keras_compat.keep_jax_state(model, states[-1][1])
        except BaseException:
            for _, kept in reversed(states):
                if _keras_compat.holds_live_values(kept):
                    _keras_compat.attach_jax_state(model, kept)
                    break
            raise
        if predicts and steps > 1:
            return concatenated([outputs for outputs, _ in states[1:]]), states[-1][1]
        return states[-1]

    return function


def wait_for_iterate_observers():
    """Wait until the host calls of every dispatched step have run (JAX
    dispatches steps asynchronously)."""
    jax.effects_barrier()


def adversarial_test_step(model, state, data):
    trainable, non_trainable, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = (
        list(model.trainable_variables)
        + list(model.non_trainable_variables)
        + list(model.metrics_variables)
    )
    values = list(trainable) + list(non_trainable) + list(metrics_vars)
    keep = list(model.attack_seed_variables) + list(model.metrics_variables)
    # The losses layers add (activity regularisers) count in the loss, as in
    # Keras's evaluate and in TensorFlow's step.
    logs, updated = run_stateless(
        variables, values, lambda: model.evaluate_batch(x, y, sample_weight), keep=keep,
        collect_losses=True,
    )
    n_t, n_nt = len(trainable), len(non_trainable)
    return logs, (trainable, updated[n_t:n_t + n_nt], updated[n_t + n_nt:])
