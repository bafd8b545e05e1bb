"""nbgrader_config.py: the course layout, the limits, and which stderr a
test cell may write without losing its points."""

import re

import pytest
from traitlets.config.loader import PyFileConfigLoader

from tests.course.conftest import LESSONS
from tests.course.conftest import REPO


@pytest.fixture(scope="module")
def config():
    return PyFileConfigLoader("nbgrader_config.py", path=REPO).load_config()


def test_the_course_root_is_the_repository_with_solutions_and_lessons(config):
    assert config.CourseDirectory.root == REPO
    assert config.CourseDirectory.source_directory == "solutions"
    assert config.CourseDirectory.release_directory == "lessons"
    assert LESSONS[0] == "00_pgd"


def test_every_option_is_one_nbgrader_has(config):
    # nbgrader ignores an option it does not have, with a warning
    # ("Config option ... not recognized") on every command.
    import nbgrader.converters
    import nbgrader.coursedir
    import nbgrader.preprocessors
    import nbgrader.validator

    classes = {"Autograde": nbgrader.converters.Autograde,
               "CourseDirectory": nbgrader.coursedir.CourseDirectory,
               "Execute": nbgrader.preprocessors.Execute,
               "LimitOutput": nbgrader.preprocessors.LimitOutput,
               "IgnorePattern": nbgrader.preprocessors.IgnorePattern,
               "Validator": nbgrader.validator.Validator}
    for section, options in config.items():
        known = classes[section].class_trait_names(config=True)
        for name in options:
            assert name in known, f"{section}.{name} is not an option of nbgrader"


def test_cells_have_a_timeout_and_output_is_limited(config):
    assert 0 < config.Execute.timeout <= 60
    assert config.Execute.interrupt_on_timeout is True
    assert 0 < config.LimitOutput.max_lines <= 1000


HARMLESS = [
    "/site-packages/x.py:3: UserWarning: something\n  warnings.warn('something')\n",
    "/a.py:1: DeprecationWarning: old\n  old()\n/b.py:2: FutureWarning: soon\n  soon()\n",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796269788.044127    3372 cudart_stub.cc:31] Could not find cuda drivers.\n"
    "E0000 00:00:1796269790.465420    3372 cuda_platform.cc:52] failed call to cuInit\n",
    "2026-12-03 03:49:50.123456: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1796270375.080531    7144 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions.\nTo enable the following instructions: AVX2 "
    "FMA, in other operations, rebuild TensorFlow.\n",
    "\n",
]

REAL = [
    "Traceback (most recent call last):\n  File ...\nValueError: bad\n",
    "my debugging print\n",
    "/a.py:1: UserWarning: fine\n  x()\nbut then something else\n",
    "100%|##########| 10/10 [00:01<00:00]\n",
]


@pytest.mark.parametrize("text", HARMLESS)
def test_warnings_and_tensorflow_logs_are_removed_from_stderr(config, text):
    assert config.IgnorePattern.enabled is True
    assert re.search(config.IgnorePattern.pattern, text)


@pytest.mark.parametrize("text", REAL)
def test_any_other_stderr_is_kept(config, text):
    assert not re.search(config.IgnorePattern.pattern, text)


def test_the_pattern_fails_fast_on_long_text(config):
    # Each line has one way to match: no exponential backtracking.
    text = "  indented line\n" * 20000 + "not a warning\n"
    assert not re.search(config.IgnorePattern.pattern, text)


def test_a_copied_graded_cell_loses_its_role_and_the_notebook_still_passes_the_checks(config):
    # nbgrader's DeduplicateIds left the copy `nbgrader: {}`, which
    # CheckCellMetadata read as schema 0 (SchemaTooOldError): autograde
    # stopped for every student after the one who had copied a test cell.
    import nbformat
    from nbgrader.preprocessors import CheckCellMetadata

    from tests.course.conftest import cell_by_grade_id
    from tests.course.conftest import notebook_path
    from tests.course.conftest import read

    notebook = read(notebook_path(REPO, "lessons", "00_pgd"))
    test = cell_by_grade_id(notebook, "test_project_linf")
    copy = nbformat.from_dict(dict(test, source="pass", id="a-copy"))
    notebook.cells.insert(notebook.cells.index(test), copy)
    sanitize = [step() for step in config.Autograde.sanitize_preprocessors]
    deduplicate = next(s for s in sanitize if type(s).__name__ == "DropDuplicatedGradedCells")
    notebook, _ = deduplicate.preprocess(notebook, {})
    CheckCellMetadata().preprocess(notebook, {})
    assert "nbgrader" not in notebook.cells[notebook.cells.index(test) - 1].metadata
    assert cell_by_grade_id(notebook, "test_project_linf").source == test.source
