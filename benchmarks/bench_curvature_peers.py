"""Top Hessian eigenvalue with robustlab against PyHessian, side by side.

The small CNN of the digits setting (`robustlab.models.small_cnn`, seed 0,
272,586 parameters) in Keras and the same network with the same weights in
PyTorch (`bench_peers_training.copy_keras_to_torch`); the mean cross-entropy
over a fixed batch of the quick setting's first 256 training digits, float32
in both, in two versions: clean, and robust on a fixed adversarial batch
(crafted once with robustlab's PGD-10, eps 0.1, step eps / 4, seed 0, and
handed to both tools).

- Agreement: the dominant Hessian eigenvalue by
  `robustlab.curvature.top_hessian_eigenvalue` and by
  `pyhessian.hessian(...).eigenvalues(top_n=1)`, both run to a relative
  change of the Rayleigh quotient of 1e-7 (at most 1,000 products); they
  must agree within 1e-3 relative.
- Speed, after warm-up, interleaved, medians: one Hessian-vector product
  (robustlab `HessianOperator.matvec`; PyHessian
  `pyhessian.utils.hessian_vector_product` on the graph its constructor
  kept; timed 5 in a row, all at the same weights) and one full power
  iteration of 20 products as a user calls it (robustlab
  `top_hessian_eigenvalue(iterations=19)`: stopped at its cap, it takes one
  product more there, for the Rayleigh quotient of the vector it returns;
  PyHessian `hessian(...)` then `eigenvalues(maxIter=20, tol=0)`, one
  product a turn). The row names the products each side made (counted
  once, outside the timing). Target: robustlab no slower. The parts that
  explain the difference are timed too: robustlab's compiled gradient (its
  forward and backward pass: on TensorFlow every product repeats it; on JAX
  a product keeps `jax.linearize` of the gradient while the weights and the
  batch stay the same, so the timed products, like PyHessian's, run the
  second pass only, and the power iteration pays the first once) and
  PyHessian's constructor (the one forward and backward, with
  `create_graph`, that all its products share).

Exits with status 1 if the Keras and PyTorch logits differ by more than 1e-5
or the eigenvalues by more than 1e-3 relative.

Run: `KERAS_BACKEND=tensorflow python benchmarks/bench_curvature_peers.py`
(and `KERAS_BACKEND=jax`); needs torch and pyhessian (the `bench` extra).
`--quick`: 3 timing repeats instead of 15, for a smoke run.
"""

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_peers_training.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bench_peers_training as peers  # noqa: E402
from bench_hvp import interleaved_median_seconds, median_seconds  # noqa: E402
import robustlab  # noqa: E402
import run_all  # noqa: E402
from robustlab import curvature  # noqa: E402

PROBE_EXAMPLES = 256
TOL = 1e-7
MAX_PRODUCTS = 1000
AGREEMENT = 1e-3
TIMED_PRODUCTS = 20
HVP_BLOCK = 5
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def probe_batch():
    """The quick setting's first 256 training digits and their labels."""
    setting = peers.SETTING
    dataset = robustlab.data.load(setting.dataset, train_size=setting.train_size,
                                  seed=setting.data_seed, label_noise=setting.label_noise)
    return dataset.x_train[:PROBE_EXAMPLES], dataset.y_train[:PROBE_EXAMPLES]


def fixed_adversarial_batch(net, x, y):
    return robustlab.attacks.run_attack(net, x, y, peers.SETTING.eval_attack,
                                        batch_size=PROBE_EXAMPLES, seed=0)


def as_torch(x, y):
    import torch

    return (torch.from_numpy(peers.channels_first(x)),
            torch.from_numpy(np.asarray(y, dtype=np.int64)))


def pyhessian_of(module, x, y):
    """PyHessian's operator on one batch (its constructor runs the forward and
    backward pass, with `create_graph`, that every product reuses)."""
    import torch
    from pyhessian import hessian

    # Its `loss.backward(create_graph=True)` adds to `.grad`: gradients left
    # by an earlier operator would enter this one's products (and keep the
    # earlier graph alive, torch's warning about a reference cycle).
    module.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
        return hessian(module, torch.nn.CrossEntropyLoss(), data=as_torch(x, y),
                       cuda=False)


def robustlab_top_eigenvalue(net, x, y, iterations, tol):
    return curvature.top_hessian_eigenvalue(net, x, y, loss=LOSS, iterations=iterations,
                                            tol=tol, seed=0)


def pyhessian_top_eigenvalue(module, x, y, iterations, tol):
    import torch

    torch.manual_seed(0)  # its random start vector
    eigenvalues, _ = pyhessian_of(module, x, y).eigenvalues(
        maxIter=iterations, tol=tol, top_n=1)
    return eigenvalues[0]


def robustlab_timed_power_iteration(net, x, y):
    """robustlab's power iteration of `TIMED_PRODUCTS` products: with a
    tolerance it never meets, it stops at its cap of `iterations` and takes
    one product more there (robustlab/spectral.py)."""
    return robustlab_top_eigenvalue(net, x, y, TIMED_PRODUCTS - 1, 1e-12)


def pyhessian_timed_power_iteration(module, x, y):
    """PyHessian's power iteration of `TIMED_PRODUCTS` products: at
    tolerance 0 its loop never stops early, and each turn is one product."""
    return pyhessian_top_eigenvalue(module, x, y, TIMED_PRODUCTS, 0.0)


def pyhessian_products(module, x, y):
    """The Hessian-vector products one timed PyHessian power iteration makes,
    counted at the function its loop calls."""
    import importlib

    # `pyhessian.hessian` the attribute is the class; the module is this one.
    loop_module = importlib.import_module("pyhessian.hessian")
    original = loop_module.hessian_vector_product
    count = 0

    def counted(*args, **kwargs):
        nonlocal count
        count += 1
        return original(*args, **kwargs)

    loop_module.hessian_vector_product = counted
    try:
        pyhessian_timed_power_iteration(module, x, y)
    finally:
        loop_module.hessian_vector_product = original
    return count


def agreement_rows(net, module, batches):
    """(loss, robustlab eigenvalue, its products, PyHessian eigenvalue,
    relative difference) for each named batch."""
    rows = []
    for name, (x, y) in batches.items():
        ours = robustlab_top_eigenvalue(net, x, y, MAX_PRODUCTS, TOL)
        theirs = pyhessian_top_eigenvalue(module, x, y, MAX_PRODUCTS, TOL)
        difference = abs(ours.eigenvalue - theirs) / abs(theirs)
        rows.append((name, ours.eigenvalue, ours.iterations, theirs, difference))
    return rows


def random_direction(operator, seed=1):
    flat = np.random.default_rng(seed).standard_normal(operator.dim)
    return flat / np.linalg.norm(flat)


def keras_flat_to_torch_list(flat, net):
    """A flat vector over Keras's trainable variables as float32 torch
    tensors shaped and ordered like the torch module's parameters."""
    import torch

    arrays = curvature.unflatten_weights(flat.astype(np.float32), net)
    features = peers.feature_shape_before_flatten(net)
    return [torch.from_numpy(a.astype(np.float32))
            for a in peers.torch_layout(arrays, features)]


def timing_rows(net, module, x, y, repeats):
    from pyhessian.utils import hessian_vector_product

    operator = curvature.HessianOperator(net, x, y, loss=LOSS)
    flat = random_direction(operator)
    direction = keras_flat_to_torch_list(flat, net)
    theirs = pyhessian_of(module, x, y)
    check_same_product(operator, flat, theirs, direction, net)
    # Blocks of products, as a power iteration runs them: a single product
    # right after the other framework's would also time waking its threads.
    pyhessian_hvp, robustlab_hvp, hvp_ratio = interleaved_median_seconds(
        lambda: [hessian_vector_product(theirs.gradsH, theirs.params, direction)
                 for _ in range(HVP_BLOCK)],
        lambda: [operator.matvec(flat) for _ in range(HVP_BLOCK)], repeats, warmup=1)
    pyhessian_power, robustlab_power, power_ratio = interleaved_median_seconds(
        lambda: pyhessian_timed_power_iteration(module, x, y),
        lambda: robustlab_timed_power_iteration(net, x, y),
        max(3, repeats // 3), warmup=1)
    ours = robustlab_timed_power_iteration(net, x, y).iterations
    theirs = pyhessian_products(module, x, y)
    if ours != theirs:
        print(f"NOT THE SAME WORK: the timed power iterations made {ours} (robustlab) "
              f"and {theirs} (PyHessian) Hessian-vector products")
    gradient = median_seconds(operator.gradient, repeats, warmup=2)
    setup = median_seconds(lambda: pyhessian_of(module, x, y), repeats, warmup=2)
    return [
        ("Hessian-vector product (ms)", robustlab_hvp / HVP_BLOCK * 1e3,
         pyhessian_hvp / HVP_BLOCK * 1e3, hvp_ratio),
        (f"power iteration, {ours} / {theirs} products (s)", robustlab_power,
         pyhessian_power, power_ratio),
        ("  part: robustlab gradient (ms)", gradient * 1e3, None, None),
        ("  part: PyHessian setup (ms)", None, setup * 1e3, None),
    ]


def check_same_product(operator, flat, theirs, direction, net):
    """H v of both tools on the same direction, compared in torch's layout:
    the timed products compute the same thing."""
    from pyhessian.utils import hessian_vector_product

    ours = keras_flat_to_torch_list(operator.matvec(flat), net)
    product = hessian_vector_product(theirs.gradsH, theirs.params, direction)
    numerator = sum(float(((a - b) ** 2).sum()) for a, b in zip(ours, product))
    denominator = sum(float((b ** 2).sum()) for b in product)
    difference = (numerator / denominator) ** 0.5
    print(f"same product: ||H v (robustlab) - H v (PyHessian)|| / ||H v|| = "
          f"{difference:.1e}")


def print_agreement(rows):
    print(f"\ndominant Hessian eigenvalue, relative tolerance {TOL:g}, at most "
          f"{MAX_PRODUCTS} products")
    print(f"{'loss':8s} {'robustlab':>12s} {'products':>9s} {'PyHessian':>12s} "
          f"{'rel. diff':>10s}")
    for name, ours, products, theirs, difference in rows:
        print(f"{name:8s} {ours:12.6f} {products:9d} {theirs:12.6f} {difference:10.1e}")


def print_timing(rows, repeats):
    print(f"\ntime on the clean batch, median of {repeats} interleaved repeats after "
          f"warm-up (products timed {HVP_BLOCK} in a row; power iteration: "
          f"{max(3, repeats // 3)} repeats); ratio: median of the per-repeat ratios, "
          "target <= 1")
    print(f"{'':40s} {'robustlab':>10s} {'PyHessian':>10s} {'robustlab/PyHessian':>20s}")
    for name, ours, theirs, ratio in rows:
        cells = [f"{v:10.3f}" if v is not None else f"{'':10s}" for v in (ours, theirs)]
        ratio_text = f"{ratio:20.2f}" if ratio is not None else ""
        print(f"{name:40s} {cells[0]} {cells[1]} {ratio_text}")


def versions():
    import pyhessian  # noqa: F401
    import torch
    from importlib.metadata import version

    backend = keras.backend.backend()
    backend_version = version("tensorflow" if backend == "tensorflow" else "jax")
    return (f"backend={backend} {backend_version}, keras {keras.__version__}, torch "
            f"{torch.__version__}, pyhessian {version('pyhessian')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 timing repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 15)
    run_all.require_peer_modules("bench_curvature_peers.py")
    peers.same_thread_budget(peers.THREADS)
    import torch

    print(versions())
    print(f"threads: torch {torch.get_num_threads()}, "
          + (f"TensorFlow intra-op {peers.THREADS}" if keras.backend.backend() ==
             "tensorflow" else "XLA CPU: its default (all cores)")
          + f" (cores available: {peers.THREADS}); CPU; float32")
    net = robustlab.models.small_cnn(seed=0)
    module = peers.torch_model_from(net)
    x, y = probe_batch()
    peers.check_same_logits(net, module, x, "Keras weights into torch")
    x_adv = fixed_adversarial_batch(net, x, y)
    peers.check_same_logits(net, module, x_adv, "on the adversarial batch")
    print(f"small CNN, {net.count_params():,} parameters, initial weights (seed 0); "
          f"mean cross-entropy over {len(x)} training digits")
    rows = agreement_rows(net, module, {"clean": (x, y), "robust": (x_adv, y)})
    print_agreement(rows)
    print_timing(timing_rows(net, module, x, y, repeats), repeats)
    worst = max(difference for *_, difference in rows)
    if worst > AGREEMENT:
        print(f"FAILED: the eigenvalues differ by {worst:.1e} relative (> {AGREEMENT:g})")
        sys.exit(1)


if __name__ == "__main__":
    main()
