"""Search seconds and XLA compilations: the static path (one program per candidate set) against
genotype-as-data (one program per search space), in one run.

Both paths search the same space with the same budget, keys and data, FUSE search
first, then random search. The switch path searches twice, the second time with a
new key, to show that a later search of the space compiles nothing. Compilations
are counted through ``jax.monitoring`` (XLA backend compiles, cache hits excluded).

Run: ``python -m benchmarks.search_speed`` (writes ``docs/search_speed_cpu.json``).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from benchmarks._static_fuse import fuse_search_static, random_search_static
from ldnas_jax import nas
from ldnas_jax.data import load_task

# "/jax/core/compile/backend_compile_duration" in JAX 0.10; the prefix moved between versions.
BACKEND_COMPILE_SUFFIX = "/backend_compile_duration"


class CompileCounter:
    """Counts XLA compilations and their seconds while active."""

    def __init__(self):
        self.count, self.seconds, self.active = 0, 0.0, False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and event.endswith(BACKEND_COMPILE_SUFFIX):
            self.count += 1
            self.seconds += duration

    def measure(self, fn):
        self.count, self.seconds, self.active = 0, 0.0, True
        start = time.perf_counter()
        try:
            out = fn()
        finally:
            self.active = False
        return out, {
            "seconds": round(time.perf_counter() - start, 2),
            "compilations": self.count,
            "compile_seconds": round(self.seconds, 2),
        }


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="E6")
    parser.add_argument("--max-train", type=int, default=256)
    parser.add_argument("--num-candidates", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--num-cells", type=int, default=3)
    parser.add_argument("--random-samples", type=int, default=4)
    parser.add_argument("--out", default="docs/search_speed_cpu.json")
    return parser.parse_args(argv)


def static_over_switch(rows: dict) -> dict:
    """Seconds of each static row over its switch row, first search and again with a new key."""
    ratios = {}
    for search in ("fuse_search", "random_search"):
        static = rows[f"{search}_static"]["seconds"]
        ratios[f"{search}_static_over_switch"] = round(
            static / rows[f"{search}_switch"]["seconds"], 2
        )
        again = rows[f"{search}_switch_again_new_key"]["seconds"]
        ratios[f"{search}_static_over_switch_again"] = round(static / again, 2)
    return ratios


def search_options(args: argparse.Namespace, num_classes: int):
    """``fuse_search``'s keywords and the random search's config, at the flags' budget."""
    config = nas.FuseConfig(
        max_rounds=args.rounds,
        patience_k=args.rounds + 1,  # every round runs: both paths do the same work
        steps_per_round=args.steps,
        batch_size=args.batch_size,
        channels=args.channels,
        num_cells=args.num_cells,
    )
    search = {
        "num_classes": num_classes,
        "num_candidates": args.num_candidates,
        "max_iterations": args.iterations,
        "config": config,
    }
    sampling = nas.RandomSearchConfig(
        num_samples=args.random_samples,
        train_steps=args.rounds * args.steps,
        batch_size=args.batch_size,
        channels=args.channels,
        num_cells=args.num_cells,
    )
    return search, sampling


# The fields of a RandomSearchConfig that the static path takes as keywords.
STATIC_SAMPLING = ("num_samples", "train_steps", "batch_size", "channels", "num_cells")


def time_both_paths(counter, space, train, val, search: dict, sampling) -> tuple[dict, dict]:
    """Seconds and compilations of each path's searches (rows), and each search's winner."""
    rows = {}
    # The switch path runs first, so it also pays the small shared compilations
    # (batch permutations, sampling) that the static path then finds cached.
    switch, rows["fuse_search_switch"] = counter.measure(
        lambda: nas.fuse_search(space, train, val, key=jax.random.key(0), progress=False, **search)
    )
    static, rows["fuse_search_static"] = counter.measure(
        lambda: fuse_search_static(space, train, val, key=jax.random.key(0), **search)
    )
    _, rows["fuse_search_switch_again_new_key"] = counter.measure(
        lambda: nas.fuse_search(space, train, val, key=jax.random.key(1), progress=False, **search)
    )
    num_classes = search["num_classes"]

    def random_switch_search(seed: int):
        return nas.random_search(
            space, train, val, key=jax.random.key(seed), num_classes=num_classes,
            config=sampling, progress=False,
        )  # fmt: skip

    static_sampling = {name: getattr(sampling, name) for name in STATIC_SAMPLING}
    random_switch, rows["random_search_switch"] = counter.measure(lambda: random_switch_search(2))
    random_static, rows["random_search_static"] = counter.measure(
        lambda: random_search_static(
            space, train, val, key=jax.random.key(2), num_classes=num_classes, **static_sampling
        )
    )
    _, rows["random_search_switch_again_new_key"] = counter.measure(lambda: random_switch_search(3))
    winners = {
        "fuse_search_switch": switch.genotype.to_json(),
        "fuse_search_static": static[0].to_json(),
        "random_search_switch": random_switch.genotype.to_json(),
        "random_search_static": random_static[0].to_json(),
    }
    return rows, winners


def main(argv=None) -> dict:
    args = parse_arguments(argv)

    data = load_task(args.target, max_train=args.max_train, max_test=64, seed=0)
    train, val = (data.train.x, data.train.y), (data.val.x, data.val.y)
    space = nas.SearchSpace(nas.PAPER_RELATED_OPERATIONS, num_nodes=4, shared_cells=True)
    search, sampling = search_options(args, data.num_classes)
    counter = CompileCounter()
    load_before = os.getloadavg()
    rows, winners = time_both_paths(counter, space, train, val, search, sampling)
    report = {
        "command": "python -m benchmarks.search_speed " + " ".join(argv or []),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "budget": {
            "target": args.target,
            "train_examples": len(train[1]),
            "image_shape": list(train[0].shape[1:]),
            "space": list(space.operations),
            "num_nodes": space.num_nodes,
            "shared_cells": space.shared_cells,
            **{k: v for k, v in vars(args).items() if k not in ("out", "target", "max_train")},
        },
        "rows": rows,
        "ratios": static_over_switch(rows),
        "winners": winners,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"rows": rows, "ratios": report["ratios"]}, indent=2))
    return report


if __name__ == "__main__":
    main()
