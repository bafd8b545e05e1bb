"""robustlab is built in floors, and each module imports only from its own
floor or the floors below it; no import cycle exists, and no import of a
robustlab module hides inside a function (where it would dodge a cycle).

The imports are read from the source with `ast` (top-level and inside
functions), so the modules of both backends are checked whichever backend
runs the tests. A new module must be given a floor here.
"""

import ast
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "robustlab"

# Lowest first. Modules of a package that are not listed (the backend
# packages' modules, the callbacks) take their package's floor.
FLOORS = [
    # Foundations: no robustlab import above them.
    ("robustlab._version", "robustlab.validation", "robustlab.summary_statistics",
     "robustlab.progress", "robustlab._keras_compat", "robustlab.backend"),
    # Mathematics on NumPy arrays and the model-level pieces.
    ("robustlab.spectral", "robustlab.heavy_ball", "robustlab.iterate_statistics",
     "robustlab.posterior", "robustlab.bounds", "robustlab.schedules",
     "robustlab.model_validation", "robustlab.losses", "robustlab.shuffling",
     "robustlab.awp", "robustlab.data", "robustlab.models", "robustlab.run_checkpoint",
     "robustlab.plots", "robustlab.provenance"),
    # What acts on a model: attacks and the Hessian operator.
    ("robustlab.attacks", "robustlab.curvature"),
    # Training.
    ("robustlab.training_guards", "robustlab.iterate_observers", "robustlab.adversarial"),
    # Instruments observing a training run.
    ("robustlab.callbacks",),
    # Experiments built from all of the above.
    ("robustlab.forks", "robustlab.experiments"),
    ("robustlab.studies",),
    # Entry points.
    ("robustlab.cli", "robustlab.course"),
    ("robustlab",),
]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module):
    """The floor of `module`: its own, or the nearest listed package's."""
    name = module
    while name:
        for level, members in enumerate(FLOORS):
            if name in members:
                return level
        name = name.rpartition(".")[0]
    return None


def _imported_module(node_module, alias):
    """The robustlab module an import refers to (`from robustlab import x`
    imports the module `robustlab.x` when there is one)."""
    candidate = f"{node_module}.{alias}"
    return candidate if candidate in MODULES else node_module


def robustlab_imports(path):
    """`[(module imported, is at the top level)]` of one source file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [_imported_module(node.module, a.name) for a in node.names]
        else:
            continue
        found += [(n, id(node) in top_level) for n in names
                  if n == "robustlab" or n.startswith("robustlab.")]
    return found


@functools.lru_cache(maxsize=None)
def import_graph():
    return {module: sorted({m for m, _ in robustlab_imports(path)} - {module})
            for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_floor(module):
    assert floor_of(module) is not None, f"give {module} a floor in FLOORS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_floor_and_below(module):
    above = [m for m in import_graph()[module] if floor_of(m) > floor_of(module)]
    assert not above, f"{module} (floor {floor_of(module)}) imports {above} from above"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_robustlab_import_hides_in_a_function(module):
    hidden = [m for m, top in robustlab_imports(MODULES[module]) if not top]
    assert not hidden, f"{module} imports {hidden} inside a function"


def test_there_is_no_import_cycle():
    graph = import_graph()
    # The backend packages choose their implementation by name at run time
    # (robustlab.backend.get), which is not an import edge.
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for imported in graph.get(module, []):
            if state.get(imported) == "open":
                cycle = trail[trail.index(imported):] + [imported]
                pytest.fail(" -> ".join(cycle))
            if imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checks_see_a_cycle_and_a_hidden_import(tmp_path):
    # The reader of imports must find what the tests forbid.
    source = tmp_path / "m.py"
    source.write_text("import robustlab.attacks\n\ndef f():\n    from robustlab import curvature\n")
    assert robustlab_imports(source) == [("robustlab.attacks", True),
                                         ("robustlab.curvature", False)]
