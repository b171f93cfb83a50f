"""A fast Fisher engine for any Flax linen model built from ``nn.Dense`` and ``nn.Conv``.

The reference engine (:func:`ldnas_jax.fisher.make_vmap_engine`) vmaps a full
backward pass per example, which turns each convolution's weight gradient into a
grouped convolution, slow on XLA:CPU. This engine splits the work the way
BackPACK, kfac-jax and nngeometry do:

1. **One pass for the cotangents.** Every ``nn.Dense`` / ``nn.Conv`` call is
   intercepted with :func:`flax.linen.intercept_methods`: its input ``a`` is
   recorded and a zero *probe* is added to its output. A single ``vjp`` per
   example (vmapped over examples, and over the ``K`` targets) of
   ``√w_ik · log p(t_ik | x_i)`` then gives the output cotangent ``δ`` of every
   layer. No weight gradient is formed in that pass, only input cotangents.
2. **Per layer, the sum of squares.** With ``U_i`` the layer's per-example input
   (for a convolution, its patches) of shape ``(positions, fan_in)``, the
   per-example kernel gradient is ``G_ik = U_iᵀ δ_ik`` and the engine returns
   ``Σ_ik G_ik²`` (the weights were folded in as ``√w``). It picks, per layer,
   the cheapest exact formulation:

   * one position (a dense layer on 2-D input): ``(U²)ᵀ (Σ_k δ²)``, one matmul
     and no per-example tensor (the dense-layer trick of kfac-jax);
   * few positions (a convolution on a 2×2 map): the *pair* expansion
     ``Σ_{p≤q} c_pq (U_p∘U_q)ᵀ (Σ_k δ_p∘δ_q)``, again one matmul, with no
     per-example tensor and a cost independent of ``K``;
   * otherwise: a ``scan`` over examples of one 2-D matmul ``U_iᵀ [δ_i1 … δ_iK]``,
     squared and accumulated, so that the per-example gradient never exceeds
     one example and stays in cache.

   Biases get ``Σ_ik (Σ_pos δ_ik)²``.
3. **Everything else falls back** to per-example ``vjp`` restricted to those
   parameters, fused into the same pass: BatchNorm scales and biases, custom
   layers, grouped convolutions, a ``Dense`` whose ``dot_general`` was replaced,
   layers called more than once with the same weights, weights read outside
   their layer, and layers inside lifted transforms (``nn.scan``, ``nn.remat``).
   The result is exact either way; only the speed differs.

Two XLA:CPU pathologies are routed around in the engine's own pass, with
results unchanged:

* convolutions run as patches @ kernel, a plain matmul, forward and backward
  (:mod:`ldnas_jax.xla_cpu._matmul_conv`). A 3×3 convolution on a 2×2 map with 512
  channels runs at about 1 GFLOP/s as a convolution, and the small batched
  convolutions of a per-example ``vmap`` are slow too: on CPU every map of up
  to 32×32 outputs is routed (``matmul_conv_max_positions``);
* max pooling whose windows tile its input is differentiated through a mask,
  not ``select_and_scatter`` (:mod:`ldnas_jax.xla_cpu._pooling`).

On the small CNN of ``benchmarks/fisher_speed.py`` (batch 256, 2 cores) the
two took the engine from 619 to 1,332 examples/s.

The assumption is the one the reference engine makes: ``apply_fn`` treats each
example independently (BatchNorm in eval mode). Examples are run one by one
under ``vmap``, exactly as in the reference engine, so this holds by
construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as _jcore

from ldnas_jax.xla_cpu._matmul_conv import (
    conv_forward_matmul,
    conv_geometry,
    conv_patches,
    layer_kind,
    module_weights,
    matmul_convs,
)
from ldnas_jax.xla_cpu._pooling import tiled_max_pooling

__all__ = ["LayerwisePlan", "layerwise_plan", "make_layerwise_engine", "matmul_convs"]

_F32 = jnp.float32
_HIGHEST = lax.Precision.HIGHEST
# Memory/latency cost of one element of a per-example gradient, in multiply-adds:
# it is written by the matmul, read back, squared and accumulated.
_PER_EXAMPLE_ELEMENT_COST = 16.0


# ---- the plan: which parameters belong to which layer -------------------------------------------


class LayerInfo(NamedTuple):
    """One intercepted layer the engine handles itself.

    Attributes:
      kind: ``"dense"`` or ``"conv"``.
      path: the module's path in the model.
      kernel: index of its kernel among ``jax.tree.leaves(params)``.
      bias: index of its bias, or None.
      out_shape: per-example output shape (batch axis of size 1 included).
      out_dtype: output dtype.
    """

    kind: str
    path: str
    kernel: int
    bias: int | None
    out_shape: tuple[int, ...]
    out_dtype: Any


class LayerwisePlan(NamedTuple):
    """How the layer-wise engine splits a model's parameters.

    Attributes:
      layers: the layers computed layer-wise, in call order.
      fallback: indices (into ``jax.tree.leaves(params)``) of the parameters
        computed by per-example ``vjp``.
      leaf_paths: the ``keystr`` path of every parameter leaf.
      reasons: why a recognised layer was nonetheless left to the fallback.
    """

    layers: tuple[LayerInfo, ...]
    fallback: tuple[int, ...]
    leaf_paths: tuple[str, ...]
    reasons: dict[str, str]

    def describe(self) -> str:
        """A short human-readable summary."""
        lines = [f"{len(self.layers)} layer(s) computed layer-wise:"]
        lines += [f"  {l.kind:5s} {l.path}" for l in self.layers]
        lines.append(f"{len(self.fallback)} parameter(s) by per-example vjp:")
        lines += [f"  {self.leaf_paths[i]}" for i in self.fallback]
        lines += [f"  (left to the fallback: {p}: {r})" for p, r in self.reasons.items()]
        return "\n".join(lines)


def _used_inputs(closed_jaxpr) -> list[bool]:
    """Which inputs of a jaxpr reach its outputs (or an effect), by backward liveness."""
    jaxpr = closed_jaxpr.jaxpr
    live = {v for v in jaxpr.outvars if not isinstance(v, _jcore.Literal)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(o in live for o in eqn.outvars):
            live.update(v for v in eqn.invars if not isinstance(v, _jcore.Literal))
    return [v in live for v in jaxpr.invars]


def layerwise_plan(apply_fn: Callable, params: Any, example_x) -> LayerwisePlan:
    """Traces ``apply_fn`` once (no computation) and decides which parameters are layer-wise.

    A ``nn.Dense`` / ``nn.Conv`` call is handled layer-wise when its kernel (and
    bias) are leaves of ``params`` passed through unchanged, it is the only call
    using them, and they are used nowhere else in the model (checked on the
    jaxpr with the layer's computation removed). Everything else is fallback.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> model = SmallVGG(num_classes=3)
      >>> v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> apply_fn = lambda p, x: model.apply({**v, "params": p}, x)
      >>> plan = layerwise_plan(apply_fn, v["params"], np.zeros((1, 32, 32, 3), np.float32))
      >>> [l.kind for l in plan.layers]
      ['conv', 'conv', 'conv', 'dense', 'dense']
      >>> len(plan.fallback)  # the BatchNorm scales and biases
      6
    """
    leaves, treedef = jax.tree.flatten(params)
    paths = tuple(
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    )
    x1 = jax.ShapeDtypeStruct((1, *np.shape(example_x)[1:]), jnp.asarray(example_x[:1]).dtype)
    leaf_structs = [jax.ShapeDtypeStruct(np.shape(l), jnp.result_type(l)) for l in leaves]

    def traced(zero_out: frozenset, records: list):
        def fn(leaf_values, x):
            id_of = {id(v): i for i, v in enumerate(leaf_values)}

            def interceptor(next_fun, args, kwargs, ctx):
                kind = layer_kind(ctx, args, kwargs)
                layer_params = module_weights(ctx.module) if kind else None
                if layer_params is None:
                    return next_fun(*args, **kwargs)
                kernel = id_of.get(id(layer_params["kernel"]))
                bias = id_of.get(id(layer_params["bias"])) if "bias" in layer_params else None
                path = "/".join(ctx.module.path) or type(ctx.module).__name__
                ok = kernel is not None and ("bias" not in layer_params or bias is not None)
                reason = (
                    None
                    if ok
                    else "its parameters are not leaves of params (transformed or lifted)"
                )
                if ok and kind == "conv":
                    geom = conv_geometry(ctx.module, args[0].shape)
                    if geom is None:
                        ok, reason = (
                            False,
                            "convolution configuration not supported (groups, custom conv)",
                        )
                record = dict(kind=kind, path=path, kernel=kernel, bias=bias, ok=ok, reason=reason)
                if kernel is not None and kernel in zero_out:
                    # Keep the input -> output dependence, drop the one on the layer's own weights.
                    shape, dtype = zero_out_shapes[kernel]
                    records.append(record)
                    return jnp.broadcast_to(jnp.sum(args[0]).astype(dtype), shape)
                out = next_fun(*args, **kwargs)
                record.update(
                    out_shape=tuple(out.shape),
                    out_dtype=out.dtype,
                    is_array=isinstance(out, jax.Array) or hasattr(out, "aval"),
                )
                records.append(record)
                return out

            with nn.intercept_methods(interceptor):
                return apply_fn(treedef.unflatten(list(leaf_values)), x)

        return fn

    zero_out_shapes: dict[int, tuple] = {}
    records: list[dict] = []
    jax.make_jaxpr(traced(frozenset(), records))(leaf_structs, x1)

    reasons: dict[str, str] = {}
    uses: dict[int, int] = {}
    for r in records:
        for i in (r["kernel"], r["bias"]):
            if i is not None:
                uses[i] = uses.get(i, 0) + 1
    candidates: dict[int, dict] = {}
    for r in records:
        if not r["ok"]:
            reasons[r["path"]] = r["reason"]
        elif not r.get("is_array", False):
            reasons[r["path"]] = "output is not a single array"
        elif uses[r["kernel"]] > 1 or (r["bias"] is not None and uses[r["bias"]] > 1):
            reasons[r["path"]] = "called more than once with the same weights"
        else:
            candidates[r["kernel"]] = r

    # Weights used outside their own layer (read through `self.variables`, tied by hand...)
    # would get only part of their gradient: remove the layers' computations and check
    # on the jaxpr that their parameters no longer reach the output.
    while candidates:
        zero_out_shapes.clear()
        zero_out_shapes.update({k: (r["out_shape"], r["out_dtype"]) for k, r in candidates.items()})
        jaxpr = jax.make_jaxpr(traced(frozenset(candidates), []))(leaf_structs, x1)
        used = _used_inputs(jaxpr)[: len(leaves)]
        leaking = [
            k
            for k, r in candidates.items()
            if used[k] or (r["bias"] is not None and used[r["bias"]])
        ]
        if not leaking:
            break
        for k in leaking:
            reasons[candidates[k]["path"]] = "its weights are also used outside the layer"
            del candidates[k]

    layers = tuple(
        LayerInfo(r["kind"], r["path"], r["kernel"], r["bias"], r["out_shape"], r["out_dtype"])
        for r in records
        if r["ok"] and r["kernel"] in candidates
    )
    owned = {l.kernel for l in layers} | {l.bias for l in layers if l.bias is not None}
    fallback = tuple(i for i in range(len(leaves)) if i not in owned)
    return LayerwisePlan(layers, fallback, paths, reasons)


# ---- sums of squared per-example gradients --------------------------------------------------


def _sum_sq_outer(u, d):
    """One position per example: ``u (B, A)``, ``d (B, K, O)`` -> ``(u²)ᵀ Σ_k d²``."""
    return lax.dot_general(
        jnp.square(u), jnp.sum(jnp.square(d), axis=1), (((0,), (0,)), ((), ())), precision=_HIGHEST
    )


def _sum_sq_pairs(u, d):
    """Few positions: ``u (B, P, A)``, ``d (B, K, P, O)``, via the expansion over position pairs.

    ``(Σ_p u_p d_p)² = Σ_{p≤q} c_pq (u_p u_q)(d_p d_q)`` with ``c = 1`` on the
    diagonal and 2 off it, summed over examples in one matmul.
    """
    p_idx, q_idx = np.triu_indices(u.shape[1])
    coef = jnp.asarray(np.where(p_idx == q_idx, 1.0, 2.0), _F32)
    left = u[:, p_idx] * u[:, q_idx]  # (B, Q, A)
    right = jnp.sum(d[:, :, p_idx] * d[:, :, q_idx], axis=1) * coef[None, :, None]  # (B, Q, O)
    return lax.dot_general(left, right, (((0, 1), (0, 1)), ((), ())), precision=_HIGHEST)


def _sum_sq_scan(a, d, to_rows, fan_in: int, positions: int, group: int):
    """Per-example gradients, ``group`` examples at a time, squared and accumulated.

    ``a (B, ...)`` is the layer input, ``to_rows(a_group) -> (g, P, A)``,
    ``d (B, K, ...)`` the output cotangents with ``P·O`` entries per target.
    """
    batch, k = d.shape[0], d.shape[1]
    out = d.size // (batch * k * positions)
    pad = (-batch) % group
    if pad:
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
        d = jnp.concatenate([d, jnp.zeros((pad, *d.shape[1:]), d.dtype)])
    steps = (batch + pad) // group
    a = a.reshape((steps, group, *a.shape[1:]))
    d = d.reshape((steps, group, k, positions, out))

    def step(acc, xs):
        a_g, d_g = xs
        u = to_rows(a_g).astype(_F32)  # (g, P, A)
        d_g = d_g.astype(_F32)
        if group == 1:
            g = lax.dot_general(
                u[0], d_g[0], (((0,), (1,)), ((), ())), precision=_HIGHEST
            )  # (A, K, O)
            return acc + jnp.sum(jnp.square(g), axis=1), None
        g = lax.dot_general(
            u, d_g, (((1,), (2,)), ((0,), (0,))), precision=_HIGHEST
        )  # (g, A, K, O)
        return acc + jnp.sum(jnp.square(g), axis=(0, 2)), None

    acc, _ = lax.scan(step, jnp.zeros((fan_in, out), _F32), (a, d))
    return acc


def _kernel_sum_sq(kind, geom, a, d, positions, fan_in, group):
    """Σ_ik G_ik² of one layer's kernel, flattened to ``(fan_in, out)``."""
    batch, k = d.shape[0], d.shape[1]
    out = d.shape[-1]
    if kind == "dense":
        to_rows = lambda a_g: a_g.reshape(a_g.shape[0], positions, fan_in)
    else:
        nd = len(geom.kernel_size)

        def to_rows(a_g):
            g = a_g.shape[0]
            flat = a_g.reshape((-1, *a_g.shape[a_g.ndim - nd - 1 :]))
            return conv_patches(flat, geom).reshape(g, positions, fan_in)

    if positions == 1:
        return _sum_sq_outer(
            to_rows(a).reshape(batch, fan_in).astype(_F32), d.reshape(batch, k, out).astype(_F32)
        )
    pairs = positions * (positions + 1) // 2
    if 2 * pairs <= k * (2 * positions + _PER_EXAMPLE_ELEMENT_COST):
        return _sum_sq_pairs(
            to_rows(a).astype(_F32), d.reshape(batch, k, positions, out).astype(_F32)
        )
    return _sum_sq_scan(a, d, to_rows, fan_in, positions, group)


def _engine_matmul_positions() -> int:
    # Under the per-example vmap, routing every map up to 32×32 beat smaller caps on both
    # benchmark models (small CNN, VGG-16); the cap bounds the 9× patch memory of big maps.
    return 1024 if jax.default_backend() == "cpu" else 0


def _default_group() -> int:
    # CPU: one example per step keeps the per-example gradient in cache; accelerators want batches.
    return 1 if jax.default_backend() == "cpu" else 16


# ---- the engine -------------------------------------------------------------------------------


def make_layerwise_engine(
    apply_fn: Callable,
    params: Any,
    example_x,
    num_classes: int,
    *,
    matmul_conv_max_positions: int | None = None,
    examples_per_step: int | None = None,
    micro_batch: int | None = None,
    plan: LayerwisePlan | None = None,
    tiled_pooling: bool = True,
):
    """The layer-wise Fisher engine for ``apply_fn`` (see the module docstring).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``, examples independent (eval mode).
      params: the parameter pytree (its structure and shapes are what matter).
      example_x: at least one example, ``(n, *example_shape)``; only its shape is used.
      num_classes: number of logits.
      matmul_conv_max_positions: convolutions with at most this many output
        positions per image run as patches @ kernel in the engine's own forward
        and backward passes. Default: 1024 (32×32 maps) on CPU, 0 elsewhere.
      examples_per_step: examples per step of the per-example accumulation scan
        (1 on CPU, 16 elsewhere).
      micro_batch: examples per pass inside one call (scanned and summed), or
        0 / None for one pass over the whole chunk (the default).
      plan: a precomputed :func:`layerwise_plan`.
      tiled_pooling: differentiate max pooling whose windows tile its input
        through a mask (:func:`ldnas_jax.xla_cpu.tiled_max_pooling`), not XLA's
        ``select_and_scatter``; same result, several times faster on CPU.

    Returns:
      ``engine(params, x, targets (B, K) int32, weights (B, K) float32)`` returning
      a pytree like ``params`` with ``Σ_i Σ_k w_ik (∂ log p(t_ik|x_i)/∂θ)²`` in
      float32. It has attributes ``plan``, ``logits_fn`` (``apply_fn`` with the
      same convolution routing, for the estimators that need the model's own
      predictions) and ``preferred_chunk`` (on CPU, 16: XLA:CPU's backward
      convolutions slow down several-fold on large batches that fall out of
      cache, so :func:`ldnas_jax.fisher_diagonal` uses chunks of at most this
      size unless given ``chunk_size``). Weights must be non-negative.

    Example:
      >>> from ldnas_jax.fisher._diagonal import make_vmap_engine
      >>> model = nn.Dense(3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
      >>> apply_fn = lambda p, x: model.apply({"params": p}, x)
      >>> x = jnp.ones((2, 4)); t = jnp.array([[0], [2]]); w = jnp.ones((2, 1))
      >>> fast = make_layerwise_engine(apply_fn, params, x, 3)(params, x, t, w)
      >>> ref = make_vmap_engine(apply_fn, 3)(params, x, t, w)
      >>> bool(jnp.allclose(fast["kernel"], ref["kernel"], rtol=1e-5))
      True
    """
    plan = layerwise_plan(apply_fn, params, example_x) if plan is None else plan
    leaves, treedef = jax.tree.flatten(params)
    layer_of_kernel = {l.kernel: n for n, l in enumerate(plan.layers)}
    fallback = plan.fallback
    max_positions = (
        _engine_matmul_positions()
        if matmul_conv_max_positions is None
        else matmul_conv_max_positions
    )
    group = examples_per_step or _default_group()
    micro = micro_batch or None

    def routed_call(next_fun, args, kwargs, ctx, kind, layer_params, geom):
        if (
            kind == "conv"
            and geom is not None
            and max_positions > 0
            and math.prod(geom.out_spatial) <= max_positions
        ):
            return conv_forward_matmul(
                ctx.module, geom, args[0], layer_params["kernel"], layer_params.get("bias")
            )
        return next_fun(*args, **kwargs)

    def logits_fn(p, x):
        with matmul_convs(max_positions):
            return apply_fn(p, x)

    def engine(params, x, targets, weights):
        x = jnp.asarray(x)
        targets = jnp.asarray(targets, jnp.int32)
        weights = jnp.asarray(weights, _F32)
        batch = x.shape[0]
        if micro is None or batch <= micro:
            return pass_sums(params, x, targets, weights)
        # Micro-batches, scanned: the working set of each pass stays in cache.
        pad = (-batch) % micro
        if pad:
            x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
            targets = jnp.concatenate([targets, jnp.zeros((pad, targets.shape[1]), targets.dtype)])
            weights = jnp.concatenate([weights, jnp.zeros((pad, weights.shape[1]), weights.dtype)])
        split = lambda a: a.reshape((-1, micro, *a.shape[1:]))
        zeros = jax.tree.map(lambda l: jnp.zeros(np.shape(l), _F32), params)
        step = lambda acc, xs: (jax.tree.map(jnp.add, acc, pass_sums(params, *xs)), None)
        return lax.scan(step, zeros, (split(x), split(targets), split(weights)))[0]

    def pass_sums(params, x, targets, weights):
        leaves = treedef.flatten_up_to(params)
        batch, k = targets.shape
        # √w folded into the cotangent: Σ w g² = Σ (√w g)².
        cot = jnp.sqrt(weights)[:, :, None] * jax.nn.one_hot(targets, num_classes, dtype=_F32)
        probes = [jnp.zeros(l.out_shape, l.out_dtype) for l in plan.layers]
        statics: dict[int, tuple] = {}

        def per_example(x_i, cot_i):
            def f(probe_values, fallback_values):
                values = list(leaves)
                for j, i in enumerate(fallback):
                    values[i] = fallback_values[j]
                id_of = {id(v): i for i, v in enumerate(values)}
                inputs: dict[int, jax.Array] = {}
                masks: dict[int, jax.Array] = {}

                def interceptor(next_fun, args, kwargs, ctx):
                    kind = layer_kind(ctx, args, kwargs)
                    layer_params = module_weights(ctx.module) if kind else None
                    n = (
                        None
                        if layer_params is None
                        else layer_of_kernel.get(id_of.get(id(layer_params["kernel"])))
                    )
                    if n is None:
                        return routed_call(
                            next_fun,
                            args,
                            kwargs,
                            ctx,
                            kind,
                            layer_params,
                            conv_geometry(ctx.module, args[0].shape)
                            if kind == "conv" and layer_params is not None
                            else None,
                        )
                    if n in inputs:
                        raise RuntimeError(
                            f"layer {plan.layers[n].path} was called twice; the plan saw one call"
                        )
                    geom = conv_geometry(ctx.module, args[0].shape) if kind == "conv" else None
                    out = routed_call(next_fun, args, kwargs, ctx, kind, layer_params, geom)
                    mask = getattr(ctx.module, "mask", None) if kind == "conv" else None
                    if mask is not None:  # may be traced: it leaves as an output, not a static
                        masks[n] = jnp.asarray(mask, _F32)
                    statics[n] = (kind, geom, tuple(args[0].shape))
                    inputs[n] = args[0]
                    return out + probe_values[n]

                with nn.intercept_methods(interceptor):
                    logits = apply_fn(treedef.unflatten(values), x_i[None])
                missing = [plan.layers[n].path for n in range(len(plan.layers)) if n not in inputs]
                if missing:
                    raise RuntimeError(
                        f"layers {missing} were not called; the plan saw them called"
                    )
                log_p = jax.nn.log_softmax(logits[0].astype(_F32))
                return log_p, ([inputs[n] for n in range(len(plan.layers))], masks)

            fallback_values = [leaves[i] for i in fallback]
            # Tiling max pooling backpropagates through a mask instead of select_and_scatter.
            _, pull_back, (acts, masks) = jax.vjp(
                tiled_max_pooling(f) if tiled_pooling else f,
                probes,
                fallback_values,
                has_aux=True,
            )
            deltas, fallback_grads = jax.vmap(pull_back)(cot_i)
            fallback_sq = [jnp.sum(jnp.square(g.astype(_F32)), axis=0) for g in fallback_grads]
            return acts, deltas, fallback_sq, masks

        acts, deltas, fallback_sq, masks = jax.vmap(per_example, out_axes=(0, 0, 0, None))(
            x, cot
        )

        out_leaves: list[Any] = [None] * len(leaves)
        for i, s in zip(fallback, fallback_sq):
            out_leaves[i] = jnp.sum(s, axis=0)
        for n, layer in enumerate(plan.layers):
            kind, geom, in_shape = statics[n]
            a, d = acts[n], deltas[n].astype(_F32)  # a: (B, *in_shape), d: (B, K, *out_shape)
            kernel_shape = np.shape(leaves[layer.kernel])
            out = kernel_shape[-1]
            if kind == "dense":
                fan_in = kernel_shape[0]
                positions = math.prod(in_shape[:-1])
            else:
                fan_in, positions = geom.fan_in, geom.positions
            s = _kernel_sum_sq(kind, geom, a, d, positions, fan_in, group)
            s = s.reshape(kernel_shape)
            if n in masks:
                s = s * jnp.square(masks[n])
            out_leaves[layer.kernel] = s
            if layer.bias is not None:
                per_target = jnp.sum(d.reshape(batch, k, -1, out), axis=2)  # (B, K, O)
                out_leaves[layer.bias] = jnp.sum(jnp.square(per_target), axis=(0, 1)).reshape(
                    np.shape(leaves[layer.bias])
                )
        return treedef.unflatten(out_leaves)

    engine.plan = plan
    engine.logits_fn = logits_fn
    engine.preferred_chunk = 16 if jax.default_backend() == "cpu" else None
    return engine
