"""The one place where robustlab uses Keras's private API.

Every other module reaches these through the names below, so a Keras release
that renames or removes one fails here, at import (or at the first access of
an attribute Keras sets only on an instance), with a message naming what is
missing, instead of deep inside a compiled train step.

Known to work with Keras 3.15.1, the version the test suite runs against.
Every symbol and attribute below is present, with the use made of it here,
in the Keras source of each release from 3.8.0 (the lower bound of
robustlab's `keras>=3.8,<4` pin) to 3.15.1; releases after 3.15.1 are
unchecked (`tests/test_keras_compat.py` fails loudly on one that breaks this
module).

The private uses, and why no public API serves:

- `keras.src.losses.loss.unscale_loss_for_distribution`: multiplies a
  replica's loss back by the number of replicas under a `tf.distribute`
  strategy (a no-op elsewhere). Keras's own train step logs the unscaled
  loss this way; there is no public counterpart.
- `keras.src.utils.tracking.no_automatic_dependency_tracking`: lets
  `AdversarialModel.compile` store its metric lists as plain attributes, as
  `keras.Model.compile` does for its own, without Keras wrapping them in
  tracked containers. Keras exports no public decorator for this.
- `Trainer._compute_loss` (a method of every `keras.Model`): the loss of a
  batch with regularisation losses. It calls the public `compute_loss`
  with `training=` only when an override accepts that argument, which is
  the dispatch Keras's own steps use; the train and test steps use it too.
- `Trainer._compile_loss` (set by `compile`): the compiled loss alone,
  without regularisation losses (`compute_loss` adds them, and `model.loss`
  is what the user passed, possibly a string).
- `Trainer._loss_tracker` (set by `compile`): the `keras.metrics.Mean` that
  Keras reports as `loss`; the custom steps update it, and
  `AdversarialModel.metrics` lists it, since that property is overridden.
- `Trainer._compile_config` (set by `compile`): the saved compile
  arguments. `AdversarialModel.compile` keeps its metrics out of
  `keras.Model.compile`, so it writes them into the saved arguments itself
  (`get_compile_config` only reads them).
- `JAXTrainer.compute_loss_and_updates` (JAX backend only): the stateless
  loss of a batch, differentiable with `jax.grad`, that Keras's own JAX
  train step differentiates; it has no underscore but is not documented
  API.
- `MeanMetricWrapper._fn` and `_fn_kwargs` (set at construction): the
  function a metric wraps and its keyword arguments. Keras copies a metric
  through its config, which holds the function serialized: a user's
  function that is not registered with Keras does not deserialize, and
  `AdversarialModel.compile` makes a `robust_` and a `clean_` copy of
  each metric.
- `BaseOptimizer._learning_rate` (set at construction): the learning rate
  as given, so a `LearningRateSchedule` itself (the public `learning_rate`
  evaluates the schedule at the current step).
- `BaseOptimizer._use_weight_decay`: whether the optimizer decays a given
  variable (after `exclude_from_weight_decay`); Keras has no public query.
- `Variable._value`: None while Keras's JAX trainer has detached a
  variable's value during `fit`/`evaluate`/`predict` (the public `value`
  then calls `Variable._initializer`, None once the variable is
  initialised, and fails with "'NoneType' object is not callable").
  `mark_value_lost` sets both: a variable whose value was lost raises an
  error that says so when read.
- The state Keras's JAX trainer keeps while it loops
  (`JAXTrainer._jax_state`, `_jax_state_synced` and `jax_state_sync`, which
  has no underscore but is not documented API): each step's state is
  recorded there, and `jax_state_sync` (at the end of an epoch, in `fit`'s
  `finally`, and on every read of `Callback.model`) attaches it to the
  variables. No public API reads or sets it.
- `Trainer._get_metrics_result_or_logs` (called by `fit` at the end of
  each epoch and by `evaluate` at the end): `EpochLogsFromMetrics`
  overrides it. Keras reads the metrics there only when the last step's
  logs have exactly their keys, and otherwise keeps those logs; no public
  hook decides what an epoch logs.
- `keras.src.backend.common.stateless_scope.get_stateless_scope` and a
  `StatelessScope`'s `state_mapping`, `losses` and `collect_losses`: the
  active scope and what it holds, so that `keras_writes_recorded` can run a
  function reading every variable as the active scope does while keeping its
  writes apart. Keras exports the class but neither the active scope nor
  what a scope holds, except one variable at a time.

`keras.utils.unpack_x_y_sample_weight` is public (the same function object
as the private one robustlab used before) and is used directly.
"""

import contextlib
import importlib
import weakref

import keras

__all__ = [
    "EpochLogsFromMetrics",
    "SUPPORTED_KERAS",
    "WritesRecord",
    "applies_weight_decay",
    "attach_jax_state",
    "attach_kept_jax_state",
    "check_attached",
    "compiled_loss_function",
    "compute_loss",
    "forget_reassigned_lost_values",
    "holds_live_values",
    "holds_no_value",
    "is_detached",
    "keep_jax_state",
    "keras_writes_recorded",
    "learning_rate_schedule",
    "loss_tracker",
    "lost_value_message",
    "mean_metric_function",
    "mark_value_lost",
    "no_automatic_dependency_tracking",
    "output_operation",
    "saved_compile_arguments",
    "softmax_operation_type",
    "stateless_loss_and_updates",
    "sync_jax_state",
    "unscale_loss_for_distribution",
]

SUPPORTED_KERAS = ">=3.8,<=3.15.1 (tested with 3.15.1)"


def _incompatible(what):
    return (
        f"robustlab needs the Keras private API `{what}`, which Keras "
        f"{keras.__version__} does not provide. robustlab is known to work "
        f"with Keras {SUPPORTED_KERAS}; install a Keras in that range."
    )


def _required_symbol(module_name, name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(_incompatible(f"{module_name}.{name}")) from error
    if not hasattr(module, name):
        raise ImportError(_incompatible(f"{module_name}.{name}"))
    return getattr(module, name)


def _required_method(cls, owner, name):
    if not callable(getattr(cls, name, None)):
        raise ImportError(_incompatible(f"{owner}.{name}"))


unscale_loss_for_distribution = _required_symbol(
    "keras.src.losses.loss", "unscale_loss_for_distribution")
no_automatic_dependency_tracking = _required_symbol(
    "keras.src.utils.tracking", "no_automatic_dependency_tracking")
_get_stateless_scope = _required_symbol(
    "keras.src.backend.common.stateless_scope", "get_stateless_scope")
_required_method(keras.Model, "Trainer", "_compute_loss")
_required_method(keras.optimizers.Optimizer, "BaseOptimizer", "_use_weight_decay")
_required_method(keras.Model, "Trainer", "_get_metrics_result_or_logs")
if keras.backend.backend() == "jax":
    _JAX_TRAINER = _required_symbol("keras.src.backend.jax.trainer", "JAXTrainer")
    _required_method(_JAX_TRAINER, "JAXTrainer", "compute_loss_and_updates")
    _required_method(_JAX_TRAINER, "JAXTrainer", "jax_state_sync")


def _instance_attribute(obj, name, owner):
    # Keras sets these on the instance (some only in `compile`), so they can
    # be checked only where they are read.
    try:
        return getattr(obj, name)
    except AttributeError:
        raise AttributeError(
            _incompatible(f"{owner}.{name}")
            + f" Received: {type(obj).__name__} without `{name}`"
        ) from None


class EpochLogsFromMetrics:
    """A `keras.Model` mixin (listed before `keras.Model`) for a model whose
    steps log some of its metrics, not all (the training step of
    `AdversarialModel` logs no `clean_` metric): what `fit` logs for an
    epoch, and `evaluate` returns, are the metrics' results over the epoch
    for every key of the last step's logs that names a metric; other keys
    (a value a step logs that is no metric) keep the step's value.

    Keras takes the metrics' results only where the last step logged
    exactly the metrics' keys, and otherwise keeps that step's logs. Under
    `tf.distribute` those are each replica's results averaged over the
    replicas, which with sample weights is not the weighted mean over the
    global batch that the metrics hold. On one device the step's logs are
    the metrics' results at that step, so the numbers are the same.
    """

    def _get_metrics_result_or_logs(self, logs):
        if not isinstance(logs, dict):
            return logs
        results = self.get_metrics_result()
        return {key: results.get(key, value) for key, value in logs.items()}


def output_operation(tensor):
    """The operation (a layer, or the op of a `keras.ops` call) that computed
    a functional model's output `tensor`, or None for a tensor without that
    record. Keras keeps it in the tensor's private `_keras_history`."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


_SOFTMAX_OPERATION_TYPE = []


def softmax_operation_type():
    """The class of the operation a `keras.ops.softmax` call on a symbolic
    tensor records (not exported: read from such a call once)."""
    if not _SOFTMAX_OPERATION_TYPE:
        symbolic = keras.ops.softmax(keras.KerasTensor((1, 2)))
        _SOFTMAX_OPERATION_TYPE.append(type(output_operation(symbolic)))
    return _SOFTMAX_OPERATION_TYPE[0]


def compute_loss(model, x, y, y_pred, sample_weight, training):
    """`model`'s loss of a batch (compiled loss plus regularisation losses),
    as Keras's own train and test steps compute it."""
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


def compiled_loss_function(model):
    """The compiled loss of a compiled `model` alone (no regularisation
    losses), callable as `fn(y, y_pred, sample_weight)`."""
    return _instance_attribute(model, "_compile_loss", "Trainer")


def mean_metric_function(metric):
    """`(fn, fn_kwargs)`: the function a `keras.metrics.MeanMetricWrapper`
    averages and the keyword arguments it calls it with."""
    return (_instance_attribute(metric, "_fn", "MeanMetricWrapper"),
            dict(_instance_attribute(metric, "_fn_kwargs", "MeanMetricWrapper")))


def loss_tracker(model):
    """The `keras.metrics.Mean` a compiled `model` reports as `loss`."""
    return _instance_attribute(model, "_loss_tracker", "Trainer")


def saved_compile_arguments(model):
    """The dict of compile arguments a compiled `model` saves (and
    `get_compile_config` returns); writing to it changes what is saved."""
    return _instance_attribute(model, "_compile_config", "Trainer").config


def stateless_loss_and_updates(model):
    """JAX backend: `fn(trainable, non_trainable, metrics_variables, x, y,
    sample_weight, training, optimizer_variables)` returning `(scaled loss,
    (unscaled loss, y_pred, non_trainable, metrics_variables))`, for
    `jax.value_and_grad(fn, has_aux=True)`."""
    return model.compute_loss_and_updates


def learning_rate_schedule(optimizer):
    """The `LearningRateSchedule` the optimizer was given, or None for a
    fixed learning rate."""
    setting = _instance_attribute(optimizer, "_learning_rate", "BaseOptimizer")
    if isinstance(setting, keras.optimizers.schedules.LearningRateSchedule):
        return setting
    return None


def nnx_enabled():
    """Whether Keras runs its layers as Flax NNX modules (JAX). Public API,
    but only from Keras 3.11 (`keras.config.is_nnx_enabled`); an older
    Keras has no NNX mode."""
    is_nnx_enabled = getattr(keras.config, "is_nnx_enabled", None)
    return bool(is_nnx_enabled()) if is_nnx_enabled is not None else False


def applies_weight_decay(optimizer, variable):
    """Whether the optimizer's weight decay applies to `variable`."""
    return optimizer._use_weight_decay(variable)


def is_detached(variable):
    """Whether Keras's JAX trainer has detached `variable`'s value (it
    does so while looping over the data, and an exception that ends the
    loop early can leave it so)."""
    return _instance_attribute(variable, "_value", "Variable") is None


def holds_no_value(variable):
    """Whether `variable` has no value to read: detached, or holding a JAX
    array whose buffer a compiled step took (Keras's JAX steps donate the
    state they receive) and deleted."""
    value = _instance_attribute(variable, "_value", "Variable")
    if value is None:
        return True
    is_deleted = getattr(value, "is_deleted", None)
    return is_deleted is not None and bool(is_deleted())


def holds_live_values(state):
    """Whether every array of `state` (a JAX step's state: a tuple of
    lists of arrays) still has its buffer (none was donated to a step)."""
    for part in state:
        for value in part:
            is_deleted = getattr(value, "is_deleted", None)
            if is_deleted is not None and is_deleted():
                return False
    return True


# The parts of the state Keras's JAX train (4), test (3) and predict (2)
# steps take and return, in its order, under the keys of `_jax_state`.
_JAX_STATE_KEYS = {
    4: ("trainable_variables", "non_trainable_variables", "optimizer_variables",
        "metrics_variables"),
    3: ("trainable_variables", "non_trainable_variables", "metrics_variables"),
    2: ("trainable_variables", "non_trainable_variables"),
}


def keep_jax_state(model, state):
    """Record `state`, as a JAX train, test or predict step of `model`
    returned it, as the newest state of the loop Keras's JAX trainer runs:
    the one `jax_state_sync` attaches to the variables. Keras records it
    itself only after the step's call has returned, in a few lines of
    Python where a `KeyboardInterrupt` could fall, leaving the state it
    recorded before, whose buffers the step had taken."""
    # Not through Keras's `__setattr__`, whose tracking would wrap every
    # list of the state at every step.
    object.__setattr__(model, "_jax_state", dict(zip(_JAX_STATE_KEYS[len(state)], state)))


def attach_jax_state(model, state):
    """Attach `state` (as in `keep_jax_state`) to `model`'s variables now,
    as Keras's `jax_state_sync` does at the end of an epoch."""
    keep_jax_state(model, state)
    model._jax_state_synced = False
    model.jax_state_sync()


def sync_jax_state(model):
    """Attach the state of a running JAX loop of `model` to its variables,
    as every read of `Callback.model` does; nothing where they hold it
    already."""
    model.jax_state_sync()


def attach_kept_jax_state(model):
    """After an exception ended a JAX loop of `model`: attach the state
    Keras kept to its variables (Keras's `evaluate` and `predict` have no
    `finally` that would), and give each variable still without a value
    the value the kept state holds for it, where that value's buffer is
    intact (a loop that starts marks the state attached before it has
    taken it from the variables: a `predict` called while a `fit` runs,
    from a callback, and failing, left the fit's state unattached). No
    variable that holds a value is changed."""
    model.jax_state_sync()
    kept = getattr(model, "_jax_state", None)
    if not kept:
        return
    optimizer = getattr(model, "optimizer", None)
    parts = {
        "trainable_variables": model.trainable_variables,
        "non_trainable_variables": model.non_trainable_variables,
        "optimizer_variables": optimizer.variables if optimizer is not None else (),
        "metrics_variables": model.metrics_variables,
    }
    for key, variables in parts.items():
        for variable, value in zip(variables, kept.get(key) or ()):
            is_deleted = getattr(value, "is_deleted", None)
            if holds_no_value(variable) and not (is_deleted is not None and is_deleted()):
                variable.assign(value)


class _LostValue:
    """Stands in for the initializer of a variable whose value was lost:
    Keras calls it when the variable is read without a value."""

    def __init__(self, message):
        self.message = message

    def __call__(self, shape=None, dtype=None):
        raise RuntimeError(self.message)


# The variables `mark_value_lost` marked, by id (Keras's variables are not
# hashable), held weakly.
_LOST_VALUES = {}


def mark_value_lost(variable, message):
    """Leave `variable` without a value, so that reading it raises
    `RuntimeError(message)` (instead of "'NoneType' object is not
    callable") until a value is assigned."""
    variable._value = None
    variable._initializer = _LostValue(message)
    _LOST_VALUES[id(variable)] = weakref.ref(variable)


def lost_value_message(variable):
    """The message `mark_value_lost` gave `variable`, while it has had no
    value since; None otherwise."""
    initializer = _instance_attribute(variable, "_initializer", "Variable")
    if not isinstance(initializer, _LostValue):
        return None
    if variable._value is not None:
        _unmark(variable)
        return None
    return initializer.message


def _unmark(variable):
    variable._initializer = None
    _LOST_VALUES.pop(id(variable), None)


def forget_reassigned_lost_values():
    """Drop the mark of every variable `mark_value_lost` marked that has
    been assigned a value since (`set_weights`, `load_weights`), so that
    the mark does not speak for a later detachment by a running loop. One
    look at each marked variable (usually none)."""
    for key, ref in list(_LOST_VALUES.items()):
        variable = ref()
        if variable is None:
            _LOST_VALUES.pop(key, None)
        elif variable._value is not None:
            _unmark(variable)


def check_attached(model, name="model", variables=None):
    """Raise `ValueError` when a variable of `model` (or of `variables`, a
    list of its variables) has no value to read: on JAX, a running `fit`,
    `evaluate` or `predict` holds it (Keras detaches the variables' values
    while it loops, and `Callback.model` attaches them), or an interrupted
    one lost it. Cheap: one look at each variable."""
    if variables is None:
        variables = getattr(model, "variables", ())  # what is not a Keras model: none
    for variable in variables:
        if holds_no_value(variable):
            lost = lost_value_message(variable)
            if lost is not None:
                raise ValueError(f"{lost} Received: {name}={model.name!r}")
            raise ValueError(
                f"Argument `{name}` has variables without a value (e.g. "
                f"{variable.path!r}): a JAX fit, evaluate or predict of a model "
                "that holds them is running, and Keras's JAX trainer detaches "
                "the variables' values while it loops. Inside a callback, reach "
                "the model through the callback's `self.model` (the classifier "
                "an AdversarialModel wraps as `self.model.model`), which "
                "attaches them first; a reference to the model held from "
                f"outside the callback does not. Received: {name}={model.name!r}")


class WritesRecord:
    """What `keras_writes_recorded` saw: `written` is None inside the block,
    then whether anything in it updated a variable or collected a loss."""

    written = None


@contextlib.contextmanager
def keras_writes_recorded():
    """A block in which every Keras variable reads what it reads outside it
    (its value in the active `keras.StatelessScope`, or its own value when no
    scope is active or the scope maps no value to it), losses are collected
    where the active scope collects them, and every write (a variable's
    update, a collected loss) is kept apart and then dropped.

    Yields a `WritesRecord`; after the block its `written` says whether
    anything was written. A caller that traces a function here (as
    `robustlab.backend.jax.autodiff.with_cheap_max_pool_derivatives` does)
    learns whether the function writes Keras state, which the trace's values
    must not reach.
    """
    outer = _get_stateless_scope()
    reads = {} if outer is None else dict(_instance_attribute(
        outer, "state_mapping", "StatelessScope"))
    collects = outer is not None and _instance_attribute(
        outer, "collect_losses", "StatelessScope")
    scope = keras.StatelessScope(collect_losses=collects, initialize_variables=False)
    mapping = _instance_attribute(scope, "state_mapping", "StatelessScope")
    mapping.update(reads)
    record = WritesRecord()
    with scope:
        yield record
    record.written = bool(
        _instance_attribute(scope, "losses", "StatelessScope")
        or mapping.keys() != reads.keys()
        or any(mapping[key] is not value for key, value in reads.items())
    )
