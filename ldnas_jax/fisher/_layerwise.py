"""A fast Fisher engine for any JAX model: it reads the traced program, not the module classes.

The reference engine (:func:`ldnas_jax.fisher.make_vmap_engine`) vmaps a full backward
pass per example, which turns each convolution's weight gradient into a grouped
convolution, slow on XLA:CPU. This engine splits the work the way BackPACK, kfac-jax and
nngeometry do, on the program ``apply_fn`` traces to (:mod:`ldnas_jax.fisher._program`),
so that it serves Flax linen and NNX, Equinox, plain functions of a dict of arrays and
the library's own searched networks alike:

1. **The plan** (:func:`layerwise_plan`, :mod:`ldnas_jax.fisher._plan`): each parameter
   leaf is followed through the program to the contraction (``dot_general``,
   ``conv_general_dilated``), sum or product it ends in.
2. **One pass for the cotangents.** The program is evaluated again per example with a
   zero *probe* added to each of those operations' outputs and their other operand
   recorded. A single ``vjp`` per example (vmapped over examples, and over the ``K``
   targets) of ``√w_ik · log p(t_ik | x_i)`` then gives every output cotangent ``δ``; no
   weight gradient is formed in that pass.
3. **Per leaf, the sum of squares** (:mod:`ldnas_jax.fisher._squares`): ``(x²)ᵀ(δ²)``
   where each example contributes one row, position pairs or chunked per-example
   products where it contributes several; ``δ`` summed along the broadcast axes for a
   bias or scale. Leaves the plan cannot place are differentiated by per-example
   ``vjp`` in the same pass. The result is exact either way; only the speed differs.

Two XLA:CPU pathologies are routed around in the engine's own pass, with results
unchanged: convolutions with up to 16 output positions (a 4×4 map) run as patches @ kernel
(:func:`ldnas_jax.fisher._contraction.conv_as_matmul`), and max pooling whose windows
tile its input is differentiated through a mask, not ``select_and_scatter``.

The assumption is the one the reference engine makes: ``apply_fn`` treats each example
independently (BatchNorm in eval mode). Examples are run one by one under ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ldnas_jax.data.batching import pad_rows
from ldnas_jax.fisher._contraction import contraction_layout, matmul_conv_rewrite
from ldnas_jax.fisher._engine import FisherEngine
from ldnas_jax.fisher._plan import LayerwisePlan, LeafRoute, layerwise_plan, plan_program
from ldnas_jax.fisher._program import (
    Lit,
    Program,
    Var,
    evaluate,
    tiled_pooling_rewrite,
    trace_program,
)
from ldnas_jax.fisher._squares import contraction_squares, elementwise_squares
from ldnas_jax.xla_cpu import bind_equation, default_matmul_positions, matmul_convs

__all__ = [
    "LayerwisePlan",
    "LeafRoute",
    "layerwise_engine_from_program",
    "layerwise_plan",
    "make_layerwise_engine",
    "matmul_convs",
]

_F32 = jnp.float32


def _engine_matmul_positions() -> int:
    # XLA:CPU's tiny-map convolutions are pathological (VGG-16's 2×2 and 4×4 maps: 5× faster
    # routed). On larger maps routing bought no measurable speed on an AMD EPYC (jax 0.10)
    # while each routed convolution added to compile time: the small CNN's step compiled in
    # 8.4 s routing up to 16 positions, 15.5 s up to 1024 (32×32 maps).
    return default_matmul_positions()


def _default_group() -> int:
    # CPU: one example per step keeps the per-example gradient in cache; accelerators want batches.
    return 1 if jax.default_backend() == "cpu" else 16


def routed_rewrite(max_positions: int, tiled_pooling: bool) -> Callable:
    """The engine's rewrites: small convolutions as matmuls, tiling max pooling via a mask."""
    conv = matmul_conv_rewrite(max_positions)

    def rewrite(eqn, invals):
        out = conv(eqn, invals)
        if out is None and tiled_pooling:
            out = tiled_pooling_rewrite(eqn, invals)
        return out

    return rewrite


def _static_slice(program: Program, sources: set) -> list[int]:
    """Indices of the equations that compute ``sources`` (constant-only values), in order."""
    producer = {v: e for e, eqn in enumerate(program.eqns) for v in eqn.outvars if v is not None}
    needed: set[int] = set()
    stack = list(sources)
    while stack:
        e = producer.get(stack.pop())
        if e is None or e in needed:
            continue
        needed.add(e)
        stack += [a for a in program.eqns[e].invars if isinstance(a, Var)]
    return sorted(needed)


def _read(env: dict, atom):
    return atom.val if isinstance(atom, Lit) else env[atom]


def _site_scale(program: Program, site, env: dict):
    """The constant factor along a scaled path: the path applied to a leaf of ones.

    Operands other than the path's are constants (in ``env``) or, for ``pad`` and
    ``concatenate``, parts that are not the leaf's; zeros stand in for those.
    """
    aval = program.leafvars[site.leaf].aval
    value = jnp.ones(aval.shape, aval.dtype)
    for e, k, out in site.chain:
        eqn = program.eqns[e]
        invals = [
            value
            if j == k
            else (
                _read(env, a)
                if isinstance(a, Lit) or a in env
                else jnp.zeros(a.aval.shape, a.aval.dtype)
            )
            for j, a in enumerate(eqn.invars)
        ]
        value = bind_equation(eqn, invals)[out]
    return value


def layerwise_engine_from_program(
    program: Program,
    plan: LayerwisePlan | None = None,
    *,
    matmul_conv_max_positions: int | None = None,
    examples_per_step: int | None = None,
    micro_batch: int | None = None,
    tiled_pooling: bool = True,
) -> FisherEngine:
    """The layer-wise engine of a traced program (see :func:`make_layerwise_engine`)."""
    plan = plan_program(program) if plan is None else plan
    num_classes = program.num_classes
    treedef = program.treedef
    max_positions = (
        _engine_matmul_positions()
        if matmul_conv_max_positions is None
        else matmul_conv_max_positions
    )
    rewrite = routed_rewrite(max_positions, tiled_pooling)
    group = examples_per_step or _default_group()
    micro = micro_batch or None
    wiring = _site_wiring(program, plan)

    def pass_sums(consts, params, x, rule, args):
        leaves = treedef.flatten_up_to(params)
        captured, deltas, fallback_sq = _cotangent_pass(
            program, plan.fallback, wiring, rewrite, consts, leaves, x, rule, args
        )
        static = _static_values(program, wiring.static_eqns, consts)
        squares = _site_squares(program, plan.sites, wiring, static, captured, deltas, group)
        return treedef.unflatten(_leaf_squares(plan, leaves, squares, fallback_sq))

    def sum_squares(consts, params, x, rule, *args):
        x = jnp.asarray(x)
        batch = x.shape[0]
        if micro is None or batch <= micro:
            return pass_sums(consts, params, x, rule, args)
        # Micro-batches, scanned: the working set of each pass stays in cache. Padded rows
        # must carry zero weight: the rule's arguments are padded with zeros too.
        rows = -(-batch // micro) * micro
        padded = pad_rows(rows, x, *args)
        padded = padded if isinstance(padded, tuple) else (padded,)
        split = lambda a: a.reshape((-1, micro, *a.shape[1:]))
        zeros = jax.tree.map(lambda l: jnp.zeros(np.shape(l), _F32), params)

        def step(acc, xs):
            part = pass_sums(consts, params, xs[0], rule, tuple(xs[1:]))
            return jax.tree.map(jnp.add, acc, part), None

        return lax.scan(step, zeros, tuple(split(a) for a in padded))[0]

    preferred = 16 if jax.default_backend() == "cpu" else None
    return FisherEngine("layerwise", sum_squares, program.consts, num_classes, preferred, plan)


class _SiteWiring(NamedTuple):
    """Where the engine's pass reads each plan site's operands.

    Attributes:
      probe_vars: the probed variables, each once, in order of first use.
      capture_vars: the captured operands, each once, in order of first use.
      probe_index: a probed variable's place in ``probe_vars`` (and in the deltas).
      capture_index: a captured variable's place in ``capture_vars``.
      layouts: per site, its contraction layout, or None for a bias or scale.
      static_eqns: the equations computing the constant operands of scaled paths.
    """

    probe_vars: list
    capture_vars: list
    probe_index: dict
    capture_index: dict
    layouts: list
    static_eqns: list[int]


def _site_wiring(program: Program, plan: LayerwisePlan) -> _SiteWiring:
    """The plan's sites wired into the engine's pass; computed once per engine."""
    probe_vars = list(dict.fromkeys(s.probe for s in plan.sites))
    capture_vars = list(dict.fromkeys(s.capture for s in plan.sites if s.capture is not None))
    probe_index = {v: j for j, v in enumerate(probe_vars)}
    capture_index = {v: j for j, v in enumerate(capture_vars)}
    layouts = [
        contraction_layout(program.eqns[s.eqn], s.operand) if s.kind in ("dense", "conv") else None
        for s in plan.sites
    ]
    scale_sources = {
        a
        for s in plan.sites
        if s.scaled
        for e, k, _ in s.chain
        for j, a in enumerate(program.eqns[e].invars)
        if j != k and isinstance(a, Var)
    }
    static_eqns = _static_slice(program, scale_sources)
    return _SiteWiring(probe_vars, capture_vars, probe_index, capture_index, layouts, static_eqns)


def _cotangent_pass(program, fallback, wiring, rewrite, consts, leaves, x, rule, args):
    """The per-example pass: ``(captured, deltas, fallback_sq)``, each with a leading batch axis.

    ``captured`` holds the captured operands, ``deltas`` every probe's output cotangent
    per target (B, K, ...), ``fallback_sq`` the fallback leaves' squared gradients summed
    over the targets.
    """
    num_classes = program.num_classes
    probes = [jnp.zeros(v.aval.shape, v.aval.dtype) for v in wiring.probe_vars]

    def per_example(x_i, *args_i):
        def f(probe_values, fallback_values):
            values = list(leaves)
            for j, i in enumerate(fallback):
                values[i] = fallback_values[j]
            logits, captured = evaluate(
                program,
                consts,
                values,
                x_i[None],
                probes=dict(zip(wiring.probe_vars, probe_values)),
                capture=wiring.capture_vars,
                rewrite=rewrite,
            )
            logits = logits[0].astype(_F32)
            return jax.nn.log_softmax(logits), (captured, logits)

        fallback_values = [leaves[i] for i in fallback]
        _, pull_back, (captured, logits) = jax.vjp(f, probes, fallback_values, has_aux=True)
        targets, weights = rule(lax.stop_gradient(logits), *args_i)
        # √w folded into the cotangent: Σ w g² = Σ (√w g)².
        cot = jnp.sqrt(weights)[:, None] * jax.nn.one_hot(targets, num_classes, dtype=_F32)
        deltas, fallback_grads = jax.vmap(pull_back)(cot)
        fallback_sq = [jnp.sum(jnp.square(g.astype(_F32)), axis=0) for g in fallback_grads]
        return captured, deltas, fallback_sq

    return jax.vmap(per_example)(x, *args)


def _static_values(program: Program, static_eqns: list[int], consts) -> dict:
    """The program's constants and the values computed from them alone that scaled sites need."""
    static = dict(zip(program.constvars, consts))
    for e in static_eqns:
        eqn = program.eqns[e]
        outs = bind_equation(eqn, [_read(static, a) for a in eqn.invars])
        static.update((v, o) for v, o in zip(eqn.outvars, outs) if v is not None)
    return static


def _site_squares(program, sites, wiring, static, captured, deltas, group: int) -> list:
    """Per plan site, the batch's sums of squared per-example gradients."""
    squares = []
    for s, layout in zip(sites, wiring.layouts):
        d = deltas[wiring.probe_index[s.probe]]  # (B, K, *out_shape)
        scale = _site_scale(program, s, static) if s.scaled else None
        if layout is not None:
            a = captured[wiring.capture_index[s.capture]]
            sq = layout.to_weight(contraction_squares(layout, a, d, group))
            if scale is not None:
                sq = sq * jnp.square(scale.astype(_F32))
        else:
            other = captured[wiring.capture_index[s.capture]] if s.capture is not None else None
            sq = elementwise_squares(d, other, scale, s.reduce_axes)
        squares.append(sq)
    return squares


def _leaf_squares(plan: LayerwisePlan, leaves, squares: list, fallback_sq) -> list:
    """Per parameter leaf, its sums of squares: gathered from its sites, or its fallback's."""
    out_leaves: list[Any] = [None] * len(leaves)
    for i, s in zip(plan.fallback, fallback_sq):
        out_leaves[i] = jnp.sum(s, axis=0)
    for i, gather in enumerate(plan.gathers):
        shape = np.shape(leaves[i])
        if gather is None:
            if out_leaves[i] is None:  # no gradient reaches it
                out_leaves[i] = jnp.zeros(shape, _F32)
            continue
        own, src = gather
        if src is None:
            out_leaves[i] = squares[own[0]].reshape(shape)
        else:
            flat = jnp.concatenate([squares[j].reshape(-1) for j in own] + [jnp.zeros(1, _F32)])
            out_leaves[i] = flat[src].reshape(shape)
    return out_leaves


def make_layerwise_engine(
    apply_fn: Callable,
    params: Any,
    example_x,
    num_classes: int | None = None,
    *,
    matmul_conv_max_positions: int | None = None,
    examples_per_step: int | None = None,
    micro_batch: int | None = None,
    plan: LayerwisePlan | None = None,
    tiled_pooling: bool = True,
) -> FisherEngine:
    """The layer-wise Fisher engine for ``apply_fn`` (see the module docstring).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``, examples independent (eval mode).
      params: the parameter pytree (its structure and shapes are what matter).
      example_x: at least one example, ``(n, *example_shape)``; only its shape is used.
      num_classes: number of logits, checked against the model's if given.
      matmul_conv_max_positions: convolutions with at most this many output
        positions per image run as patches @ kernel in the engine's own forward
        and backward passes. Default: 16 (4×4 maps) on CPU, 0 elsewhere.
      examples_per_step: examples per step of the per-example accumulation scan
        (1 on CPU, 16 elsewhere).
      micro_batch: examples per pass inside one call (scanned and summed), or
        0 / None for one pass over the whole chunk (the default).
      plan: a precomputed :func:`layerwise_plan` of the same program.
      tiled_pooling: differentiate max pooling whose windows tile its input
        through a mask (:func:`ldnas_jax.xla_cpu.window_max`), not XLA's
        ``select_and_scatter``; same result, several times faster on CPU.

    Returns:
      A :class:`~ldnas_jax.fisher.FisherEngine`; ``engine(params, x, targets (B, K),
      weights (B, K))`` returns ``Σ_i Σ_k w_ik (∂ log p(t_ik|x_i)/∂θ)²`` like ``params``,
      in float32. Its ``preferred_chunk`` is 16 on CPU: XLA:CPU's backward passes slow
      down several-fold on large batches that fall out of cache.

    Example:
      >>> import flax.linen as nn
      >>> from ldnas_jax.fisher import make_vmap_engine
      >>> model = nn.Dense(3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
      >>> apply_fn = lambda p, x: model.apply({"params": p}, x)
      >>> x = jnp.ones((2, 4)); t = jnp.array([[0], [2]]); w = jnp.ones((2, 1))
      >>> fast = make_layerwise_engine(apply_fn, params, x)(params, x, t, w)
      >>> ref = make_vmap_engine(apply_fn, 3)(params, x, t, w)
      >>> bool(jnp.allclose(fast["kernel"], ref["kernel"], rtol=1e-5))
      True
    """
    program = trace_program(apply_fn, params, example_x)
    if num_classes is not None and num_classes != program.num_classes:
        raise ValueError(
            f"apply_fn returns {program.num_classes} logits, not num_classes={num_classes}"
        )
    return layerwise_engine_from_program(
        program,
        plan,
        matmul_conv_max_positions=matmul_conv_max_positions,
        examples_per_step=examples_per_step,
        micro_batch=micro_batch,
        tiled_pooling=tiled_pooling,
    )
