"""ResNet-18 and DenseNet-121: parameter counts against hand-summed layer shapes, output shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldnas_jax.models import MODEL_NAMES, DenseNet121, ResNet18, make_model


def conv(k, c_in, c_out):
    return k * k * c_in * c_out  # no bias: every conv here is followed by BatchNorm


def bn(c):
    return 2 * c  # scale and offset; running statistics are not parameters


def dense(c_in, c_out):
    return c_in * c_out + c_out


def resnet18_count(num_classes):
    """Stem, then per stage two basic blocks; the first block of stages 2-4 has a 1×1 shortcut."""
    total = conv(3, 3, 64) + bn(64)
    c_in = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            total += conv(3, c_in, width) + bn(width) + conv(3, width, width) + bn(width)
            if stage > 0 and block == 0:
                total += conv(1, c_in, width) + bn(width)
            c_in = width
    return total + dense(512, num_classes)


def densenet121_count(num_classes, growth=32, blocks=(6, 12, 24, 16)):
    """Stem, dense layers (BN, 1×1 to 4g, BN, 3×3 to g), halving transitions, final BN, head."""
    c = 2 * growth
    total = conv(3, 3, c)
    for i, n in enumerate(blocks):
        for _ in range(n):
            total += bn(c) + conv(1, c, 4 * growth) + bn(4 * growth) + conv(3, 4 * growth, growth)
            c += growth
        if i < len(blocks) - 1:
            total += bn(c) + conv(1, c, c // 2)
            c //= 2
    return total + bn(c) + dense(c, num_classes)


def param_count(model, size=32):
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("num_classes", [10, 4])
def test_resnet18_parameter_count(num_classes):
    assert param_count(ResNet18(num_classes)) == resnet18_count(num_classes)


def test_densenet121_parameter_count():
    # The full-size net is counted in test_registered_and_output_shape; a smaller net of the
    # family, with another head, checks the growth, block and compression logic (fast to trace).
    small = DenseNet121(4, growth_rate=6, block_sizes=(2, 3, 1))
    assert param_count(small) == densenet121_count(4, growth=6, blocks=(2, 3, 1))


def test_counts_match_published_cifar_figures():
    # The CIFAR-10 ResNet-18 and DenseNet-121 are usually quoted as 11.17M and 6.96M.
    assert round(resnet18_count(10) / 1e6, 2) == 11.17
    assert round(densenet121_count(10) / 1e6, 2) == 6.96


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_registered_and_output_shape(name):
    assert name in MODEL_NAMES
    model = make_model(name, 10)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert count == {"resnet18": resnet18_count, "densenet121": densenet121_count}[name](10)
    # train=True updates BatchNorm statistics, the convention of the other models
    logits, updates = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables
    )
    assert logits.shape == (2, 10)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )


def test_resnet18_runs_and_eval_mode_is_per_example():
    """In eval mode BatchNorm uses running statistics, so an example's logits ignore its batch."""
    # narrow and shallow: fast on CPU, same code path (stem, shortcut convs, head)
    model = ResNet18(3, stage_features=(4, 8, 8, 8), blocks_per_stage=(1, 1, 1, 1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    # Fill the shapes by hand: compiling Flax's initialisers costs far more than the forward pass.
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    params = jax.tree.map(
        lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes["params"]
    )
    stats = {
        "batch_stats": jax.tree_util.tree_map_with_path(
            lambda path, s: np.full(s.shape, path[-1].key == "var", np.float32),
            shapes["batch_stats"],
        )
    }
    variables = {"params": params, **stats}

    @jax.jit
    def run(variables, x):
        alone = model.apply(variables, x[:1])
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return model.apply(variables, x), alone, logits, updates

    both, alone, logits, updates = run(variables, x)
    np.testing.assert_allclose(alone, both[:1], rtol=1e-5, atol=1e-5)
    assert logits.shape == (3, 3) and bool(jnp.all(jnp.isfinite(logits)))
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
