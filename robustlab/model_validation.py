"""Checks that need Keras: that a model is a classifier, and `tf.data`
inputs checked batch by batch with the checks of `robustlab.validation`.

Like those, every check raises `ValueError` (or `TypeError`) naming the
argument and the allowed range, ending with "Received: name=value".
"""

import itertools
import math
import numbers
import re
import types
import weakref

import keras
import numpy as np

from robustlab.losses import LabelKind
from robustlab.validation import check_inputs
from robustlab.validation import check_labels

__all__ = [
    "check_class_weight",
    "check_classifier",
    "check_heavy_ball_sgd",
    "check_input_shape",
    "check_mean_loss",
    "check_single_input",
    "checked_batches",
    "checked_dataset",
    "checks_batches",
    "class_weights_per_example",
    "dataset_errors_raised",
    "is_tf_dataset",
    "loss_reduction",
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
    check_single_input(model)
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


def check_heavy_ball_sgd(optimizer, who, alternative=""):
    """`optimizer`, a `keras.optimizers.SGD`, must take the steps that the
    heavy-ball recursion models: one step a batch, `-lr (g + beta m)`, linear
    in the batch's gradient. Nesterov momentum is another recursion;
    accumulated steps move the weights every k-th batch; clipping is not
    linear (measured: 0.0022 against 0.118 predicted with
    gradient_accumulation_steps=2, 7e-6 against 0.11 with clipnorm=1e-3).
    `who` names the predictor in the error, `alternative` ends its advice."""
    if getattr(optimizer, "nesterov", False):
        raise ValueError(
            f"{who}'s prediction models heavy-ball momentum, not Nesterov's: "
            f"compile keras.optimizers.SGD without nesterov{alternative}. "
            "Received: nesterov=True")
    for name in ("gradient_accumulation_steps", "clipnorm", "clipvalue", "global_clipnorm"):
        value = getattr(optimizer, name, None)
        if value is not None and not (name == "gradient_accumulation_steps" and value == 1):
            raise ValueError(
                f"{who}'s prediction models one heavy-ball step a batch, linear in the "
                f"batch's gradient: compile the SGD without `{name}`{alternative}. "
                f"Received: {name}={value!r}")


_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def loss_reduction(loss):
    """How a compiled `loss` reduces the batch: a `keras.losses.Loss`'s
    `reduction` (None and "none" leave it unreduced); a name or a function
    is reduced as Keras's default, "sum_over_batch_size"."""
    if isinstance(loss, keras.losses.Loss):
        return getattr(loss, "reduction", "sum_over_batch_size")
    return "sum_over_batch_size"


def check_mean_loss(loss, who, alternative=""):
    """The compiled `loss` must average over the batch, as the heavy-ball
    recursion's gradient and noise do (the curvature is measured on the mean
    loss): with `reduction="sum"` (or "none", which the optimizer then sums)
    a step moves B times as far, and the prediction was 10 to 70 times too
    small without a word. `who` and `alternative` as in
    `check_heavy_ball_sgd`."""
    reduction = loss_reduction(loss)
    if reduction not in _MEAN_REDUCTIONS:
        raise ValueError(
            f"{who}'s prediction models steps on the batch's mean loss: compile a loss "
            f"with reduction in {_MEAN_REDUCTIONS} (Keras's default){alternative}. "
            f"Received: loss with reduction={reduction!r}")


def check_single_input(model):
    """The model must take one input (the images): attacks, curvature and
    adversarial training perturb that one tensor. A model that declares
    several inputs is refused here rather than failing inside Keras at its
    first batch."""
    inputs = getattr(model, "inputs", None) if model.built else None
    if inputs and len(inputs) > 1:
        raise ValueError(
            "Argument `model` must be a classifier with one input (the images). "
            f"Received: model with {len(inputs)} inputs")


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

# Delimits a check's error inside the text of the error that carries it out
# of a generator or a `keras.utils.PyDataset` (`_raise_marked`).
_DATASET_ERROR_MARK = "<<robustlab input check>>"

# A `tf.data` pipeline's failed check is raised by a TensorFlow assertion
# whose message names the check by this token (`_PipelineCheck`).
_FAILED_PIPELINE_CHECK = re.compile(r"<<robustlab failed check (\d+)>>")
_PIPELINE_CHECKS = weakref.WeakValueDictionary()  # token -> _PipelineCheck
_PIPELINE_CHECK_TOKENS = itertools.count()


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


class _BatchCheck:
    """`check_inputs` and `check_labels` of one `(x, y[, sample_weight])`
    batch, a failure raised in the form `dataset_errors_raised` unwraps.
    Plain values only, so that it pickles (a `keras.utils.PyDataset` may
    read its batches in other processes)."""

    def __init__(self, value_range, num_classes, x_name, y_name, label_kind=None):
        self.value_range = value_range
        self.num_classes = num_classes
        self.x_name = x_name
        self.y_name = y_name
        # A `robustlab.losses.LabelKind`: the labels the loss takes (None:
        # any).
        self.label_kind = label_kind

    def __call__(self, x, y):
        try:
            self.unmarked(x, y)
        except (TypeError, ValueError) as error:
            _raise_marked(error)

    def unmarked(self, x, y):
        """The checks, raising their own errors."""
        check_inputs(x, self.value_range, name=self.x_name, floating=True)
        sparse = check_labels(y, self.num_classes, len(x), name=self.y_name)
        if self.label_kind is not None:
            self.label_kind.check(sparse, np.shape(y), self.y_name)

    def batch(self, batch):
        """Check `batch`, which must be an `(x, y[, sample_weight])` tuple
        of arrays (`_batch_structure_error` otherwise)."""
        if not _is_labelled_batch(batch):
            _raise_marked(_batch_structure_error(self.x_name, _structure(batch)))
        self(np.asarray(batch[0]), np.asarray(batch[1]))
        return batch


class _FirstBatchClasses(_BatchCheck):
    """A `_BatchCheck` for a pipeline whose example shape neither it nor the
    model declares: the number of classes is read from the first batch's
    inputs as the batch is checked, so that no batch is read for it alone.
    It refers to the model (weakly: the pipeline's functions may outlive
    it), so it is for `tf.data` pipelines (never pickled)."""

    def __init__(self, model, value_range, x_name, y_name, class_weight=None,
                 label_kind=None):
        super().__init__(value_range, None, x_name, y_name, label_kind)
        self.model_ref = weakref.ref(model)
        self.class_weight = class_weight

    def unmarked(self, x, y):
        if self.num_classes is None:
            model = self.model_ref()
            if model is None:
                raise ValueError(
                    "The model a tf.data pipeline was checked for is gone; "
                    "fit or evaluate it anew. Received: a pipeline read after "
                    "its model was deleted")
            num_classes = check_classifier(model, x[:1], self.x_name)
            check_class_weight(self.class_weight, num_classes)
            self.num_classes = num_classes
        super().unmarked(x, y)


def _raise_marked(error):
    """Raise a check's `error` in the form `dataset_errors_raised` unwraps
    from the TensorFlow error that carries it out of the pipeline."""
    mark = _DATASET_ERROR_MARK
    raise ValueError(f"{mark}{type(error).__name__}{mark}{error}{mark}") from None


def _is_array_like(value):
    return hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")


def _is_labelled_batch(batch):
    return (isinstance(batch, (tuple, list)) and len(batch) in (2, 3)
            and all(_is_array_like(part) for part in batch[:2]))


def _structure(element):
    """`element`'s nesting with each leaf named by its type: what a message
    shows of a batch or a pipeline's `element_spec`, not its values."""
    if isinstance(element, dict):
        return "{" + ", ".join(f"{k!r}: {_structure(v)}" for k, v in element.items()) + "}"
    if isinstance(element, (tuple, list)):
        inner = ", ".join(_structure(v) for v in element)
        return f"({inner},)" if isinstance(element, tuple) and len(element) == 1 else (
            f"({inner})" if isinstance(element, tuple) else f"[{inner}]")
    return type(element).__name__


def _batch_structure_error(name, received):
    """The TypeError for data whose batches are not `(x, y[,
    sample_weight])` with `x` one array: Keras would hand a dict or list of
    inputs, or batches without labels, to the attack, which needs the
    classifier's one input and the labels."""
    return TypeError(
        f"Argument `{name}` must yield (x, y[, sample_weight]) batches: x the "
        "classifier's one input as one array or tensor (not a dict or list of "
        "inputs) and y its integer labels (the attack needs them). Received: "
        f"batches of structure {received}")


def _check_floating_dtype(dtype, name):
    """A pipeline's input dtype, before any batch is read: integer inputs
    would otherwise fail inside the attack's random start, with Keras's
    error about `keras.random.uniform`."""
    if not dtype.is_floating:
        raise TypeError(
            f"Argument `{name}` must hold floating-point inputs; convert them "
            f"in the pipeline, e.g. `.map(lambda x, y: (tf.cast(x, 'float32'), y))` "
            f"(and scale them to `value_range`). Received: {name} of dtype {dtype.name}")


def check_class_weight(class_weight, num_classes, sample_weight=None):
    """`class_weight` for a model of `num_classes` classes (None: not known
    yet, the keys are not checked), given with `sample_weight` (None: not
    given)."""
    if class_weight is None:
        return
    if not isinstance(class_weight, dict):
        raise TypeError("Argument `class_weight` must be a dict {class: weight}. "
                        f"Received: class_weight={class_weight!r}")
    if sample_weight is not None:
        # Keras refuses the pair too: it would not say which one counts.
        raise ValueError(
            "Arguments `sample_weight` and `class_weight` cannot be specified "
            "at the same time; fold the class weights into `sample_weight`. "
            f"Received: sample_weight with shape {np.shape(sample_weight)} and "
            f"class_weight={class_weight!r}")
    for key in class_weight if num_classes is not None else ():
        # A key that is no class of the model would be ignored silently.
        if (isinstance(key, bool) or not isinstance(key, numbers.Integral)
                or not 0 <= key < num_classes):
            raise ValueError(
                f"Argument `class_weight` must map class indices in [0, "
                f"{num_classes - 1}] (the model's {num_classes} classes) to "
                f"weights. Received: class_weight={class_weight!r}")
    for value in class_weight.values():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(
                "Argument `class_weight` must map classes to finite weights >= 0. "
                f"Received: class_weight={class_weight!r}")


def class_weights_per_example(class_weight, y, num_classes):
    """The weight `class_weight` gives each label of `y` (checked labels:
    class indices, or one-hot rows read by their largest entry), 1 for a
    class it leaves out, in Keras's float type: the weights Keras's
    `class_weight` gives NumPy data."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] != 1:
        classes = np.argmax(y, axis=-1)
    else:
        classes = np.round(y.reshape(len(y))).astype("int64")
    table = np.array([class_weight.get(c, 1.0) for c in range(num_classes)],
                     dtype=keras.config.floatx())
    return table[classes]


def checked_dataset(dataset, model, value_range, x_name="x", y_name="y",
                    class_weight=None, loss=None):
    """`dataset` with each `(x, y[, sample_weight])` batch passed through
    `check_inputs` (inputs finite, of a floating dtype, inside
    `value_range`) and `check_labels` when it is asked for (the check reads
    no batch of its own, and none twice). tf.data's automatic prefetch at
    a pipeline's end is turned off (see `_PipelineCheck`): a pipeline that
    should produce batches ahead of training prefetches them itself
    (`.prefetch(tf.data.AUTOTUNE)` at its end), and what comes before its
    prefetch then runs in tf.data's threads. A failing batch stops the
    pipeline; `dataset_errors_raised`
    turns that into the check's own `ValueError` / `TypeError`. Integer
    inputs are refused here, before any batch is read.

    The number of classes the labels are checked against comes from one
    example of the pipeline's static input shape, else of the model's
    declared input shape, else of the first batch, when it is checked.
    With `loss`, the labels must also be of the kind it takes
    (`robustlab.losses.LabelKind`).

    Elements of another structure (inputs only, a dict of inputs) are a
    `TypeError` (`_batch_structure_error`), before any batch is read.

    With `class_weight` (checked by `check_class_weight`: before any batch
    is read, or with the first batch where the number of classes comes
    from it), each checked batch `(x, y)` becomes `(x, y, weights)`: the
    weight of each label's class, 1 for a class `class_weight` leaves out,
    as `class_weights_per_example` weights arrays. (Keras would weight the
    batches after the check, in a pipeline of its own with a prefetch, and
    fail on a label beyond the largest class named.)
    """
    import tensorflow as tf

    if dataset in _CHECKED_PIPELINES and class_weight is None:
        return dataset
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) in (2, 3)
            and all(isinstance(s, tf.TensorSpec) for s in spec[:2])):
        raise _batch_structure_error(x_name, _structure(spec))
    _check_floating_dtype(spec[0].dtype, x_name)
    if class_weight is not None:
        if len(spec) == 3:
            raise ValueError(
                "Arguments `sample_weight` and `class_weight` cannot be specified "
                "at the same time; fold the class weights into the pipeline's "
                f"sample weights. Received: `{x_name}` yielding (x, y, "
                f"sample_weight) batches and class_weight={class_weight!r}")
        if spec[1].shape.rank is None:
            raise ValueError(
                "Argument `class_weight` needs labels of a known rank (class "
                "indices of shape (n,) or (n, 1), or one-hot rows). Received: "
                f"`{y_name}` of unknown shape in a pipeline, and "
                f"class_weight={class_weight!r}")
        # All but the keys, which need the number of classes.
        check_class_weight(class_weight, None)
    x_shape = spec[0].shape
    if x_shape.rank is not None and None not in x_shape[1:]:
        example = np.zeros((1,) + tuple(x_shape[1:]), spec[0].dtype.as_numpy_dtype)
    else:
        # Images of several sizes, a `py_function` map, decoded files.
        example = _declared_input_example(model)
    if example is not None:
        check = _BatchCheck(value_range, check_classifier(model, example), x_name, y_name,
                            _label_kind(loss))
        if class_weight is not None:
            check_class_weight(class_weight, check.num_classes)
        if check.label_kind is not None:
            # Before any batch: on TensorFlow, Keras traces its step for the
            # pipeline's shapes first, and the loss fails in the trace.
            label_shape = spec[1].shape
            if label_shape.rank in (1, 2):
                one_hot = (label_shape.rank == 2 and label_shape[1] == check.num_classes)
                if one_hot or label_shape.rank == 1 or label_shape[1] == 1:
                    check.label_kind.check(not one_hot, label_shape.as_list(), y_name)
    else:
        check = _FirstBatchClasses(model, value_range, x_name, y_name, class_weight,
                                   _label_kind(loss))

    pipeline_check = _PipelineCheck(check)
    weights = None if class_weight is None else _class_weighting(class_weight)

    def checked(x, y, *rest):
        # Stateful, so that tf.data keeps the check although nothing reads
        # its result.
        passed = tf.numpy_function(pipeline_check, [x, y], tf.bool, stateful=True)
        # The failure is raised here, by TensorFlow, not in Python (see
        # `_PipelineCheck`).
        failed = tf.debugging.Assert(passed, [pipeline_check.failure_text])
        with tf.control_dependencies([failed]):
            x, y = tf.identity(x), tf.identity(y)
        # In the same map: tf.data would run a map of its own in parallel,
        # reading (and checking) batches ahead in its threads.
        return (x, y, weights(y)) if weights is not None else (x, y) + rest

    # No prefetch after the check, so that the check (Python) runs only in
    # the thread that asks for the batch, never in a thread of tf.data's own
    # (`_PipelineCheck` says why); tf.data would otherwise add one and run
    # the check there, a batch ahead. Nor one before it: there it would run
    # the user's stages ahead, a generator's Python among them, and after a
    # refused batch too (in one test sequence, a deleted model stayed alive
    # in 6 of 8 runs with `prefetch(AUTOTUNE)` before the check, 0 of 8
    # without).
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return dataset.map(checked).with_options(options)


def _class_weighting(class_weight):
    """`y -> weights` in TensorFlow operations (the labels already
    checked): the weights `class_weights_per_example` gives."""
    import tensorflow as tf

    last = max(class_weight, default=-1)
    table = tf.constant([float(class_weight.get(c, 1.0)) for c in range(last + 1)]
                        or [1.0], dtype=keras.config.floatx())

    def weighted(y):
        def one_hot():
            return tf.argmax(y, axis=-1, output_type=tf.int64)

        def indices():
            return tf.cast(tf.round(tf.reshape(y, [-1])), tf.int64)

        if y.shape.rank < 2 or y.shape[-1] == 1:
            classes = indices()
        elif y.shape[-1] is not None:
            classes = one_hot()
        else:
            classes = tf.cond(tf.shape(y)[-1] > 1, one_hot, indices)
        named = classes <= last
        weights = tf.gather(table, tf.where(named, classes, tf.zeros_like(classes)))
        return tf.where(named, weights, tf.ones_like(weights))

    return weighted


class _PipelineCheck:
    """A `_BatchCheck` run by a `tf.data` pipeline.

    It raises nothing: it keeps its first failure and answers False, the
    pipeline's assertion fails with `failure_text`, and
    `dataset_errors_raised` raises the kept error on the calling thread.
    And it runs in the thread that asks for the batch (`checked_dataset`
    puts no prefetch after it, nor before it, where a generator's Python
    would run ahead), never in one of tf.data's own threads. Why
    both: Python code in a thread that a tf.data iterator owns can run
    Python's garbage collector there, which can free that very iterator
    when nothing else refers to it; TensorFlow's destructor then waits for
    the iterator's threads, the current one among them, and never returns,
    and the collector, stuck "in progress", collects nothing more in the
    whole process (TensorFlow 2.21: after a few refused batches in one
    process, `gc.collect()` returned 0 and a freed model stayed alive; the
    check ran in the prefetch thread tf.data adds at a pipeline's end). A
    Python exception there made that likely: TensorFlow formats its
    traceback in that thread, parsing the source lines.
    """

    def __init__(self, check):
        self.check = check
        self.failure = None  # (exception type, message)
        token = str(next(_PIPELINE_CHECK_TOKENS))
        self.failure_text = f"<<robustlab failed check {token}>>"
        _PIPELINE_CHECKS[token] = self

    def __call__(self, x, y):
        if self.failure is None:
            try:
                self.check.unmarked(x, y)
            except (TypeError, ValueError) as error:
                self.failure = (type(error), str(error))
        return np.bool_(self.failure is None)


def checks_batches(x):
    """Whether `checked_batches` checks the batches of `x` (a generator or a
    `keras.utils.PyDataset`)."""
    return isinstance(x, (types.GeneratorType, keras.utils.PyDataset))


def checked_batches(data, model, value_range, x_name="x", y_name="y", loss=None):
    """A generator or `keras.utils.PyDataset` of `(x, y[, sample_weight])`
    batches with each batch checked as `checked_dataset` checks a
    pipeline's, when it is read (in the PyDataset's workers, if it has
    any); anything else is returned as it is.

    The number of classes is read from one example: of the model's
    declared input shape, else the first batch (a generator's is put back
    in front, a PyDataset's `[0]` is read once more by the pipeline). With
    `loss`, the labels must also be of the kind it takes.
    """
    if isinstance(data, types.GeneratorType):
        first = next(data, None)
        if first is None:
            return (batch for batch in ())  # Keras reports the empty data
        rest = data

        def batches():
            yield first
            yield from rest

        check = _batch_check_from(first, model, value_range, x_name, y_name, loss=loss)
        return (check.batch(batch) for batch in batches())
    if isinstance(data, keras.utils.PyDataset):
        check = _batch_check_from(None, model, value_range, x_name, y_name, data, loss)
        return _CheckedPyDataset(data, check)
    return data


def _label_kind(loss):
    return None if loss is None else LabelKind(loss)


def _batch_check_from(first, model, value_range, x_name, y_name, dataset=None, loss=None):
    example = _declared_input_example(model)
    if example is None:
        if first is None:
            first = dataset[0]
        if not _is_labelled_batch(first):
            raise _batch_structure_error(x_name, _structure(first))
        example = np.asarray(first[0])[:1]
    num_classes = check_classifier(model, example, x_name)
    return _BatchCheck(value_range, num_classes, x_name, y_name, _label_kind(loss))


def _declared_input_example(model):
    inputs = getattr(model, "inputs", None) if model.built else None
    if not inputs or len(inputs) != 1 or None in tuple(inputs[0].shape[1:]):
        return None
    dtype = keras.backend.standardize_dtype(inputs[0].dtype)
    return np.zeros((1,) + tuple(inputs[0].shape[1:]), dtype)


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` whose batches are checked as they are read;
    it reads them, with the same workers, from the one it wraps."""

    def __init__(self, dataset, check):
        super().__init__(workers=dataset.workers,
                         use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self._dataset = dataset
        self._check = check

    @property
    def num_batches(self):
        return self._dataset.num_batches

    def __getitem__(self, index):
        return self._check.batch(self._dataset[index])

    def on_epoch_begin(self):
        self._dataset.on_epoch_begin()

    def on_epoch_end(self):
        self._dataset.on_epoch_end()


def dataset_errors_raised(function, *args, **kwargs):
    """Call `function`; a failed `checked_dataset` check surfaces as its own
    `ValueError` / `TypeError` instead of TensorFlow's wrapping error."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001  (re-raised unless it is ours)
        text = str(error)
        failed = _FAILED_PIPELINE_CHECK.search(text)
        check = None if failed is None else _PIPELINE_CHECKS.get(failed.group(1))
        if check is not None and check.failure is not None:
            kind, message = check.failure
            raise kind(message) from None
        parts = text.split(_DATASET_ERROR_MARK)
        if len(parts) < 4:
            raise
        kind = TypeError if parts[1] == "TypeError" else ValueError
        raise kind(parts[2]) from None
