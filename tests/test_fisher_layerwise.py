"""The layer-wise Fisher engine against the reference vmap(grad) engine, on many model kinds.

Linen models with every layer geometry here, and in ``_any_models`` the same idea written as a
plain function, in Flax NNX, in Equinox, the library's own ``Skeleton`` networks, a weight
used twice, a head used transposed and tied embeddings.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _any_models import ANY_MODELS
from _small_models import MLP, ConvBN

import ldnas_jax as ld
from ldnas_jax.fisher._diagonal import make_vmap_engine, select_engine
from ldnas_jax.fisher._layerwise import layerwise_plan, make_layerwise_engine, matmul_convs
from ldnas_jax.fisher._program import trace_program


class ConvGeometries(nn.Module):
    """Strides, dilations, VALID / explicit / CIRCULAR padding, masks, non-square kernels, tiny maps."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 1), padding="VALID")(x))  # 9x8 -> 4x6
        x = nn.relu(nn.Conv(5, (2, 3), kernel_dilation=(1, 2), padding=((1, 0), (2, 1)))(x))
        mask = jnp.asarray(np.random.default_rng(1).integers(0, 2, (3, 3, 5, 3)), jnp.float32)
        x = nn.tanh(nn.Conv(3, (3, 3), padding="CIRCULAR", use_bias=False, mask=mask)(x))
        x = nn.relu(nn.Conv(6, (3, 3), input_dilation=2, strides=3, padding=((1, 1), (2, 0)))(x))
        x = nn.Conv(4, (3, 3), strides=2)(x)  # a tiny map: the matmul route and the pair sums
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class Pooled(nn.Module):
    """Tiling max pooling on an odd map (rewritten by the engine) and overlapping pooling (kept)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.max_pool(nn.relu(nn.Conv(4, (3, 3))(x)), (2, 2), strides=(2, 2))  # 5x5 -> 2x2
        x = nn.max_pool(nn.Conv(3, (2, 2))(x), (3, 3), strides=(1, 1), padding="SAME")
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class Dense3D(nn.Module):
    """Dense layers applied to (batch, tokens, features) and to (batch, a, b, features)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.gelu(nn.Dense(6)(x))  # (B, T, D)
        x = nn.Dense(5)(x[:, :, None, :] * jnp.ones((1, 1, 2, 1)))  # (B, T, 2, 6) -> 4-D input
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


class Scale(nn.Module):
    """A layer type the engine does not know."""

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * scale.reshape((1,) * (x.ndim - 1) + (-1,)) + 0.1


class Exotic(nn.Module):
    """A custom layer, a grouped conv, a Dense called twice, and a kernel read outside its layer."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=2)(x))
        x = Scale()(x)
        x = jnp.mean(x, axis=(1, 2))
        shared = nn.Dense(4, name="shared")
        x = nn.tanh(shared(nn.tanh(shared(x))))
        leaky = nn.Dense(4, name="leaky")
        x = leaky(x)
        x = x + jnp.sum(leaky.variables["params"]["kernel"])  # weight tying by hand
        return nn.Dense(3, name="head")(x)


class SplitWeights(nn.Module):
    """One kernel split between two branches, and taps unstacked from one weight: the
    multi-output moves ``split`` and ``unstack`` (how jax >= 0.11 iterates over an array)."""

    @nn.compact
    def __call__(self, x, train=False):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 10))
        first, second = jnp.split(kernel, [4], axis=1)
        h = nn.tanh(x @ first)
        taps = self.param("taps", nn.initializers.normal(1.0), (3, 4))
        h = sum(jnp.roll(h, t, axis=1) * tap[None] for t, tap in enumerate(jnp.unstack(taps)))
        return nn.Dense(3)(jnp.concatenate([h, nn.relu(x @ second)], axis=-1))


class Rematerialised(nn.Module):
    """Lifted transforms: ``nn.remat`` (inlined by the engine) and ``nn.scan`` (left to vmap)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.tanh(nn.remat(nn.Dense)(5)(x.reshape((x.shape[0], -1))))

        def body(cell, carry, _):
            return nn.tanh(cell(carry)), None

        scanned = nn.scan(body, variable_broadcast="params", split_rngs={"params": False}, length=2)
        x, _ = scanned(nn.Dense(5, name="recurrent"), x, None)
        return nn.Dense(3)(x)


def _setup(model, shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    variables = ld.train.init_variables(model, jax.random.key(seed), x)
    variables["params"] = jax.tree.map(  # non-zero biases everywhere
        lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), p.dtype), variables["params"]
    )
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree.map(
            lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32),
            variables["batch_stats"],
        )
    apply_fn = ld.eval_apply_fn(model, variables)
    classes = jax.eval_shape(apply_fn, variables["params"], x[:1]).shape[-1]
    y = rng.integers(0, classes, size=n)
    return apply_fn, variables["params"], x, y


def _assert_close(actual, expected, rtol=1e-5):
    for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape, jax.tree_util.keystr(path)
        rel = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)
        assert rel <= rtol, f"{jax.tree_util.keystr(path)}: relative error {rel:.2e}"


MODELS = {
    "mlp": (MLP(), (2, 3, 2)),
    "cnn_batchnorm": (ConvBN(), (6, 6, 2)),
    "conv_geometries": (ConvGeometries(), (9, 8, 2)),
    "dense_3d_input": (Dense3D(), (4, 3)),
    "fallback_layers": (Exotic(), (5, 5, 2)),
    "max_pooling": (Pooled(), (5, 5, 2)),
    "small_vgg": (ld.SmallVGG(num_classes=3, features=(4, 6), hidden=5), (4, 4, 3)),
    "lifted_transforms": (Rematerialised(), (2, 3)),
    "split_and_unstacked": (SplitWeights(), (4,)),
}


def _problem(name):
    if name in MODELS:
        return _setup(*MODELS[name])
    return ANY_MODELS[name]()


def _estimator_targets(apply_fn, params, x, y, classes):
    """Targets and weights of each estimator, zero-weight padded to K = classes (one compile)."""
    from ldnas_jax.fisher._diagonal import targets_and_weights

    logits = jax.jit(apply_fn)(params, x)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(x.shape[0]))
    out = {}
    for estimator in ("empirical", "sampled", "exact"):
        t, w = targets_and_weights(estimator, logits, jnp.asarray(y), keys, 2)
        pad = classes - t.shape[1]
        out[estimator] = (jnp.pad(t, ((0, 0), (0, pad))), jnp.pad(w, ((0, 0), (0, pad))))
    return out


@pytest.mark.parametrize("name", list(MODELS) + list(ANY_MODELS))
def test_layerwise_equals_vmap_for_every_estimator(name):
    apply_fn, params, x, y = _problem(name)
    classes = jax.eval_shape(apply_fn, params, x[:1]).shape[-1]
    # Also the accelerator layout of the per-example scan, and micro-batches.
    options = dict(examples_per_step=4, micro_batch=4) if name == "dense_3d_input" else {}
    fast_engine = make_layerwise_engine(apply_fn, params, x, classes, **options)
    reference_engine = make_vmap_engine(apply_fn, classes)  # apply_fn itself, not the program
    fast, reference = jax.jit(lambda *a: fast_engine(*a)), jax.jit(lambda *a: reference_engine(*a))
    cases = _estimator_targets(apply_fn, params, x, y, classes)
    rng = np.random.default_rng(3)  # any non-negative weights, zeros included
    cases["arbitrary"] = (
        jnp.asarray(rng.integers(0, classes, (x.shape[0], classes)), jnp.int32),
        jnp.asarray(
            rng.uniform(0, 2, (x.shape[0], classes))
            * (rng.uniform(size=(x.shape[0], classes)) > 0.3),
            jnp.float32,
        ),
    )
    for estimator, (targets, weights) in cases.items():
        _assert_close(fast(params, x, targets, weights), reference(params, x, targets, weights))


def test_fisher_diagonal_layerwise_equals_vmap_with_ragged_chunks():
    apply_fn, params, x, y = _setup(*MODELS["cnn_batchnorm"], n=7)
    kw = dict(estimator="sampled", key=jax.random.key(7), num_samples=2)
    expected = ld.fisher_diagonal(apply_fn, params, (x, y), method="vmap", **kw)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    actual = ld.fisher_diagonal(apply_fn, params, batches, method="layerwise", chunk_size=2, **kw)
    _assert_close(actual, expected)


def test_the_plan_leaves_only_weights_used_twice_or_read_elsewhere_to_vmap():
    apply_fn, params, x, _ = _setup(Exotic(), (5, 5, 2))
    plan = layerwise_plan(apply_fn, params, x)
    fallback = {plan.leaf_paths[i] for i in plan.fallback}
    assert fallback == {"['shared']['kernel']", "['shared']['bias']", "['leaky']['kernel']"}
    assert "used more than once" in plan.reasons["['shared']['kernel']"]
    assert "reduce_sum" in plan.reasons["['leaky']['kernel']"]  # the tying by hand
    # A grouped convolution, a custom layer's scale and a lone bias are placed.
    routes = {r.path: r.detail for r in plan.routes}
    assert "2 groups" in routes["['Conv_0']['kernel']"]
    assert routes["['Scale_0']['scale']"].startswith("scale")
    assert routes["['leaky']['bias']"].startswith("bias")
    assert [l.kind for l in plan.layers] == ["conv", "dense"]  # Conv_0, head


def test_plan_of_small_vgg_places_every_leaf():
    apply_fn, params, x, _ = _setup(*MODELS["small_vgg"])
    plan = layerwise_plan(apply_fn, params, x)
    assert [l.kind for l in plan.layers] == ["conv", "conv", "dense", "dense"]
    assert plan.fallback == ()  # BatchNorm's scale (times its frozen 1/σ) and bias too


@pytest.mark.parametrize(
    "name,expected",
    [
        ("pure_function_cnn", {}),
        ("nnx_cnn", {}),
        ("equinox_cnn", {}),
        ("skeleton_sep_conv", {}),
        ("split_and_unstacked", {}),
        ("transposed_head", {}),
        ("weight_used_twice", {"['w']": "used more than once"}),
        ("tied_embeddings", {"['embed']": "gather"}),
        ("lifted_transforms", {"['recurrent']['kernel']": "scan", "['recurrent']['bias']": "scan"}),
    ],
)
def test_the_plan_reads_every_kind_of_model(name, expected):
    """Only a weight used twice, an embedding lookup and a scanned layer go to vmap."""
    apply_fn, params, x, _ = _problem(name)
    plan = layerwise_plan(apply_fn, params, x)
    reasons = {plan.leaf_paths[i]: plan.reasons[plan.leaf_paths[i]] for i in plan.fallback}
    assert set(reasons) == set(expected)
    for path, words in expected.items():
        assert words in reasons[path]
    text = plan.describe()
    assert f"layer-wise: {len(plan.leaf_paths) - len(expected)} of {len(plan.leaf_paths)}" in text


def test_describe_says_route_and_reason_for_every_leaf():
    apply_fn, params, x, _ = _setup(Exotic(), (5, 5, 2))
    text = layerwise_plan(apply_fn, params, x).describe()
    assert text.startswith("layer-wise: 6 of 9 parameter leaves")
    assert "per-example vmap(grad): 3" in text
    for path in jax.tree_util.tree_flatten_with_path(params)[0]:
        assert jax.tree_util.keystr(path[0]) in text


def test_leaves_without_a_gradient_are_zero_without_vmap():
    model, shape = MODELS["cnn_batchnorm"]
    apply_fn, params, x, y = _setup(model, shape)
    variables = {"params": params, "stats": jax.tree.map(jnp.ones_like, params)}

    def with_frozen(v, xb):  # a second collection, read under stop_gradient, passed as params
        frozen = jax.lax.stop_gradient(v["stats"]["Dense_0"]["bias"])
        return apply_fn(v["params"], xb) * frozen[None, :]

    plan = layerwise_plan(with_frozen, variables, x)
    none = {r.path for r in plan.routes if r.route == "none"}
    assert "['stats']['Dense_0']['bias']" in none and plan.fallback == ()
    f = ld.fisher_diagonal(with_frozen, variables, (x, y))
    assert all(float(jnp.max(leaf)) == 0.0 for leaf in jax.tree.leaves(f["stats"]))
    _assert_close(
        f["params"], ld.fisher_diagonal(with_frozen, variables, (x, y), method="vmap")["params"]
    )


def test_auto_uses_layerwise_when_it_applies_and_vmap_otherwise():
    apply_fn, params, x, _ = _setup(*MODELS["mlp"])
    assert select_engine("auto", trace_program(apply_fn, params, x)).name == "layerwise"
    w = jnp.ones((3,))
    # A parameter only through a non-linear function: nothing to place.
    plain = lambda p, xb: xb.reshape(xb.shape[0], -1)[:, :3] * jnp.exp(p)[None]
    assert select_engine("auto", trace_program(plain, w, x)).name == "vmap"
    f = ld.fisher_diagonal(plain, w, (x, np.zeros(x.shape[0], int)))
    assert f.shape == (3,)
    # A parameter scaling the input is placed, even with no layer in sight.
    scaled = lambda p, xb: xb.reshape(xb.shape[0], -1)[:, :3] * p[None]
    assert select_engine("auto", trace_program(scaled, w, x)).name == "layerwise"


def test_matmul_convs_is_the_same_convolution():
    model, shape = MODELS["conv_geometries"]
    apply_fn, params, x, _ = _setup(model, shape)
    with matmul_convs(10_000):
        routed = jax.jit(apply_fn)(params, x)
    np.testing.assert_allclose(routed, apply_fn(params, x), rtol=1e-5, atol=1e-5)


def test_peak_memory_follows_the_chunk_not_the_data():
    """XLA's memory plan of one compiled chunk grows with chunk_size (data streams through it)."""
    apply_fn, params, x, _ = _setup(*MODELS["cnn_batchnorm"])
    engine = make_layerwise_engine(apply_fn, params, x, 4)
    step = jax.jit(lambda *a: engine(*a))

    def temp_bytes(chunk):
        args = (
            params,
            jnp.zeros((chunk, *x.shape[1:])),
            jnp.zeros((chunk, 1), jnp.int32),
            jnp.ones((chunk, 1)),
        )
        analysis = step.lower(*args).compile().memory_analysis()
        return None if analysis is None else analysis.temp_size_in_bytes

    small, large = temp_bytes(8), temp_bytes(64)
    if small is None:
        pytest.skip("this backend gives no memory analysis")
    assert small < large < 16 * small  # grows with the chunk, at most linearly (plus constants)


@jax.custom_vjp
def _doubled_gradient(x):
    return x


_doubled_gradient.defvjp(lambda x: (x, None), lambda _, g: (2.0 * g,))


class CustomRule(nn.Module):
    """A hidden layer whose output passes through a user's rule that doubles its gradient."""

    rule: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(4)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(_doubled_gradient(x) if self.rule else x)


def test_a_users_custom_vjp_is_obeyed_and_the_librarys_own_are_read_through():
    # A user's rule may differ from its body's derivative: the program keeps it as one
    # equation and obeys it. Doubling the hidden layer's gradient quadruples its Fisher.
    fishers = {}
    for rule in (True, False):
        apply_fn, params, x, y = _setup(CustomRule(rule), (3, 2))
        fishers[rule] = ld.fisher_diagonal(apply_fn, params, (x, y), method="layerwise")
        expected = ld.fisher_diagonal(apply_fn, params, (x, y), method="vmap")
        _assert_close(fishers[rule], expected)
    _assert_close(
        fishers[True]["Dense_0"], jax.tree.map(lambda f: 4 * f, fishers[False]["Dense_0"])
    )
    _assert_close(fishers[True]["Dense_1"], fishers[False]["Dense_1"])

    # The library's depthwise convolution and max pooling have backward passes equal to
    # their bodies' derivatives: the plan reads through them and places every weight.
    genotype = ld.nas.Genotype(("sep_conv_3x3", "max_pool_3x3", "identity"), num_nodes=3)
    skeleton = ld.nas.Skeleton(genotype, num_classes=3, channels=2, num_cells=1)
    apply_fn, params, x, _ = _setup(skeleton, (6, 6, 3))
    assert layerwise_plan(apply_fn, params, x).fallback == ()
