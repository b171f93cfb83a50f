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


def primitive_count(fn, *args, name: str) -> int:
    """How many equations of ``fn``'s jaxpr, nested ones included, apply primitive ``name``."""

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += eqn.primitive.name == name
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple) else (value,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        total += count(getattr(inner, "jaxpr", inner))
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)
