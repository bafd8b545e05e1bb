"""Projected-gradient attacks on the inputs of a Keras classifier.

`pgd` and `fgsm` take any Keras 3 classifier that maps a batch of inputs to a
`(batch, classes)` output and return adversarial inputs. The attack itself is
one pure function, `perturb`, written with `keras.ops` only: the loop runs in
the graph (`keras.ops.fori_loop`) and the only backend-specific piece, the
gradient with respect to the inputs, comes from `robustlab.backend`. Called on
NumPy arrays, `pgd` compiles that function once per model and configuration
(`tf.function` / `jax.jit`) and runs it batch by batch, so no step of the
attack is Python work in eager mode.

Logits or probabilities: the attack maximises a cross-entropy. With `loss=None`
it uses the model's compiled loss when the model is compiled; otherwise a
(sparse) categorical cross-entropy whose `from_logits` is read from the model:
a final softmax (a `Softmax` layer, or a layer whose `activation` is softmax)
means probabilities, anything else means logits (`robustlab.losses` resolves
these). Pass `from_logits=` or `loss=` to say it explicitly. Labels may be class indices `(batch,)` / `(batch, 1)` or
one-hot `(batch, classes)`.

float16 and bfloat16 inputs are attacked in float32 (the random start, the
step's direction, the projection) and returned in their own dtype, inside
the ball and the value range; the model is called on iterates of that dtype.

The model is called with `training=False` during the attack by default, so
BatchNorm uses its moving statistics and Dropout is off; with `training=True`
any state the forward pass would update (BatchNorm moving statistics) is
discarded, and BatchNorm normalises with the statistics of the attacked batch,
which couples the examples: an example's gradient, and so its adversarial
input, then depends on the others in its batch of `batch_size`. Gradients of
the attack never reach the weights: the result is wrapped in `stop_gradient`,
and only the input is differentiated.
"""

import dataclasses
import math
import weakref

import keras
import numpy as np
from keras import ops

from robustlab import _keras_compat
from robustlab import backend as _backend
from robustlab import losses
from robustlab import model_validation
from robustlab import validation
# robustlab.losses resolves `loss=`; its names stay importable from here,
# where they were first defined.
from robustlab.losses import default_classification_loss
from robustlab.losses import final_activation_is_softmax
from robustlab.losses import per_example_loss

__all__ = [
    "MAX_STEPS",
    "NORMS",
    "PGD",
    "attack_loss",
    "default_classification_loss",
    "fgsm",
    "fgsm_config",
    "final_activation_is_softmax",
    "loss_gradient",
    "per_example_loss",
    "perturb",
    "pgd",
    "project",
    "run_attack",
]

NORMS = ("linf", "l2")

MAX_STEPS = 2**31 - 1
"""The most steps an attack takes: its loop counts in 32-bit integers on
both backends."""


@dataclasses.dataclass(frozen=True)
class PGD:
    """Configuration of a projected-gradient-descent attack (Madry et al.).

    x_0 = x + U(-eps, eps) (or uniform in the L2 ball) when `random_start`,
    then `steps` times: x_{k+1} = clip_{value_range}(Proj_{eps-ball(x)}(x_k +
    step_size * direction)), where direction is sign(grad) for `"linf"` and
    grad / ||grad||_2 (per example) for `"l2"`.

    Args:
        eps: radius of the perturbation ball, finite and >= 0.
        step_size: step of each iteration, > 0 (or 0 when eps is 0: the
            ball is a point). Defaults to `2.5 * eps / steps` (the rule of
            MadryLab's `robustness` library), so that the iterates can cross
            the ball.
        steps: number of gradient steps, an integer in [1, 2**31 - 1].
        norm: `"linf"` or `"l2"`.
        random_start: start from a uniform random point of the ball.
        value_range: `(low, high)` the inputs live in; iterates are clipped to
            it, and inputs outside it are rejected. `None` disables both.

    Example:

    >>> from robustlab.attacks import PGD
    >>> attack = PGD(eps=0.1, steps=3)
    >>> round(attack.step_size, 6)
    0.083333
    >>> PGD(eps=-0.1)
    Traceback (most recent call last):
    ...
    ValueError: Argument `eps` must be a finite number >= 0. Received: eps=-0.1
    """

    eps: float
    step_size: float = None
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    value_range: tuple = (0.0, 1.0)

    def __post_init__(self):
        validation.check_finite_at_least("eps", self.eps, 0.0)
        validation.check_int_in_range("steps", self.steps, 1, MAX_STEPS)
        if self.step_size is None:
            step_size = 2.5 * float(self.eps) / self.steps
        elif self.eps == 0 and self.step_size == 0:
            # What the default gives at eps = 0, and what get_config stores.
            step_size = 0.0
        else:
            validation.check_finite_positive("step_size", self.step_size)
            step_size = float(self.step_size)
        if self.norm not in NORMS:
            raise ValueError(
                f"Argument `norm` must be one of {NORMS}. "
                f"Received: norm={self.norm!r}"
            )
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "step_size", step_size)
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "random_start",
                           validation.check_bool("random_start", self.random_start))
        object.__setattr__(
            self, "value_range", validation.check_value_range(self.value_range)
        )

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("value_range") is not None:
            config["value_range"] = tuple(config["value_range"])
        return cls(**config)

    def __call__(self, model, x, y, *, seed=None, **kwargs):
        """Adversarial inputs for `(x, y)` against `model`: `pgd` with this
        configuration (keyword arguments are passed on to `pgd`)."""
        return pgd(model, x, y, **self.get_config(), seed=seed, **kwargs)


def fgsm_config(eps, norm="linf", value_range=(0.0, 1.0)):
    """The `PGD` configuration that is FGSM: one step of size eps, no random
    start (Goodfellow et al. 2015)."""
    eps = validation.check_finite_at_least("eps", eps, 0.0)
    return PGD(
        eps=eps,
        step_size=eps if eps > 0 else None,
        steps=1,
        norm=norm,
        random_start=False,
        value_range=value_range,
    )


# ---------------------------------------------------------------------------
# The attack as a pure function of tensors.


def _per_example_sq_norm(t):
    axes = tuple(range(1, len(t.shape)))
    return ops.sum(ops.square(t), axis=axes, keepdims=True)


# With an int seed, the radius of the L2 random start is drawn with the seed
# `seed + _RADIUS_SEED_OFFSET` (modulo MAX_SEED + 1). The same int for both
# draws would draw them from the same bits: on JAX the radius was then a
# function of the direction's first coordinate. A large offset keeps a sweep
# over consecutive seeds from drawing one start's radius from the bits of
# another start's direction.
_RADIUS_SEED_OFFSET = 0x6A09E667


def _radius_seed(seed):
    """The seed of the radius draw: a `SeedGenerator` gives its next seed by
    itself (the draws the training step makes are left as they were); an
    int gives another int (see `_RADIUS_SEED_OFFSET`)."""
    if isinstance(seed, int):
        return (seed + _RADIUS_SEED_OFFSET) % (validation.MAX_SEED + 1)
    return seed


def _random_start(x, attack, seed):
    eps = attack.eps
    # Each draw is made for the global batch and cut to this replica's rows,
    # so that under a distribution strategy the replicas start from the
    # noise one device would draw (on one device: a draw for `x`'s batch).
    rows = _backend.get().draw_replica_rows
    batch, features = ops.shape(x)[0], tuple(ops.shape(x)[1:])
    if attack.norm == "linf":
        return rows(lambda n: keras.random.uniform(
            (n,) + features, minval=-eps, maxval=eps, dtype=x.dtype, seed=seed
        ), batch)
    # Uniform in the L2 ball: a uniform direction times eps * U^(1/d), the
    # direction and U drawn independently.
    direction = rows(lambda n: keras.random.normal(
        (n,) + features, dtype=x.dtype, seed=seed), batch)
    direction = direction / ops.sqrt(
        ops.maximum(_per_example_sq_norm(direction), 1e-24)
    )
    dim = math.prod(x.shape[1:])
    radius_shape = (1,) * len(features)
    u = rows(lambda n: keras.random.uniform(
        (n,) + radius_shape, dtype=x.dtype, seed=_radius_seed(seed)), batch)
    return direction * eps * ops.power(u, 1.0 / dim)


# float16 and bfloat16 inputs are attacked in float32: their norms underflow
# (a squared gradient below 6e-8 is 0 in float16, and so is a floor of 1e-24,
# which made the L2 direction 0/0), and x +/- eps rounded in their precision
# lands outside the ball.
_LOW_PRECISION = ("float16", "bfloat16")
_WORKING_DTYPE = "float32"


def _is_low_precision(x):
    return keras.backend.standardize_dtype(x.dtype) in _LOW_PRECISION


def project(x_adv, x, attack):
    """Project `x_adv` onto the attack's eps-ball around `x`, then onto its
    value range.

    For float16 and bfloat16 `x`, the projection is computed in float32 and
    returned in `x`'s dtype, rounded to nearest except where that value
    would lie outside the ball (an L-inf coordinate, an L2 example) or the
    value range: there it is rounded toward `x` instead, so that the result
    lies inside both as a float32 projection does.
    """
    if not isinstance(attack, PGD):
        raise TypeError("Argument `attack` must be a robustlab.PGD (its eps, norm and "
                        f"value range define the set). Received: attack={attack!r}")
    shapes = _static_shape(x_adv), _static_shape(x)
    if None not in shapes and shapes[0] != shapes[1] and None not in shapes[0] + shapes[1]:
        raise ValueError("Arguments `x_adv` and `x` must have the same shape. "
                         f"Received: x_adv with shape {shapes[0]}, x with shape {shapes[1]}")
    if _is_low_precision(x):
        x_work = ops.cast(x, _WORKING_DTYPE)
        projected = _project(ops.cast(x_adv, _WORKING_DTYPE), x_work, attack)
        return _in_dtype_of(x, projected, x_work, attack)
    return _project(x_adv, x, attack)


def _static_shape(array):
    """The shape as a tuple (None for an unknown axis), or None where even
    the rank is unknown (a symbolic tensor of unknown rank)."""
    shape = getattr(array, "shape", None)
    try:
        return tuple(shape) if shape is not None else tuple(np.shape(array))
    except (TypeError, ValueError):
        return None


def _project(x_adv, x, attack):
    eps = attack.eps
    if attack.norm == "linf":
        x_adv = ops.clip(x_adv, x - eps, x + eps)
    else:
        delta = x_adv - x
        norm = ops.sqrt(_per_example_sq_norm(delta))
        # Scale only the examples outside the ball; the 1e-12 keeps 0/0 away.
        scale = ops.minimum(1.0, eps / ops.maximum(norm, 1e-12))
        x_adv = x + delta * scale
    if attack.value_range is not None:
        low, high = attack.value_range
        x_adv = ops.clip(x_adv, low, high)
    return x_adv


def _in_dtype_of(x, x_adv, x_work, attack):
    """`x_adv`, a float32 projection onto the ball around `x_work` (`x` in
    float32) and onto the value range, in the dtype of `x` (float16 or
    bfloat16): rounded to nearest, except in the coordinates where that
    moves it away from `x` and out of the ball or the value range; those are
    rounded toward `x` (to the neighbour between `x` and `x_adv`), which puts
    the result inside both."""
    nearest = ops.cast(x_adv, x.dtype)
    nearest_work = ops.cast(nearest, _WORKING_DTYPE)
    offset = nearest_work - x_work
    if attack.norm == "linf":
        outside = ops.abs(offset) > attack.eps
    else:
        outside = ops.sqrt(_per_example_sq_norm(offset)) > attack.eps
    if attack.value_range is not None:
        low, high = attack.value_range
        outside = outside | (nearest_work < low) | (nearest_work > high)
    away = ops.abs(offset) > ops.abs(x_adv - x_work)
    return ops.where(outside & away, _next_toward(nearest, x), nearest)


def _next_toward(t, target):
    """The neighbour of each entry of `t` (float16 or bfloat16) in its dtype
    on the side of the entry of `target` (where the two differ).

    Both dtypes store sign and magnitude in 16 bits: read as an int16, a
    positive number's bits grow with it, a negative number's as it falls, so
    a neighbour is the bits plus or minus one. A zero of either sign moves
    from the zero of the side it goes to (+0 up, -0 down)."""
    up = target > t
    bits = ops.cast(ops.view(t, "int16"), "int32")
    bits = ops.where(t == 0, ops.where(up, 0, -(2**15)), bits)
    step = ops.where(ops.equal(bits >= 0, up), 1, -1)
    return ops.view(ops.cast(bits + step, "int16"), t.dtype)


def _ascent_direction(grad, norm):
    if norm == "linf":
        return ops.sign(grad)
    return grad / ops.sqrt(ops.maximum(_per_example_sq_norm(grad), 1e-24))


def perturb(loss_fn, x, y, attack, seed=None):
    """PGD on a batch, in the graph.

    Args:
        loss_fn: `loss_fn(x, y) -> scalar`, the loss to ascend (a sum over the
            batch, so that each example's gradient is its own).
        x: a batch of inputs (a backend tensor).
        y: the batch's labels, passed to `loss_fn` unchanged.
        attack: a `PGD` configuration.
        seed: a `keras.random.SeedGenerator` (or int) for the random start.
            With an int, the direction and the radius of an L2 start are
            drawn with two seeds (`seed` and another derived from it), so
            that they are independent.

    Returns:
        The adversarial batch, with gradients stopped.

    float16 and bfloat16 inputs: the model is called on iterates of that
    dtype, and the random start, the step's direction and the projection are
    computed in float32 (see `project` for how each iterate returns to the
    dtype of `x`).
    """
    x = ops.convert_to_tensor(x)
    backend = _backend.get()
    input_gradient = backend.input_gradient
    if _is_low_precision(x):
        x_work = ops.cast(x, _WORKING_DTYPE)

        def working(t):
            return ops.cast(t, _WORKING_DTYPE)

        def projected(x_adv):
            return _in_dtype_of(x, _project(x_adv, x_work, attack), x_work, attack)
    else:
        x_work = x

        def working(t):
            return t

        def projected(x_adv):
            return _project(x_adv, x, attack)

    if attack.random_start and attack.eps > 0:
        x_start = projected(x_work + _random_start(x_work, attack, seed))
    else:
        x_start = x

    def step(_, x_adv):
        grad = input_gradient(lambda z: loss_fn(z, y), x_adv)
        x_adv = working(x_adv) + attack.step_size * _ascent_direction(
            working(grad), attack.norm)
        return projected(x_adv)

    x_adv = backend.repeat(attack.steps, step, x_start)
    return ops.stop_gradient(x_adv)


# ---------------------------------------------------------------------------
# Losses: what the attack ascends.


def attack_loss(model, labels_sparse, loss=None, from_logits=None):
    """The summed loss `(x, y) -> scalar` that an attack on `model` ascends."""
    loss = _chosen_loss(model, loss)
    per_example = _per_example_attack_loss(model, labels_sparse, loss, from_logits)
    return _summed_loss(lambda: model, per_example)


def _chosen_loss(model, loss):
    """`loss`, or with None the model's compiled loss (None where it has
    none: the default cross-entropy)."""
    if loss is None and getattr(model, "compiled", False) and model.loss:
        return model.loss
    return loss


def _per_example_attack_loss(model, labels_sparse, loss, from_logits):
    if loss is None:
        if from_logits is None:
            from_logits = not losses.final_activation_is_softmax(model)
        return losses.per_example_loss(
            losses.default_classification_loss(labels_sparse, from_logits)
        )
    return losses.per_example_loss(loss)


def _summed_loss(get_model, per_example):
    """The loss summed over the batch, of the model `get_model()` returns."""

    def summed(x, y, training=False):
        return ops.sum(per_example(y, get_model()(x, training=training)))

    return summed


# ---------------------------------------------------------------------------
# Eager entry points: validate, compile once per model, run in batches.

# model -> {key: compiled runner}. A runner refers to its model only weakly
# (its loss reads the model through a weak reference, see `_runner`): a
# strong reference from a value would keep the key alive, and no attacked
# model would ever be freed. The runners of a model go with it. Equal Keras
# losses share a runner (`losses.compiled_for_loss`).
_RUNNERS = weakref.WeakKeyDictionary()


def _runner(model, attack, prepared_loss, training):
    loss, per_example, key = prepared_loss

    def build(per_example):
        # Weakly: the compiled runners keep this function (see `_RUNNERS`);
        # they run only while the model is alive.
        loss_fn = _summed_loss(weakref.ref(model), per_example)

        def craft(x, y, seed_generator):
            return perturb(
                lambda z, t: loss_fn(z, t, training=training),
                x,
                y,
                attack,
                seed=seed_generator,
            )

        return _backend.get().compile_attack(model, craft)

    return losses.compiled_for_loss(
        _RUNNERS, model, (attack, key, training), loss, per_example, build)


def pgd(
    model,
    x,
    y,
    eps,
    step_size=None,
    steps=10,
    norm="linf",
    random_start=True,
    value_range=(0.0, 1.0),
    *,
    loss=None,
    from_logits=None,
    training=False,
    batch_size=256,
    seed=None,
):
    """Projected-gradient (PGD) adversarial examples for a Keras classifier.

    Args:
        model: a Keras 3 classifier: `(batch, ...) -> (batch, classes)`.
        x: inputs, a NumPy array (or anything `np.asarray` takes) inside
            `value_range`.
        y: labels, class indices `(batch,)`/`(batch, 1)` or one-hot.
        eps: radius of the perturbation ball, finite and >= 0.
        step_size: step of each iteration, > 0 (or 0 when eps is 0);
            default `2.5 * eps / steps`.
        steps: number of gradient steps, an integer in [1, 2**31 - 1].
        norm: `"linf"` or `"l2"`.
        random_start: start from a uniform random point of the ball.
        value_range: `(low, high)` the inputs live in (`x` outside it is
            refused; iterates are clipped to it), or `None` for neither.
        loss: the loss to ascend; default: the model's compiled loss, or a
            cross-entropy (see the module docstring on logits/probabilities).
        from_logits: with `loss=None` on an uncompiled model, whether the
            model outputs logits; `None` reads it from the final activation.
        training: call the model in training mode during the attack.
        batch_size: examples per compiled attack call.
        seed: None or an integer in [0, 2**31 - 1]. An integer gives the
            same random start on every call; None draws a fresh seed on each
            call from the operating system's entropy (no global random state
            is read or changed), so two calls start from different random
            points. Unused when `random_start` is False.

    Returns:
        A NumPy array of adversarial inputs, shaped and typed like `x`.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.full((2, 4), 0.5, "float32"); y = np.array([0, 2])
    >>> x_adv = robustlab.attacks.pgd(model, x, y, eps=0.1, steps=5, seed=0)
    >>> bool(np.all(np.abs(x_adv - x) <= 0.1 + 1e-6))
    True
    """
    attack = PGD(eps, step_size, steps, norm, random_start, value_range)
    return run_attack(
        model,
        x,
        y,
        attack,
        loss=loss,
        from_logits=from_logits,
        training=training,
        batch_size=batch_size,
        seed=seed,
    )


def fgsm(
    model,
    x,
    y,
    eps,
    norm="linf",
    value_range=(0.0, 1.0),
    *,
    loss=None,
    from_logits=None,
    training=False,
    batch_size=256,
):
    """Fast-gradient-sign adversarial examples: one step of size `eps` from
    `x` (no random start). With `norm="l2"`, one normalised-gradient step.

    This is `pgd` with `fgsm_config(eps, norm, value_range)`; without a
    random start, the result is deterministic.

    Args:
        model: a Keras 3 classifier: `(batch, ...) -> (batch, classes)`.
        x: inputs, a floating-point NumPy array (or anything `np.asarray`
            takes), finite and inside `value_range`.
        y: labels, class indices `(batch,)`/`(batch, 1)` or one-hot.
        eps: size of the step (and radius of the ball), finite and >= 0.
        norm: `"linf"` (every coordinate moves by `eps` along the sign of
            its gradient) or `"l2"` (the whole example moves by `eps` along
            its normalised gradient).
        value_range: `(low, high)` with `low < high`, the range the inputs
            live in: the result is clipped to it. `None` disables the clip
            and the range check.
        loss: the loss to ascend; default: the model's compiled loss, or a
            cross-entropy (see the module docstring on logits/probabilities).
        from_logits: with `loss=None` on an uncompiled model, whether the
            model outputs logits; `None` reads it from the final activation.
        training: call the model in training mode during the attack.
        batch_size: examples per compiled attack call, an integer >= 1.

    Returns:
        A NumPy array of adversarial inputs, shaped and typed like `x`.

    Raises:
        ValueError: for `eps < 0`, an unknown `norm`, a bad `value_range`,
            non-finite inputs or inputs outside `value_range`, labels that
            do not fit the model's classes, or a result that is not finite
            (the model's loss or gradient NaN or infinite at the inputs).
        TypeError: for integer or boolean inputs.

    Example:

    With `"linf"`, every coordinate moves by exactly `eps`, up for a
    positive gradient of the loss and down for a negative one (a zero
    gradient leaves it), unless the step would leave the value range: then
    it stops at the bound.

    >>> import numpy as np, keras, robustlab
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]]),
    ...                    np.zeros(2)])
    >>> x = np.array([[0.5, 0.95, 0.05], [0.5, 0.5, 0.5]], "float32")
    >>> y = np.array([0, 1])
    >>> x_adv = robustlab.attacks.fgsm(model, x, y, eps=0.1)
    >>> np.round(x_adv.astype(float), 6).tolist()  # 1.05 and -0.05 clipped
    [[0.4, 1.0, 0.0], [0.6, 0.4, 0.6]]
    >>> moved_by_eps = np.isclose(np.abs(x_adv - x), 0.1)
    >>> at_a_bound = (x_adv == 0.0) | (x_adv == 1.0)
    >>> bool(np.all(moved_by_eps | at_a_bound))
    True
    """
    return run_attack(
        model,
        x,
        y,
        fgsm_config(eps, norm, value_range),
        loss=loss,
        from_logits=from_logits,
        training=training,
        batch_size=batch_size,
        seed=0,
    )


def _prepared(model, x, y, loss, from_logits, batch_size, value_range):
    """Checked NumPy inputs, sparse-or-one-hot labels as the loss takes
    them, and `(loss, per-example loss, the rest of its cache key)`."""
    validation.check_int_at_least("batch_size", batch_size, 1)
    # On JAX, mid-epoch, a model reference held outside a callback reads
    # detached variables; the error would otherwise name nothing useful.
    _keras_compat.check_attached(model)
    if from_logits is not None:
        from_logits = validation.check_bool("from_logits", from_logits)
    x = np.asarray(x)
    y = np.asarray(y)
    # The attack's result is "typed like x": integer inputs would truncate it.
    validation.check_inputs(x, value_range, floating=True)
    num_classes = model_validation.check_classifier(model, x[:1])
    labels_sparse = validation.check_labels(y, num_classes, len(x))
    loss = _chosen_loss(model, loss)
    losses.check_labels_fit_loss(loss, labels_sparse, y.shape)
    per_example = _per_example_attack_loss(model, labels_sparse, loss, from_logits)
    y_in = y if (not labels_sparse or y.ndim == 1) else y.reshape(-1)
    return x, y_in, (loss, per_example, (from_logits, labels_sparse))


def _in_batches(runner, x, y, batch_size, state):
    outputs = []
    for start in range(0, len(x), batch_size):
        out, state = runner(
            x[start : start + batch_size], y[start : start + batch_size], state
        )
        outputs.append(keras.ops.convert_to_numpy(out))
    return outputs


def _check_finite_result(result, what, model):
    """The inputs were checked finite, so a non-finite result comes from the
    model: its loss or gradient is NaN or infinite there."""
    finite = np.isfinite(result.reshape(len(result), -1)).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"{what} is not finite for {int((~finite).sum())} of {len(result)} "
            "examples: the model's loss or its gradient is NaN or infinite there "
            "(NaN weights of a diverged model, say, or a loss that overflows). "
            f"Received: model={getattr(model, 'name', type(model).__name__)!r}")
    return result


def run_attack(
    model,
    x,
    y,
    attack,
    *,
    loss=None,
    from_logits=None,
    training=False,
    batch_size=256,
    seed=None,
):
    """Run the `PGD` configuration `attack` on NumPy data in compiled batches.

    `pgd(model, x, y, eps, ...)` is `run_attack(model, x, y, PGD(eps, ...))`;
    use this form to run one configuration, built once, on several arrays.

    Args:
        model: a Keras 3 classifier: `(batch, ...) -> (batch, classes)`.
        x: inputs, a floating-point NumPy array (or anything `np.asarray`
            takes), finite and inside `attack.value_range`.
        y: labels, class indices `(batch,)`/`(batch, 1)` or one-hot.
        attack: a `robustlab.PGD` (e.g. `fgsm_config(eps)` for FGSM).
        loss: the loss to ascend; default: the model's compiled loss, or a
            cross-entropy (see the module docstring on logits/probabilities).
        from_logits: with `loss=None` on an uncompiled model, whether the
            model outputs logits; `None` reads it from the final activation.
        training: call the model in training mode during the attack.
        batch_size: examples per compiled attack call, an integer >= 1.
        seed: None or an integer in [0, 2**31 - 1]. An integer gives the
            same random start on every call; None draws a fresh seed on each
            call, so two calls start from different random points. Unused
            when `attack.random_start` is False.

    Returns:
        A NumPy array of adversarial inputs, shaped and typed like `x`.

    Raises:
        TypeError: when `attack` is not a `robustlab.PGD`, or for integer or
            boolean inputs.
        ValueError: for a seed outside [0, 2**31 - 1], non-finite inputs or
            inputs outside the attack's value range, labels that do not
            fit the model's classes, or a result that is not finite (the
            model's loss or gradient NaN or infinite at the inputs).

    Example:

    >>> import numpy as np, keras, robustlab
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.full((2, 4), 0.5, "float32"); y = np.array([0, 2])
    >>> attack = robustlab.PGD(eps=0.1, steps=5)
    >>> a = robustlab.attacks.run_attack(model, x, y, attack, seed=0)
    >>> b = robustlab.attacks.run_attack(model, x, y, attack, seed=0)
    >>> bool(np.array_equal(a, b)), bool(np.all(np.abs(a - x) <= 0.1 + 1e-6))
    (True, True)
    """
    if not isinstance(attack, PGD):
        raise TypeError("Argument `attack` must be a robustlab.PGD. "
                        f"Received: attack={attack!r}")
    if seed is not None:
        # Keras would take a negative seed; robustlab's seeds are >= 0 everywhere.
        seed = validation.check_seed("seed", seed)
    training = validation.check_bool("training", training)
    x, y_in, prepared_loss = _prepared(
        model, x, y, loss, from_logits, batch_size, attack.value_range)
    runner = _runner(model, attack, prepared_loss, training)
    if seed is None:
        # A fresh seed from the operating system's entropy: Keras's own
        # default would draw it from Python's global `random`, and an
        # unseeded attack would change what a seeded program draws next.
        seed = int(np.random.SeedSequence().generate_state(1)[0]) % (validation.MAX_SEED + 1)
    seed_generator = keras.random.SeedGenerator(seed)
    outputs = _in_batches(runner, x, y_in, batch_size, seed_generator.state.value)
    if not outputs:
        return x.copy()
    return _check_finite_result(np.concatenate(outputs).astype(x.dtype, copy=False),
                                "The attack's result", model)


def loss_gradient(
    model,
    x,
    y,
    *,
    loss=None,
    from_logits=None,
    training=False,
    batch_size=256,
):
    """The gradient of the attack's loss with respect to the inputs: what a
    step of `pgd` ascends, for NumPy code (an attack written by hand).

    The loss is summed over the batch, so each example's row is the gradient
    of its own loss (with `training=True`, BatchNorm's batch statistics also
    carry the other examples' losses into it: see the module's docstring).
    Compiled once per model and loss, like `pgd`.

    Args: as `pgd` (`x` need not lie in any value range).

    Returns:
        A NumPy array shaped like `x`.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    >>> g = robustlab.attacks.loss_gradient(model, np.zeros((1, 2), "float32"),
    ...                                     np.array([0]))
    >>> g.round(3).tolist()  # W (softmax(0) - onehot(0)) = (-0.5, 0.5)
    [[-0.5, 0.5]]
    """
    training = validation.check_bool("training", training)
    x, y_in, (loss, per_example, key) = _prepared(
        model, x, y, loss, from_logits, batch_size, None)

    def build(per_example):
        loss_fn = _summed_loss(weakref.ref(model), per_example)  # see `_runner`
        input_gradient = _backend.get().input_gradient

        def gradient(x, y, seed_generator):
            del seed_generator  # no randomness
            return input_gradient(lambda z: loss_fn(z, y, training=training), x)

        return _backend.get().compile_attack(model, gradient)

    runner = losses.compiled_for_loss(
        _RUNNERS, model, ("loss_gradient", key, training), loss, per_example, build)
    outputs = _in_batches(runner, x, y_in, batch_size,
                          keras.random.SeedGenerator(0).state.value)
    return _check_finite_result(np.concatenate(outputs).astype(x.dtype, copy=False),
                                "The loss gradient", model)
