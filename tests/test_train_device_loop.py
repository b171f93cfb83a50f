"""The device-resident epoch of train_classifier against a plain host loop written out here.

An epoch of ``train_classifier`` is one compiled ``lax.scan``: the permutation is drawn on
the device, batches gathered there, losses read back once. The batch order is unchanged
(the permutation of ``fold_in(split(key)[1], epoch)``, ragged tail dropped), so the result
must equal, bit for bit on CPU, a host loop that indexes each batch in NumPy and runs one
jitted step at a time, as the library did before.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _small_models import MLP, ConvBN

import ldnas_jax as ld
from ldnas_jax import train as train_module
from ldnas_jax._checks import NonFiniteError
from ldnas_jax.train import train_classifier

RNG = np.random.default_rng(3)
X = RNG.normal(size=(50, 6, 6, 3)).astype(np.float32)  # 3 batches of 16, a ragged 2 dropped
Y = RNG.integers(0, 3, 50).astype(np.int32)


def host_loop(model, key, *, epochs, batch_size, learning_rate, routed):
    """One jitted step per batch, each batch indexed on the host, each loss read back."""
    init_key, shuffle_key = jax.random.split(key)
    variables = model.init(init_key, X[:1], train=False)
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    optimizer = optax.adam(learning_rate)
    state = optimizer.init(params)

    def loss(params, others, x, y):
        logits, new = model.apply(
            {"params": params, **others}, x, train=True, mutable=list(others)
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new)

    # The library routes convolutions on CPU (a float-level change); route them alike.
    loss = ld.fast_routes(loss) if routed else loss

    @jax.jit
    def step(params, others, state, x, y):
        (value, (logits, new)), grads = jax.value_and_grad(loss, has_aux=True)(
            params, others, x, y
        )
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimizer.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params, dict(new), state, value, jnp.sum(jnp.argmax(logits, -1) == y)

    steps, history = len(X) // batch_size, []
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), len(X)))
        total, correct = 0.0, 0
        for s in range(steps):
            index = order[s * batch_size : (s + 1) * batch_size]
            params, others, state, value, right = step(params, others, state, X[index], Y[index])
            total += float(value)
            correct += int(right)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / steps,
                "train_accuracy": correct / (steps * batch_size),
            }
        )
    return {"params": params, **others}, history


@pytest.mark.parametrize("model, routed", [(MLP(), False), (ConvBN(), True)])
def test_device_epochs_equal_a_host_loop_bit_for_bit(model, routed):
    key, options = jax.random.key(7), dict(epochs=3, batch_size=16, learning_rate=1e-2)
    result = train_classifier(model, (X, Y), key=key, progress=False, **options)
    variables, history = host_loop(model, key, routed=routed, **options)
    assert result.history == history
    assert jax.tree.structure(result.variables) == jax.tree.structure(variables)
    for got, want in zip(jax.tree.leaves(result.variables), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(got, want)
    if "batch_stats" in variables:  # BatchNorm's running statistics moved in training
        init = train_module.init_variables(model, jax.random.split(key)[0], X)
        mean = result.variables["batch_stats"]["BatchNorm_0"]["mean"]
        assert not np.array_equal(mean, init["batch_stats"]["BatchNorm_0"]["mean"])


def test_each_epoch_is_one_call_of_one_compiled_program(monkeypatch):
    model, optimizer = MLP(), optax.adam(1e-2)
    calls = []
    make = train_module._train_epoch

    def counted(model, optimizer):
        epoch_fn = make(model, optimizer)
        calls.append(epoch_fn)
        return lambda *args, **kwargs: calls.append("epoch") or epoch_fn(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", counted)
    for epochs in (1, 4):
        train_classifier(
            model, (X, Y), key=jax.random.key(0), epochs=epochs, optimizer=optimizer,
            batch_size=16, progress=False,
        )
    epoch_fn = calls[0]
    assert calls == [epoch_fn, "epoch", epoch_fn] + ["epoch"] * 4  # one cached program
    assert epoch_fn._cache_size() == 1  # compiled once, for every epoch of both runs


def nan_updates_from(step):
    def update(updates, count, params=None):
        factor = jnp.where(count >= step, jnp.nan, 1.0)
        return jax.tree.map(lambda u: u * factor, updates), count + 1

    return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


def test_parameters_that_turn_nan_on_the_last_step_are_named_at_the_end_of_the_epoch():
    # Update 3 of 3 is NaN: every loss of epoch 1 is finite, its final parameters are not.
    optimizer = optax.chain(optax.adam(1e-2), nan_updates_from(2))
    with pytest.raises(NonFiniteError, match=r"^run: parameters after epoch 1 contains NaN.*Dense"):
        train_classifier(
            MLP(), (X, Y), key=jax.random.key(0), epochs=2, batch_size=16,
            optimizer=optimizer, progress=False, description="run",
        )
    # Update 2 of 3 is NaN: the loss of step 3 is the first NaN one, named as before.
    optimizer = optax.chain(optax.adam(1e-2), nan_updates_from(1))
    with pytest.raises(NonFiniteError, match=r"loss became nan at epoch 1, step 3 of 3 \(global"):
        train_classifier(
            MLP(), (X, Y), key=jax.random.key(0), epochs=2, batch_size=16,
            optimizer=optimizer, progress=False,
        )


# --- FUSE's and random search's batches -----------------------------------------------------


def host_batch_indices(key, num_examples, steps, batch_size):
    """The documented draw, one permutation at a time on the host."""
    needed = steps * batch_size
    keys = jax.random.split(key, -(-needed // num_examples))
    order = np.concatenate([np.asarray(jax.random.permutation(k, num_examples)) for k in keys])
    return order[:needed].reshape(steps, batch_size)


@pytest.mark.parametrize(
    "key",
    [jax.random.key(0), jax.random.PRNGKey(3), jax.random.key(5, impl="rbg")],
    ids=["threefry", "raw", "rbg"],
)
def test_batch_indices_drawn_on_the_device_equal_the_host_draw(key):
    for num_examples, steps, batch_size in ((10, 7, 3), (50, 2, 16), (7, 1, 7)):
        got = ld.nas.draw_batch_indices(key, num_examples, steps, batch_size)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(
            got, host_batch_indices(key, num_examples, steps, batch_size)
        )


def test_draw_batches_gathers_device_data_on_the_device():
    key = jax.random.key(4)
    on_host = ld.nas.draw_batches(key, X, Y, 3, 8)
    on_device = ld.nas.draw_batches(key, jax.device_put(X), jax.device_put(Y), 3, 8)
    assert all(isinstance(a, np.ndarray) for a in on_host)
    assert all(isinstance(a, jax.Array) for a in on_device)
    index = host_batch_indices(key, len(X), 3, 8)
    for host, device, data in zip(on_host, on_device, (X, Y)):
        np.testing.assert_array_equal(host, data[index])
        np.testing.assert_array_equal(device, data[index])


def test_a_candidates_training_takes_device_resident_data_and_gives_the_same_result():
    from ldnas_jax.nas.switch import genotype_choices, switch_init, switch_network

    genotype = ld.nas.Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
    net = switch_network(genotype.operations, 3, num_nodes=3, channels=4, num_cells=1)
    x, y = X[:, :4, :4], Y  # 50 examples: 2 validation chunks of 32, the last padded
    fn = ld.nas.make_train_and_evaluate(net, optax.adam(1e-2), eval_chunk_size=32)
    params = switch_init(net, jax.random.key(0), x)
    index = ld.nas.draw_batch_indices(jax.random.key(1), len(x), steps=4, batch_size=8)
    choices = genotype_choices(genotype, net.operations)
    on_host = fn(params, x, y, index, x, y, choices)
    on_device = fn(params, *jax.device_put((x, y)), index, *jax.device_put((x, y)), choices)
    for a, b in zip(jax.tree.leaves(on_host), jax.tree.leaves(on_device)):
        np.testing.assert_array_equal(a, b)
    # The accuracy counts the 50 real rows only, as a plain evaluation of the trained weights.
    logits = net.apply({"params": on_host[0]}, x, choices, train=False)
    assert float(on_host[2]) == np.mean(np.argmax(logits, -1) == y)


def test_the_loop_benchmark_trains_alike_in_both_loops(tmp_path):
    from benchmarks import train_loop_speed

    out = tmp_path / "speed.json"
    argv = ["--cases", "mlp", "--steps", "4", "--repeats", "1", "--epochs", "1", "--old-ref", ""]
    report = train_loop_speed.main([*argv, "--json", str(out)])
    (case,) = report["cases"]
    assert case["max_abs_difference_of_variables_library_vs_hand_written"] == 0.0
    assert set(case["ratio_to_hand_written_scan"]) == {"train_classifier", "hand_written_scan"}
    assert out.exists()
