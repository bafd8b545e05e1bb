"""The adversarial train and test steps on TensorFlow.

The steps compose the backend-agnostic pieces of `AdversarialModel`
(crafting, AWP's perturbation, metric updates); what is TensorFlow's own is
the gradient tape and how the perturbed weights enter the forward pass.
"""

import keras
import tensorflow as tf

from robustlab import _keras_compat
from robustlab.backend.tensorflow.tracing import concrete_function

__all__ = [
    "adversarial_test_step",
    "adversarial_train_step",
    "can_observe_iterates_in_step",
    "steps_function",
    "wait_for_iterate_observers",
]


def _batch_size(x):
    return tf.shape(x)[0]


def _objective_and_prediction(model, x, y, sample_weight):
    y_pred = model(x, training=True)
    loss = _keras_compat.compute_loss(model, x, y, y_pred, sample_weight, training=True)
    return loss, y_pred


def adversarial_train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x_adv = model.craft_adversarial_batch(x, y)
    variables = model.trainable_variables
    optimizer = model.optimizer
    perturbed_loss = gamma = None

    if model.awp is None:
        with tf.GradientTape() as tape:
            loss, y_pred = _objective_and_prediction(model, x_adv, y, sample_weight)
            unscaled = _keras_compat.unscale_loss_for_distribution(loss)
            loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, variables)
        y_pred_at_w = y_pred
    else:
        # Both passes read the weights through a stateless scope that maps
        # every trainable variable (Keras computes regularisation losses from
        # the mapped values, so the mapping must be complete) and collects
        # the losses layers add in their calls (activity regularisers), which
        # a scope otherwise drops.
        weights = [tf.convert_to_tensor(v.value) for v in variables]
        # Gradient at w, for the direction of v. The pass must not move
        # BatchNorm's statistics: the scope's writes are dropped.
        with tf.GradientTape() as tape:
            tape.watch(weights)
            with keras.StatelessScope(state_mapping=list(zip(variables, weights)),
                                      collect_losses=True):
                loss_w, y_pred_at_w = _objective_and_prediction(
                    model, x_adv, y, sample_weight
                )
            # Scaled as the update's loss is (as on JAX, where Keras scales
            # it): under mixed precision the float16 backward pass of the
            # unscaled loss underflows, and v would be 0. An optimizer
            # without loss scaling returns `loss_w` itself: nothing is added
            # to the step.
            loss_w = optimizer.scale_loss(loss_w)
        gradients_w = tape.gradient(loss_w, weights)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # v's direction is the gradient of the whole batch, not a shard's.
            gradients_w = replica.all_reduce("sum", gradients_w)
        gamma = model.awp_gamma.value
        deltas = model.awp_perturbation(weights, gradients_w, gamma)
        # The perturbed weights live only inside the scope: w itself is never
        # written, so nothing of v can remain after the step.
        perturbed = [w if d is None else w + d for w, d in zip(weights, deltas)]
        with tf.GradientTape() as tape:
            tape.watch(perturbed)
            mapping = list(zip(variables, perturbed))
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                loss, y_pred = _objective_and_prediction(model, x_adv, y, sample_weight)
                perturbed_loss = model.data_loss(y, y_pred, sample_weight)
            unscaled = _keras_compat.unscale_loss_for_distribution(loss)
            loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, perturbed)
        for v in model.non_trainable_variables:
            value = scope.get_current_value(v)
            if value is not None:
                v.assign(value)

    observers = model.iterate_observers
    handoff = observers.handoff_in_step()
    # Read before the update: the rate this step uses (a schedule's value at
    # the step's own `iterations`).
    learning_rate = tf.identity(optimizer.learning_rate) if handoff else None
    optimizer.apply_gradients(zip(gradients, variables))
    if handoff:
        # Stateful, so it runs in every step in program order; its inputs are
        # read after the update.
        tf.numpy_function(
            _dispatcher(observers), [learning_rate, *[v.value for v in variables]],
            Tout=[], stateful=True, name="iterate_observers")
    if gamma is not None:
        # Logged as a tensor: the variable itself cannot leave a step that
        # runs eagerly (Keras packs the logs into a tf.experimental.Optional).
        gamma = tf.convert_to_tensor(gamma)
    # Read after the update (automatic control dependencies order the reads
    # after the assignments).
    weights_finite = model.all_finite([v.value for v in variables])
    return model.update_training_metrics(
        y, y_pred_at_w, sample_weight, unscaled, _batch_size(x),
        perturbed_loss=perturbed_loss, gamma=gamma, weights_finite=weights_finite,
    )


def _dispatcher(observers):
    def dispatch(*args):
        observers.dispatch(*args)
        return []
    return dispatch


def can_observe_iterates_in_step(model):
    """Whether the compiled step can hand iterates to the host: not under
    XLA (which cannot compile a host call) nor `tf.distribute` (where each
    replica would hand over its own copy). The model's own strategy counts
    too: Keras's `fit` runs the step on the replicas of the strategy the
    model was built under without entering its scope, so the usual
    `fit` outside `strategy.scope()` sees no strategy in force."""
    return (not model.jit_compile and not tf.distribute.has_strategy()
            and model.distribute_strategy is tf.distribute.get_strategy())


def wait_for_iterate_observers():
    """Nothing to wait for: a host call completes within its step."""


def adversarial_test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    return model.evaluate_batch(x, y, sample_weight)


def steps_function(model, step):
    """Keras's `train_function` (or `test_function`) of `step`, running
    `steps_per_execution` steps a call, or None where Keras's own is used:
    under XLA, `run_eagerly`, a `tf.distribute` strategy or Keras's
    `unrolled_steps_per_execution`.

    One step a call: Keras's function reads the batch in one `tf.function`,
    runs the step in a second one nested in it, and wraps the logs in a
    `tf.experimental.Optional` that the host then unpacks with two eager
    operations. This one reads the batch and runs the step in a single
    `tf.function` that returns the logs: the same operations on the same
    values (the weights come out bit for bit the same), 0.7 ms a step less
    on two CPU cores, about 7% of a quick-setting PGD-3 step.

    Several steps a call: the steps run in a `tf.while_loop` over the
    iterator, as in Keras's function, which stops early where the data ends
    and reads no batch beyond the call's last step; the same numbers bit for
    bit as one step a call.

    Several steps a call are called as a concrete function
    (`tracing.concrete_function`): robustlab builds the function once per
    model, as Keras does, and TensorFlow counts a call that traces against
    the Python function the `tf.function` was made from, across models.
    With several steps a call there are few calls a model (one an epoch
    when a call runs an epoch), so a process that fitted a few models for
    an epoch or two, a sweep of short runs, logged "triggered tf.function
    retracing" for traces that were all expected: Keras's own function
    does. One step a call makes many calls a model, and the lookup of the
    concrete function would cost about 25 us a step, so it is called as a
    `tf.function`.
    """
    if (model.jit_compile or model.run_eagerly
            or getattr(model, "unrolled_steps_per_execution", 1) != 1
            or tf.distribute.has_strategy()
            or model.distribute_strategy is not tf.distribute.get_strategy()):
        return None
    steps = model.steps_per_execution

    def run(data):
        # Keras's adapters stand an empty Optional in for a missing part
        # (sample weights); the steps expect None, as Keras's own function
        # converts them.
        return step(tf.nest.map_structure(
            lambda part: None if isinstance(part, tf.experimental.Optional) else part,
            data))

    on_batch = tf.function(run, reduce_retracing=True, autograph=False)
    if steps == 1:
        on_iterator = tf.function(lambda iterator: run(iterator.get_next()),
                                  reduce_retracing=True, autograph=False)

        def function(iterator):
            if isinstance(iterator, tf.data.Iterator):
                return on_iterator(iterator)
            return on_batch(next(iter(iterator)))

        return function

    def run_steps(iterator):
        # One graph of the step, called at every step: the loop runs the
        # first step outside its body, and tracing the step twice would
        # keep two copies of it (about 20 MB a model of the quick setting).
        one_step = concrete_function(on_batch, iterator.element_spec)
        return _run_steps(one_step, iterator, steps)

    on_iterator = tf.function(run_steps, reduce_retracing=True, autograph=False)

    def function(iterator):
        if isinstance(iterator, tf.data.Iterator):
            logs = concrete_function(on_iterator, iterator)(iterator)
            if not logs.has_value():
                raise StopIteration
            return logs.get_value()
        logs = None
        for _, batch in zip(range(steps), iterator):
            logs = concrete_function(on_batch, batch)(batch)
        return logs

    return function


def _run_steps(run, iterator, steps):
    """Up to `steps` calls of `run` on the batches of `iterator`, in the
    graph: the logs of the last one, as an Optional that is empty where the
    iterator had no batch left."""
    first = iterator.get_next_as_optional()
    logs_spec = []

    def run_from_first():
        def more(done, logs, batch):
            return tf.logical_and(done < steps, batch.has_value())

        def next_step(done, logs, batch):
            logs = run(batch.get_value())
            # The batch after the call's last step stays in the iterator.
            batch = tf.cond(done + 1 < steps, iterator.get_next_as_optional,
                            lambda: batch)
            return done + 1, logs, batch

        logs = run(first.get_value())
        _, logs, _ = tf.while_loop(
            more, next_step, [tf.constant(1), logs, iterator.get_next_as_optional()])
        logs = tf.experimental.Optional.from_value(logs)
        logs_spec.append(logs.element_spec)
        return logs

    # tf.cond traces the true branch first: the empty branch has its spec.
    return tf.cond(first.has_value(), run_from_first,
                   lambda: tf.experimental.Optional.empty(logs_spec[0]))
