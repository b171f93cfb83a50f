"""The zoo that ships with the package: complete, searched, gated, and still accurate.

If a change to the embedded data generator or to a model makes a shipped ε-network
score differently on its task's default test split, this fails: rebuild the zoo with
``python -m ldnas_jax zoo --out ldnas_jax/zoo_data/embedded --epochs 3 --max-epochs 8``.
"""

import json

import pytest

import ldnas_jax as ld
from ldnas_jax.data import EMBEDDED_TASKS, load_task
from ldnas_jax.models import make_model
from ldnas_jax.zoo import EMBEDDED_ZOO, MIN_GATE_REFERENCES, prebuilt_zoo_tasks

NAMES = [task.name for task in EMBEDDED_TASKS]


@pytest.fixture(scope="module")
def zoo():
    return ld.load_zoo()


def test_the_prebuilt_zoo_holds_every_embedded_task(zoo):
    assert list(zoo) == NAMES == prebuilt_zoo_tasks()


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_was_searched_and_gated(zoo, name):
    entry = zoo[name]
    assert "zero" not in entry.space.operations and "zero" not in entry.genotype.operations
    assert entry.genotype in entry.space
    quality = entry.quality
    assert len(quality["random_test_accuracies"]) >= MIN_GATE_REFERENCES
    assert quality["beats_random_median"] in (True, False)  # measured, whichever way
    assert quality["margin"] == pytest.approx(
        quality["test_accuracy"] - quality["random_median_test_accuracy"]
    )


@pytest.mark.parametrize("name", NAMES)
def test_each_network_still_reaches_its_recorded_test_accuracy(zoo, name):
    network = zoo[name].network
    data = load_task(name)  # the task's default split, as the zoo recorded it
    model = make_model(network.model_name, network.num_classes)
    accuracy = ld.evaluate(model, network.variables, (data.test.x, data.test.y))["accuracy"]
    assert accuracy == pytest.approx(network.test_accuracy, abs=0.02)


def test_the_report_is_the_zoo_table_of_the_entries(zoo):
    report = json.loads((EMBEDDED_ZOO / "report.json").read_text())
    rows = {row["task"]: row for row in report["tasks"]}
    assert list(rows) == NAMES
    for name, entry in zoo.items():
        assert rows[name]["architecture"] == list(entry.genotype.normal)
        assert rows[name]["test_accuracy"] == entry.quality["test_accuracy"]
        assert rows[name]["reached_epsilon"] == entry.network.is_epsilon_approximation
    flagged = [n for n, r in rows.items() if r["beats_random_median"] is False]
    assert report["flagged"] == flagged
