"""The one training loop and the one evaluate: optimisers, padding, compilation, model forms."""

import flax.linen as nn
import jax
import numpy as np
import optax
from _compiles import count_compiles
from _small_models import MLP

from ldnas_jax import train as train_module
from ldnas_jax.train import evaluate, init_variables, train_classifier

RNG = np.random.default_rng(0)
X = RNG.normal(size=(45, 2, 3, 2)).astype(np.float32)
Y = (np.arange(45) % 3).astype(np.int32)


def numpy_scores(logits, y):
    """Accuracy and mean cross-entropy by a plain float64 loop over examples."""
    correct, loss = 0, 0.0
    for row, label in zip(np.asarray(logits, np.float64), y):
        correct += int(np.argmax(row) == label)
        loss += np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[label]
    return correct / len(y), loss / len(y)


def test_the_compile_counter_sees_a_new_program():
    with count_compiles() as compiled:
        jax.jit(lambda x: x * 3 - 1)(np.arange(5.0))
    assert len(compiled) == 1


def test_evaluate_pads_ragged_batches_and_compiles_once_per_model():
    model = MLP()
    variables = init_variables(model, jax.random.key(0), X)
    logits = model.apply(variables, X)
    first = evaluate(model, variables, (X[:37], Y[:37]), batch_size=16)  # 16, 16, 5 (+11 padding)
    # Other tests in this process may have evaluated an equal MLP on other shapes: count from here.
    programs = train_module._evaluation_sums(model)._cache_size()
    with count_compiles() as compiled:
        second = evaluate(model, variables, (X, Y), batch_size=16)  # 16, 16, 13 (+3 padding)
    assert compiled == []
    assert train_module._evaluation_sums(model)._cache_size() == programs
    for got, n in ((first, 37), (second, 45)):
        accuracy, loss = numpy_scores(logits[:n], Y[:n])
        assert got["accuracy"] == accuracy
        np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)


class NoTrainArgument(nn.Module):
    """A model whose ``__call__`` takes the input alone, as many user models do."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_a_model_without_a_train_argument_trains_and_evaluates():
    result = train_classifier(
        NoTrainArgument(), (X, Y), key=jax.random.key(0), epochs=2, batch_size=15, progress=False
    )
    assert [h["epoch"] for h in result.history] == [1, 2]
    scores = evaluate(NoTrainArgument(), result.variables, (X, Y))
    accuracy, loss = numpy_scores(NoTrainArgument().apply(result.variables, X), Y)
    assert scores["accuracy"] == accuracy
    np.testing.assert_allclose(scores["loss"], loss, rtol=1e-5)


def test_sequential_model_takes_its_input_alone():
    model = nn.Sequential([lambda x: x.reshape((x.shape[0], -1)), nn.Dense(3)])
    result = train_classifier(model, (X, Y), key=jax.random.key(1), epochs=1, progress=False)
    assert np.isfinite(result.history[0]["loss"])


def test_optimizer_argument_trains_only_the_head():
    """Head-only fine-tuning is an Optax mask passed as ``optimizer=``."""
    variables = init_variables(MLP(), jax.random.key(0), X)
    role = {"Dense_0": "frozen", "Dense_1": "head"}
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: role[path[0].key], variables["params"]
    )
    head_only = optax.multi_transform(
        {"head": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels
    )
    # One step over the whole set: the batch order cannot matter.
    result = train_classifier(
        MLP(),
        (X, Y),
        key=jax.random.key(0),
        epochs=1,
        batch_size=len(X),
        optimizer=head_only,
        variables=variables,
        progress=False,
    )
    before, after = variables["params"], result.variables["params"]

    def loss(head):
        logits = MLP().apply({"params": {**before, "Dense_1": head}}, X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    by_hand = jax.tree.map(
        lambda p, g: p - 0.1 * g, before["Dense_1"], jax.grad(loss)(before["Dense_1"])
    )
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(after["Dense_0"][name], before["Dense_0"][name])
        np.testing.assert_allclose(after["Dense_1"][name], by_hand[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(after["Dense_1"][name], before["Dense_1"][name])
