"""FUSE as it ran before genotypes became data: one program compiled per candidate set.

The reference that ``benchmarks/search_speed.py`` times against the library's
switch path, and that ``tests/test_nas_switch.py`` checks the library against.
Each FUSE run builds the static :class:`~ldnas_jax.nas.CandidateMixture` (one
``Skeleton`` per candidate), initialises it with ``lazy_init`` and jits a fresh
round for it, exactly as ``ldnas_jax.nas.fuse`` did before; the batches and keys
follow ``run_fuse``'s schedule, so both paths see the same data.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import check_train_val
from ldnas_jax.nas import (
    CandidateMixture,
    FuseConfig,
    SearchSpace,
    draw_batches,
    mixture_variables,
    resolve_fuse_config,
    split_mixture_variables,
)
from ldnas_jax.train import cross_entropy, optimizer_step
from ldnas_jax.xla_cpu import fast_routes


def static_round(mixture: CandidateMixture, weight_optimizer, alpha_optimizer):
    """The jitted round of one candidate set (compiled anew for every set)."""
    logits_of = fast_routes(lambda p, a, x: mixture.apply(mixture_variables(p, a), x, train=True))

    def loss(params, alpha, x, y):
        return cross_entropy(logits_of(params, alpha, x), y)

    def descend(grad_fn, optimizer, value, opt_state, batches):
        def step(carry, batch):
            value, opt_state = carry
            loss_value, grad = grad_fn(value, batch)
            return optimizer_step(optimizer, grad, opt_state, value), loss_value

        return jax.lax.scan(step, (value, opt_state), batches)

    @jax.jit
    def round_fn(state, train_batches, val_batches):
        params, alpha, w_state, a_state = state
        frozen_alpha = jax.lax.stop_gradient(alpha)
        (params, w_state), train_loss = descend(
            lambda p, b: jax.value_and_grad(loss)(p, frozen_alpha, *b),
            weight_optimizer,
            params,
            w_state,
            train_batches,
        )
        frozen = jax.lax.stop_gradient(params)
        (alpha, a_state), val_loss = descend(
            lambda a, b: jax.value_and_grad(loss, argnums=1)(frozen, a, *b),
            alpha_optimizer,
            alpha,
            a_state,
            val_batches,
        )
        return (params, alpha, w_state, a_state), (train_loss, val_loss)

    return round_fn


def run_fuse_static(genotypes, train, val, *, key, num_classes, config=None, initial_params=None):
    """``run_fuse`` on the static mixture; returns a dict of its winner and histories.

    ``initial_params`` replaces the mixture's own ``lazy_init`` weights (in
    ``CandidateMixture`` layout), so a test can start both paths alike.
    """
    config = resolve_fuse_config(config)
    (x_train, y_train), (x_val, y_val) = check_train_val(train, val, num_classes)
    mixture = CandidateMixture(
        tuple(genotypes), num_classes, config.channels, config.num_cells, config.reduction_positions
    )
    init_key, key = jax.random.split(key)
    shape = jax.ShapeDtypeStruct((1, *x_train.shape[1:]), jnp.float32)
    params, alpha = split_mixture_variables(mixture.lazy_init(init_key, shape))
    if initial_params is not None:
        params = initial_params
    w_opt, a_opt = config.weight_optimizer, config.alpha_optimizer
    state = (params, alpha, w_opt.init(params), a_opt.init(alpha))
    round_fn = static_round(mixture, w_opt, a_opt)
    alphas, winners, train_losses, val_losses = [], [], [], []
    for round_key in jax.random.split(key, config.max_rounds):
        train_key, val_key = jax.random.split(round_key)
        train_batches = draw_batches(
            train_key, x_train, y_train, config.steps_per_round, config.batch_size
        )
        val_batches = draw_batches(
            val_key, x_val, y_val, config.alpha_steps_per_round, config.batch_size
        )
        state, (train_loss, val_loss) = round_fn(state, train_batches, val_batches)
        alphas.append(np.asarray(state[1]))
        winners.append(int(np.argmax(alphas[-1])))
        train_losses.append(float(np.mean(train_loss)))
        val_losses.append(float(np.mean(val_loss)))
        if len(winners) >= config.patience_k and len(set(winners[-config.patience_k :])) == 1:
            break
    return {
        "winner_index": winners[-1],
        "winner": tuple(genotypes)[winners[-1]],
        "alpha_history": np.stack(alphas),
        "train_loss_history": np.asarray(train_losses),
        "val_loss_history": np.asarray(val_losses),
        "params": state[0],
    }


def fuse_search_static(
    space: SearchSpace,
    train,
    val,
    *,
    key,
    num_classes: int,
    num_candidates: int,
    max_iterations: int,
    config: FuseConfig | None = None,
):
    """``fuse_search``'s loop (sample C, add c*, FUSE, keep the winner) on the static path."""
    start = time.perf_counter()
    best, history = None, []
    for iteration in range(max_iterations):
        sample_key, fuse_key, key = jax.random.split(key, 3)
        sampled = space.sample(sample_key, num_candidates)
        candidates = tuple(dict.fromkeys(sampled + (() if best is None else (best,))))
        result = run_fuse_static(
            candidates, train, val, key=fuse_key, num_classes=num_classes, config=config
        )
        best = result["winner"]
        history.append(
            {
                "iteration": iteration,
                "candidates": [g.to_json() for g in candidates],
                "alpha": result["alpha_history"][-1].tolist(),
                "winner": best.to_json(),
            }
        )
    return best, history, time.perf_counter() - start


def random_search_static(
    space: SearchSpace,
    train,
    val,
    *,
    key,
    num_classes: int,
    num_samples: int,
    train_steps: int,
    batch_size: int,
    channels: int,
    num_cells: int,
):
    """``random_search``'s samples and batches, each trained as its own ``Skeleton`` program."""
    from ldnas_jax.nas import (
        Skeleton,
        default_weight_optimizer,
        draw_batch_indices,
        make_train_and_evaluate,
    )

    start = time.perf_counter()
    (x_train, y_train), (x_val, y_val) = check_train_val(train, val, num_classes)
    sample_key, key = jax.random.split(key)
    scores = []
    for genotype in space.sample(sample_key, num_samples):
        init_key, batch_key, key = jax.random.split(key, 3)
        model = Skeleton(genotype, num_classes, channels, num_cells)
        shape = jax.ShapeDtypeStruct((1, *x_train.shape[1:]), jnp.float32)
        params = model.lazy_init(init_key, shape)["params"]
        index = draw_batch_indices(batch_key, len(x_train), train_steps, batch_size)
        fn = make_train_and_evaluate(model, default_weight_optimizer())
        scores.append((genotype, float(fn(params, x_train, y_train, index, x_val, y_val)[2])))
    best = max(scores, key=lambda s: s[1])[0]
    return best, scores, time.perf_counter() - start
