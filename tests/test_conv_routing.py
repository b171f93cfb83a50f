"""Each convolution's route, timed once per shape: the timed programs, the cache and the routing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import primitive_names

from ldnas_jax.xla_cpu import (
    ConvTiming,
    _conv_routing,
    clear_conv_routes,
    conv_geometry,
    conv_route,
    conv_route_timings,
    matmul_convs,
    time_conv_routes,
)


class TwoMaps(nn.Module):
    """A convolution on an 8×8 map, one on a 4×4 map (after a stride of 2)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Conv(3, (3, 3), strides=(2, 2))(x)


@pytest.fixture
def fresh_routes(monkeypatch):
    """An empty cache, and every convolution timed however small (these test models are tiny)."""
    monkeypatch.setattr(_conv_routing, "TIMING_MIN_FLOPS", 0)
    clear_conv_routes()
    yield
    clear_conv_routes()


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv(5, (3, 3), use_bias=False),
        nn.Conv(5, (3, 3), strides=(2, 1), kernel_dilation=(1, 2), use_bias=False),
        nn.Conv(5, (2, 3), padding="VALID", use_bias=False),
        nn.Conv(5, (3, 3), padding="CIRCULAR", use_bias=False),
        nn.Conv(5, (3,), padding=((2, 0),), use_bias=False),
    ],
    ids=["same", "strided-dilated", "valid", "circular", "1d"],
)
def test_every_timed_program_is_the_layers_convolution_in_value_and_gradient(conv):
    x = _inputs((5, 7, 6, 3) if len(conv.kernel_size) == 2 else (5, 9, 3))
    variables = conv.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    expected = conv.apply(variables, x)
    cotangent = _inputs(expected.shape, seed=1)
    expected_grads = jax.vjp(lambda x, k: conv.apply({"params": {"kernel": k}}, x), x, kernel)[
        1
    ](cotangent)
    geom = conv_geometry(conv, x.shape)
    assert set(_conv_routing._ROUTE_PROGRAMS) == set(_conv_routing.ROUTES)
    for name, timed_program in _conv_routing._ROUTE_PROGRAMS.items():
        got, vjp = jax.vjp(lambda x, k: timed_program(x, k, geom), x, kernel)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)
        for g, e in zip(vjp(cotangent), expected_grads):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=name)


def test_time_conv_routes_times_both_routes_at_the_geometrys_batch():
    conv = nn.Conv(4, (3, 3))
    geom = conv_geometry(conv, (3, 5, 5, 2))
    timing = time_conv_routes(geom, batch=2, repeats=1)
    assert timing.lax_seconds > 0 and timing.matmul_seconds > 0
    assert 0 < timing.patch_gradient_seconds < float("inf")
    assert timing.route in ("lax", "matmul", "patch_gradient")


def test_the_route_takes_matmul_only_when_it_is_clearly_faster():
    assert ConvTiming(lax_seconds=1.0, matmul_seconds=0.85).route == "matmul"
    assert ConvTiming(lax_seconds=1.0, matmul_seconds=0.9).route == "lax"
    assert ConvTiming(lax_seconds=1.0, matmul_seconds=2.0).route == "lax"


def test_the_faster_xla_route_wins_and_matmul_must_beat_it_clearly():
    assert ConvTiming(1.0, 2.0, patch_gradient_seconds=0.5).route == "patch_gradient"
    assert ConvTiming(1.0, 2.0, patch_gradient_seconds=1.5).route == "lax"
    assert ConvTiming(1.0, 0.45, patch_gradient_seconds=0.5).route == "patch_gradient"
    assert ConvTiming(1.0, 0.40, patch_gradient_seconds=0.5).route == "matmul"


def _scripted_timings(monkeypatch, matmul_when):
    """Replaces the stopwatch: matmul 'wins' for geometries where ``matmul_when(geom)``."""
    calls = []

    def fake(geom, dtype=jnp.float32, batch=1, repeats=3):
        calls.append(geom)
        return ConvTiming(1.0, 0.1) if matmul_when(geom) else ConvTiming(1.0, 2.0)

    monkeypatch.setattr(_conv_routing, "time_conv_routes", fake)
    return calls


def test_each_shape_is_timed_once_then_read_from_the_cache(monkeypatch, fresh_routes):
    calls = _scripted_timings(monkeypatch, lambda geom: False)
    model = TwoMaps()
    x = _inputs((2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    for _ in range(2):  # two traces of the same shapes
        with matmul_convs("timed"):
            jax.make_jaxpr(model.apply)(variables, x)
    assert len(calls) == 2  # two distinct convolutions, each timed once
    assert len(conv_route_timings()) == 2
    with matmul_convs("timed"):
        jax.make_jaxpr(model.apply)(variables, _inputs((4, 8, 8, 3)))  # a new batch: new shapes
    assert len(calls) == 4
    clear_conv_routes()
    assert conv_route_timings() == {}


def test_timed_routing_follows_the_timings(monkeypatch, fresh_routes):
    model = TwoMaps()
    x = _inputs((2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    plain = model.apply(variables, x)

    _scripted_timings(monkeypatch, lambda geom: True)
    with matmul_convs("timed"):
        assert "conv_general_dilated" not in primitive_names(model.apply, variables, x)
        routed = model.apply(variables, x)
    np.testing.assert_allclose(routed, plain, rtol=1e-5, atol=1e-5)

    clear_conv_routes()
    _scripted_timings(monkeypatch, lambda geom: geom.out_spatial == (4, 4))
    with matmul_convs("timed"):
        jaxpr = jax.make_jaxpr(model.apply)(variables, x)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert len(convs) == 1 and convs[0].outvars[0].aval.shape[1:3] == (8, 8)

    clear_conv_routes()
    monkeypatch.setattr(
        _conv_routing, "time_conv_routes", lambda geom, *a, **k: ConvTiming(1.0, 2.0, 0.5)
    )
    with matmul_convs("timed"):
        names = primitive_names(model.apply, variables, x)
        routed = model.apply(variables, x)
    assert "custom_vjp_call" in names  # XLA's op, inside the patch-gradient rule
    np.testing.assert_allclose(routed, plain, rtol=1e-5, atol=1e-5)


def test_timing_inside_a_jitted_gradient_gives_the_plain_gradient(fresh_routes):
    model = TwoMaps()
    x = _inputs((2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    loss = lambda v, x: jnp.sum(jnp.tanh(model.apply(v, x)))

    def routed_loss(v, x):
        with matmul_convs("timed"):
            return loss(v, x)

    got = jax.jit(jax.grad(routed_loss))(variables, x)  # the stopwatch runs during this trace
    expected = jax.grad(loss)(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, expected)
    timings = conv_route_timings()
    assert len(timings) == 2
    assert all(t.lax_seconds > 0 and t.matmul_seconds > 0 for t in timings.values())


def test_small_convolutions_keep_the_fixed_rule_untimed(monkeypatch):
    clear_conv_routes()
    calls = _scripted_timings(monkeypatch, lambda geom: False)
    conv = nn.Conv(4, (3, 3))
    assert conv_route(conv_geometry(conv, (2, 4, 4, 3))) == "matmul"  # 16 positions
    assert conv_route(conv_geometry(conv, (2, 5, 5, 3))) == "patch_gradient"  # 25 positions
    assert calls == [] and conv_route_timings() == {}
    monkeypatch.setattr(_conv_routing, "TIMING_MIN_FLOPS", 2 * 2 * 16 * 27 * 4)  # exactly one
    assert conv_route(conv_geometry(conv, (2, 4, 4, 3))) == "lax"  # timed: matmul lost
    assert len(calls) == 1
    clear_conv_routes()


def test_huge_patches_take_xla_untimed(monkeypatch, fresh_routes):
    calls = _scripted_timings(monkeypatch, lambda geom: True)
    monkeypatch.setattr(_conv_routing, "MAX_PATCH_BYTES", 1024)
    geom = conv_geometry(nn.Conv(4, (3, 3)), (2, 8, 8, 3))  # 2·64·27·4 bytes of patches
    assert conv_route(geom) == "lax"
    assert calls == []


def test_the_default_is_timed_on_cpu_and_bad_policies_are_refused():
    assert _conv_routing._route_policy(None) == ("timed" if jax.default_backend() == "cpu" else 0)
    assert _conv_routing._route_policy(16) == 16
    with pytest.raises(TypeError, match="max_output_positions must be an int, 'timed' or None"):
        matmul_convs("fastest").__enter__()
    with pytest.raises(ValueError, match="must be ≥ 0"):
        matmul_convs(-1).__enter__()
