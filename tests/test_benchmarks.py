"""The Fisher speed benchmark's measurements and table, in a tiny configuration (no timing asserted)."""

import numpy as np
import pytest

from benchmarks import fisher_speed


@pytest.mark.parametrize(
    "approach",
    [
        "library",
        "library_pure_function",
        "library_nnx",
        "batched_grad_threshold",
        "batched_grad_fast_routes",
        "jax_vmap_chunked",
    ],
)
def test_jax_worker_measures_an_approach(approach):
    result = fisher_speed._jax_worker("small_cnn", approach, 8, 1)
    assert result["examples"] == 8 and result["backend"] == "cpu"
    assert result["examples_per_s"] == pytest.approx(8 / result["seconds"])
    assert np.isfinite(result["peak_rss_delta_mib"])
    assert result["first_call_s"] > 0
    # The timed row lists the route of each convolution shape it timed (none at 8 examples).
    assert ("conv_routes" in result) == (approach == "batched_grad_fast_routes")


def test_the_three_ways_of_writing_a_model_have_one_fisher():
    """The plain-function and NNX benchmark models share the linen model's plan and Fisher."""
    import jax

    import ldnas_jax as ld
    from benchmarks._models import nnx_model, pure_function_model

    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    for build in (pure_function_model, nnx_model):
        apply_fn, params = build("small_cnn")
        plan = ld.fisher.layerwise_plan(apply_fn, params, x)
        assert plan.fallback == () and len(plan.layers) == 4  # three convolutions and the head
        fast = ld.fisher_diagonal(apply_fn, params, (x, np.array([1, 7])))
        reference = ld.fisher_diagonal(apply_fn, params, (x, np.array([1, 7])), method="vmap")
        for a, e in zip(jax.tree.leaves(fast), jax.tree.leaves(reference)):
            assert np.linalg.norm(a - e) <= 1e-5 * np.linalg.norm(e)


def test_targets_are_the_issue_ratios_of_one_run():
    def row(seconds, examples=64, first=1.0):
        return {
            "seconds": seconds,
            "examples": examples,
            "examples_per_s": examples / seconds,
            "first_call_s": first,
        }

    results = {
        "library": row(1.0, first=4.0),
        "library_pure_function": row(1.1),
        "library_nnx": row(1.5),
        "jax_vmap_chunked": row(8.0, first=5.0),
        "torch_func": row(2.0),
        "torch_loop": {"error": "timed out"},
    }
    targets = fisher_speed._targets("small_cnn", results)
    assert targets["plain function / linen Fisher time"][0] == pytest.approx(1.1)
    assert targets["NNX / linen Fisher time"][0] == pytest.approx(1.5)
    assert targets["linen Fisher / torch.func, ex/s"][0] == pytest.approx(2.0)
    assert targets["first call, fast path / vmap path"][0] == pytest.approx(0.8)
    vgg = fisher_speed._targets("vgg16", {"library": row(1.0), "torch_loop": row(4.0)})
    assert vgg == {"linen Fisher / best PyTorch Fisher, ex/s": (pytest.approx(4.0), ">= 2")}


def test_table_gives_ratios_against_the_floors_and_pytorch():
    def row(examples_per_s, examples=64):
        return {
            "examples": examples,
            "examples_per_s": examples_per_s,
            "seconds": 64 / examples_per_s,
        }

    results = {
        "library": row(40.0),
        "batched_grad": row(20.0),
        "batched_grad_fast_routes": row(80.0),
        "torch_loop": row(10.0, examples=16),
        "torch_func": row(8.0, examples=16),
        "torch_batched": row(100.0),
        "jax_loop": {"error": "timed out"},
    }
    lines = fisher_speed._table("vgg16", results).splitlines()
    library = next(line for line in lines if line.startswith(fisher_speed.LABELS["library"]))
    # per 64 examples: 1.6 s against the floor's 3.2 s and the routed floor's 0.8 s; 4× torch's loop
    assert library.split()[-5:-2] == ["0.50", "2.00", "4.00"]
    routed = next(l for l in lines if l.startswith(fisher_speed.LABELS["batched_grad_fast_routes"]))
    assert routed.split()[-3] == "0.80"  # against PyTorch's batched gradient
    assert any("error: timed out" in line for line in lines)


def test_backward_benchmark_times_the_same_functions_both_ways():
    # The two variants must differ only in their backward passes: equal values and
    # gradients, and the library's functions are back in place after the block.
    import jax
    import jax.numpy as jnp

    from benchmarks import backward_passes
    from ldnas_jax.nas import convolution, operations

    library = convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 1, 3)), jnp.float32)
    dense = jnp.asarray(np.random.default_rng(2).normal(size=(1, 7, 3, 3)), jnp.float32)

    def gradients():
        def loss(x, kernel, dense):
            y = convolution.depthwise_conv2d(x, kernel, 2, 1) + convolution.conv2d(x, dense, 2)
            return jnp.sum(jnp.cos(y)) + jnp.sum(jnp.sin(operations.max_pool(x, 3, 2)))

        return jax.grad(loss, (0, 1, 2))(x, kernel, dense)

    with backward_passes.autodiff_backward_passes():
        assert convolution.depthwise_conv2d is backward_passes.autodiff_depthwise
        assert convolution.conv2d is backward_passes.autodiff_dense
        assert operations.max_pool is backward_passes.autodiff_max_pool
        step, args = backward_passes.operation_step("max_pool_3x3", 1, x)
        assert step(*args)[1].shape == x.shape
        autodiff = gradients()
    assert (convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool) == library
    for a, b in zip(autodiff, gradients()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
