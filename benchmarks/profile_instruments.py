"""Where the main job's time goes: each instrument's hooks timed in one run.

Runs `robustlab.experiments.run(EXPERIMENT, epochs=..., probe_every=...)`
(the main job is `quick`, 100 epochs, instruments every 5) with a timer
around every hook of the callbacks that run besides training and the
validation pass inside `fit`: `RobustEvaluation` (which the hand-written loop
also computes), `HessianProbe`, `PosteriorTracker` (its noise measurement
and its per-step weight cloud shown apart) and `BoundTracker`. The timers
only read the clock: the run logs the numbers it logs without them.

Run: `python benchmarks/profile_instruments.py` (options: `--epochs`,
`--probe-every`, `--experiment`). Prints one row per timed part: calls and
seconds, and the wall time of the whole run.
"""

import argparse
import collections
import contextlib
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from robustlab import experiments  # noqa: E402
from robustlab.callbacks.bound_tracker import BoundTracker  # noqa: E402
from robustlab.callbacks.hessian_probe import HessianProbe  # noqa: E402
from robustlab.callbacks.posterior_tracker import PosteriorTracker  # noqa: E402
from robustlab.callbacks.robust_evaluation import RobustEvaluation  # noqa: E402

HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
         "on_train_batch_end", "on_train_end")

# What each timed method is, in the printed table.
PARTS = {
    "RobustEvaluation.on_epoch_end": "robust accuracy on the training digits",
    "HessianProbe.on_epoch_end": "Hessian probe (attack, power iteration)",
    "PosteriorTracker.on_epoch_begin": "tracker: window start (with the noise)",
    "PosteriorTracker._noise_along": "tracker: noise along the eigenvector",
    "PosteriorTracker.on_epoch_end": "tracker: window end (with the prediction)",
    "PosteriorTracker._observe": "tracker: weight cloud, every step",
    "PosteriorTracker._predict": "tracker: the window's prediction",
    "BoundTracker.on_epoch_end": "PAC-Bayes bound",
}


@contextlib.contextmanager
def timers():
    """Within it, every hook above is timed: yields `(totals, counts)`,
    seconds and calls by "Class.method", filled in as they run. The classes
    are restored on leaving."""
    totals, counts = collections.defaultdict(float), collections.Counter()
    originals = []

    def timed(cls, name):
        method = vars(cls)[name]
        label = f"{cls.__name__}.{name}"

        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start
                counts[label] += 1

        originals.append((cls, name, method))
        setattr(cls, name, wrapper)

    try:
        for cls in (RobustEvaluation, HessianProbe, PosteriorTracker, BoundTracker):
            for name in HOOKS:
                if name in vars(cls):
                    timed(cls, name)
        for name in ("_noise_along", "_observe", "_predict"):
            timed(PosteriorTracker, name)
        yield totals, counts
    finally:
        for cls, name, method in reversed(originals):
            setattr(cls, name, method)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="quick")
    parser.add_argument("--epochs", type=int, default=None,
                        help="the experiment's own when not given (quick: 100)")
    parser.add_argument("--probe-every", type=int, default=5)
    args = parser.parse_args()
    with timers() as (totals, counts):
        start = time.perf_counter()
        experiments.run(args.experiment, None, epochs=args.epochs,
                        probe_every=args.probe_every or None, verbose=0)
        wall = time.perf_counter() - start
    print(f"{args.experiment}, epochs={args.epochs or 'its own'}, "
          f"probe_every={args.probe_every}: {wall:.1f} s wall")
    print(f"{'part':48s} {'calls':>6s} {'s':>8s}")
    for label in sorted(totals, key=totals.get, reverse=True):
        if totals[label] >= 0.005:
            print(f"{PARTS.get(label, label):48s} {counts[label]:6d} {totals[label]:8.2f}")
    print("(a window's start includes its noise measurement and its end the "
          "prediction; the weight cloud runs inside the training step)")


if __name__ == "__main__":
    main()
