"""What a traced function compiles to: the primitives of its jaxpr, nested ones included."""

import jax


def primitive_names(fn, *args) -> set[str]:
    """Names of every primitive in ``fn``'s jaxpr at ``args``, inside jit, scan or cond bodies too."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple) else (value,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        walk(getattr(inner, "jaxpr", inner))

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names
