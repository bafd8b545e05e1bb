"""Curvature of a model's loss: Hessian-vector products, top eigenvalues,
trace and spectral density.

This module holds the **model level**: `HessianOperator`, the Hessian of the
mean loss of a Keras model over a fixed probe set with respect to
`model.trainable_variables` as a linear operator; `hessian_vector_product`;
and `top_hessian_eigenvalue`, `top_hessian_eigenvalues`, `hessian_trace` and
`spectral_density`, which run the algorithms of `robustlab.spectral` on that
operator. Those algorithms (`power_iteration`, `lanczos`,
`lanczos_eigenpairs`, `hutchinson_trace`, `slq_density`), pure NumPy on a
symmetric operator given as `matvec(v) -> A v`, and their results
(`EigenvalueEstimate`, ...) are importable from here too. What `loss=` may be
is resolved by `robustlab.losses`.

What "the loss" is, for every model-level function:

- the mean over the probe examples of the per-example loss (a loss whose
  output has more than one value an example is first averaged over its
  non-batch axes). The `reduction` and sample weights of a
  `keras.losses.Loss` are ignored, and so are regularisation losses
  (`model.losses`): an L2 penalty `l * ||w||^2` adds `2 l` to the Hessian on the
  penalised weights, which you can add analytically.
- `loss=None` takes the model's compiled loss (`model.loss`).
- `attack=None` is the clean loss. With an attack (for instance
  `robustlab.PGD(eps=0.1, steps=10)`, or any callable `attack(model, x, y,
  seed=seed)` returning adversarial inputs of x's shape) it is the robust loss:
  the adversarial examples are crafted once, at the current weights, and then
  held fixed while the Hessian is probed. This is the Hessian of the loss on
  fixed adversarial inputs, not of the max-over-perturbations loss.
- the model runs in inference mode (`training=False`): BatchNorm uses (and
  does not update) its moving statistics, Dropout is off.

Vectors in weight space. The canonical form is a list of NumPy float64 arrays,
one per entry of `model.trainable_variables`, in that order and with those
shapes (the form of `eigenvector`s). `hessian_vector_product` also accepts a
flat vector (the arrays raveled in C order and concatenated; see
`flatten_weights` / `unflatten_weights`) and returns the form it was given.

Numerics. Each Hessian-vector product runs compiled (`tf.function` /
`jax.jit`, cached per model and loss, so repeated products do not retrace) in
the model's dtype (JAX: forward-over-reverse, `jax.jvp` of `jax.grad`;
TensorFlow: double backward through nested `GradientTape`s); batches are summed
and the outer algorithms run in float64. (On JAX, Keras computes some ops of a
float64 model, such as `tanh` and `ops.mean`, in float32: its type promotion maps
64-bit types to 32-bit ones there, so expect about 1e-7 relative accuracy.
Float64 on JAX also needs `jax.config.update("jax_enable_x64", True)`.)
Random numbers come from `numpy.random.default_rng(seed)`, so the same inputs
and seed give the same numbers.
"""

import contextlib
import dataclasses
import math
import weakref

import keras
import numpy as np
from keras import ops

from robustlab import _keras_compat
from robustlab import attacks
from robustlab import backend as _backend
from robustlab import losses
from robustlab import model_validation
from robustlab import spectral
from robustlab import validation
# The operator-level algorithms and their results (robustlab.spectral) stay
# importable from here, next to the model-level functions returning them.
from robustlab.spectral import EigenpairsEstimate
from robustlab.spectral import EigenvalueEstimate
from robustlab.spectral import LanczosDecomposition
from robustlab.spectral import SpectralDensity
from robustlab.spectral import TraceEstimate
from robustlab.spectral import WHICH
from robustlab.spectral import hutchinson_trace
from robustlab.spectral import lanczos
from robustlab.spectral import lanczos_eigenpairs
from robustlab.spectral import power_iteration
from robustlab.spectral import slq_density

try:  # a dependency of scikit-learn, which robustlab requires
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "EigenpairsEstimate",
    "EigenvalueEstimate",
    "HessianOperator",
    "LanczosDecomposition",
    "SpectralDensity",
    "TraceEstimate",
    "WHICH",
    "flatten_weights",
    "hessian_trace",
    "hessian_vector_product",
    "hutchinson_trace",
    "lanczos",
    "lanczos_eigenpairs",
    "power_iteration",
    "slq_density",
    "spectral_density",
    "top_hessian_eigenvalue",
    "top_hessian_eigenvalues",
    "unflatten_weights",
]


# ---------------------------------------------------------------------------
# Weight-space vectors
# ---------------------------------------------------------------------------


def flatten_weights(arrays):
    """Ravel a list of arrays (C order) and concatenate them into one flat
    float64 vector.

    Example:

    >>> import numpy as np
    >>> from robustlab.curvature import flatten_weights
    >>> flatten_weights([np.ones((2, 2)), np.zeros(1)])
    array([1., 1., 1., 1., 0.])
    """
    if not isinstance(arrays, (list, tuple)):
        raise TypeError("Argument `arrays` must be a list of arrays (one per variable). "
                        f"Received: arrays of type {type(arrays).__name__}")
    return np.concatenate(
        [validation._float_array(f"arrays[{i}]", a).ravel() for i, a in enumerate(arrays)]
    ) if len(arrays) else np.zeros(0)


def unflatten_weights(vector, model):
    """Split a flat vector into float64 arrays shaped like
    `model.trainable_variables` (the inverse of `flatten_weights`).

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import unflatten_weights
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> [a.shape for a in unflatten_weights(np.arange(9.0), model)]
    [(2, 3), (3,)]
    """
    if not isinstance(model, keras.Model):
        raise TypeError("Argument `model` must be a keras.Model. "
                        f"Received: model of type {type(model).__name__}")
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    return _split(validation._float_array("vector", vector), shapes, "vector")


def _split(flat, shapes, name):
    sizes = [math.prod(s) for s in shapes]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise ValueError(
            f"Argument `{name}` must be a flat vector of {sum(sizes)} values (the "
            "number of trainable parameters), or a list of arrays shaped like "
            f"model.trainable_variables. Received: {name} with shape {flat.shape}"
        )
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]


# ---------------------------------------------------------------------------
# The Hessian of a model's mean loss as a linear operator
# ---------------------------------------------------------------------------


_HALF_PRECISION = ("float16", "bfloat16")


def _weighted_mean_loss(per_example_loss):
    """`(y, y_pred, sample_weight) -> sum_i sample_weight[i] * loss_i`, with
    keras.ops; per-example losses with extra axes are first averaged over
    them. With weights 1/n this is the mean loss."""

    def weighted_loss(y, y_pred, sample_weight):
        if keras.backend.standardize_dtype(y_pred.dtype) in _HALF_PRECISION:
            y_pred = ops.cast(y_pred, "float32")
        if keras.backend.is_float_dtype(y.dtype):
            y = ops.cast(y, y_pred.dtype)
        example_losses = per_example_loss(y, y_pred)
        shape = tuple(example_losses.shape)
        if not shape:
            raise ValueError(
                "Argument `loss` must return one value per example, not a "
                "reduced scalar. Received: a loss returning shape ()"
            )
        if len(shape) > 1:  # sum / count: ops.mean runs float64 in float32 on JAX
            axes = tuple(range(1, len(shape)))
            if None in shape[1:]:
                example_losses = ops.mean(example_losses, axis=axes)
            else:
                example_losses = ops.sum(example_losses, axis=axes) / float(math.prod(shape[1:]))
        return ops.sum(example_losses * ops.cast(sample_weight, example_losses.dtype))

    return weighted_loss


def _single_threaded_blas():
    """Run NumPy's BLAS on one thread while a model-level estimator loops.

    OpenBLAS worker threads busy-wait for a while after each dot product or
    matrix-vector product of the outer float64 algebra, and steal the cores
    the next compiled Hessian-vector product needs: on 2 CPU cores that made
    20 power iterations about 2x slower. The outer algebra is cheap on one
    thread.
    """
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


_COMPILED = weakref.WeakKeyDictionary()  # model -> {key: compiled function}


def _compiled(model, kind, loss, per_example_loss):
    """The backend's compiled `kind` ("hvp" or "gradient") for this model and
    loss, built once and reused (keyed also on the variables, so toggling
    `trainable` gives a fresh one; equal Keras losses share one, see
    `losses.compiled_for_loss`)."""
    key = (
        kind,
        tuple(id(v) for v in model.trainable_variables),
        tuple(id(v) for v in model.non_trainable_variables),
    )
    module = _backend.get()
    make = (
        module.make_hessian_vector_product
        if kind == "hvp"
        else module.make_loss_gradient
    )
    return losses.compiled_for_loss(
        _COMPILED, model, key, loss, per_example_loss,
        lambda per_example: make(model, _weighted_mean_loss(per_example)))


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.trainable_variables:
        raise ValueError(
            "Argument `model` must be built and have trainable variables (call "
            "it on a batch, or give it an Input, first). Received: model with "
            "no trainable variables"
        )


def _check_probe_data(x, y):
    x = np.asarray(x)
    validation.check_inputs(x, None, name="x")
    if x.ndim == 0:
        raise ValueError(
            "Argument `x` must be a batch of examples (first axis: examples). "
            f"Received: x with shape {x.shape}"
        )
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: x with {len(x)} examples and y with shape {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(
            "Argument `y` must be finite (no NaN or inf). "
            f"Received: y with {int(np.sum(~np.isfinite(y)))} non-finite values"
        )
    return x, y


def _check_class_labels(model, loss, x, y):
    """Labels of a categorical cross-entropy must fit the model's classes:
    out of range, TensorFlow fails deep inside a graph and JAX's one-hot
    quietly gives a zero loss (and a zero Hessian). Other losses take other
    targets, which are left to them."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        name = loss
    elif isinstance(loss, keras.losses.Loss):
        name = type(loss).__name__
    else:
        name = getattr(loss, "__name__", "")
    if "categoricalcrossentropy" in name.lower().replace("_", ""):
        num_classes = model_validation.check_classifier(model, x[:1])
        sparse = validation.check_labels(y, num_classes, len(x))
        losses.check_labels_fit_loss(loss, sparse, np.shape(y))


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    return validation.check_int_at_least("batch_size", batch_size, 1)


class HessianOperator:
    """The Hessian of a model's mean loss over a fixed probe set, as a
    symmetric linear operator on weight space.

    The probe set is prepared once: inputs and labels validated, adversarial
    inputs crafted (when `attack` is given) at the current weights, split in
    batches of `batch_size` (the last one padded with zero-weight copies of
    the first examples, so every batch has one shape and one trace serves
    all). `matvec` then sums the compiled per-batch products, each weighted by
    1/n per example, into the product with the Hessian of the mean loss.
    The weights are read at each product: if they change, so does the
    operator (the adversarial inputs do not). Driving it with your own NumPy
    loop on CPU, run that loop under
    `threadpoolctl.threadpool_limits(1, user_api="blas")` (as the model-level
    functions do): OpenBLAS threads that busy-wait after a dot product slow
    the next compiled product down.

    Args:
        model: a built Keras model.
        x: probe inputs, a NumPy-convertible array; first axis: examples.
        y: probe labels, same number of examples.
        loss: a Keras loss, or None for the model's compiled loss.
        attack: None (clean loss), or `attack(model, x, y, seed=seed)`
            returning adversarial inputs of x's shape (e.g. `robustlab.PGD`,
            which is then given `loss` too, so that it ascends the loss whose
            Hessian is measured; another callable crafts as it likes).
        batch_size: examples per compiled product; None: all in one batch.
        seed: passed to the attack.

    Attributes:
        dim: number of trainable parameters.
        inputs: the probe inputs used (adversarial ones when `attack` is set).
        matvec_count: products computed so far.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import HessianOperator
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> operator = HessianOperator(
    ...     model, np.eye(2), np.array([0, 1]),
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> operator.dim, operator.matvec(np.zeros(operator.dim)).shape
    (6, (6,))
    """

    def __init__(self, model, x, y, *, loss=None, attack=None, batch_size=None,
                 seed=0):
        _check_model(model)
        x, y = _check_probe_data(x, y)
        batch_size = _check_batch_size(batch_size)
        if seed is not None:
            seed = validation.check_seed("seed", seed)
        resolved_loss, per_example = losses.resolve_model_loss(model, loss)
        model_validation.check_input_shape(model, x)
        _check_class_labels(model, loss, x, y)
        if attack is not None:
            x = _craft_adversarial(attack, model, x, y, seed, loss)
        self.model = model
        self.inputs = x
        self._variables = list(model.trainable_variables)
        self._shapes = [tuple(v.shape) for v in self._variables]
        self.dim = int(sum(math.prod(s) for s in self._shapes))
        dtypes = {keras.backend.standardize_dtype(v.dtype) for v in self._variables}
        # the dtype of tangents, products, sample weights and float inputs
        self._float_dtype = "float64" if "float64" in dtypes else "float32"
        self._batches = _padded_batches(x, y, batch_size, self._float_dtype)
        # Holds the loss, which the compiled functions may hold only weakly.
        self._loss = (resolved_loss, per_example)
        self._hvp = _compiled(model, "hvp", resolved_loss, per_example)
        self._gradient = None
        self.matvec_count = 0

    def flatten(self, arrays, name="vector"):
        """A list of weight-shaped arrays -> flat float64 vector (validated)."""
        arrays = list(arrays)
        shapes = [tuple(np.shape(a)) for a in arrays]
        if shapes != self._shapes:
            raise ValueError(
                f"Argument `{name}` must be a list of arrays shaped like "
                f"model.trainable_variables {self._shapes}. "
                f"Received: {name} with shapes {shapes}"
            )
        return self._check_flat(flatten_weights(arrays), name)

    def unflatten(self, vector):
        """Flat vector -> list of float64 arrays shaped like the variables."""
        return _split(validation._float_array("vector", vector), self._shapes, "vector")

    def _check_flat(self, vector, name):
        vector = validation._float_array(name, vector)
        if vector.ndim != 1 or vector.size != self.dim:
            raise ValueError(
                f"Argument `{name}` must be a flat vector of {self.dim} values "
                "(the number of trainable parameters) or a list of arrays "
                "shaped like model.trainable_variables. "
                f"Received: {name} with shape {vector.shape}"
            )
        if not np.all(np.isfinite(vector)):
            raise ValueError(
                f"Argument `{name}` must be finite (no NaN or inf). "
                f"Received: {name} with non-finite values"
            )
        return vector

    def as_flat(self, vector, name="vector"):
        """Accept the canonical list form or a flat vector; return flat."""
        if isinstance(vector, (list, tuple)):
            return self.flatten(vector, name)
        return self._check_flat(vector, name)

    def gradient(self):
        """The gradient of the mean loss over the probe set at the current
        weights, as a flat float64 vector (compiled like `matvec`, so the two
        costs compare directly)."""
        # On JAX, mid-epoch, a model reference held outside a callback reads
        # detached variables; the error would otherwise name nothing useful.
        _keras_compat.check_attached(self.model, variables=self._variables)
        if self._gradient is None:
            self._gradient = _compiled(self.model, "gradient", *self._loss)
        return self._finite(
            _sum_over_batches(self._gradient(*batch) for batch in self._batches), "gradient")

    def matvec(self, vector):
        """H v for a flat vector v; returns a flat float64 vector."""
        vector = np.asarray(vector)
        if vector.shape != (self.dim,):
            raise ValueError(
                f"Argument `vector` must be a flat vector of {self.dim} values. "
                f"Received: vector with shape {vector.shape}"
            )
        _keras_compat.check_attached(self.model, variables=self._variables)  # as in `gradient`
        if not np.all(np.isfinite(vector)):
            raise ValueError(
                "Argument `vector` must be finite (no NaN or inf). "
                "Received: vector with non-finite values")
        tangent = ops.convert_to_tensor(vector.astype(self._float_dtype))
        product = _sum_over_batches(
            self._hvp(*batch, tangent) for batch in self._batches
        )
        self.matvec_count += 1
        return self._finite(product, "Hessian-vector product")

    def _finite(self, result, what):
        # A diverged model's NaN weights made every eigenvalue, trace and
        # density NaN without a word, or failed inside np.linalg.eigh.
        if not np.all(np.isfinite(result)):
            weights = [ops.convert_to_numpy(v) for v in self._variables]
            bad = sum(int(np.sum(~np.isfinite(w))) for w in weights)
            cause = (f"the model's trainable weights hold {bad} non-finite values "
                     "(a diverged run?)" if bad else
                     "the loss or its derivatives are not finite at these weights "
                     "and inputs (an overflow, or a layer's state such as a "
                     "negative moving variance)")
            raise ValueError(
                f"The {what} is not finite: {cause}. Received: "
                f"{int(np.sum(~np.isfinite(result)))} non-finite values of {result.size}")
        return result


def _sum_over_batches(per_batch_vectors):
    """Sum per-batch flat vectors (already weighted) in float64."""
    total = None
    for vector in per_batch_vectors:
        vector = np.asarray(vector, dtype=np.float64)
        total = vector if total is None else total + vector
    return total


def _craft_adversarial(attack, model, x, y, seed, loss=None):
    if not callable(attack):
        raise TypeError(
            "Argument `attack` must be None or a callable `attack(model, x, y, "
            "seed=seed)` such as robustlab.PGD(...). "
            f"Received: attack of type {type(attack).__name__}"
        )
    if isinstance(attack, attacks.PGD) and loss is not None:
        x_adv = np.asarray(attack(model, x, y, seed=seed, loss=loss))
    else:
        x_adv = np.asarray(attack(model, x, y, seed=seed))
    if x_adv.shape != x.shape or not np.all(np.isfinite(x_adv)):
        raise ValueError(
            "Argument `attack` must return finite adversarial inputs of x's "
            f"shape {x.shape}. Received: an attack returning shape {x_adv.shape}"
        )
    return x_adv


def _padded_batches(x, y, batch_size, float_dtype):
    """Batches `(x, y, per-example weight)` as backend tensors; weight 1/n for
    real examples, 0 for the padding that fills the last batch."""
    n = len(x)
    size = n if batch_size is None else min(batch_size, n)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(float_dtype)
    if np.issubdtype(y.dtype, np.floating):
        y = y.astype(float_dtype)
    batches = []
    for start in range(0, n, size):
        positions = np.arange(start, start + size)
        index = positions % n
        weight = np.where(positions < n, 1.0 / n, 0.0).astype(float_dtype)
        batches.append(
            tuple(ops.convert_to_tensor(a) for a in (x[index], y[index], weight))
        )
    return batches


# ---------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------


def hessian_vector_product(model, x, y, vector, *, loss=None, attack=None,
                           batch_size=None, seed=0):
    """Hessian-vector product H v of the mean loss over (x, y) with respect
    to `model.trainable_variables`.

    Second-order autodiff (JAX: forward-over-reverse, `jax.jvp` of
    `jax.grad` over `stateless_call`; TensorFlow: double backward through
    nested `GradientTape`s), compiled and cached per model and loss, with the
    model in inference mode; per-batch products are weighted by batch size /
    n and summed, so the result does not depend on `batch_size`.

    Args:
        model: a built Keras model.
        x: probe inputs; first axis: examples. Finite, at least one example.
        y: probe labels, as many as inputs.
        vector: v, as a list of arrays shaped like `model.trainable_variables`
            (canonical) or as a flat vector of all their values (see
            `flatten_weights`).
        loss: a Keras loss (name, function or `keras.losses.Loss`); None: the
            model's compiled loss.
        attack: None for the clean loss, or an attack such as
            `robustlab.PGD(...)`: adversarial inputs are crafted once at the
            current weights and held fixed.
        batch_size: examples per compiled product; None: all at once.
        seed: seed of the attack.

    Returns:
        H v as float64, in the form `vector` was given: a list of arrays (for
        a list or tuple) or a flat vector (for anything else).

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import hessian_vector_product
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> v = [np.zeros((2, 2)), np.array([1.0, 0.0])]
    >>> hv = hessian_vector_product(model, np.eye(2), np.array([0, 1]), v,
    ...                             loss=loss)
    >>> np.round(hv[1], 6)  # bias block: diag(p) - p p^T with p = (1/2, 1/2)
    array([ 0.25, -0.25])
    """
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    product = operator.matvec(operator.as_flat(vector))
    if isinstance(vector, (list, tuple)):
        return operator.unflatten(product)
    return product


def _initial(operator, initial_vector, rng):
    if initial_vector is None:
        return rng.standard_normal(operator.dim)
    initial = operator.as_flat(initial_vector, "initial_vector")
    if not np.any(initial):
        raise ValueError(
            "Argument `initial_vector` must be non-zero. "
            "Received: initial_vector with norm 0"
        )
    return initial


def top_hessian_eigenvalue(model, x, y, *, loss=None, attack=None, iterations=20,
                           tol=1e-3, batch_size=None, seed=0, initial_vector=None,
                           which="largest_magnitude"):
    """The dominant eigenvalue of the Hessian of the mean loss, by power
    iteration.

    By default this is the eigenvalue of LARGEST MAGNITUDE, which can be
    negative (away from a minimum the Hessian is indefinite).
    `which="largest_algebraic"` returns the most positive eigenvalue (the
    sharpness) instead, at the cost of a second, shifted power iteration when
    the dominant eigenvalue is negative; see `power_iteration`.

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`;
            the adversarial inputs are crafted once, before the iteration.
        iterations: maximum number of power steps (Hessian-vector
            products) per power-iteration run, >= 1; a run that reaches it
            takes one more product for the returned vector's Rayleigh
            quotient (`spectral.power_iteration`).
        tol: stop when the Rayleigh quotient changes by at most `tol`
            relative to its value, > 0.
        seed: seed of the random start vector and of the attack.
        initial_vector: start vector (list or flat form); default: standard
            normal from `numpy.random.default_rng(seed)`.
        which: `"largest_magnitude"` or `"largest_algebraic"`.

    Returns:
        `EigenvalueEstimate`; its `eigenvector` is a unit-norm list of arrays
        shaped like `model.trainable_variables`.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import top_hessian_eigenvalue
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> result = top_hessian_eigenvalue(model, np.eye(2), np.array([0, 1]),
    ...                                 iterations=100, tol=1e-8)
    >>> round(result.eigenvalue, 4), result.converged
    (0.75, True)
    """
    iterations = validation.check_int_at_least("iterations", iterations, 1)
    tol = validation.check_finite_positive("tol", tol)
    spectral.check_which(which)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    initial = _initial(operator, initial_vector, np.random.default_rng(seed))
    with _single_threaded_blas():
        result = spectral.power_iteration(operator.matvec, initial, iterations, tol, which=which)
    return dataclasses.replace(
        result, eigenvector=operator.unflatten(result.eigenvector)
    )


def top_hessian_eigenvalues(model, x, y, k, *, loss=None, attack=None,
                            iterations=None, tol=1e-3, batch_size=None, seed=0,
                            initial_vector=None):
    """The k eigenvalues of largest magnitude of the Hessian of the mean loss,
    and their eigenvectors, by Lanczos with full reorthogonalisation.

    Lanczos (rather than deflated power iteration) gets all k pairs from one
    Krylov space, at one product a step, and stops as soon as every pair's
    residual `||H u - lambda u||` is at most `tol * |lambda|`. It needs
    `iterations` vectors of the model's size in memory. A single Krylov space
    sees one copy of an exactly repeated eigenvalue; see `lanczos_eigenpairs`.

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        k: number of eigenpairs, 1 <= k <= number of trainable parameters.
        iterations: maximum Lanczos steps (products), k <= iterations; default
            `max(20, 2 k + 10)`, capped at the number of parameters.
        tol: relative residual tolerance, > 0.
        seed: seed of the random start vector and of the attack.
        initial_vector: start vector (list or flat form).

    Returns:
        `EigenpairsEstimate`: eigenvalues sorted by magnitude (largest
        first); `eigenvectors[i]` is a unit-norm list of arrays shaped like
        `model.trainable_variables`.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import top_hessian_eigenvalues
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> result = top_hessian_eigenvalues(
    ...     model, np.eye(2), np.array([0, 1]), k=2,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> np.round(result.eigenvalues, 4)
    array([0.75, 0.25])
    """
    _check_model(model)
    dim = int(sum(math.prod(v.shape) for v in model.trainable_variables))
    k = spectral.check_eigenpair_count(k, dim)
    if iterations is None:
        iterations = min(dim, max(20, 2 * k + 10))
    iterations = validation.check_int_at_least("iterations", iterations, k)
    tol = validation.check_finite_positive("tol", tol)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    rng = np.random.default_rng(seed)
    initial = _initial(operator, initial_vector, rng)
    with _single_threaded_blas():
        result = spectral.lanczos_eigenpairs(
            operator.matvec, initial, k, iterations, tol, rng=rng
        )
    return dataclasses.replace(
        result, eigenvectors=[operator.unflatten(u) for u in result.eigenvectors]
    )


def hessian_trace(model, x, y, *, probes=100, loss=None, attack=None,
                  batch_size=None, seed=0):
    """The trace of the Hessian of the mean loss, by Hutchinson's estimator
    with Rademacher probes (one Hessian-vector product each).

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        probes: number of probe vectors, >= 1.
        seed: seed of the probes and of the attack.

    Returns:
        `TraceEstimate` with `.trace`, `.stderr` (std of the per-probe
        estimates / sqrt(probes)) and `.samples`.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import hessian_trace
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> estimate = hessian_trace(
    ...     model, np.eye(2), np.array([0, 1]), probes=200,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> abs(estimate.trace - 1.0) < 3 * estimate.stderr  # exact trace: 1
    True
    """
    probes = validation.check_int_at_least("probes", probes, 1)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    with _single_threaded_blas():
        return spectral.hutchinson_trace(
            operator.matvec, operator.dim, probes, np.random.default_rng(seed)
        )


def spectral_density(model, x, y, *, lanczos_steps=30, probes=4, grid=None,
                     sigma=None, loss=None, attack=None, batch_size=None, seed=0):
    """The eigenvalue density of the Hessian of the mean loss, by stochastic
    Lanczos quadrature (`lanczos_steps` products per probe).

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        lanczos_steps: Lanczos steps per probe, >= 1 (capped at the number of
            parameters).
        probes: number of random probe vectors, >= 1.
        grid: points where the density is evaluated; default: 1001 points
            spanning the Ritz values plus 5 sigma on each side.
        sigma: Gaussian broadening, > 0; default 1% of the Ritz value range.
        seed: seed of the probes and of the attack.

    Returns:
        `SpectralDensity` with `.grid`, `.density` (integrates to 1 over the
        grid), the raw Ritz `.nodes` and `.weights` `(probes, steps)`, and
        `.sigma`.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.curvature import spectral_density
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> result = spectral_density(
    ...     model, np.eye(2), np.array([0, 1]), lanczos_steps=6, probes=1,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> round(float(result.nodes.max()), 4)
    0.75
    """
    lanczos_steps = validation.check_int_at_least("lanczos_steps", lanczos_steps, 1)
    probes = validation.check_int_at_least("probes", probes, 1)
    if sigma is not None:
        sigma = validation.check_finite_positive("sigma", sigma)
    if grid is not None:
        grid = spectral.check_density_grid(grid)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    with _single_threaded_blas():
        return spectral.slq_density(
            operator.matvec, operator.dim, lanczos_steps, probes, grid=grid,
            sigma=sigma, rng=np.random.default_rng(seed),
        )
