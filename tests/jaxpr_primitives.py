"""What a JAX function's program computes: its equations, and the names of
their primitives."""

import jax


def equations(fn, *args):
    """Every equation of `fn`'s jaxpr at `args`, those nested in other
    primitives (a `jit`, a `custom_jvp`, a loop's body) included, outer ones
    first."""

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for value in eqn.params.values():
                for inner in value if isinstance(value, (tuple, list)) else [value]:
                    inner = getattr(inner, "jaxpr", inner)
                    if hasattr(inner, "eqns"):
                        yield from visit(inner)

    return list(visit(jax.make_jaxpr(fn)(*args).jaxpr))


def primitives(fn, *args):
    """The names of the primitives in `fn`'s jaxpr at `args`, nested ones
    included (as `equations`)."""
    return {eqn.primitive.name for eqn in equations(fn, *args)}
