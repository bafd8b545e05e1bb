"""Every public module of robustlab declares its public names in `__all__`:
exactly the names it defines without a leading underscore, plus those it
re-exports from another robustlab module that declares them itself (read
from the source with `ast`, so the modules of both backends are checked
whichever backend runs the tests)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "robustlab"
MODULES = sorted(
    p for p in PACKAGE.rglob("*.py")
    if not any(part.startswith("_") and part != "__init__.py"
               for part in p.relative_to(PACKAGE).parts)
)


def _defined_public_names(tree):
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def _declared(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _imported_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _module_path(dotted):
    """The source of robustlab module `dotted` (None outside robustlab)."""
    parts = dotted.split(".")
    if parts[0] != "robustlab":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _reexportable_names(tree):
    """Names imported from robustlab modules whose own `__all__` lists them."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            source = _module_path(node.module)
            if source is None:
                continue
            declared_there = _declared(ast.parse(source.read_text())) or []
            names |= {a.asname or a.name for a in node.names
                      if a.name in declared_there and (a.asname or a.name) == a.name}
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_public_module_declares_what_it_defines(path):
    tree = ast.parse(path.read_text())
    declared = _declared(tree)
    assert declared is not None, f"{path.name} has no __all__"
    assert len(declared) == len(set(declared)), "a name is listed twice"
    # A package's __init__ re-exports what it imports; a module lists what
    # it defines, and may re-export, under the same name, what another
    # robustlab module declares (an entry point over modules split by
    # concept, as robustlab.posterior is).
    available = _defined_public_names(tree) | (
        _imported_names(tree) if path.name == "__init__.py" else set())
    assert set(declared) <= available | _reexportable_names(tree), (
        set(declared) - available - _reexportable_names(tree))
    if path.name != "__init__.py":
        assert _defined_public_names(tree) <= set(declared), (
            _defined_public_names(tree) - set(declared))
