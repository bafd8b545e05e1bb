"""Adversarial weight perturbation (AWP; Wu, Xia & Wang 2020), one step,
layer-wise relative.

After the adversarial batch x_adv has been crafted at the weights w, AWP takes
one ascent step in weight space: for each perturbed variable w_l with gradient
g_l = d loss(w, x_adv) / d w_l,

    v_l = gamma * ||w_l|| * g_l / ||g_l||,

then uses the gradient at w + v for the update of w (w itself is never
changed: the perturbed weights exist only for that forward and backward pass).
So ||v_l|| = gamma * ||w_l|| exactly, and gamma = 0 is plain PGD training.

Which loss: `loss` above is the model's training objective on x_adv, the
loss the update descends: the compiled loss (with its sample weights, the
mean over the batch) plus the model's regularisation losses (`model.losses`:
weight regularisers, such as the weight decay of `robustlab.models`, and
activity regularisers), computed in training mode. This differs from Wu et
al.'s reference implementation (github.com/csdongxian/AWP,
`AT_AWP/utils_awp.py`), whose direction is the gradient of the mean
cross-entropy on x_adv alone: there weight decay is applied by the
optimiser, not added to the loss, so no regularisation term enters v. With
a regulariser, the two directions differ by its gradient; without one they
are the same. (The logged `awp_perturbed_loss` is the compiled loss alone,
at w + v.)

Under mixed precision the gradient at w is taken of the loss scaled as the
update's is (`optimizer.scale_loss`), so that the float16 backward pass does
not underflow; v does not depend on the scale (each g_l is normalised). A
step whose scaled gradient at w overflows gets v = 0 (see
`zero_on_overflow`), and the optimizer then skips it as Keras skips any step
that overflows.

`AWP` is the configuration; `layerwise_relative_perturbation` is the maths, a
pure function of the weights and gradients written with `keras.ops`.
"""

import dataclasses
import numbers
import re

import keras
import numpy as np
from keras import ops

from robustlab import validation

__all__ = [
    "AWP",
    "VARIABLE_SELECTIONS",
    "layerwise_relative_perturbation",
    "zero_on_overflow",
]

VARIABLE_SELECTIONS = ("kernels", "all")


@dataclasses.dataclass(frozen=True)
class AWP:
    """Configuration of adversarial weight perturbation.

    Args:
        gamma: relative size of the perturbation, finite and >= 0.
        warmup_epochs: epochs of plain adversarial training (gamma = 0)
            before AWP starts, an integer >= 0.
        variables: which trainable variables are perturbed: `"kernels"` (the
            default: the kernels of Dense, Conv and EinsumDense layers, not
            biases nor BatchNorm), `"all"` (every trainable variable), or a
            regular expression matched (`re.search`) against each variable's
            `path` (e.g. `"dense.*kernel"`; name layers, not the model: a
            `keras.Sequential` built in a session prefixes its variables'
            paths with its own name, `"sequential/dense/kernel"`, and the
            same model loaded from a file does not, so a pattern naming the
            model selects nothing after loading, which is an error). The
            selection is made over the
            variables trainable at each step: a variable frozen after the
            model was built is not perturbed.
        schedule: optional `schedule(epoch) -> gamma`, applied after the
            warm-up; without it gamma stays constant.

    Example:

    >>> from robustlab.awp import AWP
    >>> AWP(gamma=0.005, warmup_epochs=10).gamma_at(3)
    0.0
    >>> AWP(gamma=0.005, warmup_epochs=10).gamma_at(10)
    0.005
    """

    gamma: float
    warmup_epochs: int = 0
    variables: str = "kernels"
    schedule: object = None

    def __post_init__(self):
        object.__setattr__(
            self, "gamma", validation.check_finite_at_least("gamma", self.gamma, 0.0)
        )
        validation.check_int_at_least("warmup_epochs", self.warmup_epochs, 0)
        if not isinstance(self.variables, str):
            raise TypeError(
                "Argument `variables` must be 'kernels', 'all' or a regular "
                f"expression string. Received: variables={self.variables!r}"
            )
        if self.variables not in VARIABLE_SELECTIONS:
            try:
                re.compile(self.variables)
            except re.error as error:
                raise ValueError(
                    "Argument `variables` must be 'kernels', 'all' or a valid "
                    f"regular expression ({error}). "
                    f"Received: variables={self.variables!r}"
                ) from None
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(
                "Argument `schedule` must be a callable epoch -> gamma or None. "
                f"Received: schedule={self.schedule!r}"
            )

    def gamma_at(self, epoch):
        """The gamma in force during `epoch` (0-based)."""
        epoch = validation.check_int_at_least("epoch", epoch, 0)
        if epoch < self.warmup_epochs:
            return 0.0
        if self.schedule is None:
            return self.gamma
        returned = self.schedule(epoch)
        value = None
        if returned is not None and not isinstance(returned, (str, bytes, bool)):
            try:
                value = float(np.asarray(returned))  # a NumPy or tensor scalar too
            except OverflowError:
                value = returned  # an integer too large for a float: refused below
            except (TypeError, ValueError):
                pass
        if value is None:
            raise TypeError(
                "AWP's `schedule` must return a number (the gamma) for every "
                f"epoch. Received: schedule({epoch})={returned!r}")
        return validation.check_finite_at_least(f"schedule({epoch})", value, 0.0)

    def get_config(self):
        if self.schedule is not None:
            raise ValueError(
                "An AWP with a `schedule` callable cannot be serialized; save "
                "the weights only, or set gamma from a callback instead. "
                f"Received: schedule={self.schedule!r}"
            )
        return {
            "gamma": self.gamma,
            "warmup_epochs": self.warmup_epochs,
            "variables": self.variables,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def select(self, trainable_variables):
        """The mask (list of bools) of the variables this AWP perturbs.

        Raises `ValueError` when the selection matches no variable.
        """
        mask = [_is_selected(v, self.variables) for v in trainable_variables]
        if not any(mask):
            raise ValueError(
                "Argument `variables` of AWP selects none of the model's "
                "trainable variables ("
                + ", ".join(v.path for v in trainable_variables[:8])
                + (", ..." if len(trainable_variables) > 8 else "")
                + f"). Received: variables={self.variables!r}"
            )
        return mask


def _is_selected(variable, selection):
    if selection == "all":
        return True
    if selection == "kernels":
        name = variable.path.rsplit("/", 1)[-1]
        return name == "kernel" or name.endswith("_kernel")
    return re.search(selection, variable.path) is not None


def layerwise_relative_perturbation(weights, gradients, gamma, mask):
    """v_l = gamma * ||w_l|| * g_l / ||g_l|| for each selected variable.

    Args:
        weights: list of weight tensors w_l.
        gradients: list of gradients g_l, aligned with `weights`.
        gamma: relative size, finite and >= 0: a Python or NumPy number
            (checked here) or a scalar tensor (inside a compiled step, where
            its value cannot be read; `AWP` checks the gamma it schedules).
        mask: list of bools, which variables to perturb.

    Returns:
        A list aligned with `weights`: the perturbation v_l where selected,
        `None` elsewhere, in the gradient's dtype (the norms of half-precision
        tensors are taken in float32). A zero gradient gives a zero
        perturbation.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.awp import layerwise_relative_perturbation
    >>> v = layerwise_relative_perturbation(
    ...     [np.array([3.0, 4.0])], [np.array([0.0, 2.0])], 0.1, [True])
    >>> np.round(keras.ops.convert_to_numpy(v[0]), 6).tolist()
    [0.0, 0.5]
    """
    if not len(weights) == len(gradients) == len(mask):
        raise ValueError(
            "Arguments `weights`, `gradients` and `mask` must be aligned (one "
            "entry per variable). Received: len(weights)="
            f"{len(weights)}, len(gradients)={len(gradients)}, len(mask)={len(mask)}"
        )
    if gamma is None or isinstance(gamma, (str, bytes, list, tuple, dict)):
        # A list broadcast into a perturbation on TensorFlow and failed on JAX.
        raise TypeError("Argument `gamma` must be a number or a scalar tensor. "
                        f"Received: gamma={gamma!r}")
    if isinstance(gamma, (numbers.Number, np.ndarray)):
        validation.check_finite_at_least("gamma", gamma, 0.0)
    perturbations = []
    for w, g, selected in zip(weights, gradients, mask, strict=True):
        if not selected or g is None:
            perturbations.append(None)
            continue
        index = len(perturbations)
        w = _floating_tensor(f"weights[{index}]", w)
        g = _floating_tensor(f"gradients[{index}]", g)
        if tuple(w.shape) != tuple(g.shape):
            raise ValueError(
                "Each gradient must have its weight's shape. Received: "
                f"weights[{index}].shape={tuple(w.shape)}, "
                f"gradients[{index}].shape={tuple(g.shape)}")
        dtype = keras.backend.standardize_dtype(g.dtype)
        if keras.backend.standardize_dtype(w.dtype) != dtype:
            # Only the weight's norm is used, and TensorFlow refuses to mix
            # float64 and float32 in the scale.
            w = ops.cast(w, dtype)
        if dtype in _HALF_PRECISION:
            # A float16 square overflows above 65504 (a norm over 256) and
            # flushes to zero below about 6e-8, and a bfloat16 sum keeps 8
            # bits: the norms and the scale are taken in float32.
            w, g = ops.cast(w, "float32"), ops.cast(g, "float32")
            gamma = ops.cast(gamma, "float32")
        w_norm = ops.sqrt(ops.sum(ops.square(w)))
        g_norm = ops.sqrt(ops.sum(ops.square(g)))
        # A zero gradient has no direction: no perturbation rather than 0/0.
        scale = ops.where(
            g_norm > 0, gamma * w_norm / ops.where(g_norm > 0, g_norm, 1.0), 0.0
        )
        v = ops.cast(scale, g.dtype) * g
        perturbations.append(ops.cast(v, dtype) if dtype in _HALF_PRECISION else v)
    return perturbations


_HALF_PRECISION = ("float16", "bfloat16")


def _floating_tensor(name, x):
    """`x` (a tensor, a variable, an array or nested lists) as something
    with a floating dtype: integer gradients gave a perturbation of zeros."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        raise TypeError(
            f"Argument `{name}` must have a floating-point dtype. Received: "
            f"{name} of dtype {keras.backend.standardize_dtype(x.dtype)}")
    return x


def zero_on_overflow(gradients):
    """`gradients` (the loss-scaled gradients at w, None for a variable
    without one) where all of them are finite, zeros where any is not.

    Under dynamic loss scaling (`keras.optimizers.LossScaleOptimizer`) the
    scaled gradients overflow now and then, by design: the optimizer then
    skips the step and halves the scale. With zero gradients AWP's
    perturbation is zero (an infinite gradient would make it NaN, and the
    step's loss with it), so the update's gradient is the gradient at w,
    which overflows in the same way: the optimizer skips the step, and its
    logs stay finite.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.awp import zero_on_overflow
    >>> finite = zero_on_overflow([np.array([1.0, 2.0]), None])
    >>> keras.ops.convert_to_numpy(finite[0]).tolist(), finite[1]
    ([1.0, 2.0], None)
    >>> overflowed = zero_on_overflow([np.array([1.0, 2.0]), np.array([np.inf])])
    >>> [keras.ops.convert_to_numpy(g).tolist() for g in overflowed]
    [[0.0, 0.0], [0.0]]
    """
    present = [g for g in gradients if g is not None]
    if not present:
        return list(gradients)
    finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in present]))
    return [None if g is None else ops.where(finite, g, ops.zeros_like(g))
            for g in gradients]
