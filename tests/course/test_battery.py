"""The graded tests against a battery of submissions: for every exercise,
realistic wrong answers must fail its test cell with a plain-words
`AssertionError`, and correct answers written differently from the solution
must pass it.

The test cell's code (visible and hidden tests, as nbgrader runs it at
autograde) is executed in-process, in a namespace holding the notebook's
setup and the solution of every other exercise, with the submission's
version of the exercise in place of the solution's.
"""

import contextlib
import io
import textwrap

import pytest

from tests.course.conftest import REPO
from tests.course.conftest import cell_by_grade_id
from tests.course.conftest import notebook_path
from tests.course.conftest import read

pytestmark = pytest.mark.course

# (exercise, test cell, name, source, correct?)
BATTERY_00 = [
    # -- project_linf ---------------------------------------------------------
    ("project_linf", "test_project_linf", "project_linf crashes with value_range=None", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    return np.clip(np.clip(x_adv, x - eps, x + eps), *value_range)
""", False),
    ("project_linf", "test_project_linf", "forgets the value range", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    return np.clip(x_adv, x - eps, x + eps)
""", False),
    ("project_linf", "test_project_linf", "ignores value_range, always [0, 1]", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    return np.clip(np.clip(x_adv, x - eps, x + eps), 0.0, 1.0)
""", False),
    ("project_linf", "test_project_linf", "a box around x_adv instead of x", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    p = np.clip(x_adv, x_adv - eps, x_adv + eps)
    return p if value_range is None else np.clip(p, *value_range)
""", False),
    ("project_linf", "test_project_linf", "pushes every pixel to the boundary", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    p = x + eps * np.sign(x_adv - x)
    return p if value_range is None else np.clip(p, *value_range)
""", False),
    ("project_linf", "test_project_linf", "a box of half the size", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    p = np.clip(x_adv, x - eps / 2, x + eps / 2)
    return p if value_range is None else np.clip(p, *value_range)
""", False),
    ("project_linf", "test_project_linf", "clips x in place", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    lo, hi = x - eps, x + eps
    np.clip(x_adv, lo, hi, out=x)
    return x if value_range is None else np.clip(x, *value_range, out=x)
""", False),
    ("project_linf", "test_project_linf", "value range first, then the box", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    if value_range is not None:
        x_adv = np.clip(x_adv, value_range[0], value_range[1])
    return np.clip(x_adv, x - eps, x + eps)
""", True),
    ("project_linf", "test_project_linf", "the bounds of the intersection", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    low, high = x - eps, x + eps
    if value_range:
        low, high = np.maximum(low, value_range[0]), np.minimum(high, value_range[1])
    return np.minimum(np.maximum(x_adv, low), high)
""", True),
    ("project_linf", "test_project_linf", "delta clipped, then added", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    delta = np.clip(x_adv - x, -eps, eps)
    out = x + delta
    if value_range is not None:
        out = np.clip(out, *value_range)
    return out
""", True),
    ("project_linf", "test_project_linf", "float32 (the images' dtype)", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    out = np.clip(x_adv, x - eps, x + eps).astype(np.float32)
    if value_range is not None:
        out = np.clip(out, value_range[0], value_range[1])
    return out
""", True),
    ("project_linf", "test_project_linf", "clips x_adv in place (out=x_adv)", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    np.clip(x_adv, x - eps, x + eps, out=x_adv)
    if value_range is not None:
        np.clip(x_adv, *value_range, out=x_adv)
    return x_adv
""", False),
    ("project_linf", "test_project_linf", "clips a copy in place (out=)", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    out = np.array(x_adv, dtype=float, copy=True)
    np.clip(out, x - eps, x + eps, out=out)
    if value_range is not None:
        np.clip(out, value_range[0], value_range[1], out=out)
    return out
""", True),
    # -- pgd_linf_step --------------------------------------------------------
    ("pgd_linf_step", "test_pgd_linf_step", "steps along the raw gradient", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv + step_size * grad, x, eps, value_range)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "descends instead of ascending", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv - step_size * np.sign(grad), x, eps, value_range)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "forgets to project", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return x_adv + step_size * np.sign(grad)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "projects around x_adv", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv + step_size * np.sign(grad), x_adv, eps, value_range)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "drops value_range", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv + step_size * np.sign(grad), x, eps)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "normalises the gradient (an L2 step)", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv + step_size * grad / np.linalg.norm(grad), x, eps, value_range)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "updates x_adv in place", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    x_adv += step_size * np.sign(grad)
    return project_linf(x_adv, x, eps, value_range)
""", False),
    ("pgd_linf_step", "test_pgd_linf_step", "inline, with np.where for the sign", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    direction = np.where(grad > 0, 1.0, np.where(grad < 0, -1.0, 0.0))
    moved = np.clip(x_adv + step_size * direction, x - eps, x + eps)
    return moved if value_range is None else np.clip(moved, value_range[0], value_range[1])
""", True),
    ("pgd_linf_step", "test_pgd_linf_step", "keyword arguments", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    stepped = x_adv + np.sign(grad) * step_size
    return project_linf(x_adv=stepped, x=x, eps=eps, value_range=value_range)
""", True),
    ("pgd_linf_step", "test_pgd_linf_step", "a float32 step", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    s = np.sign(grad).astype(np.float32)
    return project_linf((x_adv + step_size * s).astype(np.float32), x, eps, value_range)
""", True),
    ("pgd_linf_step", "test_pgd_linf_step", "keras.ops, returns a tensor", """
def pgd_linf_step(x_adv, grad, x, eps, step_size, value_range=(0.0, 1.0)):
    return project_linf(x_adv + step_size * keras.ops.sign(grad), x, eps, value_range)
""", True),
    # -- fgsm_linf ------------------------------------------------------------
    ("fgsm_linf", "test_fgsm_linf", "half a step", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return pgd_linf_step(x, grad_fn(x), x, eps, eps / 2, value_range)
""", False),
    ("fgsm_linf", "test_fgsm_linf", "the raw gradient, no sign", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return project_linf(x + eps * grad_fn(x), x, eps, value_range)
""", False),
    ("fgsm_linf", "test_fgsm_linf", "forgets to project", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return x + eps * np.sign(grad_fn(x))
""", False),
    ("fgsm_linf", "test_fgsm_linf", "a random start first", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    start = project_linf(x + np.random.uniform(-eps, eps, x.shape), x, eps, value_range)
    return pgd_linf_step(start, grad_fn(start), x, eps, eps, value_range)
""", False),
    ("fgsm_linf", "test_fgsm_linf", "drops value_range", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return pgd_linf_step(x, grad_fn(x), x, eps, eps)
""", False),
    ("fgsm_linf", "test_fgsm_linf", "inline", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    out = x + eps * np.sign(grad_fn(x))
    if value_range is not None:
        out = np.clip(out, *value_range)
    return out
""", True),
    ("fgsm_linf", "test_fgsm_linf", "one step of the student's PGD", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return pgd_linf(grad_fn, x, eps, eps, 1, value_range)
""", True),
    ("fgsm_linf", "test_fgsm_linf", "crashes with value_range=None", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return np.clip(x + eps * np.sign(grad_fn(x)), *value_range)
""", False),
    ("fgsm_linf", "test_fgsm_linf", "in float32", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    x32 = np.asarray(x, np.float32)
    out = x32 + np.float32(eps) * np.sign(grad_fn(x)).astype(np.float32)
    out = np.clip(out, x32 - np.float32(eps), x32 + np.float32(eps))
    return out if value_range is None else np.clip(out, *value_range)
""", True),
    # A list passed the tests, then every later cell that gives the attacked
    # images to the model failed inside Keras.
    ("fgsm_linf", "test_fgsm_linf", "returns a list", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return pgd_linf_step(x, grad_fn(x), x, eps, eps, value_range).tolist()
""", False),
    ("fgsm_linf", "test_fgsm_linf", "writes into x", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    x_adv = x
    x_adv += eps * np.sign(grad_fn(x))
    if value_range is not None:
        np.clip(x_adv, *value_range, out=x_adv)
    return x_adv
""", False),
    ("fgsm_linf", "test_fgsm_linf", "calls grad_fn by keyword, grad_fn(z=x)", """
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    return pgd_linf_step(x, grad_fn(z=x), x, eps, eps, value_range)
""", True),
    # -- pgd_linf -------------------------------------------------------------
    ("pgd_linf", "test_pgd_linf", "every gradient at the clean image", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x), x, eps, step_size, value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "one step too many", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(steps + 1):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "one step too few", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(1, steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "ignores x_init", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy()
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "projects only at the end", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(steps):
        x_adv = x_adv + step_size * np.sign(grad_fn(x_adv))
    return project_linf(x_adv, x, eps, value_range)
""", False),
    ("pgd_linf", "test_pgd_linf", "drops value_range", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "inline, with a while loop", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    current = np.array(x if x_init is None else x_init, dtype=float)
    done = 0
    while done < steps:
        current = np.clip(current + step_size * np.sign(grad_fn(current)), x - eps, x + eps)
        if value_range is not None:
            current = np.clip(current, *value_range)
        done += 1
    return current
""", True),
    ("pgd_linf", "test_pgd_linf", "projects x_init first", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x if x_init is None else project_linf(x_init, x, eps, value_range)
    for step in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv
""", True),
    ("pgd_linf", "test_pgd_linf", "projects around x_init instead of x", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    if x_init is not None:
        x = x_init
    x_adv = x.copy()
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "changes x_init in place", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init
    for _ in range(steps):
        x_adv += step_size * np.sign(grad_fn(x_adv))
        np.clip(x_adv, x - eps, x + eps, out=x_adv)
        if value_range is not None:
            np.clip(x_adv, *value_range, out=x_adv)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "clips into x_init (out=)", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init
    for _ in range(steps):
        np.clip(x_adv + step_size * np.sign(grad_fn(x_adv)), x - eps, x + eps, out=x_adv)
        if value_range is not None:
            x_adv = np.clip(x_adv, *value_range)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "in place on a private copy", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, dtype=float, copy=True)
    for _ in range(steps):
        x_adv += step_size * np.sign(grad_fn(x_adv))
        np.clip(x_adv, x - eps, x + eps, out=x_adv)
        if value_range is not None:
            np.clip(x_adv, value_range[0], value_range[1], out=x_adv)
    return x_adv
""", True),
    ("pgd_linf", "test_pgd_linf", "iterates kept in float32", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, dtype=np.float32)
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range).astype(np.float32)
    return x_adv
""", True),
    ("pgd_linf", "test_pgd_linf", "returns a list", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, copy=True)
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, value_range)
    return x_adv.tolist()
""", False),
    ("pgd_linf", "test_pgd_linf", "the value range only once, after the last step", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, copy=True)
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x_adv), x, eps, step_size, None)
    return x_adv if value_range is None else np.clip(x_adv, *value_range)
""", False),
    ("pgd_linf", "test_pgd_linf", "writes into x when x_init is None", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x if x_init is None else x_init.copy()
    low, high = x.copy() - eps, x.copy() + eps
    for _ in range(steps):
        x_adv += step_size * np.sign(grad_fn(x_adv))
        np.clip(x_adv, low, high, out=x_adv)
        if value_range is not None:
            np.clip(x_adv, *value_range, out=x_adv)
    return x_adv
""", False),
    ("pgd_linf", "test_pgd_linf", "keras.ops iterates", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = keras.ops.convert_to_tensor(x if x_init is None else x_init)
    for _ in range(steps):
        x_adv = keras.ops.clip(x_adv + step_size * keras.ops.sign(grad_fn(x_adv)), x - eps, x + eps)
        if value_range is not None:
            x_adv = keras.ops.clip(x_adv, value_range[0], value_range[1])
    return x_adv
""", True),
    ("pgd_linf", "test_pgd_linf", "calls grad_fn by keyword, grad_fn(z=x_adv)", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, copy=True)
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(z=x_adv), x, eps, step_size, value_range)
    return x_adv
""", True),
    # Projects only to take the gradient: the steps pile up on the unprojected
    # iterate. It differs from PGD once an iterate meets the box and turns back.
    ("pgd_linf", "test_pgd_linf", "lazy projection", """
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = np.array(x if x_init is None else x_init, dtype=float)
    for _ in range(steps):
        g = grad_fn(project_linf(x_adv, x, eps, value_range))
        x_adv = x_adv + step_size * np.sign(g)
    return project_linf(x_adv, x, eps, value_range)
""", False),
]

BATTERY_01 = [
    # -- flip_labels ----------------------------------------------------------
    ("flip_labels", "test_flip_labels", "the new class may be the old one", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    noisy = np.array(y, copy=True)
    positions = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    noisy[positions] = rng.integers(0, num_classes, size=len(positions))
    return noisy
""", False),
    ("flip_labels", "test_flip_labels", "positions drawn with repetition", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    noisy = np.array(y, copy=True)
    positions = rng.integers(0, len(y), size=round(fraction * len(y)))
    noisy[positions] = (noisy[positions] + rng.integers(1, num_classes, size=len(positions))) % num_classes
    return noisy
""", False),
    ("flip_labels", "test_flip_labels", "rounds down", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    noisy = np.array(y, copy=True)
    positions = rng.choice(len(y), size=int(fraction * len(y)), replace=False)
    noisy[positions] = (noisy[positions] + rng.integers(1, num_classes, size=len(positions))) % num_classes
    return noisy
""", False),
    ("flip_labels", "test_flip_labels", "always the next class", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    noisy = np.array(y, copy=True)
    positions = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    noisy[positions] = (noisy[positions] + 1) % num_classes
    return noisy
""", False),
    ("flip_labels", "test_flip_labels", "flips in place", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    positions = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    y[positions] = (y[positions] + rng.integers(1, num_classes, size=len(positions))) % num_classes
    return y
""", False),
    ("flip_labels", "test_flip_labels", "ignores the seed", """
def flip_labels(y, fraction, num_classes, seed):
    noisy = np.array(y, copy=True)
    positions = np.random.choice(len(y), size=round(fraction * len(y)), replace=False)
    noisy[positions] = (noisy[positions] + np.random.randint(1, num_classes, size=len(positions))) % num_classes
    return noisy
""", False),
    ("flip_labels", "test_flip_labels", "a permutation, then skip the own class", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    noisy = y.copy()
    for i in rng.permutation(len(y))[:round(fraction * len(y))]:
        new = rng.integers(0, num_classes - 1)
        noisy[i] = new + (new >= y[i])
    return noisy
""", True),
    ("flip_labels", "test_flip_labels", "a boolean mask of flipped positions", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    mask = np.zeros(len(y), dtype=bool)
    mask[rng.choice(len(y), round(fraction * len(y)), replace=False)] = True
    others = np.array([[c for c in range(num_classes) if c != k] for k in range(num_classes)])
    picks = rng.integers(0, num_classes - 1, size=mask.sum())
    out = y.copy()
    out[mask] = others[y[mask], picks]
    return out
""", True),
    ("flip_labels", "test_flip_labels", "ceil instead of round", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    count = int(np.ceil(fraction * len(y)))
    pos = rng.choice(len(y), size=count, replace=False)
    out = y.copy()
    out[pos] = (y[pos] + rng.integers(1, num_classes, size=count)) % num_classes
    return out
""", False),
    ("flip_labels", "test_flip_labels", "round(fraction * n) in every class", """
def flip_labels(y, fraction, num_classes, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    out = y.copy()
    for k in range(num_classes):
        where = np.flatnonzero(y == k)
        pos = rng.choice(where, size=round(fraction * len(where)), replace=False)
        out[pos] = (k + rng.integers(1, num_classes, size=len(pos))) % num_classes
    return out
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "best starts at 0", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, 0.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.saved is not None:
            self.model.set_weights(self.saved)
""", False),
    # -- RobustCheckpoint -----------------------------------------------------
    ("RobustCheckpoint", "test_RobustCheckpoint", "keeps the variables, not copies", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.weights

    def on_train_end(self, logs=None):
        if self.saved is not None:
            self.model.set_weights([v.numpy() for v in self.saved])
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "a tie replaces the best", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value >= self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.saved is not None:
            self.model.set_weights(self.saved)
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "never restores", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        pass
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "restores at every epoch", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()
        if self.saved is not None:
            self.model.set_weights(self.saved)

    def on_train_end(self, logs=None):
        pass
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "crashes on an epoch without validation", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs[self.monitor] > self.best:
            self.best, self.best_epoch, self.saved = logs[self.monitor], epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.saved is not None:
            self.model.set_weights(self.saved)
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "copies of the variables, reset at train begin", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor = monitor
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.saved = -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor in logs and float(logs[self.monitor]) > self.best:
            self.best = float(logs[self.monitor])
            self.best_epoch = epoch
            self.saved = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in self.model.weights]

    def on_train_end(self, logs=None):
        if self.saved:
            for variable, value in zip(self.model.weights, self.saved):
                variable.assign(value)
""", True),
    ("RobustCheckpoint", "test_RobustCheckpoint", "a dict of weights by epoch", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.kept = monitor, -np.inf, None, {}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor, -np.inf)
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            self.kept = {epoch: [w.copy() for w in self.model.get_weights()]}

    def on_train_end(self, logs=None):
        if self.best_epoch is not None:
            self.model.set_weights(self.kept[self.best_epoch])
""", True),
    ("RobustCheckpoint", "test_RobustCheckpoint", "skips an accuracy of 0.0 (a truthiness test)", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.saved is not None:
            self.model.set_weights(self.saved)
""", False),
    ("RobustCheckpoint", "test_RobustCheckpoint", "restores only if best_epoch is truthy", """
class RobustCheckpoint(keras.callbacks.Callback):
    def __init__(self, monitor="val_robust_accuracy"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.saved = monitor, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch, self.saved = value, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_epoch:
            self.model.set_weights(self.saved)
""", False),
    # -- best_and_final -------------------------------------------------------
    ("best_and_final", "test_best_and_final", "final is the last value", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, float)
    i = int(np.argmax(a))
    return float(a[i]), i, float(a[-1]), float(a[i] - a[-1])
""", False),
    ("best_and_final", "test_best_and_final", "epochs counted from 1", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, float)
    i = int(np.argmax(a))
    final = float(a[-final_epochs:].mean())
    return float(a[i]), i + 1, final, float(a[i]) - final
""", False),
    ("best_and_final", "test_best_and_final", "gap the wrong way round", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, float)
    i = int(np.argmax(a))
    final = float(a[-final_epochs:].mean())
    return float(a[i]), i, final, final - float(a[i])
""", False),
    ("best_and_final", "test_best_and_final", "the last of equal bests", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, float)
    i = len(a) - 1 - int(np.argmax(a[::-1]))
    final = float(a[-final_epochs:].mean())
    return float(a[i]), i, final, float(a[i]) - final
""", False),
    ("best_and_final", "test_best_and_final", "pure Python", """
def best_and_final(robust_accuracy, final_epochs=3):
    values = [float(v) for v in robust_accuracy]
    best = max(values)
    tail = values[len(values) - final_epochs:]
    final = sum(tail) / len(tail)
    return best, values.index(best), final, best - final
""", True),
    ("best_and_final", "test_best_and_final", "nanargmax and a slice mean", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.array(robust_accuracy, dtype=np.float64)
    epoch = np.nanargmax(a)
    final = np.mean(a[len(a) - final_epochs:])
    return a[epoch].item(), int(epoch), float(final), float(a[epoch] - final)
""", True),
    ("best_and_final", "test_best_and_final", "a float32 array", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, dtype=np.float32)
    i = int(np.argmax(a))
    final = float(a[-final_epochs:].mean())
    return float(a[i]), i, final, float(a[i]) - final
""", True),
    ("best_and_final", "test_best_and_final", "best_epoch: every epoch at the best", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, dtype=float)
    best_epoch = np.flatnonzero(a == a.max())
    final = float(a[-final_epochs:].mean())
    return float(a.max()), best_epoch, final, float(a.max()) - final
""", False),
    ("best_and_final", "test_best_and_final", "best_epoch as a NumPy integer", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, dtype=float)
    i = np.argmax(a)
    final = float(np.mean(a[-final_epochs:]))
    return float(a[i]), i, final, float(a[i]) - final
""", True),
    ("best_and_final", "test_best_and_final", "the last 3, whatever final_epochs", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, dtype=float)
    i = int(np.argmax(a))
    final = float(a[-3:].mean())
    return float(a[i]), i, final, float(a[i]) - final
""", False),
]

BATTERY_02 = [
    # -- power_iteration ------------------------------------------------------
    ("power_iteration", "test_power_iteration", "the norm of Hv, sign lost", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = v0 / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        new = np.linalg.norm(w)
        v = w / new
        if abs(new - value) <= tol * abs(new):
            return new, v
        value = new
    return value, v
""", False),
    ("power_iteration", "test_power_iteration", "never normalises", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.array(v0, dtype=float)
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        new = float(v @ w) / float(v @ v)
        v = w
        if abs(new - value) <= tol * abs(new):
            break
        value = new
    return new, v
""", False),
    ("power_iteration", "test_power_iteration", "ignores tol", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = v0 / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        value = float(v @ w)
        v = w / np.linalg.norm(w)
    return value, v
""", False),
    ("power_iteration", "test_power_iteration", "returns Hv, not a unit vector", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = v0 / np.linalg.norm(v0)
    value, w = 0.0, v
    for _ in range(iterations):
        w = hvp(v)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        if abs(new - value) <= tol * abs(new):
            value = new
            break
        value = new
    return value, w
""", False),
    ("power_iteration", "test_power_iteration", "signed norm, residual stop", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, float) / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        value = float(np.sign(v @ w) * np.linalg.norm(w))
        if np.linalg.norm(w - value * v) <= tol * abs(value):
            break
        v = w / np.linalg.norm(w)
    return value, v
""", True),
    ("power_iteration", "test_power_iteration", "a while loop with a counter", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.array(v0, dtype=np.float64, copy=True)
    v /= np.sqrt(np.sum(v * v))
    previous, count = None, 0
    while count < iterations:
        hv = hvp(v)
        count += 1
        estimate = np.dot(v, hv)
        v = hv / np.sqrt(np.sum(hv * hv))
        if previous is not None and abs(estimate - previous) <= tol * abs(estimate):
            break
        previous = estimate
    return float(estimate), v
""", True),
    ("power_iteration", "test_power_iteration", "stops only when two estimates are equal", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, float) / np.linalg.norm(v0)
    value = None
    for _ in range(iterations):
        w = hvp(v)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        if new == value:
            break
        value = new
    return new, v
""", False),
    ("power_iteration", "test_power_iteration", "an absolute tolerance", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, float) / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        done = abs(new - value) <= tol
        value = new
        if done:
            break
    return value, v
""", False),
    ("power_iteration", "test_power_iteration", "in float32", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, dtype=np.float32)
    v = v / np.linalg.norm(v)
    value = 0.0
    for _ in range(iterations):
        w = np.asarray(hvp(v), dtype=np.float32)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        if abs(new - value) <= tol * abs(new):
            value = new
            break
        value = new
    return value, v
""", True),
    ("power_iteration", "test_power_iteration", "the eigenvector as a list", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, dtype=float) / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = np.asarray(hvp(v), dtype=float)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        done = abs(new - value) <= tol * abs(new)
        value = new
        if done:
            break
    return value, v.tolist()
""", True),
    ("power_iteration", "test_power_iteration", "calls hvp by keyword, hvp(v=v)", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, dtype=float)
    v = v / np.linalg.norm(v)
    value = None
    for _ in range(iterations):
        w = np.asarray(hvp(v=v), dtype=float)
        new = float(v @ w)
        v = w / np.linalg.norm(w)
        if value is not None and abs(new - value) <= tol * abs(new):
            value = new
            break
        value = new
    return value, v
""", True),
    # Compares the vectors: with a negative top eigenvalue the vector changes
    # sign every step, so it never stops.
    ("power_iteration", "test_power_iteration", "stops when the vector stops changing", """
def power_iteration(hvp, v0, iterations=100, tol=1e-6):
    v = np.asarray(v0, dtype=float) / np.linalg.norm(v0)
    value = 0.0
    for _ in range(iterations):
        w = np.asarray(hvp(v), dtype=float)
        value = float(v @ w)
        new = w / np.linalg.norm(w)
        done = np.linalg.norm(new - v) <= tol
        v = new
        if done:
            break
    return value, v
""", False),
    # -- heavy_ball_variance --------------------------------------------------
    ("heavy_ball_variance", "test_heavy_ball_variance", "forgets the batch size", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    for lr in lrs:
        a = 1 + momentum - lr * curvature
        p, c, r = a * a * p - 2 * a * momentum * c + momentum**2 * r + lr**2 * noise_variance, a * p - momentum * c, p
        out.append(p)
    return np.array(out)
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "eta instead of eta squared", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    for lr in lrs:
        a = 1 + momentum - lr * curvature
        p, c, r = a * a * p - 2 * a * momentum * c + momentum**2 * r + lr * noise_variance / batch_size, a * p - momentum * c, p
        out.append(p)
    return np.array(out)
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "drops the covariance", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = r = 0.0
    out = []
    for lr in lrs:
        a = 1 + momentum - lr * curvature
        p, r = a * a * p + momentum**2 * r + lr**2 * noise_variance / batch_size, p
        out.append(p)
    return np.array(out)
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "includes the starting zero", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = [0.0]
    for lr in lrs[:-1]:
        a = 1 + momentum - lr * curvature
        p, c, r = a * a * p - 2 * a * momentum * c + momentum**2 * r + lr**2 * noise_variance / batch_size, a * p - momentum * c, p
        out.append(p)
    return np.array(out)
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "the 2x2 covariance matrix", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    cov = np.zeros((2, 2))
    out = []
    for lr in lrs:
        A = np.array([[1 + momentum - lr * curvature, -momentum], [1.0, 0.0]])
        cov = A @ cov @ A.T
        cov[0, 0] += lr**2 * noise_variance / batch_size
        out.append(cov[0, 0])
    return np.array(out)
""", True),
    ("heavy_ball_variance", "test_heavy_ball_variance", "robustlab's recursion", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    return robustlab.posterior.covariance_recursion(np.asarray(lrs, float), momentum, curvature,
                                                    noise_variance, batch_size)
""", True),
    ("heavy_ball_variance", "test_heavy_ball_variance", "in float32", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = np.float32(0)
    out = []
    for lr in np.asarray(lrs, dtype=np.float32):
        a = np.float32(1 + momentum) - lr * np.float32(curvature)
        p, c, r = a * a * p - 2 * a * np.float32(momentum) * c + np.float32(momentum) ** 2 * r + lr * lr * np.float32(noise_variance / batch_size), a * p - np.float32(momentum) * c, p
        out.append(p)
    return np.array(out)
""", True),
    ("heavy_ball_variance", "test_heavy_ball_variance", "the right variances plus 5j", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    for lr in np.asarray(lrs, dtype=float):
        a = 1.0 + momentum - lr * curvature
        p, c, r = (a * a * p - 2.0 * a * momentum * c + momentum**2 * r
                   + lr**2 * noise_variance / batch_size, a * p - momentum * c, p)
        out.append(p)
    return np.array(out) + 5j
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "returns a float64 keras tensor", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    for lr in np.asarray(lrs, dtype=float):
        a = 1.0 + momentum - lr * curvature
        p, c, r = (a * a * p - 2.0 * a * momentum * c + momentum**2 * r
                   + lr**2 * noise_variance / batch_size, a * p - momentum * c, p)
        out.append(p)
    return keras.ops.convert_to_tensor(out, dtype="float64")
""", True),
    ("heavy_ball_variance", "test_heavy_ball_variance", "the covariance without its momentum term", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    for lr in lrs:
        a = 1 + momentum - lr * curvature
        p, c, r = (a * a * p - 2 * a * momentum * c + momentum**2 * r + lr**2 * noise_variance / batch_size,
                   a * p - momentum * r, p)
        out.append(p)
    return np.array(out)
""", False),
    ("heavy_ball_variance", "test_heavy_ball_variance", "the previous step's learning rate in a", """
def heavy_ball_variance(lrs, momentum, curvature, noise_variance, batch_size):
    p = c = r = 0.0
    out = []
    previous = lrs[0]
    for lr in lrs:
        a = 1 + momentum - previous * curvature
        p, c, r = (a * a * p - 2 * a * momentum * c + momentum**2 * r + lr**2 * noise_variance / batch_size,
                   a * p - momentum * c, p)
        out.append(p)
        previous = lr
    return np.array(out)
""", False),
    # -- stationary_variance --------------------------------------------------
    ("stationary_variance", "test_stationary_variance", "the small-step approximation", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return lr * noise_variance / (2 * batch_size * curvature * (1 - momentum))
""", False),
    ("stationary_variance", "test_stationary_variance", "without the (1 + beta)", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return lr * noise_variance / (batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature))
""", False),
    ("stationary_variance", "test_stationary_variance", "(1 - beta) squared", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return lr * noise_variance * (1 + momentum) / (batch_size * curvature * (1 - momentum)**2 * (2 * (1 + momentum) - lr * curvature))
""", False),
    ("stationary_variance", "test_stationary_variance", "solves the Lyapunov equation", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    from scipy.linalg import solve_discrete_lyapunov
    A = np.array([[1 + momentum - lr * curvature, -momentum], [1.0, 0.0]])
    Q = np.array([[lr**2 * noise_variance / batch_size, 0.0], [0.0, 0.0]])
    return float(solve_discrete_lyapunov(A, Q)[0, 0])
""", True),
    ("stationary_variance", "test_stationary_variance", "rearranged", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    el = lr * curvature
    return (noise_variance / batch_size) * (lr / curvature) * (1 + momentum) / ((1 - momentum) * (2 + 2 * momentum - el))
""", True),
    ("stationary_variance", "test_stationary_variance", "in float32", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    lr, b, lam, s2, B = (np.float32(v) for v in (lr, momentum, curvature, noise_variance, batch_size))
    return float(lr * s2 * (1 + b) / (B * lam * (1 - b) * (2 * (1 + b) - lr * lam)))
""", True),
    ("stationary_variance", "test_stationary_variance", "the right number, 7 times", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return np.full(7, lr * noise_variance * (1 + momentum) / (batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature)))
""", False),
    ("stationary_variance", "test_stationary_variance", "an empty array", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return np.array([])
""", False),
    ("stationary_variance", "test_stationary_variance", "the right number as text", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return repr(lr * noise_variance * (1 + momentum) / (batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature)))
""", False),
    ("stationary_variance", "test_stationary_variance", "the right number plus 3j", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return np.complex128(lr * noise_variance * (1 + momentum) / (batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature)) + 3j)
""", False),
    ("stationary_variance", "test_stationary_variance", "a one-element array", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return np.array([lr * noise_variance * (1 + momentum) / (batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature))])
""", True),
    ("stationary_variance", "test_stationary_variance", "keras.ops, a 0-d tensor", """
def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    return keras.ops.divide(lr * noise_variance * (1 + momentum),
                            batch_size * curvature * (1 - momentum) * (2 * (1 + momentum) - lr * curvature))
""", True),
]

BATTERY_03 = [
    # -- awp_perturbation -----------------------------------------------------
    ("awp_perturbation", "test_awp_perturbation", "one norm over all layers", """
def awp_perturbation(weights, grads, gamma):
    w_norm = np.sqrt(sum(np.sum(np.square(w)) for w in weights))
    g_norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads))
    return [gamma * w_norm * np.asarray(g, float) / g_norm if g_norm else np.zeros_like(g) for g in grads]
""", False),
    ("awp_perturbation", "test_awp_perturbation", "forgets ||w||", """
def awp_perturbation(weights, grads, gamma):
    return [np.zeros_like(g, dtype=float) if not np.any(g) else gamma * g / np.linalg.norm(g) for g in grads]
""", False),
    ("awp_perturbation", "test_awp_perturbation", "elementwise w times sign of g", """
def awp_perturbation(weights, grads, gamma):
    return [gamma * np.abs(w) * np.sign(g) for w, g in zip(weights, grads)]
""", False),
    ("awp_perturbation", "test_awp_perturbation", "no guard for a zero gradient", """
def awp_perturbation(weights, grads, gamma):
    with np.errstate(invalid="ignore", divide="ignore"):
        return [gamma * np.linalg.norm(w) * g / np.linalg.norm(g) for w, g in zip(weights, grads)]
""", False),
    ("awp_perturbation", "test_awp_perturbation", "downhill", """
def awp_perturbation(weights, grads, gamma):
    out = []
    for w, g in zip(weights, grads):
        n = np.linalg.norm(g)
        out.append(np.zeros_like(g, dtype=float) if n == 0 else -gamma * np.linalg.norm(w) * g / n)
    return out
""", False),
    ("awp_perturbation", "test_awp_perturbation", "explicit square roots", """
def awp_perturbation(weights, grads, gamma):
    result = []
    for w, g in zip(weights, grads):
        g = np.array(g, dtype=np.float64)
        size = np.sqrt((g * g).sum())
        scale = 0.0 if size == 0 else gamma * np.sqrt((np.asarray(w) ** 2).sum()) / size
        result.append(scale * g)
    return result
""", True),
    ("awp_perturbation", "test_awp_perturbation", "robustlab's function", """
def awp_perturbation(weights, grads, gamma):
    v = robustlab.awp.layerwise_relative_perturbation(
        [np.asarray(w, float) for w in weights], [np.asarray(g, float) for g in grads], gamma,
        [True] * len(weights))
    return [np.asarray(keras.ops.convert_to_numpy(x), float) for x in v]
""", True),
    ("awp_perturbation", "test_awp_perturbation", "in float32", """
def awp_perturbation(weights, grads, gamma):
    out = []
    for w, g in zip(weights, grads):
        w, g = np.asarray(w, np.float32), np.asarray(g, np.float32)
        n = np.linalg.norm(g)
        out.append(np.zeros_like(g) if n == 0 else gamma * np.linalg.norm(w) * g / n)
    return out
""", True),
    ("awp_perturbation", "test_awp_perturbation", "+1e-12 in the denominator", """
def awp_perturbation(weights, grads, gamma):
    return [gamma * np.linalg.norm(w) * g / (np.linalg.norm(g) + 1e-12) for w, g in zip(weights, grads)]
""", True),
    ("awp_perturbation", "test_awp_perturbation", "+1e-20 in the denominator (AWP's code)", """
def awp_perturbation(weights, grads, gamma):
    return [gamma * np.linalg.norm(w) * g / (np.linalg.norm(g) + 1e-20) for w, g in zip(weights, grads)]
""", True),
    ("awp_perturbation", "test_awp_perturbation", "norms per row of a kernel", """
def awp_perturbation(weights, grads, gamma):
    out = []
    for w, g in zip(weights, grads):
        wn = np.linalg.norm(w, axis=-1, keepdims=True) if np.ndim(w) > 1 else np.linalg.norm(w)
        gn = np.linalg.norm(g, axis=-1, keepdims=True) if np.ndim(g) > 1 else np.linalg.norm(g)
        out.append(np.where(gn > 0, gamma * wn * g / np.where(gn > 0, gn, 1), 0.0))
    return out
""", False),
    ("awp_perturbation", "test_awp_perturbation", "zeroes gradients of norm below 1e-6", """
def awp_perturbation(weights, grads, gamma):
    out = []
    for w, g in zip(weights, grads):
        n = np.linalg.norm(g)
        out.append(np.zeros_like(g, dtype=float) if n < 1e-6 else gamma * np.linalg.norm(w) * g / n)
    return out
""", False),
    ("awp_perturbation", "test_awp_perturbation", "one gradient norm over all layers", """
def awp_perturbation(weights, grads, gamma):
    total = np.sqrt(sum(np.sum(np.square(g)) for g in grads))
    return [np.zeros_like(g) if total == 0 else gamma * np.linalg.norm(w) * g / total
            for w, g in zip(weights, grads)]
""", False),
    ("awp_perturbation", "test_awp_perturbation", "the spectral norm of a kernel (ord=2)", """
def awp_perturbation(weights, grads, gamma):
    out = []
    for w, g in zip(weights, grads):
        w, g = np.asarray(w, dtype=float), np.asarray(g, dtype=float)
        gn = np.linalg.norm(g, 2)
        out.append(np.zeros_like(g) if gn == 0 else gamma * np.linalg.norm(w, 2) * g / gn)
    return out
""", False),
    # -- pick_gamma -----------------------------------------------------------
    ("pick_gamma", "test_pick_gamma", "ignores the tolerance", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    return float(np.asarray(gammas, float)[int(np.argmin(gaps))])
""", False),
    ("pick_gamma", "test_pick_gamma", "measured from gamma 0, not from the best", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    acc = np.asarray(train_accuracies, float)
    ok = [i for i in range(len(acc)) if acc[i] >= acc[0] - tolerance]
    return float(gammas[min(ok, key=lambda i: (gaps[i], gammas[i]))])
""", False),
    ("pick_gamma", "test_pick_gamma", "the larger gamma on a tie", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    acc = np.asarray(train_accuracies, float)
    ok = [i for i in range(len(acc)) if acc[i] >= acc.max() - tolerance]
    return float(gammas[min(ok, key=lambda i: (gaps[i], -gammas[i]))])
""", False),
    ("pick_gamma", "test_pick_gamma", "returns the index", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    acc = np.asarray(train_accuracies, float)
    ok = [i for i in range(len(acc)) if acc[i] >= acc.max() - tolerance]
    return min(ok, key=lambda i: (gaps[i], gammas[i]))
""", False),
    ("pick_gamma", "test_pick_gamma", "sorting candidates", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    best_fit = max(train_accuracies)
    candidates = sorted((gap, gamma) for gamma, gap, acc in zip(gammas, gaps, train_accuracies)
                        if acc >= best_fit - tolerance)
    return float(candidates[0][1])
""", True),
    ("pick_gamma", "test_pick_gamma", "a plain loop", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    top = max(float(a) for a in train_accuracies)
    chosen = None
    for g, gap, acc in zip(gammas, gaps, train_accuracies):
        if acc < top - tolerance:
            continue
        if chosen is None or gap < chosen[1] or (gap == chosen[1] and g < chosen[0]):
            chosen = (float(g), float(gap))
    return chosen[0]
""", True),
    ("pick_gamma", "test_pick_gamma", "strictly less than tolerance below", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    acc = np.asarray(train_accuracies, float)
    ok = [i for i in range(len(acc)) if acc.max() - acc[i] < tolerance]
    return float(gammas[min(ok, key=lambda i: (gaps[i], gammas[i]))])
""", False),
    ("pick_gamma", "test_pick_gamma", "a loop keeping the last of equal gaps", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    top = max(train_accuracies)
    best_gap, chosen = float("inf"), None
    for g, gap, acc in zip(gammas, gaps, train_accuracies):
        if acc >= top - tolerance and gap <= best_gap:
            best_gap, chosen = gap, g
    return float(chosen)
""", False),
    ("pick_gamma", "test_pick_gamma", "in float32", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    g, gap, acc = (np.asarray(a, np.float32) for a in (gammas, gaps, train_accuracies))
    allowed = np.flatnonzero(acc >= acc.max() - np.float32(tolerance))
    return float(g[min(allowed, key=lambda i: (gap[i], g[i]))])
""", True),
    # A NumPy float scalar is a float: the hidden test took it for none.
    ("pick_gamma", "test_pick_gamma", "returns the gamma as a NumPy float32", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    g, gap, acc = (np.asarray(a, np.float32) for a in (gammas, gaps, train_accuracies))
    allowed = np.flatnonzero(acc >= acc.max() - np.float32(tolerance))
    return g[min(allowed, key=lambda i: (gap[i], g[i]))]
""", True),
    ("pick_gamma", "test_pick_gamma", "a relative tolerance", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    acc = np.asarray(train_accuracies, dtype=float)
    allowed = [i for i in range(len(gammas)) if acc[i] >= acc.max() * (1 - tolerance)]
    best = min(allowed, key=lambda i: (gaps[i], gammas[i]))
    return float(gammas[best])
""", False),
    ("pick_gamma", "test_pick_gamma", "returns a 0-d array", """
def pick_gamma(gammas, gaps, train_accuracies, tolerance=0.02):
    gammas, gaps, acc = (np.asarray(a, dtype=float) for a in (gammas, gaps, train_accuracies))
    allowed = np.flatnonzero(acc >= acc.max() - tolerance)
    best = min(allowed, key=lambda i: (gaps[i], gammas[i]))
    return np.array(gammas[best])
""", False),
]

BATTERY_04 = [
    # -- gaussian_kl ----------------------------------------------------------
    ("gaussian_kl", "test_gaussian_kl", "variances squared as if standard deviations", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    var_q, var_p = np.square(var_q), np.square(var_p) * np.ones_like(var_q)
    return float(0.5 * np.sum(var_q / var_p + (mu_q - mu_p) ** 2 / var_p - 1 - np.log(var_q / var_p)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "drops the log term", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    return float(0.5 * np.sum(var_q / var_p + (mu_q - mu_p) ** 2 / var_p - 1))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "no one half", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    r = np.asarray(var_q) / var_p
    return float(np.sum(r + (np.asarray(mu_q) - mu_p) ** 2 / var_p - 1 - np.log(r)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "KL(P || Q), the other direction", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    var_p = np.ones_like(var_q) * var_p
    r = var_p / var_q
    return float(0.5 * np.sum(r + (mu_q - mu_p) ** 2 / var_q - 1 - np.log(r)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "log1p, as robustlab does", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    x = np.asarray(var_q, float) / var_p - 1
    return float(0.5 * np.sum(x - np.log1p(x) + (np.asarray(mu_q) - mu_p) ** 2 / var_p))
""", True),
    ("gaussian_kl", "test_gaussian_kl", "robustlab's function", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    return float(robustlab.bounds.gaussian_kl(mu_q, var_q, mu_p, var_p))
""", True),
    ("gaussian_kl", "test_gaussian_kl", "in float32", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, mu_p = (np.asarray(a, np.float32) for a in (mu_q, var_q, mu_p))
    var_p = np.float32(var_p) if np.ndim(var_p) == 0 else np.asarray(var_p, np.float32)
    r = var_q / var_p
    return float(0.5 * np.sum(r + (mu_q - mu_p) ** 2 / var_p - 1 - np.log(r)))
""", True),
    ("gaussian_kl", "test_gaussian_kl", "returns a NumPy float32", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, mu_p = (np.asarray(a, np.float32) for a in (mu_q, var_q, mu_p))
    var_p = np.float32(var_p) if np.ndim(var_p) == 0 else np.asarray(var_p, np.float32)
    r = var_q / var_p
    return 0.5 * np.sum(r + (mu_q - mu_p) ** 2 / var_p - 1 - np.log(r))
""", True),
    ("gaussian_kl", "test_gaussian_kl", "the mean over the weights", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    r = np.asarray(var_q) / var_p
    return float(0.5 * np.mean(r + (np.asarray(mu_q) - mu_p) ** 2 / var_p - 1 - np.log(r)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "forgets the sum", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, mu_p, var_p = (np.asarray(a, dtype=float) for a in (mu_q, var_q, mu_p, var_p))
    ratio = var_q / var_p
    return 0.5 * (ratio + (mu_q - mu_p) ** 2 / var_p - 1.0 - np.log(ratio))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "the means' term not divided by var_p", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, mu_p, var_p = (np.asarray(a, dtype=float) for a in (mu_q, var_q, mu_p, var_p))
    ratio = var_q / var_p
    return float(0.5 * np.sum(ratio + (mu_q - mu_p) ** 2 - 1.0 - np.log(ratio)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "ignores mu_p", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, var_p = (np.asarray(a, dtype=float) for a in (mu_q, var_q, var_p))
    ratio = var_q / var_p
    return float(0.5 * np.sum(ratio + mu_q ** 2 / var_p - 1.0 - np.log(ratio)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "counts the weights with len()", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    mu_q, var_q, mu_p, var_p = (np.asarray(a, dtype=float) for a in (mu_q, var_q, mu_p, var_p))
    ratio = var_q / var_p
    return float(0.5 * (np.sum(ratio + (mu_q - mu_p) ** 2 / var_p - np.log(ratio)) - len(mu_q)))
""", False),
    ("gaussian_kl", "test_gaussian_kl", "returns a Keras tensor", """
def gaussian_kl(mu_q, var_q, mu_p, var_p):
    ops = keras.ops
    ratio = ops.divide(var_q, var_p)
    terms = ratio + ops.square(ops.subtract(mu_q, mu_p)) / var_p - 1.0 - ops.log(ratio)
    return 0.5 * ops.sum(terms)
""", False),
    # -- kl_inverse -----------------------------------------------------------
    ("kl_inverse", "test_kl_inverse", "Pinsker's approximation", """
def kl_inverse(q, c):
    return min(1.0, q + np.sqrt(c / 2))
""", False),
    ("kl_inverse", "test_kl_inverse", "the smallest p instead of the largest", """
def kl_inverse(q, c):
    def kl(a, b):
        return (a * np.log(a / b) if a > 0 else 0) + ((1 - a) * np.log((1 - a) / (1 - b)) if a < 1 else 0)
    low, high = 1e-12, float(q)
    for _ in range(100):
        mid = (low + high) / 2
        if kl(q, mid) <= c:
            high = mid
        else:
            low = mid
    return high
""", False),
    ("kl_inverse", "test_kl_inverse", "0 log 0 taken literally", """
def kl_inverse(q, c):
    kl = lambda a, b: a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    low, high = float(q), 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if kl(q, mid) <= c:
            low = mid
        else:
            high = mid
    return low
""", False),
    ("kl_inverse", "test_kl_inverse", "scipy's brentq", """
def kl_inverse(q, c):
    from scipy.optimize import brentq
    def kl(b):
        return (q * np.log(q / b) if q > 0 else 0.0) + ((1 - q) * np.log((1 - q) / (1 - b)) if q < 1 else 0.0)
    if c <= 0:
        return float(q)
    top = 1 - 1e-14
    if kl(top) <= c:
        return 1.0
    return brentq(lambda b: kl(b) - c, q, top, xtol=1e-13)
""", True),
    ("kl_inverse", "test_kl_inverse", "bisection to a tolerance", """
def kl_inverse(q, c):
    def kl(a, b):
        total = 0.0
        if a:
            total += a * np.log(a / b)
        if a != 1:
            total += (1 - a) * np.log((1 - a) / (1 - b))
        return total
    lo, hi = q, 1.0
    if kl(q, 1 - 1e-16) <= c:
        return 1.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kl(q, mid) <= c else (lo, mid)
    return lo
""", True),
    ("kl_inverse", "test_kl_inverse", "bisection to exactly the 1e-8 asked, no case for 1", """
def kl_inverse(q, c):
    def kl(p):
        out = q * np.log(q / p) if q > 0 else 0.0
        return out + ((1 - q) * np.log((1 - q) / (1 - p)) if p < 1 else np.inf)
    low, high = q, 1.0
    while high - low > 1e-8:
        middle = (low + high) / 2
        low, high = (middle, high) if kl(middle) <= c else (low, middle)
    return low
""", True),
    ("kl_inverse", "test_kl_inverse", "a top-level kl helper that clips p", """
def kl(q, p):
    p = min(max(p, 1e-15), 1 - 1e-15)
    out = q * np.log(q / p) if q > 0 else 0.0
    return out + ((1 - q) * np.log((1 - q) / (1 - p)) if q < 1 else 0.0)


def kl_inverse(q, c):
    if kl(q, 1.0) <= c:
        return 1.0
    low, high = float(q), 1.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if kl(q, middle) <= c else (low, middle)
    return low
""", True),
    ("kl_inverse", "test_kl_inverse", "vectorised, returns a 1-element array", """
def kl_inverse(q, c):
    q = np.atleast_1d(np.asarray(q, float))
    low, high = q.copy(), np.ones_like(q)

    def kl(p):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.where(q > 0, q * np.log(q / p), 0.0)
                    + np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0))
    for _ in range(60):
        middle = (low + high) / 2
        inside = kl(middle) <= c
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return low
""", True),
    ("kl_inverse", "test_kl_inverse", "bisection over [0, 1]", """
def kl_inverse(q, c):
    def kl(a, b):
        return (a * np.log(a / b) if a > 0 else 0) + ((1 - a) * np.log((1 - a) / (1 - b)) if a < 1 else 0)
    low, high = 0.0, 1.0 - 1e-15
    for _ in range(100):
        mid = (low + high) / 2
        if kl(q, mid) <= c:
            low = mid
        else:
            high = mid
    return low
""", False),
    # -- pac_bayes_bound ------------------------------------------------------
    ("pac_bayes_bound", "test_pac_bayes_bound", "forgets ln(2 sqrt(n) / delta)", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return kl_inverse(empirical_risk, kl / n)
""", False),
    ("pac_bayes_bound", "test_pac_bayes_bound", "ln(1 / delta)", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return kl_inverse(empirical_risk, (kl + np.log(1 / delta)) / n)
""", False),
    ("pac_bayes_bound", "test_pac_bayes_bound", "the McAllester form", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return min(1.0, empirical_risk + np.sqrt((kl + np.log(2 * np.sqrt(n) / delta)) / (2 * n)))
""", False),
    ("pac_bayes_bound", "test_pac_bayes_bound", "the log split up", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    budget = (kl + np.log(2) + 0.5 * np.log(n) - np.log(delta)) / n
    return kl_inverse(empirical_risk, budget)
""", True),
    ("pac_bayes_bound", "test_pac_bayes_bound", "robustlab's kl_inverse", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return float(robustlab.bounds.kl_inverse(empirical_risk, (kl + np.log(2 * np.sqrt(n) / delta)) / n))
""", True),
    ("pac_bayes_bound", "test_pac_bayes_bound", "returns an empty list", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return []
""", False),
    ("pac_bayes_bound", "test_pac_bayes_bound", "the right number as text", """
def pac_bayes_bound(empirical_risk, kl, n, delta=0.05):
    return repr(kl_inverse(empirical_risk, (kl + np.log(2 * np.sqrt(n) / delta)) / n))
""", False),
    # -- select_epoch ---------------------------------------------------------
    ("select_epoch", "test_select_epoch", "argmin without skipping NaN", """
def select_epoch(history, key):
    return int(np.argmin(np.asarray(history[key], float)))
""", False),
    ("select_epoch", "test_select_epoch", "the last of equal minima", """
def select_epoch(history, key):
    values = np.asarray(history[key], float)
    return int(len(values) - 1 - np.nanargmin(values[::-1]))
""", False),
    ("select_epoch", "test_select_epoch", "epochs from 1", """
def select_epoch(history, key):
    return int(np.nanargmin(np.asarray(history[key], float))) + 1
""", False),
    ("select_epoch", "test_select_epoch", "a loop", """
def select_epoch(history, key):
    best, best_epoch = None, None
    for epoch, value in enumerate(history[key]):
        if value != value:
            continue
        if best is None or value < best:
            best, best_epoch = value, epoch
    return best_epoch
""", True),
    ("select_epoch", "test_select_epoch", "NaN replaced by infinity", """
def select_epoch(history, key):
    values = np.asarray(history[key], dtype=float)
    return int(np.argmin(np.where(np.isnan(values), np.inf, values)))
""", True),
    ("select_epoch", "test_select_epoch", "every epoch at the minimum", """
def select_epoch(history, key):
    v = np.asarray(history[key], dtype=float)
    return np.flatnonzero(v == np.nanmin(v))
""", False),
    ("select_epoch", "test_select_epoch", "np.nanargmin's NumPy integer", """
def select_epoch(history, key):
    return np.nanargmin(history[key])
""", True),
]

BATTERIES = {"00_pgd": BATTERY_00, "01_robust_overfitting": BATTERY_01,
                 "02_lr_drop_collapse": BATTERY_02, "03_awp": BATTERY_03,
                 "04_pac_bayes": BATTERY_04}


def _battery_cases():
    for lesson, battery in BATTERIES.items():
        for exercise, test_id, name, source, correct in battery:
            yield pytest.param(lesson, exercise, test_id, source, correct,
                               id=f"{lesson}-{exercise}-{name.replace(' ', '_')}")


@pytest.fixture(scope="module")
def namespaces():
    """Per lesson: the notebook's setup and every exercise's solution, run
    once; each case gets a copy."""
    import matplotlib

    matplotlib.use("Agg")
    built = {}
    for lesson in BATTERIES:
        notebook = read(notebook_path(REPO, "solutions", lesson))
        namespace = {"__name__": "__main__"}
        for cell in notebook.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and (
                    meta.get("grade_id") == "setup" or meta.get("solution")):
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(cell.source, meta["grade_id"], "exec"), namespace)
        built[lesson] = (notebook, namespace)
    return built


def test_every_released_lesson_has_a_battery():
    from tests.course.conftest import LESSONS

    assert set(LESSONS) == set(BATTERIES)


def test_every_exercise_has_wrong_and_alternative_correct_answers(namespaces):
    for lesson, battery in BATTERIES.items():
        notebook, _ = namespaces[lesson]
        exercises = {c.metadata["nbgrader"]["grade_id"] for c in notebook.cells
                     if c.metadata.get("nbgrader", {}).get("solution")
                     and c.cell_type == "code"}
        for exercise in exercises:
            kinds = [correct for e, *_, correct in battery if e == exercise]
            assert kinds.count(False) >= 3 and kinds.count(True) >= 2, (
                f"{lesson}: the battery of {exercise} needs at least three wrong and two "
                f"alternative correct answers; it has {kinds.count(False)} and "
                f"{kinds.count(True)}")


@pytest.mark.parametrize("lesson, exercise, test_id, source, correct", _battery_cases())
def test_the_graded_tests_fail_wrong_answers_and_pass_correct_ones(
        namespaces, lesson, exercise, test_id, source, correct):
    notebook, base = namespaces[lesson]
    namespace = dict(base)
    exec(textwrap.dedent(source), namespace)
    test_source = cell_by_grade_id(notebook, test_id).source
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(test_source, test_id, "exec"), namespace)
    except AssertionError as failure:
        message = str(failure)
        assert not correct, f"a correct {exercise} failed {test_id}: {message}"
        assert len(message) > 30, f"{test_id} failed with too short a message: {message!r}"
    except Exception as error:  # the code itself raised: the cell fails too
        assert not correct, f"a correct {exercise} raised in {test_id}: {error!r}"
    else:
        assert correct, f"a wrong {exercise} passed {test_id}"


def _wrong_cases():
    for lesson, battery in BATTERIES.items():
        for exercise, test_id, name, source, correct in battery:
            if not correct:
                yield pytest.param(lesson, exercise, source,
                                   id=f"{lesson}-{exercise}-{name.replace(' ', '_')}")


@pytest.mark.parametrize("lesson, exercise, source", _wrong_cases())
def test_a_wrong_answer_costs_only_its_own_exercise(namespaces, lesson, exercise, source):
    notebook, base = namespaces[lesson]
    namespace = dict(base)
    exec(textwrap.dedent(source), namespace)
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        test_id = meta.get("grade_id")
        if cell.cell_type != "code" or not meta.get("grade") or test_id == f"test_{exercise}":
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, test_id, "exec"), dict(namespace))
        except AssertionError as failure:
            pytest.fail(f"a wrong {exercise} also failed {test_id}: {failure}")


def _from_battery(lesson, name, words):
    """The MESSAGES entry of the battery's wrong answer `name`."""
    (_, test_id, _, source, correct), = [e for e in BATTERIES[lesson] if e[2] == name]
    assert not correct, name
    return (lesson, test_id, name, source, words)


# (lesson, test cell, name, source, words the failure message must contain); a
# wrong answer that the battery already holds is taken from it by name.
MESSAGES = [
    _from_battery("00_pgd", "clips x_adv in place (out=x_adv)", "in place"),
    ("00_pgd", "test_project_linf", "a box a hair too large: the distance in digits", """
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    eps = max(eps, 2e-5)
    p = np.clip(x_adv, x - eps, x + eps)
    return p if value_range is None else np.clip(p, *value_range)
""", "is 2e-05 away from x"),
    _from_battery("00_pgd", "projects around x_init instead of x", "away from x, more than eps"),
    _from_battery("00_pgd", "changes x_init in place", "changed x_init in place"),
    _from_battery("00_pgd", "crashes with value_range=None", "value_range=None"),
    # The visible test called it bare: the student read "Value after * must be
    # an iterable, not NoneType".
    _from_battery("00_pgd", "project_linf crashes with value_range=None",
                  "value_range=None means there is no range to clip to"),
    _from_battery("01_robust_overfitting", "ceil instead of round", "round(0.22 * 10) = 2"),
    ("01_robust_overfitting", "test_best_and_final", "best_epoch a float: names the type", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, float)
    i = int(np.argmax(a))
    final = float(a[-final_epochs:].mean())
    return float(a[i]), float(i), final, float(a[i]) - final
""", "got 1.0, of type float"),
    _from_battery("02_lr_drop_collapse", "an absolute tolerance", "The tolerance is relative"),
    _from_battery("03_awp", "norms per row of a kernel", "parallel"),
    _from_battery("03_awp", "strictly less than tolerance below", "exactly tolerance below"),
    _from_battery("04_pac_bayes", "the mean over the weights", "the mean"),
    _from_battery("04_pac_bayes", "epochs from 1", "got 4"),
    _from_battery("04_pac_bayes", "forgets the sum", "expected one number (0), got an array of shape (3,)"),
    _from_battery("04_pac_bayes", "returns an empty list", "got an array of shape (0,) (no number at all)"),
    _from_battery("04_pac_bayes", "the right number as text", "(of type str): text, not a number"),
    _from_battery("02_lr_drop_collapse", "the right number, 7 times",
                  "expected one number (0.105263), got an array of shape (7,)"),
    _from_battery("02_lr_drop_collapse", "the right number plus 3j", "complex numbers, not real ones"),
    _from_battery("02_lr_drop_collapse", "the right variances plus 5j", "complex numbers, not real ones"),
    _from_battery("04_pac_bayes", "every epoch at the minimum",
                  "select_epoch must return one epoch, an int; got array([3])"),
    ("04_pac_bayes", "test_select_epoch", "the first minimum as a 1-element array", """
def select_epoch(history, key):
    v = np.asarray(history[key], dtype=float)
    return np.flatnonzero(v == np.nanmin(v))[:1]
""", "of type ndarray"),
    _from_battery("01_robust_overfitting", "best_epoch: every epoch at the best",
                  "best_epoch must be an int, the 0-based epoch of the best value"),
    ("04_pac_bayes", "test_select_epoch", "a float epoch: the type returned", """
def select_epoch(history, key):
    return float(np.nanargmin(history[key]))
""", "of type float"),
]


def _failure_of(namespaces, lesson, test_id, source, visible_only=False):
    """The AssertionError message of test cell `test_id` with `source` in
    place of the solution (None if the cell passes): the whole cell, as
    autograde runs it, or only the part the release shows."""
    notebook, base = namespaces[lesson]
    namespace = dict(base)
    exec(textwrap.dedent(source), namespace)
    test_source = cell_by_grade_id(notebook, test_id).source
    if visible_only:
        test_source = _visible_part(test_source)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(test_source, test_id, "exec"), namespace)
    except AssertionError as failure:
        return str(failure)
    return None


def _visible_part(source):
    """A test cell as the release shows it: nbgrader drops the lines from
    `### BEGIN HIDDEN TESTS` to `### END HIDDEN TESTS`."""
    kept, hidden = [], False
    for line in source.splitlines():
        if line.strip() == "### BEGIN HIDDEN TESTS":
            hidden = True
        elif line.strip() == "### END HIDDEN TESTS":
            hidden = False
        elif not hidden:
            kept.append(line)
    assert not hidden, "a BEGIN HIDDEN TESTS without its END"
    return "\n".join(kept)


# An epoch as a NumPy integer (what np.argmax and np.nanargmin return): lesson 01
# accepts it as "an int", so every test, visible and hidden, does.
NUMPY_INTEGER_EPOCHS = [
    ("01_robust_overfitting", "test_best_and_final", """
def best_and_final(robust_accuracy, final_epochs=3):
    a = np.asarray(robust_accuracy, dtype=float)
    i = np.argmax(a)
    return float(a[i]), i, float(a[-final_epochs:].mean()), float(a[i] - a[-final_epochs:].mean())
"""),
    ("04_pac_bayes", "test_select_epoch", """
def select_epoch(history, key):
    return np.nanargmin(history[key])
"""),
]


@pytest.mark.parametrize("lesson, test_id, source", NUMPY_INTEGER_EPOCHS,
                         ids=[test_id for _, test_id, _ in NUMPY_INTEGER_EPOCHS])
def test_a_numpy_integer_epoch_passes_the_visible_tests_and_the_hidden_ones(
        namespaces, lesson, test_id, source):
    assert _failure_of(namespaces, lesson, test_id, source, visible_only=True) is None
    assert _failure_of(namespaces, lesson, test_id, source) is None


@pytest.mark.parametrize(
    "lesson, test_id, source, words",
    [pytest.param(lesson, test_id, source, words, id=f"{lesson}-{name.replace(' ', '_')}")
     for lesson, test_id, name, source, words in MESSAGES])
def test_a_failure_message_says_what_went_wrong(namespaces, lesson, test_id, source, words):
    message = _failure_of(namespaces, lesson, test_id, source)
    assert message is not None, f"{test_id} passed a wrong answer"
    assert words in message, f"{test_id}'s message lacks {words!r}: {message}"


# The mistakes at the heart of an exercise: the visible tests catch them, so a
# student sees the failure before submitting instead of losing the points at
# grading. (Edge cases, ties and some in-place writes are left to the hidden
# tests.)
VISIBLE_CATCHES = {
    "00_pgd": ["projects around x_adv", "steps along the raw gradient", "the raw gradient, no sign",
               "writes into x", "every gradient at the clean image", "one step too many",
               "one step too few", "ignores x_init", "projects only at the end", "lazy projection",
               "projects around x_init instead of x", "writes into x when x_init is None"],
    "01_robust_overfitting": ["rounds down", "ceil instead of round", "always the next class",
                              "ignores the seed", "best starts at 0",
                              "crashes on an epoch without validation",
                              "the last 3, whatever final_epochs"],
    "02_lr_drop_collapse": ["the norm of Hv, sign lost", "ignores tol", "an absolute tolerance",
                            "the covariance without its momentum term",
                            "the previous step's learning rate in a"],
    "03_awp": ["norms per row of a kernel", "one gradient norm over all layers",
               "the spectral norm of a kernel (ord=2)", "measured from gamma 0, not from the best",
               "a relative tolerance", "returns a 0-d array"],
    "04_pac_bayes": ["the mean over the weights", "the means' term not divided by var_p", "ignores mu_p",
                     "counts the weights with len()", "returns a Keras tensor", "bisection over [0, 1]"],
}


@pytest.mark.parametrize("lesson, name", [
    pytest.param(lesson, name, id=f"{lesson}-{name.replace(' ', '_')}")
    for lesson, names in VISIBLE_CATCHES.items() for name in names])
def test_the_visible_tests_catch_the_mistakes_at_the_heart_of_an_exercise(namespaces, lesson, name):
    (_, test_id, _, source, correct), = [e for e in BATTERIES[lesson] if e[2] == name]
    assert not correct, name
    # The control: the visible part passes the solution (already in the
    # namespace), so an error below comes from the wrong answer.
    assert _failure_of(namespaces, lesson, test_id, "", visible_only=True) is None
    try:
        message = _failure_of(namespaces, lesson, test_id, source, visible_only=True)
    except Exception:  # the answer's own error stops the cell: the student sees it too
        return
    assert message is not None, f"{test_id}'s visible tests pass the wrong answer {name!r}"


def _exercises():
    for lesson in BATTERIES:
        released = read(notebook_path(REPO, "lessons", lesson))
        for cell in released.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("solution"):
                yield pytest.param(lesson, meta["grade_id"], cell.source,
                                   id=f"{lesson}-{meta['grade_id']}")


@pytest.mark.parametrize("lesson, exercise, stub", _exercises())
def test_an_untouched_exercise_fails_its_test_saying_it_is_not_written(
        namespaces, lesson, exercise, stub):
    message = _failure_of(namespaces, lesson, f"test_{exercise}", stub)
    assert message is not None and "is not written yet" in message, message


@pytest.mark.parametrize("lesson, exercise, stub", _exercises())
def test_a_function_without_return_fails_its_test_saying_so(namespaces, lesson, exercise, stub):
    if not stub.startswith("def "):
        pytest.skip(f"{exercise} is a class")
    message = _failure_of(namespaces, lesson, f"test_{exercise}",
                          f"def {exercise}(*args, **kwargs):\n    pass\n")
    assert message is not None and "forget to `return`" in message, message


def test_the_solutions_power_iteration_does_not_stop_on_a_first_estimate_of_zero(namespaces):
    """v0 . H v0 = 0 is no sign of convergence: the stopping rule compares two
    estimates, and there is none before the first product."""
    import numpy as np

    from robustlab.course import exercises
    from robustlab.course.grading import CallCounter

    _, namespace = namespaces["02_lr_drop_collapse"]
    h = np.array([[0.0, 2.0], [2.0, 3.0]])  # eigenvalues 4 and -1
    for power_iteration in (namespace["power_iteration"], exercises.power_iteration):
        hvp = CallCounter(lambda v: h @ v)
        value, vector = power_iteration(hvp, np.array([1.0, 0.0]), iterations=200, tol=1e-10)
        assert abs(value - 4.0) < 1e-8 and hvp.calls > 1, (value, hvp.calls)
        np.testing.assert_allclose(np.abs(vector), np.array([1.0, 2.0]) / np.sqrt(5.0), atol=1e-6)
