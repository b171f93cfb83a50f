"""Inputs are checked once, at the public boundary, not again by every inner call."""

import functools

import jax
import numpy as np
from _small_models import MLP
from _toy_tasks import rbg_key

from ldnas_jax import nas, train_classifier
from ldnas_jax import train as train_module
from ldnas_jax.nas import fuse as fuse_module
from ldnas_jax.nas import search as search_module

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8, 8, 3)).astype(np.float32)
Y = (np.arange(32) % 2).astype(np.int32)


def counted(monkeypatch, module, name):
    """Wraps ``module.name`` so that its calls are counted; returns the list of calls."""
    calls, real = [], getattr(module, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_training_checks_train_and_val_once_not_once_per_epoch(monkeypatch):
    calls = counted(monkeypatch, train_module, "check_classification_data")
    result = train_classifier(
        MLP(), (X, Y), key=jax.random.key(0), epochs=3, batch_size=16, val=(X, Y), progress=False
    )
    assert len(result.history) == 3 and all("val_accuracy" in r for r in result.history)
    assert calls == ["train", "val"]


def test_a_fuse_search_checks_its_data_once_not_once_per_iteration(monkeypatch):
    in_search = counted(monkeypatch, search_module, "check_train_val")
    in_fuse = counted(monkeypatch, fuse_module, "check_train_val")
    space = nas.SearchSpace(("identity", "max_pool_3x3"), num_nodes=2, shared_cells=True)
    config = nas.FuseConfig(max_rounds=1, steps_per_round=1, batch_size=8, channels=4, num_cells=1)
    result = nas.fuse_search(
        space, (X, Y), (X, Y), key=rbg_key(0), num_classes=2, num_candidates=1,
        max_iterations=3, config=config, progress=False,
    )  # fmt: skip
    assert result.iterations_run == 3
    assert len(in_search) == 1 and in_fuse == []
