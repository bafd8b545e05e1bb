"""Overhead of the curvature probe and memory of the posterior tracker on the
README's quick run.

In one process, on the `quick` experiment (1000 digits, the
272,586-parameter CNN, PGD-3 training, per-epoch evaluation with PGD-10 of
the 797 test and 300 training examples), after one warm-up epoch and one
warm-up of the probe's compiled functions, it trains 10 epochs with

- HessianProbe(every=5, iterations=20, 256 training examples): the top
  eigenvalue of the robust loss (PGD-10 examples crafted once), at the end of
  epochs 4 and 9 of the timed stretch, i.e. as often as in a 100-epoch run;
- PosteriorTracker(probe) measuring every epoch's window (float32 Welford
  accumulators, the projection on the probe's eigenvector, and at each
  window start the per-example directional derivatives of 256 PGD-3
  examples);

each wrapped so that the time spent in its own hooks is measured. The epoch
time without them is the wall time of the epoch minus that. Amortised probe
cost per epoch = total probe time / epochs (a probe every 5 epochs, so the
10 timed epochs contain 2 probes, the same ratio as 20 probes in the 100
epochs of the full run). It prints; it asserts nothing.
Targets: probe cost per epoch / epoch time <= 25%; tracker accumulator bytes
/ parameter bytes <= 3.

    KERAS_BACKEND=tensorflow python benchmarks/bench_probes.py
    KERAS_BACKEND=jax python benchmarks/bench_probes.py

About a minute on 2 CPU cores (TensorFlow).
"""

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from robustlab import attacks  # noqa: E402
from robustlab import curvature  # noqa: E402
from robustlab import experiments  # noqa: E402
from robustlab.callbacks.hessian_probe import HessianProbe  # noqa: E402
from robustlab.callbacks.posterior_tracker import PosteriorTracker  # noqa: E402
from robustlab.callbacks.robust_evaluation import RobustEvaluation  # noqa: E402

_HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin",
          "on_train_batch_end", "on_epoch_end", "on_train_end")


class Timed(keras.callbacks.Callback):
    """Forwards every hook to `inner` and adds up the seconds spent in it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds = 0.0
        self.per_epoch = {}
        self._epoch = None
        for hook in _HOOKS:
            setattr(self, hook, self._timed(hook))

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def _timed(self, hook):
        method = getattr(self.inner, hook)

        def call(*args, **kwargs):
            if hook == "on_epoch_begin":
                self._epoch = args[0]
            start = time.perf_counter()
            method(*args, **kwargs)
            spent = time.perf_counter() - start
            self.seconds += spent
            if self._epoch is not None:
                total = self.per_epoch.get(self._epoch, 0.0)
                self.per_epoch[self._epoch] = total + spent

        return call


class EpochClock(keras.callbacks.Callback):
    """Wall time of every epoch: first callback's begin to last callback's end
    (place one instance first and pass it to `stop` placed last)."""

    def __init__(self):
        super().__init__()
        self.seconds = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def stop(self):
        clock = self

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.seconds[epoch] = time.perf_counter() - clock._start

        return Stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()

    experiment = experiments.get("quick")
    dataset, model = experiments.build(experiment)
    x, y = dataset.x_train, dataset.y_train
    validation_data = (dataset.x_test, dataset.y_test)
    net = model.model
    parameters = int(sum(math.prod(v.shape) for v in net.trainable_variables))
    parameter_bytes = int(sum(np.dtype(v.dtype).itemsize * math.prod(v.shape)
                              for v in net.trainable_variables))

    def callbacks(*extra):
        clock = EpochClock()
        return clock, [clock, experiment.schedule.callback(),
                       RobustEvaluation(x[:experiment.eval_train_examples],
                                        y[:experiment.eval_train_examples]),
                       *extra, clock.stop()]

    # Warm-up: one epoch (traces training, validation and evaluation), and the
    # probe's attack and Hessian-vector product once.
    started = time.perf_counter()
    _, warm = callbacks()
    model.fit(x, y, batch_size=experiment.batch_size, epochs=1, verbose=0,
              validation_data=validation_data, callbacks=warm)
    loss = model.loss
    x_probe, y_probe = x[:256], y[:256]
    x_adv = attacks.run_attack(net, x_probe, y_probe, model.eval_attack, loss=loss,
                               seed=0)
    curvature.top_hessian_eigenvalue(net, x_adv, y_probe, loss=loss, iterations=2,
                                     batch_size=256)
    warmup = time.perf_counter() - started

    probe = HessianProbe(x_probe, y_probe, every=args.every, iterations=20,
                         batch_size=256)
    tracker = PosteriorTracker(probe, batch_size=experiment.batch_size,
                               train_size=len(x), schedule=experiment.schedule)
    timed_probe, timed_tracker = Timed(probe), Timed(tracker)
    clock, timed_callbacks = callbacks(timed_probe, timed_tracker)
    first, last = 1, 1 + args.epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            x, y, batch_size=experiment.batch_size, initial_epoch=first,
            epochs=last, verbose=0, validation_data=validation_data,
            callbacks=timed_callbacks).history

    # Training alone (no validation, no RobustEvaluation, no probes): 3 epochs.
    train_clock = EpochClock()
    model.fit(x, y, batch_size=experiment.batch_size, initial_epoch=last,
              epochs=last + 3, verbose=0,
              callbacks=[train_clock, experiment.schedule.callback(),
                         train_clock.stop()])
    train_only = float(np.median(list(train_clock.seconds.values())))

    # What one probe is made of, at the final weights.
    def seconds(function, repeats=3):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    attack_seconds = seconds(lambda: attacks.run_attack(
        net, x_probe, y_probe, model.eval_attack, loss=loss, seed=0))
    operator = curvature.HessianOperator(net, x_adv, y_probe, loss=loss, batch_size=256)
    vector = np.random.default_rng(0).standard_normal(operator.dim)
    hvp_seconds = seconds(lambda: operator.matvec(vector), repeats=5)

    epochs = range(first, last)
    wall = np.array([clock.seconds[e] for e in epochs])
    probe_time = np.array([timed_probe.per_epoch.get(e, 0.0) for e in epochs])
    tracker_time = np.array([timed_tracker.per_epoch.get(e, 0.0) for e in epochs])
    plain = wall - probe_time - tracker_time
    probe_epochs = [e for e in epochs if (e + 1) % args.every == 0]
    iterations = [history["hessian_iterations"][e - first] for e in probe_epochs]
    per_probe = probe_time[[e - first for e in probe_epochs]]

    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, "
          f"experiment {experiment.name} v{experiment.version}, {parameters:,} "
          f"parameters, warm-up {warmup:.1f} s")
    print(f"timed epochs {first}-{last - 1}: epoch without probe/tracker "
          f"median {np.median(plain):.3f} s (mean {plain.mean():.3f} s; "
          "training + validation + RobustEvaluation)")
    print(f"HessianProbe every {args.every}: probes at the end of epochs "
          f"{probe_epochs}, {', '.join(f'{t:.3f} s' for t in per_probe)} "
          f"({', '.join(str(int(i)) for i in iterations)} Hessian-vector products)")
    amortised = probe_time.sum() / len(wall)
    print(f"  amortised probe cost per epoch {amortised:.3f} s = "
          f"{100 * amortised / plain.mean():.1f}% of the epoch (target <= 25%); "
          f"extrapolated to the 100-epoch run: {100 // args.every} probes, "
          f"{100 * amortised:.1f} s on top of {100 * plain.mean():.1f} s")
    print(f"  one probe = PGD-{model.eval_attack.steps} on 256 examples "
          f"({attack_seconds:.3f} s) + Hessian-vector products "
          f"({hvp_seconds:.3f} s each); relative to training alone "
          f"({train_only:.3f} s an epoch, no evaluation): "
          f"{100 * amortised / train_only:.1f}%")
    print(f"PosteriorTracker (every epoch, with the probe's direction): "
          f"{tracker_time.mean():.3f} s per epoch = "
          f"{100 * tracker_time.mean() / plain.mean():.1f}% of the epoch")
    print(f"  accumulators {tracker.nbytes:,} bytes / float32 parameters "
          f"{parameter_bytes:,} bytes = {tracker.nbytes / parameter_bytes:.2f} "
          "(target <= 3; the direction is the probe's float64 array, shared, "
          "not copied: +2.00 if counted)")
    print(f"total {time.perf_counter() - started:.1f} s (timings share the CPU with "
          "anything else running: compare ratios, rerun for spread)")


if __name__ == "__main__":
    main()
