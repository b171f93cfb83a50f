"""Which parameter leaf takes which route, read from the traced program.

Every parameter leaf is followed through the program (:mod:`ldnas_jax.fisher._program`)
along the operations that only move, cast or rescale its entries: ``reshape``,
``transpose``, ``convert_element_type``, ``squeeze``, ``broadcast_in_dim``, ``slice``,
``rev``, ``pad``, ``concatenate``, ``split`` and ``unstack`` (jax >= 0.11 iterates over an
array with it), and a product or quotient by a constant (a mask, a
frozen BatchNorm variance). Each entry's path is tracked as an integer index, so it is
known exactly where every entry of the leaf ends up. The path must end in

* a contraction, ``dot_general`` or ``conv_general_dilated`` (as its kernel): the leaf's
  per-example gradient is the captured input times the output cotangent (route
  ``dense`` / ``conv``);
* a sum ``add`` / ``sub`` with any activation (route ``bias``) or a product ``mul`` with
  an activation (route ``scale``): its per-example gradient is the output cotangent
  (times the other factor) summed along the axes the leaf is broadcast over;
* or an operation through which no gradient flows (``stop_gradient``, integer results):
  no Fisher.

A leaf is placed when every path ends that way and no entry reaches two ends (a weight
used twice has a per-example gradient that is a sum the identities cannot split). Every
other leaf (a weight used twice or tied, a leaf inside ``scan``, ``remat``, a custom
derivative, an embedding ``gather``...) is computed by per-example ``vjp``:
:meth:`LayerwisePlan.describe` says which and why.
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ldnas_jax.fisher._contraction import contraction_layout
from ldnas_jax.fisher._program import Lit, Program, Var, trace_program
from ldnas_jax.fisher._squares import contraction_route

__all__ = ["LayerwisePlan", "LeafRoute", "Site", "layerwise_plan", "plan_program"]


class Site(NamedTuple):
    """One place where a parameter leaf's gradient is read.

    Attributes:
      kind: ``"dense"``, ``"conv"``, ``"bias"`` or ``"scale"``.
      leaf: index of the leaf in ``jax.tree.leaves(params)``.
      eqn: index of the equation (contraction, sum or product) in the program.
      operand: which operand of it carries the leaf.
      probe: the variable whose cotangent is the equation's output cotangent.
      capture: the other operand (a contraction's input, a product's other factor), or None.
      chain: ``(equation, operand, output)`` steps from the leaf to the operand, for the
        constant factor of a scaled path.
      scaled: whether the path multiplies or divides by a constant.
      reduce_axes: for ``bias`` / ``scale``, output axes the leaf is broadcast along.
      shape: shape of the site's sums of squares (the operand's, reduced).
    """

    kind: str
    leaf: int
    eqn: int
    operand: int
    probe: Var
    capture: Var | Lit | None
    chain: tuple
    scaled: bool
    reduce_axes: tuple[int, ...]
    shape: tuple[int, ...]


class LeafRoute(NamedTuple):
    """How one leaf's Fisher is computed: ``route`` is ``"layer-wise"``, ``"none"`` or ``"vmap"``."""

    path: str
    route: str
    detail: str


class LayerwisePlan(NamedTuple):
    """How the layer-wise engine splits a model's parameters.

    Attributes:
      sites: where placed leaves' gradients are read, in program order.
      fallback: indices of the leaves computed by per-example ``vjp``.
      leaf_paths: the ``keystr`` path of every leaf.
      reasons: ``{leaf path: why it is computed by vjp}``.
      routes: one :class:`LeafRoute` per leaf.
      gathers: per leaf, ``(site indices, src)``: the leaf's squares are
        ``concat(site squares, [0])[src]``, or a reshape of its one site's where ``src`` is None;
        None for a fallback leaf or a leaf with no gradient.
    """

    sites: tuple[Site, ...]
    fallback: tuple[int, ...]
    leaf_paths: tuple[str, ...]
    reasons: dict[str, str]
    routes: tuple[LeafRoute, ...]
    gathers: tuple

    @property
    def layers(self) -> tuple[Site, ...]:
        """The contraction sites (``dense`` and ``conv``), in program order."""
        return tuple(s for s in self.sites if s.kind in ("dense", "conv"))

    def describe(self) -> str:
        """Which leaf takes which route, and why a leaf is left to vmap.

        Example:
          >>> plan = layerwise_plan(lambda p, x: x @ p["w"] + p["b"][None],
          ...                       {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, np.ones((4, 3)))
          >>> print(plan.describe())
          layer-wise: 2 of 2 parameter leaves
            ['b']  bias   added, summed over 1 position(s)
            ['w']  dense  dot_general kernel (3, 2), 1 position(s): (x²)ᵀ(δ²)
        """
        width = max((len(r.path) for r in self.routes), default=0)
        groups = {"layer-wise": [], "none": [], "vmap": []}
        for r in self.routes:
            groups[r.route].append(r)
        lines = [f"layer-wise: {len(groups['layer-wise'])} of {len(self.routes)} parameter leaves"]
        lines += [f"  {r.path:{width}s}  {r.detail}" for r in groups["layer-wise"]]
        if groups["none"]:
            lines.append(f"no gradient (Fisher 0): {len(groups['none'])}")
            lines += [f"  {r.path:{width}s}  {r.detail}" for r in groups["none"]]
        if groups["vmap"]:
            lines.append(f"per-example vmap(grad): {len(groups['vmap'])}")
            lines += [f"  {r.path:{width}s}  {r.detail}" for r in groups["vmap"]]
        return "\n".join(lines)


def layerwise_plan(apply_fn, params, example_x) -> LayerwisePlan:
    """Traces ``apply_fn`` once (no computation) and decides each leaf's route.

    Example:
      >>> import jax
      >>> from ldnas_jax.models import SmallVGG
      >>> model = SmallVGG(num_classes=3)
      >>> v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> apply_fn = lambda p, x: model.apply({**v, "params": p}, x)
      >>> plan = layerwise_plan(apply_fn, v["params"], np.zeros((1, 32, 32, 3), np.float32))
      >>> [l.kind for l in plan.layers]
      ['conv', 'conv', 'conv', 'dense', 'dense']
      >>> len(plan.fallback)  # BatchNorm's scales and biases are placed too
      0
    """
    return plan_program(trace_program(apply_fn, params, example_x))


# ---- following a leaf ----------------------------------------------------------------------------


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _unique(ids: np.ndarray) -> bool:
    valid = ids[ids >= 0]
    return np.unique(valid).size == valid.size


def _pad_ids(ids: np.ndarray, config) -> np.ndarray:
    """``lax.pad`` of an index array with -1: low/high (negative crops) and interior padding."""
    for axis, (lo, hi, interior) in enumerate(config):
        if interior:
            n = ids.shape[axis]
            shape = list(ids.shape)
            shape[axis] = n + (n - 1) * interior if n else 0
            spread = np.full(shape, -1, ids.dtype)
            index = [slice(None)] * ids.ndim
            index[axis] = slice(0, None, interior + 1)
            spread[tuple(index)] = ids
            ids = spread
        for amount, at_end in ((lo, False), (hi, True)):
            if amount > 0:
                shape = list(ids.shape)
                shape[axis] = amount
                block = np.full(shape, -1, ids.dtype)
                ids = np.concatenate([ids, block] if at_end else [block, ids], axis=axis)
            elif amount < 0:
                index = [slice(None)] * ids.ndim
                index[axis] = slice(0, ids.shape[axis] + amount) if at_end else slice(-amount, None)
                ids = ids[tuple(index)]
    return ids


def _is_static(atom, dynamic: set) -> bool:
    return isinstance(atom, Lit) or atom not in dynamic


def _chain_outputs(eqn, k: int, ids: np.ndarray, dynamic: set):
    """``([(output index, its ids), ...], scales)`` if ``eqn`` only moves, casts or rescales the
    leaf's entries, else None. Only ``split`` and ``unstack`` have several outputs."""
    name, p = eqn.primitive.name, eqn.params
    if name == "split":
        bounds = np.cumsum(p["sizes"])[:-1]
        return list(enumerate(np.split(ids, bounds, axis=p["axis"]))), False
    if name == "unstack":
        return list(enumerate(np.moveaxis(ids, p["axis"], 0))), False
    if len([o for o in eqn.outvars if o is not None]) != 1:
        return None
    step = _chain_step(eqn, k, ids, dynamic)
    return None if step is None else ([(0, step[0])], step[1])


def _chain_step(eqn, k: int, ids: np.ndarray, dynamic: set):
    """``(ids of the output, scales)`` if ``eqn`` only moves, casts or rescales the leaf's entries."""
    name, p = eqn.primitive.name, eqn.params
    out = eqn.outvars[0]
    if name == "reshape" and k == 0:
        if p.get("dimensions") is not None:
            ids = ids.transpose(p["dimensions"])
        return ids.reshape(p["new_sizes"]), False
    if name == "transpose":
        return ids.transpose(p["permutation"]), False
    if name in ("convert_element_type", "copy", "copy_p", "neg", "reduce_precision"):
        return ids, False
    if name == "squeeze":
        return np.squeeze(ids, axis=tuple(p["dimensions"])), False
    if name == "broadcast_in_dim" and k == 0:
        expanded = [1] * len(p["shape"])
        for j, axis in enumerate(p["broadcast_dimensions"]):
            expanded[axis] = ids.shape[j]
        return np.broadcast_to(ids.reshape(expanded), tuple(p["shape"])), False
    if name == "slice":
        strides = p["strides"] or (1,) * ids.ndim
        index = tuple(
            slice(s, l, st) for s, l, st in zip(p["start_indices"], p["limit_indices"], strides)
        )
        return ids[index], False
    if name == "rev":
        return np.flip(ids, axis=tuple(p["dimensions"])), False
    if name == "pad" and k == 0:
        return _pad_ids(ids, p["padding_config"]), False
    if name == "concatenate":
        parts = [
            ids if j == k else np.full(a.aval.shape, -1, ids.dtype)
            for j, a in enumerate(eqn.invars)
        ]
        return np.concatenate(parts, axis=p["dimension"]), False
    if (
        name in ("mul", "div")
        and _is_static(eqn.invars[1 - k], dynamic)
        and (name == "mul" or k == 0)
    ):
        return np.broadcast_to(ids, out.aval.shape), True
    return None


def _terminal(eqn, k: int, ids: np.ndarray):
    """``(kind, reduce_axes, site ids)`` where a path ends, or a reason string."""
    name = eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
        if name == "conv_general_dilated":
            if k != 1:
                return "is a convolution's input, not its kernel"
            if eqn.params["batch_group_count"] != 1:
                return "feeds a batch-grouped convolution"
        if not _unique(ids):
            return f"enters a {name} broadcast (its entries repeat there)"
        return ("dense" if name == "dot_general" else "conv"), (), ids
    if name in ("add", "sub", "add_any", "mul"):
        out_shape = eqn.outvars[0].aval.shape
        if ids.ndim != len(out_shape):
            return f"enters a {name} of another rank"
        implicit = {d for d in range(ids.ndim) if ids.shape[d] == 1 and out_shape[d] > 1}
        replicated = {
            d
            for d in range(ids.ndim)
            if ids.shape[d] > 1
            and np.array_equal(ids, np.broadcast_to(ids.take([0], axis=d), ids.shape))
        }
        reduced = ids[
            tuple(slice(0, 1) if d in replicated else slice(None) for d in range(ids.ndim))
        ]
        if not _unique(reduced):
            return f"is broadcast irregularly into a {name}"
        kind = "scale" if name == "mul" else "bias"
        return kind, tuple(sorted(implicit | replicated)), reduced
    return f"used by {name}"


class _Terminal(NamedTuple):
    kind: str
    eqn: int
    operand: int
    reduce_axes: tuple
    ids: np.ndarray
    chain: tuple
    scaled: bool


def _follow(program: Program, leaf: int, uses, deps, dynamic):
    """The terminals of one leaf's paths, or a reason it cannot be placed."""
    bit = 1 << leaf
    var = program.leafvars[leaf]
    shape = var.aval.shape
    stack = [(var, np.arange(math.prod(shape), dtype=np.int64).reshape(shape), (), False)]
    terminals: list[_Terminal] = []
    while stack:
        var, ids, chain, scaled = stack.pop()
        if var is program.outvar:
            return "is returned as part of the logits"
        for e, k in uses.get(var, ()):
            eqn = program.eqns[e]
            outs = [o for o in eqn.outvars if o is not None]
            if eqn.primitive.name == "stop_gradient" or not any(_is_float(o.aval) for o in outs):
                continue  # no gradient flows back through it
            others = [a for j, a in enumerate(eqn.invars) if j != k]
            if any(isinstance(a, Var) and deps.get(a, 0) & bit for a in others):
                return f"used more than once (two of its uses meet in one {eqn.primitive.name})"
            step = _chain_outputs(eqn, k, ids, dynamic)
            if step is not None:
                outputs, scales = step
                for j, new_ids in outputs:
                    if eqn.outvars[j] is not None:
                        link = chain + ((e, k, j),)
                        stack.append((eqn.outvars[j], new_ids, link, scaled or scales))
                continue
            end = _terminal(eqn, k, ids)
            if isinstance(end, str):
                return end
            terminals.append(_Terminal(end[0], e, k, end[1], end[2], chain, scaled))
    if len(terminals) > 1:
        every = np.concatenate([t.ids[t.ids >= 0] for t in terminals])
        if np.unique(every).size != every.size:
            return f"used {len(terminals)} times (a shared or tied weight)"
    return terminals


def _probe_of(var: Var, program: Program, uses) -> Var:
    """Where to read ``var``'s cotangent: past single-consumer sums of the same shape.

    ``y = x + b`` has the cotangent of ``x`` (up to sign for ``x - b``, which squares
    away), so a layer's kernel and bias share one probe.
    """
    while var is not program.outvar:
        consumers = uses.get(var, ())
        if len(consumers) != 1:
            break
        e, _ = consumers[0]
        eqn = program.eqns[e]
        out = eqn.outvars[0]
        if (
            eqn.primitive.name not in ("add", "sub", "add_any")
            or out is None
            or out.aval.shape != var.aval.shape
            or out.aval.dtype != var.aval.dtype
        ):
            break
        var = out
    return var


def plan_program(program: Program) -> LayerwisePlan:
    """Decides every leaf's route on a traced program (see the module docstring)."""
    uses = _uses(program)
    deps, dynamic = _dependencies(program)
    paths = program.leaf_paths
    sites: list[Site] = []
    site_ids: list[np.ndarray] = []
    routes, reasons, fallback = [], {}, []
    per_leaf: dict[int, list[int]] = {}
    for leaf in range(len(program.leafvars)):
        if not _is_float(program.leafvars[leaf].aval):
            routes.append(LeafRoute(paths[leaf], "none", "not a float: no gradient"))
            continue
        found = _follow(program, leaf, uses, deps, dynamic)
        if isinstance(found, str):
            reasons[paths[leaf]] = found
            fallback.append(leaf)
            routes.append(LeafRoute(paths[leaf], "vmap", found))
            continue
        if not found:
            routes.append(
                LeafRoute(paths[leaf], "none", "no path to the logits carries a gradient")
            )
            continue
        per_leaf[leaf] = []
        details = []
        for t in found:
            per_leaf[leaf].append(len(sites))
            sites.append(_site_of(t, leaf, program, uses))
            site_ids.append(t.ids)
            details.append(_site_detail(sites[-1], program))
        routes.append(LeafRoute(paths[leaf], "layer-wise", _route_summary(details)))
    sites, gathers = _in_program_order(program, sites, site_ids, per_leaf)
    return LayerwisePlan(
        tuple(sites), tuple(fallback), paths, reasons, tuple(routes), tuple(gathers)
    )


def _uses(program: Program) -> dict:
    """Each variable's uses: ``(equation, operand)`` pairs, in program order."""
    uses: dict = collections.defaultdict(list)
    for e, eqn in enumerate(program.eqns):
        for k, a in enumerate(eqn.invars):
            if isinstance(a, Var):
                uses[a].append((e, k))
    return uses


def _dependencies(program: Program) -> tuple[dict, set]:
    """``(deps, dynamic)``: which leaves each variable depends on, and which are not constants.

    ``deps`` maps a variable to a bit mask of the leaves it is computed from; ``dynamic``
    holds the variables computed from a leaf or the input.
    """
    deps = {v: 1 << i for i, v in enumerate(program.leafvars)}
    dynamic = set(program.leafvars) | {program.xvar}
    for eqn in program.eqns:
        mask, dyn = 0, False
        for a in eqn.invars:
            if isinstance(a, Var):
                mask |= deps.get(a, 0)
                dyn = dyn or a in dynamic
        for o in eqn.outvars:
            if o is not None:
                if mask:
                    deps[o] = mask
                if dyn:
                    dynamic.add(o)
    return deps, dynamic


def _site_of(t: _Terminal, leaf: int, program: Program, uses) -> Site:
    """The site where one of ``leaf``'s paths ends."""
    eqn = program.eqns[t.eqn]
    capture = None
    if t.kind in ("dense", "conv") or t.kind == "scale":
        capture = eqn.invars[1 - t.operand]
    return Site(
        t.kind,
        leaf,
        t.eqn,
        t.operand,
        _probe_of(eqn.outvars[0], program, uses),
        capture,
        t.chain,
        t.scaled,
        t.reduce_axes,
        t.ids.shape,
    )


def _route_summary(details: list[str]) -> str:
    """A leaf's site details, equal ones counted: ``"2 × dense ...; bias ..."``."""
    counted = collections.Counter(details)
    return "; ".join(d if n == 1 else f"{n} × {d}" for d, n in counted.items())


def _in_program_order(program: Program, sites: list, site_ids: list, per_leaf: dict):
    """``(sites, gathers)``: the sites sorted into program order, and per leaf its gather.

    A leaf's gather is None when no site reads it, else its sites' new indices and
    :func:`_gather_index` over them.
    """
    order = sorted(range(len(sites)), key=lambda j: sites[j].eqn)  # program order
    renumber = {old: new for new, old in enumerate(order)}
    sites = [sites[j] for j in order]
    site_ids = [site_ids[j] for j in order]
    gathers = []
    for leaf in range(len(program.leafvars)):
        if leaf not in per_leaf:
            gathers.append(None)
            continue
        own = tuple(sorted(renumber[j] for j in per_leaf[leaf]))
        gathers.append(
            (own, _gather_index(program.leafvars[leaf].aval.shape, [site_ids[j] for j in own]))
        )
    return sites, gathers


def _gather_index(shape, ids_list) -> np.ndarray | None:
    """Index into the concatenated site squares (and a trailing 0) for every leaf entry."""
    size = math.prod(shape)
    total = sum(ids.size for ids in ids_list)
    src = np.full(size, total, np.int32)  # entries no site reaches have zero gradient
    offset = 0
    for ids in ids_list:
        flat = ids.ravel()
        valid = flat >= 0
        src[flat[valid]] = offset + np.nonzero(valid)[0]
        offset += ids.size
    if len(ids_list) == 1 and total == size and np.array_equal(src, np.arange(size)):
        return None
    return src


def _site_detail(site: Site, program: Program) -> str:
    eqn = program.eqns[site.eqn]
    scaled = ", times a constant" if site.scaled else ""
    if site.kind in ("dense", "conv"):
        layout = contraction_layout(eqn, site.operand)
        groups = f", {layout.groups} groups" if layout.groups > 1 else ""
        route = {
            "outer": ": (x²)ᵀ(δ²)",
            "pairs": ": position pairs",
            "scan": ": per-example products, chunked",
        }[contraction_route(layout.positions, 1)]
        weight = eqn.invars[site.operand].aval.shape
        return (
            f"{site.kind:5s}  {eqn.primitive.name} kernel {tuple(weight)}, "
            f"{layout.positions} position(s){groups}{scaled}{route}"
        )
    out_shape = eqn.outvars[0].aval.shape
    summed = math.prod(out_shape[d] for d in site.reduce_axes)
    verb = "added" if site.kind == "bias" else "multiplies an activation"
    return f"{site.kind:5s}  {verb}, summed over {summed} position(s){scaled}"
