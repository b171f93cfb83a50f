"""Operations keep channels, keep the size at stride 1 and halve it at stride 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import primitive_names
from _toy_tasks import rbg_key

from ldnas_jax import nas


def output_shape(op, x):
    # Shapes only: eval_shape traces without compiling or running anything.
    return jax.eval_shape(lambda x: op.apply(op.init(rbg_key(1), x), x), x).shape


@pytest.mark.parametrize("operation", nas.ALL_OPERATIONS)
@pytest.mark.parametrize("size", [8, 7])
def test_operation_shapes(operation, size):
    x = jax.ShapeDtypeStruct((2, size, size, 4), jnp.float32)
    for stride, expected in ((1, size), (2, -(-size // 2))):
        op = nas.make_operation(operation, channels=4, stride=stride)
        assert output_shape(op, x) == (2, expected, expected, 4), (operation, stride)


def test_operations_run_and_stay_finite():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
    for operation in nas.ALL_OPERATIONS:
        op = nas.make_operation(operation, channels=4, stride=2)
        variables = op.lazy_init(rbg_key(1), jax.ShapeDtypeStruct(x.shape, x.dtype))
        y = jax.jit(op.apply)(variables, x)
        assert y.shape == (2, 4, 4, 4) and bool(jnp.all(jnp.isfinite(y))), operation


@pytest.mark.parametrize(
    "kernel_hw, strides, dilation",
    [((3, 3), (1, 1), 1), ((3, 3), (2, 2), 1), ((5, 5), (2, 2), 2), ((1, 7), (1, 2), 1)],
)
def test_convolutions_match_xla_reference(kernel_hw, strides, dilation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)

    def reference(kernel, groups):
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            strides,
            "SAME",
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    dense = rng.normal(size=kernel_hw + (3, 5)).astype(np.float32)
    depthwise = rng.normal(size=kernel_hw + (1, 3)).astype(np.float32)
    np.testing.assert_allclose(
        nas.conv2d(x, dense, strides, dilation), reference(dense, 1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        nas.depthwise_conv2d(x, depthwise, strides, dilation),
        reference(depthwise, 3),
        rtol=1e-5,
        atol=1e-5,
    )


def _xla_reference(x, kernel, strides, dilation, groups=1):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (strides, strides),
        "SAME",
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _grouped_reference(x, kernel, strides, dilation):
    return _xla_reference(x, kernel, strides, dilation, groups=x.shape[-1])


@pytest.mark.parametrize(
    "shape, kernel_size, strides, dilation",
    [((3, 7, 7, 3), k, s, d) for k in (3, 5) for s, d in ((1, 1), (2, 1), (1, 2), (2, 2))]
    + [((13, 32, 32, 8), 5, 1, 1), ((13, 32, 32, 8), 3, 2, 1)],
)
def test_depthwise_gradients_match_autodiff_of_xla_grouped_convolution(
    shape, kernel_size, strides, dilation
):
    # The hand-written backward pass against JAX's own derivative of XLA's grouped conv.
    # 13 images of 32x32x8 make the kernel gradient scan 4 chunks with 3 padded images.
    rng = np.random.default_rng(kernel_size + 10 * strides + 100 * dilation)
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=(kernel_size, kernel_size, 1, shape[-1])).astype(np.float32)

    _assert_gradients_match(nas.depthwise_conv2d, _grouped_reference, x, kernel, strides, dilation)


def _assert_gradients_match(ours, reference, x, kernel, strides, dilation):
    def loss(x, kernel, conv):
        return jnp.sum(jnp.sin(conv(x, kernel, strides, dilation)))

    got = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(x, kernel, ours)
    want = jax.grad(loss, (0, 1))(x, kernel, reference)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-3)


def test_depthwise_per_example_gradients_under_vmap():
    # The Fisher's per-example gradients vmap the backward pass (one image per chunk).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 7, 7, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 1, 3)).astype(np.float32)

    def per_example(conv):
        def loss(kernel, image):
            return jnp.sum(conv(image[None], kernel, 2, 1) ** 2)

        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(kernel, x)

    np.testing.assert_allclose(
        per_example(nas.depthwise_conv2d), per_example(_grouped_reference), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "shape, kernel_hw, strides, dilation",
    [((3, 7, 7, 3), (3, 3), s, d) for s, d in ((1, 1), (2, 1), (1, 2))]
    + [((3, 7, 7, 3), (1, 7), 2, 1), ((3, 7, 7, 3), (7, 1), 1, 1)]
    + [((69, 16, 16, 32), (3, 3), 1, 1)],
)
def test_dense_gradients_match_autodiff_of_xla_convolution(shape, kernel_hw, strides, dilation):
    # The kernel gradient scans chunks of about 2 MiB of patches: 69 images of 16x16x32
    # (295 KB of 3x3 patches each) make 7 images per chunk, 10 chunks, 1 padded image.
    rng = np.random.default_rng(strides + 10 * dilation + shape[0])
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=(*kernel_hw, shape[-1], 5)).astype(np.float32)

    _assert_gradients_match(nas.conv2d, _xla_reference, x, kernel, strides, dilation)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("shape", [(3, 7, 7, 3), (1, 9, 6, 4)])
def test_max_pool_matches_flax_in_value_and_gradient_even_with_ties(shape, strides):
    # Rounded inputs make many windows hold their maximum twice: the gradient must go to
    # the first of them, as select_and_scatter sends it.
    import flax.linen as nn

    rng = np.random.default_rng(strides)
    for x in (rng.normal(size=shape), np.round(rng.normal(size=shape))):
        x = x.astype(np.float32)

        def flax_pool(x):
            return nn.max_pool(x, (3, 3), (strides, strides), padding="SAME")

        def loss(x, pool):
            return jnp.sum(jnp.sin(3.0 * pool(x)))

        np.testing.assert_array_equal(nas.max_pool(x, 3, strides), flax_pool(x))
        ours = jax.grad(loss)(x, lambda x: nas.max_pool(x, 3, strides))
        np.testing.assert_allclose(ours, jax.grad(loss)(x, flax_pool), rtol=1e-6, atol=1e-6)


def test_max_pool_refuses_a_non_image():
    with pytest.raises(ValueError, match=r"NHWC input.*\(4, 4\)"):
        nas.max_pool(jnp.ones((4, 4)))


def test_operation_constants():
    assert len(nas.ALL_OPERATIONS) == 9
    assert nas.PAPER_RELATED_OPERATIONS == (
        "identity",
        "sep_conv_3x3",
        "conv_7x1_1x7",
        "max_pool_3x3",
    )
    assert set(nas.PAPER_RELATED_OPERATIONS) <= set(nas.ALL_OPERATIONS)


def test_zero_and_identity_values():
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype(np.float32)
    zero = nas.make_operation("zero", 2)
    identity = nas.make_operation("identity", 2)
    assert bool(jnp.all(zero.apply({}, x) == 0))
    assert bool(jnp.all(identity.apply({}, x) == x))


def test_no_batch_stats():
    x = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    for operation in nas.ALL_OPERATIONS:
        variables = jax.eval_shape(nas.make_operation(operation, 4, 2).init, rbg_key(0), x)
        assert set(variables) <= {"params"}, operation


def test_unknown_operation_lists_known_ones():
    with pytest.raises(ValueError, match="unknown operation 'conv_9x9'.*sep_conv_3x3"):
        nas.make_operation("conv_9x9", channels=4)


def test_bad_stride_and_channels():
    with pytest.raises(ValueError, match="stride"):
        nas.make_operation("identity", 4, stride=3)
    with pytest.raises(ValueError, match="channels"):
        nas.make_operation("identity", 0)


def _value_and_grads(fn, *args):
    """Eager, so each call traces anew and sees the backend of the moment."""
    return jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), range(len(args)))(*args)


def _assert_close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "function, kernel_shape, strides, dilation",
    [
        (nas.conv2d, (1, 7, 3, 5), (1, 2), 1),
        (nas.conv2d, (3, 3, 3, 5), 1, 2),
        (nas.depthwise_conv2d, (5, 5, 1, 3), 2, 2),
        (nas.depthwise_conv2d, (3, 3, 1, 3), 1, 1),
        (nas.max_pool, None, 2, None),
    ],
)
def test_xla_cpu_forms_apply_on_cpu_only_and_agree_with_xla_ops(
    monkeypatch, function, kernel_shape, strides, dilation
):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)
    if kernel_shape is None:
        args, call = (x,), lambda x: function(x, 3, strides)
    else:
        kernel = rng.normal(size=kernel_shape).astype(np.float32)
        args, call = (x, kernel), lambda x, k: function(x, k, strides, dilation)
    # Each branch forced, so the test means the same on any machine. A fresh function
    # each time: make_jaxpr caches traces per function.
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    on_cpu = _value_and_grads(call, *args)
    cpu_primitives = primitive_names(jax.grad(lambda *a: jnp.sum(call(*a))), *args)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    off_cpu = _value_and_grads(call, *args)
    off_primitives = primitive_names(jax.grad(lambda *a: jnp.sum(call(*a))), *args)
    xla_op = "reduce_window_max" if kernel_shape is None else "conv_general_dilated"
    assert any("custom_vjp" in name for name in cpu_primitives) and xla_op not in cpu_primitives
    assert not any("custom_vjp" in name for name in off_primitives) and xla_op in off_primitives
    _assert_close(on_cpu, off_cpu)


@pytest.mark.parametrize("operation", [o for o in nas.ALL_OPERATIONS if o != "zero"])
def test_operations_off_the_cpu_give_the_cpu_values_and_gradients(monkeypatch, operation):
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 4)).astype(np.float32)
    for stride in (1, 2):
        op = nas.make_operation(operation, channels=4, stride=stride)
        variables = op.init(rbg_key(2), x)
        results = []
        for backend in ("cpu", "gpu"):
            with monkeypatch.context() as patch:
                patch.setattr(jax, "default_backend", lambda backend=backend: backend)
                results.append(_value_and_grads(op.apply, variables, x))
        _assert_close(*results)
