"""The demo's wall time and stage timings, first run against a second with JAX's compilation cache.

Runs ``python -m ldnas_jax demo`` twice as separate processes in one invocation, with a fresh,
private compilation cache (``LDNAS_JAX_CACHE_DIR``): the first run compiles and fills the cache,
the second loads what it can. Each run gets its own empty ``--out``, so the second repeats all the
work (it does not resume). Wall times come from this script; stage timings from each run's
``results.json``.

Run: ``python -m benchmarks.demo_time --json docs/demo_time_cpu.json`` (about two demo runs).

``--before REV`` also times the demo of an earlier git revision (checked out in a temporary
worktree), its runs interleaved with this checkout's (first runs, then second runs), and
reports this checkout's wall time over the revision's: a before/after ratio from one run.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(out: Path, cache: Path, extra: list[str], source: Path = ROOT) -> dict:
    """One demo process of the package in ``source``; its wall seconds and the timings it wrote."""
    environ = {**os.environ, "LDNAS_JAX_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "ldnas_jax", "demo", "--out", str(out), *extra]
    start = time.perf_counter()
    subprocess.run(command, env=environ, cwd=source, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    return {
        "wall_seconds": round(wall, 1),
        "total_seconds": round(results["total_seconds"], 1),
        "stage_seconds": {k: round(v, 1) for k, v in results["stage_seconds"].items()},
        "closest_task": results.get("closest_task"),
        "test_accuracy": results.get("test_accuracy"),
        "epsilon_networks": results.get("epsilon_networks"),
        "missed_epsilon": results.get("missed_epsilon"),
    }


def worktree(revision: str, where: Path) -> Path:
    """A checkout of ``revision`` of this repository at ``where`` (a detached git worktree)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), revision],
        check=True,
        capture_output=True,
    )
    return where


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--before", metavar="REV", help="also time the demo of this git revision")
    parser.add_argument("demo_args", nargs="*", help="extra demo flags, after --")
    args = parser.parse_args(argv)
    sources = {"this_checkout": ROOT}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.before:
            sources = {"before": worktree(args.before, scratch / "before"), **sources}
        runs = {name: {} for name in sources}
        try:
            for run in ("first_run", "second_run"):  # interleaved: both see the same load
                for name, source in sources.items():
                    cache = scratch / f"cache_{name}"
                    out = scratch / f"{name}_{run}"
                    runs[name][run] = run_demo(out, cache, args.demo_args, source)
                    if run == "first_run":
                        runs[name]["cache_entries_after_first"] = len(list(cache.iterdir()))
        finally:
            if args.before:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "before")],
                    check=False,
                )
    for figures in runs.values():
        figures["second_over_first_wall"] = round(
            figures["second_run"]["wall_seconds"] / figures["first_run"]["wall_seconds"], 3
        )
    payload = {
        "command": "python -m benchmarks.demo_time " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_end": os.getloadavg(),
        **runs["this_checkout"],
    }
    if args.before:
        payload["before"] = {"revision": args.before, **runs["before"]}
        payload["this_checkout_over_before_wall"] = {
            run: round(
                runs["this_checkout"][run]["wall_seconds"] / runs["before"][run]["wall_seconds"], 3
            )
            for run in ("first_run", "second_run")
        }
    print(json.dumps(payload, indent=2))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
