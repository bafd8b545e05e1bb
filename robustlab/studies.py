"""Named studies: a finding of the course reproduced over seeds, with effect
sizes, figures, and the reference results that ship with the package.

A `Study` is a set of arms (a named experiment, optionally with the
instruments) run for several seeds, and optionally replica forks
(`robustlab.forks`) around the learning-rate drop. `reproduce` trains every
run that is not already in the output folder (`OUT/runs/<experiment>-v<version>
[-probe<N>]/seed<k>`, written by `robustlab.experiments.run`, shared by the
studies that use the same run; forks in `OUT/forks/...`), then writes into
`OUT/<study>/` (a study shortened to N epochs: its runs in
`OUT/runs/<experiment>-v<version>[-probe<N>]-e<N>/seed<k>`, its results in
`OUT/<study>-e<N>/`, apart from the full ones)

- `results.json`: per arm, the summary figures of every seed and their mean,
  standard deviation, standard error and n; the fork windows (standard
  JSON: a figure that is NaN or infinite is null);
- `summary.txt` and a printed table of the same figures;
- `curves.png`: the learning curves of every arm, mean and standard-error
  band over seeds, the learning-rate drop marked (accuracy and loss, robust
  train and test; the top Hessian eigenvalue; the weight cloud's width,
  measured and predicted; the PAC-Bayes bound); with forks also `forks.png`,
  measured against predicted width, window by window, and the replicas'
  cloud; for arms that differ in AWP gamma also `tradeoff.png`, the gap
  against robust train accuracy.

`reference(name)` returns the 8-seed results of a study that ship with the
package (`robustlab/reference/<name>.json.gz`), so that a notebook can show
error bars without training; they are written by `reproduce(...,
write_reference=True)`, i.e. `robustlab reproduce NAME --quick --seeds 8
--write-reference`, and never edited by hand. (The files shipped before the
command had `--quick` record their command without it: `command(study,
seeds)` gives today's spelling.)

`FULL_SCALE_STUDIES` holds the same studies at full scale: CIFAR-10 and
PreActResNet-18 as in Rice, Wong & Kolter (2020), for a GPU
(`reproduce(name, scale="full")`, `robustlab reproduce NAME` without
`--quick`).

Example:

>>> from robustlab.studies import get, reference
>>> study = get("robust-overfitting")
>>> [arm.experiment for arm in study.arms]
['quick', 'quick_lr01', 'quick_clean']
>>> ref = reference("robust-overfitting")
>>> ref.seeds
[0, 1, 2, 3, 4, 5, 6, 7]
>>> mean, stderr = ref.curve("quick", "val_robust_accuracy")
>>> mean.shape
(100,)
"""

import dataclasses
import datetime
import gzip
import json
import math
import os
import re
import shutil
import time
import warnings

import keras
import numpy as np

from robustlab import experiments as experiments_module
from robustlab import forks as forks_module
from robustlab import plots
from robustlab import provenance
from robustlab import run_checkpoint
from robustlab import validation
from robustlab._version import __version__
from robustlab.forks import ForkResult
from robustlab.progress import progress_bar
from robustlab.summary_statistics import mean_and_stderr

__all__ = [
    "Arm",
    "FIGURES",
    "FULL_SCALE_STUDIES",
    "Forks",
    "MAX_SEEDS",
    "REFERENCE_DIR",
    "REFERENCE_SEEDS",
    "SCALES",
    "SELECTION_CRITERIA",
    "STUDIES",
    "Study",
    "StudyResults",
    "checkpoint_selection",
    "command",
    "get",
    "mean_and_stderr",
    "read_reference_file",
    "reference",
    "reference_curves",
    "reproduce",
    "write_figures",
    "write_reference_file",
]

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")

# The summary figures `reproduce` tabulates, with how to print them.
# (summary key, label, scale, unit)
FIGURES = (
    ("best_robust_test_accuracy", "best robust test accuracy", 100, "pts"),
    ("best_epoch", "best epoch (0-based)", 1, ""),
    ("final_robust_test_accuracy", "final robust test accuracy (last 3)", 100, "pts"),
    ("robust_overfitting_gap", "best - final (robust overfitting)", 100, "pts"),
    ("robust_test_loss_rise", "robust test loss rise after post-drop min", 100, "%"),
    ("final_robust_train_accuracy", "robust train accuracy, end", 100, "pts"),
    ("final_clean_test_accuracy", "clean test accuracy, end", 100, "pts"),
    ("top_eig_after_drop", "top Hessian eigenvalue, 4+ epochs after drop", 1, ""),
    ("top_eig_final", "top Hessian eigenvalue, end", 1, ""),
    ("posterior_var_top_shrink_5", "weight variance along u: 1 before / 5 after drop", 1, "x"),
)


def _final_label(label, epochs_per_seed):
    """The label of the final accuracy for runs as long as `epochs_per_seed`:
    "final" averages the last 3 epochs, or every epoch of a shorter run."""
    averaged = min(3, int(min(epochs_per_seed)))
    return label if averaged == 3 else label.replace(
        "(last 3)", "(last epoch)" if averaged == 1 else f"(last {averaged})")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One setting of a study: a named experiment and its instruments.

    Args:
        label: what the arm is called in tables and figures (it says what
            differs, e.g. the label noise).
        experiment: the name of a `robustlab.experiments` experiment.
        probe_every: run the instruments (Hessian probe, posterior tracker,
            PAC-Bayes bound) every this many epochs (an integer >= 1); None:
            none.
    """

    label: str
    experiment: str
    probe_every: int = None

    def __post_init__(self):
        _check_label("label", self.label)
        # A name, looked up when the arm runs (an experiment may be added to
        # `robustlab.experiments.EXPERIMENTS` after the study is made).
        _check_label("experiment", self.experiment)
        if self.probe_every is not None:
            validation.check_int_at_least("probe_every", self.probe_every, 1)

    @property
    def config(self):
        return experiments_module.get(self.experiment)

    def folder(self, out, seed, epochs=None):
        """The run's folder under the output root `out`: one per experiment
        version, instruments and seed, so studies that share a run share its
        folder. A run shortened to `epochs` (other than the experiment's)
        has a folder of its own, so that it never replaces the full run."""
        config = self.config
        name = f"{config.name}-v{config.version}"
        if self.probe_every:
            name += f"-probe{self.probe_every}"
        if epochs is not None and epochs != config.epochs:
            name += f"-e{epochs}"
        return os.path.join(out, "runs", name, f"seed{seed}")


@dataclasses.dataclass(frozen=True)
class Forks:
    """Replica forks of one experiment at the start of some epochs.

    Args:
        experiment: the experiment whose training is forked (its base run
            trains without evaluation up to each fork epoch).
        epochs: the epochs at whose start to fork, e.g. one before and one
            after the learning-rate drop: distinct integers >= 0, kept as a
            tuple.
        replicas: R of each fork, an integer >= 2.
        steps: W, the SGD steps each replica takes, an integer >= 1; None:
            one epoch of full batches.
    """

    experiment: str
    epochs: tuple
    replicas: int = 64
    steps: int = None

    def __post_init__(self):
        _check_label("experiment", self.experiment)
        epochs = self.epochs
        if isinstance(epochs, (str, bytes)) or not isinstance(epochs, (tuple, list)) or not epochs:
            raise TypeError("Argument `epochs` must be a non-empty tuple of the epochs at whose "
                            f"start to fork. Received: epochs={epochs!r}")
        for epoch in epochs:
            validation.check_int_at_least("epochs", epoch, 0)
        validation.check_distinct("epochs", epochs)
        # Frozen (hashable, compared by value): a list is kept as a tuple.
        object.__setattr__(self, "epochs", tuple(epochs))
        validation.check_int_at_least("replicas", self.replicas, 2)
        if self.steps is not None:
            validation.check_int_at_least("steps", self.steps, 1)

    @property
    def config(self):
        return experiments_module.get(self.experiment)

    def folder(self, out):
        config = self.config
        epochs = "-".join(str(e) for e in self.epochs)
        steps = f"-w{self.steps}" if self.steps else ""
        return os.path.join(out, "forks", f"{config.name}-v{config.version}-at{epochs}"
                            f"-r{self.replicas}{steps}")


@dataclasses.dataclass(frozen=True)
class Study:
    """A named, versioned study: arms run for several seeds, and optionally
    replica forks for every seed.

    The version changes whenever an arm or what is measured changes (the
    experiments carry their own versions, written next to every result).
    Each study exists at two scales: `"quick"`, the course's setting on the
    embedded digits data (minutes a run on a CPU), and `"full"`, CIFAR-10
    with PreActResNet-18 as in Rice, Wong & Kolter (2020), for a GPU.
    """

    name: str
    version: int
    arms: tuple
    description: str
    forks: Forks = None
    selects_checkpoints: bool = False
    scale: str = "quick"

    def __post_init__(self):
        _check_label("name", self.name)
        validation.check_int_at_least("version", self.version, 1)
        arms = self.arms
        if (not isinstance(arms, (tuple, list)) or not arms
                or not all(isinstance(a, Arm) for a in arms)):
            raise TypeError("Argument `arms` must be a non-empty tuple of `Arm`s. "
                            f"Received: arms={arms!r}")
        object.__setattr__(self, "arms", tuple(arms))
        experiments = [arm.experiment for arm in self.arms]
        repeated = sorted({e for e in experiments if experiments.count(e) > 1})
        if repeated:
            # The runs, table and figures are keyed by the experiment: two arms
            # of one were mixed into one list, refused after all the training.
            raise ValueError(
                "Argument `arms` must hold one arm per experiment (its runs, table "
                "rows and curves are keyed by it); for another setting register "
                "another experiment (`Experiment.replace(name=...)`). Received: "
                f"arms of experiment{'s' if len(repeated) > 1 else ''} "
                f"{', '.join(map(repr, repeated))} more than once")
        if not isinstance(self.description, str):
            raise TypeError("Argument `description` must be a str. "
                            f"Received: description={self.description!r}")
        if self.forks is not None and not isinstance(self.forks, Forks):
            raise TypeError("Argument `forks` must be a `Forks` or None. "
                            f"Received: forks={self.forks!r}")
        validation.check_bool("selects_checkpoints", self.selects_checkpoints)
        if self.scale not in SCALES:
            raise ValueError(f"Argument `scale` must be one of {SCALES}. "
                             f"Received: scale={self.scale!r}")

    @property
    def folder_name(self):
        """The study's results folder under the output root."""
        return self.name if self.scale == "quick" else f"{self.name}-full"

    def arm(self, key):
        """The arm with this label or experiment name."""
        for arm in self.arms:
            if key in (arm.label, arm.experiment):
                return arm
        raise ValueError(
            f"Study {self.name!r} has no arm {key!r}; its arms are "
            f"{[a.experiment for a in self.arms]}. Received: arm={key!r}"
        )


def _check_label(name, value):
    if not isinstance(value, str):
        raise TypeError(f"Argument `{name}` must be a non-empty str. "
                        f"Received: {name}={value!r}")
    if not value.strip():
        raise ValueError(f"Argument `{name}` must be a non-empty str. "
                         f"Received: {name}={value!r}")


SCALES = ("quick", "full")

STUDIES = {
    "robust-overfitting": Study(
        name="robust-overfitting",
        version=2,
        arms=(
            Arm("20% label noise (quick)", "quick", probe_every=5),
            Arm("20% label noise, LR 0.1 (quick_lr01)", "quick_lr01"),
            Arm("clean labels, LR 0.1 (quick_clean)", "quick_clean"),
        ),
        description=(
            "PGD-3 adversarial training of a small CNN on 1000 digits, learning "
            "rate 0.2 dropped 10x at epoch 40 of 100, PGD-10 evaluation every "
            "epoch. 20% of the training labels are replaced by another class "
            "(symmetric label noise, an amplifier: memorising them is what "
            "drives robust overfitting at this scale). The contrast is a pair "
            "at learning rate 0.1, with and without the label noise (at 0.2 "
            "clean labels diverge in most seeds). The first arm also runs the instruments every 5 "
            "epochs (top Hessian eigenvalue of the robust loss, the weight "
            "cloud's width, the PAC-Bayes bound)."
        ),
    ),
    "lr-drop-collapse": Study(
        name="lr-drop-collapse",
        version=1,
        arms=(Arm("20% label noise (quick)", "quick", probe_every=5),),
        forks=Forks("quick", epochs=(39, 40), replicas=64),
        description=(
            "The quick setting with the instruments every 5 epochs (top Hessian "
            "eigenvalue of the robust loss, the within-epoch weight cloud along "
            "its eigenvector with the heavy-ball prediction, the PAC-Bayes "
            "bound), and replica forks at the start of epoch 39 (learning rate "
            "0.2) and epoch 40 (0.02, after the drop): 64 replicas from one state "
            "run one epoch (15 steps) each with their own batches and attack "
            "starts; their spread along the top eigenvector is compared with the "
            "heavy-ball recursion fed the curvature and gradient noise measured "
            "at the fork."
        ),
    ),
    "awp-tradeoff": Study(
        name="awp-tradeoff",
        version=1,
        arms=(
            Arm("AWP gamma 0 (quick)", "quick", probe_every=5),
            Arm("AWP gamma 0.002", "quick_awp_0.002"),
            Arm("AWP gamma 0.005 (quick_awp)", "quick_awp", probe_every=5),
            Arm("AWP gamma 0.01", "quick_awp_0.01"),
            Arm("AWP gamma 0.02", "quick_awp_0.02"),
        ),
        description=(
            "The quick setting with adversarial weight perturbation (one-step, "
            "layer-wise relative, on the kernels, after a 10-epoch warm-up) at "
            "gamma 0, 0.002, 0.005, 0.01 and 0.02: the robust generalisation gap "
            "against robust training accuracy as gamma grows, up to a gamma that "
            "breaks training. gamma 0 and 0.005 also run the instruments every 5 "
            "epochs (the top Hessian eigenvalue with and without AWP)."
        ),
    ),
    "checkpoint-selection": Study(
        name="checkpoint-selection",
        version=1,
        arms=(Arm("20% label noise (quick)", "quick", probe_every=5),),
        description=(
            "Which epoch to keep without validation data: the quick runs with "
            "the instruments every 5 epochs, an epoch chosen from the "
            "time-resolved PAC-Bayes bound or from the curvature alone, and its "
            "robust test accuracy against the epoch a validation set would pick "
            "(the best robust test epoch) and the final epoch "
            "(`checkpoint_selection`)."
        ),
        selects_checkpoints=True,
    ),
}


_RICE = ("CIFAR-10 (tensorflow-datasets' 50,000 training and 10,000 test "
         "images), PreActResNet-18, PGD-10 training at "
         "eps 8/255, learning rate 0.1 dropped 10x at epochs 100 and 150 of "
         "200, as in Rice, Wong & Kolter (2020); clean labels (label noise 0)")
_RICE_ARM = Arm("CIFAR-10, clean labels (cifar10_rice)", "cifar10_rice", probe_every=10)

FULL_SCALE_STUDIES = {
    "robust-overfitting": Study(
        name="robust-overfitting", version=1, scale="full", arms=(_RICE_ARM,),
        description=_RICE + ". The instruments run every 10 epochs."),
    "lr-drop-collapse": Study(
        name="lr-drop-collapse", version=1, scale="full", arms=(_RICE_ARM,),
        forks=Forks("cifar10_rice", epochs=(99, 100), replicas=16, steps=50),
        description=_RICE + ". The instruments run every 10 epochs; 16 replicas "
                    "are forked at the start of epoch 99 (learning rate 0.1) and "
                    "epoch 100 (0.01) and run 50 steps each."),
    "awp-tradeoff": Study(
        name="awp-tradeoff", version=1, scale="full",
        arms=(Arm("AWP gamma 0 (cifar10_rice)", "cifar10_rice", probe_every=10),
              Arm("AWP gamma 0.005 (cifar10_rice_awp)", "cifar10_rice_awp", probe_every=10),
              Arm("AWP gamma 0.01", "cifar10_rice_awp_0.01"),
              Arm("AWP gamma 0.02", "cifar10_rice_awp_0.02")),
        description=_RICE + ", with adversarial weight perturbation at gamma 0, "
                    "0.005 (Wu et al. 2020's CIFAR-10 setting), 0.01 and 0.02."),
    "checkpoint-selection": Study(
        name="checkpoint-selection", version=1, scale="full", arms=(_RICE_ARM,),
        selects_checkpoints=True,
        description=_RICE + ". An epoch chosen from the time-resolved PAC-Bayes "
                    "bound or the curvature alone, against the best and the "
                    "final epoch."),
}
"""The studies at full scale (`robustlab reproduce NAME` without `--quick`):
CIFAR-10 through tensorflow-datasets, sized for a GPU."""


def get(name, scale="quick"):
    """The named study at `scale` (`"quick"` or `"full"`); `ValueError`
    listing the names otherwise."""
    if scale not in SCALES:
        raise ValueError(f"Argument `scale` must be one of {SCALES}. Received: scale={scale!r}")
    registry = STUDIES if scale == "quick" else FULL_SCALE_STUDIES
    if not isinstance(name, str):
        raise TypeError(
            f"Argument `name` must be the name of a study (a string), one of "
            f"{', '.join(sorted(registry))}. Received: name={name!r}")
    try:
        return registry[name]
    except KeyError:
        raise ValueError(
            f"Unknown study; available: {', '.join(sorted(registry))}. "
            f"Received: name={name!r}"
        ) from None


# ---------------------------------------------------------------------------
# Results of a study (reproduced or shipped).


class StudyResults:
    """The per-epoch histories of a study's runs, and their statistics.

    Attributes:
        study: the `Study`.
        seeds: the seeds, the same for every arm.
        histories: `{experiment name: [history per seed]}`, each history a
            dict `{log key: float64 array over epochs}` (NaN where a key was
            not logged, e.g. between probes).
        forks: `{seed: [robustlab.forks.ForkResult per fork epoch]}` (empty
            for a study without forks).
        metadata: versions and the command that produced the results.
    """

    def __init__(self, study, seeds, histories, metadata=None, forks=None):
        if not isinstance(study, Study):
            raise TypeError("Argument `study` must be a robustlab.studies.Study, such as "
                            f"`get(name)`. Received: study={study!r}")
        self.study = study
        self.forks = {int(seed): list(windows) for seed, windows in (forks or {}).items()}
        self.seeds = list(seeds)
        if not self.seeds:
            raise ValueError(f"Argument `seeds` must hold at least one seed. "
                             f"Received: seeds={seeds!r}")
        # Every arm of the study, and only those: a missing arm failed later
        # in table() with a KeyError, an unknown one was ignored.
        arms = {arm.experiment for arm in study.arms}
        if set(histories) != arms:
            raise ValueError(
                f"Argument `histories` must hold the arms of study {study.name!r}, "
                f"{sorted(arms)}. Received: histories of {sorted(histories)}")
        # Histories are matched to seeds by position: with one too few, the
        # table's n and the curves would cover other seeds than the header.
        for name, runs in histories.items():
            if len(runs) != len(self.seeds):
                raise ValueError(
                    "Argument `histories` must hold one history per seed for every "
                    f"arm: {len(self.seeds)} seeds {self.seeds}, {len(runs)} histories "
                    f"of arm {name!r}. Received: histories with "
                    f"{ {n: len(r) for n, r in histories.items()} } histories per arm")
        strangers = sorted(set(self.forks) - set(self.seeds))
        if strangers:
            raise ValueError(
                f"Argument `forks` must hold fork windows of the seeds {self.seeds} "
                f"only. Received: forks of seeds {sorted(self.forks)}")
        self.histories = {
            name: [{k: np.asarray(v, dtype="float64") for k, v in h.items()}
                   for h in runs]
            for name, runs in histories.items()
        }
        self.metadata = dict(metadata or {})

    def __repr__(self):
        arms = ", ".join(f"{name}: {len(runs)} seeds"
                         for name, runs in self.histories.items())
        return f"StudyResults({self.study.name!r}, {arms})"

    def runs(self, arm):
        """The histories of one arm (by label or experiment name)."""
        return self.histories[self.study.arm(arm).experiment]

    def stacked(self, arm, key):
        """`(seeds, epochs)` array of one logged key of one arm."""
        runs = self.runs(arm)
        missing = [seed for seed, h in zip(self.seeds, runs) if key not in h]
        if missing:
            raise KeyError(
                f"{key!r} was not logged in arm {arm!r} (seeds {missing}); "
                f"logged: {sorted(runs[0])}")
        lengths = {seed: len(h[key]) for seed, h in zip(self.seeds, runs)}
        if len(set(lengths.values())) > 1:
            # np.stack said only "all input arrays must have the same shape".
            raise ValueError(
                f"The seeds' runs of arm {arm!r} must have logged {key!r} at as many "
                f"epochs to be stacked. Received: epochs per seed {lengths}")
        return np.stack([h[key] for h in runs])

    def curve(self, arm, key):
        """Mean and standard error over seeds of a key, epoch by epoch
        (NaN where no seed logged it)."""
        return mean_and_stderr(self.stacked(arm, key), axis=0)

    def summaries(self, arm):
        """`robustlab.experiments.summarize` of every seed of an arm."""
        config = self.study.arm(arm).config
        drop = min(config.lr_drop_epochs, default=None)
        return [experiments_module.summarize(h, drop_epoch=drop)
                for h in self.runs(arm)]

    def table(self):
        """Per arm, each summary figure over seeds: `{"mean", "sd",
        "stderr", "n", "values"}` (a seed without the figure, NaN, is left
        out of all but `values`; an infinite value makes the mean infinite,
        see `fork_table`)."""
        table = {}
        for arm in self.study.arms:
            summaries = self.summaries(arm.experiment)
            figures = {}
            # Every figure any seed has (a seed whose run never reached a
            # probe lacks the probe's), in the order the seeds first give them.
            for key in dict.fromkeys(key for s in summaries for key in s):
                figures[key] = _stats([s.get(key, math.nan) for s in summaries])
            table[arm.experiment] = figures
        return table

    def _forks_shuffled(self):
        """Whether every window has the shuffled-pass prediction (windows
        recorded before it was measured, as in older results, do not)."""
        return all(w.predicted_top_shuffled is not None
                   for windows in self.forks.values() for w in windows)

    def fork_table(self):
        """Per fork epoch, over seeds: the measured and predicted variance along
        u, their ratio, and the overall variance; and the shrink factors from
        the first fork to each later one (measured and predicted). Where every
        window has it, also the shuffled-pass prediction
        (`ForkResult.predicted_top_shuffled`), its ratio and the two parts
        of the noise it is fed.

        Each figure is `{"mean", "sd", "stderr", "n", "values"}` over the
        seeds. A seed without the figure (NaN) is left out of the mean, sd,
        s.e. and n. An infinite value (a window that predicts no spread:
        its ratio, and the shrink of the prediction to it) counts in `n`
        and makes the mean infinite (NaN where both signs are), with the sd
        and s.e. NaN: the mean of the other seeds would pass for the whole
        figure."""
        if not self.forks:
            return {}
        # The windows are matched across seeds by position: a seed without
        # them failed with a KeyError, one with fewer or other epochs gave a
        # table of the first seed's epochs without a word.
        by_seed = {seed: [w.epoch for w in self.forks[seed]] if seed in self.forks
                   else None for seed in self.seeds}
        if len({None if e is None else tuple(e) for e in by_seed.values()}) != 1:
            raise ValueError(
                "The fork table needs fork windows at the same epochs for every seed. "
                f"Received: results with fork windows at epochs {by_seed}")
        epochs = by_seed[self.seeds[0]]
        keys = ["learning_rate", "curvature", "noise_variance", "measured_top",
                "predicted_top", "ratio", "measured_overall"]
        predictions = ["predicted_top"]
        if self._forks_shuffled():
            keys += ["example_variance", "draw_variance", "predicted_top_shuffled",
                     "ratio_shuffled"]
            predictions.append("predicted_top_shuffled")
        table = {"windows": {}, "shrink": {}}
        for i, epoch in enumerate(epochs):
            rows = [self.forks[seed][i] for seed in self.seeds]
            table["windows"][epoch] = {key: _stats([getattr(w, key) for w in rows])
                                       for key in keys}
            if i:
                first = [self.forks[seed][0] for seed in self.seeds]
                # A window predicted no spread (no minibatch noise): inf, as
                # its ratio is (`ForkResult.ratio`), not a ZeroDivisionError.
                with np.errstate(divide="ignore", invalid="ignore"):
                    shrink = {key: _stats([np.float64(getattr(a, key)) / getattr(b, key)
                                           for a, b in zip(first, rows)])
                              for key in ["measured_top"] + predictions + ["measured_overall"]}
                table["shrink"][f"{epochs[0]}->{epoch}"] = shrink
        return table

    def format_table(self):
        """The summary table as text (mean, sd, s.e., n per arm)."""
        table = self.table()
        lines = [f"{self.study.name} (v{self.study.version}), seeds {self.seeds}"]
        for arm in self.study.arms:
            config = arm.config
            lines.append("")
            lines.append(
                f"{arm.label}: {config.name} v{config.version}, label noise "
                f"{config.label_noise:.0%}, AWP gamma {config.awp_gamma:g}")
            lines.append(f"  {'figure':52s} {'mean':>8s} {'sd':>8s} {'s.e.':>8s} {'n':>3s}")
            for key, label, scale, unit in FIGURES:
                row = table[arm.experiment].get(key)
                if row is None or row["n"] == 0:
                    continue
                if key == "final_robust_test_accuracy":
                    label = _final_label(label, table[arm.experiment]["epochs"]["values"])
                lines.append(
                    f"  {label + (f' ({unit})' if unit else ''):52s} "
                    f"{scale * row['mean']:8.2f} {scale * row['sd']:8.2f} "
                    f"{scale * row['stderr']:8.2f} {row['n']:3d}")
        if self.study.selects_checkpoints:
            lines += ["", "checkpoint selection without validation data: robust test accuracy "
                          "(points) at the chosen epoch"]
            for criterion, row in checkpoint_selection(self, self.study.arms[0].experiment).items():
                lines.append(
                    f"  {criterion:54s} {100 * row['mean']:6.2f} +/- {100 * row['stderr']:4.2f}  "
                    f"below the best {100 * row['below_best']['mean']:5.2f} +/- "
                    f"{100 * row['below_best']['stderr']:4.2f}  epochs {row['epochs']}")
        if self.forks:
            shuffled = self._forks_shuffled()
            steps = self.study.forks.steps
            window = "one epoch" if steps is None else f"{steps} steps"
            lines += ["", f"replica forks ({self.study.forks.replicas} replicas, {window} "
                          "each): variance along the top eigenvector u, measured vs predicted"
                          " (predicted: the recursion, independent batches"
                          + ("; shuffled: one shuffled pass, disjoint batches" if shuffled
                             else "") + ")"]
            header = (f"  {'seed':>4s} {'epoch':>5s} {'lr':>6s} {'lambda':>8s} "
                      f"{'measured':>10s} {'predicted':>10s} {'ratio':>6s}")
            if shuffled:
                header += f" {'shuffled':>10s} {'ratio':>6s}"
            lines.append(header + f" {'overall':>10s}")
            for seed in self.seeds:
                for w in self.forks[seed]:
                    line = (f"  {seed:4d} {w.epoch:5d} {w.learning_rate:6.3g} "
                            f"{w.curvature:8.3f} {w.measured_top:10.3e} "
                            f"{w.predicted_top:10.3e} {w.ratio:6.2f}")
                    if shuffled:
                        line += f" {w.predicted_top_shuffled:10.3e} {w.ratio_shuffled:6.2f}"
                    lines.append(line + f" {w.measured_overall:10.3e}")
            windows = [w for seed in self.seeds for w in self.forks[seed]]
            within = sum(0.5 <= w.ratio <= 2.0 for w in windows)
            lines.append(f"  within a factor 2: {within} of {len(windows)} windows (recursion)"
                         + (f", {sum(0.5 <= w.ratio_shuffled <= 2.0 for w in windows)} of "
                            f"{len(windows)} (shuffled pass)" if shuffled else ""))
            for label, row in self.fork_table()["shrink"].items():
                lines.append(
                    f"  shrink {label}: along u {row['measured_top']['mean']:.1f}x +/- "
                    f"{row['measured_top']['stderr']:.1f} (predicted "
                    f"{row['predicted_top']['mean']:.1f}x"
                    + (f", shuffled {row['predicted_top_shuffled']['mean']:.1f}x" if shuffled
                       else "")
                    + f"), overall {row['measured_overall']['mean']:.1f}x +/- "
                    f"{row['measured_overall']['stderr']:.1f}")
        return "\n".join(lines)

    def to_json(self, digits=6):
        """A JSON-ready dict; floats rounded to `digits` significant digits
        (NaN as null)."""
        return {
            "study": self.study.name,
            "study_version": self.study.version,
            "seeds": self.seeds,
            "arms": [
                {
                    "label": arm.label,
                    "experiment": _ran(arm, self.metadata).to_dict(),
                    "probe_every": arm.probe_every,
                    "histories": [
                        {k: [_round(x, digits) for x in v] for k, v in sorted(h.items())}
                        for h in self.runs(arm.experiment)
                    ],
                }
                for arm in self.study.arms
            ],
            "forks": {str(seed): [_rounded_fork(w.to_dict(), digits) for w in windows]
                      for seed, windows in self.forks.items()},
            "metadata": self.metadata,
        }


SELECTION_CRITERIA = {
    "final epoch": None,
    "best robust test accuracy (validation, an oracle here)": None,
    "best single epoch in hindsight (an oracle: one epoch for all seeds)": None,
    "lowest PAC-Bayes bound (kl-inverse)": "pac_bayes_bound",
    "lowest McAllester bound (unclipped)": "pac_bayes_bound_mcallester",
    "lowest top Hessian eigenvalue after the drop": "hessian_top_eig",
}


def checkpoint_selection(results, arm="quick"):
    """Pick an epoch of every seed of an arm by each criterion of
    `SELECTION_CRITERIA` and read the robust test accuracy there.

    The bound and curvature criteria use only training-set quantities, and
    only the epochs where their quantity was logged: the bounds every epoch
    the weight cloud was measured (the first lowest value wins a tie, so a
    bound pinned at 1 throughout picks epoch 0), the curvature the epochs
    where the probe ran, and only those at or after the first learning-rate
    drop (before it, the large learning rate keeps the curvature low for
    reasons unrelated to generalisation). The
    validation criterion uses the test curve itself, so it is the best any
    selection could do. The hindsight criterion also reads the test curves:
    the one epoch whose accuracy, averaged over the seeds, is highest. It is
    the noise floor of the comparison: each seed's best epoch is the
    maximum of a noisy curve (a few hundred test digits), so even a fixed
    epoch known to be good falls short of it.

    Args:
        results: a `StudyResults` whose arm logged the instruments
            (`pac_bayes_bound`, `pac_bayes_bound_mcallester`,
            `hessian_top_eig`), e.g. `reference("checkpoint-selection")` or
            what `reproduce("checkpoint-selection", ...)` returns.
        arm: the arm, by label or experiment name (default `"quick"`); its
            experiment's first `lr_drop_epochs` entry is the drop of the
            curvature criterion.

    Returns:
        `{criterion: {"epochs": [...], "robust_test_accuracy": [...],
        "mean", "stderr", "below_best": {"mean", "stderr"}}}` (accuracies in
        [0, 1]; `below_best` paired by seed; epoch None and accuracy NaN
        where a run has no probe to choose from, e.g. a shortened one).
        The criteria are the keys of `SELECTION_CRITERIA`, in its order;
        the lists run over `results.seeds`.

    Raises:
        ValueError: when the study has no arm `arm`, or the arm did not log
            what the criteria read (a run without the instruments).
        TypeError: when `results` is not a `StudyResults`.

    Example:

    >>> from robustlab.studies import checkpoint_selection, reference
    >>> table = checkpoint_selection(reference("checkpoint-selection"))
    >>> table["final epoch"]["epochs"]
    [99, 99, 99, 99, 99, 99, 99, 99]
    >>> row = table["lowest top Hessian eigenvalue after the drop"]
    >>> row["epochs"][:3]  # epochs where the probe ran (every 5), from 40
    [44, 44, 49]
    >>> print(f"{row['below_best']['mean']:.3f}")  # accuracy below the best
    0.013
    """
    if not isinstance(results, StudyResults):
        raise TypeError(
            "Argument `results` must be a StudyResults, e.g. "
            "robustlab.studies.reference(\"checkpoint-selection\"). "
            f"Received: results={results!r}")
    config = results.study.arm(arm).config
    drop = min(config.lr_drop_epochs, default=0)
    table = {}
    best = None
    runs = results.runs(arm)
    needed = sorted({key for key in SELECTION_CRITERIA.values() if key is not None}
                    | {"val_robust_accuracy"})
    lacking = sorted({key for h in runs for key in needed if key not in h})
    if lacking:
        # An arm trained without its instruments (probe_every=0) has no
        # curvature or bound to choose from: it failed with a bare KeyError.
        raise ValueError(
            f"Arm {arm!r} did not log {lacking}, which the selection criteria "
            "read: it needs a run with the instruments (a probe_every > 0). "
            f"Received: arm={arm!r}")
    length = min(len(h["val_robust_accuracy"]) for h in runs)
    hindsight = int(np.argmax(np.mean(
        [h["val_robust_accuracy"][:length] for h in runs], axis=0)))
    for criterion, key in SELECTION_CRITERIA.items():
        epochs, accuracies = [], []
        for history in runs:
            accuracy = history["val_robust_accuracy"]
            if key is None and criterion.startswith("final"):
                epoch = len(accuracy) - 1
            elif key is None and criterion.startswith("best single"):
                epoch = hindsight
            elif key is None:
                epoch = int(np.argmax(accuracy))
            else:
                values = np.array(history[key], dtype="float64")
                if key == "hessian_top_eig":
                    values[:drop] = np.nan
                # A shortened run may end before the first usable probe.
                epoch = int(np.nanargmin(values)) if np.isfinite(values).any() else None
            epochs.append(epoch)
            accuracies.append(math.nan if epoch is None else float(accuracy[epoch]))
        accuracies = np.asarray(accuracies)
        if best is None and criterion.startswith("best"):
            best = accuracies
        mean, stderr = mean_and_stderr(accuracies)
        table[criterion] = {"epochs": epochs, "robust_test_accuracy": accuracies.tolist(),
                            "mean": mean, "stderr": stderr}
    for row in table.values():
        below = best - np.asarray(row["robust_test_accuracy"])
        row["below_best"] = dict(zip(("mean", "stderr"), mean_and_stderr(below)))
    return table


def _stats(values):
    """`{"mean", "sd", "stderr", "n", "values"}` of one figure over seeds: NaN
    (a seed without the figure) is left out; an infinity is not (see
    `StudyResults.fork_table`): the mean is then that infinity, the spread
    NaN."""
    values = np.asarray(values, "float64")
    n = int((~np.isnan(values)).sum())
    mean, stderr = mean_and_stderr(values)
    sd = math.nan if np.isinf(values).any() else _finite_sd(values)
    return {"mean": mean, "sd": sd, "stderr": stderr, "n": n,
            "values": values.tolist()}


def _finite_sd(values):
    """Standard deviation (ddof=1) of the finite values, as `mean_and_stderr`
    counts them (a seed without the figure is left out, not NaN for all)."""
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan


def _rounded_fork(d, digits):
    return {k: (_round(v, digits) if isinstance(v, float) else
                [_round(x, digits) for x in v] if k == "eigenvalues" else
                np.round(np.asarray(v, "float64"), 8).tolist() if k == "path" else v)
            for k, v in d.items()}


def _round(x, digits):
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _history_from_json(history):
    return {k: np.array([math.nan if x is None else x for x in v], "float64")
            for k, v in history.items()}


# ---------------------------------------------------------------------------
# Reproducing a study.


MAX_SEEDS = 10_000
# The fewest seeds the package's reference results are written with.
REFERENCE_SEEDS = 8
"""The most seeds a study runs (`reproduce`): far beyond any real use (a
quick run takes minutes), and a bound on the plan it makes of them before
training. Each seed is a seed as everywhere, in [0, 2**31 - 1]."""


def _too_many_seeds(received):
    return ValueError(
        f"Argument `seeds` must be a number of seeds in [1, {MAX_SEEDS}] (the "
        f"seeds 0..N-1) or a list of at most {MAX_SEEDS} seeds. Received: {received}")


def _check_seeds(seeds):
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        validation.check_int_at_least("seeds", int(seeds), 1)
        # The seeds 0..N-1: checked before they are listed.
        if seeds > MAX_SEEDS:
            raise _too_many_seeds(f"seeds={seeds}")
        return list(range(int(seeds)))
    # A bool is no count (True would be one seed), a string no list of seeds.
    if isinstance(seeds, (bool, str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(
            f"Argument `seeds` must be a number of seeds in [1, {MAX_SEEDS}] (the "
            f"seeds 0..N-1) or a list of at most {MAX_SEEDS} seeds. "
            f"Received: seeds={seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"Argument `seeds` must name at least one seed. Received: seeds={seeds}")
    if len(seeds) > MAX_SEEDS:
        raise _too_many_seeds(f"seeds with {len(seeds)} values")
    seeds = [validation.check_seed("seeds", seed) for seed in seeds]
    return validation.check_distinct("seeds", seeds)


def _ran(arm, metadata):
    """The configuration of an arm's runs: shortened when the results say
    so (`shortened_to_epochs`)."""
    epochs = metadata.get("shortened_to_epochs")
    return arm.config.replace(epochs=epochs) if epochs else arm.config


def _completed_history(folder, config, probe_every):
    """The history of a finished run in `folder` with exactly this
    configuration and instruments, or None."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    # What `experiments.run(resume=True)` requires too: a run of another
    # setting, instruments, backend or code, or made on other hardware or
    # another number of CPU threads, is not reused (`run` then says so).
    expected = json.loads(json.dumps(experiments_module._run_config(config, probe_every)))
    if not isinstance(saved, dict) or any(
            saved.get(key) != expected[key] for key in experiments_module._SAME_RUN_KEYS):
        return None
    # Finished (its summary.json is written last, and describes its history).
    finished = experiments_module._resumable(folder, expected, config)
    return None if finished is None else _history_from_json(finished[0])


def reproduce(name, seeds=8, out="runs", *, scale="quick", resume=False, verbose=1,
              write_reference=False, epochs=None):
    """Run (or, with `resume`, finish) a study and write its results.

    Args:
        name: a study name (`STUDIES`).
        seeds: the number of seeds (0, 1, ...), at most `MAX_SEEDS`, or a
            list of at most so many distinct seeds, each in [0, 2**31 - 1].
        out: the output root, a folder or a path where one can be made
            (None: `"runs"`): runs go to `out/runs/...` and `out/forks/...`
            (shared between studies), the study's results to `out/<name>/`
            (`out/<name>-full/` at full scale; `-e<epochs>` appended when
            shortened).
        scale: `"quick"`, the digits setting of `STUDIES`, or `"full"`, the
            CIFAR-10 setting of `FULL_SCALE_STUDIES` (for a GPU; CIFAR-10
            comes through tensorflow-datasets, see `robustlab.data.load`).
        resume: reuse every run and fork already finished under `out` with
            the same configuration (the instruments and the backend
            included) and made by the same code (`robustlab.provenance`),
            and continue a run or fork killed midway from its last finished
            epoch (`robustlab.experiments.run`): the results are those of an
            uninterrupted reproduction. A run of other code or another
            configuration in a run's folder is refused (`ValueError`, as
            `experiments.run(..., resume=True)` refuses it); forks of other
            code are computed again. Without it everything is computed
            again. True or False.
        verbose: 1 shows a progress bar over all runs and epochs and prints
            the table; 0 is silent.
        write_reference: True or False: also write the results as the
            package's reference data (`robustlab/reference/<name>.json.gz`);
            it needs at least `REFERENCE_SEEDS` (8) seeds and robustlab run
            from its source checkout (`pip install -e .`): an installed
            package is refused.
        epochs: train fewer epochs than the study's runs (a shortened look,
            an integer from 1 to one less than their epochs; the results say
            so and cannot be written as reference). Its runs and results go
            to folders of their own (see `out`), so the full runs are never
            touched. Forks at the start of epoch `epochs` or later are left
            out (with a warning); those before it are kept.

    Returns:
        The `StudyResults`.
    """
    study = get(name, scale)
    seeds = _check_seeds(seeds)
    verbose = validation.check_verbose(verbose)
    resume = validation.check_bool("resume", resume)
    write_reference = validation.check_bool("write_reference", write_reference)
    if epochs is not None:
        validation.check_int_at_least("epochs", epochs, 1)
        full = min(arm.config.epochs for arm in study.arms)
        if epochs >= full:
            raise ValueError(
                f"Argument `epochs` shortens the runs of study {name!r}, which train "
                f"{full} epochs: it must be an integer in [1, {full - 1}] (drop it for "
                f"the full runs). Received: epochs={epochs}")
        if write_reference:
            raise ValueError(
                "Reference results are full-length runs; drop `epochs` to write "
                f"them. Received: epochs={epochs}")
    if write_reference and scale != "quick":
        raise ValueError(
            "The package's reference results are the quick studies' (the lessons "
            f"read them); a full-scale study writes only its results folder. "
            f"Received: scale={scale!r}, write_reference=True")
    if write_reference and len(seeds) < REFERENCE_SEEDS:
        # One seed would silently replace the error bars the lessons show.
        raise ValueError(
            f"Reference results hold at least {REFERENCE_SEEDS} seeds (the lessons "
            f"show their means and standard errors): write them with `seeds` of "
            f"{REFERENCE_SEEDS} or more, or drop `write_reference`. "
            f"Received: seeds={seeds}, write_reference=True")
    out = validation.check_folder("out", "runs" if out is None else out)
    reference_path = os.path.join(REFERENCE_DIR, f"{name}.json.gz")
    if write_reference:
        # Checked before hours of training, not when the results are in.
        _check_writable_reference(reference_path)
    study_dir = os.path.join(out, study.folder_name + (f"-e{epochs}" if epochs else ""))
    if verbose and scale == "full":
        length = epochs or max(arm.config.epochs for arm in study.arms)
        print(f"{name} at full scale: {study.description} A run is {length} epochs on "
              "CIFAR-10, sized for a GPU; `--quick` runs the digits setting.")
    # The results folder is made when the results are written: a study that
    # stops first (CIFAR-10 not prepared, no network) leaves no empty folder.
    configs = [arm.config.replace(**({"epochs": epochs} if epochs else {}))
               for arm in study.arms]
    plan = []
    for arm, config in zip(study.arms, configs):
        for seed in seeds:
            plan.append((arm, config.replace(seed=seed), seed))
    forks = study.forks
    if forks is not None and max(forks.epochs) >= forks.config.epochs:
        # Its base run would train past the experiment's last epoch and fork
        # a state that no run of the study reaches.
        raise ValueError(
            f"Study {name!r}'s forks must start within the runs of experiment "
            f"{forks.experiment!r}, epochs 0-{forks.config.epochs - 1}. Received: "
            f"Forks.epochs={forks.epochs}")
    if forks is not None and epochs is not None and max(forks.epochs) >= epochs:
        # A fork's base run trains up to the fork's epoch with the study's
        # setting, whatever the runs' length: the windows before `epochs` are
        # the full study's. As forks at those epochs alone they have a folder
        # of their own (`Forks.folder` names the epochs), so the full forks'
        # files never hold fewer windows.
        kept = tuple(e for e in forks.epochs if e < epochs)
        if kept:
            warnings.warn(
                f"{name} with epochs={epochs} leaves out its replica forks at epochs "
                f"{[e for e in forks.epochs if e >= epochs]}, beyond the shortened "
                f"runs, and keeps those at {list(kept)}.", stacklevel=2)
            forks = dataclasses.replace(forks, epochs=kept)
        else:
            warnings.warn(
                f"{name} with epochs={epochs} leaves out its replica forks: they start "
                f"at epochs {list(forks.epochs)}, beyond the shortened runs.",
                stacklevel=2)
            forks = None
    experiments_module._warn_if_awp_never_starts(configs, study=name, stacklevel=2)
    progress = _StudyProgress(plan, verbose, forks=len(seeds) * len(forks.epochs) if forks else 0)
    histories = {arm.experiment: [] for arm in study.arms}
    for arm, config, seed in plan:
        folder = arm.folder(out, seed, epochs)
        history = _completed_history(folder, config, arm.probe_every) if resume else None
        if history is None:
            # With `resume`, a run killed midway continues from its last epoch.
            history, _ = experiments_module.run(
                config, folder, verbose=0, probe_every=arm.probe_every,
                callbacks=[progress.callback(arm.experiment, seed)], resume=resume)
            history = {k: np.asarray(v, "float64") for k, v in history.items()}
        else:
            progress.skip(f"{arm.experiment} seed {seed}", config.epochs)
        histories[arm.experiment].append(history)
    fork_results = {}
    if forks is not None:
        for seed in seeds:
            fork_results[seed] = _forks_of_seed(forks, seed, out, resume, progress)
    progress.close()
    results = StudyResults(study, seeds, histories,
                           metadata=_metadata(study, seeds, epochs), forks=fork_results)
    _write_outputs(results, study_dir)
    if write_reference:
        write_reference_file(results, reference_path)
    if verbose:
        print(results.format_table())
        print(f"\nresults, table and figures: {study_dir}/")
        if write_reference:
            print(f"reference results: {reference_path}")
    return results


def _forks_of_seed(forks, seed, out, resume, progress):
    """The fork windows of one seed: train the base run (no evaluation) up
    to each fork epoch and fork there; cached as JSON. With `resume`, a seed
    killed midway keeps its finished windows and the base run continues
    from its last epoch checkpoint."""

    path = os.path.join(forks.folder(out), f"seed{seed}.json")
    partial = os.path.join(forks.folder(out), f"seed{seed}.resume")
    config = forks.config.replace(seed=seed)
    expected = json.loads(json.dumps(config.to_dict()))
    code = provenance.code_identity()
    hardware = provenance.hardware()
    threads = provenance.run_cpu_threads()
    if resume and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if (saved.get("experiment") == expected and saved.get("replicas") == forks.replicas
                and saved.get("steps") == forks.steps and saved.get("code") == code
                and saved.get("hardware") == hardware and saved.get("cpu_threads") == threads):
            progress.skip(f"forks seed {seed}", len(forks.epochs), kind="forks")
            return [forks_module.ForkResult.from_dict(w) for w in saved["windows"]]
    # What the partial folder was started for: anything else in it is
    # thrown away rather than resumed.
    started_for = {"experiment": expected, "replicas": forks.replicas, "steps": forks.steps,
                   "code": code, "hardware": hardware, "cpu_threads": threads}
    started_path = os.path.join(partial, "started_for.json")
    if resume and os.path.exists(started_path):
        with open(started_path) as f:
            if json.load(f) != started_for:
                resume = False
    if not resume:
        shutil.rmtree(partial, ignore_errors=True)
    if not os.path.exists(started_path):
        run_checkpoint.write_json_atomically(started_path, started_for)
    done = {}
    windows_path = os.path.join(partial, "windows.json")
    if os.path.exists(windows_path):
        with open(windows_path) as f:
            saved = json.load(f)
        done = {int(e): forks_module.ForkResult.from_dict(w)
                for e, w in saved["windows"].items()}
    dataset, model = experiments_module.build(config)
    schedule = config.schedule
    epoch, history, _ = run_checkpoint.restore_checkpoint(model, partial)
    windows = []
    for fork_epoch in sorted(forks.epochs):
        if fork_epoch in done:
            windows.append(done[fork_epoch])
            progress.advance(f"forks seed {seed}", kind="forks",
                             line=f"forks seed {seed}: window at epoch {fork_epoch} "
                                  "finished earlier, reused")
            continue
        if fork_epoch > epoch:
            checkpoint = run_checkpoint.EpochCheckpoint(partial, history)
            model.fit(dataset.x_train, dataset.y_train, batch_size=config.batch_size,
                      epochs=fork_epoch, initial_epoch=epoch, verbose=0,
                      callbacks=[schedule.callback(), checkpoint])
            epoch, history = fork_epoch, checkpoint.history
        windows.append(forks_module.fork(
            model, dataset.x_train, dataset.y_train, batch_size=config.batch_size,
            learning_rate=schedule(fork_epoch), replicas=forks.replicas, steps=forks.steps,
            weight_decay=config.weight_decay, seed=seed, epoch=fork_epoch,
            probe_examples=experiments_module.PROBE_EXAMPLES))
        done[fork_epoch] = windows[-1]
        run_checkpoint.write_json_atomically(windows_path, {
            "windows": {str(e): w.to_dict() for e, w in done.items()}})
        progress.advance(f"forks seed {seed}", kind="forks",
                         line=f"forks seed {seed}: window at epoch {fork_epoch} done")
    run_checkpoint.write_json_atomically(path, {
        "experiment": expected, "replicas": forks.replicas, "steps": forks.steps,
        "code": code, "hardware": hardware, "cpu_threads": threads,
        "windows": [w.to_dict() for w in windows]})
    shutil.rmtree(partial)
    return windows


def command(study, seeds, epochs=None):
    """The `robustlab reproduce` command line that reproduces `study` over
    `seeds`.

    >>> from robustlab.studies import command, get
    >>> command(get("awp-tradeoff"), range(8))
    'robustlab reproduce awp-tradeoff --quick --seeds 8'
    >>> command(get("lr-drop-collapse", "full"), [3, 4], epochs=2)
    'robustlab reproduce lr-drop-collapse --seeds 3 4 --epochs 2'
    >>> command(get("awp-tradeoff"), [3])
    'robustlab reproduce awp-tradeoff --quick --seed 3'
    """
    if not isinstance(study, Study):
        raise TypeError("Argument `study` must be a Study (`robustlab.studies.get(name)`). "
                        f"Received: study={study!r}")
    try:
        seeds = list(seeds)
    except TypeError:
        raise TypeError("Argument `seeds` must be a sequence of seeds, e.g. range(8). "
                        f"Received: seeds={seeds!r}") from None
    if not seeds:
        raise ValueError("Argument `seeds` must hold at least one seed. Received: seeds=[]")
    seeds = [validation.check_seed("seeds", seed) for seed in seeds]
    if epochs is not None:
        epochs = validation.check_int_at_least("epochs", epochs, 1)
    line = f"robustlab reproduce {study.name}"
    if study.scale == "quick":
        line += " --quick"
    if seeds == list(range(len(seeds))):
        line += f" --seeds {len(seeds)}"
    elif len(seeds) == 1:
        # `--seeds 3` would be the three seeds 0, 1 and 2.
        line += f" --seed {seeds[0]}"
    else:
        line += f" --seeds {' '.join(map(str, seeds))}"
    if epochs:
        line += f" --epochs {epochs}"
    return line


def _metadata(study, seeds, epochs):
    return {
        "command": command(study, seeds, epochs),
        "scale": study.scale,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "robustlab_version": __version__,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "code": provenance.code_identity(),
        "hardware": provenance.hardware(),
        "cpu_threads": provenance.run_cpu_threads(),
        "shortened_to_epochs": epochs,
    }


def _write_outputs(results, out):
    # Standard JSON (`write_json_atomically`): a figure that is NaN (fewer
    # than two seeds for an sd, a seed without it) or infinite is null.
    run_checkpoint.write_json_atomically(os.path.join(out, "results.json"), {
        "study": results.study.name, "version": results.study.version,
        "description": results.study.description,
        "seeds": results.seeds, "metadata": results.metadata,
        "arms": {a.experiment: {"label": a.label,
                                "experiment": _ran(a, results.metadata).to_dict()}
                 for a in results.study.arms},
        "table": results.table(), "forks": results.fork_table(),
        "checkpoint_selection": checkpoint_selection(
            results, results.study.arms[0].experiment)
        if results.study.selects_checkpoints else None,
        "fork_windows": {str(seed): [{k: v for k, v in w.to_dict().items()
                                      if k != "path"} for w in windows]
                         for seed, windows in results.forks.items()}}, indent=2)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(results.format_table() + "\n")
    write_figures(results, out)


def write_figures(results, out):
    """Draw a study's figures into the folder `out` (created): `curves.png`,
    and where they apply `tradeoff.png` and `forks.png` (see the module
    docstring). Returns the paths written.

    The figures of the shipped reference results, without training:
    `write_figures(reference("awp-tradeoff"), "figures")`, or `robustlab
    figures awp-tradeoff --out figures`.
    """
    if not isinstance(results, StudyResults):
        # Checked before the folder is made; a study's name failed deep in
        # plots with AttributeError.
        raise TypeError(
            "Argument `results` must be a robustlab.studies.StudyResults, such as "
            f"`reference(name)` or what `reproduce` returns. Received: results={results!r}")
    os.makedirs(validation.check_folder("out", out), exist_ok=True)
    written = [os.path.join(out, "curves.png")]
    figure = plots.study_curves(results)
    figure.savefig(os.path.join(out, "curves.png"), dpi=110)
    plots.close(figure)
    if len({arm.config.awp_gamma for arm in results.study.arms}) > 1:
        figure = plots.gap_against_train_accuracy(results)
        written.append(os.path.join(out, "tradeoff.png"))
        figure.savefig(written[-1], dpi=110)
        plots.close(figure)
    if results.forks:
        figure = plots.fork_widths(results)
        written.append(os.path.join(out, "forks.png"))
        figure.savefig(written[-1], dpi=110)
        plots.close(figure)
    return written


class _StudyProgress:
    """One progress bar over every epoch of every run of a study, and one
    over its fork windows (`robustlab.progress.progress_bar`: off where
    standard error is not a terminal). A line for each run as it ends, and
    for each one resumed or reused, prints in every case, so a study's log
    file shows how far it got."""

    def __init__(self, plan, verbose, forks=0):
        self._bar = self._forks = None
        if verbose:

            total = sum(config.epochs for _, config, _ in plan)
            self._bar = progress_bar(total=total, unit="epoch", desc="runs")
            if forks:
                self._forks = progress_bar(total=forks, unit="fork", desc="forks")

    def callback(self, experiment, seed):

        bar = self._bar

        class _Advance(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._first = True
                self._epochs_run = 0
                self._counted = 0  # epochs this run added to the bar
                self._started = time.perf_counter()
                if bar is not None:
                    bar.set_description(f"{experiment} seed {seed}")

            def on_epoch_begin(self, epoch, logs=None):
                # A resumed run starts at its checkpoint's epoch.
                if self._first and epoch:
                    self._epochs_run = epoch
                    self._advance(epoch)
                    if bar is not None:
                        bar.write(f"{experiment} seed {seed}: resumed at epoch {epoch}")
                self._first = False

            def on_epoch_end(self, epoch, logs=None):
                self._epochs_run = epoch + 1
                self._advance(1)

            def _advance(self, epochs):
                self._counted += epochs
                if bar is not None:
                    bar.update(epochs)

            def on_train_end(self, logs=None):
                epochs = self.params.get("epochs") or 0
                if self._first:
                    # No epoch began: resumed from a checkpoint holding them all.
                    self._epochs_run = epochs
                # A run that stops early (a non-finite loss) or had nothing
                # left to train still counts all its epochs as done.
                self._advance(max(0, epochs - self._counted))
                if bar is not None:
                    bar.write(
                        f"{experiment} seed {seed}: ended after epoch "
                        f"{self._epochs_run} of {self.params.get('epochs')} "
                        f"({time.perf_counter() - self._started:.0f} s)")

        return _Advance()

    def skip(self, what, count, kind="runs"):
        bar = self._forks if kind == "forks" else self._bar
        if bar is not None:
            bar.write(f"{what}: finished earlier, reused")
            bar.update(count)

    def advance(self, what, kind="forks", line=None):
        bar = self._forks if kind == "forks" else self._bar
        if bar is not None:
            if line is not None:
                bar.write(line)
            bar.set_description(what)
            bar.update(1)

    def close(self):
        for bar in (self._bar, self._forks):
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------------------
# Reference results shipped with the package.


def write_reference_file(results, path):
    """Write `results` as gzipped JSON (the format `reference` reads). The
    gzip header carries no time stamp, so the same results give the same
    bytes. The file is written beside `path` and renamed into place, so a
    process killed while writing leaves the previous file whole."""
    payload = json.dumps(results.to_json(), sort_keys=True, separators=(",", ":"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(payload.encode("utf-8"))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _in_source_checkout(reference_dir):
    """Whether the package folder holding `reference_dir` lies in robustlab's
    source checkout (the folder above it holds robustlab's pyproject.toml),
    as with `pip install -e .` or a run from the repository."""
    pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(reference_dir))),
                             "pyproject.toml")
    try:
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    return re.search(r'^name\s*=\s*"robustlab"\s*$', text, re.MULTILINE) is not None


def _check_writable_reference(path):
    """Refuse `write_reference` where the package's reference file cannot or
    must not be written: say so before any training."""
    folder = os.path.dirname(path)
    if not _in_source_checkout(folder):
        # In an installed package the file is no part of what pip installed:
        # it shadowed the shipped references for every later
        # `studies.reference`, and outlived an uninstall and a reinstall.
        raise ValueError(
            "Argument `write_reference` writes the package's reference results "
            f"into {folder}, and that is an installed robustlab, not a source "
            "checkout: a file written there would replace the references it ships "
            "and outlive an uninstall. Regenerate references from a source checkout "
            "installed with `pip install -e .`; to keep results elsewhere, drop "
            "`write_reference`: the study's results go to `out`. "
            f"Received: write_reference=True, reference file {path!r}")
    existing = folder  # where the file, or the folders it needs, would be made
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    target = path if os.path.exists(path) else existing
    if not (os.path.isdir(existing) and os.access(existing, os.W_OK)
            and os.access(target, os.W_OK)):
        raise ValueError(
            "Argument `write_reference` writes the package's reference results "
            f"into {folder}, which this user cannot write (robustlab is installed "
            "read-only there). Reference results are regenerated from a source "
            "checkout installed with `pip install -e .`; to keep results "
            "elsewhere, drop `write_reference`: the study's results go to `out`. "
            f"Received: write_reference=True, reference file {path!r}")


def read_reference_file(path):
    """The `StudyResults` stored at `path` by `write_reference_file`."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        payload = json.load(f)
    study = get(payload["study"])
    if payload["study_version"] != study.version:
        raise ValueError(
            f"{path} holds version {payload['study_version']} of study "
            f"{study.name!r}, this robustlab defines version {study.version}: "
            f"regenerate it with `{command(study, payload['seeds'])} --write-reference`. "
            f"Received: study_version={payload['study_version']}")
    histories = {}
    for arm_payload in payload["arms"]:
        arm = study.arm(arm_payload["experiment"]["name"])
        if arm_payload["experiment"] != json.loads(json.dumps(arm.config.to_dict())):
            raise ValueError(
                f"{path} was made with another configuration of experiment "
                f"{arm.experiment!r} than this robustlab's (version "
                f"{arm_payload['experiment'].get('version')} vs "
                f"{arm.config.version}); regenerate it with "
                f"`{command(study, payload['seeds'])} --write-reference`.")
        histories[arm.experiment] = [_history_from_json(h)
                                     for h in arm_payload["histories"]]

    # from_dict reads a null as NaN only in the figures every window has; a
    # window without the shuffled-pass figures keeps None there (as NaN it
    # would count as a shuffled window, and a written and read-back reference
    # gained columns of NaN).
    forks = {int(seed): [ForkResult.from_dict(w) for w in windows]
             for seed, windows in payload.get("forks", {}).items()}
    return StudyResults(study, payload["seeds"], histories, payload["metadata"], forks=forks)


def reference(name):
    """The reference results of a study that ship with robustlab (8 seeds
    of the quick setting on the embedded digits data).

    A study whose arms are all runs of other studies (`checkpoint-selection`
    reads the instrumented `quick` runs of `robust-overfitting`) is assembled
    from their files.

    Args:
        name: the name of a study of `STUDIES`: `"robust-overfitting"`,
            `"lr-drop-collapse"`, `"awp-tradeoff"` or
            `"checkpoint-selection"`.

    Returns:
        A `StudyResults` (`curve(arm, key)` gives mean and standard error
        over seeds, `table()` the summary figures).

    Raises:
        ValueError: for a name that is not a study.
        FileNotFoundError: when robustlab ships no reference results for
            the study (the message gives the command that makes them).

    Example:

    >>> from robustlab.studies import reference
    >>> ref = reference("awp-tradeoff")
    >>> ref.seeds
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> [arm.experiment for arm in ref.study.arms][:2]
    ['quick', 'quick_awp_0.002']
    >>> mean, stderr = ref.curve("quick_awp", "val_robust_accuracy")
    >>> mean.shape, stderr.shape  # one value per epoch
    ((100,), (100,))
    """
    study = get(name)
    path = os.path.join(REFERENCE_DIR, f"{study.name}.json.gz")
    if os.path.exists(path):
        return read_reference_file(path)
    assembled = _assembled_reference(study)
    if assembled is None:
        raise FileNotFoundError(
            f"robustlab ships no reference results for study {name!r} yet; "
            f"reproduce them with `{command(study, range(8))} --write-reference`.")
    return assembled


def reference_curves(experiment, keys=None):
    """The shipped reference runs of `experiment`, epoch by epoch: the mean
    and standard error over their seeds of every key they logged; what a
    single run can be drawn against (`robustlab train` does).

    Args:
        experiment: a `robustlab.experiments.Experiment` or the name of
            one; its seed does not matter, and a run shortened with
            `epochs` gets the references' first so many epochs (the same
            setting up to there); everything else must be a configuration
            robustlab ships reference runs of.
        keys: the logged keys wanted (those the references did not log are
            left out, so one list serves arms with and without the
            instruments); None: all of them.

    Returns:
        `(curves, seeds)`: `{key: (mean, stderr)}` and the number of seeds;
        None when robustlab ships no reference runs of this configuration.
        Of the arms that share it, the first one with the instruments (their
        keys too) is used.
    """
    if isinstance(experiment, str):
        experiment = experiments_module.get(experiment)
    if not isinstance(experiment, experiments_module.Experiment):
        raise TypeError(
            "Argument `experiment` must be a robustlab.experiments.Experiment or "
            f"the name of one. Received: experiment={experiment!r}")
    wanted = dict(json.loads(json.dumps(experiment.to_dict())), seed=None, epochs=None)
    best = None
    for study in STUDIES.values():
        if not os.path.exists(os.path.join(REFERENCE_DIR, f"{study.name}.json.gz")):
            continue
        for arm in study.arms:
            shipped = dict(json.loads(json.dumps(arm.config.to_dict())), seed=None, epochs=None)
            if shipped != wanted or experiment.epochs > arm.config.epochs:
                continue
            if best is None or (arm.probe_every and not best[1].probe_every):
                best = (study, arm)
    if best is None:
        return None
    results = reference(best[0].name)
    runs = results.runs(best[1].experiment)
    logged = set.intersection(*(set(h) for h in runs))
    if isinstance(keys, str):
        # set("val_loss") would be its letters.
        raise TypeError("Argument `keys` must be a list of logged keys or None. "
                        f"Received: keys={keys!r}")
    chosen = logged if keys is None else logged & set(keys)
    epochs = experiment.epochs
    curves = {}
    for key in sorted(chosen):
        mean, stderr = results.curve(best[1].experiment, key)
        curves[key] = (mean[:epochs], stderr[:epochs])
    return curves, len(runs)


def _assembled_reference(study):
    """`study`'s results from the reference files of the studies that share
    its runs (the same experiment and instruments), or None."""
    if study.forks is not None:
        return None
    histories, seeds, sources = {}, None, []
    for other in STUDIES.values():
        path = os.path.join(REFERENCE_DIR, f"{other.name}.json.gz")
        if other is study or not os.path.exists(path):
            continue
        for arm in study.arms:
            if arm.experiment in histories:
                continue
            if any(a.experiment == arm.experiment and a.probe_every == arm.probe_every
                   for a in other.arms):
                loaded = read_reference_file(path)
                if seeds is not None and loaded.seeds != seeds:
                    continue
                seeds = loaded.seeds
                histories[arm.experiment] = loaded.runs(arm.experiment)
                sources.append(loaded.metadata)
    if len(histories) != len(study.arms):
        return None
    metadata = dict(sources[0], command=command(study, seeds),
                    assembled_from=[m.get("command") for m in sources])
    return StudyResults(study, seeds, histories, metadata)
