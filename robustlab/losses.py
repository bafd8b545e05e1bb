"""What a `loss=` argument means: a per-example loss function.

Wherever robustlab takes `loss=` (the attacks, the curvature probes, the
posterior tracker) the user may pass a Keras loss name (such as
`"sparse_categorical_crossentropy"`), a function `(y_true, y_pred) ->
per-example losses`, or a `keras.losses.Loss` instance. `per_example_loss`
turns any of them into the function `(y_true, y_pred) -> per-example losses`
(a `Loss` instance's `reduction` and sample weights do not apply).

Where `loss=None` stands for the model's compiled loss, `resolve_model_loss`
reads that loss first. `compiled_for_loss` keeps the functions compiled from
a loss, one per loss value where the value defines the loss. Where `loss=None`
stands for a classifier's default loss, that is a (sparse) categorical
cross-entropy, `default_classification_loss`, whose
`from_logits` follows from the model: a final softmax
(`final_activation_is_softmax`) means probabilities, anything else logits.
`check_labels_fit_loss` refuses labels of the other kind than Keras's
(sparse) categorical cross-entropy takes.
"""

import json
import weakref

import keras

from robustlab import _keras_compat

__all__ = [
    "LabelKind",
    "check_labels_fit_loss",
    "compiled_for_loss",
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


def _takes_class_indices(loss):
    """True for Keras's sparse categorical cross-entropy, False for its
    categorical (and categorical focal) ones, None for any other loss: only
    it knows its targets."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    if isinstance(loss, (keras.losses.CategoricalCrossentropy,
                         keras.losses.CategoricalFocalCrossentropy)):
        return False
    if isinstance(loss, keras.losses.Loss):
        return None
    try:
        resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    except (ValueError, TypeError):
        return None
    if isinstance(resolved, keras.losses.Loss):
        return _takes_class_indices(resolved)
    if resolved is keras.losses.sparse_categorical_crossentropy:
        return True
    if resolved in (keras.losses.categorical_crossentropy,
                    keras.losses.categorical_focal_crossentropy):
        return False
    return None


class LabelKind:
    """The kind of labels a loss takes, as plain values (it pickles, for a
    `keras.utils.PyDataset` read in other processes): class indices for
    Keras's sparse categorical cross-entropy, one-hot rows for its
    categorical ones, either for any other loss (only it knows its
    targets)."""

    def __init__(self, loss):
        self.takes_class_indices = _takes_class_indices(loss)
        self.loss_name = repr(loss) if isinstance(loss, str) else (
            type(loss).__name__ if isinstance(loss, keras.losses.Loss)
            else getattr(loss, "__name__", type(loss).__name__))

    def check(self, labels_sparse, y_shape, name="y"):
        """Refuse labels of the other kind (Keras's own error names its
        `target` and `output`, not the argument). `labels_sparse` is what
        `robustlab.validation.check_labels` returned for labels of shape
        `y_shape`."""
        if self.takes_class_indices is None or self.takes_class_indices == labels_sparse:
            return
        if self.takes_class_indices:
            raise ValueError(
                f"Argument `{name}` holds one-hot labels, but the loss {self.loss_name} "
                f"(a sparse categorical cross-entropy) takes class indices: pass "
                f"`np.argmax({name}, axis=-1)`, or a categorical cross-entropy. "
                f"Received: {name} with shape {tuple(y_shape)}")
        raise ValueError(
            f"Argument `{name}` holds class indices, but the loss {self.loss_name} (a "
            f"categorical cross-entropy) takes one-hot labels: pass "
            f"`keras.utils.to_categorical({name}, num_classes)`, or a sparse "
            f"categorical cross-entropy. Received: {name} with shape {tuple(y_shape)}")


def check_labels_fit_loss(loss, labels_sparse, y_shape, name="y"):
    """`LabelKind(loss).check(labels_sparse, y_shape, name)`: refuse one-hot
    labels for Keras's sparse categorical cross-entropy and class indices
    for its categorical ones."""
    LabelKind(loss).check(labels_sparse, y_shape, name)


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
    """`(loss, per_example_loss_fn)` for `loss` (None: the model's compiled
    loss, which it must then have); the first is what `compiled_for_loss`
    takes as `loss`."""
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
    return loss, per_example


def compiled_for_loss(cache, model, key, loss, per_example, build):
    """The function `build(per_example)` for `model`, `key` and `loss`, kept
    in `cache` (a `weakref.WeakKeyDictionary` of model -> {key: function})
    and built only where it is not there yet.

    A loss that its value defines shares one function with every equal loss:
    None and names by their value, Keras's own loss functions by themselves,
    and instances of Keras's own `keras.losses.Loss` classes by class and
    config, so that `loss=keras.losses.SparseCategoricalCrossentropy(
    from_logits=True)` written afresh for each call compiles once. Any other
    loss (an instance of a user's `Loss` subclass, a user's function) is
    keyed by its identity, as its config need not show all of its state; its
    function then holds it weakly and leaves the cache when it is freed, so a
    loss written afresh for each call does not pile up compiled functions.

    Args:
        cache: the `weakref.WeakKeyDictionary` model -> {key: function}.
        model: the model the function is compiled for.
        key: the rest of the function's key (hashable).
        loss: the loss as `resolve_model_loss` returns it (or None).
        per_example: `(y_true, y_pred) -> per-example losses` for `loss`.
        build: `per_example -> function`.
    """
    loss_key = _value_key(loss)
    weak = None
    if loss_key is _NO_VALUE:
        try:
            weak = weakref.ref(loss)
        except TypeError:  # no weak references (a builtin): held, as a value
            loss_key = _Identity(loss)
        else:
            loss_key = _WeakIdentity(weak)
    full_key = (key, loss_key)
    per_model = cache.setdefault(model, {})
    function = per_model.get(full_key)
    if function is None:
        if weak is not None:
            per_example = _weakly_called(weak)
            finalizer = weakref.finalize(
                loss, _forget, cache, weakref.ref(model), full_key)
            finalizer.atexit = False
        function = build(per_example)
        per_model[full_key] = function
    return function


_NO_VALUE = object()


def _from_keras(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "keras"


def _value_key(loss):
    """The key of a loss that its value defines, else `_NO_VALUE`."""
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss) and _from_keras(type(loss)):
        # A Keras wrapper of a user's function serialises the function by
        # name only: two different lambdas would share one key.
        fn = getattr(loss, "fn", None)
        if fn is not None and not _from_keras(fn):
            return _NO_VALUE
        try:
            config = json.dumps(loss.get_config(), sort_keys=True)
        except (TypeError, ValueError, NotImplementedError):
            return _NO_VALUE
        return (type(loss), config)
    if callable(loss) and not isinstance(loss, type) and _from_keras(loss) and (
            getattr(loss, "__closure__", None) is None):
        return loss  # a module-level function of Keras's, as permanent as a name
    return _NO_VALUE


def _weakly_called(ref):
    """`per_example_loss` of the loss `ref` refers to, without holding it."""

    def per_example(y_true, y_pred):
        loss = ref()
        if loss is None:
            raise RuntimeError("The loss of this compiled function was deleted.")
        return per_example_loss(loss)(y_true, y_pred)

    return per_example


def _forget(cache, model_ref, full_key):
    model = model_ref()
    if model is not None:
        cache.get(model, {}).pop(full_key, None)


class _Identity:
    """A cache key that is the identity of `obj`, holding `obj` so that the
    identity stays its own: `id` alone passes to another object once `obj`
    is freed, which would then be given the function compiled for `obj`."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


class _WeakIdentity:
    """A cache key that is the identity of a live object, held weakly: once
    the object is freed the key equals only itself, so an object later made
    at the same address is not taken for it."""

    __slots__ = ("ref", "hash")

    def __init__(self, ref):
        self.ref = ref
        self.hash = id(ref())

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, _WeakIdentity):
            return False
        obj = self.ref()
        return obj is not None and obj is other.ref()

    def __hash__(self):
        return self.hash
