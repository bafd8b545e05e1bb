"""Overhead of the curvature probe and memory of the posterior tracker on the
README's quick run.

In one process, on the `quick` experiment (1000 digits, the
272,586-parameter CNN, PGD-3 training, per-epoch evaluation with PGD-10 of
the 797 test and 300 training examples), after one warm-up epoch and one
warm-up of the probe's compiled functions, it trains two stretches of 10
epochs each, one after the other:

- with HessianProbe(every=5, iterations=20, 256 training examples): the top
  eigenvalue of the robust loss (PGD-10 examples crafted once), at the end of
  every fifth epoch (epochs 4 and 9, then 14 and 19), i.e. as often as in a
  100-epoch run, and
  PosteriorTracker(probe) measuring every epoch's window (float32 Welford
  accumulators of every iterate, the projection on the probe's
  eigenvector, and at each window start the per-example directional
  derivatives of 256 PGD-3 examples);
- with the probe alone.

The probe is wrapped so that the time spent in its hooks is measured; the
epoch time without probe and tracker is the wall time of an epoch of the
second stretch minus that. Amortised probe cost per epoch = total probe
time / epochs (a probe every 5 epochs, so 10 epochs contain 2 probes, the
same ratio as 20 probes in the 100 epochs of the full run). The tracker's
cost is the median epoch of the first stretch minus that of the second
(probe hooks excluded from both): its hooks, and its per-iterate work,
which an `AdversarialModel` runs inside its compiled step
(`observe_iterates`), where no hook sees it. Both parts are also listed on
their own: the time in the tracker's hooks, and the host time of its
iterate observer inside the step. It prints; it asserts nothing.
Targets: probe cost per epoch / epoch time <= 25%; tracker accumulator bytes
/ parameter bytes <= 3.

    KERAS_BACKEND=tensorflow python benchmarks/bench_probes.py
    KERAS_BACKEND=jax python benchmarks/bench_probes.py

About a minute and a half on 2 CPU cores (TensorFlow). `--epochs 2 --every 1`
for a smoke run.
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


class InStepClock:
    """Times the tracker's iterate observer, which an `AdversarialModel`
    calls from inside its compiled step (`observe_iterates`): no callback
    hook covers it. Seconds and calls are booked to the epoch `timed` (the
    tracker's `Timed` wrapper) is in. The tracker registers its observer in
    `on_train_begin`, so this must wrap it before `fit`."""

    def __init__(self, tracker, timed):
        self.seconds, self.calls = {}, {}
        original = tracker._observe

        def observe(*args):
            start = time.perf_counter()
            try:
                original(*args)
            finally:
                epoch = timed._epoch
                self.seconds[epoch] = (self.seconds.get(epoch, 0.0)
                                       + time.perf_counter() - start)
                self.calls[epoch] = self.calls.get(epoch, 0) + 1

        tracker._observe = observe


def timed_stretch(model, x, y, first, epochs, probe, tracker=None, callbacks=(),
                  **fit_kwargs):
    """Fit epochs `first` .. `first + epochs - 1` with `probe` (and `tracker`)
    timed, between `callbacks` (the rest of the run's); returns per-epoch
    arrays: `wall`, `probe` (its hooks), `tracker` (its hooks), `in_step`
    and `in_step_calls` (its observer inside the step), and `history`."""
    clock = EpochClock()
    timed_probe = Timed(probe)
    timed = [timed_probe]
    if tracker is not None:
        timed_tracker = Timed(tracker)
        in_step = InStepClock(tracker, timed_tracker)
        timed.append(timed_tracker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            x, y, initial_epoch=first, epochs=first + epochs, verbose=0,
            callbacks=[clock, *callbacks, *timed, clock.stop()], **fit_kwargs).history
    numbered = range(first, first + epochs)

    def per_epoch(values, default=0.0):
        return np.array([values.get(e, default) for e in numbered])

    stretch = {"epochs": list(numbered), "history": history,
               "wall": per_epoch(clock.seconds), "probe": per_epoch(timed_probe.per_epoch)}
    if tracker is not None:
        stretch.update(tracker=per_epoch(timed_tracker.per_epoch),
                       in_step=per_epoch(in_step.seconds),
                       in_step_calls=per_epoch(in_step.calls, 0))
    return stretch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args(argv)

    experiment = experiments.get("quick")
    # Compiled as the main job compiles it (`experiments.run`): a whole epoch a
    # call, so that the epoch the shares are of is the main job's epoch.
    dataset, model = experiments.build(experiment, steps_per_execution="epoch")
    x, y = dataset.x_train, dataset.y_train
    validation_data = (dataset.x_test, dataset.y_test)
    net = model.model
    parameters = int(sum(math.prod(v.shape) for v in net.trainable_variables))
    parameter_bytes = int(sum(np.dtype(v.dtype).itemsize * math.prod(v.shape)
                              for v in net.trainable_variables))

    def callbacks():
        return [experiment.schedule.callback(),
                RobustEvaluation(x[:experiment.eval_train_examples],
                                 y[:experiment.eval_train_examples],
                                 batch_size=experiment.eval_batch_size)]

    # Warm-up: one epoch (traces training, validation and evaluation), and the
    # probe's attack and Hessian-vector product once.
    started = time.perf_counter()
    # Validated in batches of eval_batch_size, as `experiments.run` does
    # (Keras's default, the training batch of 64, made the epoch 19% longer).
    fit_kwargs = dict(batch_size=experiment.batch_size, validation_data=validation_data,
                      validation_batch_size=experiment.eval_batch_size)
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks(), **fit_kwargs)
    loss = model.loss
    x_probe, y_probe = x[:256], y[:256]
    x_adv = attacks.run_attack(net, x_probe, y_probe, model.eval_attack, loss=loss,
                               seed=0)
    curvature.top_hessian_eigenvalue(net, x_adv, y_probe, loss=loss, iterations=2,
                                     batch_size=256)
    warmup = time.perf_counter() - started

    def new_probe():
        return HessianProbe(x_probe, y_probe, every=args.every, iterations=20,
                            batch_size=256)

    probe = new_probe()
    tracker = PosteriorTracker(probe, batch_size=experiment.batch_size,
                               train_size=len(x), schedule=experiment.schedule)
    first = 1
    tracked = timed_stretch(model, x, y, first, args.epochs, probe, tracker,
                            callbacks(), **fit_kwargs)
    first += args.epochs
    untracked = timed_stretch(model, x, y, first, args.epochs, new_probe(), None,
                              callbacks(), **fit_kwargs)
    last = first + args.epochs

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

    plain = untracked["wall"] - untracked["probe"]
    with_tracker = tracked["wall"] - tracked["probe"]
    tracker_cost = float(np.median(with_tracker) - np.median(plain))
    probe_time = untracked["probe"]
    epochs = untracked["epochs"]
    probe_epochs = [e for e in epochs if (e + 1) % args.every == 0]
    iterations = [untracked["history"]["hessian_iterations"][e - epochs[0]]
                  for e in probe_epochs]
    per_probe = probe_time[[e - epochs[0] for e in probe_epochs]]

    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, "
          f"experiment {experiment.name} v{experiment.version}, {parameters:,} "
          f"parameters, warm-up {warmup:.1f} s")
    print(f"epochs {tracked['epochs'][0]}-{tracked['epochs'][-1]} with probe and "
          f"tracker, {epochs[0]}-{epochs[-1]} with the probe alone")
    print(f"epoch without probe/tracker (epochs {epochs[0]}-{epochs[-1]}) median "
          f"{np.median(plain):.3f} s (mean {plain.mean():.3f} s; training + validation "
          "+ RobustEvaluation)")
    print(f"HessianProbe every {args.every}: probes at the end of epochs "
          f"{probe_epochs}, {', '.join(f'{t:.3f} s' for t in per_probe)} "
          f"({', '.join(str(int(i)) for i in iterations)} Hessian-vector products)")
    amortised = probe_time.sum() / len(plain)
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
          f"{tracker_cost:.3f} s per epoch = {100 * tracker_cost / np.median(plain):.1f}% "
          f"of the epoch (median epoch with it {np.median(with_tracker):.3f} s minus "
          "median epoch without it; a difference of two noisy medians: rerun for spread)")
    print(f"  of which in its hooks {tracked['tracker'].mean():.3f} s per epoch, and in its "
          f"iterate observer inside the step {tracked['in_step'].mean():.3f} s per epoch "
          f"({int(np.median(tracked['in_step_calls']))} iterates an epoch; host time, "
          "without the hand-over from the compiled step)")
    print(f"  accumulators {tracker.nbytes:,} bytes / float32 parameters "
          f"{parameter_bytes:,} bytes = {tracker.nbytes / parameter_bytes:.2f} "
          "(target <= 3; the direction is the probe's float64 array, shared, "
          "not copied: +2.00 if counted)")
    print(f"total {time.perf_counter() - started:.1f} s (timings share the CPU with "
          "anything else running: compare ratios, rerun for spread)")


if __name__ == "__main__":
    main()
