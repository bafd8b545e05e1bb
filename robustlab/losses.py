"""What a `loss=` argument means: a per-example loss function.

Wherever robustlab takes `loss=` (the attacks, the curvature probes, the
posterior tracker) the user may pass a Keras loss name (such as
`"sparse_categorical_crossentropy"`), a function `(y_true, y_pred) ->
per-example losses`, or a `keras.losses.Loss` instance. `per_example_loss`
turns any of them into the function `(y_true, y_pred) -> per-example losses`
(a `Loss` instance's `reduction` and sample weights do not apply).

Where `loss=None` stands for the model's compiled loss, `resolve_model_loss`
reads that loss first. Where it stands for a classifier's default loss, that is
a (sparse) categorical cross-entropy, `default_classification_loss`, whose
`from_logits` follows from the model: a final softmax
(`final_activation_is_softmax`) means probabilities, anything else logits.
"""

import keras

from robustlab import _keras_compat

__all__ = [
    "default_classification_loss",
    "final_activation_is_softmax",
    "per_example_loss",
    "resolve_model_loss",
]


def final_activation_is_softmax(model):
    """Whether `model` ends in a softmax (so it outputs probabilities).

    The operation looked at is, for a functional model with one output, the
    one that computes that output (a layer or a `keras.ops` call); for a
    `keras.Sequential`, its last layer; for any other model (subclassed, or
    functional with several outputs), the last of `model.layers`, which for
    a subclassed model is the last layer assigned in `__init__`, not
    necessarily the one `call` ends with. That operation is a softmax when
    it is a `keras.layers.Softmax`, a `keras.ops.softmax` or
    `keras.activations.softmax` call in a functional model, a layer whose
    `activation` is softmax (`Dense(..., activation="softmax")`,
    `Activation("softmax")`), or a model that ends in a softmax by these same
    rules (a nested model, looked into recursively).

    Anything else counts as logits (False), among them a softmax followed by
    any other operation, one applied inside a subclassed model's `call`, and
    a model with no layers.
    """
    outputs = getattr(model, "outputs", None)
    if (not isinstance(model, keras.Sequential) and isinstance(outputs, list)
            and len(outputs) == 1):
        operation = _keras_compat.output_operation(outputs[0])
        if operation is not None:
            return _is_softmax(operation)
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    return _is_softmax(layers[-1])


def _is_softmax(operation):
    if isinstance(operation, keras.Model):
        return final_activation_is_softmax(operation)
    if isinstance(operation, (keras.layers.Softmax, _keras_compat.softmax_operation_type())):
        return True
    activation = getattr(operation, "activation", None)
    return activation is keras.activations.softmax or (
        getattr(activation, "__name__", None) == "softmax"
    )


def per_example_loss(loss):
    """A function `(y_true, y_pred) -> per-example losses` for a Keras loss
    given as a string, a function or a `keras.losses.Loss`."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    try:
        resolved = keras.losses.get(loss)
    except (ValueError, TypeError):  # "Could not interpret loss identifier"
        resolved = None
    if isinstance(resolved, keras.losses.Loss):
        return resolved.call
    if resolved is None or not callable(resolved):
        raise ValueError(
            "Argument `loss` must be a Keras loss name, a function "
            "`(y_true, y_pred) -> per-example losses` or a keras.losses.Loss. "
            f"Received: loss={loss!r}"
        )
    return resolved


def default_classification_loss(sparse_labels, from_logits):
    """The summed cross-entropy of a classifier: sparse for class-index
    labels, categorical for one-hot ones."""
    if sparse_labels:
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits, reduction="sum"
        )
    return keras.losses.CategoricalCrossentropy(
        from_logits=from_logits, reduction="sum"
    )


def resolve_model_loss(model, loss):
    """`(cache_key, per_example_loss_fn)` for `loss` (None: the model's
    compiled loss, which it must then have).

    The cache key is the loss itself for a name or a `keras.losses.Loss`, and
    the resolved function otherwise, so that compiled functions built from
    one loss can be reused.
    """
    if loss is None:
        compiled_loss = getattr(model, "loss", None) if getattr(
            model, "compiled", False) else None
        if compiled_loss is None:
            raise ValueError(
                "Argument `loss` is required when the model is not compiled with "
                "a loss: pass `loss=` (a Keras loss name, function or "
                "keras.losses.Loss instance) or `model.compile(loss=...)` first. "
                "Received: loss=None"
            )
        loss = compiled_loss
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            "Argument `loss` must be a single Keras loss (multi-output models "
            f"are not supported). Received: loss={loss!r}"
        )
    try:
        per_example = per_example_loss(loss)
    except (ValueError, TypeError):
        raise ValueError(
            "Argument `loss` must be a Keras loss name, a function "
            f"`(y_true, y_pred) -> per-example losses` or a keras.losses.Loss. "
            f"Received: loss={loss!r}"
        ) from None
    return (loss if isinstance(loss, (str, keras.losses.Loss)) else per_example), per_example
