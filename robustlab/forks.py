"""Replica forks: the width of the weight cloud, measured and predicted.

Fork R replicas of an adversarial training run from one state (the same
weights, the same momentum), let each take W steps with its own minibatches
and its own attack random starts, and measure how far apart they end up: the
variance across replicas of the weights, overall and along the top Hessian
eigenvector u of the robust loss at the fork.

Near a minimum, heavy-ball SGD (Keras `SGD(momentum=beta)`) along u is the
linear system x_{t+1} = x_t - eta (lambda x_t + xi_t) + beta (x_t - x_{t-1});
started from zero covariance, `robustlab.posterior.covariance_recursion`
predicts Var(x_W) from three numbers measured at the fork: the learning rate
eta, the curvature lambda = u^T H u (plus the weight decay, which adds
`weight_decay * I` to the Hessian), and the minibatch noise along u, the
variance over the training examples (crafted by the training attack at the
fork) of the per-example gradient projected on u, over B, times (n - B) /
(n - 1) for minibatches drawn without replacement.

That recursion treats the window's minibatch noises as independent. A
window of one shuffled pass draws disjoint batches from the same n examples,
and their noises are anticorrelated. `posterior.shuffled_pass_variance`
gives Var(x_W) for that sampling, from the part of the noise that differs
between examples (which the anticorrelation affects) and the part each
example's gradient draws anew at every use (the training attack's random
start), measured apart by attacking every example twice
(`posterior.split_gradient_noise`). Both predictions are kept:
`predicted_top` (the recursion) and `predicted_top_shuffled`. With
`batches="independent"` the replicas draw each batch on its own instead,
the sampling the recursion assumes: the control that measures what the
disjoint batches do.

A fork observes: the model's weights, optimizer state, learning rate and
attack seeds are put back afterwards, so the run goes on exactly as without
it.
"""

import dataclasses
import math

import keras
import numpy as np

from robustlab import _keras_compat
from robustlab import attacks
from robustlab import curvature
from robustlab import model_validation
from robustlab import posterior
from robustlab import validation
from robustlab.adversarial import AdversarialModel
from robustlab.callbacks.posterior_tracker import per_example_directional_derivatives

__all__ = ["ForkResult", "fork"]

# Derives the second attack draw's seed from the fork's.
_SECOND_DRAW = 2
_BATCHES = ("pass", "independent")


@dataclasses.dataclass
class ForkResult:
    """One fork window.

    Attributes:
        epoch: the epoch at whose start the fork was taken (0-based).
        learning_rate, momentum: the optimizer's, during the window.
        steps, replicas, batch_size: W, R, B.
        eigenvalues: the top two Hessian eigenvalues of the robust loss at the
            fork (largest magnitude first).
        curvature: lambda fed to the prediction: eigenvalues[0] + weight decay.
        noise_variance: the minibatch noise along u (already over B, with the
            finite-population factor).
        measured_top: Var across replicas of u . w after W steps (ddof=1).
        predicted_top: the recursion's Var(x_W) from zero covariance.
        measured_overall: the across-replica variance averaged over all
            trainable parameters.
        path: `(replicas, steps + 1, 2)` coordinates of w_t - w_fork along
            the top two eigenvectors, step by step (the cloud, drawn).
        example_variance: the population variance over the training
            examples of their gradient along u, without the attack's
            draw-to-draw noise (`split_gradient_noise`; an estimate, which
            the prediction takes as 0 where it falls below 0); None in
            windows recorded before it was measured.
        draw_variance: the mean variance of one example's gradient along u
            from one attack draw to another; None likewise.
        predicted_top_shuffled: Var(x_W) from zero covariance with the
            window's batches drawn without replacement
            (`shuffled_pass_variance`); None likewise, and for independent
            batches.
        batches: how the replicas drew their batches (`fork`'s argument).
    """

    epoch: int
    learning_rate: float
    momentum: float
    steps: int
    replicas: int
    batch_size: int
    eigenvalues: np.ndarray
    curvature: float
    noise_variance: float
    measured_top: float
    predicted_top: float
    measured_overall: float
    path: np.ndarray
    example_variance: float = None
    draw_variance: float = None
    predicted_top_shuffled: float = None
    batches: str = "pass"

    @property
    def ratio(self):
        """measured_top / predicted_top: inf where the prediction is 0 and
        the measurement is not (a window without minibatch noise, a
        full-batch one, predicts no spread), NaN where both are 0."""
        return _ratio(self.measured_top, self.predicted_top)

    @property
    def ratio_shuffled(self):
        """measured_top / predicted_top_shuffled (None where not predicted;
        inf or NaN where the prediction is 0, as `ratio`)."""
        if self.predicted_top_shuffled is None:
            return None
        return _ratio(self.measured_top, self.predicted_top_shuffled)

    def to_dict(self):
        """The window as a JSON-ready dict, with its ratios; a ratio that is
        not finite is None (JSON null: standard JSON has no inf or NaN, and
        `from_dict` recomputes the ratios anyway)."""
        d = dataclasses.asdict(self)
        d["eigenvalues"] = [float(v) for v in self.eigenvalues]
        d["path"] = np.asarray(self.path, "float32").tolist()
        d["ratio"] = _finite_or_none(self.ratio)
        if self.predicted_top_shuffled is not None:
            d["ratio_shuffled"] = _finite_or_none(self.ratio_shuffled)
        return d

    @classmethod
    def from_dict(cls, d):
        """The window of a dict `to_dict` made (possibly read back from
        JSON): a null in a figure every window has is NaN (as JSON writers
        write it, `robustlab.run_checkpoint.write_json_atomically`); one
        of the figures older windows lack stays None."""
        d = {k: (math.nan if v is None and k in _ALWAYS_MEASURED else v)
             for k, v in d.items() if k not in ("ratio", "ratio_shuffled")}
        d["eigenvalues"] = np.asarray(d["eigenvalues"], "float64")
        d["path"] = np.asarray(d["path"], "float64")
        return cls(**d)


# The float figures of every window (`example_variance`, `draw_variance` and
# `predicted_top_shuffled` are None in some).
_ALWAYS_MEASURED = ("learning_rate", "momentum", "curvature", "noise_variance",
                    "measured_top", "predicted_top", "measured_overall")


def _ratio(measured, predicted):
    if predicted == 0:
        # Python's division would raise; a variance measured against none
        # predicted is infinitely more, and 0 against 0 undefined.
        return math.nan if measured == 0 else math.copysign(math.inf, measured)
    return measured / predicted


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


class _State:
    """Everything a window changes, saved and put back."""

    def __init__(self, model):
        self.model = model
        self.variables = (list(model.variables) + list(model.optimizer.variables)
                          + list(model.attack_seed_variables)
                          + list(model.metrics_variables))
        self.values = [keras.ops.convert_to_numpy(v.value).copy() for v in self.variables]
        self.history = getattr(model, "history", None)
        # Each replica's fit starts by setting it to False: an early stop
        # that a callback before the fork asked for (EarlyStopping,
        # TerminateOnNaN) would be cancelled.
        self.stop_training = model.stop_training

    def restore(self):
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)
        if self.history is not None:
            # Each replica's fit sets `model.history` to its own History.
            self.model.history = self.history
        self.model.stop_training = self.stop_training


def _flat(arrays):
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(a), "float64").ravel()
                           for a in arrays])


class _Projections(keras.callbacks.Callback):
    """Coordinates of w_t - w_0 along the directions after every step."""

    def __init__(self, variables, origin, directions):
        super().__init__()
        self.variables, self.origin, self.directions = variables, origin, directions
        self.rows = [np.zeros(len(directions))]

    def on_train_batch_end(self, batch, logs=None):
        self.model  # noqa: B018 (on JAX, reading `model` syncs the step's weights)
        self.rows.append(self.directions @ (_flat(self.variables) - self.origin))


def fork(model, x, y, *, batch_size, learning_rate=None, replicas=64, steps=None,
         weight_decay=0.0, probe_examples=256, lanczos_iterations=30, seed=0, epoch=0,
         batches="pass"):
    """Fork `replicas` copies of `model` from its current state, run each for
    `steps` SGD steps, and compare the measured spread with the heavy-ball
    prediction.

    Args:
        model: a compiled `robustlab.AdversarialModel` with a Keras `SGD`
            optimizer, in the state to fork from. From a callback, the
            callback's `self.model` or a reference held from outside it (on
            JAX the running fit's state is attached first, as the model's
            own methods do).
        x, y: the training data (NumPy). Each replica draws its own order of
            it, seeded by `(seed, replica)`.
        batch_size: B of the minibatches, an integer >= 1.
        learning_rate: the window's learning rate; default the optimizer's
            current one (a learning-rate callback sets it only when an epoch
            begins, so pass it for a window that starts a new epoch); finite
            and > 0.
        replicas: R, an integer >= 2.
        steps: W, an integer >= 1 with `steps * batch_size <= len(x)` (the
            window's batches are full and, with `batches="pass"`, disjoint);
            default one epoch of full batches, `len(x) // batch_size`.
        weight_decay: the coefficient of the weight decay added to every
            gradient (Keras `L2(weight_decay / 2)` on every weight), which
            adds `weight_decay` to the curvature; finite and >= 0.
        probe_examples: training examples of the Hessian probe, an integer
            >= 1 (the first ones, all of them when `len(x)` is smaller; their
            adversarial versions are crafted once, with the evaluation
            attack).
        lanczos_iterations: Lanczos steps for the top two eigenpairs, an
            integer >= 2.
        seed: base seed of the replicas' batch orders and attack starts, of
            the probe's attack and start vector; an integer in
            [0, 2**31 - 1].
        epoch: the epoch the window stands for, an integer >= 0 (recorded,
            and passed to `fit` as `initial_epoch`, so AWP's warm-up sees the
            right epoch).
        batches: how each replica draws its batches. `"pass"` (default): one
            shuffled pass, `steps` disjoint batches, as training does.
            `"independent"`: each batch drawn on its own (B distinct
            examples, independently of the other batches), the sampling the
            recursion assumes; the control for the shuffled-pass
            prediction, which is then not computed (`predicted_top_shuffled`
            is None).

    Returns:
        A `ForkResult`. The model's weights, optimizer state (built first if
        the model was never fitted, so that every replica starts without
        momentum), learning rate, attack seeds, metrics' state,
        `model.history` and `model.stop_training` (an early stop a callback
        asked for) are put back afterwards, so a fork taken from a callback
        leaves the training run it observes unchanged. The replicas train
        one step a compiled call whatever the model's
        `steps_per_execution` (the same numbers; `path` has every step),
        which is put back too.

    Raises:
        ValueError: for an argument outside the ranges above, an unknown
            `batches`, or an SGD whose steps the heavy-ball prediction does not
            model (Nesterov momentum, gradient accumulation, clipping) or
            whose learning rate is a schedule, or a compiled loss that does
            not average over the batch (`reduction="sum"` or `"none"`).
        TypeError: when the model is not an `AdversarialModel` or its
            optimizer not a Keras `SGD`, or an integer argument is not an
            integer.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> from robustlab.forks import fork
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...               keras.losses.SparseCategoricalCrossentropy(True))
    >>> x = np.random.default_rng(0).random((32, 4), dtype="float32")
    >>> y = np.arange(32) % 3
    >>> _ = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> before = net.get_weights()
    >>> result = fork(model, x, y, batch_size=8, replicas=3, steps=2,
    ...               probe_examples=16, lanczos_iterations=5)
    >>> result.path.shape  # (replicas, steps + 1, top two directions)
    (3, 3, 2)
    >>> result.measured_top > 0, result.predicted_top > 0
    (True, True)
    >>> all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    True
    """
    if not isinstance(model, AdversarialModel):
        raise TypeError("Argument `model` must be a compiled robustlab.AdversarialModel. "
                        f"Received: model={type(model).__name__}")
    if not model.compiled or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Argument `model` must be a compiled robustlab.AdversarialModel: fork "
            "steps its optimizer; compile it with keras.optimizers.SGD first. "
            "Received: an AdversarialModel that is not compiled")
    if batches not in _BATCHES:
        raise ValueError(f"Argument `batches` must be one of {list(_BATCHES)}. "
                         f"Received: batches={batches!r}")
    replicas = validation.check_int_at_least("replicas", replicas, 2)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if steps is None:
        if batch_size > n:
            # steps = n // batch_size would be 0, and the error named `steps`.
            raise ValueError(
                f"Argument `batch_size` must be at most the {n} examples of `x`, for "
                f"at least one full batch a window. Received: batch_size={batch_size}")
        steps = n // batch_size
    steps = validation.check_int_at_least("steps", steps, 1)
    if steps * batch_size > n:
        raise ValueError(
            f"Argument `steps` must fit full batches in the data: steps * batch_size <= "
            f"{n}. Received: steps={steps} (with batch_size={batch_size})")
    # On JAX, from a callback holding the model (not `Callback.model`), the
    # running fit's state is attached first, as the model's own methods do.
    model._attach_jax_state()
    optimizer = model.optimizer
    if not isinstance(optimizer, keras.optimizers.SGD):
        raise TypeError("fork predicts heavy-ball SGD: the model must be compiled with "
                        f"keras.optimizers.SGD. Received: optimizer={type(optimizer).__name__}")
    model_validation.check_heavy_ball_sgd(optimizer, "fork")
    schedule = _keras_compat.learning_rate_schedule(optimizer)
    if schedule is not None:
        # The replicas run at one rate, set on the optimizer's variable, which
        # a schedule does not have (and its rates would move within the window).
        raise ValueError(
            "fork runs its replicas at one constant learning rate: compile the SGD "
            "with a fixed learning rate (a float; robustlab.schedules.PiecewiseConstant "
            "drops it through a callback) and pass the window's rate as `learning_rate`. "
            f"Received: optimizer with learning_rate={type(schedule).__name__}")
    net = model.model
    loss = model.loss
    model_validation.check_mean_loss(loss, "fork")
    if not optimizer.built:
        # Built by the first replica's fit otherwise, after the state was
        # saved: the later replicas would start from its momentum.
        optimizer.build(model.trainable_variables)
    state = _State(model)
    if learning_rate is None:
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    learning_rate = validation.check_finite_positive("learning_rate", learning_rate)
    momentum = float(optimizer.momentum)
    epoch = validation.check_int_at_least("epoch", epoch, 0)
    seed = validation.check_seed("seed", seed)
    weight_decay = validation.check_finite_at_least("weight_decay", weight_decay, 0.0)
    probe_examples = validation.check_int_at_least("probe_examples", probe_examples, 1)
    lanczos_iterations = validation.check_int_at_least(
        "lanczos_iterations", lanczos_iterations, 2)

    training = model.attack_training_mode  # crafted as the model crafts them

    def probe_attack(net_, x_, y_, seed=None):
        return model.eval_attack(net_, x_, y_, seed=seed, loss=loss, training=training)

    probe = curvature.top_hessian_eigenvalues(
        net, x[:probe_examples], y[:probe_examples], k=2, loss=loss,
        attack=probe_attack, iterations=lanczos_iterations, seed=seed)
    directions = np.stack([_flat(u) for u in probe.eigenvectors])
    top = probe.eigenvectors[0]
    # The noise along u: every training example, crafted as in training.
    x_adv = attacks.run_attack(net, x, y, model.attack, loss=loss, training=training,
                               seed=seed)
    projected = per_example_directional_derivatives(net, x_adv, y, top, loss=loss)
    noise = float(posterior.minibatch_noise_variance(projected, batch_size, n=n))
    lam = float(probe.eigenvalues[0]) + float(weight_decay)
    lrs = np.full(steps, learning_rate)
    predicted = float(posterior.covariance_recursion(lrs, momentum, lam, noise, 1)[-1])
    # Every example attacked again from other random starts: what differs
    # between the two draws is the attack's own noise, which a shuffled pass
    # does not anticorrelate.
    second_seed = int(np.random.default_rng([seed, _SECOND_DRAW]).integers(2**31 - 1))
    x_again = attacks.run_attack(net, x, y, model.attack, loss=loss, training=training,
                                 seed=second_seed)
    again = per_example_directional_derivatives(net, x_again, y, top, loss=loss)
    split = posterior.split_gradient_noise(projected, again)
    # An estimate of a variance can fall below zero where the examples barely
    # differ; the record keeps it as measured, the prediction takes it as 0.
    predicted_shuffled = None
    if batches == "pass":
        predicted_shuffled = float(posterior.shuffled_pass_variance(
            lrs, momentum, lam, max(float(split.example_variance), 0.0), batch_size, n,
            independent_variance=float(split.draw_variance)))

    variables = list(net.trainable_variables)
    origin = _flat(variables)
    mean = np.zeros_like(origin)
    squares = np.zeros_like(origin)
    top_coordinates, paths = [], []
    # The path is recorded after every step by a per-batch callback, which
    # sees one batch a compiled call: the replicas train one step a call (the
    # same numbers bit for bit), and the model's own setting and train
    # function come back afterwards (no retracing for the run it observes).
    steps_per_execution, train_function = model.steps_per_execution, model.train_function
    if steps_per_execution != 1:
        model.steps_per_execution, model.train_function = 1, None
    try:
        for replica in range(replicas):
            state.restore()
            optimizer.learning_rate.assign(learning_rate)
            rng = np.random.default_rng([seed, replica])
            if batches == "pass":
                order = rng.permutation(n)[: steps * batch_size]
            else:
                order = np.concatenate([rng.choice(n, batch_size, replace=False)
                                        for _ in range(steps)])
            model.attack_seed_variables[0].assign(
                keras.random.SeedGenerator(int(rng.integers(2**31 - 1))).state.value)
            recorder = _Projections(variables, origin, directions)
            model.fit(x[order], y[order], batch_size=batch_size, epochs=epoch + 1,
                      initial_epoch=epoch, shuffle=False, verbose=0, callbacks=[recorder])
            final = _flat(variables)
            delta = final - mean
            mean += delta / (replica + 1)
            squares += delta * (final - mean)
            paths.append(np.stack(recorder.rows))
            top_coordinates.append(paths[-1][-1, 0])
    finally:
        if steps_per_execution != 1:
            model.steps_per_execution, model.train_function = (steps_per_execution,
                                                               train_function)
        state.restore()
    return ForkResult(
        epoch=epoch, learning_rate=learning_rate, momentum=momentum, steps=steps,
        replicas=replicas, batch_size=batch_size,
        eigenvalues=np.asarray(probe.eigenvalues, "float64"), curvature=lam,
        noise_variance=noise,
        measured_top=float(np.var(top_coordinates, ddof=1)), predicted_top=predicted,
        measured_overall=float(np.mean(squares / (replicas - 1))),
        path=np.stack(paths),
        example_variance=float(split.example_variance),
        draw_variance=float(split.draw_variance),
        predicted_top_shuffled=predicted_shuffled,
        batches=batches,
    )
