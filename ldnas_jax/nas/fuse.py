"""FUSE: alternate weight steps (α frozen) and α steps (weights frozen).

One round of the alternation is one jitted function built on ``jax.lax.scan``:

  (i)  α frozen: Optax steps on all candidates' weights over training batches;
  (ii) weights frozen: Optax steps on α over validation batches.

Both minimise the cross-entropy of the mixture output c̄(x) (paper eq. 4). The
winner is argmax α.

Several devices
---------------
Pass ``mesh=jax.sharding.Mesh(jax.devices(), ("data",))`` to ``run_fuse`` (or
training images already sharded over a mesh) and every step's batch is split
along its batch axis over the mesh's data axis, while weights, α and optimiser
states stay replicated. The round is one jitted program, so XLA reduces the
per-device gradients across devices: each step still takes the mean over the
whole batch and results equal the single-device ones up to float rounding.
The batch size must be a multiple of the devices on the data axis. On several
hosts, see ``docs/multi_host.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

# The data-parallel conventions (mesh / data_axis defaults) are fisher_diagonal's.
from ldnas_jax._checks import check_int, check_train_val
from ldnas_jax._sharding import data_mesh
from ldnas_jax.train import cross_entropy, optimizer_step
from ldnas_jax.xla_cpu._fast_routes import fast_routes
from ldnas_jax.nas.batching import batch_sharding, draw_batches, place_batches
from ldnas_jax.nas.genotype import Genotype
from ldnas_jax.nas.mixture import CandidateMixture, mixture_variables, split_mixture_variables

__all__ = [
    "FuseResult",
    "FuseState",
    "default_alpha_optimizer",
    "default_weight_optimizer",
    "init_fuse_state",
    "make_alpha_phase",
    "make_fuse_round",
    "make_weight_phase",
    "mixture_loss",
    "run_fuse",
]

Batches = tuple[jax.Array, jax.Array]  # (steps, B, H, W, C) images, (steps, B) labels
Phase = Callable[[Any, Batches], tuple[Any, jax.Array]]


class FuseState(NamedTuple):
    """Everything one FUSE round reads and writes.

    Attributes:
      params: weights of all candidates (the mixture's ``'params'`` collection).
      alpha: (C,) mixing logits (the ``'alpha'`` collection).
      weight_opt_state: Optax state of the weight optimiser.
      alpha_opt_state: Optax state of the α optimiser.
      step: number of rounds completed.
    """

    params: Any
    alpha: jax.Array
    weight_opt_state: Any
    alpha_opt_state: Any
    step: jax.Array


class FuseResult(NamedTuple):
    """Outcome of ``run_fuse``.

    Attributes:
      winner_index: argmax of the final α.
      winner: the winning genotype, ``genotypes[winner_index]``.
      alpha_history: (rounds_run, C) α after each round.
      rounds_run: rounds actually run (early stopping may end before max_rounds).
      params: final weights of all candidates.
      train_loss_history: (rounds_run,) mean mixture training loss of each round.
      val_loss_history: (rounds_run,) mean mixture validation loss of each round.
    """

    winner_index: int
    winner: Genotype
    alpha_history: np.ndarray
    rounds_run: int
    params: Any
    train_loss_history: np.ndarray
    val_loss_history: np.ndarray


def default_weight_optimizer() -> optax.GradientTransformation:
    """Adam at 3e-3: short FUSE budgets need candidates to learn fast.

    Example:
      >>> opt = default_weight_optimizer()
    """
    return optax.adam(3e-3)


def default_alpha_optimizer() -> optax.GradientTransformation:
    """Adam at 3e-2, so α can separate within a few dozen steps.

    Example:
      >>> opt = default_alpha_optimizer()
    """
    return optax.adam(3e-2)


def mixture_loss(mixture: CandidateMixture, params, alpha, x, y) -> jax.Array:
    """Cross-entropy of the mixture output on one batch, as a function of both trees.

    Example:
      >>> # jax.grad(mixture_loss, argnums=2)(mixture, params, alpha, x, y)  # dL/dα
    """
    # Traced around XLA:CPU's slow small-map convolutions and max-pool derivative.
    logits_of = fast_routes(lambda p, a, x: mixture.apply(mixture_variables(p, a), x, train=True))
    return cross_entropy(logits_of(params, alpha, x), y)


def init_fuse_state(
    mixture: CandidateMixture,
    key: jax.Array,
    example_x,
    weight_optimizer: optax.GradientTransformation,
    alpha_optimizer: optax.GradientTransformation,
) -> FuseState:
    """Initialises weights, α (zeros: uniform mixture) and both optimiser states.

    Args:
      mixture: the candidate mixture.
      key: PRNG key for the weights.
      example_x: a batch of NHWC images fixing the input shape (one image is used).
      weight_optimizer, alpha_optimizer: the two Optax optimisers.

    Example:
      >>> # state = init_fuse_state(mixture, jax.random.key(0), x[:1],
      >>> #                         optax.adam(1e-3), optax.adam(1e-2))
    """
    if np.ndim(example_x) != 4:
        raise ValueError(
            f"example_x must be NHWC images (B, H, W, C), got shape {np.shape(example_x)}"
        )
    params, alpha = split_mixture_variables(lazy_init(mixture, key, example_x))
    return FuseState(
        params=params,
        alpha=alpha,
        weight_opt_state=weight_optimizer.init(params),
        alpha_opt_state=alpha_optimizer.init(alpha),
        step=jnp.zeros((), jnp.int32),
    )


def lazy_init(module, key: jax.Array, example_x) -> dict:
    """``module.init`` without running the forward pass; same values, less compiling.

    Flax's ``lazy_init`` executes only the initialisers, each dispatched on its own
    and cached by shape across modules. A jitted ``init`` would instead recompile
    all random number generation for every new architecture, seconds on CPU for
    each FUSE iteration.
    """
    shape = jax.ShapeDtypeStruct((1,) + tuple(np.shape(example_x)[1:]), jnp.float32)
    return module.lazy_init(key, shape)


def _scan_descent(value_and_grad_fn, optimizer, value, opt_state, batches):
    """Optax steps on one pytree over stacked batches; returns (value, opt_state), losses."""

    def step(carry, batch):
        value, opt_state = carry
        loss, grad = value_and_grad_fn(value, batch)
        return optimizer_step(optimizer, grad, opt_state, value), loss

    return jax.lax.scan(step, (value, opt_state), batches)


def _weight_phase(mixture: CandidateMixture, optimizer: optax.GradientTransformation) -> Phase:
    loss_fn = functools.partial(mixture_loss, mixture)

    def phase(state: FuseState, batches: Batches):
        # α is a constant here: only the weights are differentiated and updated.
        alpha = jax.lax.stop_gradient(state.alpha)
        grad_fn = lambda params, batch: jax.value_and_grad(loss_fn)(params, alpha, *batch)
        (params, opt_state), losses = _scan_descent(
            grad_fn, optimizer, state.params, state.weight_opt_state, batches
        )
        return state._replace(params=params, weight_opt_state=opt_state), losses

    return phase


def _alpha_phase(mixture: CandidateMixture, optimizer: optax.GradientTransformation) -> Phase:
    loss_fn = functools.partial(mixture_loss, mixture)

    def phase(state: FuseState, batches: Batches):
        # The weights are constants here: only α is differentiated and updated.
        params = jax.lax.stop_gradient(state.params)
        grad_fn = lambda alpha, batch: jax.value_and_grad(loss_fn, argnums=1)(params, alpha, *batch)
        (alpha, opt_state), losses = _scan_descent(
            grad_fn, optimizer, state.alpha, state.alpha_opt_state, batches
        )
        return state._replace(alpha=alpha, alpha_opt_state=opt_state), losses

    return phase


def make_weight_phase(mixture: CandidateMixture, weight_optimizer) -> Phase:
    """Jitted step (i): ``(state, (xs, ys)) -> (state, losses)`` with α frozen.

    Example:
      >>> # state, losses = make_weight_phase(mixture, optax.adam(1e-3))(state, (xs, ys))
    """
    return jax.jit(_weight_phase(mixture, weight_optimizer))


def make_alpha_phase(mixture: CandidateMixture, alpha_optimizer) -> Phase:
    """Jitted step (ii): ``(state, (xs, ys)) -> (state, losses)`` with weights frozen.

    Example:
      >>> # state, losses = make_alpha_phase(mixture, optax.adam(1e-2))(state, (xs, ys))
    """
    return jax.jit(_alpha_phase(mixture, alpha_optimizer))


def make_fuse_round(
    mixture: CandidateMixture,
    weight_optimizer: optax.GradientTransformation,
    alpha_optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
) -> Callable[[FuseState, Batches, Batches], tuple[FuseState, dict]]:
    """One jitted round of the FUSE alternation.

    Args:
      mixture: the candidate mixture.
      weight_optimizer, alpha_optimizer: the two Optax optimisers.
      mesh: if given, the round is compiled for this mesh: the batches' batch axis
        (axis 1) is split over ``data_axis``, and the state and metrics are
        replicated. Without a mesh the round follows its inputs' shardings.
      data_axis: the mesh axis for the batch; default ``"data"`` if the mesh has
        one, else its first axis.

    Returns:
      ``round_fn(state, train_batches, val_batches) -> (state, metrics)``, where the
      batches are ``(xs, ys)`` of shapes (steps, B, H, W, C) and (steps, B) (the two
      may have different step counts) and metrics holds ``train_loss`` and
      ``val_loss`` per step and the new ``alpha``. ``state.step`` counts rounds.

    Example:
      >>> # round_fn = make_fuse_round(mixture, optax.adam(1e-3), optax.adam(1e-2))
      >>> # state, metrics = round_fn(state, (xs_tr, ys_tr), (xs_val, ys_val))
    """
    weight_phase = _weight_phase(mixture, weight_optimizer)
    alpha_phase = _alpha_phase(mixture, alpha_optimizer)

    def round_fn(state: FuseState, train_batches: Batches, val_batches: Batches):
        state, train_loss = weight_phase(state, train_batches)
        state, val_loss = alpha_phase(state, val_batches)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "alpha": state.alpha}
        return state._replace(step=state.step + 1), metrics

    if mesh is None:
        return jax.jit(round_fn)
    mesh, data_axis = data_mesh(mesh, data_axis, None)
    # Split batches and replicated parameters: XLA all-reduces the gradients of the
    # batch mean, so every device applies the same update.
    replicated, split = NamedSharding(mesh, P()), batch_sharding(mesh, data_axis)
    return jax.jit(round_fn, in_shardings=(replicated, split, split), out_shardings=replicated)


def _check_genotypes(genotypes) -> tuple[Genotype, ...]:
    genotypes = tuple(genotypes)
    if not genotypes:
        raise ValueError("FUSE needs at least one candidate genotype")
    for g in genotypes:
        if not isinstance(g, Genotype):
            raise TypeError(f"candidates must be Genotype instances, got {type(g).__name__}")
    return genotypes


def _stable_for(winners: list[int], rounds: int) -> bool:
    return len(winners) >= rounds and len(set(winners[-rounds:])) == 1


def _first_images(data):
    """``x`` of an ``(x, y)`` pair before it is copied to the host, to read its sharding."""
    return data[0] if isinstance(data, (tuple, list)) and len(data) == 2 else None


def _local_batch_size(batch_size: int, mesh: Mesh, data_axis: str) -> int:
    """Rows each process feeds per step; the global batch must split evenly over devices."""
    shards = mesh.shape[data_axis]
    if batch_size % shards:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the {shards} devices "
            f"on mesh axis {data_axis!r}"
        )
    return batch_size // jax.process_count()


def run_fuse(
    genotypes: Sequence[Genotype],
    train,
    val,
    *,
    key: jax.Array,
    num_classes: int,
    max_rounds: int = 20,
    patience_k: int = 3,
    steps_per_round: int = 10,
    alpha_steps_per_round: int | None = None,
    batch_size: int = 32,
    weight_optimizer: optax.GradientTransformation | None = None,
    alpha_optimizer: optax.GradientTransformation | None = None,
    channels: int = 16,
    num_cells: int = 3,
    reduction_positions: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    progress: bool = True,
) -> FuseResult:
    """Runs FUSE on a set of candidates and returns the argmax-α winner.

    Each round draws fresh batches from seeded permutations of the data, takes
    ``steps_per_round`` weight steps on ``train`` and ``alpha_steps_per_round``
    α steps on ``val``. It stops after ``max_rounds`` rounds, or once argmax α has
    been the same after each of the last ``patience_k`` rounds.

    Args:
      genotypes: the candidates C (duplicates allowed, at least one).
      train, val: ``(x, y)`` pairs, x (N, H, W, C) images, y (N,) int labels.
      key: PRNG key for weight initialisation and batch order.
      num_classes: labels lie in [0, num_classes).
      max_rounds, patience_k: stopping criteria (both >= 1).
      steps_per_round: weight steps per round.
      alpha_steps_per_round: α steps per round; defaults to ``steps_per_round``.
      batch_size: examples per step, at most the size of each split.
      weight_optimizer, alpha_optimizer: Optax optimisers; default
        ``default_weight_optimizer()`` and ``default_alpha_optimizer()``.
      channels, num_cells, reduction_positions: size of every candidate ``Skeleton``.
      mesh: a :class:`jax.sharding.Mesh` to split every batch over (see the module
        docstring); ``batch_size`` is then the global batch. Default: the mesh
        ``train``'s images are sharded on, if any, else one device. On several
        processes, ``train`` and ``val`` are each process's own share.
      data_axis: the mesh axis for the batch; default ``"data"`` if the mesh has
        one, else its first axis.
      progress: show a tqdm bar.

    Returns:
      A ``FuseResult``; with a mesh, ``params`` are replicated over its devices.

    Raises:
      ValueError / TypeError: no candidates, malformed data, bad counts, a batch
        size that does not split evenly over the mesh's data axis.

    Example:
      >>> # result = run_fuse(space.sample(key, 3), (x_tr, y_tr), (x_val, y_val),
      >>> #                   key=key, num_classes=10, max_rounds=5)
      >>> # result.winner, result.alpha_history.shape
    """
    genotypes = _check_genotypes(genotypes)
    mesh, data_axis = data_mesh(mesh, data_axis, _first_images(train))
    (x_train, y_train), (x_val, y_val) = check_train_val(train, val, num_classes)
    max_rounds = check_int(max_rounds, name="max_rounds")
    patience_k = check_int(patience_k, name="patience_k")
    steps_per_round = check_int(steps_per_round, name="steps_per_round")
    alpha_steps = check_int(
        steps_per_round if alpha_steps_per_round is None else alpha_steps_per_round,
        name="alpha_steps_per_round",
    )
    batch_size = check_int(batch_size, name="batch_size")
    # Rows this process draws per step: the global batch on one process.
    local_batch = batch_size if mesh is None else _local_batch_size(batch_size, mesh, data_axis)
    what = "batch_size" if local_batch == batch_size else "the per-process batch"
    for name, size in (("train", len(x_train)), ("val", len(x_val))):
        if local_batch > size:
            raise ValueError(f"{what} {local_batch} exceeds the {size} examples of {name}")
    if weight_optimizer is None:
        weight_optimizer = default_weight_optimizer()
    if alpha_optimizer is None:
        alpha_optimizer = default_alpha_optimizer()

    mixture = CandidateMixture(genotypes, num_classes, channels, num_cells, reduction_positions)
    init_key, key = jax.random.split(key)
    state = init_fuse_state(mixture, init_key, x_train[:1], weight_optimizer, alpha_optimizer)
    round_fn = make_fuse_round(
        mixture, weight_optimizer, alpha_optimizer, mesh=mesh, data_axis=data_axis
    )
    place = lambda batches: batches
    if mesh is not None:
        # Host values, so that every process contributes the same replicated state.
        state = jax.device_put(jax.device_get(state), NamedSharding(mesh, P()))
        place = functools.partial(place_batches, sharding=batch_sharding(mesh, data_axis))
        if jax.process_count() > 1:  # each process walks its own share of the data
            key = jax.random.fold_in(key, jax.process_index())

    alphas, winners, train_losses, val_losses = [], [], [], []
    with tqdm(total=max_rounds, desc="FUSE", disable=not progress, leave=False) as bar:
        for round_key in jax.random.split(key, max_rounds):
            train_key, val_key = jax.random.split(round_key)
            train_batches = place(
                draw_batches(train_key, x_train, y_train, steps_per_round, local_batch)
            )
            val_batches = place(draw_batches(val_key, x_val, y_val, alpha_steps, local_batch))
            state, metrics = round_fn(state, train_batches, val_batches)
            alpha = np.asarray(metrics["alpha"])
            alphas.append(alpha)
            winners.append(int(np.argmax(alpha)))
            train_losses.append(float(np.mean(metrics["train_loss"])))
            val_losses.append(float(np.mean(metrics["val_loss"])))
            bar.update()
            bar.set_postfix(winner=winners[-1], val_loss=f"{val_losses[-1]:.3f}")
            if _stable_for(winners, patience_k):
                break

    return FuseResult(
        winner_index=winners[-1],
        winner=genotypes[winners[-1]],
        alpha_history=np.stack(alphas),
        rounds_run=len(alphas),
        params=state.params,
        train_loss_history=np.asarray(train_losses),
        val_loss_history=np.asarray(val_losses),
    )
