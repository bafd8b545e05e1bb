"""The lessons' own code, outside the graded tests: it gives the same numbers
on every run, its text quotes what it prints, and with the exercises
unwritten (the release as students get it) it fails only where it calls an
exercise, with the stub's NotImplementedError, never with a NameError.

Executing the released notebooks is the round trip's job (test_round_trip.py
autogrades the untouched release); here the order of the cells is checked
from their source, in a second.
"""

import contextlib
import io
import re

import numpy as np
import pytest

from tests.course.conftest import LESSONS
from tests.course.conftest import REPO
from tests.course.conftest import cell_by_grade_id
from tests.course.conftest import figures_waiting_for_an_exercise
from tests.course.conftest import names_test_cells_rebind
from tests.course.conftest import notebook_path
from tests.course.conftest import read
from tests.course.conftest import trainings_before_an_exercise
from tests.course.conftest import unready_names

pytestmark = pytest.mark.course


@pytest.mark.parametrize("lesson", LESSONS)
def test_with_the_exercises_unwritten_every_ungraded_cell_finds_the_names_it_reads(lesson):
    # A helper or a figure that needs no exercise must not wait behind a
    # cell's call to one: the student would see a NameError that does not
    # name the unwritten exercise (lesson 00's `accuracy`, lesson 04's KL).
    problems = unready_names(read(notebook_path(REPO, "solutions", lesson)))
    assert problems == [], "\n".join(f"cell {index} reads `{name}`: {why}" for index, name, why in problems)


@pytest.mark.parametrize("lesson", LESSONS)
def test_running_a_test_cell_again_changes_nothing_a_later_cell_reads(lesson):
    # Lesson 00's test cells bound `x`, `eps` and `grad_fn`, which the
    # attack demo below them reads: run again after the demo's set-up, a test
    # handed the demo its 4-pixel toy array ("`y` must have one label per
    # input (4)"). So did lesson 01's `model` and `checkpoint`, lesson 03's
    # `weights` and lesson 04's `mu_q` and `var_q`.
    problems = names_test_cells_rebind(read(notebook_path(REPO, "solutions", lesson)))
    assert problems == [], "\n".join(
        f"test cell {test} binds `{name}`, which cell {reader} reads" for test, name, reader in problems)


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_figure_that_needs_no_exercise_comes_before_the_cells_call_to_one(lesson):
    # Lesson 01's mislabelled digits and lesson 02's reference forks were drawn
    # after the call to flip_labels / heavy_ball_variance: never, in the release.
    waiting = figures_waiting_for_an_exercise(read(notebook_path(REPO, "solutions", lesson)))
    assert waiting == [], "\n".join(
        f"cell {index}, line {line}: a figure that uses no exercise's result waits behind the "
        "cell's call to an exercise" for index, line in waiting)


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_cell_calls_its_exercises_before_it_trains(lesson):
    # Unwritten, the exercise fails at once, not after the training (lesson 04
    # trained 22 s, lesson 02 40 epochs, before failing). A training whose
    # result later cells need goes in a cell of its own.
    late = trainings_before_an_exercise(read(notebook_path(REPO, "solutions", lesson)))
    assert late == [], "\n".join(f"cell {index} trains (line {fit}) before it calls an exercise (line {call})"
                                 for index, fit, call in late)


def _clean_training(monkeypatch):
    """Lesson 00's clean network as its setup and `train_clean` cells train it
    (5 epochs: demo_epochs while nbgrader executes the notebook)."""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    notebook = read(notebook_path(REPO, "solutions", "00_pgd"))
    namespace = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for grade_id in ("setup", "train_clean"):
            exec(compile(cell_by_grade_id(notebook, grade_id).source, grade_id, "exec"), namespace)
    return namespace["clean_model"].get_weights(), namespace["clean_test_accuracy"]


def test_lesson_00_trains_the_same_clean_network_on_every_run(monkeypatch):
    first_weights, first_accuracy = _clean_training(monkeypatch)
    second_weights, second_accuracy = _clean_training(monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(first_weights, second_weights)), (
        f"two runs of lesson 00's train_clean cell gave different weights (clean test accuracy "
        f"{first_accuracy:.4f}, then {second_accuracy:.4f})")
    assert second_accuracy == first_accuracy


def test_lesson_02_model_answer_quotes_the_whole_weight_shrink_the_lesson_prints():
    import robustlab

    shrink = robustlab.studies.reference("lr-drop-collapse").fork_table()["shrink"]
    (row,) = shrink.values()
    answer = cell_by_grade_id(read(notebook_path(REPO, "solutions", "02_lr_drop_collapse")),
                              "reflection").source
    quoted = [int(n) for n in re.findall(r"over all weights about (\d+)x", answer)]
    assert quoted == [round(row["measured_overall"]["mean"], -1)], (
        f"the model answer says {quoted}; the fork cell prints {row['measured_overall']['mean']:.0f}x")
