"""Tiny models written every way a JAX user writes them, for the Fisher engines' tests.

Each builder returns ``(apply_fn, params, x, y)``: ``apply_fn(params, x) -> logits`` over a
batch, ``params`` the pytree the Fisher is taken of (non-zero biases everywhere), ``x``
float32 inputs (int32 tokens for the embedding models) and ``y`` labels.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

import ldnas_jax as ld
from ldnas_jax.nas.genotype import num_nodes_for_edges

N = 6  # examples


def random_like(abstract, seed, scale=0.5):
    """Arrays of ``abstract``'s shapes and dtypes, drawn with NumPy: no initialiser compiles.

    Kernels get ``scale / sqrt(fan_in)``; vectors (biases, norm scales) ``1 + 0.1 N(0, 1)``
    or ``0.1 N(0, 1)`` alternately, so that every one of them matters.
    """
    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = np.shape(leaf)
        if len(shape) <= 1:
            value = 0.1 * rng.normal(size=shape) + rng.integers(0, 2)
        else:
            value = rng.normal(size=shape) * scale / np.sqrt(np.prod(shape[:-1]))
        return jnp.asarray(value, leaf.dtype)

    return jax.tree.map(draw, abstract)


def _data(shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, *shape)).astype(np.float32), rng.integers(0, classes, N)


def pure_cnn():
    """A dict of arrays, ``lax.conv_general_dilated`` and ``@``: no framework at all."""
    rng = np.random.default_rng(1)
    normal = lambda *s: jnp.asarray(rng.normal(size=s) / np.sqrt(np.prod(s[:-1])), jnp.float32)
    params = {
        "conv1": {"w": normal(3, 3, 2, 4), "b": normal(4)},
        "conv2": {"w": normal(3, 3, 4, 5), "b": normal(5)},
        "head": {"w": normal(5, 3), "b": normal(3)},
    }

    def conv(layer, x, stride):
        y = lax.conv_general_dilated(
            x, layer["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + layer["b"].reshape(1, 1, 1, -1)

    def apply_fn(p, x):
        h = jax.nn.relu(conv(p["conv1"], x, 1))
        h = jnp.tanh(conv(p["conv2"], h, 2)).mean(axis=(1, 2))
        return h @ p["head"]["w"] + p["head"]["b"][None, :]

    x, y = _data((6, 6, 2), 3)
    return apply_fn, params, x, y


class _NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
        self.conv2 = nnx.Conv(4, 5, (3, 3), strides=(2, 2), rngs=rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.norm(self.conv1(x)))
        h = nnx.relu(self.conv2(h)).mean(axis=(1, 2))
        return self.head(h)


def nnx_cnn():
    """Flax NNX, through ``nnx.split`` / ``nnx.merge``; BatchNorm statistics closed over."""
    model = nnx.eval_shape(lambda: _NNXCNN(nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(2)
    rest = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), rest)
    apply_fn = lambda p, x: nnx.merge(graphdef, p, rest)(x)
    x, y = _data((6, 6, 2), 3)
    return apply_fn, random_like(params, 3), x, y


class _EqxCNN(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(2, 4, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(4, 5, 3, stride=2, key=k2)
        self.head = eqx.nn.Linear(5, 3, key=k3)

    def __call__(self, x):  # one example, channels first
        h = jax.nn.relu(self.conv1(x))
        h = jnp.tanh(self.conv2(h)).mean(axis=(1, 2))
        return self.head(h)


def equinox_cnn():
    """Equinox: a per-example module, vmapped over the batch; NCHW inputs."""
    model = eqx.filter_eval_shape(_EqxCNN, jax.random.key(0))
    params, static = eqx.partition(model, lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct))
    apply_fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    x, y = _data((2, 7, 7), 3)
    return apply_fn, random_like(params, 4), x, y


def skeleton(normal, reduce, seed=0):
    """The library's own searched network for a genotype: a normal and a reduction cell."""
    genotype = ld.nas.Genotype(normal, reduce, num_nodes=num_nodes_for_edges(len(normal)))
    model = ld.nas.Skeleton(
        genotype, num_classes=3, channels=4, num_cells=2, reduction_positions=(1,)
    )
    x, y = _data((4, 4, 3), 3, seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    return apply_fn, random_like(abstract["params"], seed), x, y


def weight_used_twice():
    """One square matrix applied twice (a recurrence unrolled), and a head."""
    rng = np.random.default_rng(5)
    params = {
        "w": jnp.asarray(rng.normal(size=(4, 4)) / 2, jnp.float32),
        "head": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
    }

    def apply_fn(p, x):
        h = jnp.tanh(x @ p["w"])
        h = jnp.tanh(h @ p["w"])
        return h @ p["head"]

    x, y = _data((4,), 3)
    return apply_fn, params, x, y


def transposed_head():
    """A head stored as (classes, features) and used transposed, ``h @ W.T``."""
    rng = np.random.default_rng(6)
    params = {
        "w": jnp.asarray(rng.normal(size=(4, 5)) / 2, jnp.float32),
        "head": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32),
    }
    apply_fn = lambda p, x: jnp.tanh(x @ p["w"]) @ p["head"].T
    x, y = _data((4,), 3)
    return apply_fn, params, x, y


def tied_embeddings():
    """Token embeddings tied to the output head: looked up, then used transposed."""
    rng = np.random.default_rng(7)
    vocab, dim = 5, 4
    params = {
        "embed": jnp.asarray(rng.normal(size=(vocab, dim)), jnp.float32),
        "mix": jnp.asarray(rng.normal(size=(dim, dim)) / 2, jnp.float32),
    }

    def apply_fn(p, tokens):
        h = jnp.take(p["embed"], tokens, axis=0).mean(axis=1)  # (B, dim)
        return jnp.tanh(h @ p["mix"]) @ p["embed"].T  # logits over the vocabulary

    x = rng.integers(0, vocab, (N, 3)).astype(np.int32)
    return apply_fn, params, x, rng.integers(0, vocab, N)


ANY_MODELS = {
    "pure_function_cnn": pure_cnn,
    "nnx_cnn": nnx_cnn,
    "equinox_cnn": equinox_cnn,
    # One edge per cell keeps compilation short; together they cover every operation.
    "skeleton_sep_conv": lambda: skeleton(("sep_conv_3x3",), ("identity",)),
    "skeleton_dil_conv": lambda: skeleton(("dil_conv_3x3",), ("max_pool_3x3",), 1),
    "skeleton_asymmetric": lambda: skeleton(("conv_7x1_1x7",), ("avg_pool_3x3",), 2),
    "weight_used_twice": weight_used_twice,
    "transposed_head": transposed_head,
    "tied_embeddings": tied_embeddings,
}
