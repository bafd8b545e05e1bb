"""What the course notebooks (`solutions/`, `lessons/`) use besides the
library: grading checks with plain-word failure messages
(`robustlab.course.grading`), the reference implementation of every graded
function (`robustlab.course.exercises`), and the interactive explorers
(`robustlab.course.widgets`, which needs the `course` extra: ipywidgets).

`demo_epochs(full, graded)` is how a lesson's training demo shortens itself
while nbgrader validates or autogrades it (nbgrader sets NBGRADER_EXECUTION
then), so no grade waits on a long run.
"""

import os

from robustlab.course import exercises
from robustlab.course import grading

__all__ = ["autograding", "demo_epochs", "exercises", "grading"]


def autograding():
    """Whether nbgrader is executing the notebook (validate or autograde)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def demo_epochs(full, graded):
    """`graded` epochs while nbgrader executes the notebook, else `full`.

    >>> demo_epochs(100, 3) in (100, 3)
    True
    """
    return graded if autograding() else full
