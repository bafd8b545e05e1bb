"""The course's reference implementation of every graded function.

Each lesson asks the student to write a few functions with exactly these
names and signatures (instructors build on them). The tests of an exercise
that builds on earlier ones swap these in for the student's earlier
functions (`robustlab.course.grading.reference_for`), so one mistake costs
one exercise; the lessons also compare the student's results with them and
with the library (`robustlab.attacks.pgd`, `robustlab.data`).

They are written in NumPy, as plainly as the lessons explain them.
"""

import keras
import numpy as np

__all__ = [
    "RobustCheckpoint",
    "awp_perturbation",
    "best_and_final",
    "fgsm_linf",
    "flip_labels",
    "gaussian_kl",
    "heavy_ball_variance",
    "kl_inverse",
    "pac_bayes_bound",
    "pgd_linf",
    "pgd_linf_step",
    "pick_gamma",
    "power_iteration",
    "project_linf",
    "select_epoch",
    "stationary_variance",
]


# -- 00_pgd ---------------------------------------------------------------------


def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    """The point nearest to `x_adv` that is at most `eps` from `x` in every
    pixel and inside `value_range` (None: no range).

    >>> import numpy as np
    >>> from robustlab.course.exercises import project_linf
    >>> project_linf(np.array([0.9, -0.3, 0.55]), np.array([0.5, 0.0, 0.5]), 0.1).tolist()
    [0.6, 0.0, 0.55]
    """
    projected = np.clip(x_adv, x - eps, x + eps)
    if value_range is not None:
        projected = np.clip(projected, value_range[0], value_range[1])
    return projected


def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    """One L-inf PGD step: move every pixel by `step_size` in the direction
    of the sign of the loss gradient, then project back.

    >>> import numpy as np
    >>> from robustlab.course.exercises import pgd_linf_step
    >>> pgd_linf_step(np.array([0.5, 0.5]), np.array([2.0, -0.1]),
    ...               np.array([0.5, 0.5]), 0.1, 0.04).tolist()
    [0.54, 0.46]
    """
    return project_linf(x_adv + step_size * np.sign(grad), x, eps, value_range)


def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    """`steps` PGD steps from `x_init` (default: `x` itself), each at the
    gradient of the current iterate, `grad_fn(x_adv)`.

    >>> import numpy as np
    >>> from robustlab.course.exercises import pgd_linf
    >>> w = np.array([1.0, -1.0])
    >>> pgd_linf(lambda z: w, np.array([0.5, 0.5]), 0.1, 0.04, 5).round(6).tolist()
    [0.6, 0.4]
    """
    x_adv = x.copy() if x_init is None else project_linf(x_init, x, eps, value_range)
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv


def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    """The fast gradient sign method: one step of size `eps` from `x`.

    >>> import numpy as np
    >>> from robustlab.course.exercises import fgsm_linf
    >>> fgsm_linf(lambda z: np.array([3.0, -2.0]), np.array([0.95, 0.5]), 0.1).tolist()
    [1.0, 0.4]
    """
    return pgd_linf_step(x, grad_fn(x), x, eps, eps, value_range)


# -- 01_robust_overfitting ------------------------------------------------------


def flip_labels(y, fraction, num_classes, seed):
    """A copy of `y` with exactly `round(fraction * len(y))` labels replaced,
    each by a class drawn uniformly among the `num_classes - 1` others.

    >>> import numpy as np
    >>> from robustlab.course.exercises import flip_labels
    >>> noisy = flip_labels(np.zeros(10, int), 0.3, 4, seed=0)
    >>> int((noisy != 0).sum())
    3
    """
    y = np.asarray(y)
    noisy = y.copy()
    rng = np.random.default_rng(seed)
    count = round(fraction * len(y))
    chosen = rng.choice(len(y), size=count, replace=False)
    noisy[chosen] = (y[chosen] + rng.integers(1, num_classes, size=count)) % num_classes
    return noisy


def best_and_final(robust_accuracy, final_epochs=3):
    """(best, best_epoch, final, gap): the highest robust accuracy and its
    0-based epoch (the first, if tied), the mean of the last `final_epochs`
    (an int >= 1; 0 is refused, not read as `accuracy[-0:]`, which is every
    epoch), and best - final.

    >>> from robustlab.course.exercises import best_and_final
    >>> best, epoch, final, gap = best_and_final([0.5, 0.8, 0.7, 0.6, 0.6], 2)
    >>> best, epoch, final, round(gap, 6)
    (0.8, 1, 0.6, 0.2)
    """
    if isinstance(final_epochs, bool) or not isinstance(final_epochs, (int, np.integer)) \
            or final_epochs < 1:
        raise ValueError("final_epochs must be an int >= 1 (the number of last epochs to "
                         f"average). Received: final_epochs={final_epochs!r}")
    accuracy = np.asarray(robust_accuracy, dtype="float64")
    best_epoch = int(np.argmax(accuracy))
    best = float(accuracy[best_epoch])
    final = float(np.mean(accuracy[-final_epochs:]))
    return best, best_epoch, final, best - final


class RobustCheckpoint(keras.callbacks.Callback):
    """Keep the weights of the epoch with the highest `val_robust_accuracy`
    and put them back in the model when training ends.

    Attributes:
        best: the highest value seen (-inf before any epoch).
        best_epoch: its 0-based epoch (None before any epoch).
    """

    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor = monitor
        self.best = -np.inf
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if value > self.best:
            self.best = float(value)
            self.best_epoch = epoch
            self.best_weights = [np.copy(w) for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# -- 02_lr_drop_collapse ----------------------------------------------------------


def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    """(eigenvalue of largest magnitude, unit eigenvector) of the symmetric
    operator `hvp`, by power iteration from `v0`: at most `iterations`
    products, stopping once the Rayleigh quotient changes by at most `tol`
    times its size from one product to the next (so never after the first:
    a first quotient of 0 is no reason to stop).

    >>> import numpy as np
    >>> from robustlab.course.exercises import power_iteration
    >>> h = np.diag([3.0, -1.0, 0.5])
    >>> value, vector = power_iteration(lambda v: h @ v, np.ones(3))
    >>> round(value, 6), np.round(np.abs(vector), 3).tolist()
    (3.0, [1.0, 0.0, 0.0])
    >>> round(power_iteration(lambda v: np.array([[0.0, 2.0], [2.0, 3.0]]) @ v,
    ...                       np.array([1.0, 0.0]))[0], 6)  # v0 . H v0 = 0 at first
    4.0
    """
    v = np.asarray(v0, dtype="float64")
    v = v / np.linalg.norm(v)
    value, previous = 0.0, None  # no estimate before the first product to compare with
    for _ in range(iterations):
        w = np.asarray(hvp(v), dtype="float64")
        value = float(v @ w)
        norm = np.linalg.norm(w)
        if norm == 0.0:
            return 0.0, v
        v = w / norm
        if previous is not None and abs(value - previous) <= tol * abs(value):
            break
        previous = value
    return value, v


def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    """Var(x_t) after each step of x_{t+1} = x_t - eta_t (lambda x_t + xi_t)
    + beta (x_t - x_{t-1}), Var(xi_t) = s^2 / B, from x_0 = x_{-1} = 0
    (zero covariance): one value per learning rate in `lrs`.

    >>> from robustlab.course.exercises import heavy_ball_variance
    >>> heavy_ball_variance([0.1, 0.1], 0.0, 1.0, 4.0, 2).round(6).tolist()
    [0.02, 0.0362]
    """
    variance = covariance = previous = 0.0
    out = []
    for lr in np.asarray(lrs, dtype="float64"):
        a = 1.0 + momentum - lr * curvature
        new_variance = (a * a * variance - 2.0 * a * momentum * covariance
                        + momentum * momentum * previous
                        + lr * lr * noise_variance / batch_size)
        covariance = a * variance - momentum * covariance
        previous, variance = variance, new_variance
        out.append(variance)
    return np.asarray(out)


def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    """The stationary weight variance of heavy-ball SGD along one direction:
    eta s^2 (1 + beta) / (B lambda (1 - beta) (2 (1 + beta) - eta lambda)).

    >>> from robustlab.course.exercises import stationary_variance
    >>> round(stationary_variance(0.1, 0.0, 1.0, 4.0, 2), 6)  # 0.1 * 4 / (2 * 1.9)
    0.105263
    """
    return (lr * noise_variance * (1.0 + momentum)
            / (batch_size * curvature * (1.0 - momentum)
               * (2.0 * (1.0 + momentum) - lr * curvature)))


# -- 03_awp ---------------------------------------------------------------------


def awp_perturbation(weights, grads, gamma):
    """AWP's one-step layer-wise relative perturbation: for every layer l,
    v_l = gamma * ||w_l|| * g_l / ||g_l|| (zero where g_l is zero).

    >>> import numpy as np
    >>> from robustlab.course.exercises import awp_perturbation
    >>> [v.tolist() for v in awp_perturbation([np.array([3.0, 4.0]), np.ones(2)],
    ...                                        [np.array([0.0, 2.0]), np.zeros(2)], 0.1)]
    [[0.0, 0.5], [0.0, 0.0]]
    """
    out = []
    for w, g in zip(weights, grads):
        w, g = np.asarray(w, dtype="float64"), np.asarray(g, dtype="float64")
        norm = np.linalg.norm(g)
        out.append(np.zeros_like(g) if norm == 0 else gamma * np.linalg.norm(w) * g / norm)
    return out


def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    """The gamma with the smallest robust generalisation gap among those
    whose robust training accuracy is at most `tolerance` below the highest
    one of all gammas (the smaller gamma on a tie).

    >>> from robustlab.course.exercises import pick_gamma
    >>> pick_gamma([0.0, 0.005, 0.02], [0.08, 0.02, 0.0], [0.80, 0.79, 0.40])
    0.005
    """
    gammas = np.asarray(gammas, dtype="float64")
    gaps = np.asarray(gaps, dtype="float64")
    accuracies = np.asarray(train_accuracies, dtype="float64")
    allowed = accuracies >= accuracies.max() - tolerance
    candidates = np.flatnonzero(allowed)
    best = min(candidates, key=lambda i: (gaps[i], gammas[i]))
    return float(gammas[best])


# -- 04_pac_bayes ---------------------------------------------------------------


def gaussian_kl(mu_q, var_q, mu_p, var_p):
    """KL(N(mu_q, diag var_q) || N(mu_p, diag var_p)) in nats; `var_p` a
    scalar or an array.

    >>> import numpy as np
    >>> from robustlab.course.exercises import gaussian_kl
    >>> round(gaussian_kl(np.zeros(2), np.ones(2), np.zeros(2), 1.0), 12)
    0.0
    """
    mu_q, var_q, mu_p = (np.asarray(a, dtype="float64") for a in (mu_q, var_q, mu_p))
    var_p = np.broadcast_to(np.asarray(var_p, dtype="float64"), mu_q.shape)
    ratio = var_q / var_p
    return float(0.5 * np.sum(ratio + (mu_q - mu_p) ** 2 / var_p - 1.0 - np.log(ratio)))


def _kl_bernoulli(q, p):
    def term(a, b):
        return 0.0 if a == 0 else a * np.log(a / b)

    return term(q, p) + term(1.0 - q, 1.0 - p)


def kl_inverse(q, c):
    """The largest p in [q, 1] with kl(q || p) <= c (bisection).

    >>> from robustlab.course.exercises import kl_inverse
    >>> round(kl_inverse(0.0, 0.18), 6)  # 1 - exp(-0.18)
    0.16473
    """
    low, high = float(q), 1.0
    if _kl_bernoulli(q, 1.0 - 1e-15) <= c:
        return 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if _kl_bernoulli(q, middle) <= c:
            low = middle
        else:
            high = middle
    return low


def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    """The kl-inverse PAC-Bayes bound: kl_inverse(q, (KL + ln(2 sqrt(n) /
    delta)) / n).

    >>> import numpy as np
    >>> from robustlab.course.exercises import pac_bayes_bound
    >>> delta = 2 * np.sqrt(50) * np.exp(-5)
    >>> round(pac_bayes_bound(0.0, 4.0, 50, delta), 6)
    0.16473
    """
    return kl_inverse(empirical_risk, (kl + np.log(2.0 * np.sqrt(n) / delta)) / n)


def select_epoch(history, key):
    """The 0-based epoch that minimises `history[key]`, skipping NaN (the
    epochs a probe did not run); the first on a tie.

    >>> import numpy as np
    >>> from robustlab.course.exercises import select_epoch
    >>> select_epoch({"hessian_top_eig": [np.nan, 3.0, np.nan, 2.0, 2.5]}, "hessian_top_eig")
    3
    """
    return int(np.nanargmin(np.asarray(history[key], dtype="float64")))
