"""nbgrader configuration of the robustlab course.

The course root is this folder (the repository root): the instructor's
notebooks live in `solutions/<lesson>/<lesson>.ipynb`, and
`nbgrader generate_assignment <lesson>` writes the students' version to
`lessons/<lesson>/<lesson>.ipynb`. Submissions, autograded copies, feedback
and the gradebook (`gradebook.db`) are created next to them by nbgrader and
are not part of the repository. See the README ("The course") for the
commands an instructor runs.
"""

import os

from nbgrader.converters import Autograde
from nbgrader.preprocessors import DeduplicateIds

c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "robustlab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
# Reference results, widgets and data come from the installed package; a
# lesson folder holds its notebook only.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", ".*"]

# Every folder of solutions/ is a lesson. nbgrader adds a lesson, with its
# notebook and graded cells, to the gradebook (gradebook.db, not in the
# repository) when `nbgrader generate_assignment` (`make lessons`) makes its
# students' version: on a fresh clone, run it before autograding even though
# lessons/ is committed. (`nbgrader db assignment add <lesson>` records the
# name only, and autograde then finds no notebook; nbgrader 0.9 has no
# setting that lists assignments in advance.)

# Per-cell limit while validating and autograding. No graded cell trains a
# model, and demos shorten themselves under NBGRADER_EXECUTION, but the setup
# cell imports Keras on TensorFlow: 12-13 s on two busy cores, and a timeout
# there fails every test of the lesson. 60 s leaves a 4-5x margin over the
# slowest cell and still stops a student's infinite loop within a minute in
# each cell that runs it (the exercise's test, and any later demo cell that
# calls it), so that the other cells are graded.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.Execute.kernel_name = "python3"

# `nbgrader validate` cuts every line it prints at this width (nbgrader's
# default, 90, cut the tests' messages before the expected and received
# values and the hint).
c.Validator.width = 400

# A print loop in a student's function must not flood the feedback.
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 40

# nbgrader gives a test cell zero points when it wrote anything to stderr.
# Python warnings and TensorFlow/XLA/absl log lines are not failures: drop a
# stderr output whose every line is one of those (a warning's message line, an
# indented source line under it, or a log line), and keep anything else.
# `nbgrader validate` runs no such step: for it, `robustlab.course` (imported
# by every lesson's first cell) shows Python warnings on stdout while nbgrader
# executes a notebook, so that Validate and the grader agree.
# Each line is tested by a lookahead and then consumed in one way only, so the
# match cannot backtrack exponentially on a long stderr text.
_HARMLESS_LINE_START = "|".join([
    r"[ \t]",  # the indented source line under a warning
    r"\n",  # an empty line
    r"[^\n]*\b\w*Warning\b",  # UserWarning: ..., DeprecationWarning ...
    r"[IWE]\d{4} \d\d:\d\d:",  # absl: I0000 00:00:17... file.cc:31] ...
    r"\d{4}-\d\d-\d\d [\d:.]+: [IW] ",  # TensorFlow C++: 2026-... I ...
    r"WARNING: All log messages before absl::InitializeLog",
    r"To enable the following instructions",
    r"This TensorFlow binary is optimized",
])
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = rf"\A(?:(?={_HARMLESS_LINE_START})[^\n]*(?:\n|\Z))*\Z"


class DropDuplicatedGradedCells(DeduplicateIds):
    """nbgrader's DeduplicateIds, leaving a duplicated graded cell an
    ordinary cell: nbgrader's own left it `nbgrader: {}`, which the metadata
    check then read as a notebook of an old format, and autograde stopped for
    every student after the one who had copied a test cell (nbgrader issue
    1083). The copy keeps no grade and no points; the instructor's cell is
    restored as always."""

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


c.Autograde.sanitize_preprocessors = [
    DropDuplicatedGradedCells if step is DeduplicateIds else step
    for step in Autograde.class_traits()["sanitize_preprocessors"].default()]

# Student notebooks are small; keep nbgrader from copying anything large that
# a student leaves in the folder.
c.CourseDirectory.max_file_size = 10_000  # kB
