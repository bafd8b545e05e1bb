"""What a JAX function's program computes: the names of its primitives."""

import jax


def primitives(fn, *args):
    """The names of the primitives in `fn`'s jaxpr at `args`, those nested in
    other primitives (a `jit`, a `custom_jvp`, a loop's branches) included."""
    names = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for inner in value if isinstance(value, (tuple, list)) else [value]:
                    inner = getattr(inner, "jaxpr", inner)
                    if hasattr(inner, "eqns"):
                        visit(inner)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return names
