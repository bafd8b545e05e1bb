"""Every solution notebook runs top to bottom, as a student runs it (the full
demos, not nbgrader's shortened ones), without an error and within the
Binder memory budget of 1.5 GiB for the kernel. (Its time is measured by
benchmarks/bench_lessons.py: no wall-clock assertion here.)"""

import pytest

from tests.course.conftest import LESSONS
from tests.course.conftest import REPO
from tests.course.conftest import kernel_env
from tests.course.conftest import notebook_path

pytestmark = pytest.mark.course

KERNEL_MEMORY_BUDGET = 1.5 * 2**30


@pytest.mark.parametrize("lesson", LESSONS)
def test_the_solution_runs_without_error_within_the_memory_budget(lesson):
    from robustlab.course.execution import run_notebook

    env = kernel_env()
    run = run_notebook(notebook_path(REPO, "solutions", lesson), timeout=600,
                       env={k: env[k] for k in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")})
    assert run.errors == []
    assert 0 < run.peak_memory_bytes <= KERNEL_MEMORY_BUDGET, (
        f"{lesson}: the kernel peaked at {run.peak_memory_bytes / 2**30:.2f} GiB")
