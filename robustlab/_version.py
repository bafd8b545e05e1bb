"""The package's version, in a module of its own so that the modules that
record it in their outputs need not import the package they are part of."""

__all__ = [
    "__version__",
]

__version__ = "0.1.0"
