"""FUSE: alternate weight steps (α frozen) and α steps (weights frozen).

One round of the alternation is one jitted function built on ``jax.lax.scan``:

  (i)  α frozen: Optax steps on all candidates' weights over training batches;
  (ii) weights frozen: Optax steps on α over validation batches.

Both minimise the cross-entropy of the mixture output c̄(x) (paper eq. 4). The
winner is argmax α.

Genotypes are data. The candidates run in the switch layout of their mixture
(:func:`~ldnas_jax.nas.mixture_layout`): the state carries each candidate's
genotype as an integer array, and the compiled round depends only on the
search space, the skeleton's size, the number of candidate places and the
optimisers. Every candidate set, iteration and seed of a search with the same
shapes reuses one compiled round (and one compiled initialisation).

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
from ldnas_jax.nas.batching import batch_sharding, draw_batches, place_batches
from ldnas_jax.nas.cell import check_reduction_positions
from ldnas_jax.nas.genotype import Genotype
from ldnas_jax.nas.mixture import CandidateMixture, mixture_layout, mixture_logits
from ldnas_jax.nas.operations import registry_generation
from ldnas_jax.nas.switch import SwitchSkeleton, switch_init
from ldnas_jax.train import cross_entropy, optimizer_step
from ldnas_jax.xla_cpu import fast_routes

__all__ = [
    "FuseConfig",
    "FuseResult",
    "FuseState",
    "default_alpha_optimizer",
    "default_weight_optimizer",
    "init_fuse_state",
    "make_alpha_phase",
    "make_fuse_round",
    "make_weight_phase",
    "mixture_loss",
    "resolve_fuse_config",
    "run_fuse",
]

# What FUSE's weight phase minimises (FuseConfig.weight_loss).
WEIGHT_LOSSES = ("mixture", "separate")

Batches = tuple[jax.Array, jax.Array]  # (steps, B, H, W, C) images, (steps, B) labels
Phase = Callable[[Any, Batches], tuple[Any, jax.Array]]


class FuseState(NamedTuple):
    """Everything one FUSE round reads and writes.

    Attributes:
      params: weights of every candidate place, in the switch layout
        (:func:`~ldnas_jax.nas.mixture_layout`), stacked on a leading axis.
      alpha: (slots,) mixing logits; inactive places keep 0 and weigh nothing.
      weight_opt_state: Optax state of the weight optimiser.
      alpha_opt_state: Optax state of the α optimiser.
      step: number of rounds completed.
      choices: (slots, 2, num_edges) int32, each place's genotype as operation
        indices: data, so a new candidate set compiles nothing.
      active: (slots,) bool, the places that hold a candidate.
    """

    params: Any
    alpha: jax.Array
    weight_opt_state: Any
    alpha_opt_state: Any
    step: jax.Array
    choices: jax.Array
    active: jax.Array


class FuseResult(NamedTuple):
    """Outcome of ``run_fuse``.

    Attributes:
      winner_index: argmax of the final α.
      winner: the winning genotype, ``genotypes[winner_index]``.
      alpha_history: (rounds_run, C) α after each round.
      rounds_run: rounds actually run (early stopping may end before max_rounds).
      params: final weights of every candidate place in the switch layout;
        ``genotype_params(network, tree_map(lambda a: a[c], params), genotypes[c])``
        gives candidate c's ``Skeleton`` weights.
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


class FuseConfig(NamedTuple):
    """The options of one FUSE run (:func:`run_fuse`), shared by the searches built on it.

    Attributes:
      max_rounds, patience_k: stopping criteria (both >= 1): at most
        ``max_rounds`` α rounds, or once argmax α has been the same after each of
        the last ``patience_k`` α rounds.
      warmup_rounds: rounds of weight steps alone before the first α step (α
        frozen at the uniform mixture), counted apart from ``max_rounds``. A
        candidate without weights (pooling, identity) fits fastest in the first
        steps, so α moved from the start favours it; DARTS and the authors' FUSE
        train the weights first. ``benchmarks.fuse_pick_rate`` measures the effect.
      weight_loss: what step (i) minimises: ``"mixture"``, the cross-entropy of c̄
        (the paper's eq. 4: candidates train jointly and may lean on each other), or
        ``"separate"``, the sum of each candidate's own cross-entropy (each trains as
        if alone; α then weighs networks that stand on their own).
      steps_per_round: weight steps per round.
      alpha_steps_per_round: α steps per round; None: ``steps_per_round``.
      batch_size: examples per step (the global batch with a mesh).
      weight_optimizer, alpha_optimizer: Optax optimisers; None:
        :func:`default_weight_optimizer` and :func:`default_alpha_optimizer`.
        Reuse one object across runs: compiled rounds are cached per optimiser.
      channels, num_cells, reduction_positions: size of every candidate
        ``Skeleton``.
      mesh, data_axis: data parallelism (see the module docstring).

    Example:
      >>> FuseConfig(max_rounds=5)._replace(batch_size=16).batch_size
      16
    """

    max_rounds: int = 20
    patience_k: int = 3
    warmup_rounds: int = 0
    weight_loss: str = "mixture"
    steps_per_round: int = 10
    alpha_steps_per_round: int | None = None
    batch_size: int = 32
    weight_optimizer: optax.GradientTransformation | None = None
    alpha_optimizer: optax.GradientTransformation | None = None
    channels: int = 16
    num_cells: int = 3
    reduction_positions: Sequence[int] | None = None
    mesh: Mesh | None = None
    data_axis: str | None = None


def resolve_fuse_config(config: FuseConfig | None = None, **options) -> FuseConfig:
    """``config`` (default ``FuseConfig()``) with ``options`` replacing its fields, checked.

    Counts must be ints >= 1; the optimisers default to the cached Adam ones;
    ``reduction_positions`` becomes a tuple.

    Raises:
      TypeError: ``config`` is not a FuseConfig, an unknown option, a count not an int.
      ValueError: a count < 1, reduction positions outside the skeleton.

    Example:
      >>> resolve_fuse_config(FuseConfig(max_rounds=4), batch_size=8).max_rounds
      4
      >>> resolve_fuse_config(rounds=3)
      Traceback (most recent call last):
      ...
      TypeError: unknown FUSE options ['rounds']; known: ['alpha_optimizer', ...]
    """
    if config is None:
        config = FuseConfig()
    if not isinstance(config, FuseConfig):
        raise TypeError(f"config must be a FuseConfig, got {type(config).__name__}")
    unknown = sorted(set(options) - set(FuseConfig._fields))
    if unknown:
        raise TypeError(f"unknown FUSE options {unknown}; known: {sorted(FuseConfig._fields)}")
    config = config._replace(**options)
    counts = {
        name: check_int(getattr(config, name), name=name)
        for name in (
            "max_rounds",
            "patience_k",
            "steps_per_round",
            "batch_size",
            "channels",
            "num_cells",
        )
    }
    if config.weight_loss not in WEIGHT_LOSSES:
        raise ValueError(f"weight_loss must be one of {WEIGHT_LOSSES}, got {config.weight_loss!r}")
    if isinstance(config.warmup_rounds, bool) or not isinstance(config.warmup_rounds, int):
        raise TypeError(f"warmup_rounds must be an int, got {config.warmup_rounds!r}")
    if config.warmup_rounds < 0:
        raise ValueError(f"warmup_rounds must be >= 0, got {config.warmup_rounds}")
    alpha_steps = config.alpha_steps_per_round
    counts["alpha_steps_per_round"] = check_int(
        counts["steps_per_round"] if alpha_steps is None else alpha_steps,
        name="alpha_steps_per_round",
    )
    return config._replace(
        **counts,
        weight_optimizer=config.weight_optimizer or default_weight_optimizer(),
        alpha_optimizer=config.alpha_optimizer or default_alpha_optimizer(),
        reduction_positions=check_reduction_positions(
            config.reduction_positions, counts["num_cells"]
        ),
    )


@functools.lru_cache(maxsize=1)
def default_weight_optimizer() -> optax.GradientTransformation:
    """Adam at 3e-3: short FUSE budgets need candidates to learn fast.

    One object per process, so the rounds compiled for it are reused.

    Example:
      >>> default_weight_optimizer() is default_weight_optimizer()
      True
    """
    return optax.adam(3e-3)


@functools.lru_cache(maxsize=1)
def default_alpha_optimizer() -> optax.GradientTransformation:
    """Adam at 3e-2, so α can separate within a few dozen steps.

    Example:
      >>> default_alpha_optimizer() is default_alpha_optimizer()
      True
    """
    return optax.adam(3e-2)


def mixture_loss(mixture: CandidateMixture, params, alpha, x, y) -> jax.Array:
    """Cross-entropy of the mixture output on one batch, as a function of both trees.

    ``params`` are the switch-layout weights of :class:`FuseState`.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> mixture = CandidateMixture((g, g), num_classes=2, channels=4, num_cells=1)
      >>> x, y = np.ones((4, 8, 8, 3), np.float32), np.array([0, 1, 1, 0])
      >>> state = init_fuse_state(mixture, jax.random.key(0), x, optax.sgd(0.1), optax.sgd(0.1))
      >>> round(float(mixture_loss(mixture, state.params, state.alpha, x, y)), 3) > 0
      True
    """
    network, choices, active = mixture_layout(mixture)
    return _loss(network, params, choices, active, alpha, x, y)


def _loss(network: SwitchSkeleton, params, choices, active, alpha, x, y) -> jax.Array:
    # Traced around XLA:CPU's slow small-map convolutions and max-pool derivative.
    logits_of = fast_routes(lambda p, c, on, a, x: mixture_logits(network, p, c, on, a, x))
    return cross_entropy(logits_of(params, choices, active, alpha, x), y)


def _separate_loss(network: SwitchSkeleton, params, choices, active, x, y) -> jax.Array:
    """Σ over active places of each candidate's own cross-entropy: no candidate leans on another."""

    def own_loss(p, c):
        logits = fast_routes(lambda p, c, x: network.apply({"params": p}, x, c))(p, c, x)
        return cross_entropy(logits, y)

    def place_loss(p, c, on):  # an empty place costs nothing and weighs nothing
        return jax.lax.cond(on, lambda: own_loss(p, c), lambda: jnp.zeros((), jnp.float32))

    losses = jax.lax.map(lambda slot: place_loss(*slot), (params, choices, active))
    return jnp.sum(losses)


@functools.lru_cache(maxsize=16)
def _optimizer_init(optimizer: optax.GradientTransformation):
    # One program per optimiser and parameter shapes, not hundreds of eager zeros.
    return jax.jit(optimizer.init)


def init_fuse_state(
    mixture: CandidateMixture,
    key: jax.Array,
    example_x,
    weight_optimizer: optax.GradientTransformation,
    alpha_optimizer: optax.GradientTransformation,
) -> FuseState:
    """Initialises weights, α (zeros: uniform mixture) and both optimiser states.

    Weights are drawn by :func:`~ldnas_jax.nas.switch_init` in the mixture's
    switch layout, one program per layout and input shape.

    Args:
      mixture: the candidate mixture.
      key: PRNG key for the weights.
      example_x: a batch of NHWC images fixing the input shape (one image is used).
      weight_optimizer, alpha_optimizer: the two Optax optimisers.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> mixture = CandidateMixture((g,), num_classes=2, channels=4, num_cells=1, slots=3)
      >>> state = init_fuse_state(mixture, jax.random.key(0), np.ones((1, 8, 8, 3)),
      ...                         optax.adam(1e-3), optax.adam(1e-2))
      >>> state.alpha.shape, state.active.tolist()
      ((3,), [True, False, False])
    """
    if np.ndim(example_x) != 4:
        raise ValueError(
            f"example_x must be NHWC images (B, H, W, C), got shape {np.shape(example_x)}"
        )
    network, choices, active = mixture_layout(mixture)
    params = switch_init(network, key, example_x, slots=len(active))
    alpha = jnp.zeros(len(active), jnp.float32)
    return FuseState(
        params=params,
        alpha=alpha,
        weight_opt_state=_optimizer_init(weight_optimizer)(params),
        alpha_opt_state=_optimizer_init(alpha_optimizer)(alpha),
        step=jnp.zeros((), jnp.int32),
        choices=jnp.asarray(choices),
        active=jnp.asarray(active),
    )


def _scan_descent(value_and_grad_fn, optimizer, value, opt_state, batches):
    """Optax steps on one pytree over stacked batches; returns (value, opt_state), losses."""

    def step(carry, batch):
        value, opt_state = carry
        loss, grad = value_and_grad_fn(value, batch)
        return optimizer_step(optimizer, grad, opt_state, value), loss

    return jax.lax.scan(step, (value, opt_state), batches)


def _descent_phase(
    network: SwitchSkeleton, optimizer, trained: str, weight_loss: str = "mixture"
) -> Phase:
    """One FUSE phase: optax steps on ``trained`` (``"params"`` or ``"alpha"``), the other fixed."""
    opt_field = {"params": "weight_opt_state", "alpha": "alpha_opt_state"}[trained]
    separate = trained == "params" and weight_loss == "separate"

    def phase(state: FuseState, batches: Batches):
        # The other half is a constant here: only ``trained`` is differentiated and updated.
        fixed = jax.lax.stop_gradient(state.alpha if trained == "params" else state.params)

        def loss_fn(value, batch):
            params, alpha = (value, fixed) if trained == "params" else (fixed, value)
            if separate:
                return _separate_loss(network, params, state.choices, state.active, *batch)
            return _loss(network, params, state.choices, state.active, alpha, *batch)

        (value, opt_state), losses = _scan_descent(
            jax.value_and_grad(loss_fn),
            optimizer,
            getattr(state, trained),
            getattr(state, opt_field),
            batches,
        )
        return state._replace(**{trained: value, opt_field: opt_state}), losses

    return phase


def _weight_phase(
    network: SwitchSkeleton, optimizer: optax.GradientTransformation, weight_loss: str = "mixture"
) -> Phase:
    return _descent_phase(network, optimizer, "params", weight_loss)


def _alpha_phase(network: SwitchSkeleton, optimizer: optax.GradientTransformation) -> Phase:
    return _descent_phase(network, optimizer, "alpha")


def make_weight_phase(mixture: CandidateMixture, weight_optimizer) -> Phase:
    """Jitted step (i): ``(state, (xs, ys)) -> (state, losses)`` with α frozen.

    Stacked batches are (steps, B, H, W, C) images and (steps, B) labels (see
    :func:`~ldnas_jax.nas.draw_batches`); one weight step is taken per batch.
    """
    return jax.jit(_weight_phase(mixture_layout(mixture)[0], weight_optimizer))


def make_alpha_phase(mixture: CandidateMixture, alpha_optimizer) -> Phase:
    """Jitted step (ii): ``(state, (xs, ys)) -> (state, losses)`` with weights frozen.

    One α step is taken per stacked batch, as in :func:`make_weight_phase`.
    """
    return jax.jit(_alpha_phase(mixture_layout(mixture)[0], alpha_optimizer))


def make_fuse_round(
    mixture: CandidateMixture,
    weight_optimizer: optax.GradientTransformation,
    alpha_optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    weight_loss: str = "mixture",
) -> Callable[..., tuple[FuseState, dict]]:
    """One jitted round of the FUSE alternation.

    Args:
      mixture: the candidate mixture.
      weight_optimizer, alpha_optimizer: the two Optax optimisers.
      mesh: if given, the round is compiled for this mesh: the batches' batch axis
        (axis 1) is split over ``data_axis``, and the state and metrics are
        replicated. Without a mesh the round follows its inputs' shardings.
      data_axis: the mesh axis for the batch; default ``"data"`` if the mesh has
        one, else its first axis.
      weight_loss: what the weight phase minimises (:class:`FuseConfig`).

    Returns:
      ``round_fn(state, train_batches, val_batches, move_alpha) -> (state, metrics)``,
      where the batches are ``(xs, ys)`` of shapes (steps, B, H, W, C) and (steps, B)
      (the two may have different step counts), ``move_alpha`` is a boolean scalar
      (False: a warm-up round, whose α phase leaves α and its optimiser state as
      they were) and metrics holds ``train_loss`` and ``val_loss`` per step and the
      new ``alpha``. ``state.step`` counts rounds.
      The jitted round depends on the mixture's switch layout only (operations,
      skeleton size, places), not on its genotypes, and is cached: every mixture
      of the same layout gets the same compiled round.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> h = Genotype(("zero", "identity", "max_pool_3x3"), num_nodes=3)
      >>> mixture = CandidateMixture((g, h), num_classes=2, channels=4, num_cells=1)
      >>> w_opt, a_opt = default_weight_optimizer(), default_alpha_optimizer()
      >>> x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
      >>> y = np.arange(8) % 2
      >>> state = init_fuse_state(mixture, jax.random.key(0), x, w_opt, a_opt)
      >>> batches = draw_batches(jax.random.key(1), x, y, steps=2, batch_size=4)
      >>> round_fn = make_fuse_round(mixture, w_opt, a_opt)
      >>> state, metrics = round_fn(state, batches, batches, True)
      >>> int(state.step), metrics["train_loss"].shape, metrics["alpha"].shape
      (1, (2,), (2,))
      >>> round_fn is make_fuse_round(CandidateMixture((h, g), num_classes=2, channels=4,
      ...                                               num_cells=1), w_opt, a_opt)
      True
    """
    network = mixture_layout(mixture)[0]
    if mesh is not None:
        mesh, data_axis = data_mesh(mesh, data_axis, None)
    if weight_loss not in WEIGHT_LOSSES:
        raise ValueError(f"weight_loss must be one of {WEIGHT_LOSSES}, got {weight_loss!r}")
    return _compiled_round(
        network,
        weight_optimizer,
        alpha_optimizer,
        mesh,
        data_axis,
        registry_generation(),
        weight_loss,
    )


@functools.lru_cache(maxsize=32)
def _compiled_round(
    network, weight_optimizer, alpha_optimizer, mesh, data_axis, generation, weight_loss
):
    """The jitted round of one switch layout; ``generation`` keys out replaced operations."""
    del generation
    weight_phase = _weight_phase(network, weight_optimizer, weight_loss)
    alpha_phase = _alpha_phase(network, alpha_optimizer)

    def round_fn(state: FuseState, train_batches: Batches, val_batches: Batches, move_alpha):
        state, train_loss = weight_phase(state, train_batches)
        moved, val_loss = alpha_phase(state, val_batches)
        # A data flag, not a Python branch: warm-up and α rounds share one program.
        keep = lambda new, old: jnp.where(move_alpha, new, old)
        state = state._replace(
            alpha=keep(moved.alpha, state.alpha),
            alpha_opt_state=jax.tree.map(keep, moved.alpha_opt_state, state.alpha_opt_state),
        )
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "alpha": state.alpha}
        return state._replace(step=state.step + 1), metrics

    if mesh is None:
        return jax.jit(round_fn)
    # Split batches and replicated parameters: XLA all-reduces the gradients of the
    # batch mean, so every device applies the same update.
    replicated, split = NamedSharding(mesh, P()), batch_sharding(mesh, data_axis)
    return jax.jit(
        round_fn,
        in_shardings=(replicated, split, split, replicated),
        out_shardings=replicated,
    )


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
    config: FuseConfig | None = None,
    operations: Sequence[str] | None = None,
    slots: int | None = None,
    progress: bool = True,
    **options,
) -> FuseResult:
    """Runs FUSE on a set of candidates and returns the argmax-α winner.

    Each round draws fresh batches from seeded permutations of the data, takes
    ``steps_per_round`` weight steps on ``train`` and ``alpha_steps_per_round``
    α steps on ``val``. The first ``warmup_rounds`` rounds leave α at the uniform
    mixture. It stops after ``max_rounds`` α rounds, or once argmax α has been the
    same after each of the last ``patience_k`` α rounds.

    Args:
      genotypes: the candidates C (duplicates allowed, at least one).
      train, val: ``(x, y)`` pairs, x (N, H, W, C) images, y (N,) int labels.
      key: PRNG key for weight initialisation and batch order.
      num_classes: labels lie in [0, num_classes).
      config: a :class:`FuseConfig`; default ``FuseConfig()``.
      operations: the operations of the candidates' search space; every edge
        holds one weight set per operation (see :func:`make_fuse_round`).
        Default: the operations the candidates use. Passing the space's lets
        every candidate set of the space reuse one compiled round.
      slots: candidate places, >= C; default C. A search that keeps it fixed
        (as :func:`~ldnas_jax.nas.fuse_search` does) compiles once.
      progress: show a tqdm bar.
      **options: :class:`FuseConfig` fields overriding ``config``'s: max_rounds,
        patience_k, steps_per_round, alpha_steps_per_round, batch_size,
        weight_optimizer, alpha_optimizer, channels, num_cells,
        reduction_positions, mesh, data_axis. ``mesh`` is a
        :class:`jax.sharding.Mesh` to split every batch over (see the module
        docstring), ``batch_size`` then being the global batch. Default: the mesh
        ``train``'s images are sharded on, if any, else one device. On several
        processes, ``train`` and ``val`` are each process's own share.

    Returns:
      A ``FuseResult`` whose histories hold the α rounds (warm-up rounds are not
      recorded); with a mesh, ``params`` are replicated over its devices.

    Raises:
      ValueError / TypeError: no candidates, malformed data, bad counts, an
        unknown option, a batch size that does not split evenly over the mesh's
        data axis.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> h = Genotype(("zero",) * 3, num_nodes=3)
      >>> rng = np.random.default_rng(0)
      >>> data = (rng.normal(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> result = run_fuse((g, h), data, data, key=jax.random.key(0), num_classes=2,
      ...                   max_rounds=2, steps_per_round=2, batch_size=8, channels=4,
      ...                   num_cells=1, progress=False)
      >>> result.alpha_history.shape, result.winner in (g, h)
      ((2, 2), True)
    """
    genotypes = _check_genotypes(genotypes)
    config = resolve_fuse_config(config, **options)
    mesh = fuse_mesh(config, train)
    train, val = check_train_val(train, val, num_classes)
    return fuse_on_checked(
        genotypes, train, val, key=key, num_classes=num_classes, config=config, mesh=mesh,
        operations=operations, slots=slots, progress=progress,
    )  # fmt: skip


def fuse_mesh(config: FuseConfig, train) -> tuple:
    """``(mesh, data_axis)`` of a run: the config's, else the one ``train``'s images are on."""
    return data_mesh(config.mesh, config.data_axis, _first_images(train))


def fuse_on_checked(
    genotypes: tuple[Genotype, ...],
    train,
    val,
    *,
    key: jax.Array,
    num_classes: int,
    config: FuseConfig,
    mesh: tuple,
    operations=None,
    slots: int | None = None,
    progress: bool = True,
) -> FuseResult:
    """:func:`run_fuse` on arguments it has checked: resolved ``config``, checked data.

    ``mesh`` is :func:`fuse_mesh`'s ``(mesh, data_axis)``. A search that runs FUSE again
    and again on the same data (:func:`~ldnas_jax.nas.fuse_search`) checks once and calls
    this; not exported.
    """
    mesh, data_axis = mesh
    (x_train, y_train), (x_val, y_val) = train, val
    local_batch = _checked_local_batch(config.batch_size, mesh, data_axis, x_train, x_val)
    weight_optimizer, alpha_optimizer = config.weight_optimizer, config.alpha_optimizer

    mixture = _checked_mixture(genotypes, num_classes, config, operations, slots)
    init_key, key = jax.random.split(key)
    state = init_fuse_state(mixture, init_key, x_train[:1], weight_optimizer, alpha_optimizer)
    round_fn = make_fuse_round(
        mixture,
        weight_optimizer,
        alpha_optimizer,
        mesh=mesh,
        data_axis=data_axis,
        weight_loss=config.weight_loss,
    )
    place = lambda batches: batches
    if mesh is None:
        # Once, not per round: each round's batches are then gathered on the device.
        x_train, y_train, x_val, y_val = jax.device_put((x_train, y_train, x_val, y_val))
    else:
        # Host values, so that every process contributes the same replicated state.
        state = jax.device_put(jax.device_get(state), NamedSharding(mesh, P()))
        place = functools.partial(place_batches, sharding=batch_sharding(mesh, data_axis))
        if jax.process_count() > 1:  # each process walks its own share of the data
            key = jax.random.fold_in(key, jax.process_index())

    count = len(genotypes)
    alphas, winners, train_losses, val_losses = [], [], [], []
    warmup, total = config.warmup_rounds, config.warmup_rounds + config.max_rounds
    # Without warm-up the round keys are those of earlier releases: same results.
    round_keys = jax.random.split(key, total)
    with tqdm(total=total, desc="FUSE", disable=not progress, leave=False) as bar:
        for index, round_key in enumerate(round_keys):
            train_key, val_key = jax.random.split(round_key)
            train_batches = place(
                draw_batches(train_key, x_train, y_train, config.steps_per_round, local_batch)
            )
            val_batches = place(
                draw_batches(val_key, x_val, y_val, config.alpha_steps_per_round, local_batch)
            )
            move_alpha = np.bool_(index >= warmup)
            state, metrics = round_fn(state, train_batches, val_batches, move_alpha)
            if not move_alpha:
                bar.update()
                continue
            alpha = np.asarray(metrics["alpha"])[:count]  # the places that hold candidates
            alphas.append(alpha)
            winners.append(int(np.argmax(alpha)))
            train_losses.append(float(np.mean(metrics["train_loss"])))
            val_losses.append(float(np.mean(metrics["val_loss"])))
            bar.update()
            bar.set_postfix(winner=winners[-1], val_loss=f"{val_losses[-1]:.3f}")
            if _stable_for(winners, config.patience_k):
                break

    return _fuse_result(genotypes, winners, alphas, state, train_losses, val_losses)


def _checked_local_batch(batch_size: int, mesh, data_axis: str, x_train, x_val) -> int:
    """Rows this process draws per step, at most the examples of train and of val."""
    # The global batch on one process.
    local_batch = batch_size if mesh is None else _local_batch_size(batch_size, mesh, data_axis)
    what = "batch_size" if local_batch == batch_size else "the per-process batch"
    for name, size in (("train", len(x_train)), ("val", len(x_val))):
        if local_batch > size:
            raise ValueError(f"{what} {local_batch} exceeds the {size} examples of {name}")
    return local_batch


def _checked_mixture(genotypes, num_classes: int, config: FuseConfig, operations, slots):
    """The candidates' :class:`CandidateMixture` of the run's skeleton and candidate places."""
    mixture = CandidateMixture(
        genotypes,
        num_classes,
        config.channels,
        config.num_cells,
        config.reduction_positions,
        operations=None if operations is None else tuple(operations),
        slots=slots,
    )
    mixture_layout(mixture)  # checks operations and slots before any compute
    return mixture


def _fuse_result(genotypes, winners, alphas, state, train_losses, val_losses) -> FuseResult:
    """The run's :class:`FuseResult` from its α rounds' records and final state."""
    return FuseResult(
        winner_index=winners[-1],
        winner=genotypes[winners[-1]],
        alpha_history=np.stack(alphas),
        rounds_run=len(alphas),
        params=state.params,
        train_loss_history=np.asarray(train_losses),
        val_loss_history=np.asarray(val_losses),
    )
