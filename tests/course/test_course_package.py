"""robustlab.course: the grading checks, the reference implementations and
the explorers, as the notebooks use them, and how `run_notebook` waits."""

import asyncio
import queue
import sys

import numpy as np
import pytest

import robustlab
from robustlab.course import exercises
from robustlab.course import grading


# -- grading ------------------------------------------------------------------


def test_check_close_names_the_call_the_values_and_the_largest_difference():
    with pytest.raises(AssertionError) as failure:
        grading.check_close([[0.5, 0.9]], [[0.5, 0.6]], "project_linf(...)", atol=1e-6,
                            hint="Clip each pixel.")
    message = str(failure.value)
    assert message.startswith("project_linf(...): expected [[0.5, 0.6]], got [[0.5, 0.9]]")
    assert "largest difference is 0.3 at position (0, 1)" in message
    assert message.endswith("Clip each pixel.")


def test_check_close_prints_enough_digits_to_tell_the_values_apart():
    with pytest.raises(AssertionError) as failure:
        grading.check_close(1.0 - 6e-9, 1.0, "kl_inverse(0.2, 50)", atol=1e-9)
    assert str(failure.value).startswith(
        "kl_inverse(0.2, 50): expected 1, got 0.999999994: the difference is 6e-09, more than the "
        "tolerance 1e-09.")


def test_check_close_reports_shape_none_and_nan():
    with pytest.raises(AssertionError, match=r"expected shape \(3,\), got shape \(2,\)"):
        grading.check_close([1.0, 2.0], [1.0, 2.0, 3.0], "f()")
    with pytest.raises(AssertionError, match="forget to `return`"):
        grading.check_close(None, [1.0], "f()")
    with pytest.raises(AssertionError, match="a NaN or infinity"):
        grading.check_close([np.nan], [1.0], "f()")
    grading.check_close([np.nan, 1.0], [np.nan, 1.0 + 1e-9], "f()", atol=1e-6)


def test_check_close_accepts_relative_tolerance():
    grading.check_close([1000.5], [1000.0], "f()", atol=0.0, rtol=1e-3)
    with pytest.raises(AssertionError, match=r"tolerance 0 \+ 0.0001 x \|expected\|"):
        grading.check_close([1000.5], [1000.0], "f()", atol=0.0, rtol=1e-4)


def test_check_close_wants_one_number_where_one_number_is_expected():
    for answer, shown in (([], r"\(0,\) \(no number at all\)"), (np.array([]), r"\(0,\)"),
                          (np.full(7, 0.5), r"\(7,\): \[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5\]"),
                          (np.full((2, 5), 0.5), r"\(2, 5\) starting \[0.5, ")):
        with pytest.raises(AssertionError,
                           match=rf"^f\(\): expected one number \(0.5\), got an array of shape {shown}"):
            grading.check_close(answer, 0.5, "f()")
    # One number, however it is written: Python, NumPy, 0-d or 1-element arrays, tensors.
    import keras

    for answer in (0.5, np.float32(0.5), np.array(0.5), [0.5], np.array([[0.5]]),
                   keras.ops.convert_to_tensor(0.5), keras.ops.convert_to_tensor([0.5])):
        grading.check_close(answer, 0.5, "f()")
    with pytest.raises(AssertionError, match=r"expected 0.5, got \[0.6\]: the difference is 0.1,"):
        grading.check_close([0.6], 0.5, "f()")


def test_check_close_broadcasts_one_expected_number_only_when_asked():
    grading.check_close(np.zeros((3, 4)), 0.0, "v", atol=0, broadcast=True)
    with pytest.raises(AssertionError, match=r"expected 0 in every element, got \[0, 0.001\]: the "
                                             r"largest difference is 0.001 at position \(1,\)"):
        grading.check_close([0.0, 1e-3], 0.0, "v", atol=0, broadcast=True)
    with pytest.raises(AssertionError, match=r"expected 0 in every element, got an empty array"):
        grading.check_close(np.zeros((0, 3)), 0.0, "v", broadcast=True)


def test_check_close_takes_only_real_numbers():
    pair = [0.5, 0.25]
    for answer, expected, words in (
            ("0.5", 0.5, "expected one number (0.5), got '0.5' (of type str): text, not a number"),
            (["0.5", "0.25"], pair, "expected numbers, got ['0.5', '0.25'] (of type list): text"),
            (True, 1.0, "got True (of type bool): True/False values, not numbers"),
            (np.array([True, False]), [1.0, 0.0], "True/False values, not numbers"),
            (0.5 + 0j, 0.5, "got (0.5+0j) (of type complex): complex numbers, not real ones"),
            (np.array([0.5 + 2j, 0.25]), pair, "complex numbers, not real ones"),
            (np.array(pair, dtype=object), pair, "an array of dtype object, not of numbers"),
            ({"a": 0.5}, 0.5, "not a number or an array of numbers"),
            ([[0.5], [0.25, 1.0]], pair, "not an array of numbers")):
        with pytest.raises(AssertionError) as failure:
            grading.check_close(answer, expected, "f()")
        assert words in str(failure.value), str(failure.value)
    # Integers and floats of any width, and keras.ops tensors of a real dtype, are numbers.
    import keras

    grading.check_close(np.array([1, 2], dtype=np.int8), [1.0, 2.0], "f()", atol=0)
    grading.check_close(keras.ops.convert_to_tensor([0.5, 0.25], dtype="float64"), [0.5, 0.25], "f()")
    grading.check_close(keras.ops.convert_to_tensor([0.5, 0.25], dtype="bfloat16"), [0.5, 0.25], "f()")


def test_check_close_matches_an_infinity_only_with_the_same_infinity():
    grading.check_close(np.inf, np.inf, "f()")
    grading.check_close([1.0, -np.inf, np.nan], [1.0, -np.inf, np.nan], "f()", atol=0, rtol=1e-6)
    for answer, expected in ((np.inf, -np.inf), (1e300, np.inf), (np.nan, np.inf), (np.inf, 1e300)):
        with pytest.raises(AssertionError, match="a NaN or infinity"):
            grading.check_close(answer, expected, "f()", atol=1e-6, rtol=1e-6)


def test_check_close_names_the_position_furthest_beyond_its_tolerance_as_such():
    with pytest.raises(AssertionError) as failure:
        grading.check_close([1000.5, 1.1], [1000.0, 1.0], "f()", atol=0, rtol=1e-3)
    message = str(failure.value)
    assert message == ("f(): expected [1000, 1], got [1000.5, 1.1]: the difference furthest beyond "
                       "its tolerance is 0.1 at position (1,), more than its tolerance 0 + 0.001 x "
                       "|expected| = 0.001."), message
    assert "largest" not in message  # 0.5 at position (0,) is the largest difference


@pytest.mark.parametrize("tolerances, error", [
    ({"atol": -1}, ValueError), ({"atol": float("nan")}, ValueError), ({"rtol": -1e-6}, ValueError),
    ({"rtol": float("inf")}, ValueError), ({"atol": None}, TypeError), ({"rtol": "1e-6"}, TypeError),
    ({"atol": True}, TypeError)])
def test_check_close_refuses_a_tolerance_that_is_not_a_finite_number_at_least_zero(tolerances, error):
    (name, value), = tolerances.items()
    with pytest.raises(error, match=rf"check_close's {name} .* Received: {name}={value!r}"):
        grading.check_close(0.5, 0.5, "f()", **tolerances)
    with pytest.raises(TypeError, match="Received: expected=None"):
        grading.check_close(0.5, None, "f()")


def test_check_turns_an_array_condition_into_the_message_with_a_note():
    with pytest.raises(AssertionError) as failure:
        grading.check(np.array([1, 2]) == 1, "select_epoch must be 1; got [1, 2].")
    assert str(failure.value).startswith("select_epoch must be 1; got [1, 2]. (The check received "
                                         "an array of shape (2,) instead of one True or False")
    with pytest.raises(AssertionError, match=r"^empty\. \(The check received an array of shape \(0,\)"):
        grading.check(np.array([]) == 1, "empty.")
    grading.check(np.array([3]) == 3, "one element: one truth value")
    grading.check(np.bool_(True), "a NumPy bool")
    with pytest.raises(AssertionError, match="^no$"):
        grading.check(np.array(False), "no")


def test_check_fails_a_list_of_several_conditions_whatever_their_items():
    # Python's truth of a non-empty list: every one of these passed.
    for condition in ([a == 9 for a in (1, 2, 3)], [np.False_, np.False_], (False, False)):
        with pytest.raises(AssertionError, match=r"^every answer must match \(The check received "
                                                 r"a (list|tuple) of \d values instead of one True "
                                                 r"or False: write all\(...\) or any\(...\)"):
            grading.check(condition, "every answer must match")
    with pytest.raises(AssertionError, match="^no$"):
        grading.check([np.False_], "no")  # one item: its truth
    grading.check([True], "one item that holds")


def test_check_close_says_a_nan_is_matched_only_by_a_nan():
    # It said "an infinity is matched only by the same infinity".
    with pytest.raises(AssertionError, match=r"more than any tolerance: a NaN is matched only "
                                             r"by a NaN\.$"):
        grading.check_close([1.0, 2.0], [np.nan, 2.0], "f()")


def test_check_shape_takes_the_size_of_a_1d_array():
    grading.check_shape(np.zeros(3), 3, "f()")
    with pytest.raises(AssertionError, match=r"expected an array of shape \(4,\), got shape \(3,\)"):
        grading.check_shape(np.zeros(3), 4, "f()")


def test_call_counter_takes_the_arguments_by_position_or_by_keyword():
    counter = grading.CallCounter(lambda z: 2 * z)
    assert counter(z=np.array([1.0, 2.0])).tolist() == [2.0, 4.0]
    assert counter(np.array([3.0])).tolist() == [6.0]
    assert counter.calls == 2
    assert [a.tolist() for a in counter.arguments] == [[1.0, 2.0], [3.0]]
    point = np.array([1.0])
    counter(point)
    point[0] = 5.0  # a copy was recorded
    assert counter.arguments[-1].tolist() == [1.0]
    several = grading.CallCounter(lambda v, scale=1.0: scale * v)
    assert several(np.array([1.0]), scale=3.0).tolist() == [3.0]
    (args, kwargs), = several.arguments
    assert [a.tolist() for a in args] == [[1.0]] and kwargs["scale"].tolist() == 3.0
    with pytest.raises(TypeError):
        grading.CallCounter(lambda z: z)(q=1.0)  # what the function refuses, the wrapper does too


def test_check_close_names_the_two_values_where_long_arrays_differ_past_the_first_eight():
    expected = np.linspace(0.0, 1.0, 20)
    actual = expected.copy()
    actual[13] += 2e-7   # alike to 6 digits, past the 8 items the message shows
    with pytest.raises(AssertionError) as failure:
        grading.check_close(actual, expected, "f(...)", atol=1e-7)
    message = str(failure.value)
    head = "array of shape (20,) starting [0, 0.0526316, 0.105263, 0.157895, 0.210526, 0.263158, 0.315789, 0.368421, ...]"
    assert message.startswith(f"f(...): expected {head}, got {head}: ")
    assert "at position (13,) (expected 0.684210526, got 0.684210726 there)" in message


def test_describe_prints_a_pair_of_a_number_and_an_array():
    assert grading.describe((1.5, np.array([1.0, 0.0]))) == "(1.5, [1, 0])"
    assert grading.describe(None) == "None"


def test_long_arrays_are_described_by_shape_and_first_items():
    assert grading.describe(np.arange(20.0)).startswith("array of shape (20,) starting [0, 1, 2, 3")
    assert grading.describe(np.float32(0.1)) == "0.1"


def test_student_call_turns_the_stub_into_a_plain_message():
    def stub():
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="`stub` is not written yet"):
        grading.student_call(stub)


def test_student_call_says_when_a_function_forgot_to_return():
    def flip_labels(y):
        y = list(y)

    with pytest.raises(AssertionError, match="`flip_labels` returned None: did the function forget"):
        grading.student_call(flip_labels, [1, 2])
    assert grading.student_call(flip_labels, [1, 2], allow_none=True) is None
    assert grading.student_call(lambda y, k=1: y * k, 3, k=2) == 6


def test_reference_for_swaps_and_restores_names():
    namespace = {"project_linf": "mine"}
    with grading.reference_for(namespace, "project_linf", "pgd_linf_step"):
        assert namespace["project_linf"] is exercises.project_linf
        assert namespace["pgd_linf_step"] is exercises.pgd_linf_step
    assert namespace == {"project_linf": "mine"}
    with pytest.raises(ValueError, match="no reference implementation"):
        with grading.reference_for(namespace, "nope"):
            pass


# -- reference implementations agree with the library ---------------------------


def test_reference_pgd_equals_the_library_attack_without_random_start(digits):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    x, y = digits.x_test[:64], digits.y_test[:64]

    def gradient(z):
        return robustlab.attacks.loss_gradient(net, z, y)

    ours = exercises.pgd_linf(gradient, x, 0.1, 0.025, 10)
    library = robustlab.attacks.pgd(net, x, y, eps=0.1, step_size=0.025, steps=10,
                                    random_start=False)
    assert np.mean(np.isclose(ours, library, atol=1e-6)) > 0.999
    fgsm = exercises.fgsm_linf(gradient, x, 0.1)
    np.testing.assert_allclose(fgsm, robustlab.attacks.fgsm(net, x, y, eps=0.1), atol=1e-6)


def test_reference_best_and_final_refuses_fewer_than_one_final_epoch():
    assert exercises.best_and_final([0.5, 0.8, 0.6], final_epochs=1)[2] == 0.6
    for final_epochs in (0, -1):
        with pytest.raises(ValueError, match=rf"Received: final_epochs={final_epochs}$"):
            exercises.best_and_final([0.5, 0.8, 0.6], final_epochs=final_epochs)


def test_reference_power_iteration_does_not_stop_on_a_first_estimate_of_zero():
    h = np.array([[0.0, 2.0], [2.0, 3.0]])  # v0 . H v0 = 0 for v0 = e1; eigenvalues 4 and -1
    value, vector = exercises.power_iteration(lambda v: h @ v, np.array([1.0, 0.0]), tol=1e-10)
    assert abs(value - 4.0) < 1e-8
    np.testing.assert_allclose(np.abs(vector), np.array([1.0, 2.0]) / np.sqrt(5.0), atol=1e-6)


def test_reference_flip_labels_matches_the_library_noise_count():
    y = np.repeat(np.arange(10), 100)
    noisy = exercises.flip_labels(y, 0.2, 10, seed=0)
    library = robustlab.data.with_symmetric_label_noise(y, 0.2, 10, np.random.default_rng(0))
    assert (noisy != y).sum() == (library != y).sum() == 200


# -- explorers --------------------------------------------------------------------


def test_attack_explorer_caches_every_setting(digits, monkeypatch):
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    explorer = AttackExplorer({"net": net}, digits.x_test[:32], digits.y_test[:32],
                              eps_values=[0.0, 0.1], steps_values=[1, 3], shown=4)
    calls = []
    original = robustlab.attacks.loss_gradient
    monkeypatch.setattr(robustlab.attacks, "loss_gradient",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x_adv, predicted, accuracy = explorer.attack("net", 0.1, 3)
    assert len(calls) == 3
    assert np.abs(x_adv - digits.x_test[:32]).max() <= 0.1 + 1e-6
    figure = explorer.figure("net", 0.1, 3)
    assert len(figure.axes) == 12
    explorer.figure("net", 0.1, 3)
    assert len(calls) == 3  # nothing recomputed
    assert 0.0 <= accuracy <= 1.0 and predicted.shape == (32,)


def test_attack_explorer_widget_has_the_three_controls(digits):
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    explorer = AttackExplorer({"a": net, "b": net}, digits.x_test[:16], digits.y_test[:16],
                              eps_values=[0.0, 0.1], steps_values=[1, 3], shown=2)
    box = explorer.widget()
    controls = box.children[0].children
    assert [c.description for c in controls] == ["model", "eps", "steps"]
    assert len(explorer.redraw_seconds) == 1  # drawn once on creation
    controls[1].value = 0.0
    assert len(explorer.redraw_seconds) == 2


def test_reference_explorer_draws_every_arm_with_its_band():
    from robustlab import studies
    from robustlab.course.widgets import ReferenceExplorer

    study = studies.get("robust-overfitting")
    rng = np.random.default_rng(0)
    histories = {arm.experiment: [{"val_robust_accuracy": rng.random(5)} for _ in range(3)]
                 for arm in study.arms}
    results = studies.StudyResults(study, [0, 1, 2], histories)
    explorer = ReferenceExplorer(results)
    assert explorer.keys == ["val_robust_accuracy"]  # the defaults that were logged
    figure = explorer.figure("val_robust_accuracy", seeds_shown=True)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels[:len(study.arms)] == [f"{arm.label}, mean +/- s.e." for arm in study.arms]


def test_reference_explorer_refuses_a_key_asked_for_that_was_not_logged():
    from robustlab import studies
    from robustlab.course.widgets import ReferenceExplorer

    study = studies.get("robust-overfitting")
    histories = {arm.experiment: [{"val_robust_accuracy": np.arange(5.0)}]
                 for arm in study.arms}
    results = studies.StudyResults(study, [0], histories)
    # A misspelt key was dropped from the dropdown without a word.
    with pytest.raises(ValueError, match=r"\['val_robust_acuracy'\] is not .*"
                                         r"Received: keys=\('val_robust_accuracy', "
                                         r"'val_robust_acuracy'\)"):
        ReferenceExplorer(results, keys=("val_robust_accuracy", "val_robust_acuracy"))
    assert ReferenceExplorer(results, keys=["val_robust_accuracy"]).keys == [
        "val_robust_accuracy"]


def test_cloud_explorer_predicts_with_the_reference_recursion_and_simulates_reproducibly():
    from robustlab.course.widgets import CloudExplorer

    explorer = CloudExplorer(steps_before=50, steps_after=50, particles=2000, seed=3)
    path = explorer.simulate(0.2, 0.9, 2.0, 4.0)
    assert path.shape == (101, 2000, 2)
    np.testing.assert_array_equal(path, explorer.simulate(0.2, 0.9, 2.0, 4.0))
    # The simulated sharp direction's spread follows the recursion (2000 copies: ~5%).
    predicted = robustlab.posterior.covariance_recursion(explorer.schedule(0.2), 0.9, 2.0, 4.0, 64)
    np.testing.assert_allclose(path[1:, :, 0].var(axis=1), predicted, rtol=0.15)
    figure = explorer.figure(lr=0.2, momentum=0.9, curvature=2.0, noise_variance=4.0)
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 3
    unstable = explorer.figure(lr=1.0, momentum=0.9, curvature=5.0, noise_variance=4.0)
    assert len([ax for ax in unstable.axes if ax.get_visible()]) == 1
    box = explorer.widget()
    assert [c.description for c in box.children[0].children] == [
        "lr", "momentum", "curvature", "noise s^2"]


def test_fork_explorer_steps_through_the_shipped_forks():
    from robustlab.course.widgets import ForkExplorer

    results = robustlab.studies.reference("lr-drop-collapse")
    explorer = ForkExplorer(results)
    figure = explorer.figure(seed=0, step=5)
    assert len(figure.axes) == len(results.forks[0]) == 2
    box = explorer.widget()
    assert [c.description for c in box.children[0].children] == ["seed", "step"]
    with pytest.raises(ValueError, match="no replica forks"):
        ForkExplorer(robustlab.studies.reference("robust-overfitting"))


def test_bound_explorer_shows_the_library_bound_and_its_tightening_with_n():
    from robustlab.course.widgets import BoundExplorer

    explorer = BoundExplorer(empirical_risk=0.27, kl=2.4e6, n=1000)
    assert explorer.bound(0.27, 2.4e6, 1000) == robustlab.bounds.seeger_bound(0.27, 2.4e6, 1000, 0.05)
    assert explorer.bound(0.27, 2.4e6, 1000) > 0.999            # vacuous at n = 1000
    # With far more data c is small and kl(q || p) ~ (p - q)^2 / (2 q (1 - q)):
    c = (2.4e6 + np.log(2 * np.sqrt(1e9) / 0.05)) / 1e9
    assert explorer.bound(0.27, 2.4e6, 10**9) == pytest.approx(0.27 + np.sqrt(2 * 0.27 * 0.73 * c), abs=1e-3)
    figure = explorer.figure(empirical_risk=0.27, kl=2.4e6, n=1000)
    assert len(figure.axes) == 2
    assert f"bound {explorer.bound(0.27, 2.4e6, 1000):.4f}" in figure._suptitle.get_text()
    box = explorer.widget()
    assert [c.description for c in box.children[0].children] == ["error", "KL", "n"]


def test_bound_explorer_draws_what_the_library_gives_point_by_point():
    # Its two panels come from one vectorised kl inversion each (a scalar
    # bisection per point took a redraw past a second): the same floats.
    from robustlab.bounds import mcallester_bound
    from robustlab.bounds import seeger_bound
    from robustlab.course.widgets import BoundExplorer

    explorer = BoundExplorer(delta=0.05)
    figure = explorer.figure(empirical_risk=0.27, kl=2.4e6, n=1000)
    ax_n, ax_kl = figure.axes
    ns, kls = ax_n.lines[0].get_xdata(), ax_kl.lines[0].get_xdata()
    np.testing.assert_array_equal(
        ax_n.lines[0].get_ydata(), [seeger_bound(0.27, 2.4e6, int(m), 0.05) for m in ns])
    np.testing.assert_array_equal(
        ax_n.lines[1].get_ydata(),
        np.minimum([mcallester_bound(0.27, 2.4e6, int(m), 0.05) for m in ns], 1.5))
    np.testing.assert_array_equal(
        ax_kl.lines[0].get_ydata(), [seeger_bound(0.27, k, 1000, 0.05) for k in kls])
    np.testing.assert_array_equal(
        ax_kl.lines[1].get_ydata(),
        np.minimum([mcallester_bound(0.27, k, 1000, 0.05) for k in kls], 1.5))


@pytest.mark.parametrize("start", [dict(kl=1e9, n=10**10), dict(kl=3e12, n=50)],
                         ids=["the controls' corner", "a start beyond them"])
def test_bound_explorer_panels_span_the_controls_ranges(start):
    # The KL panel stopped at 1e8 nats while its control goes to 1e10: with
    # the KL at 1e9 and n at 1e10 (a bound of 0.52) the marker stood past
    # the end of the curve.
    from robustlab.course.widgets import BoundExplorer

    explorer = BoundExplorer(empirical_risk=0.2, **start)
    kl_control, n_control = explorer.widget().children[0].children[1:]
    ax_n, ax_kl = explorer.figure(empirical_risk=0.2, **start).axes
    ns, kls = ax_n.lines[0].get_xdata(), ax_kl.lines[0].get_xdata()
    assert (ns[0], ns[-1]) == pytest.approx((10.0 ** n_control.min, 10.0 ** n_control.max))
    assert (kls[0], kls[-1]) == pytest.approx((10.0 ** kl_control.min, 10.0 ** kl_control.max))


def test_bound_explorer_titles_the_c_of_the_whole_n_the_bound_uses():
    from robustlab.course.widgets import BoundExplorer

    n = 10 ** 2.1  # the n control's float; the bound takes 125
    title = BoundExplorer().figure(empirical_risk=0.2, kl=5.0, n=n)._suptitle.get_text()
    c = (5.0 + np.log(2 * np.sqrt(125) / 0.05)) / 125
    assert f"n 125: " in title and title.endswith(f"= {c:.3g}")


def test_bound_explorer_error_control_holds_a_start_above_its_usual_range():
    # Its maximum was 0.99 always: a start of 0.995 was clamped to 0.99.
    from robustlab.course.widgets import BoundExplorer

    controls = BoundExplorer(empirical_risk=0.995).widget().children[0].children
    assert controls[0].value == 0.995


def test_live_curves_place_each_epoch_at_its_number():
    # A fit from initial_epoch=5 drew its points at 0, 1, 2 while the drop
    # mark stood at epoch 6.
    import keras

    from robustlab.course.widgets import LiveCurves

    live = LiveCurves([("loss", [("loss", "training loss")])], drop_epochs=(6,),
                      display=False)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=8, initial_epoch=5, verbose=0,
              callbacks=[live])
    np.testing.assert_array_equal(live.epochs, [5, 6, 7])
    assert live.history["loss"].shape == (3,)
    figure = live.figure()
    np.testing.assert_array_equal(figure.axes[0].lines[0].get_xdata(), [5, 6, 7])
    assert figure._suptitle.get_text() == "epoch 8 of 8"


def _fit_a_line(live, epochs, initial_epoch=0, learning_rate=0.01):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    x = np.arange(8.0).reshape(4, 2)
    model.fit(x, x[:, :1], epochs=epochs, initial_epoch=initial_epoch, verbose=0,
              callbacks=[live])


def test_live_curves_start_over_from_a_second_fits_first_epoch():
    # A second fit from epoch 0 was appended to the first: epochs 0, 1, 2,
    # 0, 1 and lines drawn back from the last epoch to the first.
    from robustlab.course.widgets import LiveCurves

    live = LiveCurves([("loss", [("loss", "training loss")])], display=False)
    _fit_a_line(live, 3)
    _fit_a_line(live, 2, learning_rate=0.0)
    np.testing.assert_array_equal(live.epochs, [0, 1])
    constant = live.history["loss"]
    # The second fit's (learning rate 0), not the first's.
    assert constant[0] == pytest.approx(constant[1], rel=1e-5)


def test_live_curves_go_on_through_a_fit_that_continues_the_last():
    from robustlab.course.widgets import LiveCurves

    live = LiveCurves([("loss", [("loss", "training loss")])], display=False)
    _fit_a_line(live, 3)
    first = live.history["loss"].copy()
    _fit_a_line(live, 5, initial_epoch=2)  # epoch 2 again, then 3 and 4
    np.testing.assert_array_equal(live.epochs, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(live.history["loss"][:2], first[:2])


def test_live_curves_draw_each_fit_in_its_own_output(monkeypatch):
    # The display handle of the first fit was updated by the second: its
    # curves went to the first cell's output and the second cell showed none.
    import IPython.display

    from robustlab.course.widgets import LiveCurves

    shown = []

    class Handle:
        def update(self, figure):
            shown.append(("update", self))

    def display(figure, display_id=False):
        handle = Handle()
        shown.append(("display", handle))
        return handle

    monkeypatch.setattr(IPython.display, "display", display)
    live = LiveCurves([("loss", [("loss", "training loss")])], every=1)
    _fit_a_line(live, 2)
    _fit_a_line(live, 2)
    kinds = [kind for kind, _ in shown]
    assert kinds == ["display", "update", "update", "display", "update", "update"]
    assert shown[3][1] is not shown[0][1]


def test_reference_explorer_draws_each_seed_of_a_probed_key_at_its_probes():
    # Between probes the key is NaN: plotted as it was, no seed line showed.
    from robustlab.course.widgets import ReferenceExplorer

    results = robustlab.studies.reference("checkpoint-selection")
    explorer = ReferenceExplorer(results, keys=("hessian_top_eig",))
    figure = explorer.figure("hessian_top_eig", seeds_shown=True)
    stacked = results.stacked("quick", "hessian_top_eig")
    probed = np.flatnonzero(np.isfinite(stacked[0]))
    assert len(probed) > 1
    seed_lines = [line for line in figure.axes[0].lines
                  if len(line.get_xdata()) == len(probed)
                  and np.array_equal(line.get_ydata(), stacked[0][probed])]
    assert seed_lines and np.array_equal(seed_lines[0].get_xdata(), probed)


def test_attack_explorer_refuses_inputs_that_are_not_images(digits):
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    for x in (digits.x_test[:8, :, :, 0], digits.x_test[:8].reshape(8, 64)):
        with pytest.raises(ValueError, match=r"`x` must be a batch of images, shape \(n, "
                           r"height, width, channels\) with 1 or 3 channels"):
            AttackExplorer({"net": net}, x, digits.y_test[:8], eps_values=[0.1],
                           steps_values=[2])


def test_attack_explorer_draws_colour_images_in_colour():
    import keras

    from robustlab.course.widgets import AttackExplorer

    net = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((6, 4, 4, 3), dtype="float32")
    explorer = AttackExplorer({"net": net}, x, np.arange(6) % 3, eps_values=[0.1],
                              steps_values=[2], shown=2)
    figure = explorer.figure("net", 0.1, 2)
    clean = figure.axes[0].images[0].get_array()
    assert clean.shape == (4, 4, 3)
    np.testing.assert_allclose(clean, x[0])
    perturbation = figure.axes[4].images[0].get_array()
    x_adv = explorer.attack("net", 0.1, 2)[0]
    np.testing.assert_allclose(perturbation, 0.5 + (x_adv[0] - x[0]) / 0.2, atol=1e-6)


@pytest.mark.parametrize("call, error, message", [
    (lambda e: e.attack("other", 0.1, 2), ValueError,
     r"`model_name` must be one of \['net'\]. Received: model_name='other'"),
    (lambda e: e.attack("net", -0.1, 2), ValueError, r"Received: eps=-0.1$"),
    (lambda e: e.attack("net", 0.1, 0), ValueError, r"Received: steps=0$"),
])
def test_attack_explorer_attack_names_a_bad_setting(digits, call, error, message):
    # attack("net", -0.1, 5) returned the clean digits; steps=0 divided by 0.
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    explorer = AttackExplorer({"net": net}, digits.x_test[:8], digits.y_test[:8],
                              eps_values=[0.1], steps_values=[2])
    with pytest.raises(error, match=message):
        call(explorer)


def test_fork_explorer_names_a_seed_or_step_it_cannot_show():
    from robustlab.course.widgets import ForkExplorer

    explorer = ForkExplorer(robustlab.studies.reference("lr-drop-collapse"))
    with pytest.raises(ValueError, match=r"`seed` must be a forked seed.*Received: seed=99$"):
        explorer.figure(seed=99, step=3)
    with pytest.raises(ValueError, match=r"Received: step=-1$"):
        explorer.figure(seed=0, step=-1)


def test_attack_explorer_reads_labels_as_a_column_or_one_hot_like_class_indices(digits):
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    x, y = digits.x_test[:24], digits.y_test[:24]
    accuracies = [
        AttackExplorer({"net": net}, x, labels, eps_values=[0.1], steps_values=[2]).attack(
            "net", 0.1, 2)[2]
        for labels in (y, y[:, None], np.eye(10)[y])]
    assert accuracies[0] == accuracies[1] == accuracies[2]
    with pytest.raises(ValueError, match=r"one label per input \(24\)"):
        AttackExplorer({"net": net}, x, y[:20], eps_values=[0.1], steps_values=[2])


@pytest.mark.parametrize("arguments, error, message", [
    (dict(eps_values=[]), ValueError, r"`eps_values` must hold at least one value"),
    (dict(eps_values=[-0.1]), ValueError, r"Received: eps_values=-0.1"),
    (dict(steps_values=[0, 5]), ValueError, r"`steps_values` must be an integer >= 1"),
    (dict(shown=0), ValueError, r"Received: shown=0"),
    (dict(value_range=(0.0, 0.5)), ValueError, r"`x`"),
])
def test_attack_explorer_refuses_bad_arguments_when_built(digits, arguments, error, message):
    from robustlab.course.widgets import AttackExplorer

    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    given = dict(eps_values=[0.1], steps_values=[2]) | arguments
    with pytest.raises(error, match=message):
        AttackExplorer({"net": net}, digits.x_test[:8], digits.y_test[:8], **given)


@pytest.mark.parametrize("build, message", [
    # Below the interval, the message named only its first bound ("> 0",
    # ">= 0"): for drop_factor a wrong range.
    (lambda w: w.BoundExplorer(empirical_risk=-0.1), r"in \[0, 1\)\. Received: empirical_risk=-0.1"),
    (lambda w: w.BoundExplorer(empirical_risk=1.0), r"in \[0, 1\)\. Received: empirical_risk=1.0"),
    (lambda w: w.BoundExplorer(kl=float("nan")), r"Received: kl=nan"),
    (lambda w: w.BoundExplorer(n=0), r"Received: n=0"),
    (lambda w: w.BoundExplorer(delta=0.0), r"in \(0, 1\)\. Received: delta=0.0"),
    (lambda w: w.BoundExplorer(delta=-0.1), r"in \(0, 1\)\. Received: delta=-0.1"),
    (lambda w: w.CloudExplorer(drop_factor=0.5), r"> 1 .*Received: drop_factor=0.5"),
    (lambda w: w.CloudExplorer(drop_factor=-1.0), r"> 1 \(the learning rate is divided by it at "
                                                   r"the drop\)\. Received: drop_factor=-1.0"),
    (lambda w: w.CloudExplorer(particles=0), r"Received: particles=0"),
    (lambda w: w.CloudExplorer(batch_size=0), r"Received: batch_size=0"),
    (lambda w: w.CloudExplorer(seed=-1), r"Received: seed=-1"),
    (lambda w: w.LiveCurves([("Loss", [("loss", "train")])], every=0), r"Received: every=0"),
    # Keys without labels were taken, and the fit failed at its first redraw
    # ("too many values to unpack"); a 2-letter key was read as key and label.
    (lambda w: w.LiveCurves([("Loss", ["loss", "val_loss"])]),
     r"`panels` must be a list of \(title, \[\(log key, label\), ...\]\).*Received: "
     r"panels=\[\('Loss', \['loss', 'val_loss'\]\)\]$"),
    (lambda w: w.LiveCurves([("Rate", ["lr"])]), r"Received: panels=\[\('Rate', \['lr'\]\)\]$"),
    (lambda w: w.LiveCurves([]), r"Received: panels=\[\]$"),
    (lambda w: w.LiveCurves([("Loss", [("loss", "train")])], drop_epochs=30),
     r"`drop_epochs` must be an iterable of epochs"),
])
def test_explorers_refuse_bad_arguments_when_built(build, message):
    from robustlab.course import widgets

    with pytest.raises((ValueError, TypeError), match=message):
        build(widgets)


@pytest.mark.parametrize("draw, message", [
    # Before: ZeroDivisionError (momentum 1, curvature 0), matplotlib's "Axis
    # limits cannot be NaN or Inf" (a negative noise), or a figure drawn for
    # a momentum of 1.5 or a negative rate.
    (lambda e: e.figure(momentum=1.0), r"`momentum` must be a finite number in \[0, 1\)\. "
                                       r"Received: momentum=1.0$"),
    (lambda e: e.figure(momentum=1.5), r"Received: momentum=1.5$"),
    (lambda e: e.figure(curvature=0.0), r"`curvature` must be a finite number > 0\. "
                                        r"Received: curvature=0.0$"),
    (lambda e: e.figure(noise_variance=-1.0), r"`noise_variance` must be a finite number >= 0\. "
                                              r"Received: noise_variance=-1.0$"),
    (lambda e: e.figure(lr=-0.1), r"`lr` must be a finite number > 0\. Received: lr=-0.1$"),
    (lambda e: e.simulate(0.2, 1.0, 2.0, 4.0), r"Received: momentum=1.0$"),
])
def test_the_cloud_explorer_names_a_setting_outside_its_range(draw, message):
    from robustlab.course.widgets import CloudExplorer

    with pytest.raises(ValueError, match=message):
        draw(CloudExplorer(steps_before=5, steps_after=5, particles=4))


@pytest.mark.parametrize("n, message", [
    (0, r"`n` must be a finite number >= 1\. Received: n=0$"),
    (0.5, r"Received: n=0.5$"),  # named `bound` before, which the caller never passed
])
def test_the_bound_explorer_figure_names_its_n(n, message):
    from robustlab.course.widgets import BoundExplorer

    with pytest.raises(ValueError, match=message):
        BoundExplorer().figure(n=n)


@pytest.mark.parametrize("models, shown", [
    (["net"], "a list"), ("net", "a str"), ({"net": "not a model"}, r"\{'net': 'not a model'\}")])
def test_the_attack_explorer_names_models_that_are_not_a_dict_of_models(digits, models, shown):
    from robustlab.course.widgets import AttackExplorer

    with pytest.raises(TypeError, match=r"`models` must be a dict \{name: keras model\}.*"
                                        rf"Received: models={shown}$"):
        AttackExplorer(models, digits.x_test[:8], digits.y_test[:8], eps_values=[0.1],
                       steps_values=[2])


def test_reference_and_fork_explorers_say_what_they_take():
    from robustlab.course.widgets import ForkExplorer
    from robustlab.course.widgets import ReferenceExplorer

    with pytest.raises(TypeError, match=r'robustlab.studies.reference\("robust-overfitting"\)'):
        ReferenceExplorer("robust-overfitting")
    with pytest.raises(TypeError, match=r"StudyResults"):
        ForkExplorer(None)
    with pytest.raises(TypeError, match=r"sequence of log keys.*Received: keys='val_robust_accuracy'"):
        ReferenceExplorer(robustlab.studies.reference("robust-overfitting"), keys="val_robust_accuracy")


def test_bound_explorer_controls_start_where_it_was_told_outside_their_usual_range():
    from robustlab.course.widgets import BoundExplorer

    controls = BoundExplorer(empirical_risk=0.95, kl=5e11, n=50).widget().children[0].children
    assert [c.value for c in controls] == pytest.approx([0.95, 5e11, 50])


def test_cloud_explorer_draws_the_stable_direction_of_an_unstable_setting_quietly():
    import warnings

    from robustlab.course.widgets import CloudExplorer

    explorer = CloudExplorer(steps_before=50, steps_after=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the recursion
        figure = explorer.figure(lr=0.2, momentum=0.9, curvature=10**1.5, noise_variance=4.0)
    curves = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "flat direction (lambda / 10)" in curves and "sharp direction (lambda)" not in curves
    low, high = figure.axes[0].get_ylim()
    flat = next(line for line in figure.axes[0].get_lines()
                if line.get_label().startswith("flat")).get_ydata()
    assert low <= flat.min() and flat.max() <= high


def test_a_drawing_that_fails_after_opening_its_figure_leaves_no_figure_open():
    import matplotlib.pyplot as plt

    from robustlab.course import widgets

    explorer = widgets.CloudExplorer(steps_before=20, steps_after=20)
    box = explorer.widget()
    open_before = plt.get_fignums()
    original = explorer.simulate
    explorer.simulate = lambda *a: (_ for _ in ()).throw(ZeroDivisionError("no cloud"))
    box.children[0].children[0].value = 0.1
    assert "Redrawing failed: ZeroDivisionError" in box.children[2].value
    assert plt.get_fignums() == open_before
    explorer.simulate = original


def _descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


def test_an_explorer_shows_its_figure_as_an_image_and_holds_no_output_widget():
    # An Output widget makes headless executors (nbclient, under nbgrader) send
    # comm messages back while they await a cell's reply, which can stall the
    # cell until its timeout; an image widget sends nothing back.
    import ipywidgets

    from robustlab.course.widgets import BoundExplorer

    box = BoundExplorer(empirical_risk=0.27, kl=2.4e6, n=1000).widget()
    kinds = [type(w) for w in _descendants(box)]
    assert ipywidgets.Output not in kinds
    image = next(w for w in _descendants(box) if isinstance(w, ipywidgets.Image))
    assert image.format == "png" and bytes(image.value).startswith(b"\x89PNG\r\n\x1a\n")


def test_moving_a_control_redraws_the_image():
    import ipywidgets

    from robustlab.course.widgets import BoundExplorer

    explorer = BoundExplorer(empirical_risk=0.27, kl=2.4e6, n=1000)
    box = explorer.widget()
    image = next(w for w in _descendants(box) if isinstance(w, ipywidgets.Image))
    before = image.value
    box.children[0].children[0].value = 0.5
    assert len(explorer.redraw_seconds) == 2
    assert bytes(image.value).startswith(b"\x89PNG") and bytes(image.value) != bytes(before)


def test_a_redraw_that_fails_says_so_in_the_widget_and_keeps_the_last_figure(monkeypatch):
    import ipywidgets

    from robustlab.course import widgets

    explorer = widgets.BoundExplorer(empirical_risk=0.27, kl=2.4e6, n=1000)
    box = explorer.widget()
    image = next(w for w in _descendants(box) if isinstance(w, ipywidgets.Image))
    note = next(w for w in _descendants(box) if isinstance(w, ipywidgets.HTML))
    before = image.value

    def broken(figure):
        raise ZeroDivisionError("no figure <today>")

    monkeypatch.setattr(widgets, "_png", broken)
    box.children[0].children[0].value = 0.5
    assert bytes(image.value) == bytes(before) and len(explorer.redraw_seconds) == 1
    assert note.value == "<pre>Redrawing failed: ZeroDivisionError: no figure &lt;today&gt;</pre>"
    monkeypatch.undo()
    box.children[0].children[0].value = 0.4
    assert note.value == "" and bytes(image.value) != bytes(before)


def test_a_first_drawing_that_fails_raises_in_the_cell(monkeypatch):
    from robustlab.course import widgets

    def broken(figure):
        raise ZeroDivisionError("no figure")

    monkeypatch.setattr(widgets, "_png", broken)
    with pytest.raises(ZeroDivisionError, match="no figure"):
        widgets.BoundExplorer().widget()


# -- execution ------------------------------------------------------------------


class _FakeShellChannel:
    """A channel whose `get_msg(timeout)` finds nothing `empty` times, each
    after advancing a fake clock by the timeout, then a reply."""

    def __init__(self, clock, empty):
        self.clock, self.empty, self.waits = clock, empty, []

    async def get_msg(self, timeout=None):
        self.waits.append(timeout)
        self.clock[0] += timeout
        if len(self.waits) <= self.empty:
            raise queue.Empty
        return {"msg_type": "execute_reply"}


@pytest.fixture
def fake_clock(monkeypatch):
    from robustlab.course import execution

    clock = [100.0]
    monkeypatch.setattr(execution.time, "monotonic", lambda: clock[0])
    return clock


def test_the_reply_is_awaited_in_short_slices_until_it_comes(fake_clock):
    from robustlab.course.execution import _wait_in_slices

    channel = _FakeShellChannel(fake_clock, empty=3)
    _wait_in_slices(channel, slice_seconds=0.25)
    assert asyncio.run(channel.get_msg(timeout=60)) == {"msg_type": "execute_reply"}
    assert channel.waits == [0.25, 0.25, 0.25, 0.25]


def test_the_sliced_wait_gives_up_at_the_cells_deadline(fake_clock):
    from robustlab.course.execution import _wait_in_slices

    channel = _FakeShellChannel(fake_clock, empty=100)
    _wait_in_slices(channel, slice_seconds=0.25)
    with pytest.raises(queue.Empty):
        asyncio.run(channel.get_msg(timeout=0.6))
    assert channel.waits == [0.25, 0.25, pytest.approx(0.1)]
    assert fake_clock[0] == pytest.approx(100.6)


def test_without_a_timeout_the_sliced_wait_waits_for_the_reply(fake_clock):
    from robustlab.course.execution import _wait_in_slices

    channel = _FakeShellChannel(fake_clock, empty=40)
    _wait_in_slices(channel, slice_seconds=0.25)
    assert asyncio.run(channel.get_msg()) == {"msg_type": "execute_reply"}
    assert channel.waits == [0.25] * 41


def _vm_hwm_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


@pytest.mark.parametrize("timeout, error", [
    (0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_run_notebook_refuses_a_timeout_nbclient_would_misread(tmp_path, timeout, error):
    # nbclient read 0 and -1 as no limit at all, and refused 2.5 with a
    # traitlets TraitError once the kernel had started.
    from robustlab.course.execution import run_notebook

    with pytest.raises(error, match=r"`timeout` must be an integer >= 1\. "
                                    rf"Received: timeout={timeout!r}"):
        run_notebook(str(tmp_path / "never_read.ipynb"), timeout=timeout)


@pytest.mark.course
@pytest.mark.xdist_group("kernels")  # one kernel at a time (see test_round_trip)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_run_notebook_reports_the_kernels_own_peak_memory(tmp_path):
    # getrusage's ru_maxrss, read in the kernel, carried the high-water mark
    # of the process that started it: a 52 MB notebook reported this
    # process's 0.8 GiB, and a notebook that redirected sys.stdout reported 0.
    import nbformat

    from robustlab.course.execution import run_notebook

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("held = b'x' * (300 * 2**20)  # written, so resident"),
        nbformat.v4.new_code_cell("import io, sys\nsys.stdout = io.StringIO()"),
    ]
    path = tmp_path / "peak.ipynb"
    nbformat.write(notebook, path)
    ballast = b"x" * (900 * 2**20)
    try:
        caller = _vm_hwm_bytes()
        run = run_notebook(str(path), timeout=120)
    finally:
        del ballast
    assert run.errors == []
    assert 300 * 2**20 <= run.peak_memory_bytes < 600 * 2**20 < caller
