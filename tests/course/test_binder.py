"""The Binder environment, built as repo2docker builds it but without Docker:
a fresh virtual environment, `pip install -r binder/requirements.txt` from
the repository's root, `binder/postBuild`, and lesson 00 executed there in
the environment `binder/start` sets; of the other lessons, every import and
every reference result they read.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.course.conftest import LESSONS
from tests.course.conftest import REPO
from tests.course.conftest import cell_by_grade_id
from tests.course.conftest import notebook_path
from tests.course.conftest import read

# Building the environment starts no kernel: it runs in a worker of its own
# (the xdist group "binder") while the "kernels" worker runs the round trip;
# only the tests that execute a lesson join the kernels (see
# test_round_trip.py), after the round trip (tests/course/conftest.py orders
# them), by when the environment is built.
# (pytest-xdist joins the names of several groups into a new one: each test
# gets exactly one.)
pytestmark = [pytest.mark.course]
BUILDS_OR_READS = pytest.mark.xdist_group("binder")
STARTS_A_KERNEL = pytest.mark.xdist_group("kernels")

IGNORED = shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info",
                                 "build", "dist", ".pytest_cache", ".hypothesis",
                                 "submitted", "autograded", "feedback", "gradebook.db")


def _run(command, cwd, env=None, timeout=1800):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def binder_env(tmp_path_factory):
    # One build for the whole run: under pytest-xdist the workers share the
    # parent of their temporary folders, and the first to get here builds
    # the environment there while any other waits on the lock.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    with open(shared / "binder.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = shared / "binder"
        if not (work / "built.json").exists():
            if work.exists():
                shutil.rmtree(work)  # a build that failed half-way
            work.mkdir()
            env = _build_binder_env(work)
            (work / "built.json").write_text(json.dumps(env))
        env = json.loads((work / "built.json").read_text())
    return dict(repo=work / "repo", bin=work / "venv" / "bin", env=env)


def _build_binder_env(work):
    repo = work / "repo"
    shutil.copytree(REPO, repo, ignore=IGNORED)
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    bin_dir = venv / "bin"
    # Without PYTEST_CURRENT_TEST too: ipykernel does not copy what a kernel
    # writes to its file descriptors into the notebook when it sees that
    # variable, and a student's kernel does.
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "KERAS_BACKEND", "PYTEST_CURRENT_TEST")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    _run([str(bin_dir / "pip"), "install", "-q", "-r", "binder/requirements.txt"], cwd=repo,
         env=env)
    _run(["bash", "binder/postBuild"], cwd=repo, env=env)
    # binder/start's environment.
    started = _run(["bash", "binder/start", "env"], cwd=repo, env=env).stdout
    env.update(line.split("=", 1) for line in started.splitlines()
               if line.startswith(("KERAS_BACKEND=", "TF_CPP_MIN_LOG_LEVEL=")))
    return env


@BUILDS_OR_READS
def test_the_pins_are_what_got_installed(binder_env):
    frozen = _run([str(binder_env["bin"] / "pip"), "freeze"], cwd=binder_env["repo"],
                  env=binder_env["env"]).stdout.lower().splitlines()
    with open(os.path.join(REPO, "binder", "requirements.txt")) as f:
        pins = [line.split("#")[0].strip() for line in f]
    for pin in (p for p in pins if "==" in p):
        name, version = pin.lower().split("==")
        assert any(line.replace("_", "-").startswith(f"{name.replace('_', '-')}=={version}")
                   for line in frozen), f"{pin} was not installed: {frozen}"


@BUILDS_OR_READS
def test_students_keep_validate_and_not_the_instructors_tools(binder_env):
    listed = _run([str(binder_env["bin"] / "jupyter"), "labextension", "list"],
                  cwd=binder_env["repo"], env=binder_env["env"])
    text = listed.stdout + listed.stderr
    assert "@jupyter/nbgrader:formgrader" in text and "@jupyter/nbgrader:validate-assignment" not in text
    servers = _run([str(binder_env["bin"] / "jupyter"), "server", "extension", "list"],
                   cwd=binder_env["repo"], env=binder_env["env"])
    text = servers.stdout + servers.stderr
    assert "nbgrader.server_extensions.validate_assignment \x1b[32menabled" in text or \
        "nbgrader.server_extensions.validate_assignment enabled" in text
    assert "formgrader \x1b[31mdisabled" in text or "formgrader disabled" in text


def _run_lesson(binder_env, lesson):
    """Execute `lesson`'s solution with the Binder install's Python, from
    outside the repository (so that `robustlab` is the installed copy)."""
    notebook = binder_env["repo"] / "solutions" / lesson / f"{lesson}.ipynb"
    script = (
        "import json, sys\n"
        "from robustlab.course.execution import run_notebook\n"
        "import keras, robustlab\n"
        f"run = run_notebook({str(notebook)!r}, env={{}})\n"
        "stderr = [o.get('text', '') for c in run.notebook.cells if c.cell_type == 'code'\n"
        "          for o in c.get('outputs', []) if o.get('name') == 'stderr']\n"
        "print(json.dumps({'errors': run.errors, 'seconds': run.seconds,\n"
        "                  'peak': run.peak_memory_bytes, 'robustlab': robustlab.__file__,\n"
        "                  'backend': keras.backend.backend(), 'stderr': stderr}))\n"
    )
    out = _run([str(binder_env["bin"] / "python"), "-c", script],
               cwd=binder_env["repo"].parent, env=binder_env["env"]).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lesson_00(binder_env):
    return _run_lesson(binder_env, "00_pgd")


@STARTS_A_KERNEL
def test_lesson_00_runs_in_the_binder_environment(binder_env, lesson_00):
    assert lesson_00["errors"] == []
    assert lesson_00["backend"] == "tensorflow"
    assert str(binder_env["bin"].parent) in lesson_00["robustlab"]  # the installed copy
    assert 0 < lesson_00["peak"] <= 1.5 * 2**30


@STARTS_A_KERNEL
def test_tensorflows_start_up_lines_stay_out_of_the_lesson(lesson_00):
    # TensorFlow writes them to the process's stderr while it loads, before
    # TF_CPP_MIN_LOG_LEVEL applies; binder/postBuild keeps the kernel from
    # copying that into the notebook.
    shown = "".join(lesson_00["stderr"])
    assert "absl::InitializeLog" not in shown and "I0000" not in shown, shown


@BUILDS_OR_READS
def test_every_other_lesson_starts_in_the_binder_environment(binder_env):
    # The other lessons run in full in the round trip (test_round_trip.py),
    # in the test environment (the same versions, installed from this
    # checkout). What only the Binder install can get wrong is what it
    # installed: here each lesson's setup cell runs (every import), and every
    # reference result a lesson reads loads from the installed package data.
    others = [lesson for lesson in LESSONS if lesson != "00_pgd"]
    setups, studies = {}, set()
    for lesson in others:
        notebook = read(notebook_path(binder_env["repo"], "solutions", lesson))
        setups[lesson] = cell_by_grade_id(notebook, "setup").source
        studies.update(re.findall(r'reference\("([a-z-]+)"\)',
                                  "".join(cell.source for cell in notebook.cells)))
    assert studies, "no lesson reads a reference result: update this test"
    script = (
        "import json, os, sys, traceback\n"
        "import matplotlib\n"
        "matplotlib.use('agg')\n"
        f"setups, studies = {setups!r}, {sorted(studies)!r}\n"
        "errors, seeds = {}, {}\n"
        "for lesson, source in setups.items():\n"
        "    try:\n"
        "        exec(compile(source, lesson, 'exec'), {})\n"
        "    except Exception:\n"
        "        errors[lesson] = traceback.format_exc()\n"
        "import robustlab.studies\n"
        "for name in studies:\n"
        "    results = robustlab.studies.reference(name)\n"
        "    seeds[name] = [len(results.runs(arm.experiment)) for arm in results.study.arms]\n"
        "print(json.dumps({'errors': errors, 'seeds': seeds, 'robustlab': robustlab.__file__}))\n"
    )
    out = _run([str(binder_env["bin"] / "python"), "-c", script],
               cwd=binder_env["repo"].parent, env=binder_env["env"]).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert str(binder_env["bin"].parent) in result["robustlab"]  # the installed copy
    assert sorted(result["seeds"]) == sorted(studies)
    assert all(n and min(n) >= 4 for n in result["seeds"].values()), result["seeds"]
