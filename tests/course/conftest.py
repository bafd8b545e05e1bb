"""Shared pieces of the course tests: the lessons, a scratch copy of the
course, nbgrader run as an instructor runs it, and the gradebook's scores."""

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lessons():
    """The lesson names: the folders of solutions/ (as nbgrader_config.py
    and `make lessons` see them)."""
    folder = os.path.join(REPO, "solutions")
    return sorted(name for name in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, name, f"{name}.ipynb")))


LESSONS = lessons()


def notebook_path(root, kind, lesson):
    """`solutions/<lesson>/<lesson>.ipynb` or `lessons/<lesson>/<lesson>.ipynb`."""
    return os.path.join(root, kind, lesson, f"{lesson}.ipynb")


def kernel_env(**extra):
    """The environment of nbgrader and its kernels: this interpreter's
    Jupyter, TensorFlow (the course's backend), quiet TensorFlow logs."""
    env = dict(os.environ)
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONHASHSEED="0")
    env.pop("NBGRADER_EXECUTION", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def nbgrader(root, *args, timeout=900):
    """Run `nbgrader ARGS` in the course folder `root`, as an instructor would."""
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=root, env=kernel_env(),
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"nbgrader {' '.join(args)} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def make_course_copy(destination):
    """A scratch copy of the course (configuration, solutions, lessons)."""
    os.makedirs(destination, exist_ok=True)
    shutil.copy(os.path.join(REPO, "nbgrader_config.py"), destination)
    for folder in ("solutions", "lessons"):
        source = os.path.join(REPO, folder)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(destination, folder))
    return destination


def scores(root, lesson, student):
    """`{grade_id: score}` of the autograded test cells of one submission,
    from the gradebook (written answers wait for the instructor)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{os.path.join(root, 'gradebook.db')}") as gradebook:
        notebook = gradebook.find_submission_notebook(lesson, lesson, student)
        return {grade.name: grade.score for grade in notebook.grades
                if grade.cell.cell_type == "code"}


def max_scores(root, lesson):
    """`{grade_id: points}` of a lesson's autograded test cells."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{os.path.join(root, 'gradebook.db')}") as gradebook:
        notebook = gradebook.find_notebook(lesson, lesson)
        return {cell.name: cell.max_score for cell in notebook.grade_cells
                if cell.cell_type == "code"}


def read(path):
    return nbformat.read(path, as_version=4)


def cell_by_grade_id(notebook, grade_id):
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(f"no cell with grade_id {grade_id!r}")


def submit(root, lesson, student, notebook):
    """Place `notebook` where nbgrader looks for a student's submission."""
    folder = os.path.join(root, "submitted", student, lesson)
    os.makedirs(folder, exist_ok=True)
    nbformat.write(notebook, os.path.join(folder, f"{lesson}.ipynb"))


def code_of(notebook, kind):
    """All code cells of a notebook whose nbgrader role is `kind`
    ("solution", "tests" or "other"), with their grade ids."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        role = ("solution" if meta.get("solution") else
                "tests" if meta.get("grade") else "other")
        if role == kind:
            found.append((meta.get("grade_id"), cell.source))
    return found


@pytest.fixture(scope="session")
def solution_notebooks():
    return {lesson: read(notebook_path(REPO, "solutions", lesson)) for lesson in LESSONS}


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True)


def pytest_collection_modifyitems(config, items):
    # The Binder tests that start a kernel use the environment that another
    # worker builds meanwhile (test_binder.py): in the "kernels" worker they
    # come last, after the round trip and the browser test.
    def waits_for_the_binder_build(item):
        group = item.get_closest_marker("xdist_group")
        return (item.nodeid.startswith("tests/course/test_binder.py")
                and group is not None and group.args[:1] == ("kernels",))

    for item in items:
        if len(list(item.iter_markers("xdist_group"))) > 1:
            raise pytest.UsageError(
                f"{item.nodeid} is marked with several xdist groups, which "
                f"pytest-xdist joins into a group of their own: mark it with one")
    items.sort(key=waits_for_the_binder_build)
