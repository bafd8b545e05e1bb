"""How `experiments.run` drives `fit`: one compiled call an epoch when nothing
looks at single batches, the same numbers as one step a call (the numbers
themselves are specified in test_resume.py and test_studies.py), and the
histories `summarize` refuses."""

import math
import re

import keras
import numpy as np
import pytest

from robustlab import experiments
from tests.test_studies import TINY

STEPS_PER_EPOCH = -(-TINY.train_size // TINY.batch_size)


class EpochCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def record_steps_per_execution(monkeypatch):
    """The `steps_per_execution` of every model `experiments.run` builds."""
    built = []
    build = experiments.build

    def recording_build(experiment, **kwargs):
        dataset, model = build(experiment, **kwargs)
        built.append(model.steps_per_execution)
        return dataset, model

    monkeypatch.setattr(experiments, "build", recording_build)
    return built


def test_an_epoch_trains_in_one_call_with_the_numbers_of_one_step_a_call(monkeypatch):
    built = record_steps_per_execution(monkeypatch)
    whole_epochs, _ = experiments.run(TINY, None, verbose=0, callbacks=[EpochCounter()])
    batches = BatchCounter()
    step_by_step, _ = experiments.run(TINY, None, verbose=0, callbacks=[batches])
    assert built == [STEPS_PER_EPOCH, 1]
    assert batches.batches == STEPS_PER_EPOCH * TINY.epochs
    assert whole_epochs == step_by_step


def test_a_lambda_callback_with_a_batch_hook_sees_every_batch(monkeypatch):
    # LambdaCallback keeps its hooks on the instance, not in its class.
    built = record_steps_per_execution(monkeypatch)
    seen = []
    watcher = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(batch))
    experiments.run(TINY, None, verbose=0, callbacks=[watcher])
    assert built == [1]
    assert seen == list(range(STEPS_PER_EPOCH)) * TINY.epochs


def test_a_lambda_callback_without_a_batch_hook_keeps_an_epoch_a_call(monkeypatch):
    built = record_steps_per_execution(monkeypatch)
    epochs = []
    watcher = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    experiments.run(TINY, None, verbose=0, callbacks=[watcher])
    assert built == [STEPS_PER_EPOCH]
    assert epochs == list(range(TINY.epochs))


def test_the_instruments_train_an_epoch_a_call_with_the_numbers_of_one_step_a_call(
        monkeypatch):
    # The posterior tracker receives every iterate from inside the compiled
    # step, so an epoch in one call logs its numbers bit for bit too.
    built = record_steps_per_execution(monkeypatch)
    whole_epochs, _ = experiments.run(TINY.replace(epochs=3), None, verbose=0,
                                      probe_every=1)
    build = experiments.build
    monkeypatch.setattr(experiments, "build",
                        lambda experiment, **kwargs: build(experiment, steps_per_execution=1))
    step_by_step, _ = experiments.run(TINY.replace(epochs=3), None, verbose=0,
                                      probe_every=1)
    assert built == [STEPS_PER_EPOCH, 1]
    assert step_by_step.keys() == whole_epochs.keys()
    assert sum(k.startswith("posterior_var") for k in whole_epochs) >= 4
    assert np.isfinite(whole_epochs["posterior_var_top"][1:]).all()
    for key, values in step_by_step.items():  # NaNs (unmeasured) compare equal
        np.testing.assert_array_equal(whole_epochs[key], values, err_msg=key)


def test_build_takes_an_epoch_or_a_count_of_steps_and_rejects_anything_else():
    import pytest

    assert experiments.build(TINY, steps_per_execution="epoch")[1].steps_per_execution == (
        STEPS_PER_EPOCH)
    assert experiments.build(TINY, steps_per_execution=3)[1].steps_per_execution == 3
    with pytest.raises(ValueError, match=r'>= 1 or "epoch"\. Received: steps_per_execution=0'):
        experiments.build(TINY, steps_per_execution=0)
    with pytest.raises(TypeError, match=r"Received: steps_per_execution='all'"):
        experiments.build(TINY, steps_per_execution="all")
    with pytest.raises(TypeError, match=r"Received: steps_per_execution=True"):
        experiments.build(TINY, steps_per_execution=True)


class ValidationBatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_test_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def test_a_callback_with_a_validation_batch_hook_sees_every_validation_batch(monkeypatch):
    # The end-of-epoch validation runs with the training's steps_per_execution:
    # with k steps a call, the hook would see batches k - 1, 2k - 1, ...
    built = record_steps_per_execution(monkeypatch)
    watcher = ValidationBatchCounter()
    experiments.run(TINY.replace(epochs=1), None, verbose=0, callbacks=[watcher])
    assert built == [1]
    assert len(watcher.batches) >= 2
    assert watcher.batches == list(range(len(watcher.batches)))


def test_callbacks_may_be_any_iterable_of_callbacks():
    counter = EpochCounter()
    experiments.run(TINY.replace(epochs=1), None, verbose=0,
                    callbacks=(c for c in [counter]))
    assert counter.epochs == 1


@pytest.mark.parametrize("callbacks, received", [
    (None, "None"),
    (EpochCounter(), "<tests.test_experiments.EpochCounter object"),
    (["a callback"], "['a callback']"),
    ((c for c in [EpochCounter(), "a callback"]),
     "[<tests.test_experiments.EpochCounter object"),
], ids=["None", "one callback", "not a callback", "a generator holding a non-callback"])
def test_callbacks_other_than_an_iterable_of_callbacks_are_refused_before_training(
        monkeypatch, callbacks, received):
    monkeypatch.setattr(experiments, "build", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TypeError, match=re.escape(
            "Argument `callbacks` must be an iterable of keras.callbacks.Callback "
            f"(a list, possibly empty). Received: callbacks={received}")):
        experiments.run(TINY, None, verbose=0, callbacks=callbacks)


def test_an_experiment_registered_under_another_name_is_refused(monkeypatch):
    # `replace` keeps the name: the variant's runs went into quick's folders
    # (runs/quick-v.../seedN), over quick's own, without a word.
    monkeypatch.setitem(experiments.EXPERIMENTS, "quick_lr01",
                        experiments.get("quick").replace(learning_rate=0.01))
    with pytest.raises(ValueError, match=r"EXPERIMENTS\['quick_lr01'\] must be an Experiment "
                                         r"named 'quick_lr01'.*`.replace\(name='quick_lr01', "
                                         r"...\)`. Received: EXPERIMENTS\['quick_lr01'\] named "
                                         r"'quick'$"):
        experiments.get("quick_lr01")
    monkeypatch.setitem(experiments.EXPERIMENTS, "quick_lr01",
                        experiments.get("quick").replace(name="quick_lr01", learning_rate=0.01))
    assert experiments.get("quick_lr01").learning_rate == 0.01


def test_resume_must_be_true_or_false(tmp_path, monkeypatch):
    # bool("no") is True.
    monkeypatch.setattr(experiments, "build", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(TypeError, match=re.escape(
            "Argument `resume` must be True or False. Received: resume='no'")):
        experiments.run(TINY, str(tmp_path / "run"), verbose=0, resume="no")


def test_an_empty_output_folder_is_refused_and_the_current_folder_left_alone(tmp_path,
                                                                            monkeypatch):
    # An empty path is not the current folder: a run there would first
    # remove the history.json and summary.json of whatever is there.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "history.json").write_text("mine")
    with pytest.raises(ValueError, match=re.escape(
            "Argument `out_dir` must be a folder, or a path where one can be made; an empty "
            "path names none. Received: out_dir=''")):
        experiments.run(TINY, "", verbose=0)
    assert (tmp_path / "history.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


SUMMARIZED = {"val_robust_accuracy": [0.5, 0.8, 0.7, 0.6],
              "val_robust_loss": [1.0, 0.5, 0.6, 0.7]}


@pytest.mark.parametrize("drop_epoch, error", [
    (-1, ValueError), (0, ValueError), (True, TypeError), (1.5, TypeError)])
def test_summarize_refuses_a_drop_epoch_that_is_not_an_integer_of_at_least_1(
        drop_epoch, error):
    # drop_epoch=-1 used to read the last epoch alone: a loss rise of 0.
    with pytest.raises(error, match=re.escape(
            f"Argument `drop_epoch` must be an integer >= 1. Received: drop_epoch={drop_epoch}")):
        experiments.summarize(SUMMARIZED, drop_epoch=drop_epoch)


def test_summarize_averages_the_final_train_accuracy_over_the_epochs_it_was_evaluated():
    # RobustEvaluation(every=2) logs NaN between evaluations: the final robust
    # train accuracy was NaN; it is the mean of the last epochs' evaluations.
    history = dict(SUMMARIZED, train_robust_accuracy=[0.1, float("nan"), 0.3, float("nan")])
    summary = experiments.summarize(history, final_epochs=3)
    assert summary["final_robust_train_accuracy"] == 0.3
    history["train_robust_accuracy"] = [0.1, float("nan"), float("nan"), float("nan")]
    assert math.isnan(experiments.summarize(history, final_epochs=3)[
        "final_robust_train_accuracy"])


@pytest.mark.parametrize("history, kwargs, message", [
    # Accepted before: a gap of 2.2 (220 accuracy points), and a final of -0.2.
    ({"val_robust_accuracy": [5.0, 0.6]}, {},
     r"accuracies in \[0, 1\] \(fractions, not percentages\); `val_robust_accuracy` is not "
     r"at epochs \[0\]"),
    ({"val_robust_accuracy": [-1.0, 0.6]}, {}, r"accuracies in \[0, 1\]"),
    # KeyError, NumPy's "argmax of an empty sequence", a TypeError before.
    ({}, {}, r"per-epoch logs of a run, with `val_robust_accuracy`. "
             r"Received: history=logs with keys \[\]"),
    ({"val_robust_accuracy": []}, {}, r"at least one epoch"),
    (None, {}, r"with `val_robust_accuracy`. Received: history=None"),
    ({"val_robust_accuracy": ["a", "b"]}, {}, r"numbers under `val_robust_accuracy`"),
    # A shorter loss was read as far as it went.
    ({"val_robust_accuracy": [0.5, 0.6, 0.55], "val_robust_loss": [1.0, 0.9]}, {"drop_epoch": 1},
     r"one `val_robust_loss` per epoch \(3 epochs of `val_robust_accuracy`\). "
     r"Received: val_robust_loss of shape \(2,\)"),
], ids=["percent", "negative", "no_key", "no_epoch", "none", "text", "short_loss"])
def test_summarize_refuses_a_history_it_cannot_summarise(history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        experiments.summarize(history, **kwargs)


def test_summarize_refuses_a_robust_test_accuracy_that_is_not_finite():
    # np.argmax would have made the NaN epoch the best one, next to NaN figures.
    history = dict(SUMMARIZED, val_robust_accuracy=[0.5, float("nan"), 0.7, 0.6])
    with pytest.raises(ValueError, match=re.escape(
            "Argument `history` must hold a finite `val_robust_accuracy` at every epoch; "
            "it is not at epochs [1] (0-based). "
            "Received: val_robust_accuracy=[0.5, nan, 0.7, 0.6]")):
        experiments.summarize(history, drop_epoch=1)


@pytest.mark.parametrize("changes, error, message", [
    # Accepted when built; a typo of the dataset failed only in `run`.
    (dict(dataset="digitz"), ValueError,
     r"`dataset` must be one of 'digits', .*Received: dataset='digitz'"),
    (dict(name=None), TypeError, r"`name` must be a non-empty str .*Received: name=None"),
    (dict(name=""), TypeError, r"Received: name=''"),
    (dict(version=0), ValueError, r"`version` must be an integer >= 1. Received: version=0"),
    (dict(version="3"), TypeError, r"Received: version='3'"),
    (dict(model_kwargs="x"), TypeError,
     r"`model_kwargs` must be a tuple of \(name, value\) pairs.*Received: model_kwargs='x'"),
    # `build` failed with "got multiple values for keyword argument 'seed'".
    (dict(model_kwargs=(("seed", 3),)), ValueError,
     r"`model_kwargs` must not set 'seed': the builder gets the experiment's `seed`\. "
     r"Received: model_kwargs=\(\('seed', 3\),\)"),
    (dict(model_kwargs=(("num_classes", 3),)), ValueError, r"must not set 'num_classes'"),
], ids=["dataset", "name_none", "name_empty", "version_0", "version_text", "model_kwargs",
        "model_kwargs_seed", "model_kwargs_num_classes"])
def test_an_experiment_refuses_settings_it_cannot_run_when_built(changes, error, message):
    with pytest.raises(error, match=message):
        experiments.get("quick").replace(**changes)


def test_drop_epochs_given_as_a_list_or_numpy_ints_are_kept_as_a_tuple_of_ints():
    # A list made the experiment unhashable (a TypeError from __hash__) and
    # unequal to the same experiment made with a tuple.
    quick = experiments.get("quick")
    from_list = quick.replace(lr_drop_epochs=[20, 30])
    from_numpy = quick.replace(lr_drop_epochs=np.array([20, 30]))
    assert from_list.lr_drop_epochs == (20, 30)
    assert all(type(e) is int for e in from_numpy.lr_drop_epochs)
    assert from_list == from_numpy == quick.replace(lr_drop_epochs=(20, 30))
    assert hash(from_list) == hash(quick.replace(lr_drop_epochs=(20, 30)))
