"""A run's figure, drawn alone or against the runs of its setting."""

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from robustlab import plots

HISTORY = {
    "val_robust_accuracy": [0.5, 0.7, 0.6],
    "train_robust_accuracy": [0.4, 0.5, 0.6],
    "hessian_top_eig": [np.nan, 3.0, np.nan],
    "pac_bayes_kl": [1000.0, 2000.0, 3000.0],
    "learning_rate": [0.2, 0.2, 0.02],
}
REFERENCE = {
    "val_robust_accuracy": ([0.55, 0.8, 0.7], [0.01, 0.02, 0.03]),
    "hessian_top_eig": ([np.nan, 4.0, np.nan], [np.nan, 0.5, np.nan]),
    "pac_bayes_kl": ([1500.0, 2500.0, 3500.0], [100.0, 100.0, 100.0]),
    "learning_rate": ([0.2, 0.2, 0.02], [0.0, 0.0, 0.0]),
    "val_loss": ([1.0, 1.0, 1.0], [0.1, 0.1, 0.1]),
}


def _panel(figure, title):
    """The panel titled `title` (and perhaps a note in brackets on a line
    below it)."""
    return next(ax for ax in figure.axes
                if ax.get_title() == title or ax.get_title().startswith(title + "\n("))


def _dashed(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_without_a_reference_only_the_run_is_drawn():
    figure = plots.learning_curves(HISTORY)
    assert not any(_dashed(ax) for ax in figure.axes)
    assert not any(ax.collections for ax in figure.axes)
    plots.close(figure)


def test_a_referenced_key_is_drawn_dashed_in_its_colour_with_a_band_of_one_stderr():
    figure = plots.learning_curves(HISTORY, reference=REFERENCE)
    accuracy = _panel(figure, "Accuracy")
    run = next(line for line in accuracy.get_lines() if line.get_label() == "robust test")
    (dashed,) = _dashed(accuracy)  # robust train has no reference curve
    np.testing.assert_array_equal(dashed.get_ydata(), [0.55, 0.8, 0.7])
    assert mcolors.same_color(dashed.get_color(), run.get_color())
    (fill,) = accuracy.collections
    lower_and_upper = fill.get_paths()[0].vertices[:, 1]
    assert np.isclose(lower_and_upper.min(), 0.54) and np.isclose(lower_and_upper.max(), 0.82)
    plots.close(figure)


def test_a_one_epoch_run_and_its_reference_show_as_points():
    # A single point draws no line: `robustlab train --epochs 1` wrote a
    # curves.png of empty axes.
    history = {"val_robust_accuracy": [0.5]}
    figure = plots.learning_curves(
        history, reference={"val_robust_accuracy": ([0.55], [0.01])})
    lines = _panel(figure, "Accuracy").get_lines()
    assert len(lines) == 2
    assert all(line.get_marker() == "o" and len(line.get_xdata()) == 1 for line in lines)
    plots.close(figure)


def test_a_panel_whose_keys_are_all_nan_says_it_has_no_value_yet():
    # A run shorter than the probe's period logs the curvature as NaN at
    # every epoch: the panel showed empty axes with a legend.
    figure = plots.learning_curves({"val_robust_accuracy": [0.5, 0.6],
                                    "hessian_top_eig": [np.nan, np.nan]})
    curvature = _panel(figure, "Curvature of the robust loss")
    assert not curvature.get_lines() and curvature.get_legend() is None
    assert [t.get_text() for t in curvature.texts] == ["no value logged yet"]
    assert [t.get_text() for t in _panel(figure, "PAC-Bayes").texts] == ["not logged"]
    plots.close(figure)


def test_a_probed_reference_joins_its_points_and_a_scaled_key_is_scaled_alike():
    figure = plots.learning_curves(HISTORY, reference=REFERENCE)
    (curvature,) = _dashed(_panel(figure, "Curvature of the robust loss"))
    np.testing.assert_array_equal(curvature.get_xdata(), [1])
    # The KL is drawn in thousands, the run's and the reference's alike.
    (kl,) = _dashed(_panel(figure, "PAC-Bayes"))
    np.testing.assert_array_equal(kl.get_ydata(), [1.5, 2.5, 3.5])
    plots.close(figure)


def test_settings_and_keys_the_run_did_not_log_get_no_reference_curve():
    figure = plots.learning_curves(HISTORY, reference=REFERENCE)
    assert not _dashed(_panel(figure, "Optimisation"))  # the learning rate is a setting
    assert not _dashed(_panel(figure, "Robust loss"))  # val_loss: not a panel's, not logged
    plots.close(figure)


def test_the_reference_label_appears_once_a_panel():
    figure = plots.learning_curves(HISTORY, reference=REFERENCE, reference_label="8 seeds")
    for ax in figure.axes:
        labels = ax.get_legend_handles_labels()[1]
        assert labels.count("8 seeds") == (1 if _dashed(ax) else 0)
    plots.close(figure)


def _markers(line):
    """The (x, y) points a line draws markers at."""
    every = line.get_markevery()
    x, y = line.get_xdata(), line.get_ydata()
    if every is None:
        return list(zip(x, y))
    return [(x[i], y[i]) for i in every]


def test_along_the_top_eigenvector_a_window_after_its_probe_is_filled_and_later_ones_hollow():
    # Probes at the end of epochs 1 and 4: the windows of epochs 2 and 5 have
    # a fresh direction, those of 3 and 4 reuse the probe of epoch 1.
    nan = np.nan
    history = {"hessian_top_eig": [nan, 3.0, nan, nan, 4.0, nan],
               "posterior_var_top": [nan, nan, 1.0, 2.0, 3.0, 4.0],
               "posterior_var_top_predicted": [nan, nan, 1.5, 2.5, 3.5, 4.5]}
    figure = plots.learning_curves(history)
    width = _panel(figure, "Width of the weight cloud")
    for label, values in (("along top eigenvector", [1.0, 2.0, 3.0, 4.0]),
                          ("predicted (heavy-ball)", [1.5, 2.5, 3.5, 4.5])):
        (line,) = [line for line in width.get_lines() if line.get_label() == label]
        np.testing.assert_array_equal(line.get_ydata(), values)  # one line through all
        assert _markers(line) == [(2, values[0]), (5, values[3])]
        (older,) = [o for o in width.get_lines() if o.get_linestyle() == "None"
                    and mcolors.same_color(o.get_color(), line.get_color())]
        assert older.get_markerfacecolor() == "none"
        assert list(zip(older.get_xdata(), older.get_ydata())) == [(3, values[1]), (4, values[2])]
    assert width.get_title() == f"Width of the weight cloud\n({plots._OLDER_DIRECTION_NOTE})"
    assert all(ax.get_title().count("(") == 0 for ax in figure.axes if ax is not width)
    plots.close(figure)


def test_without_probes_or_with_every_window_fresh_the_width_has_plain_markers():
    nan = np.nan
    for history in ({"posterior_var_top": [1.0, 2.0, 3.0]},
                    {"hessian_top_eig": [1.0, 2.0, nan], "posterior_var_top": [nan, 2.0, 3.0]}):
        figure = plots.learning_curves(history)
        width = _panel(figure, "Width of the weight cloud")
        assert [line.get_markevery() for line in width.get_lines()
                if line.get_label() == "along top eigenvector"] == [None]
        assert width.get_title() == "Width of the weight cloud"
        plots.close(figure)


def test_a_studys_width_along_the_top_eigenvector_is_marked_by_direction_age_too():
    from robustlab import studies

    results = studies.reference("lr-drop-collapse")  # probes at epochs 4, 9, ..., 99
    figure = plots.study_curves(results)
    width = _panel(figure, "Width along the top eigenvector")
    measured, predicted = [line for line in width.get_lines()
                           if line.get_linestyle() in ("-", "--")]
    hollow = [line for line in width.get_lines() if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 2
    assert width.get_title().endswith(f"({plots._OLDER_DIRECTION_NOTE})")
    for line, older in zip((measured, predicted), hollow):
        fresh_epochs = [x for x, _ in _markers(line)]
        assert fresh_epochs == list(range(5, 100, 5))
        assert sorted(older.get_xdata()) == sorted(set(range(5, 100)) - set(fresh_epochs))
    plots.close(figure)


def test_a_history_that_is_not_a_dict_of_lists_is_refused_by_type():
    with pytest.raises(TypeError, match=r"`history` must be the per-epoch logs.*"
                                        r"Received: history=list"):
        plots.learning_curves([0.5, 0.6])


@pytest.mark.parametrize("history, error, message", [
    ({"val_robust_accuracy": ["a", "b"]}, TypeError,
     r"`history\['val_robust_accuracy'\]` must be a real number or an array of real numbers"),
    ({"val_robust_accuracy": 0.5}, ValueError,
     r"`history\['val_robust_accuracy'\]` must hold one number per epoch .*"
     r"Received: history\['val_robust_accuracy'\] of shape \(\)"),
], ids=["text", "a number, not a list"])
def test_a_logged_curve_that_is_not_numbers_per_epoch_is_named(history, error, message):
    # Before: NumPy's "could not convert string to float", or "len() of
    # unsized object", naming neither the argument nor the key.
    with pytest.raises(error, match=message):
        plots.learning_curves(history)


@pytest.mark.parametrize("drops, error, message", [
    (3, TypeError, r"`drop_epochs` must be an iterable of epochs .* Received: drop_epochs=3"),
    (np.array(3), TypeError, r"`drop_epochs` must be an iterable .* Received: drop_epochs=array\(3\)"),
    ("ab", TypeError, r"`drop_epochs` must be an iterable .* Received: drop_epochs='ab'"),
    ([[2, 3]], ValueError, r"`drop_epochs` must be a flat sequence .* drop_epochs=\[\[2, 3\]\]"),
], ids=["a number", "a 0-d array", "text", "nested"])
def test_drops_that_are_not_a_sequence_of_epochs_are_named(drops, error, message):
    with pytest.raises(error, match=message):
        plots.learning_curves(HISTORY, drop_epochs=drops)
    figure, ax = plt.subplots()
    with pytest.raises(error, match=message):
        plots.mark_drops(ax, drops)
    plots.close(figure)


def test_a_reference_that_is_not_a_mean_and_stderr_of_one_length_is_named():
    with pytest.raises(ValueError, match=r"a mean and a standard error of one length. Received: "
                                         r"reference\['val_robust_accuracy'\] of lengths 3 and 2"):
        plots.learning_curves(HISTORY, reference={"val_robust_accuracy": ([.5, .6, .7], [.1, .1])})
    with pytest.raises(ValueError, match=r"a \(mean, stderr\) pair of curves. Received: "
                                         r"reference\['val_robust_accuracy'\]=\(\[0.5\],\)"):
        plots.learning_curves(HISTORY, reference={"val_robust_accuracy": ([0.5],)})


@pytest.mark.parametrize("kwargs, message", [
    (dict(stderr=[0.1, 0.1]), r"`stderr` must have one entry per epoch of `mean` \(3\). "
                              r"Received: stderr of length 2"),
    (dict(epochs=[0, 1]), r"`epochs` must have one entry per epoch of `mean` \(3\). "
                          r"Received: epochs of length 2"),
    (dict(fresh=[True]), r"`fresh` must be None or one boolean per epoch of `mean` \(3\)"),
    (dict(fresh=[1, 0, 1]), r"`fresh` must be None or one boolean per epoch"),
    (dict(mean=[[0.5, 0.6, 0.7]]), r"`mean` must hold one number per epoch \(a 1-D sequence\). "
                                   r"Received: mean of shape \(1, 3\)"),
], ids=["stderr", "epochs", "fresh too short", "fresh not booleans", "mean 2-D"])
def test_band_names_curves_that_are_not_aligned_with_the_mean(kwargs, message):
    # Before: NumPy's "boolean index did not match indexed array" (an
    # IndexError), naming no argument.
    arguments = dict(mean=[0.5, 0.6, 0.7], stderr=[0.1, 0.1, 0.1]) | kwargs
    figure, ax = plt.subplots()
    with pytest.raises(ValueError, match=message):
        plots.band(ax, **arguments)
    plots.close(figure)


def test_only_the_drops_the_run_reached_are_marked():
    # A 3-epoch run of a setting that drops at epochs 2 and 40: the line at
    # 40 would stretch every panel to an empty 40 epochs.
    figure = plots.learning_curves(HISTORY, drop_epochs=(2, 40))
    drops = [line.get_xdata()[0] for line in _panel(figure, "Accuracy").get_lines()
             if line.get_linestyle() == ":"]
    assert drops == [2]
    plots.close(figure)


def _drops(ax):
    return [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]


def test_the_drops_may_be_a_numpy_array():
    figure = plots.learning_curves(HISTORY, drop_epochs=np.array([2, 40]))
    assert _drops(_panel(figure, "Accuracy")) == [2]
    plots.close(figure)


def test_mark_drops_takes_a_numpy_array():
    figure, ax = plt.subplots()
    plots.mark_drops(ax, np.array([40, 60]))
    assert _drops(ax) == [40, 60]
    plots.close(figure)


@pytest.mark.parametrize("draw", [
    lambda ax: plots.band(ax, [0.5, 0.6], [0.1, 0.1]),
    lambda ax: plots.mark_drops(ax, [40]),
], ids=["band", "mark_drops"])
def test_the_axes_must_be_one_panel(draw):
    # Before: AttributeError ("'numpy.ndarray' object has no attribute
    # 'plot'"), for the array of panels `plt.subplots(1, 2)` returns.
    figure, axes = plt.subplots(1, 2)
    with pytest.raises(TypeError, match=r"`ax` must be one matplotlib Axes .*"
                                        r"Received: ax=an array of Axes of shape \(2,\)$"):
        draw(axes)
    with pytest.raises(TypeError, match=r"Received: ax=None$"):
        draw(None)
    draw(axes[0])
    plots.close(figure)


def _line_epochs(figure, panel, label):
    return [line.get_xdata().tolist() for line in _panel(figure, panel).get_lines()
            if line.get_label() == label]


@pytest.mark.parametrize("validation_freq, validated", [(2, [1, 3]), ([1, 4, 9], [0, 3])],
                         ids=["every 2nd", "listed epochs"])
def test_keys_validated_at_some_epochs_are_drawn_at_those(validation_freq, validated):
    # Keras's own History of a 4-epoch fit: `val_` keys only where it
    # validated. Before, they were drawn at epochs 0, 1, ...
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((4, 2), "float32"), np.array([0, 1, 0, 1])
    logs = model.fit(x, y, epochs=4, verbose=0, validation_data=(x, y),
                     validation_freq=validation_freq).history
    history = {"train_robust_accuracy": logs["accuracy"],
               "val_robust_accuracy": logs["val_accuracy"]}
    figure = plots.learning_curves(history, validation_freq=validation_freq)
    assert _line_epochs(figure, "Accuracy", "robust test") == [validated]
    assert _line_epochs(figure, "Accuracy", "robust train") == [[0, 1, 2, 3]]
    plots.close(figure)


def test_a_key_logged_at_other_epochs_than_validated_is_refused_naming_it():
    history = {"train_robust_accuracy": [0.1] * 10, "val_robust_accuracy": [0.2] * 3}
    with pytest.raises(ValueError, match=r"`history` has 10 epochs but 3 values of "
                                         r"'val_robust_accuracy', and `fit` with "
                                         r"validation_freq=1 validates 10 of them"):
        plots.learning_curves(history)
    with pytest.raises(ValueError, match=r"validation_freq=2 validates 5 of them"):
        plots.learning_curves(history, validation_freq=2)
    plots.close(plots.learning_curves(history, validation_freq=3))  # epochs 2, 5, 8


@pytest.mark.parametrize("validation_freq", [0, "2", True, [0, 2], 1.5])
def test_a_validation_freq_keras_would_not_take_is_refused(validation_freq):
    with pytest.raises(ValueError, match=r"`validation_freq` must be an integer >= 1 or a "
                                         r"list of 1-based epochs"):
        plots.learning_curves(HISTORY, validation_freq=validation_freq)


AWP_WARM_UP = {"learning_rate": [0.1, 0.1, 0.01], "awp_gamma": [0.0, 0.0, 0.005],
               "awp_perturbed_loss": [1.0, 2.0, 3.0]}


def _gamma_line(figure):
    (line,) = [line for ax in figure.axes for line in ax.get_lines()
               if line.get_label().startswith("AWP gamma")]
    return line


def test_awps_gamma_is_drawn_on_a_linear_axis_so_its_warm_up_zeros_show():
    figure = plots.learning_curves(AWP_WARM_UP)
    gamma = _gamma_line(figure)
    assert gamma.axes.get_yscale() == "linear"
    np.testing.assert_array_equal(gamma.get_ydata(), [0.0, 0.0, 0.005])
    optimisation = _panel(figure, "Optimisation")
    assert gamma.axes is not optimisation and gamma.axes.get_shared_x_axes().joined(
        gamma.axes, optimisation)
    assert optimisation.get_yscale() == "log"  # the learning rate's and loss's
    plots.close(figure)


def test_the_optimisation_legend_names_gammas_axis():
    figure = plots.learning_curves(AWP_WARM_UP)
    legend = _panel(figure, "Optimisation").get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [
        "learning rate", "loss at w + v (AWP)", "AWP gamma (right axis, linear)"]
    plots.close(figure)


@pytest.fixture(scope="module")
def forked_study():
    from robustlab import studies

    return studies.reference("lr-drop-collapse")  # windows at epochs 39 and 40


def _with_forks(results, forks):
    from robustlab import studies

    return studies.StudyResults(results.study, results.seeds, results.histories,
                                results.metadata, forks=forks)


def test_fork_widths_refuses_a_seed_without_forks(forked_study):
    forks = {s: w for s, w in forked_study.forks.items() if s != 2}
    with pytest.raises(ValueError, match=r"every seed: seed 2 has none, seed 0 at "
                                         r"epochs \[39, 40\]\. Received: results with fork"):
        plots.fork_widths(_with_forks(forked_study, forks))


def test_fork_widths_refuses_a_seed_with_fewer_windows(forked_study):
    forks = {s: w[:1] if s == 3 else w for s, w in forked_study.forks.items()}
    with pytest.raises(ValueError, match=r"seed 3 has them at epochs \[39\], seed 0 at "
                                         r"epochs \[39, 40\]"):
        plots.fork_widths(_with_forks(forked_study, forks))


def test_fork_widths_refuses_windows_at_other_epochs(forked_study):
    forks = {s: w[::-1] if s == 5 else w for s, w in forked_study.forks.items()}
    with pytest.raises(ValueError, match=r"seed 5 has them at epochs \[40, 39\]"):
        plots.fork_widths(_with_forks(forked_study, forks))


def test_fork_widths_refuses_a_seed_with_no_window(forked_study):
    forks = {s: [] for s in forked_study.forks}
    with pytest.raises(ValueError, match=r"no fork window for seed 1.*Received: results "
                                         r"with fork windows at epochs \{1: \[\], 0: \[\]"):
        plots.fork_widths(_with_forks(forked_study, forks), seed=1)


# -- what the study figures are given ------------------------------------------


@pytest.mark.parametrize("draw", [plots.study_curves, plots.fork_widths,
                                  plots.gap_against_train_accuracy])
def test_the_study_figures_name_a_runs_history_given_for_results(draw):
    # A History's dict raised AttributeError ('dict' object has no attribute 'study').
    with pytest.raises(TypeError, match=r"`results` must be a robustlab.studies.StudyResults"
                                        r".*Received: results of type dict"):
        draw(HISTORY)


def test_learning_curves_names_a_reference_that_is_not_a_mapping(forked_study):
    # A StudyResults failed with "not iterable"; a list of pairs was ignored.
    for reference in (forked_study, list(REFERENCE.items())):
        with pytest.raises(TypeError, match=r"`reference` must be None or a mapping "
                                            r"`\{key: \(mean, stderr\)\}`.*Received: reference "
                                            rf"of type {type(reference).__name__}"):
            plots.learning_curves(HISTORY, reference=reference)


def _with_histories(results, change):
    from robustlab import studies

    histories = {arm: [change(h) for h in runs] for arm, runs in results.histories.items()}
    return studies.StudyResults(results.study, results.seeds, histories, results.metadata,
                                forks=results.forks)


def test_study_curves_of_empty_histories_say_not_logged(forked_study):
    # A run with an empty history raised "generator raised StopIteration".
    figure = plots.study_curves(_with_histories(forked_study, lambda h: {}))
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert shown and all(ax.texts[0].get_text() == "not logged" for ax in shown)
    plots.close(figure)


@pytest.mark.parametrize("panels", [(), [("title", "y", ["loss"], False)], [("title",)]])
def test_study_curves_name_panels_that_are_not_panels(forked_study, panels):
    with pytest.raises(ValueError, match=r"`panels` must hold at least one `\(title, y label"):
        plots.study_curves(forked_study, panels=panels)


def test_the_trade_off_names_runs_without_robust_train_accuracy(forked_study):
    # It raised KeyError: 'final_robust_train_accuracy'.
    results = _with_histories(forked_study, lambda h: {k: v for k, v in h.items()
                                                       if k != "train_robust_accuracy"})
    with pytest.raises(ValueError, match=r"logged `train_robust_accuracy`.*Received: results "
                                         r"whose arm 'quick' lacks it for seeds \[0, 1"):
        plots.gap_against_train_accuracy(results)
