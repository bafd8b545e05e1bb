"""Argument checks shared by the public entry points.

Every check raises `ValueError` (or `TypeError` for a wrong type) that names the
argument and the allowed range and ends, as Keras's own errors do, with
"Received: name=value". Nothing is clamped or silently fixed.
"""

import math
import numbers
import weakref

import keras
import numpy as np


def _received(name, value):
    return f"Received: {name}={value!r}"


def _is_real_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite_at_least(name, value, minimum):
    if not _is_real_number(value) or not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= {minimum:g}. "
            + _received(name, value)
        )
    return float(value)


def check_finite_positive(name, value):
    if not _is_real_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Argument `{name}` must be a finite number > 0. "
            + _received(name, value)
        )
    return float(value)


def check_int_at_least(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            + _received(name, value)
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            + _received(name, value)
        )
    return int(value)


def check_value_range(value_range):
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            "Argument `value_range` must be None or a pair (low, high) of "
            "finite numbers with low < high. " + _received("value_range", value_range)
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            "Argument `value_range` must be None or a pair (low, high) of "
            "finite numbers with low < high. " + _received("value_range", value_range)
        )
    return (low, high)


def check_inputs(x, value_range, name="x"):
    """Inputs must be finite and, when a value range is declared, inside it."""
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError(
            f"Argument `{name}` must hold at least one example. "
            f"Received: {name} with shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(
            f"Argument `{name}` must be numeric. Received: {name} of dtype {x.dtype}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"Argument `{name}` must be finite (no NaN or inf). "
            f"Received: {name} with {int(np.sum(~np.isfinite(x)))} non-finite values"
        )
    if value_range is not None:
        low, high = value_range
        x_min, x_max = float(np.min(x)), float(np.max(x))
        if x_min < low or x_max > high:
            raise ValueError(
                f"Argument `{name}` must lie inside value_range=({low:g}, "
                f"{high:g}); scale the data or declare its range with "
                f"`value_range=`. Received: {name} with values in "
                f"[{x_min:g}, {x_max:g}]"
            )


def check_labels(y, num_classes, num_examples, name="y"):
    """Labels must be class indices in [0, num_classes) or one-hot rows.

    Returns:
        True when the labels are sparse class indices, False when one-hot.
    """
    y = np.asarray(y)
    if len(y) != num_examples:
        raise ValueError(
            f"Argument `{name}` must have one label per input ({num_examples}). "
            f"Received: {name} with shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        if not np.all(np.isfinite(y)) or np.any(y < 0):
            raise ValueError(
                f"One-hot labels `{name}` must be finite and non-negative. "
                f"Received: {name} with min {float(np.nanmin(y)):g}"
            )
        if not np.allclose(y.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(
                f"One-hot labels `{name}` must sum to 1 along the class axis. "
                f"Received: {name} with row sums in "
                f"[{float(y.sum(1).min()):g}, {float(y.sum(1).max()):g}]"
            )
        return False
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be class indices of shape (n,) or (n, 1), "
            f"or one-hot of shape (n, {num_classes}) to fit the model's "
            f"{num_classes} outputs. Received: {name} with shape {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(
                f"Class-index labels `{name}` must be whole numbers. "
                f"Received: {name} with non-integer values"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"Labels `{name}` must be integers or one-hot floats. "
            f"Received: {name} of dtype {y.dtype}"
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels `{name}` must be class indices in [0, {num_classes - 1}] to "
            f"fit the model's {num_classes} outputs. Received: {name} with "
            f"values in [{y.min()}, {y.max()}]"
        )
    return True


_NUM_CLASSES = weakref.WeakKeyDictionary()


def check_classifier(model, example_batch):
    """The model must map a batch to a single `(batch, classes)` output with
    at least two classes. Returns the number of classes."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model classifier. "
            + _received("model", type(model).__name__)
        )
    cached = _NUM_CLASSES.get(model)
    if cached is not None:
        return cached
    if model.built:
        spec = model.compute_output_spec(
            keras.KerasTensor(tuple(example_batch.shape), dtype=str(example_batch.dtype))
        )
    else:
        # Symbolic shape inference is unreliable on unbuilt models; one real
        # example builds the model and answers exactly.
        spec = model(example_batch[:1], training=False)
    shape = getattr(spec, "shape", None)
    if shape is None or len(shape) != 2 or shape[-1] is None or shape[-1] < 2:
        raise ValueError(
            "Argument `model` must be a classifier with one output of shape "
            "(batch, classes) and at least 2 classes. "
            f"Received: model with output {getattr(spec, 'shape', spec)!r}"
        )
    _NUM_CLASSES[model] = int(shape[-1])
    return int(shape[-1])


# -- tf.data inputs: the same checks, batch by batch, in the one pass `fit`
# or `evaluate` makes over the data -------------------------------------------

# Delimits a check's error inside the text of the TensorFlow error that carries
# it out of the input pipeline.
_DATASET_ERROR_MARK = "<<robustlab input check>>"


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TensorFlow)."""
    import sys

    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def checked_dataset(dataset, model, value_range, x_name="x", y_name="y"):
    """`dataset` with each `(x, y[, sample_weight])` batch passed through
    `check_inputs` and `check_labels` as it is read: nothing is read ahead
    or twice. A failing batch stops the pipeline; `dataset_errors_raised`
    turns that into the check's own `ValueError` / `TypeError`.

    Elements of another structure (inputs only, dicts) pass unchecked, and
    so do non-finite input values: a NaN or inf reaches the training loss,
    where `StopOnNonFiniteLoss` reports the epoch and batch.
    """
    import tensorflow as tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) >= 2
            and all(isinstance(s, tf.TensorSpec) for s in spec[:2])):
        return dataset
    x_shape = spec[0].shape
    if x_shape.rank is None or None in x_shape[1:]:
        return dataset
    num_classes = check_classifier(
        model, np.zeros((1,) + tuple(x_shape[1:]), spec[0].dtype.as_numpy_dtype))

    def check(x, y):
        try:
            # Non-finite inputs are left to the non-finite-loss guard, which
            # names the epoch and batch where they are met.
            finite = x[np.isfinite(x)]
            if finite.size:
                check_inputs(finite, value_range, name=x_name)
            check_labels(y, num_classes, len(x), name=y_name)
        except (TypeError, ValueError) as error:
            mark = _DATASET_ERROR_MARK
            raise ValueError(f"{mark}{type(error).__name__}{mark}{error}{mark}") from None
        return np.bool_(True)

    def checked(x, y, *rest):
        # Stateful, so that tf.data keeps the check although nothing reads
        # its result.
        passed = tf.numpy_function(check, [x, y], tf.bool, stateful=True)
        with tf.control_dependencies([passed]):
            return (tf.identity(x), tf.identity(y)) + rest

    return dataset.map(checked)


def dataset_errors_raised(function, *args, **kwargs):
    """Call `function`; a failed `checked_dataset` check surfaces as its own
    `ValueError` / `TypeError` instead of TensorFlow's wrapping error."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001  (re-raised unless it is ours)
        parts = str(error).split(_DATASET_ERROR_MARK)
        if len(parts) < 4:
            raise
        kind = TypeError if parts[1] == "TypeError" else ValueError
        raise kind(parts[2]) from None
