"""What the course notebooks (`solutions/`, `lessons/`) use besides the
library: grading checks with plain-word failure messages
(`robustlab.course.grading`), the reference implementation of every graded
function (`robustlab.course.exercises`), and the interactive explorers
(`robustlab.course.widgets`, which needs the `course` extra: ipywidgets).

`demo_epochs(full, graded)` is how a lesson's training demo shortens itself
while nbgrader validates or autogrades it (nbgrader sets NBGRADER_EXECUTION
then), so no grade waits on a long run.

While nbgrader executes a notebook, importing this module shows Python
warnings on standard output instead of standard error. nbgrader gives a test
cell no points when it wrote to standard error; the course's autograding
drops standard error that holds only warnings (`nbgrader_config.py`), but
`nbgrader validate` and the Validate button cannot (they run no such step),
and reported a correct answer that raised a warning as failing. Outside
nbgrader nothing changes.
"""

import os
import sys
import warnings

from robustlab.course import exercises
from robustlab.course import grading

__all__ = ["autograding", "demo_epochs", "exercises", "grading"]


def autograding():
    """Whether nbgrader is executing the notebook (validate or autograde)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def demo_epochs(full, graded):
    """`graded` epochs while nbgrader executes the notebook, else `full`.

    Args:
        full: the epochs of the demo in an ordinary run.
        graded: the (fewer) epochs while nbgrader validates or autogrades.

    Returns:
        `graded` when the NBGRADER_EXECUTION environment variable is set to
        a non-empty value (nbgrader sets it while it executes a notebook),
        else `full`; either is returned as given.

    Example:

    >>> import os
    >>> from unittest import mock
    >>> from robustlab.course import demo_epochs
    >>> with mock.patch.dict(os.environ, {"NBGRADER_EXECUTION": "autograde"}):
    ...     demo_epochs(100, 3)  # nbgrader validating or autograding
    3
    >>> with mock.patch.dict(os.environ):
    ...     _ = os.environ.pop("NBGRADER_EXECUTION", None)
    ...     demo_epochs(100, 3)  # an ordinary run
    100
    """
    return graded if autograding() else full


def _show_warning_on_stdout(message, category, filename, lineno, file=None, line=None):
    sys.stdout.write(warnings.formatwarning(message, category, filename, lineno, line))


if autograding():
    warnings.showwarning = _show_warning_on_stdout

