"""Named, versioned experiment configurations and the runner that reproduces
them.

An `Experiment` states everything a run depends on; `EXPERIMENTS` holds the
named ones (their `version` changes whenever a setting does, and is written
next to every result). `run` trains one experiment with `AdversarialModel` and
writes into an output folder:

- `config.json`: the experiment, the backend, the package version and the
  identity of the code that made the run (`robustlab.provenance`; a run is
  resumed only by that code);
- `history.csv` and `history.json`: one row per epoch of every logged number
  (NaN where a key was not logged, e.g. between probes: null in the JSON
  files, which are standard JSON; `robustlab.run_checkpoint.read_history`
  reads it back as NaN);
- `summary.json`: the robust-overfitting figures of `summarize`;
- `curves.png`: the learning curves (`robustlab.plots.learning_curves`).

`"quick"` is the course's setting, where robust overfitting, the collapse at
the learning-rate drop and (with AWP) its trade-off show on the embedded
digits data in one to two minutes a run on two CPU cores (docs/RESULTS.md
has what it measures over 8 seeds).
"""

import collections.abc
import dataclasses
import json
import math
import numbers
import os
import shutil
import time
import warnings

import keras
import numpy as np

from robustlab import data as data_module
from robustlab import models as models_module
from robustlab import plots
from robustlab import provenance
from robustlab import run_checkpoint
from robustlab import schedules
from robustlab import validation
from robustlab._version import __version__
from robustlab.adversarial import AdversarialModel
from robustlab.attacks import PGD
from robustlab.awp import AWP
from robustlab.callbacks.bound_tracker import BoundTracker
from robustlab.callbacks.hessian_probe import HessianProbe
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from robustlab.callbacks.robust_evaluation import RobustEvaluation
from robustlab.progress import EpochTable
from robustlab.schedules import PiecewiseConstant

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "PRIOR_VARIANCE",
    "PROBE_EXAMPLES",
    "QUICK",
    "RESUME_DIR",
    "build",
    "get",
    "instruments",
    "run",
    "summarize",
]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Every setting of one adversarial-training run.

    `eval_batch_size` is the batch of the per-epoch robust evaluations
    (validation and the training subset): the attack's random starts are drawn
    batch by batch, so it is part of what the numbers depend on; 256 costs
    about half the time of the training batch size on CPU.

    Weight decay follows the PyTorch / Rice et al. convention: `weight_decay
    * w` is added to the gradient of every weight and bias (Keras
    `L2(weight_decay / 2)`), so it passes through momentum.

    The ranges below are checked when the experiment is made (`ValueError`
    or `TypeError` otherwise); `dataset`, `model_kwargs` and `train_size`
    against the size of the data are checked by `build`.

    Args:
        name: the experiment's name (its key in `EXPERIMENTS`; in titles
            and `config.json`). `replace` keeps it.
        version: an integer that changes whenever a setting of the named
            experiment does; written next to every result.

        dataset: one of `robustlab.data.AVAILABLE_DATASETS`: `"digits"`
            (embedded, offline) or a tensorflow-datasets name.
        train_size: training examples (class-balanced), an integer >= 1;
            None: the dataset's default (`robustlab.data.load`).
        label_noise: the fraction of training labels replaced by another
            class, a number in [0, 1).
        data_seed: seeds the splits and the label noise, an integer in
            [0, 2**31 - 1].

        model: the name of a builder in `robustlab.models`: `"small_cnn"`,
            `"mlp"` or `"preact_resnet18"`.
        model_kwargs: more keyword arguments of the builder, as a tuple of
            `(name, value)` pairs, e.g. `(("filters", (32, 64)),)`; not
            `input_shape`, `num_classes` (the dataset's), `seed` or
            `weight_decay` (the experiment's own settings).
        weight_decay: the coefficient above, finite and >= 0.

        epochs: training epochs, an integer >= 1.
        batch_size: training batch size, an integer >= 1.
        learning_rate: the SGD learning rate before the first drop, finite
            and > 0.
        lr_drop_epochs: the (0-based) epochs from which the learning rate is
            multiplied by `lr_drop_factor` once more
            (`robustlab.schedules.PiecewiseConstant`): integers, strictly
            increasing and >= 1; any sequence, kept as a tuple.
        lr_drop_factor: finite and in (0, 1].
        momentum: the heavy-ball momentum of Keras `SGD`, a number in [0, 1).

        eps: the L-inf radius of the training and evaluation attacks, finite
            and >= 0.
        train_steps: PGD steps of the training attack, an integer >= 1.
        train_step_size: its step, finite and > 0; None: `PGD`'s default,
            `2.5 * eps / train_steps`.
        eval_steps: PGD steps of the evaluation attack (validation and the
            training subset), an integer >= 1.
        eval_step_size: its step, finite and > 0; None: `eps / 4`.

        eval_train_examples: the first training examples on which the robust
            training accuracy is measured every epoch (all of them when
            fewer), an integer >= 1.
        eval_batch_size: the batch of the per-epoch robust evaluations (see
            above), an integer >= 1.

        awp_gamma: AWP's relative weight perturbation (`robustlab.awp.AWP`),
            finite and >= 0; 0 trains without AWP.
        awp_warmup_epochs: epochs of plain adversarial training before AWP
            starts, an integer >= 0.

        seed: seeds the weight initialisation, the attacks' random starts
            and the epoch order, an integer in [0, 2**31 - 1].

    Example:

    >>> from robustlab.experiments import Experiment, get
    >>> quick = get("quick")
    >>> quick.epochs, quick.batch_size, quick.eps, quick.train_steps
    (100, 64, 0.1, 3)
    >>> round(quick.train_attack.step_size, 6)  # 2.5 * eps / train_steps
    0.083333
    >>> shorter = quick.replace(epochs=10, awp_gamma=0.005)
    >>> shorter.name, shorter.epochs, shorter.awp_gamma
    ('quick', 10, 0.005)
    >>> Experiment(name="mine", version=1, momentum=1.0)
    Traceback (most recent call last):
    ...
    ValueError: Argument `momentum` must be a number in [0, 1). Received: momentum=1.0
    """

    name: str
    version: int
    dataset: str = "digits"
    train_size: int = 1000
    label_noise: float = 0.2
    data_seed: int = 0
    model: str = "small_cnn"
    model_kwargs: tuple = ()
    weight_decay: float = 5e-4
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 0.2
    lr_drop_epochs: tuple = (40,)
    lr_drop_factor: float = 0.1
    momentum: float = 0.9
    eps: float = 0.1
    train_steps: int = 3
    train_step_size: float = None
    eval_steps: int = 10
    eval_step_size: float = None
    eval_train_examples: int = 300
    eval_batch_size: int = 256
    awp_gamma: float = 0.0
    awp_warmup_epochs: int = 10
    seed: int = 0

    def __post_init__(self):
        # The settings a user changes (the command's --epochs, --awp-gamma)
        # and those whose bad values would otherwise pass unnoticed: a
        # negative gamma, say, would train without AWP.
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1),
                              ("train_steps", 1), ("eval_steps", 1),
                              ("awp_warmup_epochs", 0)):
            validation.check_int_at_least(name, getattr(self, name), minimum)
        validation.check_finite_at_least("awp_gamma", self.awp_gamma, 0.0)
        validation.check_finite_positive("learning_rate", self.learning_rate)
        validation.check_int_at_least("eval_train_examples", self.eval_train_examples, 1)
        if self.train_size is not None:
            validation.check_int_at_least("train_size", self.train_size, 1)
        for name in ("seed", "data_seed"):
            validation.check_seed(name, getattr(self, name))
        validation.check_finite_at_least("eps", self.eps, 0.0)
        validation.check_finite_at_least("weight_decay", self.weight_decay, 0.0)
        # Checked here, under the Experiment's names: PiecewiseConstant would
        # refuse them only when `run` builds the schedule, as `drop_epochs`
        # and `factor`.
        drops, _ = schedules.check_drops(self.lr_drop_epochs, self.lr_drop_factor,
                                         names=("lr_drop_epochs", "lr_drop_factor"))
        # Kept as a tuple of ints whatever sequence gave it: a list made the
        # experiment unhashable and unequal to the same one made with a tuple.
        object.__setattr__(self, "lr_drop_epochs", drops)
        for name in ("train_step_size", "eval_step_size"):
            if getattr(self, name) is not None:
                validation.check_finite_positive(name, getattr(self, name))
        for name, value in (("label_noise", self.label_noise), ("momentum", self.momentum)):
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not 0.0 <= value < 1.0):
                raise ValueError(f"Argument `{name}` must be a number in [0, 1). "
                                 f"Received: {name}={value!r}")
        if self.model not in models_module.__all__:
            raise ValueError(
                f"Argument `model` must name one of robustlab.models: "
                f"{', '.join(models_module.__all__)}. Received: model={self.model!r}")
        # Checked here too, not only when `run` loads the data: a typo would
        # otherwise pass until then.
        if self.dataset not in data_module.AVAILABLE_DATASETS:
            raise ValueError(
                "Argument `dataset` must be one of "
                f"{', '.join(repr(n) for n in data_module.AVAILABLE_DATASETS)}. "
                f"Received: dataset={self.dataset!r}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError("Argument `name` must be a non-empty str (it names the run's "
                            f"results). Received: name={self.name!r}")
        validation.check_int_at_least("version", self.version, 1)
        if not (isinstance(self.model_kwargs, tuple)
                and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                        for item in self.model_kwargs)):
            raise TypeError(
                "Argument `model_kwargs` must be a tuple of (name, value) pairs, e.g. "
                f"(('filters', (32, 64)),). Received: model_kwargs={self.model_kwargs!r}")
        # `build` passes these four itself; one in model_kwargs failed there
        # with Python's "got multiple values for keyword argument".
        taken = {"input_shape": "the dataset's", "num_classes": "the dataset's",
                 "seed": "the experiment's `seed`",
                 "weight_decay": "the experiment's `weight_decay`"}
        clashes = [name for name, _ in self.model_kwargs if name in taken]
        if clashes:
            raise ValueError(
                f"Argument `model_kwargs` must not set {clashes[0]!r}: the builder gets "
                f"{taken[clashes[0]]}. Received: model_kwargs={self.model_kwargs!r}")

    @property
    def labels(self):
        """How the training labels were made, for titles and headers:
        "20% label noise" or "clean labels"."""
        return f"{100 * self.label_noise:g}% label noise" if self.label_noise else "clean labels"

    def replace(self, **changes):
        """A copy with some settings changed (the name gains no suffix)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["model_kwargs"] = dict(self.model_kwargs)
        return config

    @property
    def train_attack(self):
        return PGD(self.eps, self.train_step_size, self.train_steps)

    @property
    def eval_attack(self):
        step = self.eval_step_size if self.eval_step_size else self.eps / 4
        return PGD(self.eps, step, self.eval_steps)

    @property
    def schedule(self):
        return PiecewiseConstant(
            self.learning_rate, self.lr_drop_epochs, self.lr_drop_factor
        )


# Version 2: per-epoch evaluation in batches of 256 (version 1 used the
# training batch of 64: the same protocol, other random starts, twice the
# time).
QUICK = Experiment(name="quick", version=2)

EXPERIMENTS = {
    "quick": QUICK,
    # The clean-label contrast. At the quick setting's learning rate of 0.2,
    # clean labels diverge to a constant prediction within a few epochs in 7
    # of 8 seeds (measured with version 2): noisy labels keep the network
    # from growing confident enough to blow up. So the contrast runs at 0.1,
    # next to the same noisy labels at 0.1 (`quick_lr01`): the pair differs
    # in the label noise alone.
    "quick_clean": QUICK.replace(name="quick_clean", version=3, label_noise=0.0,
                                 learning_rate=0.1),
    "quick_lr01": QUICK.replace(name="quick_lr01", learning_rate=0.1),
    # AWP at the gamma where an independent implementation saw the gap
    # shrink by about 60%, and the rest of the sweep of the awp-tradeoff
    # study: up to a gamma that breaks training.
    "quick_awp": QUICK.replace(name="quick_awp", awp_gamma=0.005),
    "quick_awp_0.002": QUICK.replace(name="quick_awp_0.002", awp_gamma=0.002),
    "quick_awp_0.01": QUICK.replace(name="quick_awp_0.01", awp_gamma=0.01),
    "quick_awp_0.02": QUICK.replace(name="quick_awp_0.02", awp_gamma=0.02),
    # The first study's wider CNN with PGD-5 (about 2.5x the compute).
    "original_cnn": QUICK.replace(
        name="original_cnn",
        model_kwargs=(("filters", (32, 64)), ("dense", 256)),
        train_steps=5,
    ),
    # Rice, Wong & Kolter (2020): needs CIFAR-10 through tensorflow-datasets
    # and a GPU; 200 epochs of PGD-10 on PreActResNet-18.
    "cifar10_rice": Experiment(
        name="cifar10_rice", version=2, dataset="cifar10", train_size=None,
        label_noise=0.0, model="preact_resnet18", epochs=200, batch_size=128,
        learning_rate=0.1, lr_drop_epochs=(100, 150), eps=8 / 255,
        train_steps=10, train_step_size=2 / 255, eval_steps=10,
        eval_step_size=2 / 255, eval_train_examples=1000, awp_warmup_epochs=0,
    ),
}
# AWP at full scale: Wu, Xia & Wang (2020) train PGD-AT on CIFAR-10 with
# gamma 0.005 from the first epoch; 0.01 and 0.02 continue the sweep.
for _gamma, _name in ((0.005, "cifar10_rice_awp"), (0.01, "cifar10_rice_awp_0.01"),
                      (0.02, "cifar10_rice_awp_0.02")):
    EXPERIMENTS[_name] = EXPERIMENTS["cifar10_rice"].replace(name=_name, awp_gamma=_gamma)
del _gamma, _name


def get(name):
    """The named experiment; `ValueError` listing the names otherwise.

    Args:
        name: a key of `EXPERIMENTS`, e.g. `"quick"` or `"quick_awp"`.

    Returns:
        The `Experiment`.

    Raises:
        ValueError: for a name not in `EXPERIMENTS` (the message lists
            them), or an experiment registered under another key than its
            `name` (its runs would go to the other's folders, which are
            named after `name`).

    Example:

    >>> from robustlab.experiments import get
    >>> get("quick_awp").awp_gamma
    0.005
    >>> get("slow")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown experiment; available: ... Received: name='slow'
    """
    if not isinstance(name, str):
        # A list raised TypeError: unhashable type, naming nothing.
        raise TypeError(
            f"Argument `name` must be the name of an experiment (a string), one of "
            f"{', '.join(sorted(EXPERIMENTS))}. Received: name={name!r}")
    try:
        experiment = EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"Unknown experiment; available: {', '.join(sorted(EXPERIMENTS))}. "
            f"Received: name={name!r}"
        ) from None
    if not isinstance(experiment, Experiment) or experiment.name != name:
        # `replace` keeps the name: a variant registered as
        # EXPERIMENTS["mine_lr01"] = mine.replace(learning_rate=0.01) wrote its
        # runs into mine's folders, over mine's.
        raise ValueError(
            f"EXPERIMENTS[{name!r}] must be an Experiment named {name!r} (runs and "
            f"their folders are named after it): register it as "
            f"`.replace(name={name!r}, ...)`. Received: EXPERIMENTS[{name!r}]"
            + (f" named {experiment.name!r}" if isinstance(experiment, Experiment)
               else f"={experiment!r}"))
    return experiment


def _warn_if_awp_never_starts(configs, study=None, stacklevel=2):
    """One warning for all those of `configs` (Experiments) that ask for AWP
    (`awp_gamma` > 0) but end before its warm-up is over: they train exactly
    as without AWP. `robustlab train` and `robustlab.studies.reproduce` (a
    study named `study`, whose runs the warning then names) warn with it
    once, before training anything."""
    unperturbed = [config for config in configs
                   if config.awp_gamma > 0 and config.awp_warmup_epochs >= config.epochs]
    if not unperturbed:
        return
    names = ", ".join(sorted({config.name for config in unperturbed}))
    warmup = max(config.awp_warmup_epochs for config in unperturbed)
    epochs = max(config.epochs for config in unperturbed)
    if study is None:
        gammas = ", ".join(sorted({f"{config.awp_gamma:g}" for config in unperturbed}))
        message = (f"{names} with awp_gamma={gammas} and epochs={epochs} ends before "
                   f"AWP's warm-up ({warmup} epochs): it trains exactly as without AWP.")
    else:
        message = (f"{study} with epochs={epochs} ends before AWP's warm-up ({warmup} "
                   f"epochs) in {names}: those runs train exactly as without AWP.")
    warnings.warn(message, stacklevel=stacklevel + 1)


def _experiment(experiment):
    """`experiment`, an `Experiment` or the name of one, as an `Experiment`."""
    if isinstance(experiment, str):
        experiment = get(experiment)
    if not isinstance(experiment, Experiment):
        raise TypeError("Argument `experiment` must be a robustlab.experiments.Experiment "
                        f"or the name of one. Received: experiment={experiment!r}")
    return experiment


def build(experiment, *, steps_per_execution=1):
    """The data and the compiled `AdversarialModel` of an experiment (an
    `Experiment` or the name of one).

    `steps_per_execution` is Keras's (`compile`): the training steps run in
    one compiled call, an integer >= 1 or `"epoch"` (all of an epoch's
    steps). The weights and history are bit for bit those of 1; more saves
    host round trips (see `robustlab.AdversarialModel`), but per-batch
    callbacks then see one batch in so many (`PosteriorTracker` sees every
    iterate all the same: the model hands them over from inside its step).

    Args:
        experiment: an `Experiment`, or the name of one in `EXPERIMENTS`.
        steps_per_execution: an integer >= 1 or `"epoch"` (see above).

    Returns:
        A pair `(dataset, model)`: the `robustlab.data.Dataset` (loaded with
        the experiment's `dataset`, `train_size`, `data_seed` and
        `label_noise`), and the `robustlab.AdversarialModel` around the
        freshly built network, with the training and evaluation attacks
        (and AWP when `awp_gamma > 0`), compiled with Keras `SGD` (the
        learning rate before any drop, and the momentum), a sparse
        cross-entropy on logits and the accuracy metric. The learning-rate
        schedule is not attached: pass `experiment.schedule.callback()` to
        `fit`, as `run` does.

    Raises:
        TypeError: when `experiment` is neither an `Experiment` nor a
            string, or `steps_per_execution` is neither an integer nor
            `"epoch"`.
        ValueError: for an unknown name, an integer `steps_per_execution`
            < 1, or a `dataset` / `train_size` that `robustlab.data.load`
            refuses.

    Example:

    >>> from robustlab.experiments import build, get
    >>> dataset, model = build(get("quick").replace(train_size=100))
    >>> dataset.x_train.shape, model.attack.steps, model.eval_attack.steps
    ((100, 8, 8, 1), 3, 10)
    >>> type(model.optimizer).__name__, model.optimizer.momentum
    ('SGD', 0.9)
    """
    experiment = _experiment(experiment)
    integer = (isinstance(steps_per_execution, numbers.Integral)
               and not isinstance(steps_per_execution, bool))
    if steps_per_execution != "epoch" and not (integer and steps_per_execution >= 1):
        raise (ValueError if integer else TypeError)(
            'Argument `steps_per_execution` must be an integer >= 1 or "epoch". '
            f"Received: steps_per_execution={steps_per_execution!r}")
    dataset = data_module.load(
        experiment.dataset, train_size=experiment.train_size,
        seed=experiment.data_seed, label_noise=experiment.label_noise,
    )
    if steps_per_execution == "epoch":
        steps_per_execution = -(-len(dataset.x_train) // experiment.batch_size)
    builder = getattr(models_module, experiment.model)
    net = builder(
        input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        seed=experiment.seed, weight_decay=experiment.weight_decay,
        **dict(experiment.model_kwargs),
    )
    awp = None
    if experiment.awp_gamma > 0:
        awp = AWP(experiment.awp_gamma, warmup_epochs=experiment.awp_warmup_epochs)
    model = AdversarialModel(
        net, attack=experiment.train_attack, eval_attack=experiment.eval_attack,
        awp=awp, seed=experiment.seed,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(experiment.learning_rate,
                                       momentum=experiment.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return dataset, model


PROBE_EXAMPLES = 256
"""Training examples the Hessian probe and the noise measurement use."""

PRIOR_VARIANCE = 1e-2
"""sigma_0^2 of the PAC-Bayes prior N(w_0, sigma_0^2 I) in `run`'s bound."""


def instruments(experiment, dataset, probe_every, state_dir=None):
    """The course's probes for a run: the top Hessian eigenvalue of the
    robust loss every `probe_every` epochs (20 power iterations on the first
    256 training examples), the within-epoch weight cloud measured and
    predicted along its eigenvector, and the time-resolved PAC-Bayes bound
    (0-1 robust training error, prior N(w_0, PRIOR_VARIANCE I)). With
    `state_dir`, the probe's last eigenvector and the bound's w_0 are kept
    there, so a resumed run logs what an uninterrupted one would."""
    # The posterior tracker would refuse this only when training starts
    # (`on_train_begin`), after `run` has replaced an earlier run.
    steps = -(-len(dataset.x_train) // experiment.batch_size)
    if steps < 2:
        raise ValueError(
            "The instruments measure the weight cloud within an epoch, which needs "
            f"at least 2 training steps an epoch; {len(dataset.x_train)} training "
            f"examples in batches of {experiment.batch_size} make {steps}. Use a "
            f"smaller `batch_size`, or no instruments (probe_every=None; `--probe-every 0` "
            "in `robustlab train`). "
            f"Received: batch_size={experiment.batch_size}")
    x = dataset.x_train[:PROBE_EXAMPLES]
    y = dataset.y_train[:PROBE_EXAMPLES]
    probe = HessianProbe(x, y, every=probe_every, iterations=20, state_dir=state_dir)
    tracker = PosteriorTracker(probe, batch_size=experiment.batch_size,
                               train_size=len(dataset.x_train),
                               schedule=experiment.schedule)
    bound = BoundTracker(len(dataset.x_train), prior_variance=PRIOR_VARIANCE,
                         tracker=tracker, state_dir=state_dir)
    return [probe, tracker, bound]


RESUME_DIR = "resume"
"""The sub-folder of a run's output folder that holds its newest epoch
checkpoint and the instruments' state while it trains (removed when the run
finishes)."""


def run(experiment, out_dir=None, *, callbacks=(), verbose=1, epochs=None,
        probe_every=None, resume=False, reference=None):
    """Train `experiment` and, with `out_dir`, write its results there.

    With `out_dir`, the run is resumable: after every epoch the model's
    state, the history so far and the instruments' state are checkpointed
    in `out_dir/resume/` (`robustlab.run_checkpoint`), so a run killed at any
    moment and started again with `resume=True` redoes at most the epoch it
    was killed in and ends with the history of an uninterrupted run.

    Args:
        experiment: an `Experiment` or the name of one.
        out_dir: folder for config.json, history.csv/json, summary.json and
            curves.png (created); None writes nothing.
        callbacks: extra Keras callbacks, any iterable of
            `keras.callbacks.Callback` (run after the robust training-set
            evaluation, so they see its numbers). Unless one of them has a
            per-batch training or validation hook (`on_train_batch_*`,
            `on_batch_*`, `on_test_batch_*`), each epoch trains in one
            compiled call (Keras's `steps_per_execution`; the same numbers
            bit for bit, fewer host round trips; the instruments see every
            iterate either way); with one, one step a call, so that
            per-batch hooks see every batch.
        verbose: 1 prints a per-epoch table with a progress bar, 0 nothing.
        epochs: override the number of epochs (for a shorter look).
        probe_every: add the `instruments` (Hessian probe every this many
            epochs, posterior tracker, PAC-Bayes bound); None: none.
        resume: True or False. Continue the run in `out_dir` from its last
            checkpoint, or, when it finished (its summary.json is written;
            a run a callback stopped early finished too), return its results
            without training; the folder must hold a run of the same
            experiment and instruments (`ValueError` otherwise). Without it,
            a run already in `out_dir` is replaced, once every setting has
            been checked.
        reference: `(curves, seeds)` of other runs of this setting
            (`robustlab.studies.reference_curves`) that curves.png draws
            this run against; None: the run alone.

    Returns:
        `(history, summary)`: the per-epoch logs as a dict of lists, and
        `summarize(history, ...)` (with `seconds`, the training time of all
        attempts together).
    """
    # Checked first: a study's Arm or an experiment's dict raised
    # AttributeError in `replace`.
    experiment = _experiment(experiment)
    if epochs is not None:
        experiment = experiment.replace(epochs=epochs)
    callbacks = _check_callbacks(callbacks)
    resume = validation.check_bool("resume", resume)
    if probe_every is not None:
        validation.check_int_at_least("probe_every", probe_every, 1)
    verbose = validation.check_verbose(verbose)
    if resume and out_dir is None:
        raise ValueError("Resuming needs the folder of the run to resume. "
                         "Received: out_dir=None, resume=True")
    if out_dir is not None:
        # An empty path is refused: as the current folder, its history.json
        # would be removed.
        validation.check_folder("out_dir", out_dir)
    _check_reference(reference)
    config = _run_config(experiment, probe_every)
    resume_dir = None if out_dir is None else os.path.join(out_dir, RESUME_DIR)
    if resume:
        finished = _resumable(out_dir, config, experiment)
        if finished is not None:
            return finished
    # A callback that looks at single batches (the instruments' weight
    # cloud) needs them one a call; otherwise a whole epoch runs in one
    # compiled call: the same numbers bit for bit, without a host round trip
    # a step.
    # The instruments see every iterate whatever steps_per_execution (the
    # model hands the iterates over from inside its compiled step).
    watches_batches = any(map(_watches_batches, callbacks))
    # Built (and so checked) before anything of an earlier run is removed:
    # a setting refused here must leave that run as it was.
    dataset, model = build(
        experiment, steps_per_execution=1 if watches_batches else "epoch")
    n_eval = min(experiment.eval_train_examples, len(dataset.x_train))
    all_callbacks = [
        experiment.schedule.callback(),
        RobustEvaluation(dataset.x_train[:n_eval], dataset.y_train[:n_eval],
                         prefix="train_", batch_size=experiment.eval_batch_size),
        # (They read the state kept in `resume_dir` only when training starts.)
        *(instruments(experiment, dataset, probe_every, state_dir=resume_dir)
          if probe_every else []),
        *callbacks,
    ]
    if not resume and out_dir is not None:
        # A fresh run: nothing of an earlier run in this folder may be
        # mistaken for its results or resumed into it.
        shutil.rmtree(resume_dir, ignore_errors=True)
        for name in _OUTPUTS:
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    initial_epoch, earlier, elapsed = 0, {}, 0.0
    if resume:
        initial_epoch, earlier, elapsed = run_checkpoint.restore_checkpoint(model, resume_dir)
    if verbose:
        all_callbacks.append(EpochTable())
    checkpoint = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        run_checkpoint.write_json_atomically(
            os.path.join(out_dir, "config.json"), config, indent=2)
        # Last: it stores the logs every other callback wrote into.
        checkpoint = run_checkpoint.EpochCheckpoint(resume_dir, earlier, elapsed)
        all_callbacks.append(checkpoint)
    started = time.perf_counter()
    history = model.fit(
        dataset.x_train, dataset.y_train, batch_size=experiment.batch_size,
        epochs=experiment.epochs, initial_epoch=initial_epoch, verbose=0,
        callbacks=all_callbacks, validation_data=(dataset.x_test, dataset.y_test),
        validation_batch_size=experiment.eval_batch_size,
    ).history
    seconds = time.perf_counter() - started + elapsed
    if checkpoint is not None:
        history = checkpoint.history
    history = {k: [float(v) for v in values] for k, values in history.items()}
    summary = summarize(history, drop_epoch=min(experiment.lr_drop_epochs, default=None))
    summary["seconds"] = seconds
    # A setting, not a figure: the summary says which labels it is about.
    summary["label_noise"] = experiment.label_noise
    if out_dir is not None:
        _write_outputs(experiment, out_dir, history, summary, reference)
        shutil.rmtree(resume_dir)
    return history, summary


# Every file `_write_outputs` writes: a fresh run removes them all before it
# starts, so that a run stopped early (Ctrl-C, a non-finite loss) never
# leaves its config.json beside an earlier run's history or figure.
_OUTPUTS = ("history.json", "history.csv", "curves.png", "summary.json")

# What a finished or checkpointed run in a folder must share with the run
# asked for to be resumed or reused (`_resumable`,
# `robustlab.studies.reproduce`).
_SAME_RUN_KEYS = ("experiment", "probe_every", "backend", "code", "hardware", "cpu_threads")


def _run_config(experiment, probe_every):
    """What `run` writes into config.json."""
    return {
        "experiment": experiment.to_dict(),
        "probe_every": probe_every,
        "backend": keras.backend.backend(),
        "robustlab_version": __version__,
        "keras_version": keras.__version__,
        "code": provenance.code_identity(),
        "hardware": provenance.hardware(),
        "cpu_threads": provenance.run_cpu_threads(),
    }


# The validation at the end of every epoch runs with the training's
# `steps_per_execution` too: a test-batch hook would see one batch in so many.
_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin",
                "on_batch_end", "on_test_batch_begin", "on_test_batch_end")


def _check_callbacks(callbacks):
    """`callbacks` as a list (a generator is read once, here), each a Keras
    callback."""
    try:
        given = list(callbacks)
    except TypeError:
        given = None
    if given is None or not all(isinstance(c, keras.callbacks.Callback) for c in given):
        # What a generator held, since it is spent now.
        shown = given if given is not None and iter(callbacks) is callbacks else callbacks
        raise TypeError(
            "Argument `callbacks` must be an iterable of keras.callbacks.Callback "
            f"(a list, possibly empty). Received: callbacks={shown!r}")
    return given


def _check_reference(reference):
    """`reference` must be None or `(curves, seeds)` as
    `robustlab.studies.reference_curves` returns it: checked before training,
    not when curves.png is drawn at the end."""
    if reference is None:
        return
    pair = (isinstance(reference, (tuple, list)) and len(reference) == 2
            and isinstance(reference[0], collections.abc.Mapping)
            and isinstance(reference[1], numbers.Integral)
            and not isinstance(reference[1], bool))
    if not pair or reference[1] < 1:
        # The curves are arrays over every epoch: named, not printed.
        def shown(value):
            if isinstance(value, collections.abc.Mapping):
                return f"<{type(value).__name__} of {len(value)} keys>"
            return repr(value)

        if isinstance(reference, (tuple, list)):
            received = f"({', '.join(map(shown, reference))})"
        else:
            received = shown(reference)
        raise (ValueError if pair else TypeError)(
            "Argument `reference` must be None or a pair (curves, seeds): a dict "
            "{key: (mean, stderr)} and the number of seeds >= 1 it averages, as "
            "robustlab.studies.reference_curves returns. "
            f"Received: reference={received}")


def _watches_batches(callback):
    """Whether a Keras callback overrides a per-batch training or validation
    hook, in its class or on the instance (`keras.callbacks.LambdaCallback`
    sets the hooks it is given as instance attributes)."""
    return any(hook in vars(callback)
               or getattr(type(callback), hook, None) is not getattr(keras.callbacks.Callback, hook)
               for hook in _BATCH_HOOKS)


def _differences(saved, given):
    """" (epochs 6 there, 7 here)" for two settings dicts; the saved value
    for anything else."""
    if not (isinstance(saved, dict) and isinstance(given, dict)):
        return f" ({saved!r})"
    changed = [f"{key} {saved.get(key)!r} there, {given.get(key)!r} here"
               for key in sorted(set(saved) | set(given)) if saved.get(key) != given.get(key)]
    return f" ({'; '.join(changed)})"


def _resumable(out_dir, config, experiment):
    """Check that `out_dir` holds (the start of) this run; its results when
    it finished, else None (nothing there yet, or a checkpoint to resume)."""
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError as error:
        raise ValueError(
            f"{path} cannot be read ({error.strerror or error}), so the run there "
            f"cannot be resumed. Received: out_dir={out_dir!r}") from None
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        # Empty, cut short, not JSON, or JSON of something else: not a run
        # to continue, and not one to train over unasked.
        raise ValueError(
            f"{path} is not a robustlab run's config (it cannot be read as one: "
            "empty, damaged or another program's), so there is no run to resume "
            "there: remove it, or write to another folder. "
            f"Received: out_dir={out_dir!r}")
    # The same backend too: the other one gives other last digits; and the
    # same code, hardware and CPU thread count (`robustlab.provenance`), or the
    # resumed results would mix two codes' (or two machines') numbers.
    for key in _SAME_RUN_KEYS:
        if saved.get(key) != json.loads(json.dumps(config[key])):
            if key == "hardware":
                raise ValueError(
                    f"{out_dir} holds a run made on other hardware ({saved.get(key)!r}), "
                    "and the hardware changes a run's last digits: continue it on that "
                    "kind of machine, or train it again here (without resuming). "
                    f"Received: hardware={config[key]!r}")
            if key == "cpu_threads":
                raise ValueError(
                    f"{out_dir} holds a run made on {saved.get(key)} CPU threads, and "
                    "the thread count changes a CPU run's last digits: continue it on "
                    f"as many (`--threads {saved.get(key)}` on TensorFlow), or train "
                    "it again (without resuming). "
                    f"Received: cpu_threads={config[key]}")
            if key == "code":
                raise ValueError(
                    f"{out_dir} holds a run made by other code ({saved.get(key)!r}): "
                    "only the code that started a run can continue or reuse it, "
                    "so train it again (without resuming) or write to another "
                    f"folder. Received: code={config[key]!r}")
            raise ValueError(
                f"{out_dir} holds a run with another `{key}`"
                f"{_differences(saved.get(key), json.loads(json.dumps(config[key])))}; "
                f"resume it with the same settings, or write to another folder. "
                f"Received: {key}={config[key]!r}")
    try:
        history = run_checkpoint.read_history(out_dir)
        with open(os.path.join(out_dir, "summary.json")) as f:
            # (null: a figure that was NaN, as `write_json_atomically` writes it)
            summary = {key: math.nan if value is None else value
                       for key, value in json.load(f).items()}
    except (OSError, ValueError):
        return None
    # summary.json is written last (`_write_outputs`): with it the run
    # finished, also where a callback stopped it before `epochs`
    # (EarlyStopping). A fresh run removes an earlier run's history.json and
    # summary.json before it writes its config.json; should they be left
    # all the same (copied in), a history longer than this run, or one the
    # summary does not describe, is not this run's: it is trained again.
    epochs = len(history.get("loss", ()))
    if not 1 <= epochs <= experiment.epochs or summary.get("epochs") != epochs:
        return None
    # A checkpoint left beside the results is one a kill kept from being
    # removed.
    shutil.rmtree(os.path.join(out_dir, RESUME_DIR), ignore_errors=True)
    return history, summary


def _write_outputs(experiment, out_dir, history, summary, reference=None):
    # summary.json last, once everything else is in place: it is what marks
    # the run finished (`_resumable`), so a run killed before it is completed
    # by --resume, figure included. Each file is renamed into place whole.
    run_checkpoint.write_history(history, out_dir)
    curves, seeds = reference if reference is not None else (None, 0)
    figure = plots.learning_curves(
        history, drop_epochs=experiment.lr_drop_epochs,
        title=(f"{experiment.name} (v{experiment.version}, seed {experiment.seed}, "
               f"{experiment.labels})"),
        reference=curves, reference_label=f"dashed: {seeds} seeds' mean +/- s.e.",
    )
    path = os.path.join(out_dir, "curves.png")
    try:
        figure.savefig(path + ".partial", format="png", dpi=110)
    finally:
        plots.close(figure)
    os.replace(path + ".partial", path)
    run_checkpoint.write_json_atomically(
        os.path.join(out_dir, "summary.json"), summary, indent=2)


def summarize(history, drop_epoch=None, final_epochs=3):
    """The robust-overfitting figures of one run's history.

    Args:
        history: per-epoch logs with `val_robust_accuracy`, finite at every
            epoch, and `val_robust_loss` (and optionally
            `train_robust_accuracy`).
        drop_epoch: the first learning-rate drop (0-based, an integer >= 1,
            as an `Experiment`'s `lr_drop_epochs` are), for the rise of the
            robust test loss after its post-drop minimum; None: no rise.
        final_epochs: how many last epochs "final" averages, an integer
            >= 1.

    Returns:
        A dict: `best_robust_test_accuracy` and its `best_epoch`,
        `final_robust_test_accuracy` (mean of the last `final_epochs`),
        `robust_overfitting_gap` (best - final, accuracy points in [0, 1]),
        `robust_test_loss_rise` (last / post-drop minimum - 1, when
        `drop_epoch` is given), and the final robust train and clean test
        accuracies when logged (the mean over the last `final_epochs` of
        the epochs where they were logged; NaN where none was).

    Raises:
        ValueError: for a `val_robust_accuracy` that is not finite at some
            epoch (NaN in an edited or damaged history). Such a run has no
            figures rather than a best epoch taken among some epochs only
            next to NaN accuracies: a study's table then counts the same
            seeds in every column. Also for accuracies outside [0, 1], a
            history without epochs or without the keys it needs, a
            `val_robust_loss` of another length, and `drop_epoch` or
            `final_epochs` below 1.
        TypeError: for a `drop_epoch` or `final_epochs` that is not an
            integer.

    Example:

    >>> from robustlab.experiments import summarize
    >>> h = {"val_robust_accuracy": [0.5, 0.8, 0.7, 0.6, 0.6],
    ...      "val_robust_loss": [1.0, 0.5, 0.6, 0.7, 0.8]}
    >>> s = summarize(h, drop_epoch=1, final_epochs=2)
    >>> s["best_epoch"], round(s["robust_overfitting_gap"], 3)
    (1, 0.2)
    >>> round(s["robust_test_loss_rise"], 3)
    0.6
    """
    # accuracy[-0:] would be every epoch.
    final_epochs = validation.check_int_at_least("final_epochs", final_epochs, 1)
    if drop_epoch is not None:
        # loss[-1:] would be the last epoch alone: a rise of 0.
        drop_epoch = validation.check_int_at_least("drop_epoch", drop_epoch, 1)
    accuracy = _logged(history, "val_robust_accuracy")
    if accuracy.size == 0:
        raise ValueError("Argument `history` must hold at least one epoch. "
                         "Received: val_robust_accuracy=[]")
    missing = np.flatnonzero(~np.isfinite(accuracy))
    if missing.size:
        # np.argmax would pick the first NaN as the best epoch.
        raise ValueError(
            "Argument `history` must hold a finite `val_robust_accuracy` at every "
            f"epoch; it is not at epochs {missing.tolist()} (0-based). "
            f"Received: val_robust_accuracy={accuracy.tolist()}")
    outside = np.flatnonzero((accuracy < 0) | (accuracy > 1))
    if outside.size:
        raise ValueError(
            "Argument `history` must hold accuracies in [0, 1] (fractions, not "
            f"percentages); `val_robust_accuracy` is not at epochs {outside.tolist()} "
            f"(0-based). Received: val_robust_accuracy={accuracy.tolist()}")
    best_epoch = int(np.argmax(accuracy))
    final = float(np.mean(accuracy[-final_epochs:]))
    summary = {
        "epochs": int(len(accuracy)),
        "best_epoch": best_epoch,
        "best_robust_test_accuracy": float(accuracy[best_epoch]),
        "final_robust_test_accuracy": final,
        "robust_overfitting_gap": float(accuracy[best_epoch] - final),
    }
    if drop_epoch is not None and drop_epoch < len(accuracy):
        loss = _logged(history, "val_robust_loss", len(accuracy))
        post_drop_min = float(np.min(loss[drop_epoch:]))
        summary["robust_test_loss_rise"] = float(loss[-1] / post_drop_min - 1.0)
    for key, name in (("train_robust_accuracy", "final_robust_train_accuracy"),
                      ("val_clean_accuracy", "final_clean_test_accuracy")):
        if key in history:
            last = np.asarray(history[key][-final_epochs:], dtype="float64")
            # A RobustEvaluation(every=k) logs NaN between its evaluations
            # (and always evaluates the last epoch): the mean of those it made.
            logged = last[~np.isnan(last)]
            summary[name] = float(np.mean(logged)) if logged.size else math.nan
    if drop_epoch is not None:
        summary.update(_instrument_figures(history, drop_epoch))
    return summary


def _logged(history, key, epochs=None):
    """`history[key]` as a float64 array (of `epochs` entries, when given),
    or a ValueError naming what `history` lacks."""
    try:
        values = history[key]
    except (KeyError, TypeError, IndexError):
        raise ValueError(
            f"Argument `history` must be the per-epoch logs of a run, with `{key}`. "
            f"Received: history={_keys_of(history)}") from None
    try:
        values = np.asarray(values, dtype="float64")
    except (TypeError, ValueError):
        raise ValueError(f"Argument `history` must hold numbers under `{key}`. "
                         f"Received: {key}={values!r}") from None
    if values.ndim != 1 or (epochs is not None and len(values) != epochs):
        raise ValueError(
            f"Argument `history` must hold one `{key}` per epoch ({epochs} epochs of "
            f"`val_robust_accuracy`). Received: {key} of shape {values.shape}")
    return values


def _keys_of(history):
    keys = getattr(history, "keys", None)
    return f"logs with keys {sorted(keys())}" if callable(keys) else repr(history)


def _instrument_figures(history, drop_epoch):
    """Curvature and cloud-width figures around the drop, where logged: the
    top eigenvalue at the first probe >= 4 epochs after the drop and at the
    last probe (the late rise), and how many times the within-epoch weight
    variance shrank from the epoch before the drop to 1 and 5 epochs after
    it (the collapse)."""
    figures = {}
    if "hessian_top_eig" in history:
        eig = np.asarray(history["hessian_top_eig"], dtype="float64")
        probed = np.flatnonzero(np.isfinite(eig))
        after = probed[probed >= drop_epoch + 4]
        if len(after):
            figures["top_eig_after_drop"] = float(eig[after[0]])
            figures["top_eig_after_drop_epoch"] = int(after[0])
            figures["top_eig_final"] = float(eig[probed[-1]])
    for key in ("posterior_var", "posterior_var_top"):
        if key in history and drop_epoch >= 1:
            var = np.asarray(history[key], dtype="float64")
            for lag in (1, 5):
                if drop_epoch + lag - 1 < len(var):
                    figures[f"{key}_shrink_{lag}"] = float(
                        var[drop_epoch - 1] / var[drop_epoch + lag - 1])
    return figures
