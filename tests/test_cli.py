"""Specifications of the experiments runner and the `robustlab` command."""

import importlib.metadata
import json
import os
import re
import warnings

import pytest

from robustlab import cli
from robustlab import experiments
from robustlab import studies


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.EXPERIMENTS:
        assert name in out


def test_version_names_robustlab_keras_and_the_backend(capsys):
    import keras

    import robustlab

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    backend = keras.backend.backend()
    version = importlib.import_module(backend).__version__
    if backend == "jax":
        version += f", jaxlib {importlib.import_module('jaxlib').__version__}"
    assert capsys.readouterr().out == (
        f"robustlab {robustlab.__version__} (Keras {keras.__version__}, "
        f"backend {backend} {version})\n")


def test_the_quick_experiment_is_the_design_setting():
    quick = experiments.get("quick")
    assert (quick.train_size, quick.label_noise, quick.epochs) == (1000, 0.2, 100)
    assert quick.train_attack == experiments.PGD(0.1, 2.5 * 0.1 / 3, 3)
    assert quick.eval_attack.step_size == pytest.approx(0.025)
    assert quick.schedule(39) == pytest.approx(0.2)
    assert quick.schedule(40) == pytest.approx(0.02)
    dataset, model = experiments.build(quick)
    assert model.model.count_params() == 272_586
    assert int((dataset.y_train != dataset.y_train_clean).sum()) == 200


def test_an_unknown_experiment_is_rejected():
    with pytest.raises(ValueError, match=r"Unknown experiment.*quick.*Received: name='nope'"):
        experiments.get("nope")


def test_train_writes_history_summary_config_and_plot(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", "--epochs", "2", "--out", out, "--quiet"]) == 0
    assert sorted(os.listdir(out)) == [
        "config.json", "curves.png", "history.csv", "history.json", "summary.json"]
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert len(history["val_robust_accuracy"]) == 2
    assert {"train_robust_accuracy", "learning_rate", "val_clean_accuracy"} <= set(history)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["experiment"]["name"] == "quick"
    assert config["experiment"]["epochs"] == 2
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["label_noise"] == 0.2


def test_seeds_summary_gives_mean_and_standard_error():
    summary = cli.seeds_summary([{"gap": 0.1}, {"gap": 0.3}])
    assert summary["gap"]["mean"] == pytest.approx(0.2)
    assert summary["gap"]["stderr"] == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)


def test_seeds_summary_leaves_out_a_figure_a_run_could_not_measure():
    summary = cli.seeds_summary([{"gap": 0.1, "eig": 2.0}, {"gap": 0.3, "eig": float("nan")},
                                 {"gap": 0.5}])
    assert summary["eig"] == {"mean": 2.0, "stderr": None, "n": 1, "values": [2.0, None, None]}
    assert summary["gap"]["n"] == 3 and summary["gap"]["mean"] == pytest.approx(0.3)
    json.dumps(summary, allow_nan=False)  # standard JSON: no NaN


def test_seeds_summary_counts_a_figure_read_back_as_null_as_missing():
    # summary.json files write a figure a run could not measure as null.
    summary = cli.seeds_summary([{"gap": None}, {"gap": 0.3}])
    assert summary["gap"] == {"mean": 0.3, "stderr": None, "n": 1, "values": [None, 0.3]}


@pytest.mark.parametrize("summaries, error, message", [
    ("gap", TypeError, r"`summaries` must be a list of the runs' summaries, dicts of numbers. "
                       r"Received: summaries='gap'"),
    ([{"gap": 0.1}, [0.3]], TypeError, r"`summaries` must be a list of the runs' summaries"),
    ([{"gap": 0.1}, {"gap": "0.3"}], TypeError,
     r"`summaries` must hold numbers \(or None, not measured\). Received: summaries\[1\]\['gap'\]='0.3'"),
    ([{"gap": True}], TypeError, r"Received: summaries\[0\]\['gap'\]=True"),
    ([{"gap": 0.1, "label_noise": 0.2}, {"gap": 0.3, "label_noise": 0.0}], ValueError,
     r"`summaries` must be runs of one setting: `label_noise` is 0.2 in the first and 0.0 in "
     r"run 1. Received: summaries\[1\]\['label_noise'\]=0.0"),
    ([], ValueError, r"`summaries` must hold at least one run's summary. Received: summaries=\[\]"),
], ids=["text", "an entry not a dict", "a figure as text", "a boolean", "two settings",
        "no runs"])
def test_seeds_summary_names_what_is_not_runs_of_one_setting(summaries, error, message):
    # Before: AttributeError or NumPy's conversion errors, and runs of two
    # label noises averaged under the first one's.
    with pytest.raises(error, match=message):
        cli.seeds_summary(summaries)


def test_a_warning_prints_as_one_line_naming_the_command(capsys, monkeypatch):
    # As the command's errors do; not Python's file, line and source line of
    # the library code that issued it.
    monkeypatch.setattr(cli, "_list", lambda: warnings.warn("46 parameters did not move",
                                                             UserWarning))
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["list"]) == 0
    assert capsys.readouterr().err == "robustlab list: warning: 46 parameters did not move\n"
    assert warnings.showwarning is shown  # put back when the command ends


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"],
     "Argument `epochs` must be an integer >= 1. Received: epochs=0"),
    (["train", "--awp-gamma", "-1"],
     "Argument `awp_gamma` must be a finite number >= 0. Received: awp_gamma=-1.0"),
    (["train", "--seeds", "0", "0"],
     "Argument `seeds` must not repeat a value. Received: seeds=[0, 0]"),
    (["reproduce", "robust-overfitting", "--quick", "--seeds", "1", "1"],
     "Argument `seeds` must not repeat a value. Received: seeds=[1, 1]"),
    (["reproduce", "robust-overfitting", "--quick", "--epochs", "0"],
     "Argument `epochs` must be an integer >= 1. Received: epochs=0"),
    (["reproduce", "robust-overfitting", "--quick", "--epochs", "100"],
     "Argument `epochs` shortens the runs of study 'robust-overfitting', which train 100 "
     "epochs: it must be an integer in [1, 99] (drop it for the full runs). "
     "Received: epochs=100"),
    # TensorFlow keeps the count in an int32.
    (["train", "--threads", "2147483648"],
     "Argument `threads` must be an integer in [1, 2147483647]. Received: threads=2147483648"),
    (["reproduce", "robust-overfitting", "--quick", "--threads", "5000000000"],
     "Argument `threads` must be an integer in [1, 2147483647]. Received: threads=5000000000"),
    (["reproduce", "robust-overfitting", "--write-reference"],
     "Argument `write_reference` writes the package's reference results, which are the "
     "quick studies' (the lessons read them): add `--quick`, or drop `--write-reference` "
     "(a full-scale study writes only its results folder). "
     "Received: quick=False, write_reference=True"),
])
def test_a_bad_argument_stops_the_command_before_any_training(capsys, monkeypatch, args,
                                                              message):
    def no_training(*args, **kwargs):
        raise AssertionError("trained despite a bad argument")

    monkeypatch.setattr(experiments, "run", no_training)
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"robustlab {args[0]}: error: {message}\n"


@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1"],
    ["reproduce", "robust-overfitting", "--quick", "--epochs", "1"],
    ["figures", "robust-overfitting"],
])
def test_an_output_folder_that_is_a_file_is_refused_by_name(tmp_path, capsys, monkeypatch,
                                                            command):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--out", str(a_file)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"robustlab {command[0]}: error: Argument `out` must be a folder, or a path "
        f"where one can be made; a file is there. Received: out={str(a_file)!r}\n")
    assert a_file.read_text() == "mine"


def test_the_runner_refuses_a_file_as_its_folder_or_on_the_way_to_it(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match=r"Argument `out_dir` must be a folder, or a path "
                                         r"where one can be made; a file is there. Received: "
                                         r"out_dir='.*notes.txt'"):
        experiments.run("quick", str(a_file), epochs=1, verbose=0)
    below = str(a_file / "seed0" / "run")
    with pytest.raises(ValueError, match=rf"made; {re.escape(repr(str(a_file)))} is a file. "
                                         rf"Received: out_dir={re.escape(repr(below))}"):
        experiments.run("quick", below, epochs=1, verbose=0)


def test_several_seeds_under_a_file_are_refused_before_training(tmp_path, capsys,
                                                                monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--seeds", "0", "1", "--out", str(a_file / "sweep")])
    assert exit_.value.code == 2
    assert f"{str(a_file)!r} is a file" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "`epochs` must be an integer >= 1. Received: epochs=0"),
    ({"epochs": 2.5}, "`epochs` must be an integer >= 1. Received: epochs=2.5"),
    ({"batch_size": 0}, "`batch_size` must be an integer >= 1. Received: batch_size=0"),
    ({"train_steps": 0}, "`train_steps` must be an integer >= 1. Received: train_steps=0"),
    ({"awp_gamma": -0.01}, "`awp_gamma` must be a finite number >= 0. Received: awp_gamma=-0.01"),
    ({"awp_gamma": float("nan")}, "`awp_gamma` must be a finite number >= 0. Received: "
                                  "awp_gamma=nan"),
    ({"awp_warmup_epochs": -1}, "`awp_warmup_epochs` must be an integer >= 0. Received: "
                                "awp_warmup_epochs=-1"),
    ({"learning_rate": 0.0}, "`learning_rate` must be a finite number > 0. Received: "
                             "learning_rate=0.0"),
    # The schedule's, refused here under the experiment's names.
    ({"lr_drop_factor": 2.0}, "`lr_drop_factor` must be a finite number in (0, 1]. Received: "
                              "lr_drop_factor=2.0"),
    ({"lr_drop_epochs": (0,)}, "`lr_drop_epochs` must hold integers, strictly increasing and "
                               ">= 1. Received: lr_drop_epochs=(0,)"),
    ({"lr_drop_epochs": (40, 40)}, "`lr_drop_epochs` must hold integers, strictly increasing "
                                   "and >= 1. Received: lr_drop_epochs=(40, 40)"),
    ({"lr_drop_epochs": (40.5,)}, "`lr_drop_epochs` must hold integers, strictly increasing "
                                  "and >= 1. Received: lr_drop_epochs=(40.5,)"),
    ({"lr_drop_epochs": "40"}, "`lr_drop_epochs` must be a sequence of epochs, e.g. (40,). "
                               "Received: lr_drop_epochs='40'"),
])
def test_an_experiment_with_a_bad_setting_cannot_be_made(change, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        experiments.get("quick").replace(**change)



def test_data_that_cannot_be_had_here_is_an_error_line_not_a_traceback(capsys, monkeypatch,
                                                                        tmp_path):
    from robustlab import data

    def missing(*args, **kwargs):
        raise data.DatasetNotAvailableError(
            "Dataset 'cifar10' is not prepared in data_dir='/x' and cannot be downloaded now")

    monkeypatch.setattr(experiments, "run", missing)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--experiment", "cifar10_rice", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "robustlab train: error: Dataset 'cifar10' is not prepared in data_dir='/x' and "
        "cannot be downloaded now\n")


def test_an_output_path_that_cannot_be_written_is_an_error_line_with_status_1(capsys, monkeypatch,
                                                                            tmp_path):
    # What writing under /proc gives: a FileNotFoundError naming the path.
    def unwritable(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/proc/x/config.json")

    monkeypatch.setattr(experiments, "run", unwritable)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "robustlab train: error: could not write the results (No such file or directory: "
        f"/proc/x/config.json). Received: out={str(tmp_path / 'run')!r}\n")


def test_reference_results_that_are_not_there_are_a_bad_argument(capsys, monkeypatch, tmp_path):
    from robustlab import studies

    def missing(name):
        raise FileNotFoundError(f"robustlab ships no reference results for study {name!r} yet")

    monkeypatch.setattr(studies, "reference", missing)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["figures", "awp-tradeoff", "--out", str(tmp_path / "figures")])
    assert exit_.value.code == 2
    assert "ships no reference results for study 'awp-tradeoff'" in capsys.readouterr().err


def test_ctrl_c_surfacing_as_a_system_error_from_tracing_is_an_interruption(capsys, monkeypatch,
                                                                          tmp_path):
    def interrupted_while_tracing(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function")

    monkeypatch.setattr(experiments, "run", interrupted_while_tracing)
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip() == (
        "robustlab train: interrupted; the same command with --resume continues from "
        "the last finished epoch")


def test_a_system_error_of_its_own_is_not_taken_for_an_interruption(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise SystemError("bad argument to internal function")

    monkeypatch.setattr(experiments, "run", broken)
    with pytest.raises(SystemError):
        cli.main(["train", "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("verbose", [2, -1, 0.5, "auto", None])
def test_the_runner_takes_verbose_0_or_1_only(verbose):
    with pytest.raises(ValueError, match=re.escape(
            f"Argument `verbose` must be 0 (silent) or 1 (progress and tables). "
            f"Received: verbose={verbose!r}")):
        experiments.run("quick", epochs=1, verbose=verbose)


@pytest.mark.parametrize("args, seeds", [
    (["--seeds", "3"], 3), (["--seeds", "3", "5"], [3, 5]), (["--seed", "3"], [3]),
    ([], 8),
])
def test_reproduce_takes_a_count_a_list_or_one_seed(monkeypatch, args, seeds):
    chosen = []
    monkeypatch.setattr(studies, "reproduce", lambda name, s, *a, **k: chosen.append(s))
    assert cli.main(["reproduce", "robust-overfitting", "--quick", *args]) == 0
    assert chosen == [seeds]


def test_one_seed_and_seeds_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "robust-overfitting", "--quick", "--seed", "3", "--seeds", "2"])
    assert exit_.value.code == 2
    assert "argument --seeds: not allowed with argument --seed" in capsys.readouterr().err


def test_a_seed_outside_the_range_is_named_as_its_flag(capsys, monkeypatch):
    monkeypatch.setattr(studies, "reproduce", lambda *a, **k: pytest.fail("reproduced"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "robust-overfitting", "--quick", "--seed", "-1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "robustlab reproduce: error: Argument `seed` must be an integer >= 0. "
        "Received: seed=-1\n")


def test_the_command_of_one_seed_reproduces_that_seed(monkeypatch):
    # `--seeds 3` would be the three seeds 0, 1 and 2.
    line = studies.command(studies.get("robust-overfitting"), [3])
    chosen = []
    monkeypatch.setattr(studies, "reproduce", lambda name, s, *a, **k: chosen.append(s))
    assert cli.main(line.split()[1:]) == 0
    assert chosen == [[3]]


def _trained_nothing(*args, **kwargs):
    return {}, {"robust_overfitting_gap": 0.0}


def _train_warnings(capsys, monkeypatch, tmp_path, args):
    """The warning lines of `robustlab train ARGS` (the runs faked)."""
    monkeypatch.setattr(experiments, "run", _trained_nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["train", *args, "--out", str(tmp_path), "--quiet"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "warning" in line]


@pytest.mark.parametrize("args, setting", [
    (["--experiment", "quick_awp", "--epochs", "3"], "quick_awp with awp_gamma=0.005"),
    (["--awp-gamma", "0.005", "--epochs", "3"], "quick with awp_gamma=0.005"),
    (["--experiment", "quick_awp", "--epochs", "10"], "quick_awp with awp_gamma=0.005"),
])
def test_train_warns_when_the_run_ends_within_awps_warm_up(capsys, monkeypatch, tmp_path,
                                                           args, setting):
    epochs = args[-1]
    assert _train_warnings(capsys, monkeypatch, tmp_path, args) == [
        f"robustlab train: warning: {setting} and epochs={epochs} ends before AWP's "
        "warm-up (10 epochs): it trains exactly as without AWP."]


@pytest.mark.parametrize("args", [
    ["--experiment", "quick_awp", "--epochs", "11"],
    ["--epochs", "3"],
    ["--experiment", "cifar10_rice_awp", "--epochs", "1"],  # no warm-up
])
def test_train_does_not_warn_when_awp_applies_or_is_off(capsys, monkeypatch, tmp_path, args):
    assert _train_warnings(capsys, monkeypatch, tmp_path, args) == []


def test_train_warns_about_awps_warm_up_once_for_all_seeds(capsys, monkeypatch, tmp_path):
    lines = _train_warnings(capsys, monkeypatch, tmp_path,
                            ["--experiment", "quick_awp", "--epochs", "3", "--seeds", "0", "1"])
    assert len(lines) == 1 and "AWP's warm-up" in lines[0]


def _help(capsys, command):
    """`robustlab COMMAND --help`, its whitespace (argparse's wrapping)
    made single spaces."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_awp_gamma_help_gives_each_experiments_warm_up(capsys):
    assert ("applied after the experiment's warm-up of plain adversarial training: 10 "
            "epochs in the digits experiments, none in the CIFAR-10 ones"
            in _help(capsys, "train"))
    # What it says is so.
    for experiment in experiments.EXPERIMENTS.values():
        assert experiment.awp_warmup_epochs == (10 if experiment.dataset == "digits" else 0)


def test_the_label_noise_help_gives_each_experiments_default(capsys):
    assert ("0.2 in the digits experiments but quick_clean, 0 there and in the CIFAR-10 ones"
            in _help(capsys, "train"))
    for name, experiment in experiments.EXPERIMENTS.items():
        noisy = experiment.dataset == "digits" and name != "quick_clean"
        assert experiment.label_noise == (0.2 if noisy else 0.0)


@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1"],
    ["reproduce", "robust-overfitting", "--quick", "--epochs", "1"],
    ["figures", "robust-overfitting"],
])
def test_an_empty_output_folder_is_refused_not_replaced_by_the_default(tmp_path, capsys,
                                                                       monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--out", ""])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"robustlab {command[0]}: error: Argument `out` must be a folder, or a path where "
        "one can be made; an empty path names none. Received: out=''\n")
    assert os.listdir(tmp_path) == []


def test_a_seeds_folder_that_cannot_be_made_is_refused_before_any_seed_trains(tmp_path, capsys,
                                                                             monkeypatch):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "seed1").write_text("mine")
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--seeds", "0", "1", "--out", str(out)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "robustlab train: error: Argument `out` must be a folder in which each seed's "
        f"folder, seed<S>, can be made or written; {str(out / 'seed1')!r} is a file. "
        f"Received: out={str(out)!r}\n")
    assert (out / "seed1").read_text() == "mine"
    assert os.listdir(out) == ["seed1"]


def test_a_seed_count_beyond_the_limit_is_refused_before_the_seeds_are_listed(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "robust-overfitting", "--quick", "--seeds", "2147483648"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "robustlab reproduce: error: Argument `seeds` must be a number of seeds in "
        f"[1, {studies.MAX_SEEDS}] (the seeds 0..N-1) or a list of at most "
        f"{studies.MAX_SEEDS} seeds. Received: seeds=2147483648\n")


@pytest.mark.parametrize("args, argument, names", [
    (["train", "--experiment", "nope"], "experiment", sorted(experiments.EXPERIMENTS)),
    (["reproduce", "nope", "--quick"], "study", sorted(studies.STUDIES)),
    (["reproduce", "nope"], "study", sorted(studies.FULL_SCALE_STUDIES)),
    (["figures", "nope"], "study", sorted(studies.STUDIES)),
])
def test_an_unknown_name_is_named_as_the_commands_argument(capsys, monkeypatch, tmp_path, args,
                                                           argument, names):
    # Not as the library's `name`, which the command's user never typed.
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"robustlab {args[0]}: error: Unknown {argument}; available: {', '.join(names)} "
        f"(`robustlab list`). Received: {argument}='nope'\n")


@pytest.mark.parametrize("content", ["", "[1, 2]", '{"experiment": '])
def test_resuming_over_a_config_json_that_is_not_a_runs_is_an_error_line(capsys, tmp_path,
                                                                          content):
    # Empty, another program's JSON, cut short: named, not a traceback,
    # and left as it was.
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--epochs", "1", "--out", str(tmp_path), "--resume", "--quiet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"robustlab train: error: {tmp_path / 'config.json'} is not a robustlab run's "
        "config (it cannot be read as one: empty, damaged or another program's), so there "
        "is no run to resume there: remove it, or write to another folder. "
        f"Received: out_dir={str(tmp_path)!r}\n")
    assert (tmp_path / "config.json").read_text() == content
    assert os.listdir(tmp_path) == ["config.json"]


def test_too_few_steps_for_the_instruments_names_the_commands_flag_too(digits):
    few = experiments.get("quick").replace(batch_size=len(digits.x_train))
    with pytest.raises(ValueError, match=re.escape(
            "or no instruments (probe_every=None; `--probe-every 0` in `robustlab train`)")):
        experiments.instruments(few, digits, probe_every=5)


def test_reproduces_quiet_prints_only_warnings_and_errors_as_its_help_says(capsys, monkeypatch):
    assert ("--quiet print only warnings and errors: no progress bar, no results table"
            in _help(capsys, "reproduce"))
    # What it says is so: the study runs silent (`studies.reproduce`'s verbose=0).
    asked = []
    monkeypatch.setattr(studies, "reproduce", lambda *a, verbose, **k: asked.append(verbose))
    assert cli.main(["reproduce", "robust-overfitting", "--quick", "--quiet"]) == 0
    assert asked == [0]
