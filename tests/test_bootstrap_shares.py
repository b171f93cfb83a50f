"""The paired bootstrap of d[b, t] over the target's examples, against per-resample recomputation.

The reference recomputes, for one resample, every Fisher from the resampled examples
themselves (``fisher_diagonal`` on ``x[idx]``, repeats included) and the distance with
``log_det_distance``: no chunk sums, no shared references.
"""

import jax
import numpy as np
import pytest

import ldnas_jax as ld
from ldnas_jax.data import Split
from ldnas_jax.distances import closest_shares
from ldnas_jax.models import make_model
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    bootstrap_closest_shares,
    bootstrap_log_dets,
    bootstrap_tables,
    task_distances,
)
from ldnas_jax.tasks._bootstrap import (
    chunk_indices,
    column_resample_counts,
    resample_counts,
    resampled_fisher,
)

NAMES = ("A", "B", "C")
EXAMPLES, CHUNKS, RESAMPLES = 12, 4, 3
RESAMPLE_KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def tiny():
    """Three random 2-class SmallVGGs and three targets of 12 8×8 images."""
    rng = np.random.default_rng(0)
    splits = [
        Split(rng.uniform(size=(EXAMPLES, 8, 8, 3)).astype(np.float32), np.arange(EXAMPLES) % 2)
        for _ in NAMES
    ]
    model = make_model("small_vgg", 2)
    variables = [dict(model.init(jax.random.key(i), splits[0].x[:1])) for i in range(len(NAMES))]
    networks = [TaskNetwork(n, "small_vgg", 2, v, 1.0, 0.1) for n, v in zip(NAMES, variables)]
    return networks, splits


def _reference_fisher(network, x, y):
    """F of ``network`` on exactly these examples: its own apply, batch statistics frozen."""
    model = make_model(network.model_name, network.num_classes)
    state = {k: v for k, v in network.variables.items() if k != "params"}

    def apply_fn(params, xb):
        return model.apply({"params": params, **state}, xb, train=False)

    return ld.fisher_diagonal(apply_fn, network.variables["params"], (x, y))


@pytest.mark.parametrize("normalize", ["target_mean", None])
def test_each_resample_equals_the_distance_recomputed_on_the_resampled_examples(tiny, normalize):
    networks, splits = tiny
    options = DistanceOptions(label_mode="pad", normalize=normalize, sigma=1e-2)
    log_dets = bootstrap_log_dets(
        networks, splits, [2, 2, 2], options=options, resample_key=RESAMPLE_KEY,
        resamples=RESAMPLES, chunks=CHUNKS,
    )  # fmt: skip
    tables = bootstrap_tables(log_dets)
    assert tables.shape == (RESAMPLES, 3, 3)
    chunks = chunk_indices(EXAMPLES, CHUNKS)
    checked = 0
    for t, name in enumerate(NAMES):
        counts = column_resample_counts(RESAMPLE_KEY, name, RESAMPLES, CHUNKS)
        for r in (0, RESAMPLES - 1):
            idx = np.concatenate([np.repeat(c, n) for c, n in zip(chunks, counts[r])])
            assert len(idx) == EXAMPLES
            x, y = splits[t].x[idx], splits[t].y[idx]
            own = _reference_fisher(networks[t], x, y)
            for b in range(3):
                other = _reference_fisher(networks[b], x, y)
                expected = ld.log_det_distance(other, own, sigma=1e-2, normalize=normalize)
                assert tables[r, b, t] == pytest.approx(expected, rel=1e-4, abs=1e-7)
                checked += b != t
    assert checked == 12
    # Resamples differ: the bootstrap is not the same table R times.
    assert not np.allclose(tables[0], tables[-1])


def test_one_chunk_gives_the_unresampled_table_in_every_resample(tiny):
    networks, splits = tiny
    options = DistanceOptions(label_mode="pad", max_examples=8)
    table = task_distances(networks, splits, [2, 2, 2], options=options, progress=False).matrix
    log_dets = bootstrap_log_dets(
        networks, splits, [2, 2, 2], options=options, resamples=4, chunks=1
    )
    for resampled in bootstrap_tables(log_dets):
        np.testing.assert_allclose(resampled, table, rtol=1e-4, atol=1e-7)
    shares = bootstrap_closest_shares(
        networks, splits, [2, 2, 2], options=options, resamples=4, chunks=1
    )
    np.testing.assert_array_equal(shares, closest_shares([table]))


def test_the_draw_is_the_target_s_whatever_the_other_tasks(tiny):
    networks, splits = tiny
    options = DistanceOptions(label_mode="pad", max_examples=8)
    kwargs = {"options": options, "resample_key": RESAMPLE_KEY, "resamples": 2, "chunks": 4}
    full = bootstrap_log_dets(networks, splits, [2, 2, 2], **kwargs)
    order = [2, 0]  # C then A: column C's resampled log-dets are the same numbers
    part = bootstrap_log_dets(
        [networks[i] for i in order], [splits[i] for i in order], [2, 2], **kwargs
    )
    np.testing.assert_allclose(part[:, :, 0], full[:, order, 2], rtol=1e-12)


def test_resampled_fisher_is_the_mean_over_the_drawn_examples():
    per_example = np.random.default_rng(1).uniform(size=(7, 5))
    chunks = chunk_indices(7, 3)
    sums = np.stack([per_example[c].sum(0) for c in chunks])
    sizes = np.array([len(c) for c in chunks])
    counts = np.array([2, 0, 1])
    idx = np.concatenate([np.repeat(c, n) for c, n in zip(chunks, counts)])
    np.testing.assert_allclose(
        resampled_fisher(sums, sizes, counts), per_example[idx].mean(0), rtol=1e-12
    )


def test_resample_counts_draw_with_replacement():
    counts = resample_counts(jax.random.key(0), 200, 16)
    assert counts.shape == (200, 16) and (counts.sum(1) == 16).all()
    assert (counts.max(1) > 1).mean() > 0.9  # almost every resample repeats a chunk
    # Each chunk is drawn once per resample on average.
    assert abs(counts.mean() - 1.0) < 0.05


def test_bad_arguments_are_refused_before_any_fisher(tiny):
    networks, splits = tiny
    with pytest.raises(ValueError, match="chunks"):
        bootstrap_log_dets(networks, splits, [2, 2, 2], chunks=EXAMPLES + 1, resamples=2)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_log_dets(networks, splits, [2, 2, 2], resamples=0)
    with pytest.raises(ValueError, match="one target split"):
        bootstrap_log_dets(networks, splits[:2], [2, 2, 2])
    with pytest.raises(TypeError, match="key"):
        bootstrap_log_dets(networks, splits, [2, 2, 2], chunks=2, resample_key=3)
