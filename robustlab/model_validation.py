"""Checks that need Keras: that a model is a classifier, and `tf.data`
inputs checked batch by batch with the checks of `robustlab.validation`.

Like those, every check raises `ValueError` (or `TypeError`) naming the
argument and the allowed range, ending with "Received: name=value".
"""

import weakref

import keras
import numpy as np

from robustlab.validation import check_inputs
from robustlab.validation import check_labels

__all__ = [
    "check_classifier",
    "check_input_shape",
    "checked_dataset",
    "dataset_errors_raised",
    "is_tf_dataset",
    "mark_checked",
]

_NUM_CLASSES = weakref.WeakKeyDictionary()


def check_classifier(model, example_batch, name="x"):
    """The model must map a batch to a single `(batch, classes)` output with
    at least two classes, and `example_batch` (inputs named `name`) must have
    the shape of its input. Returns the number of classes."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model classifier. "
            f"Received: model={type(model).__name__!r}"
        )
    check_input_shape(model, example_batch, name)
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


def check_input_shape(model, example_batch, name="x"):
    """Each example of `example_batch` must have the shape of the model's
    (single, declared) input, where the input declares it. Keras itself would
    add a missing last axis of size 1 once the model is built, but not before,
    so an image batch without its channel axis is refused outright."""
    inputs = getattr(model, "inputs", None) if model.built else None
    if not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape[1:])
    received = tuple(np.shape(example_batch)[1:])
    if len(received) != len(expected) or any(
            e is not None and e != r for e, r in zip(expected, received)):
        shown = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise ValueError(
            f"Each example of `{name}` must have the model's input shape {shown}. "
            f"Received: {name} with examples of shape {received}"
        )


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


# Pipelines robustlab built from arrays it had already checked whole: their
# batches are not checked again (the wrapping map is traced anew at every
# `evaluate` call, about 15-30 ms on two CPU cores, once or twice an epoch).
_CHECKED_PIPELINES = weakref.WeakSet()


def mark_checked(dataset):
    """Record that every batch of `dataset` comes from arrays that passed
    `check_inputs` and `check_labels` for this model; `checked_dataset`
    then returns it unwrapped. Anything but a `tf.data.Dataset` (JAX's
    pipelines are the arrays themselves) is returned as it is."""
    if is_tf_dataset(dataset):
        _CHECKED_PIPELINES.add(dataset)
    return dataset


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

    if dataset in _CHECKED_PIPELINES:
        return dataset
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
