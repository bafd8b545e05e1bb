"""Specifications of the experiments runner and the `robustlab` command."""

import json
import os
import warnings

import pytest

from robustlab import cli
from robustlab import experiments


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.EXPERIMENTS:
        assert name in out


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


def test_seeds_summary_gives_mean_and_standard_error():
    summary = cli.seeds_summary([{"gap": 0.1}, {"gap": 0.3}])
    assert summary["gap"]["mean"] == pytest.approx(0.2)
    assert summary["gap"]["stderr"] == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)


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
