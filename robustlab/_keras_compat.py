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
- `BaseOptimizer._learning_rate` (set at construction): the learning rate
  as given, so a `LearningRateSchedule` itself (the public `learning_rate`
  evaluates the schedule at the current step).
- `BaseOptimizer._use_weight_decay`: whether the optimizer decays a given
  variable (after `exclude_from_weight_decay`); Keras has no public query.
- `Variable._value`: None while Keras's JAX trainer has detached a
  variable's value during `fit`/`evaluate` (the public `value` then returns
  a placeholder instead).
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

import keras

__all__ = [
    "SUPPORTED_KERAS",
    "WritesRecord",
    "applies_weight_decay",
    "compiled_loss_function",
    "compute_loss",
    "is_detached",
    "keras_writes_recorded",
    "learning_rate_schedule",
    "loss_tracker",
    "no_automatic_dependency_tracking",
    "output_operation",
    "saved_compile_arguments",
    "softmax_operation_type",
    "stateless_loss_and_updates",
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
if keras.backend.backend() == "jax":
    _required_method(
        _required_symbol("keras.src.backend.jax.trainer", "JAXTrainer"),
        "JAXTrainer", "compute_loss_and_updates")


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


def applies_weight_decay(optimizer, variable):
    """Whether the optimizer's weight decay applies to `variable`."""
    return optimizer._use_weight_decay(variable)


def is_detached(variable):
    """Whether Keras's JAX trainer has detached `variable`'s value (it
    does so while looping over the data, and an error raised by the data
    leaves it so)."""
    return _instance_attribute(variable, "_value", "Variable") is None


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
