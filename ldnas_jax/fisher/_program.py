"""A model as a flat traced program: what the layer-wise engine reads and re-evaluates.

``apply_fn(params, x)`` is traced once per example shape with :func:`jax.make_jaxpr`, on a
batch of one example. Calls to ``jit``-compiled and rematerialised (``jax.checkpoint``,
``nn.remat``) functions inside it are inlined, so that a parameter can be followed
through the whole model as one list of equations. The program can then be evaluated
again with a zero *probe* added to chosen values (the derivative of the loss with respect
to a probe is the cotangent of that value) and with chosen values returned on the side,
which is how :mod:`ldnas_jax.fisher._layerwise` captures each contraction's input and
output cotangent.

The program's closed-over constants (BatchNorm statistics closed over by
:func:`ldnas_jax.eval_apply_fn`, masks, embeddings held outside ``params``) are kept apart
from its structure: compiled Fisher steps take them as arguments, and are cached on the
program's :attr:`Program.fingerprint`, what the function computes, not which Python object
computes it. A fresh ``lambda`` over the same model therefore reuses the compiled step.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from ldnas_jax._checks import is_traced
from ldnas_jax.xla_cpu import bind_equation, window_max

# jax.extend.core exports DropVar from JAX 0.10 on; older releases (the floor is 0.7) keep it in
# jax._src.core.
_DropVar = getattr(jcore, "DropVar", None) or jax._src.core.DropVar

__all__ = ["Program", "evaluate", "trace_program"]


class Var:
    """A value of the flat program (identity is what matters; the aval is for shapes)."""

    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval

    def __repr__(self) -> str:
        return f"Var({self.aval.str_short()})"


class Lit(NamedTuple):
    """A literal operand, carried by value."""

    val: Any
    aval: Any


class Eqn(NamedTuple):
    """One equation of the flat program: ``outvars = primitive(*invars, **params)``."""

    primitive: Any
    params: dict
    invars: tuple  # Var | Lit
    outvars: tuple  # Var, or None where the result is dropped
    ctx: Any


class Program(NamedTuple):
    """``apply_fn`` traced on one example, with inner ``jit`` calls inlined.

    Attributes:
      eqns: the equations, in evaluation order.
      constvars: the closed-over constants' variables; their values are :attr:`consts`.
      consts: the constants' values when traced (passed as arguments when evaluated).
      leafvars: one variable per leaf of ``params``, in ``jax.tree.leaves`` order.
      xvar: the input, of shape ``(1, *example_shape)``.
      outvar: the logits, ``(1, classes)``.
      treedef: the structure of ``params``.
      leaf_paths: ``keystr`` of every leaf, for messages.
      fingerprint: hashable summary of the computation (program text, constant shapes,
        the identity of custom derivative rules, parameter structure).
      keep_alive: objects whose ``id`` is part of the fingerprint, held so ids stay unique.
    """

    eqns: tuple[Eqn, ...]
    constvars: tuple[Var, ...]
    consts: tuple
    leafvars: tuple[Var, ...]
    xvar: Var
    outvar: Any
    treedef: Any
    leaf_paths: tuple[str, ...]
    fingerprint: Any
    keep_alive: tuple

    @property
    def num_classes(self) -> int:
        return int(self.outvar.aval.shape[-1])


def trace_program(apply_fn: Callable, params: Any, example_x) -> Program:
    """Traces ``apply_fn`` on one example of ``example_x``'s shape (no computation).

    Raises:
      ValueError: ``params`` do not fit ``apply_fn``, or it does not return logits of
        shape ``(batch, classes)``.
      TypeError: ``apply_fn`` fails on ``example_x``'s dtype and works with the
        params' floating dtype (a bfloat16 input for float32 parameters, say).

    Example:
      >>> program = trace_program(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))}, np.ones((5, 3)))
      >>> program.num_classes, [e.primitive.name for e in program.eqns]
      (2, ['dot_general'])
    """
    leaves, treedef = jax.tree.flatten(params)
    structs = [jax.ShapeDtypeStruct(np.shape(l), jnp.result_type(l)) for l in leaves]
    x1 = jax.ShapeDtypeStruct((1, *np.shape(example_x)[1:]), _dtype_of(example_x))
    memo_key = (id(apply_fn), treedef, tuple(structs), x1)
    hit = _TRACES.get(memo_key)
    if hit is not None and hit[0] is apply_fn:  # jit's own rule: same function, same shapes
        _TRACES.move_to_end(memo_key)
        return hit[1]
    try:
        closed, out = jax.make_jaxpr(
            lambda ls, x: apply_fn(treedef.unflatten(ls), x), return_shape=True
        )(structs, x1)
    except Exception as err:  # flax and user code raise many types here; surface one clear error
        first = str(err).splitlines()[0] if str(err) else ""
        mix = _input_dtype_mix(apply_fn, treedef, structs, x1)
        if mix is not None:
            raise TypeError(
                f"x has dtype {x1.dtype} but the params are {mix}, and apply_fn fails on "
                f"that mix ({type(err).__name__}: {first}); cast x to the params' dtype, "
                f"x.astype(jnp.{mix}), or the params to x's"
            ) from err
        raise ValueError(
            f"params do not fit apply_fn for inputs of shape {x1.shape}: "
            f"{type(err).__name__}: {first}"
        ) from err
    if not hasattr(out, "shape") or len(out.shape) != 2:
        raise ValueError(
            f"apply_fn must return logits of shape (batch, classes), got {getattr(out, 'shape', out)}"
        )
    program = _flatten(closed, treedef, params)
    if is_traced(program.consts):
        return program  # apply_fn closes over an enclosing jit's values: valid in that trace only
    _TRACES[memo_key] = (apply_fn, program)  # holds apply_fn: its id stays unique
    while len(_TRACES) > 8:
        _TRACES.popitem(last=False)
    return program


def _input_dtype_mix(apply_fn, treedef, structs, x1):
    """The params' one floating dtype if tracing fails with ``x1``'s dtype and works with it.

    Then the input's dtype, not the parameters, is what ``apply_fn`` refused (a bfloat16
    batch for a float32 convolution, say), and the error should say so.
    """
    floats = {s.dtype for s in structs if jnp.issubdtype(s.dtype, jnp.floating)}
    if len(floats) != 1 or x1.dtype in floats:
        return None
    (dtype,) = floats
    try:
        jax.eval_shape(
            lambda ls, x: apply_fn(treedef.unflatten(ls), x),
            structs,
            jax.ShapeDtypeStruct(x1.shape, dtype),
        )
    except Exception:  # noqa: BLE001  it fails either way: the dtype is not the problem
        return None
    return dtype


_TRACES: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
# Calls whose body computes the same values inlined: jit, and remat (whose policy only
# decides what is stored for the backward pass, which the engines arrange themselves).
_INLINED = ("jit", "pjit", "checkpoint", "remat", "remat2")
# A ``custom_vjp`` whose backward function carries this attribute, set to True, computes
# exactly the derivative of its primal body, only faster (the search space's depthwise
# convolution and max pooling): its body is inlined, so that the layer-wise plan sees the
# layer inside. Any other ``custom_vjp`` stays one equation, its rule honoured.
SAME_DERIVATIVE_AS_BODY = "same_derivative_as_body"


def _inlined_body(eqn):
    """The closed body of a call the program inlines, or None."""
    if eqn.primitive.name in _INLINED and "jaxpr" in eqn.params:
        return eqn.params["jaxpr"]
    if eqn.primitive.name == "custom_vjp_call" and "call_jaxpr" in eqn.params:
        rules = _rule_functions(eqn.params.get("bwd"), 0, set())
        if any(getattr(rule, SAME_DERIVATIVE_AS_BODY, False) is True for rule in rules):
            return eqn.params["call_jaxpr"]
    return None


def _dtype_of(x):
    """The dtype JAX computes ``x`` in: NumPy's float64 is float32 unless x64 is enabled
    (jax >= 0.11 warns when a ShapeDtypeStruct asks for a dtype it will truncate)."""
    dtype = getattr(x, "dtype", None)
    return jax.dtypes.canonicalize_dtype(dtype if dtype is not None else np.asarray(x).dtype)


def _flatten(closed, treedef, params) -> Program:
    eqns: list[Eqn] = []
    constvars = [Var(v.aval) for v in closed.jaxpr.constvars]
    consts = list(closed.consts)
    invars = [Var(v.aval) for v in closed.jaxpr.invars]

    def inline(jaxpr, const_atoms, in_atoms):
        env: dict = {}

        def read(v):
            return Lit(v.val, v.aval) if isinstance(v, jcore.Literal) else env[v]

        env.update(zip(jaxpr.constvars, const_atoms))
        env.update(zip(jaxpr.invars, in_atoms))
        for eqn in jaxpr.eqns:
            ins = tuple(read(v) for v in eqn.invars)
            inner = _inlined_body(eqn)
            if inner is not None:
                if not isinstance(inner, jcore.ClosedJaxpr):  # remat's body: an open jaxpr
                    inner = jcore.ClosedJaxpr(inner, ())
                inner_consts = []
                for c in inner.consts:
                    var = Var(jax.typeof(c) if hasattr(jax, "typeof") else jcore.get_aval(c))
                    constvars.append(var)
                    consts.append(c)
                    inner_consts.append(var)
                outs = inline(inner.jaxpr, inner_consts, ins)
            else:
                outs = tuple(None if isinstance(v, _DropVar) else Var(v.aval) for v in eqn.outvars)
                eqns.append(Eqn(eqn.primitive, eqn.params, ins, outs, eqn.ctx))
            for v, atom in zip(eqn.outvars, outs):
                if not isinstance(v, _DropVar):
                    env[v] = atom
        return tuple(read(v) for v in jaxpr.outvars)

    (outvar,) = inline(closed.jaxpr, constvars[: len(closed.consts)], invars)
    keep_alive: list = []
    fingerprint = (
        str(closed.jaxpr),
        tuple((np.shape(c), str(jnp.result_type(c))) for c in consts),
        treedef,
        _rule_identities(closed.jaxpr, keep_alive),
    )
    paths = tuple(
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    )
    return Program(
        tuple(eqns),
        tuple(constvars),
        tuple(consts),
        tuple(invars[:-1]),
        invars[-1],
        outvar,
        treedef,
        paths,
        fingerprint,
        tuple(keep_alive),
    )


# ---- what the program text does not say: custom derivative rules ------------------------------


def _rule_identities(jaxpr, keep_alive: list) -> tuple:
    """Identities of the custom derivative rules and callbacks the program calls.

    The program text names a ``custom_jvp`` function and prints its primal body, but not
    its derivative rule. The rule functions are found behind the equation's parameters
    and identified by object; where none can be found a fresh object stands in, so that
    the program never matches another one (it is then compiled again, as before).
    """
    found = []
    for eqn in _all_eqns(jaxpr):
        callables = [v for _, v in sorted(eqn.params.items()) if _is_rule(v)]
        if not callables:
            continue
        rules = []
        for value in callables:
            rules += _rule_functions(value, 0, set())
        if not rules:
            rules = [object()]
        keep_alive.extend(rules)
        found.append((eqn.primitive.name, tuple(id(r) for r in rules)))
    return tuple(found)


def _is_rule(value) -> bool:
    """Whether an equation parameter is code (a rule, a callback), not a value or a jaxpr."""
    if isinstance(
        value,
        (type, jcore.ClosedJaxpr, jcore.Jaxpr, jax.sharding.Mesh, jax.sharding.AbstractMesh),
    ):
        return False
    if isinstance(value, jax.sharding.Sharding):
        return False
    if hasattr(value, "f") and hasattr(value, "transforms"):  # a linear_util.WrappedFun
        return True
    return callable(value)


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", None)
                if isinstance(sub, jcore.Jaxpr):
                    inner = sub
                elif inner is not None and not isinstance(inner, jcore.Jaxpr):
                    inner = getattr(inner, "jaxpr", None)
                if isinstance(inner, jcore.Jaxpr):
                    yield from _all_eqns(inner)


def _rule_functions(value, depth: int, seen: set) -> list:
    """Python functions wrapped (``.f``) inside ``value``, skipping per-trace memo wrappers."""
    if id(value) in seen or depth > 6:
        return []
    seen.add(id(value))
    out = []
    wrapped = getattr(value, "f", None)
    if wrapped is not None and hasattr(value, "transforms"):  # a linear_util.WrappedFun
        if not getattr(wrapped, "__qualname__", "").startswith("_memoize."):
            out.append(wrapped)
        out += _rule_functions(wrapped, depth + 1, seen)
    elif inspect.isfunction(value):
        for cell in value.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            out += _rule_functions(contents, depth + 1, seen)
    return out


# ---- evaluation ------------------------------------------------------------------------------


Rewrite = Callable[[Eqn, list], "list | None"]


def evaluate(
    program: Program,
    consts: Sequence,
    leaves: Sequence,
    x,
    *,
    probes: dict | None = None,
    capture: Sequence[Var] = (),
    rewrite: Rewrite | None = None,
):
    """Evaluates the program: ``(logits, [values of capture])``.

    Args:
      program: the traced program.
      consts: values for ``program.constvars`` (``program.consts`` or same-shaped ones).
      leaves: values for the parameter leaves.
      x: the input, of the traced shape.
      probes: ``{var: array}`` added to a variable's value right after it is computed.
      capture: variables whose values are returned on the side.
      rewrite: ``rewrite(eqn, invals)`` returns the outputs of an equation computed
        another (equivalent) way, or None to evaluate it as traced.

    Example:
      >>> program = trace_program(lambda p, x: x @ p, jnp.eye(2), np.ones((1, 2)))
      >>> logits, _ = evaluate(program, program.consts, [2 * jnp.eye(2)], jnp.ones((1, 2)))
      >>> logits.tolist()
      [[2.0, 2.0]]
    """
    env: dict = dict(zip(program.constvars, consts))
    env.update(zip(program.leafvars, leaves))
    env[program.xvar] = x
    probes = probes or {}

    def read(atom):
        return atom.val if isinstance(atom, Lit) else env[atom]

    for eqn in program.eqns:
        invals = [read(a) for a in eqn.invars]
        outvals = rewrite(eqn, invals) if rewrite is not None else None
        if outvals is None:
            outvals = bind_equation(eqn, invals)
        for var, value in zip(eqn.outvars, outvals):
            if var is None:
                continue
            env[var] = value + probes[var] if var in probes else value
    return read(program.outvar), [read(v) for v in capture]


def tiled_pooling_rewrite(eqn: Eqn, invals: list):
    """Max pooling whose windows tile its input, through :func:`ldnas_jax.xla_cpu.window_max`.

    Its derivative is a mask on each window's first maximum, the element XLA's
    ``select_and_scatter`` picks too, without that operation's cost on CPU.
    """
    if eqn.primitive is not lax.reduce_window_max_p:
        return None
    p = eqn.params
    window = tuple(p["window_dimensions"])
    tiles = (
        tuple(p["window_strides"]) == window
        and all(tuple(pad) == (0, 0) for pad in p["padding"])
        and all(d == 1 for d in p["base_dilation"])
        and all(d == 1 for d in p["window_dilation"])
    )
    return [window_max(invals[0], window)] if tiles else None
