"""What each lesson costs on this machine: the solution notebook executed top
to bottom as a student runs it (wall time, kernel peak memory), and the
autograde time of one submission (the solution) through nbgrader.

    KERAS_BACKEND=tensorflow python benchmarks/bench_lessons.py [LESSON ...]

Budgets (the course's stated targets): at most 3 minutes and 1.5 GiB per
notebook on 2 CPU cores, at most 60 s to autograde one submission.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def lessons():
    folder = os.path.join(REPO, "solutions")
    return sorted(n for n in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, n, f"{n}.ipynb")))


def autograde_seconds(lesson):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory() as root:
        shutil.copy(os.path.join(REPO, "nbgrader_config.py"), root)
        shutil.copytree(os.path.join(REPO, "solutions"), os.path.join(root, "solutions"))
        nbgrader = [sys.executable, "-m", "nbgrader"]
        subprocess.run(nbgrader + ["generate_assignment", lesson, "--force"], cwd=root,
                       env=env, check=True, capture_output=True)
        submitted = os.path.join(root, "submitted", "student", lesson)
        os.makedirs(submitted)
        shutil.copy(os.path.join(root, "solutions", lesson, f"{lesson}.ipynb"), submitted)
        started = time.perf_counter()
        subprocess.run(nbgrader + ["autograde", lesson, "--student", "student", "--force"],
                       cwd=root, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", metavar="LESSON",
                        help=f"lessons to measure (default: all): {', '.join(lessons())}")
    chosen = parser.parse_args(argv).lessons or lessons()
    unknown = [name for name in chosen if name not in lessons()]
    if unknown:
        # It failed deep inside nbformat on solutions/<name>/<name>.ipynb.
        parser.error(f"LESSON must be one of {', '.join(lessons())}. Received: {unknown[0]}")
    from robustlab.course.execution import run_notebook

    print(f"{'lesson':24s} {'run (s)':>8s} {'peak (GiB)':>11s} {'autograde (s)':>14s} errors")
    for lesson in chosen:
        run = run_notebook(os.path.join(REPO, "solutions", lesson, f"{lesson}.ipynb"),
                           env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"})
        grade = autograde_seconds(lesson)
        print(f"{lesson:24s} {run.seconds:8.1f} {run.peak_memory_bytes / 2**30:11.2f} "
              f"{grade:14.1f} {len(run.errors)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
