"""`python -m ldnas_jax reproduce` on a tiny embedded configuration, and its helpers."""

import argparse
import json

import numpy as np
import pytest
from _fast_compiles import fast_compiles

from ldnas_jax.cli import main
from ldnas_jax.commands.reproduce import add_arguments, load_config, resolve_settings
from ldnas_jax.experiments._reproduce import paper_targets, search_cost, summarize_seeds

# Three two-class tasks (digits, objects, objects): one head size, so compilations are shared.
pytestmark = pytest.mark.slow  # the reproduce command end to end

TASKS = ["E0", "E4", "E5"]
# Everything tiny; the seed count comes from the command line to check that it overrides.
TINY = {
    "tasks": TASKS,
    "search_targets": ["E5"],
    "seeds": 1,
    "epochs": 1,
    "subset": 48,
    "max-test": 32,
    "fisher_examples": 16,
    "distances": ["log_det", "frechet", "task2vec"],
    "candidates": 1,
    "iterations": 1,
    "rounds": 1,
    "steps_per_round": 2,
    "search_batch_size": 16,
    "channels": 4,
    "cells": 1,
    "final_epochs": 1,
    "final_batch_size": 16,
    "zoo_samples": 1,
    "zoo_steps": 2,
    "hand_designed": ["small_vgg"],
    "no_progress": True,
}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    config = out / "tiny.json"
    config.write_text(json.dumps(TINY))
    with fast_compiles(tmp_path_factory.mktemp("jax_compilation_cache")):
        status = main(["reproduce", "--config", str(config), "--seeds", "2", "--out", str(out)])
    assert status == 0
    return out, json.loads((out / "reproduce.json").read_text())


def test_mean_and_std_are_those_of_the_per_seed_tables(reproduced):
    out, results = reproduced
    assert results["config"]["seeds"] == 2 and results["seeds"] == [0, 1]  # flag beat the file
    assert results["names"] == TASKS
    for name, table in results["distance_tables"].items():
        per_seed = np.array(table["per_seed"])
        assert per_seed.shape == (2, 3, 3)
        for b in range(3):
            for t in range(3):
                values = [per_seed[s, b, t] for s in range(2)]
                mean = sum(values) / 2
                std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
                assert table["mean"][b][t] == pytest.approx(mean, abs=1e-12)
                assert table["std"][b][t] == pytest.approx(std, abs=1e-12)
        assert all(per_seed[s, t, t] == 0 for s in range(2) for t in range(3)), name
        assert (per_seed >= 0).all() and (per_seed > 0).any(), name
        # closest task: argmin over the other rows of the mean table's column
        for t, target in enumerate(TASKS):
            column = {TASKS[b]: table["mean"][b][t] for b in range(3) if b != t}
            assert table["closest"][target] == min(column, key=column.get)
        for picture in (f"{name}_mean.png", f"{name}_std.png"):
            assert (out / picture).stat().st_size > 1000, picture


def test_the_epsilon_networks_that_missed_are_named(reproduced, capsys):
    _, results = reproduced
    eps = results["epsilon"]
    expected = {
        (t, seed)
        for seed, accuracies in enumerate(results["test_accuracy"])
        for t, a in accuracies.items()
        if a < 1 - eps
    }
    assert {(m["task"], m["seed"]) for m in results["missed_epsilon"]} == expected
    for met, accuracies in zip(results["epsilon_approximation"], results["test_accuracy"]):
        assert met == {t: a >= 1 - eps for t, a in accuracies.items()}


def test_tables_1_2_section(reproduced):
    out, results = reproduced
    assert list(results["tables_1_2"]) == ["E5"]
    table = results["tables_1_2"]["E5"]
    mean = np.array(results["distance_tables"][results["search_distance"]]["mean"])
    column = {b: mean[TASKS.index(b), 2] for b in ("E0", "E4")}
    assert table["distances"] == pytest.approx(column)
    assert table["closest_task"] == min(column, key=column.get)
    methods = [r["method"] for r in table["rows"]]
    assert methods == ["ld_nas", "random_search", "full_space_fuse", "small_vgg"]
    for row in table["rows"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["num_params"] > 0
        assert row["params_millions"] == pytest.approx(row["num_params"] / 1e6)
        if row["kind"] == "search":
            assert row["search_device_hours"] == pytest.approx(row["search_seconds"] / 3600)
            assert row["gpu_hours"] is None  # the tests run on CPU
            assert row["device_kind"] == results["device"]["device_kind"]
        else:
            assert row["search_seconds"] is None
    assert (out / "table_E5.png").stat().st_size > 1000


def test_summarize_seeds_matches_a_loop():
    stack = np.random.default_rng(0).random((3, 2, 2))
    mean, std = summarize_seeds(stack)
    for i in range(2):
        for j in range(2):
            v = [stack[s, i, j] for s in range(3)]
            m = sum(v) / 3
            assert mean[i, j] == pytest.approx(m)
            assert std[i, j] == pytest.approx((sum((x - m) ** 2 for x in v) / 3) ** 0.5)
    with pytest.raises(ValueError, match="per_seed"):
        summarize_seeds(np.zeros((2, 2)))


def test_search_cost_and_paper_targets():
    gpu = search_cost(5400.0, {"platform": "gpu", "device_kind": "H100", "count": 1})
    assert gpu["gpu_hours"] == 1.5 and gpu["search_device_hours"] == 1.5
    assert (
        search_cost(36.0, {"platform": "cpu", "device_kind": "cpu", "count": 1})["gpu_hours"]
        is None
    )
    assert paper_targets([f"T{i}" for i in range(8)]) == ["T3", "T6"]


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve_settings(parser.parse_args(argv))


def test_config_file_precedence_and_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 7, "model": "vgg16", "no-progress": True}))
    settings = _parse(["--config", str(path), "--epochs", "2"])
    assert (settings.epochs, settings.model, settings.no_progress) == (2, "vgg16", True)
    assert settings.seeds == 2 and settings.tasks == ["embedded"]  # untouched defaults
    for bad, message in (
        ({"epoch": 3}, "unknown key 'epoch'"),
        ({"model": "alexnet"}, "alexnet"),
        ({"seeds": "many"}, "many"),
        ({"epochs": True}, "true/false"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            load_config(path)
    path.write_text("[1, 2]")
    with pytest.raises(TypeError, match="JSON object"):
        load_config(path)
