"""The demo's wall time and stage timings, first run against a second with JAX's compilation cache.

Runs ``python -m ldnas_jax demo`` twice as separate processes in one invocation, with a fresh,
private compilation cache (``LDNAS_JAX_CACHE_DIR``): the first run compiles and fills the cache,
the second loads what it can. Each run gets its own empty ``--out``, so the second repeats all the
work (it does not resume). Wall times come from this script; stage timings from each run's
``results.json``.

Run: ``python -m benchmarks.demo_time --json docs/demo_time_cpu.json`` (about two demo runs).
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


def run_demo(out: Path, cache: Path, extra: list[str]) -> dict:
    """One demo process; its wall seconds and the timings it wrote."""
    environ = {**os.environ, "LDNAS_JAX_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "ldnas_jax", "demo", "--out", str(out), *extra]
    start = time.perf_counter()
    subprocess.run(command, env=environ, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    return {
        "wall_seconds": round(wall, 1),
        "total_seconds": round(results["total_seconds"], 1),
        "stage_seconds": {k: round(v, 1) for k, v in results["stage_seconds"].items()},
        "closest_task": results.get("closest_task"),
        "test_accuracy": results.get("test_accuracy"),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("demo_args", nargs="*", help="extra demo flags, after --")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        first = run_demo(scratch / "first", scratch / "cache", args.demo_args)
        entries = len(list((scratch / "cache").iterdir()))
        second = run_demo(scratch / "second", scratch / "cache", args.demo_args)
    payload = {
        "command": "python -m benchmarks.demo_time " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_end": os.getloadavg(),
        "first_run": first,
        "second_run": second,
        "cache_entries_after_first": entries,
        "second_over_first_wall": round(second["wall_seconds"] / first["wall_seconds"], 3),
    }
    print(json.dumps(payload, indent=2))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
