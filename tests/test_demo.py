"""The README's main command, `python -m ldnas_jax demo`, in a tiny configuration.

One test runs it twice: unbroken in this process, then in a subprocess that is
killed with SIGKILL part-way through and resumed with ``--resume``. Both must write
the same ``results.json``. The two share one test so that the reference run is
computed once, whatever the test distribution.

Test speed only (tests/_fast_compiles.py): both runs use RBG keys and one compilation
cache, which the unbroken run fills before the subprocess starts, so the subprocess
loads the programs instead of compiling them again.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _fast_compiles import fast_compiles

from ldnas_jax.cli import main

pytestmark = pytest.mark.slow  # the demo end to end, then killed with SIGKILL and resumed

TINY = [
    "--max-train", "90", "--epochs", "1", "--fisher-examples", "16", "--candidates", "1",
    "--iterations", "2", "--rounds", "1", "--warmup-rounds", "1", "--channels", "4", "--cells", "1",
    "--zoo-samples", "1", "--final-epochs", "1", "--baselines", "E0", "E7", "--no-progress",
]  # fmt: skip

# results.json entries that legitimately differ between two runs with the same seed:
# wall-clock timings, provenance of the process, and where and how the run was started.
TIMING_KEYS = {
    "stage_seconds", "total_seconds", "this_run_seconds", "run_parts", "search_seconds",
}  # fmt: skip
PROVENANCE_KEYS = {"versions", "written"}
RUN_CONTROL_CONFIG = {"out", "resume"}


def comparable(results: dict) -> dict:
    kept = {k: v for k, v in results.items() if k not in TIMING_KEYS | PROVENANCE_KEYS}
    kept["config"] = {k: v for k, v in kept["config"].items() if k not in RUN_CONTROL_CONFIG}
    return kept


def assert_close(a, b, path="results"):
    """Same structure and strings; numbers within 1e-6."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and abs(a - b) <= 1e-6, (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture
def fast_compiled_runs(tmp_path):
    with fast_compiles(tmp_path / "jax_compilation_cache") as cache:
        yield cache


def start_killed_run(out: Path, mark: Path) -> tuple[subprocess.Popen, threading.Thread]:
    """Starts the demo in a subprocess and a watcher that SIGKILLs it once ``mark`` exists."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parents[1]), env.get("PYTHONPATH")) if p
    )
    # A file, not a pipe (a full pipe would stall the child); the watcher closes it.
    log = open(out.parent / "killed.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "ldnas_jax", "demo", "--out", str(out), *TINY],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def kill_at_mark():
        while process.poll() is None and not mark.exists():
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()

    watcher = threading.Thread(target=kill_at_mark, daemon=True)
    watcher.start()
    return process, watcher


def test_demo_writes_results_and_a_killed_run_resumes_to_the_same_results(
    tmp_path, capsys, fast_compiled_runs
):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
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
    assert len(results["search_history"]) == 2
    # The ε-networks below 1 − ε are named: the zoo's (seed 0) and the target's of each seed.
    eps = results["epsilon"]
    expected = {(t, 0) for t, a in results["epsilon_networks"].items() if a < 1 - eps}
    expected |= {
        (results["target"], s)
        for s, a in enumerate(results["target_epsilon_networks_per_seed"])
        if s > 0 and a < 1 - eps
    }
    assert {(m["task"], m["seed"]) for m in results["missed_epsilon"]} == expected
    for picture in ("distances.png", "alpha.png", "cell.png"):
        assert (out / picture).stat().st_size > 1000, picture

    assert_honest_times(results, parts=1)

    # A finished run's directory is refused without --resume, in one line.
    assert main(["demo", "--out", str(out), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err

    # Resuming the finished run reuses every stage: its moments add to the first run's.
    assert main(["demo", "--out", str(out), *TINY, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert_honest_times(again, parts=2)
    # The search is restored, with the seconds its last checkpoint recorded.
    assert again["search_seconds"] == pytest.approx(results["search_seconds"], abs=1.0)
    for stage, seconds in results["stage_seconds"].items():
        assert again["stage_seconds"][stage] >= seconds, stage
    assert again["total_seconds"] == pytest.approx(
        results["total_seconds"] + again["this_run_seconds"], abs=0.05
    )
    assert_close(comparable(again), comparable(results))

    # Started once the unbroken run has filled the compilation cache. Killed once the first
    # FUSE iteration is checkpointed: the zoo, N_t and the distance table are done; the
    # second iteration and the final training are not.
    killed_out = tmp_path / "killed" / "demo"
    killed_out.parent.mkdir()
    mark = killed_out / "checkpoints" / "ld_nas" / "search" / "step_00000001" / "meta.json"
    process, watcher = start_killed_run(killed_out, mark)
    watcher.join(timeout=600)
    log = (killed_out.parent / "killed.log").read_text()
    assert process.returncode == -signal.SIGKILL, f"not killed part-way:\n{log[-3000:]}"
    assert not (killed_out / "results.json").exists()
    assert not (killed_out / "checkpoints" / "ld_nas" / "final").exists()

    assert main(["demo", "--out", str(killed_out), *TINY, "--resume"]) == 0
    resumed = json.loads((killed_out / "results.json").read_text())
    assert resumed["config"]["resume"] and not results["config"]["resume"]
    assert_close(comparable(resumed), comparable(results))
    # The killed part's FUSE iteration counts in its stage as in search_seconds.
    assert_honest_times(resumed, parts=2)


def assert_honest_times(results: dict, *, parts: int) -> None:
    """The stages sum to the total, and the search stage holds the search it timed."""
    stages = results["stage_seconds"]
    assert list(stages) == ["zoo", "distances", "search_and_final_training"]
    assert results["run_parts"] == parts and "this_run_seconds" in results["timing_note"]
    assert results["total_seconds"] == pytest.approx(sum(stages.values()), abs=0.02)
    # Both are rounded to 0.01 s on their own: allow their two roundings.
    assert stages["search_and_final_training"] >= results["search_seconds"] - 0.05
    assert 0 < results["this_run_seconds"] <= results["total_seconds"] + 0.01
    assert (results["this_run_seconds"] < results["total_seconds"]) == (parts > 1)


@pytest.mark.parametrize("baselines", [["E1", "E3"], ["E3", "E1"]])
def test_demo_refuses_the_target_among_its_baselines(baselines, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--target", "E1", "--baselines", *baselines, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the target cannot be its own baseline" in err and "E1" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()
