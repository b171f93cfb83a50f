"""ε-networks trained on to an epoch cap: stop on validation, keep the best epoch, never read test."""

import argparse
import functools
import json

import jax
import numpy as np
import pytest
from _tiny_runs import stand_in_for_the_architecture_search

import ldnas_jax.train as train_module
from ldnas_jax import zoo as zoo_module
from ldnas_jax.checkpoint import latest_step_checkpoint
from ldnas_jax.commands._options import EPSILON_FLAGS, add_flags, epsilon_options
from ldnas_jax.data import Split, TaskData
from ldnas_jax.models import SmallVGG, make_model, registry
from ldnas_jax.tasks import _networks
from ldnas_jax.tasks._networks import load_task_network, save_task_network, train_task_network
from ldnas_jax.train import evaluate, train_classifier
from ldnas_jax.zoo import build_zoo, load_zoo

BATCH, LR = 16, 1e-2
MODEL = "one_stage_vgg"  # a one-stage SmallVGG: compiles in a fraction of small_vgg's time


@pytest.fixture(autouse=True)
def one_stage_vgg(monkeypatch):
    monkeypatch.setitem(
        registry._BUILDERS, MODEL, functools.partial(SmallVGG, features=(8,), hidden=16)
    )


def _key():
    return jax.random.key(0, impl="rbg")  # rbg: fast to compile on CPU


def _split(rng, n: int, *, flip: int = 0, invert: bool = False) -> Split:
    """8×8 images whose class is their brightness; ``flip`` labels wrong, or all ``invert``-ed."""
    y = np.arange(n, dtype=np.int32) % 2
    x = rng.uniform(0.0, 0.5, size=(n, 8, 8, 3)).astype(np.float32) + 0.5 * y[:, None, None, None]
    labels = 1 - y if invert else y.copy()
    labels[:flip] = 1 - labels[:flip]
    return Split(x.astype(np.float32), labels.astype(np.int32))


def _task(*, val_flip=3, invert_val=False, test=None) -> TaskData:
    rng = np.random.default_rng(0)
    train = _split(rng, 64)
    val = _split(rng, 16, flip=val_flip, invert=invert_val)
    return TaskData("toy", 2, train, val, test if test is not None else _split(rng, 16))


def _hand_run(data: TaskData, epochs: int, *, val=True):
    """train_classifier with the key and settings train_task_network uses."""
    return train_classifier(
        make_model(MODEL, 2),
        (data.train.x, data.train.y),
        key=_key(),
        epochs=epochs,
        batch_size=BATCH,
        learning_rate=LR,
        val=(data.val.x, data.val.y) if val else None,
        progress=False,
    )


def _train(data: TaskData, **kwargs):
    kwargs = {
        "key": _key(),
        "model_name": MODEL,
        "batch_size": BATCH,
        "learning_rate": LR,
        **kwargs,
    }
    return train_task_network(data, progress=False, **kwargs)


def _same_tree(a, b) -> bool:
    return jax.tree.all(jax.tree.map(lambda u, v: bool(np.array_equal(u, v)), a, b))


def test_cap_stops_at_the_first_epoch_that_meets_epsilon_on_validation():
    data = _task()
    cap = 6
    val = [h["val_accuracy"] for h in _hand_run(data, cap).history]
    # A target met later than epoch 1 and before the cap: the smallest accuracy above epoch 1's.
    above = sorted(a for a in val[1:] if a > val[0])
    assert above, f"validation accuracy never rose above epoch 1's: {val}"
    target = above[0]
    first = 1 + next(e for e in range(cap) if val[e] >= target)
    assert 1 < first <= cap
    # ε a hair above 1 - target, so that 1 - ε ≤ target despite rounding
    net = _train(data, epochs=1, max_epochs=cap, epsilon=1 - target + 1e-9)
    assert net.epochs_trained == first
    best = 1 + int(np.argmax(val[:first]))  # argmax takes the earliest of equals
    assert net.best_epoch == best
    assert net.val_accuracy == val[best - 1]
    # Epoch e of a longer run is a run of e epochs (batches are seeded per epoch).
    assert _same_tree(net.variables, _hand_run(data, best, val=False).variables)
    model = make_model(MODEL, 2)
    assert (
        net.test_accuracy == evaluate(model, net.variables, (data.test.x, data.test.y))["accuracy"]
    )


def test_minimum_epochs_are_trained_even_when_epsilon_is_met_earlier():
    data = _task(val_flip=0)
    net = _train(data, epochs=3, max_epochs=5, epsilon=0.99)  # met from epoch 1 on
    assert net.epochs_trained == 3


def test_cap_is_honoured_when_epsilon_is_never_met():
    data = _task(invert_val=True)  # validation labels inverted: accuracy stays far below 1
    net = _train(data, epochs=1, max_epochs=3, epsilon=0.01)
    assert net.epochs_trained == 3
    val = [h["val_accuracy"] for h in _hand_run(data, 3).history]
    assert max(val) < 0.99
    assert net.best_epoch == 1 + int(np.argmax(val))
    assert net.val_accuracy == max(val)


def test_test_split_never_steers_training(monkeypatch):
    right = _task(invert_val=True)
    # Complementary test labels: an epoch chooser that read them would pick another epoch.
    other_test = Split(right.test.x, 1 - right.test.y)
    wrong = right._replace(test=other_test)
    seen = []

    real = train_module._evaluate_checked

    def evaluate_and_record(model, variables, x, y, *args, **kw):
        # The images tell the splits apart: the checks pass them on as given, labels as copies.
        seen.append("test" if x is right.test.x else "other")
        return real(model, variables, x, y, *args, **kw)

    # Every evaluation ends here: train_classifier's per-epoch validation (its val checked
    # once) and, through ``evaluate``, the final test in _networks.
    monkeypatch.setattr(train_module, "_evaluate_checked", evaluate_and_record)
    a = _train(right, epochs=1, max_epochs=3, epsilon=0.01)
    b = _train(wrong, epochs=1, max_epochs=3, epsilon=0.01)
    assert seen.count("test") == 2 and seen[-1] == "test"  # once per network: its report
    assert seen.count("other") == 2 * 3  # validation after each of the 3 epochs
    assert (a.epochs_trained, a.best_epoch, a.val_accuracy) == (
        b.epochs_trained,
        b.best_epoch,
        b.val_accuracy,
    )
    assert _same_tree(a.variables, b.variables)
    assert a.test_accuracy + b.test_accuracy == pytest.approx(1.0)  # complementary labels


def test_no_cap_trains_exactly_epochs_as_before():
    data = _task()
    net = _train(data, epochs=2)
    assert (net.epochs_trained, net.best_epoch) == (2, 2)
    hand = _hand_run(data, 2, val=False)
    assert _same_tree(net.variables, hand.variables)
    model = make_model(MODEL, 2)
    assert net.val_accuracy == evaluate(model, hand.variables, (data.val.x, data.val.y))["accuracy"]


def test_resumed_capped_run_equals_an_unbroken_one(tmp_path):
    data = _task(invert_val=True)
    val = [h["val_accuracy"] for h in _hand_run(data, 3).history]
    unbroken = _train(data, epochs=1, max_epochs=3, epsilon=0.01)
    _train(data, epochs=1, max_epochs=2, epsilon=0.01, checkpoint_dir=tmp_path)
    resumed = _train(
        data, epochs=1, max_epochs=3, epsilon=0.01, checkpoint_dir=tmp_path, resume=True
    )
    # The best epoch lies before the resumed checkpoint (epoch 2): it is replayed, not lost.
    assert 1 + int(np.argmax(val)) == 1, val
    assert (resumed.epochs_trained, resumed.best_epoch) == (3, 1)
    assert resumed.val_accuracy == unbroken.val_accuracy
    assert _same_tree(resumed.variables, unbroken.variables)


def test_a_resumed_run_that_had_stopped_stays_stopped(tmp_path):
    data = _task(val_flip=0)
    first = _train(data, epochs=1, max_epochs=4, epsilon=0.99, checkpoint_dir=tmp_path)
    assert first.epochs_trained == 1
    again = _train(data, epochs=1, max_epochs=4, epsilon=0.99, checkpoint_dir=tmp_path, resume=True)
    assert again.epochs_trained == 1
    assert _same_tree(again.variables, first.variables)


def test_save_load_round_trips_the_new_fields(tmp_path):
    net = _train(_task(), epochs=1, max_epochs=2, epsilon=0.01)
    save_task_network(net, tmp_path / "net", input_shape=(8, 8, 3))
    loaded, meta = load_task_network(tmp_path / "net")
    assert (loaded.epochs_trained, loaded.best_epoch, loaded.val_accuracy) == (
        net.epochs_trained,
        net.best_epoch,
        net.val_accuracy,
    )
    assert (meta["epochs_trained"], meta["best_epoch"]) == (2, net.best_epoch)


def test_old_checkpoint_without_the_new_fields_still_loads(tmp_path):
    variables = make_model(MODEL, 2).init(jax.random.key(0), np.zeros((1, 8, 8, 3)))
    old = _networks.TaskNetwork("A", MODEL, 2, dict(variables), 0.9, 0.1)
    save_task_network(old, tmp_path / "net", input_shape=(8, 8, 3))
    path = tmp_path / "net" / "meta.json"
    meta = json.loads(path.read_text())
    for name in ("epochs_trained", "best_epoch", "val_accuracy"):
        del meta["metadata"][name]
    path.write_text(json.dumps(meta))
    loaded, loaded_meta = load_task_network(tmp_path / "net")
    assert "epochs_trained" not in loaded_meta  # the file really is of the old kind
    assert (loaded.epochs_trained, loaded.best_epoch, loaded.val_accuracy) == (None, None, None)
    assert loaded.test_accuracy == 0.9


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 3, "max_epochs": 2}, "max_epochs .2. must be at least epochs .3."),
        ({"epochs": 1, "max_epochs": 0}, "max_epochs must be >= 1"),
        ({"epochs": 1, "max_epochs": -4}, "max_epochs must be >= 1"),
    ],
)
def test_bad_caps_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _train(_task(), **kwargs)


def test_a_cap_without_a_validation_split_is_a_value_error():
    data = _task()
    empty = Split(data.val.x[:0], data.val.y[:0])
    with pytest.raises(ValueError, match="validation split"):
        _train(data._replace(val=empty), epochs=1, max_epochs=2)


def test_the_flag_flows_into_epsilon_options():
    parser = argparse.ArgumentParser()
    add_flags(parser, EPSILON_FLAGS)
    assert epsilon_options(parser.parse_args([])).max_epochs is None
    assert epsilon_options(parser.parse_args(["--max-epochs", "9"])).max_epochs == 9
    with pytest.raises(ValueError, match="--max-epochs .2. must be at least --epochs .4."):
        epsilon_options(parser.parse_args(["--max-epochs", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-epochs", "0"])


def test_zoo_trains_its_networks_to_the_cap_and_saves_what_they_did(tmp_path, monkeypatch):
    # The architecture search is not under test: a fixed genotype stands in for it.
    stand_in_for_the_architecture_search(monkeypatch)
    data = _task(invert_val=True)  # ε never met: the cap ends training
    entry = build_zoo(
        [data],
        key=_key(),
        model_name=MODEL,
        epochs=1,
        max_epochs=2,
        directory=tmp_path,
        progress=False,
    )["toy"]
    # The zoo's network key for the task (keyed by its name), its default batch and rate.
    key = jax.random.fold_in(zoo_module.task_key(_key(), "toy"), 0)
    alone = train_task_network(
        data, key=key, model_name=MODEL, epochs=1, max_epochs=2, progress=False
    )
    assert entry.network.epochs_trained == alone.epochs_trained == 2
    assert entry.network.best_epoch == alone.best_epoch
    assert _same_tree(entry.network.variables, alone.variables)
    reloaded = load_zoo(tmp_path)["toy"].network
    assert (reloaded.epochs_trained, reloaded.best_epoch, reloaded.val_accuracy) == (
        2,
        alone.best_epoch,
        alone.val_accuracy,
    )


def test_train_classifier_stop_hook_ends_training_and_checkpoints_that_epoch(tmp_path):
    data = _task()
    calls = []

    def stop(history, variables):
        calls.append((len(history), "val_accuracy" in history[-1], variables))
        return len(history) == 2

    result = train_classifier(
        make_model(MODEL, 2),
        (data.train.x, data.train.y),
        key=_key(),
        epochs=5,
        batch_size=BATCH,
        learning_rate=LR,
        val=(data.val.x, data.val.y),
        progress=False,
        checkpoint_dir=tmp_path,
        checkpoint_every=5,  # the stop, not the interval, writes epoch 2's checkpoint
        stop=stop,
    )
    assert [(n, has_val) for n, has_val, _ in calls] == [(1, True), (2, True)]
    assert len(result.history) == 2
    assert _same_tree(calls[-1][2], result.variables)
    assert latest_step_checkpoint(tmp_path).name == "step_00000002"
