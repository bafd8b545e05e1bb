"""The scripts under `benchmarks/` imported by path (they are not a
package), for the tests that check what a benchmark computes."""

import importlib.util
import pathlib

BENCHMARKS = pathlib.Path(__file__).parent.parent / "benchmarks"


def load(name):
    """The module `benchmarks/<name>.py`, executed afresh."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
