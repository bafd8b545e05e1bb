"""Studies: a finding reproduced over seeds, resumable, with forks, and the
reference results that ship with the package."""

import dataclasses
import json
import math
import os
import re
import shutil
import warnings

import numpy as np
import pytest

from robustlab import cli
from robustlab import experiments
from robustlab import forks
from robustlab import provenance
from robustlab import studies

TINY = experiments.QUICK.replace(
    name="tiny", version=1, train_size=128, epochs=3, lr_drop_epochs=(2,),
    model_kwargs=(("filters", (4, 8)), ("dense", 16)), eval_train_examples=32,
    eval_steps=2, learning_rate=0.05)
TINY_STUDY = studies.Study(
    name="tiny-study", version=1,
    arms=(studies.Arm("tiny, probes", "tiny", probe_every=2),),
    forks=studies.Forks("tiny", epochs=(1, 2), replicas=3),
    description="a tiny study for the tests")


@pytest.fixture(scope="module")
def tiny():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(experiments.EXPERIMENTS, "tiny", TINY)
        patch.setitem(studies.STUDIES, "tiny-study", TINY_STUDY)
        yield TINY_STUDY


@pytest.fixture(scope="module")
def reproduced(tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study") / "out")
    return out, studies.reproduce("tiny-study", 2, out, verbose=0)


def folder_contents(folder):
    """Every file under `folder`, path and bytes."""
    contents = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                contents[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return contents


@pytest.fixture(scope="module")
def shortened(reproduced, tmp_path_factory):
    """A shortened look (2 of the 3 epochs, seed 0) at the study reproduced
    in full, in a copy of its output root: `(out, the files there before it,
    its results, the warnings it gave)`."""
    out = str(tmp_path_factory.mktemp("shortened") / "out")
    shutil.copytree(reproduced[0], out)
    before = folder_contents(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = studies.reproduce("tiny-study", [0], out, verbose=0, epochs=2)
    return out, before, results, [str(w.message) for w in caught]


def test_reproduce_writes_runs_forks_results_and_figures(reproduced):
    out, results = reproduced
    assert sorted(os.listdir(os.path.join(out, "tiny-study"))) == [
        "curves.png", "forks.png", "results.json", "summary.txt"]
    assert os.path.exists(os.path.join(out, "runs", "tiny-v1-probe2", "seed1", "history.json"))
    assert os.path.exists(os.path.join(out, "forks", "tiny-v1-at1-2-r3", "seed0.json"))
    with open(os.path.join(out, "tiny-study", "results.json")) as f:
        saved = json.load(f)
    gap = saved["table"]["tiny"]["robust_overfitting_gap"]
    assert gap["n"] == 2 and len(gap["values"]) == 2
    assert gap["mean"] == pytest.approx(np.mean(gap["values"]))
    assert gap["stderr"] == pytest.approx(np.std(gap["values"], ddof=1) / np.sqrt(2))
    assert set(saved["forks"]["windows"]) == {"1", "2"}
    assert results.seeds == [0, 1]
    assert [w.epoch for w in results.forks[1]] == [1, 2]


def test_the_fork_table_compares_both_predictions_with_the_spread(reproduced):
    out, results = reproduced
    windows = results.fork_table()["windows"]
    for i, epoch in enumerate((1, 2)):
        row = windows[epoch]
        assert row["ratio_shuffled"]["values"] == pytest.approx(
            [results.forks[seed][i].measured_top / results.forks[seed][i].predicted_top_shuffled
             for seed in results.seeds])
        assert row["draw_variance"]["values"] == pytest.approx(
            [results.forks[seed][i].draw_variance for seed in results.seeds])
    shrink = results.fork_table()["shrink"]["1->2"]["predicted_top_shuffled"]
    assert shrink["values"] == pytest.approx(
        [results.forks[seed][0].predicted_top_shuffled / results.forks[seed][1].predicted_top_shuffled
         for seed in results.seeds])
    with open(os.path.join(out, "tiny-study", "summary.txt")) as f:
        summary = f.read()
    w = results.forks[1][1]
    assert f"{w.predicted_top_shuffled:10.3e} {w.ratio_shuffled:6.2f}" in summary
    assert "(shuffled pass)" in summary


def test_the_study_histories_are_the_runs_histories(reproduced):
    out, results = reproduced
    for seed, history in zip(results.seeds, results.runs("tiny")):
        with open(os.path.join(out, "runs", "tiny-v1-probe2", f"seed{seed}",
                               "history.json")) as f:
            saved = json.load(f)
        np.testing.assert_array_equal(history["val_robust_accuracy"],
                                      saved["val_robust_accuracy"])
    mean, stderr = results.curve("tiny", "val_robust_accuracy")
    stacked = results.stacked("tiny", "val_robust_accuracy")
    np.testing.assert_allclose(mean, stacked.mean(0))
    np.testing.assert_allclose(stderr, stacked.std(0, ddof=1) / np.sqrt(2))


def test_resume_reuses_finished_runs_and_forks(reproduced, monkeypatch):
    out, results = reproduced

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiments, "run", no_training)
    monkeypatch.setattr(forks, "fork", no_training)
    again = studies.reproduce("tiny-study", 2, out, resume=True, verbose=0)
    # (json.dumps: NaN == NaN there, e.g. a probe figure no seed reached)
    assert json.dumps(again.table(), sort_keys=True) == json.dumps(results.table(), sort_keys=True)
    assert [w.to_dict() for w in again.forks[0]] == [w.to_dict() for w in results.forks[0]]


def _rewrite(path, change):
    with open(path) as f:
        saved = json.load(f)
    change(saved)
    with open(path, "w") as f:
        json.dump(saved, f)


def _from_other_code(saved):
    saved["code"] = dict(saved["code"], robustlab_sources="0" * 16)


def _made_on_other_threads(saved):
    saved["cpu_threads"] = saved["cpu_threads"] + 1


def _made_on_other_hardware(saved):
    saved["hardware"] = "gpu: NVIDIA H200"


@pytest.mark.parametrize("make_stale, refusal", [
    (_from_other_code, r"holds a run made by other code .*Received: code="),
    # The hardware and the CPU thread count change a run's last digits, as
    # the code does.
    (_made_on_other_hardware, r"made on other hardware \('gpu: NVIDIA H200'\).*"
                              r"Received: hardware='"),
    (_made_on_other_threads, r"made on \d+ CPU threads.*--threads \d+.*Received: cpu_threads="),
], ids=["other code", "other hardware", "other thread count"])
def test_runs_and_forks_of_other_code_hardware_or_threads_are_not_reused(
        reproduced, tmp_path, monkeypatch, make_stale, refusal):
    # Results must come from one code: a stale run reused by --resume is how
    # instrument values of older code once reached the shipped references.
    import shutil

    out, _ = reproduced
    shutil.copytree(out, tmp_path / "copy")
    out = str(tmp_path / "copy")
    _rewrite(os.path.join(out, "forks", "tiny-v1-at1-2-r3", "seed1.json"), make_stale)
    forked = []
    real_fork = forks.fork
    monkeypatch.setattr(forks, "fork", lambda *a, **k: forked.append(k["seed"]) or real_fork(*a, **k))
    studies.reproduce("tiny-study", 2, out, resume=True, verbose=0)
    assert forked == [1, 1]  # seed 1's two windows, forked again
    _rewrite(os.path.join(out, "runs", "tiny-v1-probe2", "seed0", "config.json"), make_stale)
    with pytest.raises(ValueError, match=refusal):
        studies.reproduce("tiny-study", 2, out, resume=True, verbose=0)


@pytest.mark.parametrize("key, value", [("hardware", provenance.hardware),
                                        ("cpu_threads", provenance.run_cpu_threads)])
def test_results_record_the_hardware_and_the_cpu_threads(reproduced, key, value):
    out, results = reproduced
    assert results.metadata[key] == value()
    with open(os.path.join(out, "runs", "tiny-v1-probe2", "seed0", "config.json")) as f:
        assert json.load(f)[key] == value()
    with open(os.path.join(out, "forks", "tiny-v1-at1-2-r3", "seed0.json")) as f:
        assert json.load(f)[key] == value()


def test_a_changed_experiment_is_not_reused(reproduced, tmp_path, monkeypatch):
    out, _ = reproduced
    # A copy, so that the other tests keep their finished runs.
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    out = str(tmp_path / "copy")
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", TINY.replace(eps=0.05))
    calls = []
    monkeypatch.setattr(experiments, "run", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(
        RuntimeError("retrained")))
    with pytest.raises(RuntimeError, match="retrained"):
        studies.reproduce("tiny-study", 2, out, resume=True, verbose=0)
    assert calls


def test_reference_files_round_trip(reproduced, tmp_path):
    _, results = reproduced
    path = str(tmp_path / "ref.json.gz")
    studies.write_reference_file(results, path)
    with open(path, "rb") as f:
        first = f.read()
    studies.write_reference_file(results, path)
    with open(path, "rb") as f:
        assert f.read() == first  # no time stamp: the same results, the same bytes
    loaded = studies.read_reference_file(path)
    assert loaded.seeds == results.seeds
    for a, b in zip(loaded.runs("tiny"), results.runs("tiny")):
        np.testing.assert_allclose(a["val_robust_loss"], b["val_robust_loss"], rtol=1e-5)
    assert loaded.forks[0][1].predicted_top == pytest.approx(results.forks[0][1].predicted_top,
                                                              rel=1e-5)
    np.testing.assert_allclose(loaded.forks[1][0].path, results.forks[1][0].path, atol=1e-7)


def test_a_reference_of_another_configuration_is_refused(reproduced, tmp_path, monkeypatch):
    _, results = reproduced
    path = str(tmp_path / "ref.json.gz")
    studies.write_reference_file(results, path)
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", TINY.replace(version=2))
    with pytest.raises(ValueError, match="another configuration of experiment 'tiny'"):
        studies.read_reference_file(path)


def _source_checkout(root):
    """`root` laid out as robustlab's source checkout; its reference folder."""
    (root / "robustlab" / "reference").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "robustlab"\n')
    return root / "robustlab" / "reference"


class _Trained(Exception):
    pass


def _training_refused(*args, **kwargs):
    raise _Trained


def _write_reference_into(folder, tmp_path, monkeypatch):
    """Reproduce the tiny study with write_reference=True and the package's
    reference folder at `folder`; training raises `_Trained`."""
    monkeypatch.setattr(studies, "REFERENCE_DIR", str(folder))
    monkeypatch.setattr(experiments, "run", _training_refused)
    studies.reproduce("tiny-study", 8, str(tmp_path / "out"), write_reference=True, verbose=0)


def test_writing_references_into_an_installed_package_is_refused_before_any_training(
        tiny, tmp_path, monkeypatch):
    # From a wheel installed into a virtual environment the file went into
    # site-packages without a word: every later `studies.reference` read it
    # instead of the shipped one, and it outlived `pip uninstall`.
    folder = tmp_path / "site-packages" / "robustlab" / "reference"
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"an installed robustlab, not a source checkout.*"
                                         r"`pip install -e \.`.*Received: write_reference=True"):
        _write_reference_into(folder, tmp_path, monkeypatch)
    assert os.listdir(folder) == []


def test_a_source_checkout_may_write_references(tiny, tmp_path, monkeypatch):
    with pytest.raises(_Trained):  # past every check, at the first run
        _write_reference_into(_source_checkout(tmp_path / "repo"), tmp_path, monkeypatch)


def test_another_projects_checkout_is_not_robustlabs(tiny, tmp_path, monkeypatch):
    folder = _source_checkout(tmp_path / "repo")
    (tmp_path / "repo" / "pyproject.toml").write_text('[project]\nname = "robustlab-extras"\n')
    with pytest.raises(ValueError, match="not a source checkout"):
        _write_reference_into(folder, tmp_path, monkeypatch)


def test_an_unwritable_reference_folder_is_refused_before_any_training(
        tiny, tmp_path, monkeypatch):
    # A checkout this user cannot write (owned by another user). Tests may
    # run as root, whom permission bits do not stop, so the answer of the
    # permission check is what is replaced.
    folder = _source_checkout(tmp_path / "repo")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if str(path).startswith(str(folder)) and mode & os.W_OK
        else real_access(path, mode, **kw)))
    with pytest.raises(ValueError, match=r"cannot write .*Received: write_reference=True"):
        _write_reference_into(folder, tmp_path, monkeypatch)


def test_a_reference_folder_that_is_a_file_is_refused(tiny, tmp_path, monkeypatch):
    folder = _source_checkout(tmp_path / "repo")
    folder.rmdir()
    folder.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write .*Received: write_reference=True"):
        _write_reference_into(folder, tmp_path, monkeypatch)


def test_a_failed_reference_write_leaves_the_previous_file_whole(
        reproduced, tmp_path, monkeypatch):
    _, results = reproduced
    path = str(tmp_path / "ref.json.gz")
    studies.write_reference_file(results, path)
    with open(path, "rb") as f:
        before = f.read()

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed
    monkeypatch.setattr(studies.gzip.GzipFile, "write", killed)
    with pytest.raises(Killed):
        studies.write_reference_file(results, path)
    monkeypatch.undo()
    with open(path, "rb") as f:
        assert f.read() == before
    assert studies.read_reference_file(path).seeds == results.seeds
    assert not os.path.exists(path + ".partial")


def test_reference_results_are_not_written_with_fewer_than_8_seeds(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "REFERENCE_DIR", str(tmp_path / "reference"))
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=re.escape(
            "write them with `seeds` of 8 or more, or drop `write_reference`. "
            "Received: seeds=[0, 1, 2, 3, 4, 5, 6], write_reference=True")):
        studies.reproduce("tiny-study", 7, str(tmp_path / "out"), write_reference=True,
                          verbose=0)
    assert not (tmp_path / "reference").exists()


def test_shortened_runs_cannot_become_reference(tiny, tmp_path):
    with pytest.raises(ValueError, match="Received: epochs=2"):
        studies.reproduce("tiny-study", 1, str(tmp_path), epochs=2, write_reference=True)


@pytest.mark.parametrize("seeds, match", [
    (0, "Argument `seeds` must be an integer >= 1"),
    ([1, 1], "must not repeat a value"),
    ([], "at least one seed"),
    ([-1], "Argument `seeds` must be an integer >= 0"),
    ([2**31], re.escape("Argument `seeds` must be an integer in [0, 2147483647]. "
                        "Received: seeds=2147483648")),
    (10**12, re.escape("Argument `seeds` must be a number of seeds in [1, 10000] (the "
                       "seeds 0..N-1) or a list of at most 10000 seeds. "
                       "Received: seeds=1000000000000")),
])
def test_bad_seeds_are_rejected_before_anything_is_made(tiny, tmp_path, seeds, match):
    with pytest.raises(ValueError, match=match):
        studies.reproduce("tiny-study", seeds, str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["resume", "write_reference"])
def test_the_flags_of_reproduce_must_be_true_or_false(tiny, tmp_path, monkeypatch, flag):
    # bool("no") is True: write_reference="no" would overwrite the reference.
    monkeypatch.setattr(studies, "REFERENCE_DIR", str(tmp_path / "reference"))
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TypeError, match=re.escape(
            f"Argument `{flag}` must be True or False. Received: {flag}='no'")):
        studies.reproduce("tiny-study", 1, str(tmp_path / "out"), verbose=0, **{flag: "no"})
    assert not os.path.exists(tmp_path / "reference")


@pytest.mark.parametrize("epochs", [3, 4])
def test_epochs_not_fewer_than_the_studys_are_refused_before_anything_is_made(
        tiny, tmp_path, monkeypatch, epochs):
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=re.escape(
            "Argument `epochs` shortens the runs of study 'tiny-study', which train 3 "
            "epochs: it must be an integer in [1, 2] (drop it for the full runs). "
            f"Received: epochs={epochs}")):
        studies.reproduce("tiny-study", 1, str(tmp_path / "out"), epochs=epochs, verbose=0)
    assert os.listdir(tmp_path) == []


def test_a_shortened_study_leaves_the_full_runs_and_results_as_they_were(
        shortened, monkeypatch):
    out, before, _, _ = shortened
    after = folder_contents(out)
    assert {path: after.get(path) for path in before} == before
    with open(os.path.join(out, "runs", "tiny-v1-probe2-e2", "seed0", "history.json")) as f:
        assert len(json.load(f)["loss"]) == 2
    assert os.path.exists(os.path.join(out, "tiny-study-e2", "results.json"))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiments, "run", no_training)
    monkeypatch.setattr(forks, "fork", no_training)
    studies.reproduce("tiny-study", 2, out, resume=True, verbose=0)


def test_a_shortened_study_records_the_configuration_that_ran(shortened):
    out, _, results, _ = shortened
    ran = json.loads(json.dumps(TINY.replace(epochs=2).to_dict()))
    with open(os.path.join(out, "tiny-study-e2", "results.json")) as f:
        assert json.load(f)["arms"]["tiny"]["experiment"] == ran
    # (and so would a reference file of them)
    assert json.loads(json.dumps(results.to_json()["arms"][0]["experiment"])) == ran


def test_a_shortened_study_keeps_the_forks_before_its_last_epoch(shortened, reproduced):
    _, _, results, warned = shortened
    assert [w.epoch for w in results.forks[0]] == [1]
    assert ("tiny-study with epochs=2 leaves out its replica forks at epochs [2], beyond "
            "the shortened runs, and keeps those at [1]." in warned)
    # A fork's base run does not depend on how long the runs are: the window
    # is the full study's.
    def as_text(window):
        return json.dumps(window.to_dict(), sort_keys=True,
                          default=lambda x: np.asarray(x).tolist())

    assert as_text(results.forks[0][0]) == as_text(reproduced[1].forks[0][0])


def test_a_verbose_other_than_0_or_1_is_rejected(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"Argument `verbose` must be 0 .*Received: verbose=2"):
        studies.reproduce("tiny-study", 1, str(tmp_path), verbose=2)


def test_an_unknown_study_is_rejected_by_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "nope"])
    assert exit_.value.code == 2
    assert "Unknown study; available:" in capsys.readouterr().err


def test_list_names_every_study(capsys):
    cli.main(["list"])
    out = capsys.readouterr().out
    for name in studies.STUDIES:
        assert name in out


def test_the_shipped_reference_matches_this_robustlab():
    reference = studies.reference("robust-overfitting")
    assert reference.seeds == list(range(8))
    for arm in reference.study.arms:
        runs = reference.runs(arm.experiment)
        assert len(runs) == 8
        assert all(len(h["val_robust_accuracy"]) == arm.config.epochs for h in runs)
        assert np.all(np.isfinite(reference.stacked(arm.experiment, "val_robust_accuracy")))
    # Regenerated with the command of today's spelling, which records the code.
    assert reference.metadata["command"] == studies.command(reference.study, range(8))
    assert set(reference.metadata["code"]) == {"robustlab", "robustlab_sources", "keras",
                                               "backend"}


def _shipped_references():
    files = sorted(f for f in os.listdir(studies.REFERENCE_DIR) if f.endswith(".json.gz"))
    return [studies.reference(f[: -len(".json.gz")]) for f in files]


def test_every_shipped_reference_was_written_by_one_and_the_same_code():
    references = _shipped_references()
    assert {r.study.name for r in references} == {
        "robust-overfitting", "lr-drop-collapse", "awp-tradeoff"}
    codes = {r.study.name: r.metadata.get("code") for r in references}
    assert all(codes.values()), f"a reference records no code identity: {codes}"
    digests = {name: code["robustlab_sources"] for name, code in codes.items()}
    assert len(set(digests.values())) == 1, (
        f"the references were written by different code: {digests}")


def test_a_run_shared_by_two_shipped_references_is_the_same_run_in_both():
    # The same experiment with the same instruments is one run folder, so two
    # studies that share it must ship it number for number (a stale run reused
    # by one of them would show here).
    shared = 0
    references = _shipped_references()
    for i, first in enumerate(references):
        for second in references[i + 1:]:
            for arm in first.study.arms:
                other = [a for a in second.study.arms if a.folder("", 0) == arm.folder("", 0)]
                if not other:
                    continue
                shared += 1
                mine, theirs = first.runs(arm.experiment), second.runs(other[0].experiment)
                assert len(mine) == len(theirs)
                for seed, (a, b) in enumerate(zip(mine, theirs)):
                    assert set(a) == set(b)
                    for key in a:
                        np.testing.assert_array_equal(
                            np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float),
                            err_msg=f"{arm.experiment} seed {seed} {key}: "
                                    f"{first.study.name} and {second.study.name} differ")
    assert shared >= 2  # quick: robust-overfitting with lr-drop-collapse and awp-tradeoff


def test_the_shipped_forks_hold_every_window_of_every_seed():
    reference = studies.reference("lr-drop-collapse")
    assert reference.seeds == list(range(8))
    for seed in reference.seeds:
        windows = reference.forks[seed]
        assert [w.epoch for w in windows] == [39, 40]
        assert [w.learning_rate for w in windows] == pytest.approx([0.2, 0.02])
        for w in windows:
            assert w.path.shape == (64, 16, 2)
            assert w.measured_top == pytest.approx(np.var(w.path[:, -1, 0], ddof=1), rel=1e-4)


def test_shipped_windows_without_the_shuffled_prediction_are_summarised_without_it():
    # The shipped windows were recorded before the noise was split in two.
    reference = studies.reference("lr-drop-collapse")
    assert all(w.predicted_top_shuffled is None
               for windows in reference.forks.values() for w in windows)
    assert "ratio_shuffled" not in reference.fork_table()["windows"][40]
    assert "predicted_top_shuffled" not in reference.fork_table()["shrink"]["39->40"]
    summary = reference.format_table()
    assert "within a factor 2: 13 of 16 windows (recursion)" in summary
    assert "shuffled" not in summary


# -- full scale --------------------------------------------------------------------


def test_every_study_exists_at_both_scales_and_full_scale_is_cifar10():
    quick = set(studies.STUDIES) - {TINY_STUDY.name}  # (added by this module's fixture)
    assert set(studies.FULL_SCALE_STUDIES) == quick
    for name in quick:
        full = studies.get(name, "full")
        assert full.scale == "full" and full.folder_name == f"{name}-full"
        for arm in full.arms:
            config = arm.config
            assert (config.dataset, config.model, config.epochs) == (
                "cifar10", "preact_resnet18", 200)
            assert (config.train_steps, config.eps, config.lr_drop_epochs) == (
                10, 8 / 255, (100, 150))
    gammas = [arm.config.awp_gamma for arm in studies.get("awp-tradeoff", "full").arms]
    assert gammas == [0.0, 0.005, 0.01, 0.02]


def test_an_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match=r"Received: scale='huge'"):
        studies.get("robust-overfitting", "huge")


def test_full_scale_results_cannot_become_reference(tmp_path):
    with pytest.raises(ValueError, match="Received: scale='full', write_reference=True"):
        studies.reproduce("robust-overfitting", 1, str(tmp_path), scale="full",
                          write_reference=True, verbose=0)


def test_a_full_scale_study_without_cifar10_leaves_no_folder(tmp_path, monkeypatch):
    """Stopped before its first epoch (CIFAR-10 not prepared, no network),
    a study writes nothing: an empty results folder looked like a study
    that had run."""
    pytest.importorskip("tensorflow_datasets")
    from robustlab import data

    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "empty-tfds"))
    monkeypatch.setattr(data, "can_reach_download_host", lambda *a, **k: False)
    out = tmp_path / "out"
    with pytest.raises(data.DatasetNotAvailableError, match="'cifar10' is not prepared"):
        studies.reproduce("robust-overfitting", 1, str(out), scale="full", verbose=0)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_study_with_two_arms_of_one_experiment_is_refused_when_made():
    # Before: accepted, and refused by StudyResults after every run had
    # trained (the runs are kept per experiment).
    with pytest.raises(ValueError, match=r"`arms` must hold one arm per experiment.*"
                                         r"Received: arms of experiment 'tiny' more than once$"):
        studies.Study("twice", 1, (studies.Arm("with probes", "tiny", probe_every=1),
                                   studies.Arm("without", "tiny")), "two arms of one")


def test_forks_beyond_the_runs_are_refused_before_any_training(tiny, tmp_path):
    # Before: the base run trained past the experiment's 3 epochs, to fork a
    # state no run of the study reaches, without a word.
    beyond = studies.Study("beyond", 1, (studies.Arm("tiny", "tiny"),), "forks past the end",
                           forks=studies.Forks("tiny", epochs=(1, 3), replicas=2))
    with pytest.raises(ValueError, match=r"forks must start within the runs of experiment "
                                         r"'tiny', epochs 0-2. Received: Forks.epochs=\(1, 3\)"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(studies.STUDIES, "beyond", beyond)
            studies.reproduce("beyond", 1, str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == []


def test_the_command_line_names_the_scale():
    assert studies.command(studies.get("robust-overfitting"), range(8)) == (
        "robustlab reproduce robust-overfitting --quick --seeds 8")
    assert studies.command(studies.get("robust-overfitting", "full"), [1, 2]) == (
        "robustlab reproduce robust-overfitting --seeds 1 2")


def test_the_full_scale_study_runs_on_cifar10_from_tfds(tmp_path, monkeypatch):
    """A few steps of the full-scale path on CPU: CIFAR-10 read through
    tensorflow-datasets (a tiny copy prepared here, 130 training and 30 test
    images), PreActResNet-18 with PGD-10 at batch 128. The network is made
    8x narrower (width 8) and the training-set evaluation 32 images, so that
    this takes seconds; every other setting is the study's."""
    pytest.importorskip("tensorflow_datasets")
    from robustlab import data
    from tests.test_data import write_prepared_tfds_dataset

    root = str(tmp_path / "tfds")
    write_prepared_tfds_dataset("cifar10", root, train_per_class=13)
    monkeypatch.setenv(data.DATA_DIR_ENV, root)
    monkeypatch.setattr(data, "can_reach_download_host",
                        lambda *a, **k: pytest.fail("load() probed the network"))
    narrow = experiments.get("cifar10_rice").replace(
        model_kwargs=(("width", 8),), eval_train_examples=32)
    monkeypatch.setitem(experiments.EXPERIMENTS, "cifar10_rice", narrow)
    out = str(tmp_path / "out")
    assert cli.main(["reproduce", "robust-overfitting", "--seeds", "1", "--epochs", "1",
                     "--out", out, "--quiet"]) == 0
    assert sorted(os.listdir(os.path.join(out, "robust-overfitting-full-e1"))) == [
        "curves.png", "results.json", "summary.txt"]
    run_dir = os.path.join(out, "runs", "cifar10_rice-v2-probe10-e1", "seed0")
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)["experiment"]
    assert (config["dataset"], config["model"], config["batch_size"], config["train_steps"]) == (
        "cifar10", "preact_resnet18", 128, 10)
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    assert len(history["val_robust_accuracy"]) == 1
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_robust_loss"][0])
    with open(os.path.join(out, "robust-overfitting-full-e1", "results.json")) as f:
        results = json.load(f)
    assert results["metadata"]["scale"] == "full"
    assert results["metadata"]["command"] == (
        "robustlab reproduce robust-overfitting --seeds 1 --epochs 1")


# -- figures and assembled references ---------------------------------------------


def test_a_study_sharing_its_runs_is_assembled_from_their_reference():
    assembled = studies.reference("checkpoint-selection")
    source = studies.reference("robust-overfitting")
    assert assembled.seeds == source.seeds
    np.testing.assert_array_equal(assembled.stacked("quick", "hessian_top_eig"),
                                  source.stacked("quick", "hessian_top_eig"))
    assert assembled.metadata["command"] == (
        "robustlab reproduce checkpoint-selection --quick --seeds 8")


def test_reference_curves_are_the_mean_and_stderr_of_the_shipped_runs_of_a_setting():
    curves, seeds = studies.reference_curves(experiments.get("quick").replace(seed=5))
    runs = studies.reference("robust-overfitting").runs("quick")
    accuracy = np.array([run["val_robust_accuracy"] for run in runs])
    mean, stderr = curves["val_robust_accuracy"]
    assert seeds == len(runs) == 8
    np.testing.assert_allclose(mean, accuracy.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stderr, accuracy.std(axis=0, ddof=1) / np.sqrt(8), rtol=1e-12)
    # Of the arms with this setting, the instrumented one: its curvature too.
    assert "hessian_top_eig" in curves


def test_reference_curves_give_only_the_keys_asked_for():
    curves, _ = studies.reference_curves(experiments.get("quick"), keys=["val_robust_loss", "x"])
    assert list(curves) == ["val_robust_loss"]


def test_reference_curves_of_an_experiment_by_name_are_those_of_the_experiment():
    by_name, seeds = studies.reference_curves("quick", keys=["val_robust_loss"])
    given, same_seeds = studies.reference_curves(experiments.get("quick"),
                                                 keys=["val_robust_loss"])
    assert seeds == same_seeds and np.array_equal(by_name["val_robust_loss"],
                                                  given["val_robust_loss"])
    with pytest.raises(ValueError, match=r"Unknown experiment.*Received: name='nope'"):
        studies.reference_curves("nope")
    with pytest.raises(TypeError, match=r"`experiment` must be .*Received: experiment=3"):
        studies.reference_curves(3)


def test_a_setting_without_shipped_runs_has_no_reference_curves():
    quick = experiments.get("quick")
    assert studies.reference_curves(quick.replace(epochs=quick.epochs + 1)) is None
    assert studies.reference_curves(quick.replace(label_noise=0.3)) is None
    assert studies.reference_curves(TINY) is None


def test_a_shortened_run_gets_the_first_epochs_of_its_settings_references():
    quick = experiments.get("quick")
    full, seeds = studies.reference_curves(quick, keys=["val_robust_loss"])
    short, same_seeds = studies.reference_curves(quick.replace(epochs=10),
                                                 keys=["val_robust_loss"])
    assert same_seeds == seeds
    for part, whole in zip(short["val_robust_loss"], full["val_robust_loss"]):
        np.testing.assert_array_equal(part, whole[:10])


def test_train_draws_its_run_against_the_shipped_runs_of_its_setting(monkeypatch, tmp_path):
    given = []
    monkeypatch.setattr(experiments, "run",
                        lambda *a, **k: given.append((a[0], k["reference"])) or ({}, {}))
    cli.main(["train", "--seeds", "3", "--out", str(tmp_path), "--quiet"])
    cli.main(["train", "--epochs", "5", "--out", str(tmp_path), "--quiet"])
    cli.main(["train", "--label-noise", "0.3", "--out", str(tmp_path), "--quiet"])
    (quick, reference), (shortened, first_epochs), (other, none) = given
    assert quick.seed == 3 and reference[1] == 8
    np.testing.assert_array_equal(reference[0]["val_robust_accuracy"][0],
                                  studies.reference_curves(quick)[0]["val_robust_accuracy"][0])
    assert shortened.epochs == 5 and len(first_epochs[0]["val_robust_accuracy"][0]) == 5
    assert other.label_noise == 0.3 and none is None


def test_the_figures_command_draws_a_reference_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(experiments, "build", lambda *a: pytest.fail("trained"))
    out = str(tmp_path / "figures")
    assert cli.main(["figures", "awp-tradeoff", "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["curves.png", "tradeoff.png"]
    assert capsys.readouterr().out.split() == [
        os.path.join(out, "curves.png"), os.path.join(out, "tradeoff.png")]


def test_checkpoint_selection_of_a_run_without_probes_is_nan_not_an_error(tiny):
    history = {"val_robust_accuracy": np.array([0.2, 0.5, 0.4]),
               "pac_bayes_bound": np.full(3, np.nan),
               "pac_bayes_bound_mcallester": np.full(3, np.nan),
               "hessian_top_eig": np.full(3, np.nan)}
    results = studies.StudyResults(tiny, [0], {"tiny": [history]})
    table = studies.checkpoint_selection(results, "tiny")
    assert table["final epoch"]["epochs"] == [2]
    assert table["lowest PAC-Bayes bound (kl-inverse)"]["epochs"] == [None]
    assert np.isnan(table["lowest PAC-Bayes bound (kl-inverse)"]["mean"])


def test_the_hindsight_epoch_is_one_epoch_for_all_seeds_at_the_highest_mean(tiny):
    # Per seed the best epochs are 1 and 2; averaged over the seeds, epoch 1
    # (0.55) beats epoch 2 (0.5): both seeds are read at epoch 1, and the
    # shortfall from each seed's own best is 0 and 0.5 (mean 0.25, stderr
    # 0.35 / sqrt(2) = 0.25).
    nan = np.full(3, np.nan)
    histories = [
        {"val_robust_accuracy": np.array([0.1, 0.8, 0.2]), "pac_bayes_bound": nan,
         "pac_bayes_bound_mcallester": nan, "hessian_top_eig": nan},
        {"val_robust_accuracy": np.array([0.1, 0.3, 0.8]), "pac_bayes_bound": nan,
         "pac_bayes_bound_mcallester": nan, "hessian_top_eig": nan},
    ]
    results = studies.StudyResults(tiny, [0, 1], {"tiny": histories})
    table = studies.checkpoint_selection(results, "tiny")
    best = table["best robust test accuracy (validation, an oracle here)"]
    hindsight = table["best single epoch in hindsight (an oracle: one epoch for all seeds)"]
    assert best["epochs"] == [1, 2]
    assert hindsight["epochs"] == [1, 1]
    assert hindsight["robust_test_accuracy"] == [0.8, 0.3]
    assert hindsight["below_best"]["mean"] == pytest.approx(0.25)
    assert hindsight["below_best"]["stderr"] == pytest.approx(0.25)


def test_a_study_prints_a_line_as_each_run_and_fork_window_ends(tiny, tmp_path, capsys):
    # Standard error is no terminal here: no bar, and the lines still print.
    studies.reproduce("tiny-study", [0], str(tmp_path), verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("tiny seed 0: ended after epoch 3 of 3 (") for line in lines)
    assert "forks seed 0: window at epoch 1 done" in lines
    assert "forks seed 0: window at epoch 2 done" in lines
    studies.reproduce("tiny-study", [0], str(tmp_path), resume=True, verbose=1)
    assert "tiny seed 0: finished earlier, reused" in capsys.readouterr().out.splitlines()


def test_the_table_has_every_figure_that_any_seed_has(tiny):
    # Only seed 1's run probed 4 or more epochs after the drop (epoch 2).
    def history(probed):
        eig = np.full(8, np.nan)
        if probed:
            eig[6] = 5.0
        return {"val_robust_accuracy": np.linspace(0.2, 0.5, 8),
                "val_robust_loss": np.linspace(1.0, 0.5, 8), "hessian_top_eig": eig}

    results = studies.StudyResults(tiny, [0, 1], {"tiny": [history(False), history(True)]})
    row = results.table()["tiny"]["top_eig_after_drop"]
    assert row["n"] == 1 and row["mean"] == 5.0
    np.testing.assert_array_equal(row["values"], [np.nan, 5.0])


def test_summary_statistics_leave_out_a_seed_without_the_figure():
    # A seed whose run did not probe (NaN) counts in none of mean, sd,
    # standard error and n: not NaN for the sd alone.
    stats = studies._stats([1.0, math.nan, 3.0])
    assert stats["n"] == 2 and stats["mean"] == 2.0
    assert stats["sd"] == pytest.approx(math.sqrt(2.0))
    assert stats["stderr"] == pytest.approx(1.0)


def test_a_shortened_study_says_what_it_leaves_out(monkeypatch, tmp_path):
    monkeypatch.setattr(experiments, "run", lambda config, *a, **k: (
        {"val_robust_accuracy": [0.5] * config.epochs}, {}))
    monkeypatch.setattr(studies, "_write_outputs", lambda *a: None)
    monkeypatch.setattr(studies.StudyResults, "format_table", lambda self: "")
    with pytest.warns(UserWarning, match=r"AWP's warm-up \(10 epochs\) in quick_awp"):
        studies.reproduce("awp-tradeoff", 1, str(tmp_path), epochs=2, verbose=0)
    with pytest.warns(UserWarning, match=r"leaves out its replica forks: they start at epochs"):
        studies.reproduce("lr-drop-collapse", 1, str(tmp_path), epochs=2, verbose=0)


def test_the_fork_table_shrink_of_a_window_that_predicts_no_spread_is_infinite(tiny):
    # A full-batch window has no minibatch noise: its predicted spread is 0.
    from tests.test_forks import window

    before, after = window(1e-3, 2e-3), window(1e-4, 0.0)
    results = studies.StudyResults(tiny, [0], {"tiny": [{"loss": np.zeros(3)}]},
                                   forks={0: [dataclasses.replace(before, epoch=1),
                                              dataclasses.replace(after, epoch=2)]})
    shrink = results.fork_table()["shrink"]["1->2"]
    assert shrink["predicted_top"]["values"] == [np.inf]
    assert shrink["measured_top"]["values"] == pytest.approx([10.0])


def seeds_refused(received):
    """`reproduce`'s error for a bad `seeds`, ending with `received`."""
    return (f"Argument `seeds` must be a number of seeds in [1, {studies.MAX_SEEDS}] (the "
            f"seeds 0..N-1) or a list of at most {studies.MAX_SEEDS} seeds. "
            f"Received: {received}")


@pytest.mark.parametrize("seeds, received", [
    (studies.MAX_SEEDS + 1, f"seeds={studies.MAX_SEEDS + 1}"),
    (2**31, "seeds=2147483648"),
    (list(range(studies.MAX_SEEDS + 1)), f"seeds with {studies.MAX_SEEDS + 1} values"),
])
def test_more_seeds_than_the_limit_are_refused_before_any_is_listed_or_trained(
        tiny, tmp_path, monkeypatch, seeds, received):
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=re.escape(seeds_refused(received))):
        studies.reproduce("tiny-study", seeds, str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == []


def test_the_seed_limit_is_far_beyond_any_real_use():
    assert studies.MAX_SEEDS == 10_000


def test_reproduce_refuses_an_empty_output_root(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=re.escape(
            "Argument `out` must be a folder, or a path where one can be made; an empty "
            "path names none. Received: out=''")):
        studies.reproduce("tiny-study", 1, "", verbose=0)
    assert os.listdir(tmp_path) == []


def test_write_figures_refuses_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(
            "Argument `out` must be a folder, or a path where one can be made; an empty "
            "path names none. Received: out=''")):
        studies.write_figures(studies.reference("awp-tradeoff"), "")
    assert os.listdir(tmp_path) == []


def test_a_shortened_study_warns_once_about_awps_warm_up_naming_every_arm(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setattr(experiments, "run", lambda config, *a, **k: (
        {"val_robust_accuracy": [0.5] * config.epochs}, {}))
    monkeypatch.setattr(studies, "_write_outputs", lambda *a: None)
    monkeypatch.setattr(studies.StudyResults, "format_table", lambda self: "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        studies.reproduce("awp-tradeoff", 2, str(tmp_path), epochs=2, verbose=0)
    awp = [str(w.message) for w in caught if "warm-up" in str(w.message)]
    assert awp == [
        "awp-tradeoff with epochs=2 ends before AWP's warm-up (10 epochs) in quick_awp, "
        "quick_awp_0.002, quick_awp_0.01, quick_awp_0.02: those runs train exactly as "
        "without AWP."]


def test_a_finished_run_with_other_instruments_is_refused_not_reused(tiny, tmp_path,
                                                                    monkeypatch):
    # A run without the instruments in the folder of the instrumented arm
    # used to be taken for that arm's run, and the table lost its columns.
    study = dataclasses.replace(TINY_STUDY, forks=None)
    monkeypatch.setitem(studies.STUDIES, "tiny-study", study)
    out = str(tmp_path)
    experiments.run(TINY, study.arms[0].folder(out, 0), verbose=0, probe_every=None)
    with pytest.raises(ValueError, match=r"another `probe_every` \(None\).*"
                                         r"Received: probe_every=2"):
        studies.reproduce("tiny-study", [0], out, resume=True, verbose=0)


def fork_windows(epochs, measured, predicted):
    """A seed's recorded windows at `epochs` with these variances."""
    from tests.test_forks import window

    return [dataclasses.replace(window(m, p), epoch=e)
            for e, m, p in zip(epochs, measured, predicted)]


def summarizable(epochs=3):
    return {"val_robust_accuracy": np.linspace(0.2, 0.5, epochs),
            "val_robust_loss": np.linspace(1.0, 0.5, epochs)}


def test_an_infinite_shrink_of_one_seed_makes_the_mean_infinite_not_the_others_mean(tiny):
    # Seed 0's second window predicts no spread: its shrink is infinite.
    results = studies.StudyResults(
        tiny, [0, 1], {"tiny": [summarizable(), summarizable()]},
        forks={0: fork_windows((1, 2), (1e-3, 1e-4), (2e-3, 0.0)),
               1: fork_windows((1, 2), (1e-3, 1e-4), (2e-3, 2e-4))})
    table = results.fork_table()
    predicted = table["shrink"]["1->2"]["predicted_top"]
    assert predicted["values"] == [np.inf, 10.0]
    assert (predicted["mean"], predicted["n"]) == (np.inf, 2)
    assert math.isnan(predicted["stderr"]) and math.isnan(predicted["sd"])
    ratio = table["windows"][2]["ratio"]
    assert (ratio["mean"], ratio["n"]) == (np.inf, 2)
    assert ("  shrink 1->2: along u 10.0x +/- 0.0 (predicted infx), overall 1.0x +/- 0.0"
            in results.format_table().splitlines())


@pytest.mark.parametrize("epochs, label", [
    (5, "final robust test accuracy (last 3) (pts)"),
    (2, "final robust test accuracy (last 2) (pts)"),
    (1, "final robust test accuracy (last epoch) (pts)"),
])
def test_the_final_accuracy_label_says_how_many_epochs_it_averages(tiny, epochs, label):
    # A run shorter than 3 epochs averages all of them (summarize's
    # accuracy[-3:]); the label said "last 3" whatever the length.
    results = studies.StudyResults(tiny, [0], {"tiny": [summarizable(epochs)]})
    rows = [line.strip() for line in results.format_table().splitlines()]
    final = [row for row in rows if row.startswith("final robust test accuracy")]
    assert len(final) == 1 and final[0].startswith(label)


@pytest.mark.parametrize("scale, name, arm, epochs, steps, header", [
    ("quick", "tiny-study", "tiny", (1, 2), None, "replica forks (3 replicas, one epoch each)"),
    ("full", "lr-drop-collapse", "cifar10_rice", (99, 100), 50,
     "replica forks (16 replicas, 50 steps each)"),
], ids=["one epoch", "50 steps"])
def test_the_fork_summary_states_the_windows_length(tiny, scale, name, arm, epochs, steps,
                                                    header):
    windows = [dataclasses.replace(w, steps=steps or w.steps)
               for w in fork_windows(epochs, (1e-3, 1e-4), (2e-3, 2e-4))]
    results = studies.StudyResults(studies.get(name, scale), [0], {arm: [summarizable()]},
                                   forks={0: windows})
    text = results.format_table()
    assert header in text
    assert ("one epoch" in text) == (steps is None)


@pytest.mark.parametrize("seeds", [True, 2.0, None, "3"])
def test_seeds_neither_a_count_nor_a_list_are_refused_naming_the_argument(tiny, tmp_path,
                                                                         seeds):
    with pytest.raises(TypeError, match=re.escape(seeds_refused(f"seeds={seeds!r}"))):
        studies.reproduce("tiny-study", seeds, str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == []


def test_a_study_name_that_is_not_a_string_is_refused_naming_the_argument(tmp_path):
    with pytest.raises(TypeError, match=r"Argument `name` must be the name of a study "
                                        r"\(a string\), one of .*robust-overfitting.*"
                                        r"Received: name=\['robust-overfitting'\]"):
        studies.reproduce(["robust-overfitting"], 1, str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == []


def test_results_with_fewer_histories_than_seeds_are_refused(tiny):
    # The table's n and the curves would cover 2 runs under a header of 3 seeds.
    with pytest.raises(ValueError, match=re.escape(
            "Argument `histories` must hold one history per seed for every arm: 3 seeds "
            "[0, 1, 2], 2 histories of arm 'tiny'. Received: histories with {'tiny': 2} "
            "histories per arm")):
        studies.StudyResults(tiny, [0, 1, 2], {"tiny": [summarizable(), summarizable()]})


def test_results_with_fork_windows_of_a_seed_not_in_the_study_are_refused(tiny):
    with pytest.raises(ValueError, match=re.escape(
            "Argument `forks` must hold fork windows of the seeds [0] only. "
            "Received: forks of seeds [0, 5]")):
        studies.StudyResults(tiny, [0], {"tiny": [summarizable()]},
                             forks={0: fork_windows((1,), (1e-3,), (2e-3,)),
                                    5: fork_windows((1,), (1e-3,), (2e-3,))})


def _refuse(token):
    raise ValueError(f"not standard JSON: {token}")


def test_results_json_is_standard_json_with_null_for_a_figure_that_is_nan(tiny, tmp_path):
    # One seed: every sd and standard error is NaN.
    results = studies.StudyResults(tiny, [0], {"tiny": [summarizable()]})
    studies._write_outputs(results, str(tmp_path))
    with open(tmp_path / "results.json") as f:
        saved = json.loads(f.read(), parse_constant=_refuse)
    gap = saved["table"]["tiny"]["robust_overfitting_gap"]
    assert (gap["n"], gap["sd"], gap["stderr"]) == (1, None, None)
    assert gap["mean"] == pytest.approx(0.5 - 0.35)  # best - mean of the last 3


def test_a_reference_without_shuffled_fork_figures_reads_back_the_same(tmp_path):
    # read_reference_file turned the null of a figure older windows lack into
    # NaN: a written and read-back lr-drop-collapse gained shuffled columns of NaN.
    shipped = studies.reference("lr-drop-collapse")
    assert not shipped._forks_shuffled()
    path = str(tmp_path / "ref.json.gz")
    studies.write_reference_file(shipped, path)
    loaded = studies.read_reference_file(path)
    assert loaded.forks[0][0].predicted_top_shuffled is None
    assert not loaded._forks_shuffled()
    assert (sorted(loaded.fork_table()["windows"][39])
            == sorted(shipped.fork_table()["windows"][39]))
    assert loaded.format_table() == shipped.format_table()


@pytest.mark.parametrize("histories, seeds, message", [
    ({}, [0], r"must hold the arms of study 'tiny-study', \['tiny'\]. "
              r"Received: histories of \[\]$"),
    ({"tiny": [summarizable()], "other": [summarizable()]}, [0],
     r"Received: histories of \['other', 'tiny'\]$"),
    ({"tiny": []}, [], r"`seeds` must hold at least one seed. Received: seeds=\[\]$"),
])
def test_study_results_name_missing_or_unknown_arms_and_no_seeds(tiny, histories, seeds,
                                                                  message):
    # A missing arm failed later in table() with a KeyError; an unknown one
    # was ignored.
    with pytest.raises(ValueError, match=message):
        studies.StudyResults(tiny, seeds, histories)


@pytest.mark.parametrize("forks_of", [
    lambda w: {0: w},                       # seed 1 has none (a KeyError)
    lambda w: {0: w, 1: w[:1]},             # seed 1 has fewer (left out silently)
    lambda w: {0: w, 1: w[::-1]},           # seed 1 at other epochs
], ids=["missing", "fewer", "reordered"])
def test_the_fork_table_needs_the_same_fork_epochs_for_every_seed(tiny, forks_of):
    windows = fork_windows((1, 2), (1e-3, 1e-4), (2e-3, 2e-4))
    results = studies.StudyResults(tiny, [0, 1], {"tiny": [summarizable(), summarizable()]},
                                   forks=forks_of(windows))
    with pytest.raises(ValueError, match=r"fork windows at the same epochs for every seed. "
                       r"Received: results with fork windows at epochs \{0: \[1, 2\], 1: "):
        results.fork_table()


def test_checkpoint_selection_names_an_arm_without_the_instruments():
    # An AWP arm (probe_every=0) failed with KeyError: 'pac_bayes_bound'.
    with pytest.raises(ValueError, match=r"did not log \['hessian_top_eig', 'pac_bayes_bound', "
                       r"'pac_bayes_bound_mcallester'\].*Received: arm='quick_awp_0.002'$"):
        studies.checkpoint_selection(studies.reference("awp-tradeoff"), "quick_awp_0.002")
    with pytest.raises(TypeError, match=r"must be a StudyResults.*"
                       r"Received: results='checkpoint-selection'$"):
        studies.checkpoint_selection("checkpoint-selection")


@pytest.mark.parametrize("call, error, message", [
    # An AttributeError ("'str' object has no attribute 'name'") before.
    (lambda: studies.command("robust-overfitting", [0]), TypeError,
     r"`study` must be a Study .*Received: study='robust-overfitting'"),
    (lambda: studies.command(studies.get("awp-tradeoff"), 3), TypeError,
     r"`seeds` must be a sequence of seeds.*Received: seeds=3"),
    # These made command lines that the command refuses ("--seeds 0",
    # "--seeds -1", "--epochs -1").
    (lambda: studies.command(studies.get("awp-tradeoff"), []), ValueError,
     r"at least one seed"),
    (lambda: studies.command(studies.get("awp-tradeoff"), [-1]), ValueError,
     r"Received: seeds=-1"),
    (lambda: studies.command(studies.get("awp-tradeoff"), [0], epochs=-1), ValueError,
     r"Received: epochs=-1"),
])
def test_command_refuses_what_makes_no_command_line(call, error, message):
    with pytest.raises(error, match=message):
        call()


ARM = studies.Arm("an arm", "quick")


@pytest.mark.parametrize("make, error, message", [
    (lambda: studies.Arm("", "quick"), ValueError, r"`label` must be a non-empty str. Received: label=''"),
    (lambda: studies.Arm("a", None), TypeError, r"`experiment` must be a non-empty str. "
                                                 r"Received: experiment=None"),
    (lambda: studies.Arm("a", "quick", probe_every=0), ValueError,
     r"`probe_every` must be an integer >= 1. Received: probe_every=0"),
    (lambda: studies.Forks("quick", epochs=39), TypeError,
     r"`epochs` must be a non-empty tuple of the epochs .* Received: epochs=39"),
    (lambda: studies.Forks("quick", epochs=()), TypeError, r"Received: epochs=\(\)"),
    (lambda: studies.Forks("quick", epochs=(39, 39)), ValueError, r"`epochs` must not repeat"),
    (lambda: studies.Forks("quick", epochs=(-1,)), ValueError, r"`epochs` must be an integer >= 0"),
    (lambda: studies.Forks("quick", epochs=(39,), replicas=1), ValueError,
     r"`replicas` must be an integer >= 2. Received: replicas=1"),
    (lambda: studies.Forks("quick", epochs=(39,), steps=0), ValueError, r"`steps` must be an integer"),
    (lambda: studies.Study("s", 0, (ARM,), "d"), ValueError, r"`version` must be an integer >= 1"),
    (lambda: studies.Study("s", 1, (), "d"), TypeError, r"`arms` must be a non-empty tuple of `Arm`s"),
    (lambda: studies.Study("s", 1, ("quick",), "d"), TypeError, r"Received: arms=\('quick',\)"),
    (lambda: studies.Study("s", 1, (ARM,), None), TypeError, r"`description` must be a str"),
    (lambda: studies.Study("s", 1, (ARM,), "d", forks=(39, 40)), TypeError,
     r"`forks` must be a `Forks` or None"),
    (lambda: studies.Study("s", 1, (ARM,), "d", selects_checkpoints="yes"), TypeError,
     r"`selects_checkpoints` must be True or False"),
    (lambda: studies.Study("s", 1, (ARM,), "d", scale="huge"), ValueError,
     r"`scale` must be one of \('quick', 'full'\). Received: scale='huge'"),
], ids=["empty label", "no experiment", "probe_every 0", "one epoch, not a tuple", "no epochs",
        "a repeated epoch", "a negative epoch", "one replica", "zero steps", "version 0", "no arms",
        "an arm by name", "no description", "forks as epochs", "selects as text", "another scale"])
def test_an_arm_forks_or_study_that_cannot_run_is_refused_when_made(make, error, message):
    # Before: each was accepted and failed (or ran something else) only in
    # reproduce.
    with pytest.raises(error, match=message):
        make()


def test_lists_given_to_a_study_are_kept_as_tuples_so_it_stays_hashable():
    forks = studies.Forks("quick", epochs=[39, 40])
    study = studies.Study("s", 1, [ARM], "d", forks=forks)
    assert forks.epochs == (39, 40) and study.arms == (ARM,)
    assert hash(study) == hash(studies.Study("s", 1, (ARM,), "d", forks=forks))


def test_stacking_runs_of_different_lengths_names_the_arm_key_and_lengths():
    # np.stack said only "all input arrays must have the same shape".
    results = studies.reference("lr-drop-collapse")
    histories = {arm: [{k: v[:50] for k, v in h.items()} if i == 1 else h
                       for i, h in enumerate(runs)]
                 for arm, runs in results.histories.items()}
    short = studies.StudyResults(results.study, results.seeds, histories)
    with pytest.raises(ValueError, match=r"arm 'quick' must have logged 'loss' at as many "
                                         r"epochs.*Received: epochs per seed \{0: 100, 1: 50, 2: 100"):
        short.stacked("quick", "loss")
