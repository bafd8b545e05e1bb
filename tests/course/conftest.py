"""Shared pieces of the course tests: the lessons, a scratch copy of the
course, nbgrader run as an instructor runs it, and the gradebook's scores."""

import ast
import builtins
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


# Names a notebook's kernel has without defining them.
KERNEL_NAMES = set(dir(builtins)) | {"display", "get_ipython", "In", "Out"}
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SCOPES = _DEFINITIONS + (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _inside_scopes(node):
    """The nodes within the functions, lambdas, classes and comprehensions of
    `node` (`node` itself included, if it is one): code that runs later, or
    only for some inputs, with names of its own."""
    return {id(inner) for scope in ast.walk(node) if isinstance(scope, _SCOPES)
            for inner in ast.walk(scope)}


def _loads(nodes):
    """The names that `nodes` may read from the notebook's globals; what a
    function reads counts where the function is defined."""
    loads, own = set(), set()
    for node in nodes:
        loads |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for scope in (n for n in ast.walk(node) if isinstance(n, _SCOPES)):
            own |= {n.arg for n in ast.walk(scope) if isinstance(n, ast.arg)}
            own |= {n.id for n in ast.walk(scope) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
            own |= {n.name for n in ast.walk(scope) if isinstance(n, _DEFINITIONS) and n is not scope}
    return loads - own


def _stores(nodes):
    """The global names that executing `nodes` binds."""
    stores = set()

    def visit(node):
        if isinstance(node, _DEFINITIONS):
            stores.add(node.name)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            stores.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stores.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        if not isinstance(node, _SCOPES):
            for child in ast.iter_child_nodes(node):
                visit(child)

    for node in nodes:
        visit(node)
    return stores


def _calls_surely(nodes, callables):
    """Whether evaluating `nodes` calls one of `callables` for certain (a call
    outside any function, lambda or comprehension)."""
    for node in nodes:
        later = _inside_scopes(node)
        if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in callables
               and id(n) not in later for n in ast.walk(node)):
            return True
    return False


def _parts(statement):
    """(what a statement evaluates itself, the blocks of statements it holds)."""
    if isinstance(statement, (ast.For, ast.AsyncFor)):
        return [statement.target, statement.iter], [statement.body, statement.orelse]
    if isinstance(statement, (ast.While, ast.If)):
        return [statement.test], [statement.body, statement.orelse]
    if isinstance(statement, (ast.With, ast.AsyncWith)):
        return list(statement.items), [statement.body]
    if isinstance(statement, ast.Try):
        blocks = [statement.body, statement.orelse, statement.finalbody]
        for handler in statement.handlers:
            bound = [ast.Name(handler.name, ast.Store())] if handler.name else []
            blocks.append([ast.Expr(handler.type)] if handler.type else [])
            blocks.append(bound and [ast.Assign(bound, ast.Constant(None))])
            blocks.append(handler.body)
        return [], blocks
    return [statement], []


def unready_names(notebook):
    """What the ungraded cells of `notebook` read that may not exist while the
    exercises are unwritten (their stubs raise NotImplementedError), as
    `[(cell index, name, why)]`.

    A name is ready when an earlier ungraded cell binds it *before* that cell
    first calls an exercise (or a helper of the notebook that calls one), or
    when the cell reading it has certainly called an exercise before (then the
    stub's NotImplementedError comes first, not a NameError). Test cells bind
    nothing (in the release they fail at once); an exercise's cell binds only
    the exercise."""
    exercises, callables = set(), set()   # callables: the exercises and the helpers calling them
    ready, late = set(), {}               # late: name -> the cell that binds it after a call
    problems = []
    for index, cell in enumerate(notebook.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        if meta.get("solution"):
            exercises.add(meta["grade_id"])
            callables.add(meta["grade_id"])
            ready.add(meta["grade_id"])
            continue
        here = set()
        called = False

        def walk(statements, guarded):
            nonlocal called
            for statement in statements:
                definition = isinstance(statement, _DEFINITIONS)
                evaluated, blocks = ([statement], []) if definition else _parts(statement)
                for name in sorted(_loads(evaluated) - here - ready - KERNEL_NAMES):
                    if not guarded and (index, name) not in {p[:2] for p in problems}:
                        problems.append((index, name, f"cell {late[name]} binds it only after calling an "
                                                      "exercise" if name in late else "no earlier cell binds it"))
                calls = bool(_loads(evaluated) & callables)
                if definition and calls:
                    callables.add(statement.name)
                called = called or (calls and not definition)
                for name in _stores(evaluated):
                    here.add(name)
                    if called:
                        late.setdefault(name, index)
                    else:
                        ready.add(name)
                for block in blocks:
                    walk(block, guarded)
                guarded = guarded or _calls_surely(evaluated, callables)

        walk(ast.parse(cell.source).body, False)
    return problems


def names_test_cells_rebind(notebook):
    """The names a test cell binds that a later cell reads from the
    notebook's globals, as `[(test cell index, name, reading cell index)]`.

    A student goes back, fixes an exercise and runs its test cell again: a
    test binding `x` then hands its toy array to the later cell that attacks
    `x`, the lesson's digits, which fails with an error that says nothing of
    the test."""
    tests, found = [], []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        body = ast.parse(cell.source).body
        if meta.get("grade") and not meta.get("solution"):
            tests.append((index, _stores(body)))
            continue
        reads = _loads(body) - _stores(body) - KERNEL_NAMES
        found += [(test, name, index) for test, bound in tests for name in sorted(bound & reads)]
    return found


def _draws(statement):
    """Whether a top-level statement shows a figure: `plt.show()` or an explorer's `.widget()`."""
    call = statement.value if isinstance(statement, ast.Expr) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and (call.func.attr == "widget"
                 or (call.func.attr == "show" and isinstance(call.func.value, ast.Name)
                     and call.func.value.id == "plt")))


def _begins_figure(statement):
    """Whether a top-level statement makes a new figure (plt.subplots, plt.figure,
    or a figure made by robustlab.plots)."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "plt" and node.func.attr in ("subplots", "figure"):
                return True
            if (isinstance(statement, ast.Assign) and isinstance(owner, ast.Attribute)
                    and isinstance(owner.value, ast.Name) and owner.value.id == "robustlab"
                    and owner.attr == "plots"):
                return True
    return False


def _changed(statement):
    """The global names a statement binds or changes (`d[k] = ...` changes d)."""
    changed = _stores([statement])
    later = _inside_scopes(statement) if not isinstance(statement, _DEFINITIONS) else set()
    for node in ast.walk(statement):
        if id(node) in later or not isinstance(node, (ast.Subscript, ast.Attribute)):
            continue
        if isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                changed.add(base.id)
    return changed


def figures_waiting_for_an_exercise(notebook):
    """The figures and explorers of the ungraded cells that use nothing an
    exercise computed, yet come after the cell's first call to an exercise
    (so the release, whose stub raises there, never shows them), as
    `[(cell index, line of the plt.show() or .widget())]`.

    What a call to an exercise returns, and whatever a statement computes
    from it, counts as the exercise's, statement by statement in the cell."""
    exercises = _exercise_names(notebook)
    waiting = []
    for index, cell in enumerate(notebook.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("solution") or meta.get("grade"):
            continue
        derived = set(exercises)   # names holding what an exercise computed
        called, figure = False, []
        for statement in ast.parse(cell.source).body:
            if _begins_figure(statement):
                figure = []
            uses_exercise = bool(_loads([statement]) & derived)
            figure.append(uses_exercise)
            if uses_exercise:
                derived |= _changed(statement)
            called = called or uses_exercise
            if _draws(statement):
                if called and not any(figure):
                    waiting.append((index, statement.lineno))
                figure = []
    return waiting


def _exercise_names(notebook):
    """The grade ids of the notebook's solution cells: the exercises' names."""
    return {c.metadata["nbgrader"]["grade_id"] for c in notebook.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def trainings_before_an_exercise(notebook):
    """The ungraded cells that train (call a `.fit`) before they first call an
    exercise, as `[(cell index, line of the fit, line of the exercise)]`: in
    the release such a cell trains, then fails at the stub."""
    exercises = _exercise_names(notebook)
    late = []
    for index, cell in enumerate(notebook.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("solution") or meta.get("grade"):
            continue
        tree = ast.parse(cell.source)
        defined_later = set().union(*(_inside_scopes(s) for s in tree.body if isinstance(s, _DEFINITIONS)))
        nodes = [n for n in ast.walk(tree) if id(n) not in defined_later]
        fits = [(n.lineno, n.col_offset) for n in nodes if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr == "fit"]
        calls = [(n.lineno, n.col_offset) for n in nodes if isinstance(n, ast.Name) and n.id in exercises]
        if fits and calls and min(fits) < min(calls):
            late.append((index, min(fits)[0], min(calls)[0]))
    return late


def exercise_free_cells(notebook):
    """The indices of the ungraded code cells that call no exercise, not even
    inside a function or lambda (with `unready_names` empty, such a cell runs
    in the untouched release as it runs in the solutions)."""
    exercises = _exercise_names(notebook)
    return [index for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and not cell.metadata.get("nbgrader", {}).get("solution")
            and not cell.metadata.get("nbgrader", {}).get("grade")
            and not _loads([ast.parse(cell.source)]) & exercises]


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
