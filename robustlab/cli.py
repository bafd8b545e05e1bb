"""The `robustlab` command: reproduce the experiments.

    robustlab list
    robustlab --version
    robustlab reproduce NAME [--quick] [--seeds N | --seeds 0 1 ... | --seed S]
                    [--out DIR]
                    [--resume] [--epochs N] [--write-reference] [--threads N]
                    [--quiet]
    robustlab figures NAME [--out DIR]
    robustlab train [--experiment quick] [--out runs/quick] [--seeds 0 1 ...]
                    [--epochs N] [--awp-gamma G] [--label-noise P]
                    [--probe-every N] [--resume] [--threads N] [--quiet]

`reproduce` runs a named study over seeds and writes its results, table and
figures (`robustlab.studies`): with `--quick` the course's digits setting
(minutes a run on a CPU), without it the full CIFAR-10 setting of Rice, Wong
& Kolter (2020), sized for a GPU. `--resume` continues a reproduction or run
killed at any moment from its last finished epoch.

`train` runs a named experiment (see `robustlab list`), prints a per-epoch
table under a progress bar (the bars, here and in `reproduce`, draw only
where standard error is a terminal; the rows and a line per finished run
print to a log file too), and writes config.json, history.csv/json,
summary.json and curves.png into the output folder (one sub-folder per seed
when several are given, plus `seeds_summary.json` with means and standard
errors across seeds). The Keras backend is chosen, as always with Keras, by
the KERAS_BACKEND environment variable (tensorflow by default, or jax); with
any other, the installed command stops with one line, `robustlab: error:
...`, naming them (status 2).

Bad arguments stop the command with `robustlab COMMAND: error: ...` (exit
status 2), data that cannot be had on this machine (CIFAR-10 offline, say)
with the same kind of line (status 1), and Ctrl-C with a line saying how to
resume (status 130); warnings print as one line, `robustlab COMMAND:
warning: ...`. The installed command drops TensorFlow's start-up lines from
its standard error (see `_robustlab_command`); `python -m robustlab.cli`
does not.

`--threads N` runs TensorFlow's CPU kernels on N threads instead of one per
CPU. On a CPU the thread count decides a run's last digits, and over 100
epochs its trajectory, as the seed does: the shipped reference results were
made on 2 threads (a 2-core machine), so `--threads 2` is how another
machine tries to reproduce them (the same numbers also need the same kind of
CPU). Runs record their thread count, and `--resume` continues a run only on
the same count.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import warnings

import keras
import numpy as np

from robustlab import backend
from robustlab import data
from robustlab import experiments
from robustlab import provenance
from robustlab import studies
from robustlab import validation
from robustlab.summary_statistics import mean_and_stderr
from robustlab._version import __version__

__all__ = [
    "main",
    "seeds_summary",
]


def _parser():
    parser = argparse.ArgumentParser(
        prog="robustlab",
        description="Adversarial training and robust overfitting experiments.",
    )
    parser.add_argument(
        "--version", action="version",
        version=f"robustlab {__version__} (Keras {keras.__version__}, backend "
                f"{provenance.code_identity()['backend']})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the named studies and experiments")
    reproduce = commands.add_parser(
        "reproduce", help="reproduce a named study over seeds")
    reproduce.add_argument("study", help="study name (see `robustlab list`)")
    reproduce.add_argument(
        "--quick", action="store_true",
        help="the digits setting (minutes a run on a CPU); without it: CIFAR-10 "
             "and PreActResNet-18 as in Rice et al. (2020), for a GPU")
    which_seeds = reproduce.add_mutually_exclusive_group()
    which_seeds.add_argument(
        "--seeds", type=int, nargs="+", default=[8],
        help=f"a number of seeds, the seeds 0..N-1 (N at most "
             f"{studies.MAX_SEEDS}), or, with several values, the seeds (default: 8)")
    which_seeds.add_argument(
        "--seed", type=int, default=None,
        help="one seed, S (where --seeds S runs the S seeds 0..S-1)")
    reproduce.add_argument("--out", default="runs",
                           help="output root: runs/ and forks/ (shared between "
                                "studies) and <study>/ with the results (default: runs)")
    reproduce.add_argument("--resume", action="store_true",
                           help="reuse the runs already finished in --out and "
                                "continue an interrupted one from its last epoch")
    reproduce.add_argument("--epochs", type=int, default=None,
                           help="train fewer epochs than the study's runs (a shortened "
                                "look; its runs and results go to folders of their own)")
    reproduce.add_argument("--write-reference", action="store_true",
                           help="also write the package's reference results "
                                "(at least 8 seeds, with --quick, from a source "
                                "checkout installed with pip install -e .)")
    reproduce.add_argument("--quiet", action="store_true",
                           help="print only warnings and errors: no progress bar, no "
                                "results table (the results, table and figures are "
                                "written all the same)")
    figures = commands.add_parser(
        "figures", help="draw a study's figures from the reference results that "
                        "ship with robustlab (no training)")
    figures.add_argument("study", help="study name (see `robustlab list`)")
    figures.add_argument("--out", default=None,
                         help="output folder (default: figures/<study>)")
    train = commands.add_parser("train", help="run an experiment")
    train.add_argument("--experiment", default="quick",
                       help="named experiment (default: quick)")
    train.add_argument("--out", default=None,
                       help="output folder (default: runs/<experiment>)")
    train.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="model/attack seeds (default: the experiment's)")
    train.add_argument("--epochs", type=int, default=None,
                       help="train this many epochs instead of the experiment's "
                            "(a shorter look; `robustlab list` shows each one's)")
    train.add_argument("--awp-gamma", type=float, default=None,
                       help="AWP's relative weight perturbation gamma >= 0 (0: no AWP), "
                            "applied after the experiment's warm-up of plain adversarial "
                            "training: 10 epochs in the digits experiments, none in the "
                            "CIFAR-10 ones (a run that ends within it trains as without "
                            "AWP)")
    train.add_argument("--label-noise", type=float, default=None,
                       help="the fraction in [0, 1) of training labels flipped to "
                            "another class (default: the experiment's; `robustlab list` "
                            "shows each one's: 0.2 in the digits experiments but "
                            "quick_clean, 0 there and in the CIFAR-10 ones)")
    train.add_argument("--probe-every", type=int, default=5,
                       help="the instruments (Hessian probe, posterior tracker, "
                            "PAC-Bayes bound), the probe every N epochs; 0: none "
                            "(default: 5)")
    train.add_argument("--resume", action="store_true",
                       help="continue a run killed midway from its last finished "
                            "epoch (a finished run is reported, not retrained)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch table")
    for command in (reproduce, train):
        command.add_argument(
            "--threads", type=int, default=None,
            help="run TensorFlow's CPU kernels on N threads (default: one per CPU); "
                 "the count changes a CPU run's numbers, and the reference results "
                 "were made on 2")
    return parser


_MAX_THREADS = 2**31 - 1
"""The most `--threads` takes: TensorFlow holds the count in an int32."""


def _set_threads(args):
    if args.threads is not None:
        validation.check_int_in_range("threads", args.threads, 1, _MAX_THREADS)
        backend.get().set_cpu_threads(args.threads)


def _named(argument, name, registry):
    """`name` if `registry` has it; else the library's ValueError
    (`experiments.get`, `studies.get`), but naming the command's argument
    where the library's names `name`."""
    if name not in registry:
        raise ValueError(
            f"Unknown {argument}; available: {', '.join(sorted(registry))} "
            f"(`robustlab list`). Received: {argument}={name!r}")
    return name


def _experiment_from(args):
    experiment = experiments.get(
        _named("experiment", args.experiment, experiments.EXPERIMENTS))
    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.awp_gamma is not None:
        changes["awp_gamma"] = args.awp_gamma
    if args.label_noise is not None:
        changes["label_noise"] = args.label_noise
    return experiment.replace(**changes) if changes else experiment


def _list():
    for flag, registry in (("--quick ", studies.STUDIES),
                           ("", studies.FULL_SCALE_STUDIES)):
        scale = "quick, digits" if flag else "full scale, CIFAR-10, for a GPU"
        print(f"studies (robustlab reproduce NAME {flag}...; {scale}):")
        for name, study in sorted(registry.items()):
            arms = ", ".join(arm.experiment for arm in study.arms)
            print(f"  {name:20s} v{study.version}  arms: {arms}")
    print("experiments (robustlab train --experiment NAME):")
    for name, experiment in sorted(experiments.EXPERIMENTS.items()):
        print(f"  {name:22s} v{experiment.version}  {experiment.dataset}, "
              f"{experiment.model}, {experiment.epochs} epochs, LR "
              f"{experiment.learning_rate:g}, PGD-"
              f"{experiment.train_steps} eps={experiment.eps:.4g}, "
              f"label noise {experiment.label_noise:g}, AWP gamma "
              f"{experiment.awp_gamma:g}")


_SUMMARY_SETTINGS = ("label_noise",)
"""Keys of a run's summary that are settings, the same for every seed: kept
as they are, not averaged."""


def seeds_summary(summaries):
    """Mean and standard error across seeds of each numeric summary figure,
    over the seeds that have it (a figure a run could not measure is NaN or
    missing there); `n` counts them. Missing values are None (JSON's null),
    as are the mean of a figure no seed has and the standard error of one
    fewer than two seeds have; so is the mean of a figure a seed found
    infinite (`mean_and_stderr` does not leave an infinity out; JSON has
    none), with `n` counting that seed. A figure a summary gives as None
    (JSON's null, read back) counts as missing. Settings (the label noise)
    are copied from the first run, not averaged: every run must have the
    same."""
    _check_summaries(summaries)
    result = {"seeds": len(summaries)}
    keys = list(dict.fromkeys(key for s in summaries for key in s))
    for key in keys:
        if key in _SUMMARY_SETTINGS:
            result[key] = summaries[0][key]
            continue
        values = np.asarray([math.nan if s.get(key) is None else s[key] for s in summaries],
                            dtype="float64")
        mean, stderr = mean_and_stderr(values)
        result[key] = {
            "mean": _json_number(mean),
            "stderr": _json_number(stderr),
            "n": int((~np.isnan(values)).sum()),
            "values": [_json_number(v) for v in values.tolist()],
        }
    return result


def _check_summaries(summaries):
    if not isinstance(summaries, (list, tuple)) or not all(isinstance(s, dict) for s in summaries):
        raise TypeError("Argument `summaries` must be a list of the runs' summaries, dicts of "
                        f"numbers. Received: summaries={summaries!r}")
    if not summaries:
        # A table of no seeds would read as a run that measured nothing.
        raise ValueError("Argument `summaries` must hold at least one run's summary. "
                         f"Received: summaries={summaries!r}")
    for i, summary in enumerate(summaries):
        for key, value in summary.items():
            if key in _SUMMARY_SETTINGS:
                if value != summaries[0].get(key):
                    raise ValueError(
                        f"Argument `summaries` must be runs of one setting: `{key}` is "
                        f"{summaries[0].get(key)!r} in the first and {value!r} in run {i}. "
                        f"Received: summaries[{i}][{key!r}]={value!r}")
            elif value is not None and not validation._is_real_number(value):
                raise TypeError(
                    f"Argument `summaries` must hold numbers (or None, not measured). "
                    f"Received: summaries[{i}][{key!r}]={value!r}")


def _json_number(value):
    return float(value) if math.isfinite(value) else None


def _train(args):
    validation.check_int_at_least("probe_every", args.probe_every, 0)
    _set_threads(args)
    experiment = _experiment_from(args)
    out = validation.check_folder(
        "out", os.path.join("runs", experiment.name) if args.out is None else args.out)
    seeds = validation.check_distinct("seeds", args.seeds) if args.seeds else [experiment.seed]
    for seed in seeds:
        validation.check_seed("seeds", seed)
    folders = _seed_folders(out, seeds)
    experiments._warn_if_awp_never_starts([experiment])
    # curves.png draws each run against the shipped runs of its setting
    # (other seeds): one run is one draw.
    reference = studies.reference_curves(experiment)
    summaries = []
    for seed, folder in zip(seeds, folders):
        if not args.quiet:
            print(f"== {experiment.name} v{experiment.version} ({experiment.labels}), "
                  f"seed {seed} -> {folder}")
        _, summary = experiments.run(
            experiment.replace(seed=seed), folder, verbose=0 if args.quiet else 1,
            probe_every=args.probe_every or None, resume=args.resume, reference=reference,
        )
        summaries.append(summary)
        print(json.dumps(summary, indent=2, sort_keys=True))
    if len(seeds) > 1:
        aggregate = seeds_summary(summaries)
        with open(os.path.join(out, "seeds_summary.json"), "w") as f:
            json.dump(aggregate, f, indent=2, sort_keys=True)
        gap = aggregate["robust_overfitting_gap"]
        print(f"robust overfitting gap over {len(seeds)} seeds ({experiment.labels}): "
              f"{100 * gap['mean']:.1f} +/- {100 * gap['stderr']:.1f} points (s.e.)")
    return 0


def _seed_folders(out, seeds):
    """Each seed's run folder: `out` for one seed, `out/seed<S>` for several,
    every one checked before any seed trains (`out` itself is checked)."""
    if len(seeds) == 1:
        return [out]
    folders = [os.path.join(out, f"seed{seed}") for seed in seeds]
    for folder in folders:
        if os.path.isdir(folder):
            if os.access(folder, os.W_OK | os.X_OK):
                continue
            problem = "is a folder this process cannot write in"
        elif os.path.lexists(folder):
            problem = "is a file" if os.path.isfile(folder) else "is not a folder"
        else:
            continue
        raise ValueError(
            f"Argument `out` must be a folder in which each seed's folder, seed<S>, "
            f"can be made or written; {folder!r} {problem}. Received: out={out!r}")
    return folders


def _figures(args):
    _named("study", args.study, studies.STUDIES)
    out = os.path.join("figures", args.study) if args.out is None else args.out
    for path in studies.write_figures(studies.reference(args.study), out):
        print(path)
    return 0


def _reproduce(args):
    _named("study", args.study,
           studies.STUDIES if args.quick else studies.FULL_SCALE_STUDIES)
    if args.write_reference and not args.quick:
        raise ValueError(
            "Argument `write_reference` writes the package's reference results, which "
            "are the quick studies' (the lessons read them): add `--quick`, or drop "
            "`--write-reference` (a full-scale study writes only its results folder). "
            "Received: quick=False, write_reference=True")
    _set_threads(args)
    if args.seed is not None:
        seeds = [validation.check_seed("seed", args.seed)]
    else:
        seeds = args.seeds[0] if len(args.seeds) == 1 else args.seeds
    studies.reproduce(args.study, seeds, args.out, resume=args.resume,
                      scale="quick" if args.quick else "full",
                      verbose=0 if args.quiet else 1, epochs=args.epochs,
                      write_reference=args.write_reference)
    return 0


@contextlib.contextmanager
def _warnings_as_lines(command):
    """Warnings print as one line, `robustlab COMMAND: warning: MESSAGE`,
    like the command's errors, instead of Python's file name, line number
    and source line of the library code that issued them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"robustlab {command}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with _warnings_as_lines(args.command):
            if getattr(args, "out", None) == "":
                # Not the default folder, nor the current one.
                validation.check_folder("out", args.out)
            if args.command == "list":
                _list()
                return 0
            if args.command == "reproduce":
                return _reproduce(args)
            if args.command == "figures":
                return _figures(args)
            return _train(args)
    except ValueError as error:
        # Bad arguments: the message names the argument and what it received.
        parser.exit(2, f"robustlab {args.command}: error: {error}\n")
    except FileNotFoundError as error:
        if error.filename is None:
            # Results asked for that are not there (`studies.reference`): the
            # message says how to make them.
            parser.exit(2, f"robustlab {args.command}: error: {error}\n")
        # A path of the output folder that could not be made or written.
        _could_not_write(parser, args, error)
    except data.DatasetNotAvailableError as error:
        # Not an argument's fault: the data is missing here, and the message
        # says how to get it.
        parser.exit(1, f"robustlab {args.command}: error: {error}\n")
    except OSError as error:
        # (After the missing data above, itself an OSError.)
        _could_not_write(parser, args, error)
    except KeyboardInterrupt:
        return _interrupted(args)
    except SystemError as error:
        # Ctrl-C while TensorFlow traces a function can surface as a
        # SystemError from its C code, raised while the KeyboardInterrupt
        # was being handled: the same interruption.
        if isinstance(error.__context__, KeyboardInterrupt):
            return _interrupted(args)
        raise


def _could_not_write(parser, args, error):
    """The folder was checked, then could not be written (a full disk, a
    read-only mount, /proc): say so in a line, naming where."""
    where = getattr(args, "out", None)
    parser.exit(1, f"robustlab {args.command}: error: could not write the "
                   f"results ({error.strerror or error}: {error.filename or ''}). "
                   f"Received: out={where!r}\n")


def _interrupted(args):
    # Ctrl-C: a line, not a traceback through TensorFlow. Every run
    # checkpoints each finished epoch, so nothing finished is lost.
    again = ""
    if args.command in ("train", "reproduce"):
        again = ("; the same command with --resume continues from the last "
                 "finished epoch")
    print(f"\nrobustlab {args.command}: interrupted{again}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
