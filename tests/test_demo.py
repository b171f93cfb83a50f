"""The README's main command, `python -m ldnas_jax demo`, in a tiny configuration."""

import json

from ldnas_jax.cli import main

TINY = [
    "--max-train",
    "90",
    "--epochs",
    "1",
    "--fisher-examples",
    "16",
    "--candidates",
    "1",
    "--iterations",
    "1",
    "--rounds",
    "1",
    "--channels",
    "4",
    "--cells",
    "1",
    "--zoo-samples",
    "1",
    "--final-epochs",
    "1",
    "--baselines",
    "E0",
    "E7",
    "--no-progress",
]


def test_demo_writes_results_and_pictures(tmp_path):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), *TINY])
    results = json.loads((out / "results.json").read_text())
    for key in (
        "distances",
        "closest_task",
        "genotype",
        "test_accuracy",
        "num_params",
        "search_seconds",
        "seed",
        "versions",
        "config",
    ):
        assert key in results, key
    names = results["distances"]["names"]
    assert names == ["E0", "E7", "E6"]
    matrix = results["distances"]["matrix"]
    assert len(matrix) == 3 and all(matrix[i][i] == 0 for i in range(3))
    assert results["closest_task"] in ("E0", "E7")
    # the closest task is the argmin of the target's column of the same table
    column = {n: matrix[i][2] for i, n in enumerate(names[:2])}
    assert results["closest_task"] == min(column, key=column.get)
    assert 0 <= results["test_accuracy"] <= 1 and results["num_params"] > 0
    for picture in ("distances.png", "alpha.png", "cell.png"):
        assert (out / picture).stat().st_size > 1000, picture
