"""Benchmark models: the small CNN in Flax linen, both benchmark models as plain functions and
in Flax NNX, and in PyTorch (optional)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldnas_jax.models.vgg16 import VGG16_PLAN


class SmallCNN(nn.Module):
    """Three 3×3 conv + ReLU + 2×2 max-pool stages (32, 64, 128) and a linear head.

    On 32×32×3 inputs and 10 classes it has 113,738 parameters (the "114k" CNN of DESIGN §5).
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for width in (32, 64, 128):
            x = nn.max_pool(
                nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x)), (2, 2), strides=(2, 2)
            )
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def torch_model(name: str, num_classes: int = 10):
    """The same architecture in PyTorch (NCHW), in eval mode. Imports torch lazily.

    Seeded before the layers are built, so every call gives the same weights.
    """
    import torch
    from torch import nn as tnn

    torch.manual_seed(0)
    if name == "small_cnn":
        layers, channels = [], 3
        for width in (32, 64, 128):
            layers += [tnn.Conv2d(channels, width, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2)]
            channels = width
        net = tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(128 * 4 * 4, num_classes))
    elif name == "vgg16":
        layers, channels = [], 3
        for item in VGG16_PLAN:
            if item == "M":
                layers.append(tnn.MaxPool2d(2))
                continue
            layers += [tnn.Conv2d(channels, item, 3, padding=1), tnn.BatchNorm2d(item), tnn.ReLU()]
            channels = item
        # One Sequential (global average pool, then the head): BackPACK extends every module
        # that holds parameters, and knows containers but not a custom forward.
        pool = [tnn.AdaptiveAvgPool2d(1), tnn.Flatten()]
        net = tnn.Sequential(*layers, *pool, tnn.Linear(channels, num_classes))
    else:
        raise ValueError(f"unknown benchmark model {name!r}")
    return net.eval()


# ---- the same models written without linen: a plain function, and Flax NNX ---------------------


def _plan(name: str):
    """Layer plan: conv widths and "M" for 2×2 max pools; whether convs are followed by BatchNorm."""
    if name == "small_cnn":
        return (32, "M", 64, "M", 128, "M"), False
    if name == "vgg16":
        return VGG16_PLAN, True
    raise ValueError(f"unknown benchmark model {name!r}")


def pure_function_model(name: str, num_classes: int = 10, seed: int = 0):
    """The benchmark model as a function of a dict of arrays: ``(apply_fn, params)``.

    ``lax.conv_general_dilated``, ``lax.reduce_window`` and ``@``, no framework; BatchNorm
    (VGG-16) in eval mode with its statistics closed over. Parameters are drawn with NumPy
    (He-scaled kernels), so building it compiles nothing. Same layers and parameter count
    as the linen models (113,738 and 14,728,266 on 10 classes).

    Example:
      >>> apply_fn, params = pure_function_model("small_cnn")
      >>> sum(p.size for p in jax.tree.leaves(params))
      113738
      >>> apply_fn(params, jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """
    import numpy as np
    from jax import lax

    plan, batch_norm = _plan(name)
    rng = np.random.default_rng(seed)
    params, stats, channels = {}, {}, 3
    for i, width in enumerate(w for w in plan if w != "M"):
        scale = np.sqrt(2.0 / (9 * channels))
        layer = {
            "kernel": jnp.asarray(rng.normal(size=(3, 3, channels, width)) * scale, jnp.float32)
        }
        layer["bias"] = jnp.zeros((width,), jnp.float32)
        if batch_norm:
            layer["norm_scale"] = jnp.ones((width,), jnp.float32)
            layer["norm_bias"] = jnp.zeros((width,), jnp.float32)
            stats[f"conv{i}"] = (jnp.zeros((width,), jnp.float32), jnp.ones((width,), jnp.float32))
        params[f"conv{i}"] = layer
        channels = width
    features = (
        channels if batch_norm else channels * 4 * 4
    )  # VGG averages 1×1; the CNN flattens 4×4
    params["head"] = {
        "kernel": jnp.asarray(
            rng.normal(size=(features, num_classes)) / np.sqrt(features), jnp.float32
        ),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }

    def apply_fn(p, x):
        i = 0
        for item in plan:
            if item == "M":
                x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
                continue
            layer = p[f"conv{i}"]
            x = lax.conv_general_dilated(
                x, layer["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = x + layer["bias"].reshape(1, 1, 1, -1)
            if batch_norm:  # eval mode, as flax: (x - mean) * rsqrt(var + eps) * scale + bias
                mean, var = stats[f"conv{i}"]
                factor = lax.rsqrt(var + 1e-5) * layer["norm_scale"]
                x = (x - mean.reshape(1, 1, 1, -1)) * factor.reshape(1, 1, 1, -1)
                x = x + layer["norm_bias"].reshape(1, 1, 1, -1)
            x = jax.nn.relu(x)
            i += 1
        x = jnp.mean(x, axis=(1, 2)) if batch_norm else x.reshape(x.shape[0], -1)
        return x @ p["head"]["kernel"] + p["head"]["bias"][None, :]

    return apply_fn, params


def nnx_model(name: str, num_classes: int = 10, seed: int = 0):
    """The benchmark model in Flax NNX, through ``nnx.split`` / ``nnx.merge``: ``(apply_fn, params)``.

    Built abstractly (``nnx.eval_shape``) and filled with NumPy draws, so building it
    compiles nothing; BatchNorm (VGG-16) in eval mode with its statistics closed over.

    Example:
      >>> apply_fn, params = nnx_model("small_cnn")
      >>> apply_fn(params, jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """
    import numpy as np
    from flax import nnx

    plan, batch_norm = _plan(name)

    class Net(nnx.Module):
        def __init__(self, rngs):
            convs, norms, channels = [], [], 3
            for width in (w for w in plan if w != "M"):
                convs.append(nnx.Conv(channels, width, (3, 3), padding="SAME", rngs=rngs))
                if batch_norm:
                    norms.append(nnx.BatchNorm(width, use_running_average=True, rngs=rngs))
                channels = width
            self.convs, self.norms = nnx.List(convs), nnx.List(norms)
            features = channels if batch_norm else channels * 4 * 4
            self.head = nnx.Linear(features, num_classes, rngs=rngs)

        def __call__(self, x):
            i = 0
            for item in plan:
                if item == "M":
                    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                    continue
                x = self.convs[i](x)
                if batch_norm:
                    x = self.norms[i](x)
                x = nnx.relu(x)
                i += 1
            x = jnp.mean(x, axis=(1, 2)) if batch_norm else x.reshape(x.shape[0], -1)
            return self.head(x)

    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: Net(nnx.Rngs(seed))), nnx.Param, ...)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = jax.tree_util.keystr(path)
        if "kernel" in names:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
        elif "scale" in names or "var" in names:
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    params = jax.tree_util.tree_map_with_path(draw, params)
    rest = jax.tree_util.tree_map_with_path(draw, rest)
    return (lambda p, x: nnx.merge(graphdef, p, rest)(x)), params
