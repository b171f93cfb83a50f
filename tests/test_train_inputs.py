"""Training and evaluation refuse bad input before compiling anything, and evaluate is exact."""

import jax
import numpy as np
import pytest
from _small_models import MLP

from ldnas_jax import train as train_module
from ldnas_jax._checks import NonFiniteError
from ldnas_jax.train import evaluate, init_variables, is_epsilon_approximation, train_classifier

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2, 3, 2)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2], np.int32)  # MLP has 3 logits


@pytest.fixture(scope="module")
def mlp_variables():
    return init_variables(MLP(), jax.random.key(0), X)


def test_evaluate_matches_a_numpy_reference_and_refuses_bad_input(mlp_variables):
    logits = np.asarray(MLP().apply(mlp_variables, X), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    got = evaluate(MLP(), mlp_variables, (X, Y), batch_size=4)  # two batches, one ragged
    assert got["accuracy"] == np.mean(logits.argmax(1) == Y)
    np.testing.assert_allclose(got["loss"], -log_p[np.arange(6), Y].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), found range \[0, 3\]"):
        evaluate(MLP(), mlp_variables, (X, np.array([0, 1, 2, 3, 1, 0])))
    for bad, error in ((0, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="batch_size"):
            evaluate(MLP(), mlp_variables, (X, Y), batch_size=bad)
    nan = jax.tree.map(lambda a: a * np.nan, mlp_variables)
    with pytest.raises(NonFiniteError, match="variables contains NaN"):
        evaluate(MLP(), nan, (X, Y))


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"train": (X, np.array([0, 1, 2, 3, 1, 0]))}, ValueError, r"labels must lie in \[0, 3\)"),
        ({"train": (X[..., 0], Y)}, ValueError, r"NHWC.*ndim 4.*\(6, 2, 3\)"),
        ({"epochs": 1.5}, TypeError, "epochs must be an int"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"key": 0}, TypeError, "key must be a JAX PRNG key"),
        ("nan_variables", NonFiniteError, "initial variables contains NaN"),
    ],
)
def test_train_classifier_refuses_bad_input_before_training(
    mlp_variables, monkeypatch, changes, error, match
):
    def no_step(*a, **kw):
        raise AssertionError("compiled a training epoch before checking the input")

    monkeypatch.setattr(train_module, "_train_epoch", no_step)
    args = {
        "train": (X, Y),
        "key": jax.random.key(0),
        "epochs": 1,
        "batch_size": 2,
        "progress": False,
    }
    if changes == "nan_variables":
        changes = {"variables": jax.tree.map(lambda a: a * np.nan, mlp_variables)}
    with pytest.raises(error, match=match):
        train_classifier(MLP(), **{**args, **changes})


def test_init_variables_needs_a_batch_and_a_key():
    with pytest.raises(ValueError, match=r"non-empty batch.*\(0, 2, 3, 2\)"):
        init_variables(MLP(), jax.random.key(0), X[:0])
    with pytest.raises(TypeError, match="PRNG key"):
        init_variables(MLP(), 0, X)


@pytest.mark.parametrize("accuracy", [-0.1, 1.5, float("nan")])
def test_epsilon_approximation_needs_an_accuracy_in_the_unit_interval(accuracy):
    assert is_epsilon_approximation(0.9, 0.1) and not is_epsilon_approximation(0.89, 0.1)
    with pytest.raises(ValueError, match=r"accuracy must lie in \[0, 1\]"):
        is_epsilon_approximation(accuracy, 0.1)
