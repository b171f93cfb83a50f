"""The zoo's architecture search: keys by task name, ties, no `zero`, and the quality gate."""

import jax
import numpy as np
import pytest

from ldnas_jax import nas
from ldnas_jax import zoo as zoo_module
from ldnas_jax.data import Split, TaskData


def _task(name: str) -> TaskData:
    split = Split(np.zeros((4, 8, 8, 3), np.float32), np.array([0, 1, 0, 1], np.int32))
    return TaskData(name, 2, split, split, split)


def _key_data(key) -> tuple:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def test_each_task_key_follows_its_name_not_its_place(monkeypatch):
    seen = {}
    genotype = nas.Genotype(("identity",), num_nodes=2)

    def fake_network(data, *, key, **_):
        seen.setdefault(data.name, []).append(("network", _key_data(key)))
        return None

    def fake_search(data, *, key, **_):
        seen.setdefault(data.name, []).append(("search", _key_data(key)))
        return zoo_module.TaskArchitecture(
            genotype, nas.search_space_from_genotype(genotype), 0.5, {}
        )

    monkeypatch.setattr(zoo_module, "train_task_network", fake_network)
    monkeypatch.setattr(zoo_module, "find_task_architecture", fake_search)
    key = jax.random.key(3)
    zoo_module.build_zoo([_task("A"), _task("B")], key=key, progress=False)
    zoo_module.build_zoo([_task("B"), _task("C"), _task("A")], key=key, progress=False)
    for name in ("A", "B"):
        first, second = seen[name][:2], seen[name][2:]
        assert first == second, name
    # Different names, different keys (the old scheme gave list position 0 the same key).
    assert seen["A"][0] != seen["B"][0] != seen["C"][0]


def test_ties_on_accuracy_go_to_the_lower_validation_loss():
    history = [
        {"val_accuracy": 0.7, "val_loss": 0.69},  # sample 0: the majority-class tie
        {"val_accuracy": 0.7, "val_loss": 0.52},
        {"val_accuracy": 0.7},  # no loss recorded: last among its ties
        {"val_accuracy": 0.65, "val_loss": 0.1},
    ]
    assert nas.best_sample(history) == 1
    assert nas.best_sample(history[2:]) == 0  # a better accuracy still wins
    assert nas.best_sample([{"val_accuracy": 0.5}, {"val_accuracy": 0.5}]) == 0
    with pytest.raises(ValueError, match="no samples"):
        nas.best_sample([])


def test_zero_never_enters_a_derived_space():
    assert "zero" not in nas.SEARCHABLE_OPERATIONS
    assert set(nas.SEARCHABLE_OPERATIONS) == set(nas.ALL_OPERATIONS) - {"zero"}
    g = nas.Genotype(("zero", "sep_conv_3x3", "zero", "max_pool_3x3", "zero", "zero"))
    assert nas.search_space_from_genotype(g).operations == ("sep_conv_3x3", "max_pool_3x3")
    with pytest.raises(ValueError, match="only zero edges"):
        nas.search_space_from_genotype(nas.Genotype(("zero",) * 6))


def test_the_gate_compares_test_accuracy_with_the_median_of_the_others():
    tests = [0.60, 0.80, 0.70, 0.75, 0.50, 0.72, 0.65]
    history = [{"val_accuracy": 0.5, "test_accuracy": t} for t in tests]
    gate = zoo_module.architecture_quality(history, chosen=1)
    others = [0.60, 0.70, 0.75, 0.50, 0.72, 0.65]
    assert gate["random_test_accuracies"] == others
    assert gate["random_median_test_accuracy"] == pytest.approx((0.65 + 0.70) / 2)
    assert gate["margin"] == pytest.approx(0.80 - 0.675)
    assert gate["beats_random_median"] is True
    # Picked on validation but no better on test than the median: the gate fails.
    assert zoo_module.architecture_quality(history, chosen=4)["beats_random_median"] is False
    # Fewer than five references: not measured, neither passed nor failed.
    assert zoo_module.architecture_quality(history[:5], chosen=1)["beats_random_median"] is None


def test_a_failed_gate_warns_and_is_recorded(monkeypatch):
    space = nas.SearchSpace(("identity", "max_pool_3x3"), num_nodes=2, shared_cells=True)
    genotypes = space.sample(jax.random.key(0), 6)
    # Sample 0 wins on validation but is the worst on test.
    records = [
        {"genotype": g.to_json(), "val_accuracy": v, "val_loss": 0.5, "test_accuracy": t}
        for g, v, t in zip(genotypes, [0.9, 0.6, 0.6, 0.6, 0.6, 0.6], [0.4, 0.7, 0.7, 0.7, 0.7, 0.7])
    ]

    def fake_random_search(space, train, val, **kwargs):
        assert kwargs["test"] is not None  # the gate needs every sample's test accuracy
        return nas.SearchResult(genotypes[0], records, len(records), 0.0)

    monkeypatch.setattr(zoo_module, "random_search", fake_random_search)
    with pytest.warns(zoo_module.ZooQualityWarning, match="does not beat the median"):
        found = zoo_module.find_task_architecture(_task("A"), key=jax.random.key(0), space=space)
    assert found.quality["beats_random_median"] is False
    assert found.quality["margin"] == pytest.approx(0.4 - 0.7)


def test_each_sample_is_scored_with_its_trained_weights():
    # Scored on the validation split as its "test", a sample's test accuracy must be its
    # validation accuracy: both come from the weights the sample was trained to.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2, shared_cells=True)
    config = nas.RandomSearchConfig(
        num_samples=3, train_steps=20, batch_size=8, channels=4, num_cells=1
    )
    result = nas.random_search(
        space, (x, y), (x, y), key=jax.random.key(1), num_classes=2, config=config,
        progress=False, test=(x, y),
    )  # fmt: skip
    for record in result.history:
        assert record["test_accuracy"] == pytest.approx(record["val_accuracy"], abs=1e-6)
    # And training moved them: the loss is below log(2), a constant predictor's.
    assert min(r["val_loss"] for r in result.history) < np.log(2)
