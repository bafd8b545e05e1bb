"""The benchmark scripts compare like with like: the same training loop for
the clean and the PGD rows, the hand-written step's attack loop unrolled
where robustlab's is, the same number of Hessian-vector products on both
sides of a power-iteration comparison, the tracker's work inside the
compiled step counted, the compiled mode on JAX, and a comparison with
another tool that is not installed says so in one line. Checked without
timing anything."""

import os
import sys

import keras
import numpy as np
import pytest

import robustlab
from robustlab import curvature
from robustlab.callbacks.hessian_probe import HessianProbe
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from tests import benchmark_scripts

BACKEND = keras.backend.backend()


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_cnn():
    return robustlab.models.small_cnn(filters=(4,), dense=8, seed=0)


def digits_like(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype="float32"), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def training_step():
    return benchmark_scripts.load("bench_training_step")


def test_the_clean_row_trains_in_the_loop_of_the_pgd_rows(training_step, monkeypatch):
    timed = []
    monkeypatch.setattr(training_step, "time_fit",
                        lambda model, *args: timed.append(model) or 1.0)
    training_step.bench_model("tiny", tiny_cnn, (8, 8, 1), batch=8, steps=1, ks=(1,),
                              jits=(True,), repeats=1, awp_k=())
    clean, pgd = timed
    assert [isinstance(m, robustlab.AdversarialModel) for m in timed] == [True, True]
    assert (type(clean).fit, type(clean).train_step) == (type(pgd).fit, type(pgd).train_step)


def test_the_clean_row_trains_on_the_clean_batch(training_step):
    x, y = digits_like(4)
    model = training_step.compiled(
        training_step.CleanStep(tiny_cnn(), attack=robustlab.PGD(0.1, steps=1)), True)
    assert model.craft_adversarial_batch(x, y) is x


def loops(fn, *args):
    """(unroll, length) of every loop in `fn`'s jaxpr, nested ones included (a
    `fori_loop` with static bounds is a `scan`; unroll 1 is a rolled loop)."""
    from tests.jaxpr_primitives import equations

    return [(eqn.params.get("unroll", 1), eqn.params.get("length"))
            for eqn in equations(fn, *args) if eqn.primitive.name in ("scan", "while")]


@pytest.mark.skipif(BACKEND != "jax", reason="the hand step's attack loop is JAX's")
@pytest.mark.parametrize("steps", [1, 3])
def test_the_hand_jax_step_runs_the_attack_loop_as_robustlab_does(training_step, steps):
    import jax

    from robustlab.backend.jax.autodiff import repeat

    net = tiny_cnn()
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(net.trainable_variables)
    step = training_step.hand_jax_step(net, optimizer, robustlab.PGD(0.1, steps=steps))
    x, y = digits_like(4)
    hand = loops(step, [v.value for v in net.trainable_variables],
                 [v.value for v in net.non_trainable_variables],
                 [v.value for v in optimizer.variables], x, y, jax.random.PRNGKey(0))
    library = loops(lambda z: repeat(steps, lambda i, v: v * 2.0, z), x)
    assert hand == library


def test_the_hand_row_names_the_pooling_rule_where_it_is_not_robustlabs(training_step):
    differs = BACKEND == "jax" and __import__("jax").default_backend() == "cpu"
    expected = "hand pgd-10 (JAX's pool rule)" if differs else "hand pgd-10"
    assert training_step.hand_row_name(10, tiny_cnn()) == expected
    without_max_pool = robustlab.models.preact_resnet18(width=2, seed=0)
    assert training_step.hand_row_name(10, without_max_pool) == "hand pgd-10"


def test_run_all_runs_the_paired_awp_benchmark_compiled_on_jax(monkeypatch):
    run_all = benchmark_scripts.load("run_all")
    commands = []
    monkeypatch.setattr(run_all.subprocess, "run", lambda command, **kwargs: commands.append(
        (kwargs["env"]["KERAS_BACKEND"], [os.path.basename(a) for a in command[1:]])))
    run_all.main()
    awp = [command for command in commands if command[1][0] == "bench_awp_paired.py"]
    assert awp == [("tensorflow", ["bench_awp_paired.py"]),
                   ("jax", ["bench_awp_paired.py", "--jit"])]


@pytest.mark.skipif(BACKEND != "jax", reason="Keras's op-by-op mode is JAX's")
def test_the_paired_awp_benchmark_refuses_op_by_op_mode_on_jax(monkeypatch):
    awp = benchmark_scripts.load("bench_awp_paired")
    monkeypatch.setattr(sys, "argv", ["bench_awp_paired.py"])
    with pytest.raises(SystemExit, match="bench_awp_paired.py on JAX needs --jit"):
        awp.main()


@pytest.mark.parametrize("script, modules", [
    ("bench_peers_training", ("torch", "torchattacks", "art")),
    ("bench_curvature_peers", ("torch", "pyhessian")),
])
def test_a_peer_benchmark_without_its_packages_names_them_and_the_install(
        script, modules, monkeypatch):
    if script == "bench_peers_training" and BACKEND != "tensorflow":
        pytest.skip("it compares TensorFlow training, and says so first on JAX")
    for module in modules:  # as if not installed: find_spec None, import fails
        monkeypatch.setitem(sys.modules, module, None)
    benchmark = benchmark_scripts.load(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--quick"])
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main()
    assert str(exit_info.value) == (
        f"{script}.py needs {', '.join(modules)}, not installed (pip install -e '.[bench]')")


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX product keeps its linearization")
def test_the_hvp_benchmark_gives_the_weights_new_arrays_with_the_same_numbers():
    bench_hvp = benchmark_scripts.load("bench_hvp")
    net = tiny_cnn()
    before = [v.value for v in net.trainable_variables]
    numbers = [np.array(b) for b in before]
    bench_hvp.new_weight_arrays(net)
    after = [v.value for v in net.trainable_variables]
    assert [a is b for a, b in zip(after, before)] == [False] * len(before)
    for a, n in zip(after, numbers):
        np.testing.assert_array_equal(np.asarray(a), n)


@pytest.fixture
def counted_products(monkeypatch):
    """The number of `HessianOperator.matvec` calls so far (a list of one)."""
    calls = [0]
    original = curvature.HessianOperator.matvec

    def matvec(self, vector):
        calls[0] += 1
        return original(self, vector)

    monkeypatch.setattr(curvature.HessianOperator, "matvec", matvec)
    return calls


def test_the_hvp_benchmarks_power_iteration_makes_the_products_it_names(counted_products):
    bench_hvp = benchmark_scripts.load("bench_hvp")
    x, y = digits_like(16)
    result = bench_hvp.power_iteration_of(tiny_cnn(), x, y, LOSS, 20)
    assert (counted_products[0], result.iterations, result.converged) == (20, 20, False)


def test_the_timed_power_iterations_against_pyhessian_make_as_many_products(
        counted_products, monkeypatch):
    peers = benchmark_scripts.load("bench_curvature_peers")
    x, y = digits_like(16)
    result = peers.robustlab_timed_power_iteration(tiny_cnn(), x, y)
    asked = []
    monkeypatch.setattr(peers, "pyhessian_top_eigenvalue",
                        lambda module, x, y, iterations, tol: asked.append((iterations, tol)))
    peers.pyhessian_timed_power_iteration(None, x, y)
    # PyHessian's loop makes one product a turn and, at tolerance 0, never
    # stops before maxIter.
    assert (counted_products[0], result.iterations) == (peers.TIMED_PRODUCTS,) * 2
    assert asked == [(peers.TIMED_PRODUCTS, 0.0)]


def test_the_probe_benchmark_counts_every_iterate_the_tracker_sees_in_the_step():
    probes = benchmark_scripts.load("bench_probes")
    x, y = digits_like(64)
    model = robustlab.AdversarialModel(tiny_cnn(), attack=robustlab.PGD(0.1, steps=1))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    probe = HessianProbe(x[:32], y[:32], every=1, iterations=2, batch_size=32)
    tracker = PosteriorTracker(probe, batch_size=16, train_size=len(x))
    stretch = probes.timed_stretch(model, x, y, 0, 2, probe, tracker, batch_size=16)
    assert list(stretch["in_step_calls"]) == [4, 4]  # 64 examples in batches of 16


def test_the_probe_benchmark_fits_the_epoch_the_main_job_fits(monkeypatch):
    # It validated in Keras's default batches (the training batch, 64) where
    # the main job validates in batches of eval_batch_size (256): its epoch
    # was 19% longer, and the instruments' shares of it too small.
    probes = benchmark_scripts.load("bench_probes")
    quick = robustlab.experiments.get("quick")
    asked = {}

    class Stop(Exception):
        pass

    def fit(self, *args, callbacks=(), **kwargs):
        asked.update(kwargs, evaluation_batch_sizes=[
            c.batch_size for c in callbacks
            if isinstance(c, robustlab.callbacks.RobustEvaluation)])
        raise Stop

    monkeypatch.setattr(robustlab.AdversarialModel, "fit", fit)
    with pytest.raises(Stop):
        probes.main(["--epochs", "1"])
    assert asked["batch_size"] == quick.batch_size
    assert asked["validation_batch_size"] == quick.eval_batch_size
    assert asked["evaluation_batch_sizes"] == [quick.eval_batch_size]
