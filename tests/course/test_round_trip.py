"""The course's real round trip through nbgrader's own commands, in a
scratch copy: generate the release, autograde the solutions, the untouched
release and three special submissions, and write feedback.

The special submissions use lesson 00: one whose test cell was edited to
`assert True` (nbgrader restores it), one with an infinite loop in one
exercise (that cell times out, the others are graded), one with exactly
one exercise wrong (it loses exactly that exercise's points), one that
rebinds the checks the tests call (the tests use the course's own) and one
with a copy of a test cell (graded all the same, and the students after it
too).
"""

import os

import nbformat
import pytest

from tests.course.conftest import LESSONS
from tests.course.conftest import REPO
from tests.course.conftest import cell_by_grade_id
from tests.course.conftest import exercise_free_cells
from tests.course.conftest import make_course_copy
from tests.course.conftest import max_scores
from tests.course.conftest import nbgrader
from tests.course.conftest import notebook_path
from tests.course.conftest import read
from tests.course.conftest import scores
from tests.course.conftest import submit

# Kernels started at the same moment by parallel test workers can race for
# ports (jupyter_client#487): every test that starts kernels runs in one
# worker (the xdist group "kernels"), one kernel at a time.
pytestmark = [pytest.mark.course, pytest.mark.xdist_group("kernels")]

SPECIAL_LESSON = "00_pgd"

# Lesson 00 with project_linf forgetting the value range: only its 3 points go.
ONE_WRONG = {"project_linf": '''
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    return np.clip(x_adv, x - eps, x + eps)
'''}

# pgd_linf takes every gradient at the clean image, and its test cell was
# edited so that it cannot fail.
TAMPERED = {
    "pgd_linf": '''
def pgd_linf(grad_fn, x, eps, step_size, steps, value_range=(0.0, 1.0), x_init=None):
    x_adv = x.copy() if x_init is None else x_init.copy()
    for _ in range(steps):
        x_adv = pgd_linf_step(x_adv, grad_fn(x), x, eps, step_size, value_range)
    return x_adv
''',
    "test_pgd_linf": "assert True",
}

# project_linf forgets the value range, and its cell makes the checks pass
# anything: the test cells import the course's own.
REBINDING = {"project_linf": ONE_WRONG["project_linf"] + '''
check = check_close = lambda *args, **kwargs: None
'''}

LOOPING = {"fgsm_linf": '''
def fgsm_linf(grad_fn, x, eps, value_range=(0.0, 1.0)):
    while True:
        pass
'''}


def variant(solution, changes):
    notebook = nbformat.from_dict(solution)
    for grade_id, source in changes.items():
        cell_by_grade_id(notebook, grade_id).source = source.strip("\n")
    return notebook


def with_a_copied_test_cell(solution, grade_id):
    """`solution` with a copy of test cell `grade_id`, emptied to `pass`,
    just above it (a student's paste)."""
    notebook = nbformat.from_dict(solution)
    test = cell_by_grade_id(notebook, grade_id)
    notebook.cells.insert(notebook.cells.index(test),
                          nbformat.from_dict(dict(test, source="pass", id="pasted-copy")))
    return notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = make_course_copy(str(tmp_path_factory.mktemp("course")))
    for lesson in LESSONS:
        nbgrader(root, "generate_assignment", lesson, "--force")
    return root


@pytest.fixture(scope="module")
def graded(course):
    for lesson in LESSONS:
        solution = read(notebook_path(course, "solutions", lesson))
        submit(course, lesson, "solution", solution)
        submit(course, lesson, "release", read(notebook_path(course, "lessons", lesson)))
        if lesson == SPECIAL_LESSON:
            submit(course, lesson, "one_wrong", variant(solution, ONE_WRONG))
            submit(course, lesson, "tampered", variant(solution, TAMPERED))
            submit(course, lesson, "looping", variant(solution, LOOPING))
            submit(course, lesson, "rebinding", variant(solution, REBINDING))
            # Named to come first: nbgrader grades the students in order, and
            # its own handling of the copy stopped the run there.
            submit(course, lesson, "a_copied_test",
                   with_a_copied_test_cell(solution, "test_project_linf"))
        nbgrader(course, "autograde", lesson, "--force", timeout=1800)
    nbgrader(course, "generate_feedback", SPECIAL_LESSON, "--student", "one_wrong",
             "--force")
    return course


@pytest.mark.parametrize("lesson", LESSONS)
def test_generate_assignment_reproduces_the_committed_lessons(course, lesson):
    generated = read(notebook_path(course, "lessons", lesson))
    committed = read(notebook_path(REPO, "lessons", lesson))
    assert generated == committed, (
        f"lessons/{lesson} differs from what `nbgrader generate_assignment "
        f"{lesson}` makes of solutions/{lesson}: run `make lessons` and commit.")


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_solutions_score_full_marks_and_every_cell_runs(graded, lesson):
    assert scores(graded, lesson, "solution") == max_scores(graded, lesson)
    autograded = read(os.path.join(graded, "autograded", "solution", lesson, f"{lesson}.ipynb"))
    errors = [(i, o.ename, o.evalue) for i, cell in enumerate(autograded.cells)
              if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []


@pytest.mark.parametrize("lesson", LESSONS)
def test_autograding_draws_the_explorers_without_an_output_widget(graded, lesson):
    # nbclient answers an Output widget's outputs with comm messages on the
    # shell channel; one sent while it awaits a cell's reply can leave the
    # reply unseen until the per-cell timeout (a 0.5 s cell took 60 s).
    autograded = read(os.path.join(graded, "autograded", "solution", lesson, f"{lesson}.ipynb"))
    states = autograded.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    models = [state["model_name"] for state in states.values()]
    assert "ImageModel" in models, "the lesson's explorer drew no figure"
    assert "OutputModel" not in models


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_untouched_release_scores_zero(graded, lesson):
    got = scores(graded, lesson, "release")
    assert set(got) == set(max_scores(graded, lesson))
    assert all(score == 0 for score in got.values()), got


def _autograded(root, student, lesson):
    return read(os.path.join(root, "autograded", student, lesson, f"{lesson}.ipynb"))


def _ungraded_code(notebook):
    return [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            and not cell.metadata.get("nbgrader", {}).get("grade")
            and not cell.metadata.get("nbgrader", {}).get("solution")]


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_untouched_release_fails_only_at_the_stubs_of_the_exercises(graded, lesson):
    # Not a NameError for a helper defined after a call to an exercise, nor
    # anything else that would not point the student to the exercise.
    release = _autograded(graded, "release", lesson)
    errors = [(index, output.ename, output.evalue[:120]) for index, cell in _ungraded_code(release)
              for output in cell.outputs
              if output.output_type == "error" and output.ename != "NotImplementedError"]
    assert errors == []


def _figures(cell):
    """The figures (shown with plt.show()) and explorers (a cell's value) a cell drew."""
    return sum(1 for output in cell.outputs if output.output_type in ("display_data", "execute_result")
               and ({"image/png", "application/vnd.jupyter.widget-view+json"} & set(output.data)))


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_untouched_release_draws_every_figure_that_needs_no_exercise(graded, lesson):
    release, solution = _autograded(graded, "release", lesson), _autograded(graded, "solution", lesson)
    free = exercise_free_cells(read(notebook_path(graded, "solutions", lesson)))
    drawn = {index: (_figures(release.cells[index]), _figures(solution.cells[index])) for index in free}
    assert all(release.cells[index].source == solution.cells[index].source for index in free)
    assert {index: counts for index, counts in drawn.items() if counts[0] != counts[1]} == {}, (
        "cell: (figures in the release, in the solutions)")


def test_one_wrong_exercise_loses_exactly_its_points(graded):
    expected = dict(max_scores(graded, SPECIAL_LESSON), test_project_linf=0.0)
    assert scores(graded, SPECIAL_LESSON, "one_wrong") == expected


def test_an_edited_test_cell_is_restored_and_the_code_graded_as_it_deserves(graded):
    expected = dict(max_scores(graded, SPECIAL_LESSON), test_pgd_linf=0.0)
    assert scores(graded, SPECIAL_LESSON, "tampered") == expected
    autograded = read(os.path.join(graded, "autograded", "tampered", SPECIAL_LESSON,
                                   f"{SPECIAL_LESSON}.ipynb"))
    released = read(notebook_path(graded, "lessons", SPECIAL_LESSON))
    restored = cell_by_grade_id(autograded, "test_pgd_linf").source
    assert restored != "assert True"
    assert "### BEGIN HIDDEN TESTS" in restored  # the instructor's version, hidden tests included
    assert cell_by_grade_id(released, "test_pgd_linf").source in restored


def test_rebinding_the_checks_in_a_solution_cell_does_not_pass_a_wrong_answer(graded):
    # The test cells called check_close by its global name: a solution cell
    # that rebound it gave full marks to a wrong project_linf (12/12).
    expected = dict(max_scores(graded, SPECIAL_LESSON), test_project_linf=0.0)
    assert scores(graded, SPECIAL_LESSON, "rebinding") == expected


def test_a_copied_test_cell_is_graded_and_so_are_the_students_after_it(graded):
    # nbgrader's own DeduplicateIds left the copy metadata that its next step
    # read as an old format: autograde stopped, and no later student was
    # graded.
    assert scores(graded, SPECIAL_LESSON, "a_copied_test") == max_scores(graded, SPECIAL_LESSON)
    assert scores(graded, SPECIAL_LESSON, "solution") == max_scores(graded, SPECIAL_LESSON)


def test_an_infinite_loop_times_out_and_the_other_exercises_are_graded(graded):
    expected = dict(max_scores(graded, SPECIAL_LESSON), test_fgsm_linf=0.0)
    assert scores(graded, SPECIAL_LESSON, "looping") == expected
    autograded = read(os.path.join(graded, "autograded", "looping", SPECIAL_LESSON,
                                   f"{SPECIAL_LESSON}.ipynb"))
    errors = [o for o in cell_by_grade_id(autograded, "test_fgsm_linf").outputs
              if o.output_type == "error"]
    assert errors and errors[0].ename in ("CellTimeoutError", "KeyboardInterrupt"), errors


def test_feedback_names_the_failure_in_plain_words(graded):
    path = os.path.join(graded, "feedback", "one_wrong", SPECIAL_LESSON,
                        f"{SPECIAL_LESSON}.html")
    with open(path) as f:
        html = f.read()
    assert "inside value_range=(0, 1)" in html
    assert "Score: 9.0 / 12.0" in html or "9.0 / 12.0" in html


# A correct project_linf that raises two warnings, a Python one and NumPy's.
WARNS = {"project_linf": '''
def project_linf(x_adv, x, eps, value_range=(0.0, 1.0)):
    import warnings
    warnings.warn("a student's note", UserWarning)
    np.float64(1.0) / 0.0  # NumPy: RuntimeWarning, divide by zero
    projected = np.clip(x_adv, x - eps, x + eps)
    return projected if value_range is None else np.clip(projected, *value_range)
'''}


def _solved_release(course, changes=()):
    """The students' notebook of lesson 00 with every exercise written as the
    solutions write it, then `changes`."""
    release = read(notebook_path(course, "lessons", SPECIAL_LESSON))
    solution = read(notebook_path(course, "solutions", SPECIAL_LESSON))
    for cell in release.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = cell_by_grade_id(solution, cell.metadata.nbgrader.grade_id).source
    return variant(release, dict(changes))


def _validate(course, name, notebook):
    """`nbgrader validate` of `notebook`, as a student runs it: its output."""
    folder = os.path.join(course, "validate", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{SPECIAL_LESSON}.ipynb")
    nbformat.write(notebook, path)
    return nbgrader(course, "validate", path).stdout


def test_validate_passes_a_correct_answer_that_warns_as_the_grader_does(course):
    # Before: nbgrader's Validator, which runs no IgnorePattern, failed the
    # test cell on the warnings' stderr that autograde drops ("you WILL NOT
    # receive full credit"), while autograde gave full marks.
    output = _validate(course, "warns", _solved_release(course, WARNS))
    assert "Success! Your notebook passes all the tests." in output, output


def test_validate_fails_a_wrong_answer_and_prints_the_tests_message_whole(course):
    # The control of the test above: Validate still fails what the grader
    # fails, and (with nbgrader's default width of 90) no longer cuts the
    # message before the values and the hint.
    output = _validate(course, "one_wrong", _solved_release(course, ONE_WRONG))
    assert "VALIDATION FAILED ON 1 CELL(S)!" in output, output
    message = next(line for line in output.splitlines() if "AssertionError: " in line)
    assert message.endswith("Each pixel must end up within eps of x, then inside [0, 1]."), message
